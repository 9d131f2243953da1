// The typed layer: msgpack-serialisable message structs over the frame-moving core.
// This is the only bus header that includes msgpack; the core (node.hpp) never knows types.
//
// A message type declares its schema name and version and its msgpack layout:
//   struct InputChunk {
//     static constexpr std::string_view kSchema = "neat.InputChunk";
//     static constexpr std::uint32_t kVersion = 1;
//     std::uint64_t doc_id; std::string path;
//     MSGPACK_DEFINE_MAP(doc_id, path);
//   };
#pragma once

#include <concepts>
#include <functional>
#include <string_view>

#include <msgpack.hpp>

#include "neat/bus/node.hpp"

namespace neat::bus {

template <class T>
concept MessageType = requires {
  { T::kSchema } -> std::convertible_to<std::string_view>;
  { T::kVersion } -> std::convertible_to<std::uint32_t>;
};

/// Serialises `value` with msgpack and publishes it on `topic` with the given tensor frames.
/// Blocking semantics as Node::publish.
template <MessageType T>
void publish(Node& node, std::string_view topic, const T& value,
             const std::vector<TensorOut>& tensors = {}) {
  thread_local msgpack::sbuffer buffer(256);  // reused: no allocation per message
  buffer.clear();
  msgpack::pack(buffer, value);
  std::span<const std::byte> payload{reinterpret_cast<const std::byte*>(buffer.data()),
                                     buffer.size()};
  node.publish(topic, T::kSchema, T::kVersion, payload, tensors);
}

/// Decodes a payload as T; throws PayloadError naming the schema on failure.
template <MessageType T>
T decode_payload(const Message& message) {
  T value{};
  try {
    auto payload = message.payload();
    auto handle = msgpack::unpack(reinterpret_cast<const char*>(payload.data()), payload.size());
    handle.get().convert(value);
  } catch (const std::exception& e) {
    throw PayloadError("payload of '" + std::string(T::kSchema) + "' does not decode: " + e.what());
  }
  return value;
}

/// Calls `handler(value, message)` for each T received on topics starting with `prefix`, on
/// the node's executor thread. `message` gives the header and tensor views.
template <MessageType T>
void subscribe(Node& node, const std::string& prefix,
               std::function<void(const T&, const Message&)> handler) {
  node.subscribe(prefix, std::string(T::kSchema), T::kVersion,
                 [h = std::move(handler)](const Message& m) { h(decode_payload<T>(m), m); });
}

}  // namespace neat::bus
