// Stability monitor: metrics, events and graded actions (see stability.hpp).
#include "neat/coordinator/stability.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

namespace neat::coordinator {

config::Schema StabilityThresholds::schema() {
  using config::Schema;
  const StabilityThresholds d;
  auto num = [](double lo, double hi, double def) {
    std::ostringstream s;
    s << def;
    return Schema::number(lo, hi).default_value(s.str());
  };
  auto integer = [](std::int64_t lo, std::int64_t hi, std::int64_t def) {
    return Schema::integer(lo, hi).default_value(std::to_string(def));
  };
  return Schema::map()
      .optional("window", integer(4, 100000, d.window), "steps in the sliding window")
      .optional("min_history", integer(2, 100000, d.min_history),
                "steps before spike and explosion tests apply")
      .optional("loss_spike_z", num(0.5, 1e6, d.loss_spike_z), "z-score of a loss spike")
      .optional("grad_explosion_factor", num(1.0, 1e9, d.grad_explosion_factor),
                "gradient norm above this x the running median explodes")
      .optional("max_update_ratio", num(0.0, 1e9, d.max_update_ratio),
                "largest ||update|| / ||parameters||")
      .optional("oscillation_window", integer(2, 100000, d.oscillation_window),
                "steps of gradient-angle history judged for oscillation")
      .optional("oscillation_fraction", num(0.0, 1.0, d.oscillation_fraction),
                "share of steps whose gradient reverses (cosine with the previous < 0) that counts "
                "as oscillation")
      .optional("stagnation_steps", integer(2, 10000000, d.stagnation_steps),
                "steps over which the mean loss must improve")
      .optional("stagnation_tolerance", num(0.0, 1.0, d.stagnation_tolerance),
                "relative improvement below which learning stagnates")
      .optional("reduce_factor", num(0.0, 1.0, d.reduce_factor),
                "learning-rate factor on a warning-level event")
      .optional("emergency_factor", num(0.0, 1.0, d.emergency_factor),
                "learning-rate factor on an emergency rollback")
      .optional("min_lr_scale", num(0.0, 1.0, d.min_lr_scale), "floor of the learning-rate scale")
      .optional("recover_factor", num(1.0, 10.0, d.recover_factor),
                "learning-rate scale growth per clean step after the cool-down, up to 1")
      .optional("cooldown_steps", integer(0, 1000000, d.cooldown_steps),
                "steps after an action during which the scale is not lowered again")
      .optional("backup_every", integer(1, 1000000, d.backup_every), "clean steps between backups");
}

StabilityThresholds StabilityThresholds::from_yaml(const YAML::Node& n) {
  StabilityThresholds t;
  auto read = [&](const char* key, auto& field) {
    if (n && n[key]) field = n[key].as<std::remove_reference_t<decltype(field)>>();
  };
  read("window", t.window);
  read("min_history", t.min_history);
  read("loss_spike_z", t.loss_spike_z);
  read("grad_explosion_factor", t.grad_explosion_factor);
  read("max_update_ratio", t.max_update_ratio);
  read("oscillation_window", t.oscillation_window);
  read("oscillation_fraction", t.oscillation_fraction);
  read("stagnation_steps", t.stagnation_steps);
  read("stagnation_tolerance", t.stagnation_tolerance);
  read("reduce_factor", t.reduce_factor);
  read("emergency_factor", t.emergency_factor);
  read("recover_factor", t.recover_factor);
  read("min_lr_scale", t.min_lr_scale);
  read("cooldown_steps", t.cooldown_steps);
  read("backup_every", t.backup_every);
  return t;
}

std::string_view event_name(StabilityEvent e) {
  switch (e) {
    case StabilityEvent::non_finite:
      return "non_finite";
    case StabilityEvent::loss_spike:
      return "loss_spike";
    case StabilityEvent::grad_explosion:
      return "grad_explosion";
    case StabilityEvent::update_ratio:
      return "update_ratio";
    case StabilityEvent::oscillation:
      return "oscillation";
    case StabilityEvent::stagnation:
      return "stagnation";
  }
  return "?";
}

std::string_view action_name(StabilityAction a) {
  switch (a) {
    case StabilityAction::none:
      return "none";
    case StabilityAction::backup:
      return "backup";
    case StabilityAction::reduce_lr:
      return "reduce_lr";
    case StabilityAction::rollback:
      return "rollback";
  }
  return "?";
}

StabilityMonitor::StabilityMonitor(StabilityThresholds thresholds) : t_(thresholds) {}

namespace {

double median(std::deque<double> values) {
  const auto mid = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), mid, values.end());
  return *mid;
}

std::string describe(const char* what, double value, const char* relation, double limit) {
  std::ostringstream s;
  s << what << " " << value << " " << relation << " " << limit;
  return s.str();
}

}  // namespace

