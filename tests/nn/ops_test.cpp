// Gradient checks (float64 finite differences, relative error < 1e-6) for every op, double
// backward through the derivative ops, and the autograd engine's bookkeeping.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gradcheck.hpp"
#include "neat/nn/ops.hpp"

namespace neat::nn {
namespace {

using testing::gradient_relative_error;
using testing::random;
using testing::weighted_sum;

constexpr double kTolerance = 1e-6;

std::mt19937_64 rng_for(const char* name) {
  return std::mt19937_64(std::hash<std::string>{}(name));
}

TEST(Elementwise, BroadcastingArithmeticGradientsMatchFiniteDifference) {
  auto rng = rng_for("broadcast");
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{2, 1, 4}, {3, 1}}, {{2, 3, 4, 5}, {1, 3, 1, 5}}};
  for (const auto& [sa, sb] : shapes) {
    const Tensord a = random(sa, rng);
    Tensord b = random(sb, rng);
    EXPECT_LT(
        gradient_relative_error([](auto in) { return weighted_sum(add(in[0], in[1])); }, {a, b}),
        kTolerance);
    EXPECT_LT(
        gradient_relative_error([](auto in) { return weighted_sum(sub(in[0], in[1])); }, {a, b}),
        kTolerance);
    EXPECT_LT(
        gradient_relative_error([](auto in) { return weighted_sum(mul(in[0], in[1])); }, {a, b}),
        kTolerance);
    const Tensord b_away = add_scalar(mul(b, b), 0.5);  // keep the divisor away from zero
    EXPECT_LT(gradient_relative_error([](auto in) { return weighted_sum(div(in[0], in[1])); },
                                      {a, b_away}),
              kTolerance);
  }
  const Tensord x = random({3, 5}, rng);
  EXPECT_LT(gradient_relative_error(
                [](auto in) { return weighted_sum(scale(add_scalar(in[0], 2.0), -1.5)); }, {x}),
            kTolerance);
}

TEST(RandomShapes, BroadcastMatmulReductionAndNormGradientsMatchFiniteDifference) {
  std::mt19937_64 rng(20261124);
  std::uniform_int_distribution<int64_t> extent(1, 4), rank(1, 4), coin(0, 1);
  for (int trial = 0; trial < 6; ++trial) {
    Shape sa(rank(rng));
    for (auto& d : sa) d = extent(rng);
    Shape sb = sa;  // same rank, some axes collapsed to 1 for broadcasting
    for (auto& d : sb)
      if (coin(rng)) d = 1;
    const Tensord a = random(sa, rng), b = random(sb, rng);
    const Tensord b_away = add_scalar(mul(b, b), 0.5);
    EXPECT_LT(
        gradient_relative_error([](auto in) { return weighted_sum(div(mul(in[0], in[1]), in[2])); },
                                {a, b, b_away}),
        kTolerance)
        << shape_string(sa) << " " << shape_string(sb);
    const int64_t axis = std::uniform_int_distribution<int64_t>(0, a.dim() - 1)(rng);
    EXPECT_LT(gradient_relative_error(
                  [axis](auto in) { return weighted_sum(sum(in[0], {axis}, true)); }, {a}),
              kTolerance);
    const Tensord w = random({sa.back()}, rng);
    EXPECT_LT(gradient_relative_error([](auto in) { return weighted_sum(rms_norm(in[0], in[1])); },
                                      {a, w}),
              kTolerance);
    const int64_t batch = extent(rng), m = extent(rng), k = extent(rng), n = extent(rng);
    const Tensord x = random({batch, m, k}, rng), y = random({batch, k, n}, rng);
    EXPECT_LT(
        gradient_relative_error([](auto in) { return weighted_sum(matmul(in[0], in[1])); }, {x, y}),
        kTolerance);
    const int64_t heads = extent(rng), head_dim = extent(rng), tk = extent(rng) + 1;
    const int64_t tq = std::uniform_int_distribution<int64_t>(1, tk)(rng);
    const int64_t window = std::uniform_int_distribution<int64_t>(0, tk)(rng);
    const Tensord q = random({2, tq, heads * head_dim}, rng),
                  kk = random({2, tk, heads * head_dim}, rng),
                  v = random({2, tk, heads * head_dim}, rng);
    EXPECT_LT(gradient_relative_error(
                  [heads, window](auto in) {
                    return weighted_sum(causal_attention(in[0], in[1], in[2], heads, window));
                  },
                  {q, kk, v}),
              kTolerance);
  }
}

