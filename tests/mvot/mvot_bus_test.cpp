// End to end over the bus (inproc): source chunks -> mvot component -> tokens and mvot.stats.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <filesystem>

#include "../bus/bus_fixture.hpp"
#include "neat/bus/typed.hpp"
#include "neat/components/messages.hpp"
#include "neat/mvot/image_io.hpp"
#include "neat/mvot/mvot_component.hpp"
#include "neat/mvot/tokens.hpp"

using namespace neat;
using bus::testing::handshake;
using bus::testing::node_options;

TEST(MvotComponentBus, PublishesTokensForChunkedItemsAndForwardsEndOfStream) {
  zmq::context_t ctx(1);
  const auto e = bus::make_endpoints(bus::Transport::inproc, bus::testing::unique_run_id());
  bus::Broker broker(ctx, {{e}, 1000});
  bus::Node source(ctx, node_options("source", e));
  bus::Node node(ctx, node_options("mvot", e));
  bus::Node sink(ctx, node_options("sink", e));

  mvot::MvotComponent mvot;
  components::Context context("mvot", node, std::make_shared<spdlog::logger>("mvot-test"));
  YAML::Node config;
  config["codebook"] = std::string(NEAT_SOURCE_DIR) + "/models/mvot/codebook.msgpack";
  config["stats_every"] = 1;
  mvot.configure(config, context);

  std::vector<mvot::Tokens> got;
  std::vector<std::vector<std::int32_t>> token_lists;
  std::vector<mvot::MvotStats> stats;
  bool eos = false;
  bus::subscribe<mvot::Tokens>(sink, "tokens", [&](const mvot::Tokens& t, const bus::Message& m) {
    got.push_back(t);
    const auto v = m.tensors().at(0).bytes();
    std::vector<std::int32_t> tokens(v.size() / 4);
    std::memcpy(tokens.data(), v.data(), v.size());
    token_lists.push_back(std::move(tokens));
  });
  bus::subscribe<components::EndOfStream>(
      sink, "tokens", [&](const components::EndOfStream&, const bus::Message&) { eos = true; });
  bus::subscribe<mvot::MvotStats>(
      sink, "mvot.stats",
      [&](const mvot::MvotStats& s, const bus::Message&) { stats.push_back(s); });
  handshake(source, node, "input.item");
  handshake(node, sink, "tokens");
  handshake(node, sink, "mvot.stats");

  const auto images = mvot::read_idx_images(
      std::filesystem::path(std::string(mvot::kFashionMnistDir)) / "t10k-images-idx3-ubyte.gz");
  const auto im = images.image(3);
  const auto png = mvot::encode_png({28, 28, {im.begin(), im.end()}});
  const std::string text = "A fortune: you will pass your tests.\n";
  auto send = [&](std::uint64_t doc, std::span<const std::uint8_t> b, std::uint64_t offset,
                  std::uint64_t total, bool last) {
    components::InputChunk c{doc, "item" + std::to_string(doc), offset, total, last};
    bus::publish(
        source, "input.item", c,
        {bus::TensorOut::from_vector("bytes", bus::DType::u8, {static_cast<std::int64_t>(b.size())},
                                     std::vector<std::uint8_t>(b.begin(), b.end()))});
  };
  const std::size_t half = png.size() / 2;
  send(0, std::span(png).first(half), 0, png.size(), false);
  send(0, std::span(png).subspan(half), half, png.size(), true);
  send(1, std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()), 0,
       text.size(), true);
  bus::publish(source, "input.item", components::EndOfStream{2, png.size() + text.size()});

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!eos && std::chrono::steady_clock::now() < deadline) {
    const bool a = node.dispatch_one();
    const bool b = sink.dispatch_one();
    if (!a && !b) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ASSERT_TRUE(eos) << "EndOfStream not forwarded on tokens";
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].modality, "image");
  EXPECT_EQ(got[0].token_count, 51u);
  EXPECT_EQ(token_lists[0].front(), mvot::kBoi);
  EXPECT_EQ(token_lists[0].back(), mvot::kEoi);
  EXPECT_GT(got[0].psnr_db, 15.0);
  EXPECT_EQ(got[1].modality, "text");
  EXPECT_EQ(mvot::tokens_to_bytes(token_lists[1]),
            std::vector<std::uint8_t>(text.begin(), text.end()));
  ASSERT_FALSE(stats.empty());
  EXPECT_TRUE(stats.back().final);
  EXPECT_EQ(stats.back().image_items, 1u);
  EXPECT_EQ(stats.back().text_items, 1u);
}
