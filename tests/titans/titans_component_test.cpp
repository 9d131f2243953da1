// The titans component: over the bus (inproc) from blt.patches to titans.readout and
// titans.stats; grants scale theta; document resets; snapshot/restore; bad input; surprise
// prioritisation under a byte budget; degrade commands.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "../bus/bus_fixture.hpp"
#include "neat/blt/messages.hpp"
#include "neat/bus/typed.hpp"
#include "neat/components/messages.hpp"
#include "neat/nn/ops.hpp"
#include "neat/titans/prioritization.hpp"
#include "neat/titans/titans_component.hpp"

using namespace neat;
using bus::testing::handshake;
using bus::testing::node_options;

namespace {

constexpr std::int64_t kIn = 16, kDim = 8;

YAML::Node small_config() {
  YAML::Node c;
  c["input_dim"] = kIn;
  c["dim"] = kDim;
  c["hidden"] = 12;
  c["depth"] = 2;
  c["chunk"] = 8;
  c["persistent"] = 2;
  c["seed"] = 11;
  return c;
}

titans::MemoryConfig memory_config() {
  titans::MemoryConfig m;
  m.input_dim = kIn;
  m.dim = kDim;
  m.hidden = 12;
  m.depth = 2;
  m.chunk = 8;
  m.persistent = 2;
  m.seed = 11;
  return m;
}

// The token of patch i in the test documents (patches of one byte): read by MAG models with
// byte values.
std::int32_t byte_at(std::uint64_t i) { return static_cast<std::int32_t>((i * 37 + 11) % 256); }

std::vector<float> random_latents(std::int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<std::size_t>(n * kIn));
  for (auto& v : x) v = normal(rng);
  return x;
}

// A bus with a source, the titans node and a sink.
struct Rig {
  zmq::context_t ctx{1};
  bus::BusEndpoints e = bus::make_endpoints(bus::Transport::inproc, bus::testing::unique_run_id());
  bus::Broker broker{ctx, {{e}, 1000}};
  bus::Node source{ctx, node_options("source", e)};
  bus::Node node{ctx, node_options("titans", e)};
  bus::Node sink{ctx, node_options("sink", e)};
  titans::TitansComponent titans;
  components::Context context{"titans", node, std::make_shared<spdlog::logger>("titans-test")};
  std::vector<blt::Readout> readouts;
  std::vector<std::vector<float>> vectors;
  std::vector<titans::TitansStats> stats;
  std::vector<components::UpdateRequest> requests;
  bool eos = false;

  explicit Rig(const YAML::Node& config, double lr = 1.0) {
    context.set_update_requester([this, lr](const components::UpdateRequest& r) {
      requests.push_back(r);
      return components::Grant{components::Grant::Action::commit, lr, ""};
    });
    titans.configure(config, context);
    bus::subscribe<blt::Readout>(sink, "titans.readout",
                                 [this](const blt::Readout& r, const bus::Message& m) {
                                   readouts.push_back(r);
                                   vectors.push_back(m.tensors().at(0).to_vector<float>());
                                 });
    bus::subscribe<components::EndOfStream>(
        sink, "titans.readout",
        [this](const components::EndOfStream&, const bus::Message&) { eos = true; });
    bus::subscribe<titans::TitansStats>(
        sink, "titans.stats",
        [this](const titans::TitansStats& s, const bus::Message&) { stats.push_back(s); });
    handshake(source, node, "blt.patches");
    handshake(node, sink, "titans.readout");
    handshake(node, sink, "titans.stats");
  }

  void send(std::uint64_t doc, std::uint64_t first, const std::vector<float>& x, bool last,
            std::int64_t cols = kIn) {
    const auto n = static_cast<std::int64_t>(x.size()) / cols;
    blt::Patches p;
    p.doc_id = doc;
    p.first_patch = first;
    p.last = last;
    for (std::int64_t i = 0; i < n; ++i) {
      p.starts.push_back(static_cast<std::uint64_t>(first + i));
      p.lengths.push_back(1);
      p.mean_entropy.push_back(1.0f);
      p.tokens.push_back(byte_at(first + i));
    }
    bus::publish(source, "blt.patches", p,
                 {bus::TensorOut::from_vector("latents", bus::DType::f32, {n, cols}, x)});
  }