TEST(Elementwise, ForwardBroadcastsTrailingAxes) {
  const Tensord a = Tensord::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensord b = Tensord::from_vector({3}, {10, 20, 30});
  EXPECT_EQ(add(a, b).to_vector(), (std::vector<double>{11, 22, 33, 14, 25, 36}));
  EXPECT_THROW(add(a, Tensord::zeros({2})), std::invalid_argument);
}

TEST(Reduction, SumAndMeanOverAxesGradientsMatchFiniteDifference) {
  auto rng = rng_for("sum");
  const Tensord x = random({2, 3, 4}, rng);
  for (const std::vector<int64_t>& axes :
       std::vector<std::vector<int64_t>>{{}, {0}, {1}, {-1}, {0, 2}}) {
    for (bool keep : {false, true}) {
      EXPECT_LT(gradient_relative_error(
                    [&](auto in) { return weighted_sum(sum(in[0], axes, keep)); }, {x}),
                kTolerance);
      EXPECT_LT(gradient_relative_error(
                    [&](auto in) { return weighted_sum(mean(in[0], axes, keep)); }, {x}),
                kTolerance);
    }
  }
  const Tensord t = transpose(x, 0, 2);
  EXPECT_NEAR(sum(t, {0}).to_vector()[0], sum(x, {2}).to_vector()[0], 1e-12);
}

TEST(Shape, ViewsShareStorageAndGradientsMatchFiniteDifference) {
  auto rng = rng_for("shape");
  const Tensord x = random({2, 3, 4}, rng);
  EXPECT_EQ(reshape(x, {6, 4}).data(), x.data());
  EXPECT_EQ(transpose(x, 0, 2).data(), x.data());
  EXPECT_EQ(slice(x, 1, 1, 3).data(), x.data() + 4);
  EXPECT_LT(gradient_relative_error(
                [](auto in) {
                  return weighted_sum(reshape(in[0], {4, -1}));
                },
                {x}),
            kTolerance);
  EXPECT_LT(
      gradient_relative_error([](auto in) { return weighted_sum(transpose(in[0], 0, 2)); }, {x}),
      kTolerance);
  EXPECT_LT(gradient_relative_error(
                [](auto in) { return weighted_sum(reshape(transpose(in[0], 1, 2), {-1})); }, {x}),
            kTolerance);
  EXPECT_LT(
      gradient_relative_error([](auto in) { return weighted_sum(slice(in[0], 2, 1, 3)); }, {x}),
      kTolerance);
  const Tensord y = random({2, 5, 4}, rng);
  EXPECT_LT(gradient_relative_error(
                [](auto in) {
                  return weighted_sum(concat<double>({in[0], in[1]}, 1));
                },
                {x, y}),
            kTolerance);
  const Tensord z = random({3, 1}, rng);
  EXPECT_LT(gradient_relative_error(
                [](auto in) {
                  return weighted_sum(broadcast_to(in[0], {2, 3, 4}));
                },
                {z}),
            kTolerance);
}

TEST(Gather, EmbeddingLookupGradientMatchesFiniteDifference) {
  auto rng = rng_for("gather");
  const Tensord w = random({7, 5}, rng);
  const std::vector<int32_t> idx = {1, 3, 3, 0, 6, 1};
  EXPECT_LT(gradient_relative_error(
                [&](auto in) {
                  return weighted_sum(gather_rows(in[0], idx, {2, 3}));
                },
                {w}),
            kTolerance);
  const Tensord g = random({6, 5}, rng);
  EXPECT_LT(gradient_relative_error(
                [&](auto in) { return weighted_sum(scatter_add_rows(in[0], idx, 7)); }, {g}),
            kTolerance);
  EXPECT_THROW(gather_rows(w, {7}, {1}), std::out_of_range);
}

