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

namespace neat::bus {
namespace {

TEST(Delivery, RestoredSubscriberGetsExactlyTheReplayedRemainderInOrder) {
  zmq::context_t ctx(1);
  const auto e = make_endpoints(Transport::inproc, testing::unique_run_id());
  Broker broker(ctx, {{e}, 1000});
  NodeOptions po = testing::node_options("pub", e);
  po.retention = 100;
  Node pub(ctx, po);
  Node sub(ctx, testing::node_options("sub", e));
  std::vector<std::uint64_t> got;
  subscribe<Counter>(sub, "s", [&](const Counter& c, const Message&) { got.push_back(c.value); });
  testing::handshake(pub, sub, "s");
  for (std::uint64_t i = 1; i <= 6; ++i) publish(pub, "s", Counter{i});
  ASSERT_TRUE(testing::pump_until(sub, [&] { return got.size() == 6; }));
  EXPECT_EQ(pub.retained(), 6u);

  // The subscriber "crashes" and is restored from a snapshot taken after message 3; meanwhile
  // message 7 arrives live before the replay does.
  SequenceState snapshot;
  snapshot.last_seq["pub"]["s"] = 3;
  sub.set_sequence_state(snapshot);
  got.clear();
  publish(pub, "s", Counter{7});
  ASSERT_TRUE(testing::pump_until(sub, [&] { return sub.stats().topics.at("s").held == 1; }));
  EXPECT_TRUE(got.empty()) << "7 must wait for the gap 4..6 to be replayed";
  EXPECT_EQ(pub.replay("s", 4), 4u);  // 4, 5, 6 and 7 again
  ASSERT_TRUE(testing::pump_until(sub, [&] { return got.size() == 4; }));
  EXPECT_EQ(got, (std::vector<std::uint64_t>{4, 5, 6, 7}));
  ASSERT_TRUE(testing::pump_until(sub, [&] { return sub.stats().topics.at("s").duplicates == 1; }));
  EXPECT_EQ(sub.stats().topics.at("s").dropped, 0u);

  pub.trim("s", 5);
  EXPECT_EQ(pub.retained(), 2u);
}

}  // namespace
}  // namespace neat::bus
