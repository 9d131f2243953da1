// Control plane: round trip of every field, and rejection of malformed frames.
#include <gtest/gtest.h>

#include "bus_fixture.hpp"
#include "neat/bus/broker.hpp"
#include "neat/bus/control.hpp"

namespace neat::bus {
namespace {

TEST(Control, MessageRoundTripsBetweenDealerAndRouter) {
  zmq::context_t ctx(1);
  const auto e = make_endpoints(Transport::inproc, testing::unique_run_id());
  ControlServer server(ctx, {e.control});
  ControlClient client(ctx, e.control, "comp-a");
  ControlMessage m{"register", "comp-a",       "text", std::string("\0\1\2", 3),
                   {"x", "y"}, {{"pid", "42"}}};
  client.send(m);
  auto in = server.recv(std::chrono::seconds(2));
  ASSERT_TRUE(in);
  EXPECT_EQ(in->identity, "comp-a");
  EXPECT_EQ(in->message.type, "register");
  EXPECT_EQ(in->message.blob, std::string("\0\1\2", 3));
  EXPECT_EQ(in->message.list, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(in->message.fields.at("pid"), "42");
  ASSERT_TRUE(server.send("comp-a", {"activate", "comp-a", "", "", {}, {}}));
  auto back = client.recv(std::chrono::seconds(2));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->type, "activate");
  EXPECT_FALSE(server.send("nobody", {"activate", "nobody", "", "", {}, {}}));
}

TEST(Control, MalformedAndUnknownFramesAreCountedNotThrown) {
  zmq::context_t ctx(1);
  const auto e = make_endpoints(Transport::inproc, testing::unique_run_id());
  ControlServer server(ctx, {e.control});
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(e.control);
  dealer.send(zmq::str_buffer("\xc1 not msgpack"), zmq::send_flags::none);
  dealer.send(zmq::buffer(encode_control({"explode", "x", "", "", {}, {}})), zmq::send_flags::none);
  dealer.send(zmq::buffer(encode_control({"heartbeat", "x", "", "", {}, {}})),
              zmq::send_flags::none);
  std::optional<ControlServer::Incoming> in;
  for (int i = 0; i < 10 && !in; ++i) in = server.recv(std::chrono::milliseconds(200));
  ASSERT_TRUE(in);
  EXPECT_EQ(in->message.type, "heartbeat");
  EXPECT_EQ(server.rejected(), 2u);
  std::string error;
  EXPECT_FALSE(decode_control("\x81", 1, &error));
  EXPECT_NE(error.find("malformed"), std::string::npos);
}

}  // namespace
}  // namespace neat::bus

namespace neat::bus {
namespace {

TEST(Broker, BindFailureThrowsWithNothingRunning) {
  zmq::context_t ctx(1);
  const auto taken = make_endpoints(Transport::inproc, testing::unique_run_id());
  Broker first(ctx, {{taken}, 100});
  auto clash = make_endpoints(Transport::inproc, testing::unique_run_id());
  clash.lossy_out = taken.lossy_out;  // the second plane's last bind fails
  EXPECT_THROW(Broker(ctx, {{clash}, 100}), zmq::error_t);
}

}  // namespace
}  // namespace neat::bus
