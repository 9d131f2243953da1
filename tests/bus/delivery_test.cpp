// Delivery policies: lossless topics lose nothing under back-pressure; lossy topics count
// exactly what they drop.
#include <gtest/gtest.h>

#include "bus_fixture.hpp"
#include "neat/bus/typed.hpp"

namespace neat::bus {
namespace {

using testing::handshake;
using testing::node_options;
using testing::unique_run_id;

struct Counter {
  static constexpr std::string_view kSchema = "test.Counter";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t value = 0;
  MSGPACK_DEFINE_MAP(value);
};

TEST(Delivery, LosslessTopicDeliversEverythingInOrderToA10xSlowerSubscriber) {
  zmq::context_t ctx(1);
  const auto e = make_endpoints(Transport::inproc, unique_run_id());
  Broker broker(ctx, {{e}, 5});  // tiny queues: back-pressure engages at once
  Node pub(ctx, node_options("pub", e, 5));
  Node sub(ctx, node_options("sub", e, 5));
  std::vector<std::uint64_t> got;
  subscribe<Counter>(sub, "steady",
                     [&](const Counter& c, const Message&) { got.push_back(c.value); });
  handshake(pub, sub, "steady");

  constexpr std::uint64_t kCount = 400;
  const auto publish_gap = std::chrono::microseconds(100);
  const auto consume_gap = publish_gap * 10;
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) {
      publish(pub, "steady", Counter{i});
      std::this_thread::sleep_for(publish_gap);
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (got.size() < kCount && std::chrono::steady_clock::now() < deadline) {
    if (sub.dispatch_one()) {
      std::this_thread::sleep_for(consume_gap);
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  producer.join();
  ASSERT_EQ(got.size(), kCount);
  for (std::uint64_t i = 0; i < kCount; ++i) ASSERT_EQ(got[i], i) << "out of order at " << i;
  EXPECT_EQ(sub.stats().topics.at("steady").dropped, 0u);
  EXPECT_EQ(pub.stats().topics.at("steady").published, kCount);
}

TEST(Delivery, LossyTopicCountsExactlyTheMessagesItDrops) {
  zmq::context_t ctx(1);
  const auto e = make_endpoints(Transport::inproc, unique_run_id());
  Broker broker(ctx, {{e}, 10});
  NodeOptions po = node_options("pub", e, 10);
  po.policies = {{"fast.", Delivery::lossy}};
  Node pub(ctx, po);
  Node sub(ctx, node_options("sub", e, 10));
  std::uint64_t received = 0;
  subscribe<Counter>(sub, "fast.", [&](const Counter&, const Message&) { ++received; });
  handshake(pub, sub, "fast.x");

  constexpr std::uint64_t kCount = 20000;
  for (std::uint64_t i = 0; i < kCount; ++i) publish(pub, "fast.x", Counter{i});
  // Drain slowly, then send one sentinel once the queues are empty, so that drops at the
  // tail of the burst show up as a gap too.
  auto drain = [&] {
    auto quiet_since = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - quiet_since < std::chrono::milliseconds(200)) {
      if (sub.dispatch_one()) {
        quiet_since = std::chrono::steady_clock::now();
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
  };
  drain();
  publish(pub, "fast.x", Counter{kCount});
  drain();
  const auto& t = sub.stats().topics.at("fast.x");
  const std::uint64_t sent = kCount + 1;
  EXPECT_GT(t.dropped, 0u) << "the burst should overflow a 10-message queue";
  EXPECT_EQ(t.received, received);
  EXPECT_EQ(t.dropped, sent - received) << "counted drops must equal the messages missing";
}

TEST(Delivery, TopicPolicyUsesTheLongestMatchingPrefix) {
  zmq::context_t ctx(1);
  NodeOptions o = node_options("n", make_endpoints(Transport::inproc, unique_run_id()));
  o.policies = {{"a.", Delivery::lossy}, {"a.b.", Delivery::lossless}};
  Node n(ctx, o);
  EXPECT_EQ(n.delivery("a.x"), Delivery::lossy);
  EXPECT_EQ(n.delivery("a.b.c"), Delivery::lossless);
  EXPECT_EQ(n.delivery("z"), Delivery::lossless);
}

}  // namespace
}  // namespace neat::bus
