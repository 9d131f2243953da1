// The Component interface: what every neat node (blt, titans, t2, mvot, source, sink, ...)
// provides so that the host can run it embedded (a thread) or as its own process.
// Lifecycle: configure -> activate -> (messages, step) -> deactivate -> shutdown.
// Invariant: a component touches the bus only through its Context, on its executor thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "neat/bus/node.hpp"
#include "neat/components/learning.hpp"
#include "neat/config/schema.hpp"

namespace neat::components {

/// What the run's hardware profile (configs/profiles/*.yaml, issue 8) asks of one component,
/// resolved by the launcher (pipeline.hpp: apply_profile) and handed to it in the configure
/// command, embedded or in its own process alike. A component run without a profile (tests,
/// `neat component` on its own) sees the defaults: float32, no caps.
struct ProfileSettings {
  std::string profile;                    ///< profile name; "" when the run has none
  std::string precision = "float32";      ///< weight storage: "float32" | "bf16"
  int batch_size = 0;                     ///< most sequences per forward/adaptation step; 0: no cap
  std::uint64_t memory_grant_bytes = 0;   ///< this component's share of the budget; 0: none
  std::uint64_t memory_budget_bytes = 0;  ///< the whole run's budget; 0: none
  /// Process-wide heap policy (glibc), applied by the host: arenas at most (0: glibc default),
  /// and whether free heap is returned to the system after each handled message batch.
  int malloc_arena_max = 0;
  std::uint64_t mmap_threshold_bytes = 0;  ///< M_MMAP_THRESHOLD; 0: glibc's dynamic default
  bool trim_heap = false;

  /// `requested` sequences per step capped by the profile's batch_size (unchanged when 0).
  int cap_batch(int requested) const {
    return batch_size > 0 && batch_size < requested ? batch_size : requested;
  }

  nlohmann::json to_json() const;
  /// Inverse of to_json(); throws std::invalid_argument naming the bad field.
  static ProfileSettings from_json(const nlohmann::json& j);
};

/// What a component sees of its runtime: its name, its bus node, its logger, and a way to say
/// that its work is complete.
class Context {
 public:
  Context(std::string name, bus::Node& node, std::shared_ptr<spdlog::logger> logger)
      : name_(std::move(name)), node_(node), logger_(std::move(logger)) {}
  const std::string& name() const { return name_; }
  bus::Node& node() { return node_; }
  spdlog::logger& log() { return *logger_; }
  /// Reports to the coordinator that this component has finished its stream (e.g. the sink
  /// wrote its report). `summary` is a JSON text forwarded to the coordinator.
  void finish(std::string summary = "{}") {
    finished_ = true;
    summary_ = std::move(summary);
  }
  bool finished() const { return finished_; }
  const std::string& summary() const { return summary_; }
  /// Asks the coordinator to grant a candidate update step (test-time learning). Blocks until
  /// the grant arrives; a rollback grant is followed by the restore of the last backup, which
  /// the host applies before this component sees another message. Without a coordinator
  /// answer within the timeout the step is discarded (counted in grant_timeouts).
  Grant request_update(const UpdateRequest& report) { return requester_(report); }
  void set_update_requester(std::function<Grant(const UpdateRequest&)> fn) {
    requester_ = std::move(fn);
  }

  /// Directory for outputs (reports, plots), given by the coordinator (`--out`).
  const std::filesystem::path& out_dir() const { return out_dir_; }
  void set_out_dir(std::filesystem::path dir) { out_dir_ = std::move(dir); }

  /// The hardware profile's settings for this component (precision, batch cap, memory grant);
  /// set by the host before configure().
  const ProfileSettings& profile() const { return profile_; }
  void set_profile(ProfileSettings profile) { profile_ = std::move(profile); }

 private:
  std::string name_;
  bus::Node& node_;
  std::shared_ptr<spdlog::logger> logger_;
  bool finished_ = false;
  std::string summary_;
  std::filesystem::path out_dir_ = ".";
  ProfileSettings profile_;
  std::function<Grant(const UpdateRequest&)> requester_ = [](const UpdateRequest&) {
    return Grant{Grant::Action::discard, 0.0, "no coordinator"};
  };
};

class Component {
 public:
  virtual ~Component() = default;

  /// Reads the component's `config:` block (already validated against schema()) and registers
  /// its subscriptions on ctx.node(). Throws std::invalid_argument on a value it cannot use.
  virtual void configure(const YAML::Node& config, Context& ctx) = 0;

  /// Exact topics this component publishes; known after configure(). The coordinator holds
  /// them back until every subscriber of each topic has confirmed its subscription.
  virtual std::vector<std::string> publishes() const = 0;

  /// Called once all subscriptions of the pipeline are confirmed.
  virtual void activate(Context&) {}
  virtual void deactivate(Context&) {}

  /// Called by the executor while active and no message is waiting. Returns true if it did
  /// work and wants to be called again at once (a source publishing its next chunk).
  virtual bool step(Context&) { return false; }

  /// State as msgpack bytes (checkpoint); restore() takes what snapshot() returned.
  virtual std::string snapshot() const { return {}; }
  virtual void restore(std::string_view /*bytes*/) {}

  /// Component-specific statistics for the report. A component that accounts memory reports
  /// it as "memory": {"current_bytes": n, "peak_bytes": n} (counted by the tensor allocator);
  /// the coordinator compares it with the component's budget grant.
  virtual nlohmann::json stats() const { return nlohmann::json::object(); }

  /// Carries out a degrade action sent by the coordinator when the component is over its
  /// memory grant (names in coordinator/budget.hpp). Returns false if it has no such action.
  virtual bool degrade(const std::string& /*action*/) { return false; }

  virtual void shutdown(Context&) {}
};

}  // namespace neat::components
