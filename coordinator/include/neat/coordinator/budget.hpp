// Memory budgets (issue 8): the profile's total budget divided among components by priority;
// components report their accounted bytes (current and high-water mark, counted by the tensor
// allocator, not estimated); one over its grant gets a degrade command naming an action, the
// mildest first, escalating while it stays over.
// Invariant: grants sum to at most the total budget; every action taken is in summary().
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace neat::coordinator {

/// The degrade actions a component kind understands, mildest first:
/// titans: skip_low_surprise, shrink_chunks; t2: shrink_cache, reduce_rank;
/// blt: shorter_window, smaller_batch; mvot: smaller_batch. Other kinds: none.
const std::vector<std::string>& degrade_actions(const std::string& kind);

struct DegradeCommand {
  std::string component;
  std::string action;
  int level = 0;  ///< index in degrade_actions(kind)
  std::string reason;
};

class MemoryBudgetManager {
 public:
  /// `priorities`: component name -> weight (> 0); `kinds`: component name -> kind.
  /// Each component's grant is total_bytes x weight / sum of weights.
  MemoryBudgetManager(std::uint64_t total_bytes, std::map<std::string, double> priorities,
                      std::map<std::string, std::string> kinds, int settle_reports = 2);

  std::uint64_t total() const { return total_; }
  /// Bytes granted to `component` (0 if it has no entry).
  std::uint64_t grant(const std::string& component) const;

  /// Records a component's accounted usage (bytes). Returns a degrade command when it is over
  /// its grant and `settle_reports` reports have passed since its last command (time for the
  /// last action to take effect); std::nullopt otherwise.
  std::optional<DegradeCommand> report(const std::string& component, std::uint64_t current_bytes,
                                       std::uint64_t peak_bytes);

  /// Per component: kind, grant, current, peak (high-water mark), over-budget reports and the
  /// actions taken, in order.
  nlohmann::json summary() const;

 private:
  struct Account {
    std::string kind;
    double priority = 1.0;
    std::uint64_t grant = 0, current = 0, peak = 0;
    int level = 0, since_action = 1 << 30, over_reports = 0;
    std::vector<std::string> actions;
  };
  std::uint64_t total_;
  int settle_;
  std::map<std::string, Account> accounts_;
};

}  // namespace neat::coordinator
