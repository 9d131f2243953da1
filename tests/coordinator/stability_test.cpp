// The stability monitor on a real learner (least squares by gradient descent, in double) with
// injected faults: each rule fires, and a rollback restores the parameters bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "neat/coordinator/schedule.hpp"
#include "neat/coordinator/stability.hpp"

namespace neat::coordinator {
namespace {

// y = X w* + noise; loss = mean (Xw - y)^2; gradient 2 X^T (Xw - y) / n.
class LeastSquares {
 public:
  explicit LeastSquares(unsigned seed, int n = 64, int d = 8) : n_(n), d_(d) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> g(0.0, 1.0);
    x_.resize(static_cast<std::size_t>(n * d));
    y_.resize(static_cast<std::size_t>(n));
    std::vector<double> w_star(static_cast<std::size_t>(d));
    for (auto& v : w_star) v = g(rng);
    // Test-time learning starts from trained weights, not from zero.
    w_ = w_star;
    for (auto& v : w_) v = 0.7 * v + 0.1 * g(rng);
    for (auto& v : x_) v = g(rng);
    for (int i = 0; i < n; ++i) {
      double s = 0;
      for (int j = 0; j < d; ++j) s += x(i, j) * w_star[static_cast<std::size_t>(j)];
      y_[static_cast<std::size_t>(i)] = s + 0.1 * g(rng);
    }
  }
  double x(int i, int j) const { return x_[static_cast<std::size_t>(i * d_ + j)]; }

  // One step with learning rate `lr`; returns the report. `target_scale` corrupts the batch.
  StepReport step(std::uint64_t t, double lr, double target_scale = 1.0, bool nan = false) {
    std::vector<double> residual(static_cast<std::size_t>(n_));
    double loss = 0;
    for (int i = 0; i < n_; ++i) {
      double s = 0;
      for (int j = 0; j < d_; ++j) s += x(i, j) * w_[static_cast<std::size_t>(j)];
      const double r = s - target_scale * y_[static_cast<std::size_t>(i)];
      residual[static_cast<std::size_t>(i)] = r;
      loss += r * r / n_;
    }
    std::vector<double> g(static_cast<std::size_t>(d_), 0.0);
    for (int i = 0; i < n_; ++i) {
      for (int j = 0; j < d_; ++j) {
        g[static_cast<std::size_t>(j)] +=
            2.0 * x(i, j) * residual[static_cast<std::size_t>(i)] / n_;
      }
    }
    if (nan) g[0] = std::nan("");
    double gn = 0, un = 0, pn = 0, dot = 0, prev = 0;
    for (int j = 0; j < d_; ++j) {
      const auto k = static_cast<std::size_t>(j);
      gn += g[k] * g[k];
      dot += g[k] * prev_grad_[k % prev_grad_.size()];
      prev += prev_grad_[k % prev_grad_.size()] * prev_grad_[k % prev_grad_.size()];
      w_[k] -= lr * g[k];
      un += lr * g[k] * lr * g[k];
      pn += w_[k] * w_[k];
    }
    StepReport r;
    r.step = t;
    r.loss = loss;
    r.grad_norm = std::sqrt(gn);
    r.update_norm = std::sqrt(un);
    r.param_norm = std::sqrt(pn);
    r.grad_cosine = prev > 0 ? dot / std::sqrt(gn * prev) : 1.0;
    prev_grad_ = g;
    return r;
  }
  std::vector<double> weights() const { return w_; }
  void set_weights(std::vector<double> w) { w_ = std::move(w); }

 private:
  int n_, d_;
  std::vector<double> x_, y_, w_;
  std::vector<double> prev_grad_ = std::vector<double>(1, 0.0);
};

// Runs `steps` steps under the monitor, carrying out backups and rollbacks; `fault(t)` may
// change the step. Returns the decisions.
struct GuardedRun {
  LeastSquares learner{3};
  StabilityMonitor monitor;
  std::vector<double> backup;
  std::vector<StabilityDecision> decisions;
  std::vector<double> weights_before_rollback, weights_after_rollback;

  explicit GuardedRun(StabilityThresholds t = {}) : monitor(t) {}