TEST(Matmul, BatchedSharedAndTransposedGradientsMatchFiniteDifference) {
  auto rng = rng_for("matmul");
  const Tensord a2 = random({3, 4}, rng), b2 = random({4, 5}, rng);
  EXPECT_LT(
      gradient_relative_error([](auto in) { return weighted_sum(matmul(in[0], in[1])); }, {a2, b2}),
      kTolerance);
  const Tensord a3 = random({2, 3, 4}, rng), b3 = random({2, 4, 5}, rng);
  EXPECT_LT(
      gradient_relative_error([](auto in) { return weighted_sum(matmul(in[0], in[1])); }, {a3, b3}),
      kTolerance);
  EXPECT_LT(
      gradient_relative_error([](auto in) { return weighted_sum(matmul(in[0], in[1])); }, {a3, b2}),
      kTolerance);
  const Tensord a4 = random({2, 2, 3, 4}, rng), b4 = random({2, 2, 5, 4}, rng);
  EXPECT_LT(
      gradient_relative_error(
          [](auto in) { return weighted_sum(matmul(in[0], transpose(in[1], -2, -1))); }, {a4, b4}),
      kTolerance);
  const Tensord at = random({2, 4, 3}, rng);
  EXPECT_LT(
      gradient_relative_error(
          [](auto in) { return weighted_sum(matmul(transpose(in[0], 1, 2), in[1])); }, {at, b3}),
      kTolerance);
  const Tensord w = random({5, 4}, rng), bias = random({5}, rng);
  EXPECT_LT(gradient_relative_error(
                [](auto in) { return weighted_sum(linear(in[0], in[1], in[2])); }, {a3, w, bias}),
            kTolerance);
}

TEST(Matmul, TransposedViewMatchesCopiedOperand) {
  auto rng = rng_for("matmul-view");
  const Tensord a = random({3, 4}, rng), w = random({5, 4}, rng);
  const auto viewed = matmul(a, transpose(w, 0, 1)).to_vector();
  const auto copied = matmul(a, transpose(w, 0, 1).clone()).to_vector();
  ASSERT_EQ(viewed.size(), copied.size());
  for (std::size_t i = 0; i < viewed.size(); ++i) EXPECT_NEAR(viewed[i], copied[i], 1e-12);
}

class ActivationTest : public ::testing::TestWithParam<Activation> {};

TEST_P(ActivationTest, FunctionAndDerivativeOpsGradientsMatchFiniteDifference) {
  auto rng = rng_for("activation");
  Tensord x = random({3, 4}, rng);
  if (GetParam() == Activation::log) x = add_scalar(mul(x, x), 0.5);
  for (int order = 0; order <= 2; ++order) {
    EXPECT_LT(gradient_relative_error(
                  [&](auto in) { return weighted_sum(activation(in[0], GetParam(), order)); }, {x}),
              kTolerance)
        << "order " << order;
  }
}

TEST_P(ActivationTest, DoubleBackwardThroughInnerGradientMatchesFiniteDifference) {
  auto rng = rng_for("double-backward");
  Tensord x = random({2, 3}, rng);
  if (GetParam() == Activation::log) x = add_scalar(mul(x, x), 0.5);
  const Activation kind = GetParam();
  // h(x) = sum(w * d/dx [ sum(v * f(x)) ]) = sum(w * v * f'(x)): its gradient needs f''.
  auto h_attached = [kind](const std::vector<Tensord>& in) {
    EnableGradGuard with_grad;
    Tensord inner = testing::weighted_sum(activation(in[0], kind, 0), 7);
    Tensord gx = grad(inner, {in[0]}, true)[0];
    return testing::weighted_sum(gx, 8);
  };
  EXPECT_LT(gradient_relative_error(h_attached, {x}), kTolerance);
}

INSTANTIATE_TEST_SUITE_P(AllActivations, ActivationTest,
                         ::testing::Values(Activation::exp, Activation::log, Activation::tanh,
                                           Activation::sigmoid, Activation::silu,
                                           Activation::gelu));

