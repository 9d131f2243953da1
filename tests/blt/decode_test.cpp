// The single-position decoder (nn::TokenDecoder) against the tensor path of the same model
// (TransformerLM::forward / hidden / hidden_cached): logits, hidden states and KV cache with
// float32 and with exact bfloat16 weights, odd sizes (vector tails), a sliding window and SiLU,
// a cache shared with hidden_cached, errors, run-to-run identity; nn::softmax_entropy against
// blt::logit_row_stats; and token-at-a-time EntropyStream pushes of the shipped byte LM against
// its batch entropies.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/entropy_stream.hpp"
#include "neat/nn/decode.hpp"
#include "neat/nn/ops.hpp"

namespace neat::blt {
namespace {

nn::TransformerConfig config(std::int64_t dim, std::int64_t context) {
  nn::TransformerConfig c;
  c.vocab_size = kFirstImageCode + 16;  // 277: not a multiple of the kernels' 4 rows or lanes
  c.dim = dim;
  c.layers = 2;
  c.heads = 4;
  c.mlp_hidden = 2 * dim;
  c.max_seq_len = context;
  c.seed = 5;
  return c;
}

std::vector<std::int32_t> some_tokens(std::size_t n) {
  const std::string text = "Decoding one byte at a time reads every weight once per byte. ";
  std::vector<std::uint8_t> b;
  for (std::size_t i = 0; i + 2 < n; ++i) b.push_back(static_cast<std::uint8_t>(text[i % 62]));
  return document_tokens(b);
}

// Keeps the upper 16 bits of every parameter: all weights become exact bfloat16 values.
void round_to_bf16(nn::TransformerLM<float>& model) {
  for (auto& [name, p] : model.named_parameters()) {
    float* d = p.data();
    for (std::int64_t i = 0; i < p.numel(); ++i) {
      std::uint32_t u;
      std::memcpy(&u, d + i, sizeof u);
      u &= 0xFFFF0000u;
      std::memcpy(d + i, &u, sizeof u);
    }
  }
}

// Decodes `tokens` one step each from an empty cache; logits (n, V) and hidden (n, C) row-major.
struct Decoded {
  std::vector<float> logits, hidden;
};
Decoded decode_all(const nn::TransformerLM<float>& model, const std::vector<std::int32_t>& tokens,
                   nn::DecodeWeights weights, std::vector<nn::KVCache<float>>& cache) {
  nn::TokenDecoder decoder(model, weights);
  Decoded d;
  for (const std::int32_t t : tokens) {
    decoder.step(t, cache);
    d.logits.insert(d.logits.end(), decoder.logits().begin(), decoder.logits().end());
    d.hidden.insert(d.hidden.end(), decoder.hidden().begin(), decoder.hidden().end());
  }
  return d;
}

void expect_matches_forward(const nn::TransformerLM<float>& model,
                            const std::vector<std::int32_t>& tokens, nn::DecodeWeights weights) {
  const auto n = static_cast<std::int64_t>(tokens.size());
  auto cache = model.make_cache(1);
  const auto d = decode_all(model, tokens, weights, cache);
  nn::NoGradGuard no_grad;
  const auto logits = model.forward(tokens, 1, n).clone();
  const auto hidden = model.hidden(tokens, 1, n).clone();
  ASSERT_EQ(d.logits.size(), static_cast<std::size_t>(logits.numel()));
  ASSERT_EQ(d.hidden.size(), static_cast<std::size_t>(hidden.numel()));
  for (std::int64_t i = 0; i < logits.numel(); ++i)
    ASSERT_NEAR(d.logits[i], logits.data()[i], 1e-4) << "logit " << i;
  for (std::int64_t i = 0; i < hidden.numel(); ++i)
    ASSERT_NEAR(d.hidden[i], hidden.data()[i], 1e-4) << "hidden " << i;
  // The cache holds what the tensor path would have put there.
  auto reference = model.make_cache(1);
  model.hidden_cached(tokens, 1, reference);
  const std::int64_t C = model.config().dim;
  for (std::size_t l = 0; l < cache.size(); ++l) {
    EXPECT_EQ(cache[l].length, n);
    for (std::int64_t i = 0; i < n * C; ++i) {
      ASSERT_NEAR(cache[l].k.data()[i], reference[l].k.data()[i], 1e-4) << "layer " << l;
      ASSERT_NEAR(cache[l].v.data()[i], reference[l].v.data()[i], 1e-4) << "layer " << l;
    }
  }
}

TEST(TokenDecoder, Float32StepsMatchTheForwardPassLogitsHiddenStatesAndCache) {
  nn::TransformerLM<float> model(config(32, 24));
  const nn::TokenDecoder decoder(model);
  EXPECT_FALSE(decoder.bf16_weights()) << "random float32 weights are not bf16-exact";
  expect_matches_forward(model, some_tokens(24), nn::DecodeWeights::automatic);
}

TEST(TokenDecoder, ExactBfloat16WeightsAreReadAsBfloat16WithTheSameResults) {
  nn::TransformerLM<float> model(config(24, 20));  // dim 24: one 16-lane block and a tail
  round_to_bf16(model);
  const nn::TokenDecoder decoder(model);
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  EXPECT_TRUE(decoder.bf16_weights());
#else
  EXPECT_FALSE(decoder.bf16_weights()) << "no bfloat16 kernel in this build";
#endif
  EXPECT_FALSE(nn::TokenDecoder(model, nn::DecodeWeights::f32).bf16_weights());
  const auto tokens = some_tokens(20);
  expect_matches_forward(model, tokens, nn::DecodeWeights::automatic);
  auto c1 = model.make_cache(1), c2 = model.make_cache(1);
  const auto a = decode_all(model, tokens, nn::DecodeWeights::automatic, c1);
  const auto b = decode_all(model, tokens, nn::DecodeWeights::f32, c2);
  for (std::size_t i = 0; i < a.logits.size(); ++i) ASSERT_NEAR(a.logits[i], b.logits[i], 1e-5);
}

TEST(TokenDecoder, SlidingWindowAndSiluMatchTheForwardPass) {
  auto c = config(32, 20);
  c.window = 5;
  c.activation = nn::Activation::silu;
  nn::TransformerLM<float> model(c);
  expect_matches_forward(model, some_tokens(20), nn::DecodeWeights::automatic);
}

TEST(TokenDecoder, ContinuesACacheFilledByHiddenCached) {
  nn::TransformerLM<float> model(config(32, 24));
  const auto tokens = some_tokens(18);
  auto cache = model.make_cache(1);
  nn::NoGradGuard no_grad;
  const std::vector<std::int32_t> head(tokens.begin(), tokens.begin() + 7);
  model.hidden_cached(head, 1, cache);
  nn::TokenDecoder decoder(model);
  const auto n = static_cast<std::int64_t>(tokens.size());
  const auto logits = model.forward(tokens, 1, n).clone();
  const std::int64_t V = model.config().vocab_size;
  for (std::int64_t k = 7; k < n; ++k) {
    decoder.step(tokens[k], cache);
    for (std::int64_t v = 0; v < V; ++v)
      ASSERT_NEAR(decoder.logits()[v], logits.data()[k * V + v], 1e-4) << "position " << k;
  }
}

TEST(TokenDecoder, RejectsBadTokensAndFullOrMismatchedCachesWithoutChangingThem) {
  nn::TransformerLM<float> model(config(32, 4));
  nn::TokenDecoder decoder(model);
  auto cache = model.make_cache(1);
  EXPECT_THROW(decoder.step(-1, cache), std::out_of_range);
  EXPECT_THROW(decoder.step(static_cast<std::int32_t>(model.config().vocab_size), cache),
               std::out_of_range);
  EXPECT_EQ(cache[0].length, 0);
  for (int i = 0; i < 4; ++i) decoder.step(kBos, cache);
  EXPECT_THROW(decoder.step(kBos, cache), std::length_error);
  EXPECT_EQ(cache[1].length, 4);
  std::vector<nn::KVCache<float>> one_layer;
  one_layer.push_back(model.blocks[0]->attn.make_cache(1, 4));
  EXPECT_THROW(decoder.step(kBos, one_layer), std::invalid_argument);
  auto batch_two = model.make_cache(2);
  EXPECT_THROW(decoder.step(kBos, batch_two), std::invalid_argument);
}

TEST(TokenDecoder, GivesIdenticalResultsFromRunToRun) {
  nn::TransformerLM<float> model(config(32, 24));
  const auto tokens = some_tokens(24);
  for (const auto weights : {nn::DecodeWeights::automatic, nn::DecodeWeights::f32}) {
    auto c1 = model.make_cache(1), c2 = model.make_cache(1);
    EXPECT_EQ(decode_all(model, tokens, weights, c1).logits,
              decode_all(model, tokens, weights, c2).logits);
  }
}

TEST(SoftmaxEntropy, AgreesWithTheDoubleComputationAndIsLnVForUniformLogits) {
  const std::vector<float> uniform(773, 0.25f);
  const auto u = nn::softmax_entropy(uniform);
  EXPECT_NEAR(u.entropy, std::log(773.0), 1e-9);
  EXPECT_NEAR(u.log_partition, 0.25 + std::log(773.0), 1e-6);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int row = 0; row < 20; ++row) {
    std::vector<float> z(773);
    for (auto& v : z) v = normal(rng);
    const auto fast = nn::softmax_entropy(z);
    const auto exact = logit_row_stats(z);
    EXPECT_NEAR(fast.entropy, exact.entropy, 1e-6 * std::max(1.0, exact.entropy));
    EXPECT_NEAR(fast.log_partition, exact.logsumexp, 1e-6 * std::abs(exact.logsumexp));
  }
  EXPECT_THROW(nn::softmax_entropy(std::span<const float>()), std::invalid_argument);
}

TEST(EntropyStream, OneTokenPushesOfTheShippedModelMatchItsBatchEntropies) {
  const std::filesystem::path ckpt =
      std::filesystem::path(NEAT_SOURCE_DIR) / "models/blt/byte_lm.bf16.ckpt";
  if (!std::filesystem::exists(ckpt)) GTEST_SKIP() << ckpt << " is not in this checkout";
  const auto model = load_byte_lm(ckpt);
  const auto tokens = some_tokens(300);  // crosses the 256-token context restart
  EntropyStream stream(*model);
  EntropyStreamOutput out;
  for (const std::int32_t& t : tokens) stream.push({&t, 1}, out);
  const auto batch = next_token_entropies_batch(*model, tokens);
  ASSERT_EQ(out.entropies.size(), batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) EXPECT_NEAR(out.entropies[i], batch[i], 1e-4) << i;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  EXPECT_TRUE(nn::TokenDecoder(*model).bf16_weights())
      << "a bf16 checkpoint widened to float32 is bf16-exact";
#endif
}

}  // namespace
}  // namespace neat::blt
