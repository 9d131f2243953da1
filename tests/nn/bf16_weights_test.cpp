// bfloat16 weight storage of Linear layers (issue 8, `precision: bf16`): lossless on
// bfloat16-exact weights, half the allocator's bytes, inference only, and the whole
// TransformerLM (full forward, KV cache, TokenDecoder) unchanged by it.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "neat/nn/bf16_weights.hpp"
#include "neat/nn/decode.hpp"
#include "neat/nn/modules.hpp"

namespace neat::nn {
namespace {

// Rounds every value of t to bfloat16 in place, as a bf16 checkpoint's weights are.
void round_to_bf16(Tensor<float>& t) {
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = bf16_to_float(float_to_bf16(p[i]));
}

// Largest |v| of a tensor.
float max_abs(const Tensor<float>& a) {
  float m = 0.0f;
  for (const float v : a.to_vector()) m = std::max(m, std::abs(v));
  return m;
}

// Largest |a - b| over two tensors of equal shape.
float max_abs_diff(const Tensor<float>& a, const Tensor<float>& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const auto va = a.to_vector(), vb = b.to_vector();
  float d = 0.0f;
  for (std::size_t i = 0; i < va.size(); ++i) d = std::max(d, std::abs(va[i] - vb[i]));
  return d;
}

TEST(Bf16Matrix, RoundsToNearestEvenAndWidensBackExactly) {
  const auto w = Tensor<float>::from_vector({2, 3}, {1.0f, -2.5f, 1.00390625f,  // 1 + 2^-8
                                                     1.01171875f, 3.0e-3f, 0.0f});
  const Bf16Matrix m = Bf16Matrix::from_float(w);
  ASSERT_EQ(m.rows(), 2);
  ASSERT_EQ(m.cols(), 3);
  EXPECT_EQ(m.stored_bytes(), 12);  // 6 values x 2 bytes
  const auto back = m.to_float().to_vector();
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], -2.5f);
  EXPECT_EQ(back[2], 1.0f);       // halfway between 1 and 1 + 2^-7: ties to even
  EXPECT_EQ(back[3], 1.015625f);  // 1 + 3 * 2^-8 -> 1 + 2^-6 (even)
  EXPECT_NEAR(back[4], 3.0e-3f, 3.0e-3f / 256);
  EXPECT_EQ(back[5], 0.0f);
  EXPECT_FALSE(bf16_representable(w));
  EXPECT_TRUE(bf16_representable(m.to_float()));
  EXPECT_THROW(Bf16Matrix::from_float(Tensor<float>::zeros({4})), std::invalid_argument);
}

TEST(Bf16Linear, EqualsFloat32OnBf16ExactWeightsForEveryPanelShape) {
  std::mt19937_64 rng(3);
  // One panel (up to 2^18 values: every matrix of the shipped byte LM) and several (256 rows
  // for 1024 inputs, 80 for 3000), with partial last panels; inputs with batch dims and a
  // transposed (non-contiguous) one.
  for (const auto& [in, out] : std::vector<std::pair<int64_t, int64_t>>{
           {256, 773}, {1024, 256}, {1024, 300}, {3000, 100}, {7, 5}}) {
    Linear<float> f32(in, out, true, rng, 0.5);
    round_to_bf16(f32.weight);
    init_normal(f32.bias, rng, 0.1);
    Linear<float> bf16(in, out, true, rng, 0.5);
    bf16.weight = f32.weight.clone();
    bf16.bias = f32.bias;
    bf16.store_weight_bf16();
    ASSERT_TRUE(bf16.weight_is_bf16());
    NoGradGuard no_grad;
    // Same products, summed by the GEMM in possibly another order: float rounding only.
    const auto x = Tensor<float>::randn({2, 9, in}, rng);
    const auto y = f32.forward(x);
    EXPECT_LE(max_abs_diff(bf16.forward(x), y), 2e-6f * max_abs(y)) << in << " -> " << out;
    if (in * out <= (int64_t{1} << 18)) {  // one panel: the same single GEMM, bit for bit
      EXPECT_EQ(bf16.forward(x).to_vector(), y.to_vector()) << in << " -> " << out;
    }
    const auto xt = Tensor<float>::randn({in, 3}, rng).transpose(0, 1);  // (3, in), strided
    const auto yt = f32.forward(xt);
    EXPECT_LE(max_abs_diff(bf16.forward(xt), yt), 2e-6f * max_abs(yt)) << in << " -> " << out;
  }
}

TEST(Bf16Linear, RoundsOtherWeightsWithinBf16Precision) {
  std::mt19937_64 rng(4);
  Linear<float> f32(64, 48, false, rng, 1.0);
  Linear<float> bf16(64, 48, false, rng, 1.0);
  bf16.weight = f32.weight.clone();
  bf16.store_weight_bf16();
  NoGradGuard no_grad;
  const auto x = Tensor<float>::randn({5, 64}, rng);
  // Each weight moves by at most 2^-9 of itself; |y| sums 64 products of N(0, 1) factors.
  const float bound = 64 * 4.0f * 4.0f / 512;
  EXPECT_LE(max_abs_diff(bf16.forward(x), f32.forward(x)), bound);
  EXPECT_GT(max_abs_diff(bf16.forward(x), f32.forward(x)), 0.0f);  // really rounded
}