TEST(Autograd, TitansStyleInnerStepIsDifferentiableThroughMatmulAndTanh) {
  auto rng = rng_for("titans");
  const Tensord m = random({4, 4}, rng, 0.5), k = random({3, 4}, rng), v = random({3, 4}, rng);
  // Outer loss after one inner gradient step on memory M: L(M - lr * dl/dM).
  auto outer = [](const std::vector<Tensord>& in) {
    EnableGradGuard with_grad;
    const Tensord& mem = in[0];
    Tensord inner =
        sum(mul(sub(tanh(matmul(in[1], mem)), in[2]), sub(tanh(matmul(in[1], mem)), in[2])));
    Tensord g = grad(inner, {mem}, true)[0];
    Tensord updated = sub(mem, scale(g, 0.1));
    return testing::weighted_sum(tanh(matmul(in[1], updated)), 5);
  };
  EXPECT_LT(gradient_relative_error(outer, {m, k, v}), kTolerance);
}

TEST(Softmax, SoftmaxAndLogSoftmaxGradientsMatchFiniteDifference) {
  auto rng = rng_for("softmax");
  const Tensord x = random({2, 3, 5}, rng);
  EXPECT_LT(gradient_relative_error([](auto in) { return weighted_sum(softmax(in[0])); }, {x}),
            kTolerance);
  EXPECT_LT(gradient_relative_error([](auto in) { return weighted_sum(log_softmax(in[0])); }, {x}),
            kTolerance);
}

TEST(Softmax, FusedOpRefusesSecondDerivative) {
  Tensord x = Tensord::from_vector({1, 3}, {0.1, 0.2, 0.3}, true);
  EnableGradGuard with_grad;
  Tensord g = grad(testing::weighted_sum(softmax(x)), {x}, true)[0];
  EXPECT_THROW(grad(sum(g), {x}), std::logic_error);
}

TEST(CrossEntropy, IgnoreIndexAndLabelSmoothingGradientsMatchFiniteDifference) {
  auto rng = rng_for("ce");
  const Tensord logits = random({2, 3, 6}, rng);
  const std::vector<int32_t> targets = {0, 5, -100, 2, 3, -100};
  for (double smoothing : {0.0, 0.1}) {
    CrossEntropyOptions opt;
    opt.label_smoothing = smoothing;
    EXPECT_LT(gradient_relative_error([&](auto in) { return cross_entropy(in[0], targets, opt); },
                                      {logits}),
              kTolerance);
  }
}

TEST(CrossEntropy, MatchesNegativeLogSoftmaxOfTarget) {
  const Tensord logits = Tensord::from_vector({2, 3}, {1, 2, 3, 0, 0, 0});
  const double first = -(1 - 3 - std::log(1 + std::exp(-1) + std::exp(-2)));
  EXPECT_NEAR(cross_entropy(logits, {0, 1}).item(), (first + std::log(3.0)) / 2, 1e-12);
  EXPECT_NEAR(cross_entropy(logits, {-100, 1}).item(), std::log(3.0), 1e-12);
}

TEST(Norm, RmsNormAndLayerNormGradientsMatchFiniteDifference) {
  auto rng = rng_for("norm");
  const Tensord x = random({2, 3, 6}, rng), w = random({6}, rng), b = random({6}, rng);
  EXPECT_LT(
      gradient_relative_error([](auto in) { return weighted_sum(rms_norm(in[0], in[1])); }, {x, w}),
      kTolerance);
  EXPECT_LT(gradient_relative_error(
                [](auto in) { return weighted_sum(layer_norm(in[0], in[1], in[2])); }, {x, w, b}),
            kTolerance);
}

TEST(Attention, FullCausalGradientMatchesFiniteDifference) {
  auto rng = rng_for("attention");
  const Tensord q = random({2, 5, 8}, rng), k = random({2, 5, 8}, rng), v = random({2, 5, 8}, rng);
  EXPECT_LT(gradient_relative_error(
                [](auto in) { return weighted_sum(causal_attention(in[0], in[1], in[2], 2)); },
                {q, k, v}),
            kTolerance);
}

TEST(Attention, SlidingWindowGradientMatchesFiniteDifference) {
  auto rng = rng_for("attention-window");
  const Tensord q = random({1, 7, 6}, rng), k = random({1, 7, 6}, rng), v = random({1, 7, 6}, rng);
  EXPECT_LT(gradient_relative_error(
                [](auto in) { return weighted_sum(causal_attention(in[0], in[1], in[2], 3, 3)); },
                {q, k, v}),
            kTolerance);
}

