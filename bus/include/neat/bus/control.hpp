// The control plane: coordinator ROUTER <-> component DEALERs, one msgpack frame per message.
// Commands (coordinator -> component): configure, sync, synced, activate, deactivate,
// checkpoint, restore, replay, trim, degrade, shutdown. Reports (component -> coordinator):
// register, configured, probe_ack, heartbeat, stats, snapshot, done, ack, error. Invariant: a frame
// that does not decode, or names an unknown type, is counted in rejected() and logged; it never
// throws out of recv().
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace neat::bus {

struct ControlMessage {
  std::string type;               ///< one of control_types()
  std::string component;          ///< the component it is about (sender for reports)
  std::string text;               ///< YAML config, topic, error text or JSON stats, by type
  std::string blob;               ///< snapshot bytes (msgpack), for snapshot and restore
  std::vector<std::string> list;  ///< topics (configured, sync)
  std::map<std::string, std::string> fields;  ///< small named values (pid, kind, sender, ...)
};

/// The valid values of ControlMessage::type.
const std::set<std::string>& control_types();

std::string encode_control(const ControlMessage& message);
/// Decodes one control frame; std::nullopt (and *error set) if it is malformed or of an
/// unknown type.
std::optional<ControlMessage> decode_control(const void* data, std::size_t size,
                                             std::string* error);

/// Coordinator side: a ROUTER bound to the control endpoint(s).
class ControlServer {
 public:
  ControlServer(zmq::context_t& context, const std::vector<std::string>& endpoints);
  /// Sends to the DEALER whose routing id is `identity`; false if it is not connected.
  bool send(const std::string& identity, const ControlMessage& message);
  struct Incoming {
    std::string identity;
    ControlMessage message;
  };
  /// Waits up to `timeout` for one valid message.
  std::optional<Incoming> recv(std::chrono::milliseconds timeout);
  std::uint64_t rejected() const { return rejected_; }
  zmq::socket_ref socket() { return socket_; }

 private:
  zmq::socket_t socket_;
  std::uint64_t rejected_ = 0;
};

/// Component side: a DEALER with routing id `identity`, connected to the coordinator.
class ControlClient {
 public:
  ControlClient(zmq::context_t& context, const std::string& endpoint, const std::string& identity);
  void send(const ControlMessage& message);
  std::optional<ControlMessage> recv(std::chrono::milliseconds timeout);
  std::uint64_t rejected() const { return rejected_; }
  zmq::socket_ref socket() { return socket_; }

 private:
  zmq::socket_t socket_;
  std::uint64_t rejected_ = 0;
};

}  // namespace neat::bus
