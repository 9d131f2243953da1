// Learning-rate schedules for test-time learning, per component, from the pipeline YAML
// (`components.<name>.learning.schedule`). The coordinator multiplies the schedule's value by
// the stability monitor's scale (reduce on instability, recover slowly).
#pragma once

#include <cstdint>
#include <string>

#include <yaml-cpp/yaml.h>

#include "neat/config/schema.hpp"

namespace neat::coordinator {

struct LearningRateSchedule {
  enum class Kind { constant, warmup_cosine, inverse_sqrt, adaptive };
  Kind kind = Kind::constant;
  double lr = 1e-3;         ///< peak learning rate
  int warmup_steps = 0;     ///< linear warm-up from 0 (warmup_cosine, inverse_sqrt)
  int total_steps = 10000;  ///< end of the cosine (warmup_cosine)
  double min_lr = 0.0;      ///< floor of the cosine (warmup_cosine)

  /// Learning rate at `step` (1-based), from nn's schedule objects (nn/optim.hpp):
  ///   constant, adaptive: lr (adaptive: the monitor's scale does the work);
  ///   warmup_cosine: lr * step / warmup during warm-up, then
  ///     min_lr + (lr - min_lr) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2, and
  ///     min_lr after total;
  ///   inverse_sqrt: lr * min(step / warmup, sqrt(warmup / step)) (Vaswani et al. 2017, eq. 3,
  ///     with the peak at `lr`; warm-up of at least one step).
  double at(std::uint64_t step) const;

  static config::Schema schema();
  /// Throws std::invalid_argument when warmup_steps exceeds total_steps (warmup_cosine).
  static LearningRateSchedule from_yaml(const YAML::Node& node);
};

}  // namespace neat::coordinator
