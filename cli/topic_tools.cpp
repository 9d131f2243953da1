// Topic introspection tools (see topic_tools.hpp).
#include "topic_tools.hpp"

#include <unistd.h>

#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>

#include "neat/bus/node.hpp"

namespace neat::cli {

namespace {

// A node that accepts any schema on `prefix` and hands each message to `fn`.
bus::Node observer(zmq::context_t& ctx, const TopicToolOptions& o) {
  bus::NodeOptions n;
  n.name = "neat-topic-" + std::to_string(::getpid());
  n.endpoints = o.endpoints;
  n.count_initial_gap = false;
  return bus::Node(ctx, n);
}

nlohmann::json message_json(const bus::Message& m) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : m.header.tensors) {
    tensors.push_back({{"name", t.name}, {"dtype", bus::dtype_name(t.dtype)}, {"shape", t.shape}});
  }
  nlohmann::json payload;
  auto p = m.payload();
  if (!p.empty()) {
    payload = nlohmann::json::from_msgpack(
        reinterpret_cast<const std::uint8_t*>(p.data()),
        reinterpret_cast<const std::uint8_t*>(p.data()) + p.size(), true, false);
    if (payload.is_discarded()) payload = "<" + std::to_string(p.size()) + " bytes, not msgpack>";
  }
  return {{"topic", m.topic},
          {"schema", m.header.schema},
          {"version", m.header.version},
          {"sender", m.header.sender},
          {"seq", m.header.seq},
          {"timestamp_ns", m.header.timestamp_ns},
          {"tensors", tensors},
          {"payload", payload}};
}

// Runs `node` until stop/limit, calling `each` for every message of any schema.
template <class Each, class Tick>
void observe(bus::Node& node, const TopicToolOptions& o, const std::atomic<bool>& stop, Each each,
             Tick tick) {
  // Any schema: the raw subscription bypasses typed checks, so register a catch-all by
  // accepting whatever schema arrives through the probe-free raw path.
  node.subscribe_any(o.prefix, [&](const bus::Message& m) { each(m); });
  auto next = std::chrono::steady_clock::now() + o.window;
  while (!stop.load()) {
    zmq::pollitem_t items[] = {{node.subscriber_socket().handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(20));
    while (node.dispatch_one()) {
    }
    if (std::chrono::steady_clock::now() >= next) {
      if (!tick()) return;
      next += o.window;
    }
  }
}

}  // namespace

int topic_echo(const TopicToolOptions& o, std::ostream& out, const std::atomic<bool>& stop) {
  zmq::context_t ctx(1);
  auto node = observer(ctx, o);
  std::size_t n = 0;
  bool done = false;
  observe(
      node, o, stop,
      [&](const bus::Message& m) {
        if (done) return;
        out << message_json(m).dump() << "\n" << std::flush;
        if (o.count && ++n >= *o.count) done = true;
      },
      [&] { return !done; });
  return 0;
}

namespace {

void print_table(std::ostream& out, const bus::NodeStats& now, const bus::NodeStats& before,
                 double seconds) {
  out << std::left << std::setw(28) << "topic" << std::right << std::setw(12) << "msg/s"
      << std::setw(14) << "bytes/s" << std::setw(12) << "messages" << std::setw(10) << "drops"
      << std::setw(10) << "rejected"
      << "\n";
  for (const auto& [topic, t] : now.topics) {
    bus::TopicStats b;
    if (auto it = before.topics.find(topic); it != before.topics.end()) b = it->second;
    out << std::left << std::setw(28) << topic << std::right << std::fixed << std::setprecision(1)
        << std::setw(12) << static_cast<double>(t.received - b.received) / seconds << std::setw(14)
        << static_cast<double>(t.received_bytes - b.received_bytes) / seconds << std::setw(12)
        << t.received << std::setw(10) << t.dropped << std::setw(10) << t.rejected << "\n";
  }
  out << std::flush;
}

}  // namespace

int topic_hz(const TopicToolOptions& o, std::ostream& out, const std::atomic<bool>& stop) {
  zmq::context_t ctx(1);
  auto node = observer(ctx, o);
  bus::NodeStats before;
  std::size_t windows = 0;
  const double seconds = std::chrono::duration<double>(o.window).count();
  observe(
      node, o, stop, [](const bus::Message&) {},
      [&] {
        print_table(out, node.stats(), before, seconds);
        before = node.stats();
        return !(o.count && ++windows >= *o.count);
      });
  return 0;
}

int topic_list(const TopicToolOptions& o, std::ostream& out, const std::atomic<bool>& stop) {
  TopicToolOptions once = o;
  once.count = 1;
  return topic_hz(once, out, stop);
}

}  // namespace neat::cli
