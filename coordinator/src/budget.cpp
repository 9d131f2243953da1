// Memory budget manager (see budget.hpp).
#include "neat/coordinator/budget.hpp"

#include <stdexcept>

#include "neat/hardware/profile.hpp"

namespace neat::coordinator {

const std::vector<std::string>& degrade_actions(const std::string& kind) {
  static const std::map<std::string, std::vector<std::string>> actions = {
      {"titans", {"skip_low_surprise", "shrink_chunks"}},
      {"t2", {"shrink_cache", "reduce_rank"}},
      {"blt", {"shorter_window", "smaller_batch"}},
      {"mvot", {"smaller_batch"}}};
  static const std::vector<std::string> none;
  auto it = actions.find(kind);
  return it == actions.end() ? none : it->second;
}

MemoryBudgetManager::MemoryBudgetManager(std::uint64_t total_bytes,
                                         std::map<std::string, double> priorities,
                                         std::map<std::string, std::string> kinds,
                                         int settle_reports)
    : total_(total_bytes), settle_(settle_reports) {
  // The launcher hands each component the same grant (components::apply_profile).
  const auto grants = hardware::share_by_priority(total_bytes, priorities);
  for (const auto& [name, p] : priorities) {
    auto& a = accounts_[name];
    a.priority = p;
    a.kind = kinds.contains(name) ? kinds.at(name) : name;
    a.grant = grants.at(name);
  }
}

std::uint64_t MemoryBudgetManager::grant(const std::string& component) const {
  auto it = accounts_.find(component);
  return it == accounts_.end() ? 0 : it->second.grant;
}

std::optional<DegradeCommand> MemoryBudgetManager::report(const std::string& component,
                                                          std::uint64_t current_bytes,
                                                          std::uint64_t peak_bytes) {
  auto it = accounts_.find(component);
  if (it == accounts_.end()) return std::nullopt;
  auto& a = it->second;
  a.current = current_bytes;
  a.peak = std::max(a.peak, std::max(peak_bytes, current_bytes));
  ++a.since_action;
  if (current_bytes <= a.grant) return std::nullopt;
  ++a.over_reports;
  const auto& actions = degrade_actions(a.kind);
  if (actions.empty() || a.since_action < settle_) return std::nullopt;
  const int level = std::min<int>(a.level, static_cast<int>(actions.size()) - 1);
  DegradeCommand cmd{
      component, actions[static_cast<std::size_t>(level)], level,
      std::to_string(current_bytes) + " bytes over the grant of " + std::to_string(a.grant)};
  a.actions.push_back(cmd.action);
  a.level = level + 1;
  a.since_action = 0;
  return cmd;
}

nlohmann::json MemoryBudgetManager::summary() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, a] : accounts_) {
    out[name] = {{"kind", a.kind},         {"priority", a.priority},
                 {"grant_bytes", a.grant}, {"current_bytes", a.current},
                 {"peak_bytes", a.peak},   {"over_budget_reports", a.over_reports},
                 {"actions", a.actions}};
  }
  return out;
}

}  // namespace neat::coordinator
