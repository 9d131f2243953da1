// The smallest use of the bus: a broker, a publisher and a subscriber of a typed message with a
// tensor, in one process over inproc. Prints what it received; exits non-zero if anything is
// missing. Run: build/examples/typed_pubsub/example_typed_pubsub
#include <cstdio>
#include <thread>

#include "neat/bus/broker.hpp"
#include "neat/bus/typed.hpp"

namespace {

// A message type: schema name, version, msgpack layout.
struct Reading {
  static constexpr std::string_view kSchema = "example.Reading";
  static constexpr std::uint32_t kVersion = 1;
  std::string sensor;
  double celsius = 0.0;
  MSGPACK_DEFINE_MAP(sensor, celsius);
};

}  // namespace

int main() {
  using namespace neat::bus;
  zmq::context_t context(1);
  const auto endpoints = make_endpoints(Transport::inproc, "example");
  Broker broker(context, {{endpoints}, 1000});

  NodeOptions pub_options;
  pub_options.name = "thermometer";
  pub_options.endpoints = endpoints;
  Node publisher(context, pub_options);

  NodeOptions sub_options = pub_options;
  sub_options.name = "logger";
  Node subscriber(context, sub_options);

  int received = 0;
  subscribe<Reading>(subscriber, "sensors.", [&](const Reading& r, const Message& m) {
    const auto history = m.tensors().at(0).to_vector<float>();
    std::printf("%s seq %llu from %s: %.1f C, history of %zu values\n", m.topic.c_str(),
                static_cast<unsigned long long>(m.header.seq), m.header.sender.c_str(), r.celsius,
                history.size());
    ++received;
  });

  // Subscription handshake: probe until the subscriber has seen one (no slow-joiner loss).
  while (subscriber.stats().probes_received == 0) {
    publisher.probe("sensors.kitchen");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    while (subscriber.dispatch_one()) {
    }
  }
  for (int i = 0; i < 3; ++i) {
    std::vector<float> history(16, 20.0f + static_cast<float>(i));
    publish(publisher, "sensors.kitchen", Reading{"kitchen", 20.5 + i},
            {TensorOut::from_vector("history", DType::f32, {16}, std::move(history))});
  }
  for (int spins = 0; received < 3 && spins < 5000; ++spins) {
    if (!subscriber.dispatch_one()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return received == 3 ? 0 : 1;
}