TEST(Bf16Linear, HalvesTheAllocatorBytesOfTheWeight) {
  std::mt19937_64 rng(5);
  Linear<float> layer(256, 512, false, rng);
  const int64_t f32_bytes = 256 * 512 * 4;
  const auto before = memory_stats().current_bytes;
  layer.store_weight_bf16();
  const auto after = memory_stats().current_bytes;
  // The float32 weight is released; the bf16 values and the 4-byte placeholder remain.
  EXPECT_EQ(before - after, f32_bytes - f32_bytes / 2 - 4);
  EXPECT_EQ(layer.weight_bf16.stored_bytes(), f32_bytes / 2);
  // Counted under the caller's tag like any tensor.
  Linear<float> tagged(256, 512, false, rng);
  {
    MemoryTag tag("bf16_weights_test");
    tagged.store_weight_bf16();
  }
  EXPECT_EQ(memory_stats("bf16_weights_test").current_bytes, f32_bytes / 2 + 4);
  // The placeholder keeps the shape for parameter walks; its value is NaN, not a stale weight.
  EXPECT_EQ(layer.weight.shape(), (Shape{512, 256}));
  EXPECT_FALSE(layer.weight.is_contiguous());
  EXPECT_TRUE(std::isnan(layer.weight.data()[0]));
  EXPECT_EQ(layer.parameter_count(), 256 * 512);
}

TEST(Bf16Linear, RefusesGradientsAndDoubleModules) {
  std::mt19937_64 rng(6);
  Linear<float> layer(8, 4, true, rng);
  layer.store_weight_bf16();
  const auto x = Tensor<float>::randn({3, 8}, rng, 1.0f, 0.0f, /*requires_grad=*/true);
  EXPECT_THROW(layer.forward(x), std::logic_error);  // a gradient through the bf16 weight
  layer.set_trainable(true);
  EXPECT_THROW(layer.forward(x.detach()), std::logic_error);  // a gradient for it
  {
    NoGradGuard no_grad;  // inference is fine either way
    EXPECT_EQ(layer.forward(x).shape(), (Shape{3, 4}));
  }
  Linear<double> d(8, 4, false, rng);
  EXPECT_THROW(d.store_weight_bf16(), std::logic_error);
}

TransformerConfig small_config() {
  TransformerConfig c;
  c.vocab_size = 41;
  c.dim = 32;
  c.layers = 2;
  c.heads = 4;
  c.mlp_hidden = 64;
  c.max_seq_len = 16;
  c.seed = 9;
  return c;
}

TEST(Bf16Linear, TransformerLMWithBf16LinearWeightsIsTheSameModel) {
  TransformerLM<float> f32(small_config()), bf16(small_config());
  // Weights of order 1 (so that differences are not hidden by the 0.02 init), bf16-exact.
  std::mt19937_64 rng(7);
  {
    const auto dst = bf16.named_parameters();  // handles: released before the conversion
    std::size_t i = 0;
    for (auto& [name, p] : f32.named_parameters()) {
      Tensor<float> t = p;
      init_normal(t, rng, 0.3);
      round_to_bf16(t);
      Tensor<float> d = dst[i++].second;
      std::copy_n(t.data(), t.numel(), d.data());
    }
  }
  const auto before = memory_stats().current_bytes;
  EXPECT_EQ(store_linear_weights_bf16(bf16), 6 * 2 + 1);
  EXPECT_EQ(count_bf16_linear_weights(bf16), 6 * 2 + 1);
  EXPECT_EQ(count_bf16_linear_weights(f32), 0);
  const int64_t linear_values = 2 * (4 * 32 * 32 + 2 * 32 * 64) + 32 * 41;
  EXPECT_EQ(before - memory_stats().current_bytes, linear_values * 2 - 13 * 4);

  NoGradGuard no_grad;
  const std::vector<int32_t> tokens = {1, 5, 9, 3, 40, 0, 7, 7, 2, 11, 30, 4};
  EXPECT_LE(max_abs_diff(bf16.forward(tokens, 2, 6), f32.forward(tokens, 2, 6)), 1e-5f);
  // KV-cache decoding and the TokenDecoder (which reads the bf16 storage in place).
  auto cache_f32 = f32.make_cache(1), cache_bf16 = bf16.make_cache(1);
  TokenDecoder decoder(bf16);
  auto cache_decoder = bf16.make_cache(1);
  for (int32_t t : {3, 8, 1, 40, 22}) {
    const auto a = f32.forward_cached({t}, 1, cache_f32);
    const auto b = bf16.forward_cached({t}, 1, cache_bf16);
    EXPECT_LE(max_abs_diff(a, b), 1e-5f);
    decoder.step(t, cache_decoder);
    const auto va = a.to_vector();
    for (std::size_t v = 0; v < va.size(); ++v)
      ASSERT_NEAR(decoder.logits()[v], va[v], 1e-4f) << "token " << t << " logit " << v;
  }
}

}  // namespace
}  // namespace neat::nn
