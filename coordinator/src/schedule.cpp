// Learning-rate schedules (see schedule.hpp).
#include "neat/coordinator/schedule.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "neat/nn/optim.hpp"

namespace neat::coordinator {

double LearningRateSchedule::at(std::uint64_t step) const {
  // The formulas live in nn's schedule objects (0-based steps); this is their run-time driver.
  const auto s = static_cast<std::int64_t>(std::max<std::uint64_t>(step, 1) - 1);
  auto value = [s](nn::LrSchedule&& schedule) {
    schedule.set_step(s);
    return schedule.lr();
  };
  switch (kind) {
    case Kind::constant:
    case Kind::adaptive:
      return value(nn::ConstantLr(lr));
    case Kind::warmup_cosine:
      return value(nn::WarmupCosineLr(lr, warmup_steps, total_steps, min_lr));
    case Kind::inverse_sqrt:
      return value(nn::InverseSqrtLr(lr, std::max(warmup_steps, 1)));
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
  if (s.kind == Kind::warmup_cosine && s.warmup_steps > s.total_steps) {
    throw std::invalid_argument("learning.schedule: warmup_steps (" +
                                std::to_string(s.warmup_steps) + ") exceeds total_steps (" +
                                std::to_string(s.total_steps) + ")");
  }
  return s;
}

}  // namespace neat::coordinator