TEST(Attention, ShorterQueryAttendsFromTheEndAndMatchesFullRows) {
  auto rng = rng_for("attention-cache");
  const Tensord q = random({1, 6, 4}, rng), k = random({1, 6, 4}, rng), v = random({1, 6, 4}, rng);
  const auto full = causal_attention(q, k, v, 2).to_vector();
  const auto last = causal_attention(slice(q, 1, 4, 6), k, v, 2).to_vector();
  for (std::size_t i = 0; i < last.size(); ++i) EXPECT_NEAR(last[i], full[4 * 4 + i], 1e-12);
  EXPECT_LT(gradient_relative_error(
                [](auto in) { return weighted_sum(causal_attention(in[0], in[1], in[2], 2, 2)); },
                {slice(q, 1, 3, 6).clone(), k, v}),
            kTolerance);
  // A strided key/value view (as a KV cache slice) gives the same as a dense copy.
  const Tensord kv_big = random({1, 9, 4}, rng);
  const auto viewed =
      causal_attention(q, slice(kv_big, 1, 0, 6), slice(kv_big, 1, 0, 6), 2).to_vector();
  const auto dense =
      causal_attention(q, slice(kv_big, 1, 0, 6).clone(), slice(kv_big, 1, 0, 6).clone(), 2)
          .to_vector();
  for (std::size_t i = 0; i < viewed.size(); ++i) EXPECT_NEAR(viewed[i], dense[i], 1e-12);
}

TEST(Dropout, GradientIsTheKeptMaskScaled) {
  std::mt19937_64 rng(3);
  Tensord x = Tensord::full({1000}, 1.0, true);
  Tensord y = dropout(x, 0.25, rng);
  sum(y).backward();
  const auto out = y.to_vector(), g = x.grad().to_vector();
  int kept = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    EXPECT_DOUBLE_EQ(out[i], g[i]);
    EXPECT_TRUE(out[i] == 0.0 || std::abs(out[i] - 1.0 / 0.75) < 1e-12);
    kept += out[i] != 0.0;
  }
  EXPECT_NEAR(kept / 1000.0, 0.75, 0.06);
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCallsAndGraphIsReleased) {
  Tensord x = Tensord::from_vector({2}, {1.0, 2.0}, true);
  Tensord y = sum(mul(x, x));
  y.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2.0, 4.0}));
  EXPECT_EQ(y.node()->parents.size(), 0u);
  sum(mul(x, x)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{4.0, 8.0}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Tensord x = Tensord::from_vector({2}, {1.0, 2.0}, true);
  NoGradGuard no_grad;
  Tensord y = mul(x, x);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.node()->parents.empty());
}

TEST(Memory, LiveBytesAreCountedAndReleased) {
  const auto before = memory_stats();
  {
    Tensorf t = Tensorf::zeros({1024, 256});
    const auto during = memory_stats();
    EXPECT_EQ(during.current_bytes - before.current_bytes, 1024 * 256 * 4);
    EXPECT_GE(during.peak_bytes, during.current_bytes);
  }
  EXPECT_EQ(memory_stats().current_bytes, before.current_bytes);
}

TEST(Memory, TaggedAllocationsAreCountedUnderTheirTag) {
  const auto before = memory_stats("test-tag");
  {
    MemoryTag tag("test-tag");
    Tensorf t = Tensorf::zeros({100});
    Tensorf u;
    {
      MemoryTag inner("test-tag-inner");
      u = Tensorf::zeros({10});
    }
    EXPECT_EQ(memory_stats("test-tag").current_bytes - before.current_bytes, 400);
    EXPECT_EQ(memory_stats("test-tag-inner").current_bytes, 40);
  }
  EXPECT_EQ(memory_stats("test-tag").current_bytes, before.current_bytes);
  EXPECT_GE(memory_stats("test-tag").peak_bytes, 400);
  EXPECT_EQ(memory_stats("never-used").allocations, 0);
}

TEST(Bf16, RoundTripKeepsEightBitsOfMantissa) {
  for (float v : {1.0f, -3.140625f, 1e-3f, 65504.0f}) {
    const float back = bf16_to_float(float_to_bf16(v));
    EXPECT_NEAR(back, v, std::abs(v) / 128);
  }
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.5f)), 1.5f);
}

}  // namespace
}  // namespace neat::nn
