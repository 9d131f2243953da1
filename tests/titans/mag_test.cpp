// MAG injection of the Titans memory into the byte LM: finite differences (float64) of the
// gated residual and of the readouts through the inner updates, causality of the readouts
// (row p depends on latents < p only), frozen memory, the block hook (zero gate = no hook; the
// trained model changes predictions), patching and latents from the shipped byte LM, and the
// model file round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "../nn/gradcheck.hpp"
#include "neat/blt/byte_lm.hpp"
#include "neat/nn/ops.hpp"
#include "neat/titans/mag.hpp"
#include "small_memory.hpp"

using namespace neat;
using nn::Tensord;
using nn::testing::gradient_relative_error;
using nn::testing::random;
using nn::testing::weighted_sum;

namespace {

const std::string kByteLM = std::string(NEAT_SOURCE_DIR) + "/models/blt/byte_lm.bf16.ckpt";
const std::string kMag = std::string(NEAT_SOURCE_DIR) + "/models/titans/mag.ckpt";

titans::MemoryConfig small_config() { return titans::testing::small_memory_config(); }

std::vector<std::int32_t> text_tokens(std::size_t bytes) {
  std::ifstream in(std::string(NEAT_SOURCE_DIR) + "/README.md", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  s.resize(std::min(s.size(), bytes));
  return blt::document_tokens(std::vector<std::uint8_t>(s.begin(), s.end()));
}

}  // namespace

TEST(TitansMag, InjectionGradientMatchesFiniteDifferences) {
  std::mt19937_64 rng(7);
  const titans::MagConfig mc{0, 6, 4};
  const Tensord x0 = random({2, 3, 6}, rng, 1.0), r0 = random({2, 3, 4}, rng, 1.0);
  auto f = [&](const std::vector<Tensord>& in) {
    titans::MagInjection<double> inj;
    inj.config = mc;
    inj.w_o = in[0], inj.w_g = in[1], inj.b_g = in[2];
    return weighted_sum(inj.inject(in[3], in[4]));
  };
  const std::vector<Tensord> inputs = {random({4, 6}, rng, 0.5), random({6, 6}, rng, 0.5),
                                       random({6}, rng, 0.5), x0, r0};
  EXPECT_LT(gradient_relative_error(f, inputs), 1e-6);
}

TEST(TitansMag, ReadoutsGradientThroughUpdatesMatchesFiniteDifferences) {
  std::mt19937_64 rng(11);
  const titans::MemoryConfig config = small_config();
  auto init = titans::MemoryParams<double>::init(config);
  for (auto* t : {&init.theta_w, &init.eta_w, &init.alpha_w}) *t = random({5, 1}, rng, 0.5);
  for (auto* t : {&init.theta_b, &init.eta_b, &init.alpha_b}) *t = random({1}, rng, 0.5);
  const Tensord latents = random({7, 5}, rng, 1.0);  // 6 associations: 3 chunks, 2 writes
  auto f = [&](const std::vector<Tensord>& in) {
    titans::MemoryParams<double> p;
    p.w_k = in[0], p.w_v = in[1], p.w_q = in[2];
    p.theta_w = in[3], p.theta_b = in[4], p.eta_w = in[5], p.eta_b = in[6];
    p.alpha_w = in[7], p.alpha_b = in[8];
    p.m0 = {in[9], in[10]};
    p.persistent = in[11];
    const titans::NeuralMemory<double> memory(config, p);
    return weighted_sum(titans::mag_readouts(memory, latents, true), 5);
  };
  std::vector<Tensord> inputs;
  for (auto& [name, t] : init.named()) inputs.push_back(t.detach());
  ASSERT_EQ(inputs.size(), 12u);
  EXPECT_LT(gradient_relative_error(f, inputs), 1e-6);
}

TEST(TitansMag, ReadoutOfPatchDependsOnEarlierPatchesOnly) {
  std::mt19937_64 rng(5);
  titans::NeuralMemory<double> memory(small_config());
  nn::NoGradGuard no_grad;
  const Tensord latents = random({9, 5}, rng, 1.0);
  const auto base = titans::mag_readouts(memory, latents, true).to_vector();
  for (double v : std::vector<double>(base.begin(), base.begin() + 4)) EXPECT_EQ(v, 0.0);
  for (std::int64_t k = 0; k < 9; ++k) {
    auto changed = latents.to_vector();
    for (int c = 0; c < 5; ++c) changed[static_cast<std::size_t>(k * 5 + c)] += 0.7;
    const auto r =
        titans::mag_readouts(memory, Tensord::from_vector({9, 5}, changed), true).to_vector();
    for (std::int64_t p = 0; p <= k; ++p)  // rows 0..k never see latent k
      for (int c = 0; c < 4; ++c)
        EXPECT_EQ(r[static_cast<std::size_t>(p * 4 + c)], base[static_cast<std::size_t>(p * 4 + c)])
            << "latent " << k << " reached the readout of patch " << p;
    if (k + 1 < 9) {  // row k + 1 reads with the query of latent k
      double diff = 0;
      for (int c = 0; c < 4; ++c)
        diff += std::abs(r[static_cast<std::size_t>((k + 1) * 4 + c)] -
                         base[static_cast<std::size_t>((k + 1) * 4 + c)]);
      EXPECT_GT(diff, 0.0);
    }
  }
}

TEST(TitansMag, FrozenMemoryReadsTheInitialState) {
  std::mt19937_64 rng(9);
  titans::NeuralMemory<double> memory(small_config());
  nn::NoGradGuard no_grad;
  const Tensord latents = random({6, 5}, rng, 1.0);
  const auto frozen = titans::mag_readouts(memory, latents, false).to_vector();
  const auto state = memory.initial_state();
  auto unit = latents.to_vector();  // mag_readouts scales each latent to unit norm
  for (std::size_t r = 0; r < 6; ++r) {
    double n2 = 0;
    for (std::size_t c = 0; c < 5; ++c) n2 += unit[r * 5 + c] * unit[r * 5 + c];
    for (std::size_t c = 0; c < 5; ++c) unit[r * 5 + c] /= std::sqrt(n2);
  }
  const auto direct =
      memory.read(state, nn::slice(Tensord::from_vector({6, 5}, unit), 0, 0, 5)).to_vector();
  for (std::size_t i = 0; i < direct.size(); ++i) EXPECT_NEAR(frozen[4 + i], direct[i], 1e-12);
  const auto updated = titans::mag_readouts(memory, latents, true).to_vector();
  double diff = 0;
  for (std::size_t i = 0; i < updated.size(); ++i) diff += std::abs(updated[i] - frozen[i]);
  EXPECT_GT(diff, 1e-6);  // chunks after the first read written memory
}

TEST(TitansMag, PatchDocumentPoolsHiddenStatesOverEntropyPatches) {
  const auto lm = blt::load_byte_lm(kByteLM);
  const auto tokens = text_tokens(2 * 256);  // BOS + 512 bytes + EOS
  blt::PatcherOptions po;
  const auto dp = titans::patch_document(*lm, tokens, po);
  ASSERT_EQ(dp.patch_of_position.size(), tokens.size());
  const auto flags = blt::patch_starts(dp.entropies, tokens, po);
  const auto expect = blt::next_token_entropies_batch(*lm, tokens);
  for (std::size_t i = 0; i + 1 < tokens.size(); ++i) EXPECT_NEAR(dp.entropies[i], expect[i], 1e-3);
  std::int64_t p = -1;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (flags[i] || i == 0) ++p;
    EXPECT_EQ(dp.patch_of_position[i], p);
  }
  EXPECT_EQ(dp.latents.size(0), p + 1);
  EXPECT_GT(p, 20);
  // Latent of patch 3 = mean of the final hidden states of its positions (first window).
  nn::NoGradGuard no_grad;
  const std::vector<std::int32_t> window(tokens.begin(), tokens.begin() + 256);
  const auto h = lm->hidden(window, 1, 256).contiguous().to_vector();
  const auto s = static_cast<std::size_t>(dp.patch_starts[3]);
  const auto e = static_cast<std::size_t>(dp.patch_starts[4]);
  ASSERT_LT(e, 256u);
  const auto lat = dp.latents.to_vector();
  for (std::size_t c = 0; c < 256; c += 17) {
    double m = 0;
    for (std::size_t i = s; i < e; ++i) m += h[i * 256 + c];
    EXPECT_NEAR(lat[3 * 256 + c], m / static_cast<double>(e - s), 1e-4);
  }
}

