// Stability of test-time learning: metrics over a sliding window of update steps, the events
// they raise, and the graded actions the coordinator takes (issue 8).
//
// Each update step a learning component reports its loss, gradient norm, update norm,
// parameter norm and the cosine between this gradient and the previous one. The monitor
// raises:
//   non_finite      loss or a norm is NaN/Inf;
//   loss_spike      z-score of the loss against the window's mean and standard deviation
//                   above `loss_spike_z`;
//   grad_explosion  gradient norm above `grad_explosion_factor` x the window's running median;
//   update_ratio    ||update|| / ||parameters|| above `max_update_ratio`;
//   oscillation     the gradient reversed direction (cos(g_t, g_{t-1}) < 0, its sign flipped)
//                   on more than `oscillation_fraction` of the last `oscillation_window` steps
//                   (the gradient-angle history is kept for the report);
//   stagnation      the window's mean loss improved by less than `stagnation_tolerance`
//                   (relative) over `stagnation_steps` steps.
// Levels and actions: a warning-level event (loss_spike, grad_explosion, update_ratio,
// oscillation) reduces the learning rate by `reduce_factor` (the step is applied at the reduced
// rate); a non-finite step, or a second parameter-level warning (grad_explosion, update_ratio)
// within the cool-down, is an emergency: roll back to the last good backup and cut the
// learning rate by `emergency_factor`. Loss spikes and oscillations never escalate by
// themselves: they can come from the data (a new document), not from the parameters. The
// scale never falls below `min_lr_scale`. After any action a cool-down of `cooldown_steps` follows,
// during which the learning-rate scale is not lowered again; afterwards it recovers by
// `recover_factor` per clean step up to 1 (the "adaptive" schedule). Every
// `backup_every` clean steps the monitor asks for a backup. Stagnation is reported, no action.
// Invariant: the monitor never asks for a rollback before a backup exists (it asks for a
// backup first, at its first clean step).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "neat/config/schema.hpp"

namespace neat::coordinator {

struct StabilityThresholds {
  int window = 50;            ///< steps in the sliding window
  int min_history = 8;        ///< steps before spike/explosion tests apply
  double loss_spike_z = 4.0;  ///< z-score
  double grad_explosion_factor = 10.0;
  double max_update_ratio = 0.1;  ///< ||update|| / ||parameters||
  int oscillation_window = 16;
  double oscillation_fraction = 0.75;
  int stagnation_steps = 200;
  double stagnation_tolerance = 1e-3;  ///< relative improvement of the mean loss
  double reduce_factor = 0.5;
  double emergency_factor = 0.1;
  double recover_factor = 1.02;
  double min_lr_scale = 1e-3;  ///< the scale never falls below this
  int cooldown_steps = 20;
  int backup_every = 25;

  /// Schema of the `stability:` block (every key optional; defaults above).
  static config::Schema schema();
  /// Reads a validated `stability:` block over the defaults.
  static StabilityThresholds from_yaml(const YAML::Node& node);
};

/// What a learning component reports for one update step.
struct StepReport {
  std::uint64_t step = 0;
  double loss = 0.0;         ///< the component's own loss (nats)
  double grad_norm = 0.0;    ///< ||g||_2
  double update_norm = 0.0;  ///< ||delta parameters||_2
  double param_norm = 1.0;   ///< ||parameters||_2
  double grad_cosine = 1.0;  ///< cos(g_t, g_{t-1}); 1 for the first step
};

enum class StabilityEvent {
  non_finite,
  loss_spike,
  grad_explosion,
  update_ratio,
  oscillation,
  stagnation
};
std::string_view event_name(StabilityEvent e);

enum class StabilityAction { none, backup, reduce_lr, rollback };
std::string_view action_name(StabilityAction a);

struct StabilityDecision {
  StabilityAction action = StabilityAction::none;
  std::vector<StabilityEvent> events;
  double lr_scale = 1.0;  ///< multiply the schedule's learning rate by this
  std::string reason;     ///< human-readable: which metric, value and threshold
};

class StabilityMonitor {
 public:
  explicit StabilityMonitor(StabilityThresholds thresholds = {});

  /// Judges one step (after it was computed, before it is kept). A `rollback` decision means
  /// the step's result must be discarded and the last backup restored.
  StabilityDecision observe(const StepReport& report);

  /// Tells the monitor a backup was taken (after a `backup` decision was carried out).
  void backup_taken() { has_backup_ = true; }

  double lr_scale() const { return lr_scale_; }
  /// Every event so far, for the report: step, event, action, value, reason.
  const nlohmann::json& history() const { return history_; }
  /// The gradient-angle history (cosines) of the last `window` steps.
  std::vector<double> gradient_angles() const { return {cosines_.begin(), cosines_.end()}; }

 private:
  StabilityThresholds t_;
  std::deque<double> losses_, grad_norms_, cosines_;
  std::deque<double> mean_loss_history_;
  int cooldown_ = 0;
  int clean_steps_ = 0;
  bool has_backup_ = false;
  double lr_scale_ = 1.0;
  nlohmann::json history_ = nlohmann::json::array();
};

}  // namespace neat::coordinator
