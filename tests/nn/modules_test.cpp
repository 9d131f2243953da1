// Modules (names, freezing, KV cache), optimizers and schedules, and learning end to end: a
// 2-layer model overfits 1 KiB of real text to < 0.1 bits per byte.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <numbers>
#include <random>
#include <string>

#include "gradcheck.hpp"
#include "neat/nn/modules.hpp"
#include "neat/nn/optim.hpp"

namespace neat::nn {
namespace {

TransformerConfig tiny_config() {
  TransformerConfig c;
  c.vocab_size = 11;
  c.dim = 8;
  c.layers = 2;
  c.heads = 2;
  c.mlp_hidden = 16;
  c.max_seq_len = 6;
  c.seed = 5;
  return c;
}

TEST(Module, NamedParametersUseDottedPaths) {
  TransformerLM<float> lm(tiny_config());
  std::vector<std::string> names;
  for (const auto& [name, p] : lm.named_parameters()) names.push_back(name);
  EXPECT_EQ(names.front(), "tok_emb.weight");
  EXPECT_NE(std::find(names.begin(), names.end(), "blocks.0.attn.wq.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "blocks.1.mlp.down.bias"), names.end());
  EXPECT_EQ(names.back(), "lm_head.weight");
  EXPECT_EQ(lm.parameter_count(),
            11 * 8 + 6 * 8 + 2 * (8 + 4 * 64 + 8 + 8 * 16 + 16 + 16 * 8 + 8) + 8 + 8 * 11);
}

TEST(Module, FrozenParametersGetNoGradient) {
  TransformerLM<float> lm(tiny_config());
  lm.blocks[0]->set_trainable(false);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6}, targets = {2, 3, 4, 5, 6, 7};
  lm.loss(tokens, targets, 1, 6).backward();
  EXPECT_FALSE(lm.blocks[0]->attn.wq.weight.grad().defined());
  EXPECT_TRUE(lm.blocks[1]->attn.wq.weight.grad().defined());
  EXPECT_TRUE(lm.tok_emb.weight.grad().defined());
  EXPECT_EQ(lm.trainable_parameters().size(),
            lm.parameters().size() - lm.blocks[0]->parameters().size());
}

TEST(Module, TransformerGradientMatchesFiniteDifferenceInDouble) {
  TransformerConfig c = tiny_config();
  c.window = 3;
  TransformerLM<double> lm(c);
  // Weights of order 1 (not the 0.02 init) so that every gradient is far above rounding noise.
  std::mt19937_64 rng(17);
  for (auto& [name, p] : lm.named_parameters()) {
    Tensord w = p;
    init_normal(w, rng, 0.5);
  }
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 0, 9, 9, 1, 2, 10};
  const std::vector<int32_t> targets = {2, 3, 4, 5, 6, 7, 9, 9, 1, 2, 10, -100};
  // Check the gradient of a few parameters by perturbing the live weights.
  for (Tensord p : {lm.blocks[0]->attn.wk.weight, lm.blocks[1]->mlp.up.bias, lm.tok_emb.weight,
                    lm.blocks[1]->norm1.weight}) {
    lm.zero_grad();
    lm.loss(tokens, targets, 2, 6).backward();
    const std::vector<double> analytic = p.grad().to_vector();
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < p.numel(); ++i) {
      NoGradGuard no_grad;
      const double saved = p.data()[i];
      p.data()[i] = saved + 1e-6;
      const double plus = lm.loss(tokens, targets, 2, 6).item();
      p.data()[i] = saved - 1e-6;
      const double minus = lm.loss(tokens, targets, 2, 6).item();
      p.data()[i] = saved;
      const double numeric = (plus - minus) / 2e-6;
      diff += (numeric - analytic[i]) * (numeric - analytic[i]);
      norm += numeric * numeric + analytic[i] * analytic[i];
    }
    EXPECT_LT(std::sqrt(diff) / std::sqrt(norm), 1e-6);
  }
}

TEST(Module, BlockHookAddsToTheResidualStreamAndStaysDifferentiable) {
  TransformerLM<double> lm(tiny_config());
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> targets = {2, 3, 4, 5, 6, 7};
  // An identity hook leaves the model unchanged: lm_head(hidden) == forward.
  const auto plain = lm.forward(tokens, 1, 6).to_vector();
  const auto hooked =
      lm.lm_head.forward(lm.hidden(tokens, 1, 6, [](int64_t, const Tensord& x) { return x; }))
          .to_vector();
  ASSERT_EQ(plain.size(), hooked.size());
  for (std::size_t i = 0; i < plain.size(); ++i) EXPECT_EQ(plain[i], hooked[i]);
  // A vector g added after block 0 (as a memory readout would be): d loss / d g by finite
  // differences.
  Tensord g = Tensord::zeros({8}, true);
  std::mt19937_64 rng(3);
  init_normal(g, rng, 0.5);
  const auto hook = [&](int64_t layer, const Tensord& x) { return layer == 0 ? add(x, g) : x; };
  const auto loss = [&] {
    return cross_entropy(lm.lm_head.forward(lm.hidden(tokens, 1, 6, hook)), targets);
  };
  loss().backward();
  const auto analytic = g.grad().to_vector();
  for (int64_t i = 0; i < 8; ++i) {
    NoGradGuard no_grad;
    const double saved = g.data()[i];
    g.data()[i] = saved + 1e-6;
    const double plus = loss().item();
    g.data()[i] = saved - 1e-6;
    const double minus = loss().item();
    g.data()[i] = saved;
    EXPECT_NEAR((plus - minus) / 2e-6, analytic[i], 1e-7 + 1e-6 * std::abs(analytic[i]));
  }
  EXPECT_NE(lm.forward(tokens, 1, 6).to_vector()[0],
            lm.lm_head.forward(lm.hidden(tokens, 1, 6, hook)).to_vector()[0]);
}

TEST(Module, KvCacheDecodingMatchesFullForward) {
  TransformerConfig c = tiny_config();
  for (int64_t window : {0, 2}) {
    c.window = window;
    TransformerLM<float> lm(c);
    const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8};
    const auto full = lm.forward(tokens, 2, 6).to_vector();
    auto cache = lm.make_cache(2);
    // Prefill 2 positions, then one at a time.
    std::vector<float> stepped(full.size());
    auto put = [&](const Tensorf& logits, int64_t start) {
      const int64_t tn = logits.shape()[1];
      const auto v = logits.to_vector();
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t t = 0; t < tn; ++t)
          for (int64_t k = 0; k < 11; ++k)
            stepped[(b * 6 + start + t) * 11 + k] = v[(b * tn + t) * 11 + k];
    };
    put(lm.forward_cached({3, 1, 2, 6}, 2, cache), 0);
    for (int64_t t = 2; t < 6; ++t) put(lm.forward_cached({tokens[t], tokens[6 + t]}, 2, cache), t);
    for (std::size_t i = 0; i < full.size(); ++i) EXPECT_NEAR(stepped[i], full[i], 1e-5);
    EXPECT_THROW(lm.forward_cached({1, 1}, 2, cache), std::length_error);
  }
}