TEST(TitansMag, ZeroGateEqualsNoHookAndTheTrainedModelChangesPredictions) {
  const auto lm = blt::load_byte_lm(kByteLM);
  const auto tokens = text_tokens(3 * 256);
  if (!std::filesystem::exists(kMag)) GTEST_SKIP() << "no trained model at " << kMag;
  titans::MagModel model = titans::load_mag_model(kMag);
  const auto dp = titans::patch_document(*lm, tokens, model.patcher);
  std::vector<float> r;
  {
    nn::NoGradGuard no_grad;
    r = titans::model_readouts(model, dp.latents, tokens, dp.patch_starts, true)
            .contiguous()
            .to_vector();
  }
  const auto base = blt::target_log_probs(*lm, tokens, 2);
  auto closed = model.injection;
  closed.b_g = nn::Tensor<float>::full({closed.config.model_dim}, -1e4f);  // sigmoid = 0
  const auto shut = blt::target_log_probs(
      *lm, tokens, 2, titans::make_readout_hook(closed, dp.patch_of_position, r));
  ASSERT_EQ(shut.size(), base.size());
  for (std::size_t i = 0; i < base.size(); ++i) EXPECT_EQ(shut[i], base[i]) << i;
  const auto open = blt::target_log_probs(
      *lm, tokens, 2, titans::make_readout_hook(model.injection, dp.patch_of_position, r));
  double diff = 0;
  for (std::size_t i = 0; i < base.size(); ++i) diff += std::abs(open[i] - base[i]);
  EXPECT_GT(diff / static_cast<double>(base.size()), 1e-3);
  // Patch 0 receives r_0 = 0: its positions are unchanged.
  for (std::size_t i = 0; i < base.size() && dp.patch_of_position[i] == 0; ++i)
    EXPECT_NEAR(open[i], base[i], 1e-5);
}