  bool pump(std::size_t want_readouts) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (readouts.size() < want_readouts && std::chrono::steady_clock::now() < deadline) {
      const bool a = node.dispatch_one();
      const bool b = sink.dispatch_one();
      if (!a && !b) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return readouts.size() >= want_readouts;
  }
};

std::vector<float> reference_readout(const std::vector<std::vector<float>>& slices,
                                     double theta_scale) {
  const titans::NeuralMemory<float> memory(memory_config());
  nn::NoGradGuard no_grad;
  auto state = memory.initial_state();
  std::vector<float> out;
  for (const auto& x : slices) {
    const auto n = static_cast<std::int64_t>(x.size()) / kIn;
    const auto y = memory.forward(state, nn::Tensorf::from_vector({n, kIn}, x),
                                  [&](const titans::ChunkReport&) { return theta_scale; });
    const auto v = y.to_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    m = std::max(m, static_cast<double>(std::abs(a[i] - b[i])));
  return m;
}

}  // namespace

TEST(TitansComponentBus, PublishesReadoutsFromEarlierChunksAndLearnsUnderGrants) {
  Rig rig(small_config(), 0.5);
  std::mt19937_64 rng(1);
  const auto a = random_latents(13, rng), b = random_latents(11, rng), c = random_latents(5, rng);
  rig.send(1, 0, a, false);
  rig.send(1, 13, b, true);
  rig.send(2, 0, c, true);
  bus::publish(rig.source, "blt.patches", components::EndOfStream{2, 0});
  ASSERT_TRUE(rig.pump(3));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!rig.eos && std::chrono::steady_clock::now() < deadline) {
    if (!rig.sink.dispatch_one()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ASSERT_TRUE(rig.eos);
  ASSERT_EQ(rig.readouts.size(), 3u);
  EXPECT_EQ(rig.readouts[1].first_patch, 13u);
  EXPECT_EQ(rig.readouts[1].patch_count, 11u);
  EXPECT_TRUE(rig.readouts[1].last);
  // Doc 1: 24 patches = 3 chunks of 8, each written after a granted request with lr 0.5; the
  // readout equals a memory run whose theta is scaled by 0.5.
  EXPECT_EQ(rig.requests.size(), 3u);
  std::vector<float> doc1 = rig.vectors[0];
  doc1.insert(doc1.end(), rig.vectors[1].begin(), rig.vectors[1].end());
  EXPECT_LT(max_abs_diff(doc1, reference_readout({a, b}, 0.5)), 1e-5);
  // With another learning rate the later chunks would read different memory.
  EXPECT_GT(max_abs_diff(doc1, reference_readout({a, b}, 1.0)), 1e-4);
  // Doc 2 starts from M_0 again (memory_scope: document).
  EXPECT_LT(max_abs_diff(rig.vectors[2], reference_readout({c}, 0.5)), 1e-5);
  ASSERT_FALSE(rig.stats.empty());
  const auto& s = rig.stats.back();
  EXPECT_TRUE(s.final);
  EXPECT_EQ(s.documents, 2u);
  EXPECT_EQ(s.patches, 29u);
  EXPECT_EQ(s.updates, 3u);
  EXPECT_GT(s.loss, 0.0);
  EXPECT_GT(s.surprise, 0.0);
  EXPECT_GT(s.update_norm, 0.0);
  EXPECT_EQ(s.skip_rate, 0.0);
  EXPECT_GT(s.state_bytes, 0);
  for (const auto& r : rig.requests) {
    EXPECT_GT(r.grad_norm, 0.0);
    EXPECT_GT(r.loss, 0.0);
  }
}

TEST(TitansComponentBus, StreamScopeCarriesMemoryAcrossDocuments) {
  YAML::Node config = small_config();
  config["memory_scope"] = "stream";
  Rig rig(config);
  std::mt19937_64 rng(2);
  const auto a = random_latents(8, rng), c = random_latents(8, rng);
  rig.send(1, 0, a, true);
  rig.send(2, 0, c, true);
  ASSERT_TRUE(rig.pump(2));
  // Doc 2's readout reads what doc 1 wrote (it differs from a fresh memory's).
  EXPECT_GT(max_abs_diff(rig.vectors[1], reference_readout({c}, 1.0)), 1e-4);
  std::vector<float> both = rig.vectors[0];
  both.insert(both.end(), rig.vectors[1].begin(), rig.vectors[1].end());
  EXPECT_LT(max_abs_diff(both, reference_readout({a, c}, 1.0)), 1e-5);
}

TEST(TitansComponentBus, RejectsMalformedLatentsAndKeepsItsMemory) {
  Rig rig(small_config());
  std::mt19937_64 rng(3);
  const auto a = random_latents(8, rng);
  rig.send(1, 0, random_latents(4, rng), false, kIn);         // fine
  rig.send(1, 4, std::vector<float>(3 * 5, 0.0f), false, 5);  // wrong width
  auto bad = random_latents(2, rng);
  bad[7] = std::nanf("");
  rig.send(1, 7, bad, false);  // NaN
  rig.send(1, 4, a, true);
  ASSERT_TRUE(rig.pump(2));
  EXPECT_EQ(rig.titans.current_stats().rejected, 2u);
  EXPECT_EQ(rig.node.stats()
                .rejected_by_reason[static_cast<std::size_t>(bus::DecodeReason::payload_invalid)],
            2u);
  EXPECT_EQ(rig.titans.current_stats().patches, 12u);
}

TEST(TitansComponent, SnapshotRestoreReproducesTheMemory) {
  Rig rig(small_config());
  std::mt19937_64 rng(4);
  const auto a = random_latents(11, rng), b = random_latents(9, rng);
  rig.titans.process(rig.context, 1, false, a, 11);
  const std::string snap = rig.titans.snapshot();
  const auto y1 = rig.titans.process(rig.context, 1, true, b, 9);
  rig.titans.restore(snap);
  const auto y2 = rig.titans.process(rig.context, 1, true, b, 9);
  EXPECT_EQ(max_abs_diff(y1, y2), 0.0);
  EXPECT_THROW(rig.titans.restore("not msgpack"), std::runtime_error);
  EXPECT_THROW(rig.titans.restore(std::string_view(snap).substr(0, snap.size() / 2)),
               std::runtime_error);
}

TEST(TitansPrioritization, SkipRateFollowsTheBudgetAndKeepsTheMostSurprising) {
  titans::SurprisePrioritizer p(200);
  p.set_keep_fraction(0.25);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0, 1);
  double kept = 0, skipped = 0;
  std::size_t nk = 0, ns = 0;
  for (int i = 0; i < 4000; ++i) {
    const double s = u(rng);
    if (p.admit(s)) {
      kept += s;
      ++nk;
    } else {
      skipped += s;
      ++ns;
    }
  }
  EXPECT_NEAR(p.skip_rate(), 0.75, 0.03);
  EXPECT_GT(kept / nk, 0.8);
  EXPECT_LT(skipped / ns, 0.45);
  // Budget -> keep fraction: enough for every write, none, and half.
  const auto cfg = memory_config();
  const auto bytes = titans::chunk_working_bytes(cfg, 8, sizeof(float));
  EXPECT_EQ(titans::keep_fraction_for_budget(0, 1000, bytes), 1.0);
  EXPECT_EQ(titans::keep_fraction_for_budget(1000 + bytes.retrieval + bytes.update, 1000, bytes),
            1.0);
  EXPECT_EQ(titans::keep_fraction_for_budget(1000 + bytes.retrieval, 1000, bytes), 0.0);
  EXPECT_NEAR(
      titans::keep_fraction_for_budget(1000 + bytes.retrieval + bytes.update / 2, 1000, bytes), 0.5,
      1e-3);
}