TEST(Optimizer, AdamWMatchesHandComputedFirstSteps) {
  Tensord w = Tensord::from_vector({2}, {1.0, -2.0}, true);
  AdamWOptions opt;
  opt.lr = 0.1;
  opt.weight_decay = 0.5;
  AdamW<double> adam({w}, opt);
  w.set_grad(Tensord::from_vector({2}, {0.5, -0.25}));
  adam.step();
  // Step 1: m_hat = g, v_hat = g^2 -> update = lr * sign(g) (up to eps), after decay (1 - lr wd).
  EXPECT_NEAR(w.to_vector()[0], 1.0 * 0.95 - 0.1, 1e-6);
  EXPECT_NEAR(w.to_vector()[1], -2.0 * 0.95 + 0.1, 1e-6);
}

TEST(Optimizer, SgdMomentumAccumulatesVelocity) {
  Tensord w = Tensord::from_vector({1}, {0.0}, true);
  SgdOptions opt;
  opt.lr = 1.0;
  opt.momentum = 0.9;
  SGD<double> sgd({w}, opt);
  w.set_grad(Tensord::from_vector({1}, {1.0}));
  sgd.step();
  sgd.step();
  EXPECT_NEAR(w.item(), -(1.0 + 1.9), 1e-12);
}

TEST(Optimizer, ClipGradNormScalesToMaxNormAndReportsTheOriginal) {
  Tensord a = Tensord::from_vector({2}, {0, 0}, true), b = Tensord::from_vector({1}, {0}, true);
  a.set_grad(Tensord::from_vector({2}, {3, 0}));
  b.set_grad(Tensord::from_vector({1}, {4}));
  EXPECT_NEAR(clip_grad_norm<double>({a, b}, 1.0), 5.0, 1e-12);
  EXPECT_NEAR(a.grad().to_vector()[0], 0.6, 1e-6);
  EXPECT_NEAR(b.grad().to_vector()[0], 0.8, 1e-6);
}

