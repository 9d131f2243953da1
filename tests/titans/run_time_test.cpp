// The run-time path of the Titans memory (nothing recorded: Eigen kernels over the state's
// workspace, M and S updated in place) against the recorded nn-op path that the outer loop
// differentiates, in float64: readouts, memory, momentum and every per-chunk statistic; copy on
// write of shared state; and no storage allocated per chunk once the workspace is warm.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "../nn/gradcheck.hpp"
#include "neat/nn/ops.hpp"
#include "neat/titans/memory.hpp"

using namespace neat;
using nn::Tensord;
using nn::testing::random;

namespace {

double max_abs_diff(const Tensord& a, const Tensord& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return 1e30;
  const auto x = a.to_vector(), y = b.to_vector();
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

titans::MemoryConfig config_of_depth(int depth) {
  titans::MemoryConfig c;
  c.input_dim = 6;
  c.dim = 5;
  c.hidden = 7;
  c.depth = depth;
  c.chunk = 4;
  c.persistent = 3;
  c.theta_max = 0.4;
  c.eta_max = 0.9;
  c.alpha_max = 0.3;
  c.seed = 11;
  return c;
}

titans::NeuralMemory<double> memory_with_gates(const titans::MemoryConfig& c,
                                               std::mt19937_64& rng) {
  auto p = titans::MemoryParams<double>::init(c);
  // Data-dependent gates (init sets the gate maps to 0).
  p.theta_w = random({c.input_dim, 1}, rng, 0.5);
  p.eta_w = random({c.input_dim, 1}, rng, 0.5);
  p.alpha_w = random({c.input_dim, 1}, rng, 0.5);
  p.theta_b = Tensord::full({1}, 0.3);
  for (auto& [name, t] : p.named()) t.set_requires_grad(true);
  return titans::NeuralMemory<double>(c, p);
}

// A policy that writes the i-th chunk it is asked about with theta x 1, x 0.5 or skips it
// (i mod 3).
titans::WritePolicy cycling_policy() {
  return [i = 0](const titans::ChunkReport&) mutable {
    const double factors[3] = {1.0, 0.5, 0.0};
    return factors[i++ % 3];
  };
}

struct StreamRun {
  std::vector<Tensord> readouts;
  titans::MemoryState<double> state;
  std::vector<titans::ChunkRecord> records;
};

// One stream: forward over uneven pieces (whole chunks, partial chunks, a flush), then a
// write_pairs chunk with separate value latents, then a read.
StreamRun stream(const titans::NeuralMemory<double>& memory, const Tensord& x,
                 const Tensord& pairs_k, const Tensord& pairs_v) {
  StreamRun r;
  const titans::WritePolicy policy = cycling_policy();
  r.state = memory.initial_state(7);
  const std::int64_t n = x.size(0);
  const std::vector<std::int64_t> cuts = {0, 3, 11, 12, 20, n};
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    r.readouts.push_back(
        memory.forward(r.state, nn::slice(x, 0, cuts[i], cuts[i + 1]), policy, &r.records));
  }
  memory.flush(r.state, policy, &r.records);
  memory.write_pairs(r.state, pairs_k, pairs_v, policy, &r.records);
  r.readouts.push_back(memory.read(r.state, pairs_k));
  return r;
}

}  // namespace

