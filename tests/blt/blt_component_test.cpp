// The `blt` component with the shipped byte LM on real text (the repository's README.md): fed
// directly and over the bus (inproc) — patch spans, prefix property, pooled latents, document
// embeddings, entropies equal to next_token_entropies, bits per byte, calibration, degrade, and
// bad input counted without losing the stream.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "../bus/bus_fixture.hpp"
#include "neat/blt/blt_component.hpp"
#include "neat/blt/byte_lm.hpp"
#include "neat/bus/typed.hpp"
#include "neat/components/messages.hpp"
#include "neat/mvot/tokens.hpp"
#include "neat/nn/ops.hpp"

namespace neat::blt {
namespace {

using bus::testing::handshake;
using bus::testing::node_options;

const std::string kModel = std::string(NEAT_SOURCE_DIR) + "/models/blt/byte_lm.bf16.ckpt";

std::vector<std::uint8_t> readme_bytes(std::size_t n) {
  std::ifstream in(std::string(NEAT_SOURCE_DIR) + "/README.md", std::ios::binary);
  std::vector<std::uint8_t> b((std::istreambuf_iterator<char>(in)), {});
  if (b.size() > n) b.resize(n);
  return b;
}

components::Tokens text_item(std::uint64_t id, const std::vector<std::uint8_t>& bytes) {
  components::Tokens t;
  t.doc_id = id;
  t.path = "README.md";
  t.modality = "text";
  t.format = "none";
  t.token_count = bytes.size();
  t.item_bytes = bytes.size();
  return t;
}

std::vector<std::int32_t> as_tokens(const std::vector<std::uint8_t>& bytes) {
  return mvot::bytes_to_tokens(bytes);
}

// A component configured on a throw-away inproc bus (process() is called directly).
struct Direct {
  zmq::context_t zmq{1};
  bus::BusEndpoints endpoints =
      bus::make_endpoints(bus::Transport::inproc, bus::testing::unique_run_id());
  bus::Broker broker{zmq, {{endpoints}, 1000}};
  bus::Node node{zmq, node_options("blt", endpoints)};
  components::Context context{"blt", node, std::make_shared<spdlog::logger>("blt-test")};
  BltComponent blt;
  explicit Direct(YAML::Node config) {
    config["model"] = kModel;
    blt.configure(config, context);
  }
};

struct Flat {
  std::vector<std::size_t> starts, lengths;
  std::vector<float> entropies, latents;
  std::vector<std::int32_t> tokens;
};

Flat flatten(const std::vector<PatchSlice>& slices, std::size_t per_message) {
  Flat f;
  for (std::size_t s = 0; s < slices.size(); ++s) {
    const auto& p = slices[s].patches;
    EXPECT_EQ(p.last, s + 1 == slices.size());
    EXPECT_LE(p.starts.size(), per_message);
    EXPECT_EQ(p.first_patch, f.starts.size());
    EXPECT_EQ(p.lengths.size(), p.starts.size());
    EXPECT_EQ(p.mean_entropy.size(), p.starts.size());
    EXPECT_EQ(p.tokens.size(), p.entropies.size());
    f.starts.insert(f.starts.end(), p.starts.begin(), p.starts.end());
    f.lengths.insert(f.lengths.end(), p.lengths.begin(), p.lengths.end());
    f.entropies.insert(f.entropies.end(), p.entropies.begin(), p.entropies.end());
    f.tokens.insert(f.tokens.end(), p.tokens.begin(), p.tokens.end());
    f.latents.insert(f.latents.end(), slices[s].latents.begin(), slices[s].latents.end());
  }
  return f;
}

TEST(BltComponent, PatchesRealTextIntoSpansWithPooledLatentsAndTheStreamEntropies) {
  YAML::Node config;
  config["patches_per_message"] = 16;
  config["doc_embedding_positions"] = 64;
  Direct d(config);
  const auto bytes = readme_bytes(700);
  const auto out = d.blt.process(text_item(0, bytes), as_tokens(bytes));
  ASSERT_TRUE(out.rejected.empty()) << out.rejected;
  const auto doc = document_tokens(bytes);
  const auto f = flatten(out.slices, 16);
  ASSERT_GT(out.slices.size(), 1u) << "700 bytes make more than 16 patches";

  std::size_t total = 0;
  for (std::size_t i = 0; i < f.starts.size(); ++i) {
    EXPECT_EQ(f.starts[i], total) << "patches are contiguous";
    total += f.lengths[i];
  }
  EXPECT_EQ(total, doc.size()) << "patch lengths sum to BOS + bytes + EOS";
  EXPECT_EQ(f.tokens, doc);

  const auto& model = d.blt.model();
  const auto expected = next_token_entropies(model, doc);
  ASSERT_EQ(f.entropies.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(f.entropies[i], expected[i], 1e-5) << i;
  // The patches are those of the configured patcher on those entropies.
  const auto reference = patches_from_starts(patch_starts(expected, doc, d.blt.patcher_options()));
  ASSERT_EQ(reference.size(), f.starts.size());
  for (std::size_t i = 0; i < reference.size(); ++i) {
    EXPECT_EQ(reference[i].start, f.starts[i]);
    EXPECT_EQ(reference[i].length, f.lengths[i]);
  }

  // Latents [n, 256]: mean of the final hidden states over each patch (hidden() in windows of
  // the context, as the stream decodes).
  const std::int64_t C = model.config().dim;
  ASSERT_EQ(C, 256);
  ASSERT_EQ(f.latents.size(), f.starts.size() * 256);
  nn::NoGradGuard no_grad;
  const std::int64_t window = model.config().max_seq_len;
  const std::vector<std::int32_t> head(doc.begin(), doc.begin() + window);
  const auto hidden = model.hidden(head, 1, window).clone();  // (1, window, C)
  for (std::size_t p = 0; p < f.starts.size() && f.starts[p] + f.lengths[p] <= 256; ++p) {
    for (std::int64_t c = 0; c < C; c += 37) {
      double mean = 0.0;
      for (std::size_t k = f.starts[p]; k < f.starts[p] + f.lengths[p]; ++k)
        mean += hidden.data()[k * C + c];
      mean /= static_cast<double>(f.lengths[p]);
      EXPECT_NEAR(f.latents[p * C + c], mean, 1e-4) << "patch " << p << " channel " << c;
    }
  }
  // One document embedding: mean hidden state over the first 64 positions.
  ASSERT_EQ(out.embeddings.size(), 1u);
  EXPECT_EQ(out.embeddings[0].message.positions, 64u);
  ASSERT_EQ(out.embeddings[0].embedding.size(), 256u);
  for (std::int64_t c = 0; c < C; ++c) {
    double mean = 0.0;
    for (std::int64_t k = 0; k < 64; ++k) mean += hidden.data()[k * C + c];
    EXPECT_NEAR(out.embeddings[0].embedding[c], mean / 64.0, 1e-4) << c;
  }
  // Bits per byte so far = the byte LM's code length of the document.
  const auto s = d.blt.current_stats();
  EXPECT_EQ(s.documents, 1u);
  EXPECT_EQ(s.bytes, bytes.size());
  EXPECT_EQ(s.patches, f.starts.size());
  EXPECT_NEAR(s.bits_per_byte, bits_per_byte(model, {bytes}), 1e-4);
  EXPECT_NEAR(s.mean_patch_size, static_cast<double>(doc.size()) / f.starts.size(), 1e-12);
  EXPECT_GT(d.blt.stats()["memory"]["current_bytes"].get<std::int64_t>(), 0);
}

TEST(BltComponent, PatchingAPrefixGivesAPrefixOfThePatches) {
  YAML::Node config;
  Direct d(config);
  const auto bytes = readme_bytes(400);
  const std::vector<std::uint8_t> prefix(bytes.begin(), bytes.begin() + 250);
  const auto whole = flatten(d.blt.process(text_item(0, bytes), as_tokens(bytes)).slices, 64);
  const auto part = flatten(d.blt.process(text_item(1, prefix), as_tokens(prefix)).slices, 64);
  // Positions 0..250 (BOS and the prefix bytes) are decided from the same past.
  std::vector<std::size_t> whole_starts, part_starts;
  for (auto s : whole.starts)
    if (s <= prefix.size()) whole_starts.push_back(s);
  for (auto s : part.starts)
    if (s <= prefix.size()) part_starts.push_back(s);
  EXPECT_EQ(part_starts, whole_starts);
  // Patches that end inside the prefix have the same latents.
  for (std::size_t p = 0; p + 1 < part.starts.size(); ++p) {
    for (std::size_t c = 0; c < 256; ++c)
      ASSERT_NEAR(part.latents[p * 256 + c], whole.latents[p * 256 + c], 1e-4);
  }
}

TEST(BltComponent, ImageItemsAreOneDocumentOfImageTokens) {
  YAML::Node config;
  config["doc_embedding_positions"] = 256;
  Direct d(config);
  std::vector<std::int32_t> codes(49);
  for (int i = 0; i < 49; ++i) codes[i] = (i * 7) % 512;
  const auto tokens = mvot::image_codes_to_tokens(codes, 512);
  components::Tokens item;
  item.doc_id = 3;
  item.path = "shirt.png";
  item.modality = "image";
  item.token_count = tokens.size();
  const auto out = d.blt.process(item, tokens);
  ASSERT_TRUE(out.rejected.empty()) << out.rejected;
  const auto f = flatten(out.slices, 64);
  std::vector<std::int32_t> document = {kBos};
  document.insert(document.end(), tokens.begin(), tokens.end());
  document.push_back(kEos);
  EXPECT_EQ(f.tokens, document) << "BOS BOI codes EOI EOS";
  ASSERT_EQ(out.embeddings.size(), 1u);
  EXPECT_EQ(out.embeddings[0].message.positions, document.size()) << "shorter than N: all of it";
  const auto s = d.blt.current_stats();
  EXPECT_EQ(s.bytes, 0u);
  EXPECT_EQ(s.tokens, document.size());
}

TEST(BltComponent, BadItemsAreRejectedAndCountedAndTheNextItemIsProcessed) {
  YAML::Node config;
  Direct d(config);
  const auto bytes = readme_bytes(80);
  auto tokens = as_tokens(bytes);
  auto bad = tokens;
  bad[5] = 300;  // not a byte in a text item
  EXPECT_NE(d.blt.process(text_item(0, bytes), bad).rejected.find("token 300 at index 5"),
            std::string::npos);
  auto wrong_count = text_item(1, bytes);
  wrong_count.token_count = 3;
  EXPECT_FALSE(d.blt.process(wrong_count, tokens).rejected.empty());
  auto audio = text_item(2, bytes);
  audio.modality = "audio";
  EXPECT_FALSE(d.blt.process(audio, tokens).rejected.empty());
  components::Tokens image = text_item(3, {});
  image.modality = "image";
  image.token_count = 2;
  const std::vector<std::int32_t> beyond = {mvot::kBoi, 261 + 512};  // outside the vocabulary
  EXPECT_FALSE(d.blt.process(image, beyond).rejected.empty());
  EXPECT_EQ(d.blt.rejected(), 4u);
  const auto good = d.blt.process(text_item(4, bytes), tokens);
  EXPECT_TRUE(good.rejected.empty());
  EXPECT_FALSE(good.slices.empty());
  EXPECT_EQ(d.blt.current_stats().documents, 1u);
  EXPECT_EQ(d.blt.current_stats().rejected, 4u);
}

TEST(BltComponent, TargetMeanPatchSizeIsMetByCalibrationOnTheFirstDocument) {
  YAML::Node config;
  config["target_mean_patch_size"] = 4.0;
  Direct d(config);
  const auto bytes = readme_bytes(600);
  const auto out = d.blt.process(text_item(0, bytes), as_tokens(bytes));
  ASSERT_TRUE(d.blt.calibration().has_value());
  const double achieved = d.blt.calibration()->mean_patch_bytes;
  EXPECT_NEAR(achieved, 4.0, 0.5);
  const auto f = flatten(out.slices, 64);
  EXPECT_NEAR(static_cast<double>(bytes.size() + 2) / f.starts.size(), achieved, 1e-9)
      << "the sample document is patched with the calibrated threshold";
  const auto j = d.blt.stats();
  EXPECT_DOUBLE_EQ(j["calibration"]["achieved_mean_patch_size"].get<double>(), achieved);
  EXPECT_DOUBLE_EQ(d.blt.current_stats().calibration_mean_patch_size, achieved);

  YAML::Node both;
  both["threshold"] = 1.0;
  both["target_mean_patch_size"] = 4.0;
  EXPECT_THROW(Direct{both}, std::invalid_argument);
  YAML::Node space;
  space["mode"] = "space";
  space["target_mean_patch_size"] = 4.0;
  EXPECT_THROW(Direct{space}, std::invalid_argument);
}

TEST(BltComponent, ShorterWindowDegradeHalvesTheContextAndItsCache) {
  YAML::Node config;
  Direct d(config);
  const auto before = d.blt.stats()["memory"]["current_bytes"].get<std::int64_t>();
  EXPECT_EQ(d.blt.stats()["context"].get<std::int64_t>(), 256);
  EXPECT_TRUE(d.blt.degrade("shorter_window"));
  EXPECT_EQ(d.blt.stats()["context"].get<std::int64_t>(), 128);
  const auto after = d.blt.stats()["memory"]["current_bytes"].get<std::int64_t>();
  // K and V, 4 layers, 128 fewer positions of 256 floats.
  EXPECT_EQ(before - after, 2 * 4 * 128 * 256 * 4);
  EXPECT_FALSE(d.blt.degrade("smaller_batch"));
  // The context now restarts every 128 positions.
  const auto bytes = readme_bytes(300);
  const auto out = d.blt.process(text_item(0, bytes), as_tokens(bytes));
  const auto f = flatten(out.slices, 64);
  const auto doc = document_tokens(bytes);
  const std::vector<std::int32_t> second(doc.begin() + 128, doc.begin() + 256);
  const auto alone = next_token_entropies_batch(d.blt.model(), second);
  for (std::size_t i = 0; i < alone.size(); ++i) EXPECT_NEAR(f.entropies[128 + i], alone[i], 1e-5);
}

TEST(BltComponentBus, PublishesPatchesEmbeddingsAndStatsAndForwardsEndOfStream) {
  zmq::context_t ctx(1);
  const auto e = bus::make_endpoints(bus::Transport::inproc, bus::testing::unique_run_id());
  bus::Broker broker(ctx, {{e}, 1000});
  bus::Node source(ctx, node_options("mvot", e));
  bus::Node node(ctx, node_options("blt", e));
  bus::Node sink(ctx, node_options("sink", e));

  BltComponent blt;
  components::Context context("blt", node, std::make_shared<spdlog::logger>("blt-bus-test"));
  YAML::Node config;
  config["model"] = kModel;
  config["patches_per_message"] = 8;
  config["stats_every"] = 1;
  blt.configure(config, context);

  std::map<std::uint64_t, std::vector<PatchSlice>> slices;
  std::map<std::uint64_t, int> embeddings;
  std::vector<BltStats> stats;
  bool eos = false;
  bus::subscribe<Patches>(sink, "blt.patches", [&](const Patches& p, const bus::Message& m) {
    const auto t = m.tensors().at(0);
    EXPECT_EQ(t.desc().name, "latents");
    EXPECT_EQ(t.desc().shape, (std::vector<std::int64_t>{std::int64_t(p.starts.size()), 256}));
    slices[p.doc_id].push_back({p, t.to_vector<float>()});
  });
  bus::subscribe<DocEmbedding>(
      sink, "blt.doc_embedding", [&](const DocEmbedding& d, const bus::Message& m) {
        EXPECT_EQ(m.tensors().at(0).desc().shape, (std::vector<std::int64_t>{256}));
        ++embeddings[d.doc_id];
      });
  bus::subscribe<BltStats>(sink, "blt.stats",
                           [&](const BltStats& s, const bus::Message&) { stats.push_back(s); });
  bus::subscribe<components::EndOfStream>(
      sink, "blt.patches",
      [&](const components::EndOfStream&, const bus::Message&) { eos = true; });
  handshake(source, node, "tokens");
  handshake(node, sink, "blt.patches");
  handshake(node, sink, "blt.doc_embedding");
  handshake(node, sink, "blt.stats");

  const auto a = readme_bytes(300), b = readme_bytes(120);
  auto send = [&](const components::Tokens& item, std::vector<bus::TensorOut> tensors) {
    bus::publish(source, "tokens", item, tensors);
  };
  auto tokens_of = [](const std::vector<std::uint8_t>& bytes) {
    return bus::TensorOut::from_vector("tokens", bus::DType::i32,
                                       {static_cast<std::int64_t>(bytes.size())}, as_tokens(bytes));
  };
  send(text_item(0, a), {tokens_of(a)});
  send(text_item(1, b), {});  // no tensor
  send(text_item(2, b), {
                            bus::TensorOut::from_vector("tokens", bus::DType::u8,
                                                        {static_cast<std::int64_t>(b.size())},
                                                        std::vector<std::uint8_t>(b)),
                        });
  send(text_item(3, b), {tokens_of(b)});
  bus::publish(source, "tokens", components::EndOfStream{4, a.size() + 2 * b.size()});

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!eos && std::chrono::steady_clock::now() < deadline) {
    const bool x = node.dispatch_one();
    const bool y = sink.dispatch_one();
    if (!x && !y) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  while (sink.dispatch_one()) {
  }
  ASSERT_TRUE(eos) << "EndOfStream not forwarded on blt.patches";
  ASSERT_EQ(slices.size(), 2u);
  for (const auto& [id, list] : slices) {
    const auto& bytes = id == 0 ? a : b;
    const auto f = flatten(list, 8);
    EXPECT_EQ(f.tokens, document_tokens(bytes)) << "doc " << id;
    EXPECT_EQ(embeddings[id], 1) << "one embedding per document";
  }
  EXPECT_EQ(embeddings.size(), 2u);
  ASSERT_FALSE(stats.empty());
  EXPECT_TRUE(stats.back().final);
  EXPECT_EQ(stats.back().documents, 2u);
  EXPECT_EQ(stats.back().rejected, 2u);
  EXPECT_EQ(stats.back().bytes, a.size() + b.size());
  EXPECT_NEAR(stats.back().bits_per_byte, bits_per_byte(blt.model(), {a, b}), 1e-4);
  EXPECT_GT(stats.back().bytes_per_second, 0.0);
  EXPECT_EQ(blt.stats()["rejected"].get<int>(), 2);
}

}  // namespace
}  // namespace neat::blt