TEST(TitansComponent, TightBudgetSkipsLowSurpriseChunksAndReportsTheRate) {
  const auto cfg = memory_config();
  const auto bytes = titans::chunk_working_bytes(cfg, cfg.chunk, sizeof(float));
  const titans::NeuralMemory<float> m(cfg);
  // M, S, the previous chunk's gradient (same shapes as M) and a chunk of latents.
  const std::int64_t state = m.initial_state().bytes() + titans::tensor_bytes(m.params().m0) +
                             cfg.chunk * cfg.input_dim * 4;
  YAML::Node config = small_config();
  config["budget_bytes"] = state + bytes.retrieval + bytes.update * 3 / 10;
  // Stationary surprise (no writes, no forgetting) on i.i.d. chunks, so that the skip rate
  // reflects the budget alone: with learning, surprise falls over the stream and a running
  // quantile skips more.
  config["theta_max"] = 0.0;
  config["alpha_max"] = 0.0;
  Rig rig(config);
  std::mt19937_64 rng(6);
  for (int doc = 0; doc < 8; ++doc)
    rig.titans.process(rig.context, 1, false, random_latents(80, rng), 80);
  const auto s = rig.titans.current_stats();
  EXPECT_EQ(s.chunks, 80u);
  EXPECT_GT(s.skip_rate, 0.4);
  EXPECT_LT(s.skip_rate, 0.95);
  EXPECT_EQ(s.updates + s.skipped, s.chunks);
  EXPECT_EQ(rig.requests.size(), s.updates);  // skipped chunks never ask the coordinator
  EXPECT_NEAR(s.keep_fraction, 0.3, 1e-3);
}