  void go(int steps, double lr, const std::function<StepReport(std::uint64_t, double)>& step) {
    for (int t = 0; t < steps; ++t) {
      const auto r = step(static_cast<std::uint64_t>(t), lr * monitor.lr_scale());
      auto d = monitor.observe(r);
      if (d.action == StabilityAction::backup) {
        backup = learner.weights();
        monitor.backup_taken();
      } else if (d.action == StabilityAction::rollback) {
        weights_before_rollback = learner.weights();
        learner.set_weights(backup);
        weights_after_rollback = learner.weights();
      }
      decisions.push_back(std::move(d));
    }
  }
  bool any(StabilityEvent e) const {
    for (const auto& d : decisions) {
      for (auto x : d.events) {
        if (x == e) return true;
      }
    }
    return false;
  }
  int count(StabilityAction a) const {
    int n = 0;
    for (const auto& d : decisions) n += d.action == a;
    return n;
  }
};

TEST(StabilityMonitor, CleanLearningRaisesNoWarningAndTakesBackups) {
  GuardedRun run;
  run.go(200, 0.05, [&](std::uint64_t t, double lr) { return run.learner.step(t, lr); });
  EXPECT_EQ(run.count(StabilityAction::rollback), 0);
  EXPECT_EQ(run.count(StabilityAction::reduce_lr), 0);
  EXPECT_GE(run.count(StabilityAction::backup), 200 / 25);
  EXPECT_DOUBLE_EQ(run.monitor.lr_scale(), 1.0);
}

TEST(StabilityMonitor, NanGradientRollsBackToTheBackupBitExactly) {
  GuardedRun run;
  run.go(120, 0.05,
         [&](std::uint64_t t, double lr) { return run.learner.step(t, lr, 1.0, t == 100); });
  ASSERT_EQ(run.count(StabilityAction::rollback), 1);
  EXPECT_EQ(run.decisions[100].action, StabilityAction::rollback);
  EXPECT_TRUE(std::isnan(run.weights_before_rollback[0]));
  // bit-exact restore
  ASSERT_EQ(run.weights_after_rollback.size(), run.backup.size());
  EXPECT_EQ(std::memcmp(run.weights_after_rollback.data(), run.backup.data(),
                        run.backup.size() * sizeof(double)),
            0);
  EXPECT_LT(run.monitor.lr_scale(), 0.2) << "the emergency cut the learning rate";
  for (double w : run.learner.weights()) EXPECT_TRUE(std::isfinite(w));
}

TEST(StabilityMonitor, LearningRateTimes1000IsCaughtThenRolledBack) {
  GuardedRun run;
  run.go(130, 0.01, [&](std::uint64_t t, double lr) {
    return run.learner.step(t, t >= 100 && t < 103 ? lr * 1000.0 : lr);
  });
  EXPECT_TRUE(run.any(StabilityEvent::update_ratio) || run.any(StabilityEvent::grad_explosion));
  EXPECT_EQ(run.decisions[100].action, StabilityAction::reduce_lr);
  EXPECT_GE(run.count(StabilityAction::rollback), 1) << "a second warning in the cool-down";
  double final_loss = run.learner.step(999, 0.0).loss;
  EXPECT_LT(final_loss, 1.0) << "learning is stable again after the rollback";
}

TEST(StabilityMonitor, LossSpikeFromACorruptBatchIsDetected) {
  GuardedRun run;
  run.go(100, 0.05, [&](std::uint64_t t, double lr) {
    return run.learner.step(t, t == 80 ? 0.0 : lr, t == 80 ? 30.0 : 1.0);
  });
  EXPECT_EQ(run.decisions[80].events.front(), StabilityEvent::loss_spike);
  EXPECT_EQ(run.decisions[80].action, StabilityAction::reduce_lr);
  EXPECT_NE(run.decisions[80].reason.find("loss z-score"), std::string::npos);
}

TEST(StabilityMonitor, OscillatingGradientsAreDetectedFromTheAngleHistory) {
  StabilityThresholds t;
  t.max_update_ratio = 1e9;  // isolate the oscillation rule
  t.grad_explosion_factor = 1e9;
  t.loss_spike_z = 1e9;
  GuardedRun run(t);
  // Just above 2/L on a quadratic, gradient descent overshoots: the gradient flips sign.
  run.go(60, 0.05, [&](std::uint64_t step, double lr) {
    return run.learner.step(step, step >= 20 ? lr * 21.0 : lr);
  });
  EXPECT_TRUE(run.any(StabilityEvent::oscillation));
  const auto angles = run.monitor.gradient_angles();
  EXPECT_LT(*std::min_element(angles.begin(), angles.end()), 0.0);
}

TEST(StabilityMonitor, StagnationIsReportedWithoutAction) {
  StabilityThresholds t;
  t.stagnation_steps = 50;
  GuardedRun run(t);
  run.go(400, 0.05, [&](std::uint64_t step, double lr) { return run.learner.step(step, lr); });
  EXPECT_TRUE(run.any(StabilityEvent::stagnation)) << "converged learning stops improving";
  EXPECT_EQ(run.count(StabilityAction::reduce_lr), 0);
}

TEST(StabilityMonitor, ScaleRecoversSlowlyAfterTheCooldown) {
  StabilityThresholds t;
  t.cooldown_steps = 10;
  t.recover_factor = 1.1;
  GuardedRun run(t);
  run.go(100, 0.05, [&](std::uint64_t step, double lr) {
    return run.learner.step(step, step == 50 ? 0.0 : lr, step == 50 ? 30.0 : 1.0);
  });
  EXPECT_DOUBLE_EQ(run.decisions[50].lr_scale, 0.5);
  EXPECT_DOUBLE_EQ(run.decisions[60].lr_scale, 0.5) << "no recovery during the cool-down";
  EXPECT_GT(run.decisions[70].lr_scale, 0.5);
  EXPECT_DOUBLE_EQ(run.decisions[99].lr_scale, 1.0);
  EXPECT_FALSE(run.monitor.history().empty());
}

TEST(StabilityThresholds, YamlOverridesAndSchemaRejectsOutOfRange) {
  const auto ok = config::load_string("loss_spike_z: 3\nwindow: 20\n",
                                      StabilityThresholds::schema(), "stability.yaml");
  auto t = StabilityThresholds::from_yaml(ok);
  EXPECT_EQ(t.window, 20);
  EXPECT_DOUBLE_EQ(t.loss_spike_z, 3.0);
  EXPECT_THROW(config::load_string("reduce_factor: 2\n", StabilityThresholds::schema(), "s.yaml"),
               config::ConfigError);
}

}  // namespace
}  // namespace neat::coordinator