TEST(TitansMag, HookRejectsPositionsWithoutPatchOrReadout) {
  titans::MagConfig mc{0, 4, 2};
  const auto inj = titans::MagInjection<float>::init(mc, 1);
  const auto hook = titans::make_readout_hook(inj, {0, 0, 1}, {0, 0, 1, 1});
  EXPECT_NO_THROW(hook({0}, 3));
  EXPECT_THROW(hook({1}, 3), std::out_of_range);
  EXPECT_THROW(titans::make_readout_hook(inj, {0, 5}, {0, 0})({0}, 2), std::out_of_range);
  EXPECT_THROW(titans::make_readout_hook(inj, {0}, {0, 0, 1}), std::invalid_argument);
}

TEST(TitansMag, ModelFileRoundTripAndCorruptionIsReported) {
  titans::MemoryConfig c = small_config();
  titans::MagModel m;
  m.memory_config = c;
  m.patcher.threshold = 1.25;
  m.memory = std::make_unique<titans::NeuralMemory<float>>(c);
  m.injection = titans::MagInjection<float>::init({1, 5, 4}, 3);
  const auto dir = std::filesystem::temp_directory_path() / "neat_titans_mag_test";
  std::filesystem::create_directories(dir);
  const auto file = dir / "mag.ckpt";
  titans::save_mag_model(file, m);
  const auto back = titans::load_mag_model(file);
  EXPECT_EQ(back.patcher.threshold, 1.25);
  EXPECT_EQ(back.injection.config.layer, 1);
  EXPECT_EQ(back.memory->params().w_k.to_vector(), m.memory->params().w_k.to_vector());
  EXPECT_EQ(back.injection.w_g.to_vector(), m.injection.w_g.to_vector());
  EXPECT_EQ(back.memory->params().persistent.to_vector(),
            m.memory->params().persistent.to_vector());
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(60);
    f.put('\x5a');
  }
  EXPECT_THROW(titans::load_mag_model(file), std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST(TitansMag, StreamInSlicesEqualsTheWholeDocumentReadouts) {
  // The bus node's form: latents arrive in slices of any size; the rows must be those of
  // mag_readouts over the whole document, and the writes must happen in the same order.
  std::mt19937_64 rng(21);
  titans::MemoryConfig c = small_config();
  c.chunk = 3;
  const titans::NeuralMemory<double> memory(c);
  nn::NoGradGuard no_grad;
  const Tensord latents = random({23, c.input_dim}, rng, 2.0);
  const auto whole = titans::mag_readouts(memory, latents, true).to_vector();
  for (const std::vector<std::int64_t>& slices :
       {std::vector<std::int64_t>{23}, {1, 22}, {1, 1, 1, 20}, {4, 3, 9, 7}, {2, 5, 16}}) {
    titans::MagStream<double> stream(memory);
    stream.start_document(5);
    std::vector<double> rows;
    std::int64_t at = 0;
    std::vector<titans::ChunkRecord> records;
    for (const auto n : slices) {
      const auto y = stream.push(nn::slice(latents, 0, at, at + n), {}, &records).to_vector();
      ASSERT_EQ(y.size(), static_cast<std::size_t>(n * c.dim));
      rows.insert(rows.end(), y.begin(), y.end());
      at += n;
    }
    ASSERT_EQ(rows.size(), whole.size());
    for (std::size_t i = 0; i < rows.size(); ++i) EXPECT_NEAR(rows[i], whole[i], 1e-12) << i;
    EXPECT_EQ(stream.patches(), 23);
    // Keys 0..21 (rows 1..22) lie in chunks 0..7; the chunks before the last key's chunk
    // (0..6) are written, each of C = 3 associations; x_21 and x_22 wait.
    EXPECT_EQ(records.size(), 7u);
    EXPECT_EQ(stream.written(), 21);
    EXPECT_EQ(stream.unwritten().size(0), 2);
  }
  // A new document starts from the initial memory; with keep_memory the written memory stays.
  titans::MagStream<double> stream(memory);
  stream.start_document(1);
  stream.push(latents);
  const auto after = stream.state().weights[0].to_vector();
  stream.start_document(2);
  EXPECT_EQ(stream.patches(), 0);
  EXPECT_EQ(stream.state().weights[0].to_vector(), memory.initial_state().weights[0].to_vector());
  stream.push(latents);
  stream.finish();  // the remaining association x_21 -> x_22
  const auto finished = stream.state().weights[0].to_vector();
  EXPECT_NE(finished, after);
  stream.start_document(3, /*keep_memory=*/true);
  EXPECT_EQ(stream.state().weights[0].to_vector(), finished);
  EXPECT_THROW(stream.push(random({2, c.input_dim + 1}, rng, 1.0)), std::invalid_argument);
}