TEST(TitansRunTime, RunTimePathEqualsTheRecordedOpsForEveryDepth) {
  for (int depth : {1, 2, 3}) {
    SCOPED_TRACE("depth " + std::to_string(depth));
    const auto c = config_of_depth(depth);
    std::mt19937_64 rng(21 + depth);
    const auto memory = memory_with_gates(c, rng);
    const Tensord x = random({31, c.input_dim}, rng);
    const Tensord pk = random({5, c.input_dim}, rng), pv = random({5, c.input_dim}, rng);
    const StreamRun recorded = stream(memory, x, pk, pv);  // parameters require grad: a graph
    ASSERT_TRUE(recorded.state.weights[0].requires_grad());
    StreamRun fast;
    {
      nn::NoGradGuard no_grad;
      fast = stream(memory, x, pk, pv);
    }
    ASSERT_FALSE(fast.state.weights[0].requires_grad());
    ASSERT_EQ(fast.readouts.size(), recorded.readouts.size());
    for (std::size_t i = 0; i < fast.readouts.size(); ++i)
      EXPECT_LT(max_abs_diff(fast.readouts[i], recorded.readouts[i]), 1e-12) << "piece " << i;
    EXPECT_EQ(fast.state.step, recorded.state.step);
    EXPECT_EQ(fast.state.pending_rows(), recorded.state.pending_rows());
    for (std::size_t l = 0; l < fast.state.weights.size(); ++l) {
      EXPECT_LT(max_abs_diff(fast.state.weights[l], recorded.state.weights[l]), 1e-12);
      EXPECT_LT(max_abs_diff(fast.state.momentum[l], recorded.state.momentum[l]), 1e-12);
      EXPECT_LT(max_abs_diff(fast.state.previous_gradient[l], recorded.state.previous_gradient[l]),
                1e-12);
    }
    // 31 patches in chunks of 4 = 7 writes + a flush of 3, then one write_pairs chunk; every
    // third one skipped by the policy.
    ASSERT_EQ(fast.records.size(), 9u);
    ASSERT_EQ(fast.records.size(), recorded.records.size());
    int skipped = 0;
    for (std::size_t i = 0; i < fast.records.size(); ++i) {
      const auto &a = fast.records[i], &b = recorded.records[i];
      EXPECT_EQ(a.report.step, b.report.step);
      EXPECT_EQ(a.report.patches, b.report.patches);
      EXPECT_NEAR(a.report.loss, b.report.loss, 1e-12);
      EXPECT_NEAR(a.report.surprise, b.report.surprise, 1e-12);
      EXPECT_NEAR(a.report.direction_norm, b.report.direction_norm, 1e-12);
      EXPECT_NEAR(a.report.param_norm, b.report.param_norm, 1e-12);
      EXPECT_NEAR(a.report.grad_cosine, b.report.grad_cosine, 1e-12);
      EXPECT_EQ(a.theta_scale, b.theta_scale);
      EXPECT_NEAR(a.update_norm, b.update_norm, 1e-12);
      EXPECT_GT(a.report.surprise, 0);
      skipped += a.theta_scale == 0.0;
    }
    EXPECT_EQ(skipped, 3);
  }
}

TEST(TitansRunTime, InPlaceUpdatesNeverTouchSharedTensors) {
  const auto c = config_of_depth(2);
  std::mt19937_64 rng(31);
  const auto memory = memory_with_gates(c, rng);
  const Tensord m0 = memory.params().m0[0].detach().clone();
  const Tensord x = random({16, c.input_dim}, rng);
  nn::NoGradGuard no_grad;
  auto state = memory.initial_state();
  memory.forward(state, nn::slice(x, 0, 0, 8));
  // A snapshot (copy of the state) and a handle to one layer, taken mid-stream.
  const titans::MemoryState<double> snapshot = state;
  EXPECT_TRUE(snapshot.workspace.buffers.empty());  // copies never share scratch
  const Tensord layer = state.weights[1];
  const Tensord w_before = layer.clone(), s_before = snapshot.momentum[0].clone();
  const auto y_rest = memory.forward(state, nn::slice(x, 0, 8, 16));
  EXPECT_EQ(max_abs_diff(memory.params().m0[0], m0), 0.0);  // M_0 is a parameter: never written
  EXPECT_EQ(max_abs_diff(layer, w_before), 0.0);
  EXPECT_EQ(max_abs_diff(snapshot.momentum[0], s_before), 0.0);
  EXPECT_GT(max_abs_diff(state.weights[1], w_before), 0.0);  // the state itself moved on
  // Resuming from the snapshot gives the same rest of the stream.
  auto resumed = snapshot;
  EXPECT_EQ(max_abs_diff(memory.forward(resumed, nn::slice(x, 0, 8, 16)), y_rest), 0.0);
  for (std::size_t l = 0; l < state.weights.size(); ++l)
    EXPECT_EQ(max_abs_diff(resumed.weights[l], state.weights[l]), 0.0);
}

TEST(TitansRunTime, WarmStreamAllocatesOnlyItsReadouts) {
  auto c = config_of_depth(2);
  c.persistent = 0;
  std::mt19937_64 rng(41);
  const auto memory = memory_with_gates(c, rng);
  const Tensord x = random({8 * c.chunk, c.input_dim}, rng);
  nn::NoGradGuard no_grad;
  auto state = memory.initial_state();
  memory.forward(state, nn::slice(x, 0, 0, 2 * c.chunk));  // warms the workspace, owns M and S
  const auto before = nn::memory_stats().allocations;
  std::vector<titans::ChunkRecord> records;
  const auto y = memory.forward(state, nn::slice(x, 0, 2 * c.chunk, 8 * c.chunk), {}, &records);
  EXPECT_EQ(records.size(), 6u);
  EXPECT_EQ(state.step, 8);
  // Six chunk updates and their readouts: one storage block, the readout tensor.
  EXPECT_EQ(nn::memory_stats().allocations - before, 1);
  EXPECT_GT(state.workspace.bytes(), 0);
  EXPECT_EQ(y.size(0), 6 * c.chunk);
}