TEST(Schedule, WarmupCosineAndInverseSqrtFollowTheirFormulas) {
  WarmupCosineLr cosine(1.0, 10, 110, 0.1);
  EXPECT_NEAR(cosine.lr(), 0.1, 1e-12);  // step 0 of 10 warmup steps
  cosine.set_step(10);
  EXPECT_NEAR(cosine.lr(), 1.0, 1e-12);
  cosine.set_step(60);
  EXPECT_NEAR(cosine.lr(), 0.1 + 0.45 * (1 + std::cos(std::numbers::pi * 0.5)), 1e-12);
  cosine.set_step(500);
  EXPECT_NEAR(cosine.lr(), 0.1, 1e-12);
  cosine.scale(0.5);
  EXPECT_NEAR(cosine.lr(), 0.05, 1e-12);
  InverseSqrtLr inv(2.0, 4);
  inv.set_step(15);
  EXPECT_NEAR(inv.lr(), 2.0 * std::sqrt(4.0 / 16.0), 1e-12);
  ConstantLr constant(0.3);
  constant.advance();
  constant.set_lr(0.2);
  EXPECT_NEAR(constant.lr(), 0.2, 1e-12);
  EXPECT_EQ(constant.step(), 1);
}

// The first 1 KiB of Debian's English fortunes (package fortunes, /usr/share/games/fortunes/
// fortunes), copied into the repository so the test runs without the package.
std::string one_kib_of_text() {
  std::ifstream in(std::string(NEAT_SOURCE_DIR) + "/tests/nn/data/fortunes-1k.txt",
                   std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(Learning, TwoLayerModelOverfitsOneKibibyteBelowPointOneBitsPerByte) {
  const std::string text = one_kib_of_text();
  ASSERT_EQ(text.size(), 1024u);
  TransformerConfig c;
  c.vocab_size = 256;
  c.dim = 64;
  c.layers = 2;
  c.heads = 4;
  c.mlp_hidden = 256;
  c.max_seq_len = 128;
  c.seed = 7;
  TransformerLM<float> lm(c);
  AdamWOptions opt;
  opt.lr = 3e-3;
  opt.weight_decay = 0.0;
  AdamW<float> adam(lm.trainable_parameters(), opt);
  const int64_t T = 128, B = 8;
  // Windows start at multiples of 64 so that every byte is predicted with context.
  std::vector<int64_t> starts;
  for (int64_t s = 0; s + T + 1 <= static_cast<int64_t>(text.size()); s += 64) starts.push_back(s);
  starts.push_back(static_cast<int64_t>(text.size()) - T - 1);
  std::mt19937_64 rng(11);
  auto batch = [&](const std::vector<int64_t>& chosen, std::vector<int32_t>& x,
                   std::vector<int32_t>& y) {
    x.clear();
    y.clear();
    for (int64_t s : chosen)
      for (int64_t t = 0; t < T; ++t) {
        x.push_back(static_cast<unsigned char>(text[s + t]));
        y.push_back(static_cast<unsigned char>(text[s + t + 1]));
      }
  };
  auto bits_per_byte = [&]() {
    NoGradGuard no_grad;
    std::vector<int32_t> x, y;
    batch(starts, x, y);
    return lm.loss(x, y, static_cast<int64_t>(starts.size()), T).item() / std::log(2.0);
  };
  double bpb = bits_per_byte();
  EXPECT_GT(bpb, 6.0);
  std::vector<int32_t> x, y;
  for (int step = 0; step < 600 && bpb >= 0.1; ++step) {
    std::vector<int64_t> chosen;
    std::uniform_int_distribution<std::size_t> pick(0, starts.size() - 1);
    for (int64_t b = 0; b < B; ++b) chosen.push_back(starts[pick(rng)]);
    batch(chosen, x, y);
    adam.zero_grad();
    lm.loss(x, y, B, T).backward();
    clip_grad_norm(adam.parameters(), 1.0);
    adam.step();
    if (step % 25 == 24) bpb = bits_per_byte();
  }
  bpb = bits_per_byte();
  EXPECT_LT(bpb, 0.1);
}

}  // namespace
}  // namespace neat::nn
