// Test-time learning as seen by a component (issue 8): each update step is computed from the
// component's own loss and parameters, reported to the coordinator, and kept only if granted.
// Gradient isolation: what crosses the control plane is a handful of scalar metrics; no
// gradient or parameter ever leaves the component.
#pragma once

#include <cstdint>
#include <string>

namespace neat::components {

/// Metrics of one update step, computed before it is applied. The step applied on a commit is
/// parameters -= learning_rate x direction, so the coordinator knows the update's size
/// (learning_rate x direction_norm) before it grants it.
struct UpdateRequest {
  std::uint64_t step = 0;
  double loss = 0.0;            ///< the component's own loss on the data of this step (nats)
  double grad_norm = 0.0;       ///< ||g||_2
  double direction_norm = 0.0;  ///< ||direction||_2 (the gradient, or with momentum)
  double param_norm = 1.0;      ///< ||parameters||_2 before the step
  double grad_cosine = 1.0;     ///< cos(g_t, g_{t-1}); 1 for the first step
};

/// The coordinator's answer.
struct Grant {
  enum class Action { commit, discard, rollback };
  Action action = Action::commit;
  double learning_rate = 0.0;  ///< for this step (commit), from the component's schedule
  std::string reason;          ///< why a step was discarded or rolled back
};

std::string_view grant_action_name(Grant::Action a);

}  // namespace neat::components