TEST(TitansComponent, DegradeSkipsMoreAndShrinksChunks) {
  Rig rig(small_config());
  EXPECT_TRUE(rig.titans.degrade("shrink_chunks"));
  EXPECT_EQ(rig.titans.memory().config().chunk, 4);
  EXPECT_TRUE(rig.titans.degrade("skip_low_surprise"));
  EXPECT_FALSE(rig.titans.degrade("reduce_rank"));
  std::mt19937_64 rng(7);
  rig.titans.process(rig.context, 1, false, random_latents(200, rng), 200);
  const auto s = rig.titans.current_stats();
  EXPECT_EQ(s.chunks, 50u);
  EXPECT_EQ(s.keep_fraction, 0.5);
  EXPECT_GT(s.skip_rate, 0.3);
}

TEST(TitansComponentBus, MagModelPublishesTheReadoutsOfTheWholeDocumentUnderGrants) {
  // The main job's form: the trained MAG memory (models/titans/mag.ckpt) streams a document's
  // latents in slices; each readout row is the one titans::mag_readouts gives for the whole
  // document with theta scaled by the granted rate, and the start positions pass through.
  YAML::Node config;
  config["model"] = std::string(NEAT_SOURCE_DIR) + "/models/titans/mag.ckpt";
  Rig rig(config, 0.5);
  ASSERT_TRUE(rig.titans.mag());
  const auto& mc = rig.titans.memory().config();
  std::mt19937_64 rng(4);
  const std::int64_t n = 3 * mc.chunk + 5;
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<std::size_t>(n * mc.input_dim));
  for (auto& v : x) v = normal(rng);
  const auto cut = static_cast<std::size_t>(mc.chunk + 7) * mc.input_dim;
  rig.send(1, 0, std::vector<float>(x.begin(), x.begin() + cut), false, mc.input_dim);
  rig.send(1, mc.chunk + 7, std::vector<float>(x.begin() + cut, x.end()), true, mc.input_dim);
  ASSERT_TRUE(rig.pump(2));
  ASSERT_EQ(rig.readouts.size(), 2u);
  EXPECT_EQ(rig.readouts[1].starts.size(), rig.readouts[1].patch_count);
  EXPECT_EQ(rig.readouts[1].starts.front(), static_cast<std::uint64_t>(mc.chunk + 7));
  std::vector<float> got = rig.vectors[0];
  got.insert(got.end(), rig.vectors[1].begin(), rig.vectors[1].end());
  // The whole document in one piece with every write at the granted 0.5 (a MagStream in one
  // push gives the rows of mag_readouts: TitansMag.StreamInSlicesEqualsTheWholeDocumentReadouts).
  const titans::MagModel model = titans::load_mag_model(config["model"].as<std::string>());
  nn::NoGradGuard no_grad;
  std::vector<std::uint32_t> lengths(static_cast<std::size_t>(n), 1);
  std::vector<std::int32_t> tokens;
  for (std::int64_t i = 0; i < n; ++i) tokens.push_back(byte_at(static_cast<std::uint64_t>(i)));
  auto whole = [&](double factor) {
    titans::MagStream<float> stream(*model.memory, &model.values);
    stream.start_document(1);
    return stream
        .push(nn::Tensorf::from_vector({n, mc.input_dim}, x), lengths, tokens,
              [factor](const titans::ChunkReport&) { return factor; })
        .to_vector();
  };
  EXPECT_LT(max_abs_diff(got, whole(0.5)), 1e-5);
  EXPECT_GT(max_abs_diff(got, whole(1.0)), 1e-5);  // the grant reached theta
  // Chunks 0..2 are written (the last key, n - 2, lies in chunk 3), each after a grant.
  EXPECT_EQ(rig.requests.size(), 3u);
  EXPECT_EQ(rig.titans.current_stats().updates, 3u);
}

