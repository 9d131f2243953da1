// Learning-rate schedules (see schedule.hpp).
#include "neat/coordinator/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace neat::coordinator {

double LearningRateSchedule::at(std::uint64_t step) const {
  const double s = static_cast<double>(std::max<std::uint64_t>(step, 1));
  const double w = static_cast<double>(warmup_steps);
  switch (kind) {
    case Kind::constant:
    case Kind::adaptive:
      return lr;
    case Kind::warmup_cosine: {
      if (warmup_steps > 0 && s < w) return lr * s / w;
      const double span = std::max(1.0, static_cast<double>(total_steps) - w);
      const double progress = std::min(1.0, (s - w) / span);
      return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    }
    case Kind::inverse_sqrt:
      if (warmup_steps > 0) return lr * std::min(s / w, std::sqrt(w / s));
      return lr / std::sqrt(s);
  }
  return lr;
}

config::Schema LearningRateSchedule::schema() {
  using config::Schema;
  return Schema::map()
      .optional("kind",
                Schema::one_of({"constant", "warmup_cosine", "inverse_sqrt", "adaptive"})
                    .default_value("constant"),
                "schedule shape")
      .optional("lr", Schema::number(0.0, 1e3).default_value("0.001"), "peak learning rate")
      .optional("warmup_steps", Schema::integer(0, 100000000).default_value("0"),
                "linear warm-up steps")
      .optional("total_steps", Schema::integer(1, 1000000000).default_value("10000"),
                "end of the cosine")
      .optional("min_lr", Schema::number(0.0, 1e3).default_value("0"), "floor of the cosine");
}

LearningRateSchedule LearningRateSchedule::from_yaml(const YAML::Node& n) {
  LearningRateSchedule s;
  if (!n) return s;
  if (n["kind"]) {
    const auto k = n["kind"].as<std::string>();
    s.kind = k == "warmup_cosine"  ? Kind::warmup_cosine
             : k == "inverse_sqrt" ? Kind::inverse_sqrt
             : k == "adaptive"     ? Kind::adaptive
                                   : Kind::constant;
  }
  if (n["lr"]) s.lr = n["lr"].as<double>();
  if (n["warmup_steps"]) s.warmup_steps = n["warmup_steps"].as<int>();
  if (n["total_steps"]) s.total_steps = n["total_steps"].as<int>();
  if (n["min_lr"]) s.min_lr = n["min_lr"].as<double>();
  return s;
}

}  // namespace neat::coordinator
