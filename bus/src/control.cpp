// Control plane codec and ROUTER/DEALER wrappers.
#include "neat/bus/control.hpp"

#include <spdlog/spdlog.h>

#include <msgpack.hpp>
#include <zmq_addon.hpp>

namespace neat::bus {
namespace {

struct Wire {
  std::string type, component, text, blob;
  std::vector<std::string> list;
  std::map<std::string, std::string> fields;
  MSGPACK_DEFINE_MAP(type, component, text, blob, list, fields);
};

// True if the socket is readable; an interrupted poll (EINTR) counts as "nothing yet".
bool poll_in(zmq::pollitem_t (&items)[1], std::chrono::milliseconds timeout) {
  try {
    zmq::poll(items, 1, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
  return (items[0].revents & ZMQ_POLLIN) != 0;
}

}  // namespace

const std::set<std::string>& control_types() {
  static const std::set<std::string> types = {
      "register",       "configure",   "configured", "sync",     "probe_ack",
      "activate",       "deactivate",  "checkpoint", "snapshot", "restore",
      "shutdown",       "heartbeat",   "stats",      "done",     "ack",
      "error",          "replay",      "trim",       "synced",   "degrade",
      "update_request", "update_grant"};
  return types;
}

std::string encode_control(const ControlMessage& m) {
  Wire w{m.type, m.component, m.text, m.blob, m.list, m.fields};
  msgpack::sbuffer buf;
  msgpack::pack(buf, w);
  return {buf.data(), buf.size()};
}

std::optional<ControlMessage> decode_control(const void* data, std::size_t size,
                                             std::string* error) {
  Wire w;
  try {
    auto h = msgpack::unpack(static_cast<const char*>(data), size);
    h.get().convert(w);
  } catch (const std::exception& e) {
    if (error) *error = std::string("malformed control frame: ") + e.what();
    return std::nullopt;
  }
  if (!control_types().contains(w.type)) {
    if (error) *error = "unknown control message type '" + w.type + "'";
    return std::nullopt;
  }
  return ControlMessage{w.type, w.component, w.text, w.blob, w.list, w.fields};
}

ControlServer::ControlServer(zmq::context_t& context, const std::vector<std::string>& endpoints)
    : socket_(context, zmq::socket_type::router) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::router_mandatory, true);
  // A restarted component reconnects with the same routing id and takes its place.
  socket_.set(zmq::sockopt::router_handover, true);
  for (const auto& e : endpoints) socket_.bind(e);
}

bool ControlServer::send(const std::string& identity, const ControlMessage& message) {
  auto body = encode_control(message);
  try {
    auto a =
        socket_.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!a) return false;
    return socket_.send(zmq::buffer(body), zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return false;
    throw;
  }
}

std::optional<ControlServer::Incoming> ControlServer::recv(std::chrono::milliseconds timeout) {
  zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    if (!poll_in(items, left)) return std::nullopt;
    std::vector<zmq::message_t> frames;
    (void)zmq::recv_multipart(socket_, std::back_inserter(frames));
    std::string error = "expected 2 frames";
    if (frames.size() == 2) {
      if (auto m = decode_control(frames[1].data(), frames[1].size(), &error)) {
        return Incoming{frames[0].to_string(), std::move(*m)};
      }
    }
    ++rejected_;
    spdlog::warn("control: rejected frame from '{}': {}",
                 frames.empty() ? std::string("?") : frames[0].to_string(), error);
    if (left.count() == 0) return std::nullopt;
  }
}

ControlClient::ControlClient(zmq::context_t& context, const std::string& endpoint,
                             const std::string& identity)
    : socket_(context, zmq::socket_type::dealer) {
  socket_.set(zmq::sockopt::linger, 1000);
  socket_.set(zmq::sockopt::routing_id, identity);
  socket_.connect(endpoint);
}

void ControlClient::send(const ControlMessage& message) {
  auto body = encode_control(message);
  (void)socket_.send(zmq::buffer(body), zmq::send_flags::none);
}

std::optional<ControlMessage> ControlClient::recv(std::chrono::milliseconds timeout) {
  zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
  if (!poll_in(items, timeout)) return std::nullopt;
  zmq::message_t frame;
  (void)socket_.recv(frame);
  std::string error;
  auto m = decode_control(frame.data(), frame.size(), &error);
  if (!m) {
    ++rejected_;
    spdlog::warn("control: rejected frame: {}", error);
  }
  return m;
}

}  // namespace neat::bus