namespace neat::coordinator {
namespace {

TEST(LearningRateSchedule, DrivesNnSchedulesWithOneBasedSteps) {
  LearningRateSchedule c;
  c.lr = 0.5;
  EXPECT_DOUBLE_EQ(c.at(1), 0.5);
  EXPECT_DOUBLE_EQ(c.at(1000), 0.5);
  LearningRateSchedule w;
  w.kind = LearningRateSchedule::Kind::warmup_cosine;
  w.lr = 1.0;
  w.warmup_steps = 10;
  w.total_steps = 110;
  w.min_lr = 0.1;
  EXPECT_DOUBLE_EQ(w.at(1), 0.1);                 // 1/10 of the peak after the first step
  EXPECT_DOUBLE_EQ(w.at(10), 1.0);                // peak at the end of the warm-up
  EXPECT_NEAR(w.at(61), 0.1 + 0.9 * 0.5, 1e-12);  // half-way down the cosine
  EXPECT_DOUBLE_EQ(w.at(500), 0.1);
  LearningRateSchedule i;
  i.kind = LearningRateSchedule::Kind::inverse_sqrt;
  i.lr = 1.0;
  i.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(i.at(2), 0.5);
  EXPECT_DOUBLE_EQ(i.at(16), 0.5);  // sqrt(4 / 16)
  const auto bad = YAML::Load("kind: warmup_cosine\nwarmup_steps: 50\ntotal_steps: 10\n");
  EXPECT_THROW(LearningRateSchedule::from_yaml(bad), std::invalid_argument);
}

}  // namespace
}  // namespace neat::coordinator