TEST(TitansComponent, MagSnapshotMidDocumentReproducesTheRest) {
  YAML::Node config;
  config["model"] = std::string(NEAT_SOURCE_DIR) + "/models/titans/mag.ckpt";
  Rig rig(config);
  const auto& mc = rig.titans.memory().config();
  std::mt19937_64 rng(6);
  std::normal_distribution<float> normal;
  auto latents = [&](std::int64_t n) {
    std::vector<float> v(static_cast<std::size_t>(n * mc.input_dim));
    for (auto& e : v) e = normal(rng);
    return v;
  };
  const auto a = latents(mc.chunk + 9), b = latents(2 * mc.chunk);
  auto lengths = [](std::int64_t n) {
    return std::vector<std::uint32_t>(static_cast<std::size_t>(n), 1);
  };
  auto tokens = [](std::int64_t first, std::int64_t n) {
    std::vector<std::int32_t> t;
    for (std::int64_t i = first; i < first + n; ++i) t.push_back(byte_at(i));
    return t;
  };
  const std::int64_t na = mc.chunk + 9, nb = 2 * mc.chunk;
  rig.titans.process(rig.context, 7, false, a, na, lengths(na), tokens(0, na));
  const std::string snap = rig.titans.snapshot();
  const auto y1 = rig.titans.process(rig.context, 7, true, b, nb, lengths(nb), tokens(na, nb));
  rig.titans.restore(snap);
  const auto y2 = rig.titans.process(rig.context, 7, true, b, nb, lengths(nb), tokens(na, nb));
  EXPECT_EQ(y1, y2);
  EXPECT_THROW(rig.titans.restore("not msgpack"), std::runtime_error);
}

TEST(TitansComponent, MagByteValuesReadTheSliceTokensAndTravelInSnapshots) {
  // A MAG model with byte ("copy") values: the node embeds the tokens the next patch predicts
  // (blt.patches lengths and tokens), the unwritten patches' tokens travel in snapshots, and a
  // slice whose lengths do not match its tokens is rejected and counted, the memory unchanged.
  titans::MemoryConfig mc = memory_config();
  titans::MagModel model;
  model.memory_config = mc;
  model.memory = std::make_unique<titans::NeuralMemory<float>>(mc);
  model.injection = titans::MagInjection<float>::init({1, 32, kDim, 4}, 5);
  model.values = titans::ByteValues<float>::init(4, 300, kIn, 6);
  const auto dir = std::filesystem::temp_directory_path() / "neat_titans_component_bytes";
  std::filesystem::create_directories(dir);
  titans::save_mag_model(dir / "mag.ckpt", model);
  YAML::Node config;
  config["model"] = (dir / "mag.ckpt").string();
  Rig rig(config);
  std::mt19937_64 rng(8);
  const std::int64_t na = mc.chunk + 9, nb = 2 * mc.chunk;
  const auto a = random_latents(na, rng), b = random_latents(nb, rng);
  std::vector<std::uint32_t> la, lb;
  std::vector<std::int32_t> ta, tb;
  for (std::int64_t i = 0; i < na; ++i) {
    la.push_back(1 + static_cast<std::uint32_t>(i % 3));
    for (std::uint32_t k = 0; k < la.back(); ++k)
      ta.push_back(static_cast<std::int32_t>(rng() % 256));
  }
  for (std::int64_t i = 0; i < nb; ++i) {
    lb.push_back(2);
    for (int k = 0; k < 2; ++k) tb.push_back(static_cast<std::int32_t>(rng() % 256));
  }
  rig.titans.process(rig.context, 3, false, a, na, la, ta);
  const std::string snap = rig.titans.snapshot();
  const auto y1 = rig.titans.process(rig.context, 3, true, b, nb, lb, tb);
  rig.titans.restore(snap);
  auto bad = tb;
  bad.pop_back();
  const auto before = rig.titans.state().weights[0].to_vector();
  EXPECT_THROW(rig.titans.process(rig.context, 3, true, b, nb, lb, bad), bus::PayloadError);
  EXPECT_THROW(rig.titans.process(rig.context, 3, true, b, nb, {}, {}), bus::PayloadError);
  EXPECT_EQ(rig.titans.state().weights[0].to_vector(), before);
  EXPECT_EQ(rig.titans.current_stats().rejected, 2u);
  const auto y2 = rig.titans.process(rig.context, 3, true, b, nb, lb, tb);
  EXPECT_EQ(y1, y2);
  // Other tokens give other readouts (the values carry the bytes).
  auto other = tb;
  for (auto& t : other) t = (t + 1) % 256;
  rig.titans.restore(snap);
  const auto y3 = rig.titans.process(rig.context, 3, true, b, nb, lb, other);
  EXPECT_NE(y1, y3);
  std::filesystem::remove_all(dir);
}