StabilityDecision StabilityMonitor::observe(const StepReport& r) {
  StabilityDecision d;
  std::vector<std::string> reasons;
  const bool finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm) &&
                      std::isfinite(r.update_norm) && std::isfinite(r.param_norm);
  if (!finite) {
    d.events.push_back(StabilityEvent::non_finite);
    reasons.push_back("non-finite loss or norm");
  } else {
    if (static_cast<int>(losses_.size()) >= t_.min_history) {
      const double n = static_cast<double>(losses_.size());
      const double mean = std::accumulate(losses_.begin(), losses_.end(), 0.0) / n;
      double var = 0.0;
      for (double l : losses_) var += (l - mean) * (l - mean);
      const double sd = std::sqrt(var / n);
      const double z = (r.loss - mean) / std::max(sd, 1e-12 * std::max(1.0, std::abs(mean)));
      if (z > t_.loss_spike_z) {
        d.events.push_back(StabilityEvent::loss_spike);
        reasons.push_back(describe("loss z-score", z, ">", t_.loss_spike_z));
      }
      const double med = median(grad_norms_);
      if (r.grad_norm > t_.grad_explosion_factor * med && med > 0) {
        d.events.push_back(StabilityEvent::grad_explosion);
        reasons.push_back(describe("gradient norm", r.grad_norm, "> factor x median",
                                   t_.grad_explosion_factor * med));
      }
    }
    const double ratio = r.update_norm / std::max(r.param_norm, 1e-30);
    if (ratio > t_.max_update_ratio) {
      d.events.push_back(StabilityEvent::update_ratio);
      reasons.push_back(describe("update/parameter norm ratio", ratio, ">", t_.max_update_ratio));
    }
    cosines_.push_back(r.grad_cosine);
    while (static_cast<int>(cosines_.size()) > t_.window) cosines_.pop_front();
    if (static_cast<int>(cosines_.size()) >= t_.oscillation_window) {
      int reversals = 0;
      for (auto it = cosines_.end() - t_.oscillation_window; it != cosines_.end(); ++it) {
        if (*it < 0) ++reversals;
      }
      const double fraction = reversals / static_cast<double>(t_.oscillation_window);
      if (fraction > t_.oscillation_fraction) {
        d.events.push_back(StabilityEvent::oscillation);
        reasons.push_back(describe("share of gradient reversals (cosine < 0)", fraction, ">",
                                   t_.oscillation_fraction));
      }
    }
  }

  const auto has = [&](StabilityEvent e) {
    return std::find(d.events.begin(), d.events.end(), e) != d.events.end();
  };
  const bool warning = has(StabilityEvent::loss_spike) || has(StabilityEvent::grad_explosion) ||
                       has(StabilityEvent::update_ratio) || has(StabilityEvent::oscillation);
  // Parameter-level trouble (the update itself is too large) escalates; a loss spike or an
  // oscillation can come from the data (a new document) and only slows learning down.
  const bool parameter_level =
      has(StabilityEvent::grad_explosion) || has(StabilityEvent::update_ratio);
  const bool emergency = !finite || (parameter_level && cooldown_ > 0);
  if (emergency && has_backup_) {
    d.action = StabilityAction::rollback;
    lr_scale_ = std::max(t_.min_lr_scale, lr_scale_ * t_.emergency_factor);
    cooldown_ = t_.cooldown_steps;
    clean_steps_ = 0;
  } else if (warning) {
    d.action = StabilityAction::reduce_lr;
    if (cooldown_ == 0) lr_scale_ = std::max(t_.min_lr_scale, lr_scale_ * t_.reduce_factor);
    cooldown_ = t_.cooldown_steps;
    clean_steps_ = 0;
  } else if (finite) {
    if (cooldown_ > 0) {
      --cooldown_;
    } else {
      lr_scale_ = std::min(1.0, lr_scale_ * t_.recover_factor);
    }
    ++clean_steps_;
    if (!has_backup_ || clean_steps_ % t_.backup_every == 0) d.action = StabilityAction::backup;
  }
  if (finite) {
    // The window follows the data (a lasting change of loss level stops being a spike); a
    // gradient that exploded does not enter the median it is judged against.
    losses_.push_back(r.loss);
    while (static_cast<int>(losses_.size()) > t_.window) losses_.pop_front();
    if (!has(StabilityEvent::grad_explosion)) {
      grad_norms_.push_back(r.grad_norm);
      while (static_cast<int>(grad_norms_.size()) > t_.window) grad_norms_.pop_front();
    }
    // Stagnation: the mean loss over the window, then and now.
    const double mean =
        std::accumulate(losses_.begin(), losses_.end(), 0.0) / static_cast<double>(losses_.size());
    mean_loss_history_.push_back(mean);
    if (static_cast<int>(mean_loss_history_.size()) > t_.stagnation_steps) {
      const double then = mean_loss_history_.front();
      mean_loss_history_.pop_front();
      if (then - mean < t_.stagnation_tolerance * std::abs(then)) {
        d.events.push_back(StabilityEvent::stagnation);
        reasons.push_back(describe("mean loss improvement", then - mean, "<",
                                   t_.stagnation_tolerance * std::abs(then)));
      }
    }
  }
  d.lr_scale = lr_scale_;
  for (std::size_t i = 0; i < reasons.size(); ++i) d.reason += (i ? "; " : "") + reasons[i];
  if (!d.events.empty() || d.action == StabilityAction::rollback ||
      d.action == StabilityAction::reduce_lr) {
    nlohmann::json events = nlohmann::json::array();
    for (auto e : d.events) events.push_back(std::string(event_name(e)));
    history_.push_back({{"step", r.step},
                        {"events", events},
                        {"action", std::string(action_name(d.action))},
                        {"lr_scale", lr_scale_},
                        {"reason", d.reason}});
  }
  return d;
}

}  // namespace neat::coordinator
