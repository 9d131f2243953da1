// Envelope round trips and rejection of every kind of bad input, with counters checked.
#include <gtest/gtest.h>

#include <zmq_addon.hpp>

#include "bus_fixture.hpp"
#include "neat/bus/typed.hpp"

namespace neat::bus {
namespace {

using testing::handshake;
using testing::node_options;
using testing::pump_until;
using testing::unique_run_id;

struct AllFields {
  static constexpr std::string_view kSchema = "test.AllFields";
  static constexpr std::uint32_t kVersion = 2;
  bool flag = false;
  std::int64_t integer = 0;
  std::uint64_t unsigned_integer = 0;
  double real = 0;
  std::string text;
  std::vector<std::uint8_t> blob;
  std::vector<double> values;
  std::map<std::string, std::int32_t> table;
  MSGPACK_DEFINE_MAP(flag, integer, unsigned_integer, real, text, blob, values, table);
};

TEST(Envelope, HeaderRoundTripsEveryField) {
  Header h;
  h.schema = "x.Y";
  h.version = 7;
  h.sender = "sender-1";
  h.seq = 1234567890123ull;
  h.timestamp_ns = -5;
  h.flags = kFlagProbe;
  h.tensors = {{"a", DType::f32, {2, 3}}, {"b", DType::bf16, {}}, {"c", DType::i64, {0, 4}}};
  std::vector<TensorOut> none;
  std::vector<std::uint8_t> a(24), c;
  std::vector<TensorOut> outs = {
      TensorOut::from_vector("a", DType::f32, {2, 3}, std::vector<float>(6, 1.5f)),
      TensorOut::from_vector("b", DType::bf16, {}, std::vector<std::uint16_t>{0x3f80}),
      TensorOut::from_vector("c", DType::i64, {0, 4}, std::vector<std::int64_t>{})};
  auto frames = encode("topic.x", h, {}, outs);
  auto decoded = decode(std::move(frames), 1 << 20);
  ASSERT_TRUE(std::holds_alternative<Message>(decoded));
  const auto& m = std::get<Message>(decoded);
  EXPECT_EQ(m.topic, "topic.x");
  EXPECT_EQ(m.header.schema, "x.Y");
  EXPECT_EQ(m.header.version, 7u);
  EXPECT_EQ(m.header.sender, "sender-1");
  EXPECT_EQ(m.header.seq, 1234567890123ull);
  EXPECT_EQ(m.header.timestamp_ns, -5);
  EXPECT_EQ(m.header.flags, kFlagProbe);
  ASSERT_EQ(m.header.tensors.size(), 3u);
  EXPECT_EQ(m.header.tensors[0].shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(m.header.tensors[1].dtype, DType::bf16);
  EXPECT_TRUE(m.payload().empty());
  auto views = m.tensors();
  EXPECT_EQ(views[0].to_vector<float>(), std::vector<float>(6, 1.5f));
  EXPECT_EQ(views[1].to_vector<std::uint16_t>(), std::vector<std::uint16_t>{0x3f80});
  EXPECT_TRUE(views[2].bytes().empty());
}

TEST(Envelope, TensorFramesAreSentWithoutCopying) {
  auto values = std::vector<float>(1024, 2.0f);
  auto out = TensorOut::from_vector("w", DType::f32, {1024}, values);
  Header h;
  h.schema = "s";
  h.tensors = {out.desc};
  auto frames = encode("t", h, {}, {out});
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[2].data(), out.data) << "the tensor frame must point at the caller's buffer";
}

class BusTest : public ::testing::Test {
 protected:
  BusTest()
      : endpoints_(make_endpoints(Transport::inproc, unique_run_id())),
        broker_(context_, {{endpoints_}, 1000}) {}
  zmq::context_t context_{1};
  BusEndpoints endpoints_;
  Broker broker_;
};

TEST_F(BusTest, TypedMessageWithTensorArrivesIntact) {
  Node pub(context_, node_options("pub", endpoints_));
  Node sub(context_, node_options("sub", endpoints_));
  AllFields got;
  std::vector<float> tensor;
  std::uint64_t seq = 0;
  subscribe<AllFields>(sub, "data.", [&](const AllFields& v, const Message& m) {
    got = v;
    tensor = m.tensors().at(0).to_vector<float>();
    seq = m.header.seq;
  });
  handshake(pub, sub, "data.x");
  AllFields sent{true, -42, 1ull << 60, 3.25, "héllo", {0, 255, 7}, {1.0, -2.5}, {{"k", -3}}};
  publish(pub, "data.x", sent,
          {TensorOut::from_vector("t", DType::f32, {2, 2}, std::vector<float>{1, 2, 3, 4})});
  ASSERT_TRUE(pump_until(sub, [&] { return seq != 0; }));
  EXPECT_EQ(seq, 1u);
  EXPECT_EQ(got.flag, true);
  EXPECT_EQ(got.integer, -42);
  EXPECT_EQ(got.unsigned_integer, 1ull << 60);
  EXPECT_EQ(got.real, 3.25);
  EXPECT_EQ(got.text, "héllo");
  EXPECT_EQ(got.blob, (std::vector<std::uint8_t>{0, 255, 7}));
  EXPECT_EQ(got.values, (std::vector<double>{1.0, -2.5}));
  EXPECT_EQ(got.table.at("k"), -3);
  EXPECT_EQ(tensor, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(sub.stats().topics.at("data.x").received, 1u);
}

TEST_F(BusTest, EmptyPayloadIsDelivered) {
  Node pub(context_, node_options("pub", endpoints_));
  Node sub(context_, node_options("sub", endpoints_));
  int calls = 0;
  sub.subscribe("e", "test.Empty", 1, [&](const Message& m) {
    EXPECT_TRUE(m.payload().empty());
    ++calls;
  });
  handshake(pub, sub, "e");
  pub.publish("e", "test.Empty", 1, {});
  ASSERT_TRUE(pump_until(sub, [&] { return calls == 1; }));
}

// Sends raw frames straight into the broker, as a misbehaving peer would.
class RawPeer {
 public:
  RawPeer(zmq::context_t& ctx, const BusEndpoints& e) : pub_(ctx, zmq::socket_type::pub) {
    pub_.set(zmq::sockopt::linger, 0);
    pub_.connect(e.lossless_in);
  }
  void send(std::vector<std::string> frames) {
    std::vector<zmq::message_t> msgs;
    for (auto& f : frames) msgs.emplace_back(f.data(), f.size());
    zmq::send_multipart(pub_, msgs);
  }
  zmq::socket_t pub_;
};

std::string header_bytes(const std::string& schema, std::uint32_t version, std::uint64_t seq,
                         std::vector<TensorDesc> tensors = {}) {
  Header h;
  h.schema = schema;
  h.version = version;
  h.sender = "raw";
  h.seq = seq;
  h.tensors = std::move(tensors);
  auto b = encode_header(h);
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

TEST_F(BusTest, EveryKindOfBadInputIsRejectedCountedAndSurvived) {
  NodeOptions o = node_options("sub", endpoints_);
  o.max_message_bytes = 4096;
  Node sub(context_, o);
  Node prober(context_, node_options("prober", endpoints_));
  int good = 0;
  subscribe<AllFields>(sub, "in", [&](const AllFields&, const Message&) { ++good; });
  handshake(prober, sub, "in");
  RawPeer raw(context_, endpoints_);
  {  // the raw peer's own subscription handshake: probe until the subscriber sees one
    Header probe;
    probe.schema = "neat.Probe";
    probe.flags = kFlagProbe;
    auto hb = encode_header(probe);
    const auto before = sub.stats().probes_received;
    while (sub.stats().probes_received == before) {
      raw.send({"in", std::string(reinterpret_cast<const char*>(hb.data()), hb.size())});
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      while (sub.dispatch_one()) {
      }
    }
  }
  msgpack::sbuffer valid_payload;
  msgpack::pack(valid_payload, AllFields{});
  const std::string payload(valid_payload.data(), valid_payload.size());
  const std::string header = header_bytes("test.AllFields", 2, 99);

  // Frame 1 is the header immediately followed by the payload.
  raw.send({"in"});                                                  // truncated: 1 frame
  raw.send({"in", header.substr(0, header.size() / 2)});             // truncated header
  raw.send({"in", "\xc1\xc1 garbage bytes \xff" + payload});         // garbage
  raw.send({"in", header_bytes("test.Other", 1, 1) + payload});      // unknown schema
  raw.send({"in", header_bytes("test.AllFields", 3, 2) + payload});  // wrong version
  raw.send({"in", header_bytes("test.AllFields", 2, 3) + std::string(5000, 'x')});  // oversize
  raw.send({"in", header_bytes("test.AllFields", 2, 4, {{"t", DType::f32, {4}}}) + payload,
            std::string(15, 'x')});                                     // tensor size mismatch
  raw.send({"in", header_bytes("test.AllFields", 2, 5) + "\x93\x01"});  // payload invalid
  raw.send({"in", header_bytes("test.AllFields", 2, 6) + payload});     // finally a good one

  ASSERT_TRUE(pump_until(sub, [&] { return good == 1; }));
  const auto& s = sub.stats();
  auto count = [&](DecodeReason r) { return s.rejected_by_reason[static_cast<std::size_t>(r)]; };
  EXPECT_EQ(count(DecodeReason::truncated), 2u);
  EXPECT_EQ(count(DecodeReason::garbage), 1u);
  EXPECT_EQ(count(DecodeReason::unknown_schema), 1u);
  EXPECT_EQ(count(DecodeReason::wrong_version), 1u);
  EXPECT_EQ(count(DecodeReason::oversize), 1u);
  EXPECT_EQ(count(DecodeReason::tensor_size_mismatch), 1u);
  EXPECT_EQ(count(DecodeReason::payload_invalid), 1u);
  EXPECT_EQ(s.rejected_total(), 8u);
  EXPECT_EQ(s.topics.at("in").rejected, 8u);
  EXPECT_EQ(s.topics.at("in").received, 1u);
  EXPECT_EQ(s.topics.at("in").dropped, 0u) << "rejected messages keep their place in sequence";
  EXPECT_EQ(s.topics.at("in").held, 0u);
}

TEST_F(BusTest, FrameAboveZmqMaxMsgSizeIsCutOffByZeroMq) {
  NodeOptions o = node_options("sub", endpoints_);
  o.max_message_bytes = 1024;
  // over tcp/ipc ZeroMQ enforces ZMQ_MAXMSGSIZE itself; inproc bypasses the wire, where the
  // decoder's size check (previous test) applies. Both count as oversize.
  Node sub(context_, o);
  Node pub(context_, node_options("pub", endpoints_));
  int good = 0;
  sub.subscribe("big", "test.Big", 1, [&](const Message&) { ++good; });
  handshake(pub, sub, "big");
  std::string big(4096, 'x');
  pub.publish("big", "test.Big", 1, {reinterpret_cast<const std::byte*>(big.data()), big.size()});
  pub.publish("big", "test.Big", 1, {});
  ASSERT_TRUE(pump_until(sub, [&] { return good == 1; }));
  EXPECT_EQ(sub.stats().rejected_by_reason[static_cast<std::size_t>(DecodeReason::oversize)], 1u);
}

}  // namespace
}  // namespace neat::bus