TEST(TitansComponent, MagNgramKeysReadLatentsOfTheirWidthAndTheHistoryTravelsInSnapshots) {
  // A MAG model with n-gram keys (models/titans/mag_ngram.ckpt's form): blt.patches latents are
  // C = input_dim - keys.dim wide, the node builds [unit latent ; h] from the slice's tokens and
  // the document's last tokens, which travel in snapshots.
  titans::MemoryConfig mc = memory_config();
  mc.input_dim = kIn + 8;
  titans::MagModel model;
  model.memory_config = mc;
  model.memory = std::make_unique<titans::NeuralMemory<float>>(mc);
  model.injection = titans::MagInjection<float>::init({1, 32, kDim, 0, true}, 5);
  model.keys.sizes = {2, 5};
  model.keys.dim = 8;
  const auto dir = std::filesystem::temp_directory_path() / "neat_titans_component_ngram";
  std::filesystem::create_directories(dir);
  titans::save_mag_model(dir / "mag.ckpt", model, nn::DType::bf16);
  YAML::Node config;
  config["model"] = (dir / "mag.ckpt").string();
  Rig rig(config);
  std::mt19937_64 rng(9);
  const std::int64_t na = mc.chunk + 9, nb = 2 * mc.chunk;
  const auto a = random_latents(na, rng), b = random_latents(nb, rng);  // kIn wide
  std::vector<std::uint32_t> la(static_cast<std::size_t>(na), 1),
      lb(static_cast<std::size_t>(nb), 2);
  std::vector<std::int32_t> ta, tb;
  for (std::int64_t i = 0; i < na; ++i) ta.push_back(static_cast<std::int32_t>(rng() % 256));
  for (std::int64_t i = 0; i < 2 * nb; ++i) tb.push_back(static_cast<std::int32_t>(rng() % 256));
  rig.titans.process(rig.context, 4, false, a, na, la, ta);
  const std::string snap = rig.titans.snapshot();
  const auto y1 = rig.titans.process(rig.context, 4, true, b, nb, lb, tb);
  rig.titans.restore(snap);
  const auto y2 = rig.titans.process(rig.context, 4, true, b, nb, lb, tb);
  EXPECT_EQ(y1, y2);
  // Latents of the memory's full input width, or a slice without tokens: rejected and counted.
  rig.titans.restore(snap);
  EXPECT_THROW(rig.titans.process(rig.context, 4, true,
                                  std::vector<float>(static_cast<std::size_t>(nb * mc.input_dim)),
                                  nb, lb, tb),
               bus::PayloadError);
  EXPECT_THROW(rig.titans.process(rig.context, 4, true, b, nb, {}, {}), bus::PayloadError);
  EXPECT_EQ(rig.titans.current_stats().rejected, 2u);
  // The tokens reach the readouts: changing the first slice's last token (same latents) changes
  // the second slice's readouts (the n-grams of the patches around it and the memory written
  // from them; slice-by-slice equality with the whole document: TitansNgramKeys tests).
  rig.titans.restore(snap);
  auto changed = ta;
  changed.back() = (changed.back() + 1) % 256;
  Rig other(config);
  other.titans.process(other.context, 4, false, a, na, la, changed);
  const auto y3 = other.titans.process(other.context, 4, true, b, nb, lb, tb);
  EXPECT_NE(y1, y3);
  std::filesystem::remove_all(dir);
}
