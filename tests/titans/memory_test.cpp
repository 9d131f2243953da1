// Titans memory core in float64: finite-difference checks of the inner gradient and of the outer
// gradient through the memory updates, the closed forms of eq. 16-18 against the patch-by-patch
// recurrence, stream splitting with carried state, forgetting, and associative recall capacity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "../nn/gradcheck.hpp"
#include "neat/nn/ops.hpp"
#include "neat/titans/memory.hpp"

using namespace neat;
using nn::Tensord;
using nn::testing::gradient_relative_error;
using nn::testing::random;
using nn::testing::weighted_sum;

namespace {

constexpr double kFdTolerance = 1e-6;

double max_abs_diff(const Tensord& a, const Tensord& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const auto x = a.to_vector(), y = b.to_vector();
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

std::vector<Tensord> random_memory(std::int64_t d, std::int64_t h, int depth,
                                   std::mt19937_64& rng) {
  std::vector<Tensord> w;
  for (int l = 0; l < depth; ++l) {
    const std::int64_t in = l == 0 ? d : h, out = l + 1 == depth ? d : h;
    w.push_back(random({in, out}, rng, 1.0 / std::sqrt(static_cast<double>(in))));
  }
  return w;
}

titans::MemoryConfig small_config() {
  titans::MemoryConfig c;
  c.input_dim = 5;
  c.dim = 4;
  c.hidden = 3;
  c.depth = 2;
  c.chunk = 3;
  c.persistent = 2;
  c.theta_max = 0.5;
  c.eta_max = 0.9;
  c.alpha_max = 0.3;
  c.seed = 7;
  return c;
}

}  // namespace

TEST(TitansMemory, InnerGradientMatchesFiniteDifferencesForEveryDepth) {
  std::mt19937_64 rng(1);
  for (int depth : {1, 2, 3}) {
    const auto w = random_memory(4, 3, depth, rng);
    const Tensord k = random({5, 4}, rng), v = random({5, 4}, rng);
    const Tensord c = random({5, 1}, rng);
    Tensord loss;
    const auto g = titans::inner_gradients(w, k, v, {c}, &loss);
    // loss is l_t = ||M(k_t) - v_t||^2
    EXPECT_LT(max_abs_diff(loss, titans::associative_loss(w, k, v)), 1e-12);
    // Central differences of sum_t c_t l_t(W) for each layer's weights.
    for (std::size_t l = 0; l < w.size(); ++l) {
      std::vector<Tensord> probe;
      for (const auto& t : w) probe.push_back(t.clone());
      double* p = probe[l].data();
      const auto analytic = g[0][l].to_vector();
      double diff = 0, norm = 0;
      for (std::int64_t i = 0; i < probe[l].numel(); ++i) {
        const double saved = p[i], step = 1e-6;
        p[i] = saved + step;
        const double plus = nn::sum(nn::mul(titans::associative_loss(probe, k, v), c)).item();
        p[i] = saved - step;
        const double minus = nn::sum(nn::mul(titans::associative_loss(probe, k, v), c)).item();
        p[i] = saved;
        const double numeric = (plus - minus) / (2 * step);
        diff += (numeric - analytic[i]) * (numeric - analytic[i]);
        norm += numeric * numeric;
      }
      EXPECT_LT(std::sqrt(diff / norm), kFdTolerance) << "depth " << depth << " layer " << l;
    }
  }
}

TEST(TitansMemory, OuterGradientThroughUpdatesMatchesFiniteDifferences) {
  const titans::MemoryConfig config = small_config();
  std::mt19937_64 rng(2);
  auto init = titans::MemoryParams<double>::init(config);
  // Non-trivial gate maps so that theta, eta and alpha vary with the data.
  for (auto* t : {&init.theta_w, &init.eta_w, &init.alpha_w}) *t = random({5, 1}, rng, 0.5);
  for (auto* t : {&init.theta_b, &init.eta_b, &init.alpha_b}) *t = random({1}, rng, 0.5);
  const Tensord x = random({8, 5}, rng);
  auto outer = [&](const std::vector<Tensord>& in) {
    titans::MemoryParams<double> p;
    p.w_k = in[0], p.w_v = in[1], p.w_q = in[2];
    p.theta_w = in[3], p.theta_b = in[4], p.eta_w = in[5], p.eta_b = in[6];
    p.alpha_w = in[7], p.alpha_b = in[8];
    p.m0 = {in[9], in[10]};
    p.persistent = in[11];
    const titans::NeuralMemory<double> memory(config, p);
    auto state = memory.initial_state();
    const Tensord y = memory.forward(state, x);  // 8 patches: chunks of 3, 3 and 2 pending
    memory.flush(state);
    return nn::add(weighted_sum(y, 3), weighted_sum(state.weights[1], 4));
  };
  std::vector<Tensord> inputs;
  for (auto& [name, t] : init.named()) inputs.push_back(t.detach());
  ASSERT_EQ(inputs.size(), 12u);
  EXPECT_LT(gradient_relative_error(outer, inputs), kFdTolerance);
}

TEST(TitansMemory, LinearSingleChunkWithoutMomentumOrForgettingIsTheDirectFormula) {
  std::mt19937_64 rng(3);
  const std::int64_t d = 4, n = 5;
  const Tensord w0 = random({d, d}, rng), k = random({n, d}, rng), v = random({n, d}, rng);
  const Tensord theta = nn::Tensord::uniform({n, 1}, rng, 0.1, 0.9);
  const Tensord zero = Tensord::zeros({1, 1});
  const auto u =
      titans::chunk_update<double>({w0}, {Tensord::zeros({d, d})}, k, v, {theta, zero, zero});
  // Column convention of the paper: M_0 = w0^T, keys and values are columns K = k^T, V = v^T;
  // M_1 = M_0 - 2 (M_0 K - V) diag(theta) K^T.
  const auto W = w0.to_vector(), K = k.to_vector(), V = v.to_vector(), th = theta.to_vector();
  auto M0 = [&](std::int64_t i, std::int64_t j) { return W[j * d + i]; };
  std::vector<double> E(d * n);  // (M_0 K - V), d x n
  for (std::int64_t i = 0; i < d; ++i)
    for (std::int64_t t = 0; t < n; ++t) {
      double s = -V[t * d + i];
      for (std::int64_t j = 0; j < d; ++j) s += M0(i, j) * K[t * d + j];
      E[i * n + t] = s;
    }
  const auto got = u.weights[0].to_vector();  // row convention: M_1^T
  for (std::int64_t i = 0; i < d; ++i)
    for (std::int64_t j = 0; j < d; ++j) {
      double s = M0(i, j);
      for (std::int64_t t = 0; t < n; ++t) s -= 2 * E[i * n + t] * th[t] * K[t * d + j];
      EXPECT_NEAR(got[j * d + i], s, 1e-12);
    }
}

TEST(TitansMemory, ChunkedFormEqualsPatchByPatchLoopWithTheSameGradientPoints) {
  std::mt19937_64 rng(4);
  for (int depth : {1, 2, 3}) {
    const std::int64_t d = 4, h = 6, n = 7;
    const auto w = random_memory(d, h, depth, rng);
    std::vector<Tensord> s;
    for (const auto& t : w) s.push_back(random(t.shape(), rng, 0.1));
    const Tensord k = random({n, d}, rng), v = random({n, d}, rng);
    const Tensord theta = Tensord::uniform({n, 1}, rng, 0.05, 0.5);
    const Tensord eta = Tensord::full({1, 1}, 0.7), alpha = Tensord::full({1, 1}, 0.2);
    const auto chunked = titans::chunk_update<double>(w, s, k, v, {theta, eta, alpha});
    // Reference: S_t = eta S_{t-1} - theta_t u_t, M_t = (1 - alpha) M_{t-1} + S_t, with every
    // u_t = dl_t/dM taken by autograd at the chunk-start weights w.
    std::vector<Tensord> m_ref, s_ref = s, leaves;
    for (const auto& t : w) {
      m_ref.push_back(t.clone());
      Tensord leaf = t.clone();
      leaf.set_requires_grad(true);
      leaves.push_back(leaf);
    }
    const auto th = theta.to_vector();
    for (std::int64_t t = 0; t < n; ++t) {
      const Tensord lt = nn::sum(
          titans::associative_loss(leaves, nn::slice(k, 0, t, t + 1), nn::slice(v, 0, t, t + 1)));
      const auto u = nn::grad(lt, leaves);
      nn::NoGradGuard no_grad;
      for (std::size_t l = 0; l < w.size(); ++l) {
        s_ref[l] = nn::sub(nn::scale(s_ref[l], 0.7), nn::scale(u[l], th[t]));
        m_ref[l] = nn::add(nn::scale(m_ref[l], 0.8), s_ref[l]);
      }
    }
    for (std::size_t l = 0; l < w.size(); ++l) {
      EXPECT_LT(max_abs_diff(chunked.weights[l], m_ref[l]), 1e-10) << "depth " << depth;
      EXPECT_LT(max_abs_diff(chunked.momentum[l], s_ref[l]), 1e-10) << "depth " << depth;
    }
  }
}

TEST(TitansMemory, FusedRunTimeKernelsEqualTheRecordedOps) {
  // With a graph (training) chunk_update uses nn ops throughout; at run time it fuses the
  // weighted gradients into one product and the M, S updates into one pass each.
  std::mt19937_64 rng(8);
  const auto w = random_memory(5, 7, 2, rng);
  std::vector<Tensord> s;
  for (const auto& t : w) s.push_back(random(t.shape(), rng, 0.1));
  const Tensord k = random({6, 5}, rng), v = random({6, 5}, rng);
  Tensord theta = Tensord::uniform({6, 1}, rng, 0.05, 0.5);
  Tensord eta = Tensord::full({1, 1}, 0.6), alpha = Tensord::full({1, 1}, 0.3);
  titans::ChunkUpdate<double> fused;
  {
    nn::NoGradGuard no_grad;
    fused = titans::chunk_update<double>(w, s, k, v, {theta, eta, alpha});
  }
  for (auto* t : {&theta, &eta, &alpha}) t->set_requires_grad(true);
  const auto recorded = titans::chunk_update<double>(w, s, k, v, {theta, eta, alpha});
  ASSERT_TRUE(recorded.weights[0].requires_grad());
  for (std::size_t l = 0; l < w.size(); ++l) {
    EXPECT_LT(max_abs_diff(fused.weights[l], recorded.weights[l]), 1e-12);
    EXPECT_LT(max_abs_diff(fused.momentum[l], recorded.momentum[l]), 1e-12);
  }
  EXPECT_NEAR(fused.surprise, recorded.surprise, 1e-12);
  EXPECT_NEAR(fused.update_norm, recorded.update_norm, 1e-12);
  EXPECT_NEAR(fused.direction_norm, recorded.direction_norm, 1e-12);
}

TEST(TitansMemory, StreamSplitIntoPiecesWithCarriedStateEqualsWholeStream) {
  titans::MemoryConfig config = small_config();
  config.chunk = 4;
  std::mt19937_64 rng(5);
  auto params = titans::MemoryParams<double>::init(config);
  params.eta_w = random({5, 1}, rng, 0.5);
  params.alpha_w = random({5, 1}, rng, 0.5);
  const titans::NeuralMemory<double> memory(config, params);
  const Tensord x = random({23, 5}, rng);
  nn::NoGradGuard no_grad;
  auto whole = memory.initial_state();
  const Tensord y_whole = memory.forward(whole, x);
  auto split = memory.initial_state();
  std::vector<Tensord> pieces;
  for (auto [a, b] : std::vector<std::pair<int, int>>{{0, 3}, {3, 10}, {10, 11}, {11, 23}}) {
    pieces.push_back(memory.forward(split, nn::slice(x, 0, a, b).contiguous()));
  }
  EXPECT_LT(max_abs_diff(nn::concat(pieces, 0), y_whole), 1e-12);
  EXPECT_EQ(split.step, whole.step);
  EXPECT_EQ(whole.step, 5);  // 23 = 5 chunks of 4 + 3 pending
  EXPECT_EQ(split.pending_rows(), 3);
  for (std::size_t l = 0; l < whole.weights.size(); ++l) {
    EXPECT_LT(max_abs_diff(split.weights[l], whole.weights[l]), 1e-12);
    EXPECT_LT(max_abs_diff(split.momentum[l], whole.momentum[l]), 1e-12);
  }
  // The readout of the first chunk reads the memory before any patch of the stream was written.
  const auto fresh = memory.initial_state();
  Tensord q = nn::matmul(nn::slice(x, 0, 0, 4), params.w_q);
  q = nn::mul(q, nn::exp(nn::scale(
                     nn::log(nn::add_scalar(nn::sum(nn::mul(q, q), {-1}, true), 1e-6)), -0.5)));
  EXPECT_LT(max_abs_diff(titans::memory_apply(fresh.weights, q), nn::slice(y_whole, 0, 0, 4)),
            1e-12);
}

TEST(TitansMemory, ForgetGateAtOneErasesMemory) {
  std::mt19937_64 rng(6);
  const auto w = random_memory(4, 5, 2, rng);
  std::vector<Tensord> s;
  for (const auto& t : w) s.push_back(random(t.shape(), rng));
  const Tensord k = random({3, 4}, rng), v = random({3, 4}, rng);
  const Tensord one = Tensord::full({1, 1}, 1.0), zero = Tensord::zeros({1, 1});
  // alpha = 1 without new writes (theta = 0) and without carried momentum (eta = 0): nothing of
  // the earlier memory survives; every retrieval is zero.
  const auto u = titans::chunk_update<double>(w, s, k, v, {Tensord::zeros({3, 1}), zero, one});
  for (const auto& t : u.weights) EXPECT_EQ(max_abs_diff(t, Tensord::zeros(t.shape())), 0.0);
  EXPECT_EQ(max_abs_diff(titans::memory_apply(u.weights, k), Tensord::zeros({3, 4})), 0.0);
  // With writes, alpha = 1 keeps only the chunk's own momentum: M_n = S_n.
  const auto u2 = titans::chunk_update<double>(w, s, k, v, {Tensord::full({3, 1}, 0.3), zero, one});
  for (std::size_t l = 0; l < w.size(); ++l)
    EXPECT_LT(max_abs_diff(u2.weights[l], u2.momentum[l]), 1e-15);
}

TEST(TitansMemory, AssociativeRecallErrorGrowsWithLoadAndStaysBelowNOverD) {
  // Linear memory, unit random keys, delta-rule writes one pair per chunk (theta = 1/2 makes
  // each write exact for its own key). Interference from the later N - i writes gives a
  // relative error of about (N - i)/d for pair i, so the mean is about N / (2d): bound N / d.
  const std::int64_t d = 128;
  std::mt19937_64 rng(7);
  double previous = 0;
  for (std::int64_t n : {8, 16, 32, 64}) {
    Tensord k = random({n, d}, rng);
    k = nn::mul(k, nn::exp(nn::scale(nn::log(nn::sum(nn::mul(k, k), {-1}, true)), -0.5)));
    const Tensord v = random({n, d}, rng);
    std::vector<Tensord> w = {Tensord::zeros({d, d})}, s = {Tensord::zeros({d, d})};
    const Tensord half = Tensord::full({1, 1}, 0.5), zero = Tensord::zeros({1, 1});
    for (std::int64_t i = 0; i < n; ++i) {
      auto u = titans::chunk_update<double>(w, s, nn::slice(k, 0, i, i + 1),
                                            nn::slice(v, 0, i, i + 1), {half, zero, zero});
      w = u.weights;
      s = u.momentum;
    }
    const auto err = titans::associative_loss(w, k, v).to_vector();
    const auto norms = nn::sum(nn::mul(v, v), {-1}, true).to_vector();
    double rel = 0;
    for (std::int64_t i = 0; i < n; ++i) rel += err[i] / norms[i];
    rel /= static_cast<double>(n);
    EXPECT_LT(rel, static_cast<double>(n) / d) << "N = " << n;
    EXPECT_GT(rel, previous) << "N = " << n;
    std::printf("associative recall: N = %lld, d = %lld, mean relative error %.4f (N/2d = %.4f)\n",
                static_cast<long long>(n), static_cast<long long>(d), rel, n / (2.0 * d));
    previous = rel;
  }
}
