// The supervisor: the coordinator's control-plane side of a run.
// Phases: wait for every component to register -> configure each (its YAML block) -> subscription
// handshake (each publisher probes its topics until every subscriber the pipeline names has
// acknowledged a probe: no slow-joiner loss) -> activate -> watch heartbeats until the
// components in `finish_when` report done -> shutdown, collecting final statistics.
// Invariant: a component silent for longer than heartbeat_timeout is reported missing once,
// within that timeout plus one poll interval (50 ms).
// Crash recovery (control.restart): the missing component's process is restarted, configured,
// restored from its last snapshot, re-joined through the subscription handshake and activated;
// then its upstream publishers replay, from their retention buffers, every message after the
// snapshot's sequence numbers. Its own re-published messages carry the restored sequence numbers,
// so subscribers drop those they already have: each item is processed exactly once.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "neat/bus/control.hpp"
#include "neat/components/pipeline.hpp"
#include "neat/coordinator/budget.hpp"
#include "neat/coordinator/schedule.hpp"
#include "neat/coordinator/stability.hpp"

namespace neat::coordinator {

struct ComponentStatus {
  std::string name;
  std::string kind;
  long pid = 0;
  bool registered = false, configured = false, active = false, done = false;
  bool missing = false;  ///< heartbeat timed out
  std::string error;     ///< last error the component reported
  std::chrono::steady_clock::time_point last_heartbeat{};
  std::vector<std::string> subscribes, publishes;
  nlohmann::json stats = nlohmann::json::object();    ///< last stats report
  nlohmann::json summary = nlohmann::json::object();  ///< sent with done
  int restarts = 0;
  /// Where a crash recovery stands (none when the component is not being recovered).
  enum class Recovery { none, registering, configuring, restoring, rejoining };
  Recovery recovery = Recovery::none;
  bool restored = false;
  nlohmann::json restored_last_seq = nlohmann::json::object();  ///< sender -> topic -> seq
};

/// Schema of a component's `learning:` block: schedule (LearningRateSchedule::schema()),
/// stability (StabilityThresholds::schema()), keep_backups.
config::Schema learning_schema();

/// One snapshot of a component: the host's msgpack blob and the last sequence number it had
/// processed per (sender, topic).
struct Snapshot {
  std::string blob;
  nlohmann::json last_seq;
};

struct RunOutcome {
  bool completed = false;    ///< every finish_when component reported done
  bool interrupted = false;  ///< stopped by signal or caller
  std::string error;         ///< why the run did not complete, if it did not
  std::vector<std::string> missing;
  std::map<std::string, ComponentStatus> components;
  double wall_seconds = 0.0;
  std::uint64_t control_rejected = 0;
  std::vector<std::string> restarted;                  ///< one entry per restart, in order
  nlohmann::json memory = nlohmann::json::object();    ///< budget grants, peaks and actions
  nlohmann::json learning = nlohmann::json::object();  ///< per learner: steps, grants, events
  std::uint64_t checkpoints = 0;                       ///< snapshots received
  nlohmann::json to_json() const;
};

class Supervisor {
 public:
  /// Binds the control plane ROUTER to `control_endpoints`. Throws zmq::error_t if a bind fails.
  Supervisor(zmq::context_t& context, const components::PipelineSpec& spec,
             const std::vector<std::string>& control_endpoints, std::filesystem::path out_dir);

  /// Called (on the supervisor's thread) when a component is reported missing.
  void on_missing(std::function<void(const std::string&)> fn) { on_missing_ = std::move(fn); }
  /// When false, a missing component is reported but the run goes on waiting (a launcher may
  /// restart it). Default true: the run ends with an error.
  void set_abort_on_missing(bool abort) { abort_on_missing_ = abort; }

  /// Holds each component inside its memory grant: components report accounted bytes in their
  /// statistics; one over its grant is sent a degrade command.
  void set_memory_budget(MemoryBudgetManager budget) { budget_.emplace(std::move(budget)); }

  /// Called (on the supervisor's thread) with each statistics report of a component: its name
  /// and the JSON it sent ({"bus": ..., "component": ...}). A launcher draws progress from it.
  void on_stats(std::function<void(const std::string&, const nlohmann::json&)> fn) {
    on_stats_ = std::move(fn);
  }

  /// Restarts a component's process (crash recovery); returns false if it cannot.
  void set_restarter(std::function<bool(const std::string&)> fn) { restarter_ = std::move(fn); }

  /// Runs the phases above until done, `stop`, a component error, or a timeout.
  RunOutcome run(const std::atomic<bool>& stop);

 private:
  void handle(const bus::ControlServer::Incoming& in);
  void handle_safely(const bus::ControlServer::Incoming& in);
  bool wait_until(const std::atomic<bool>& stop, std::chrono::milliseconds timeout,
                  const std::function<bool()>& ready, const std::string& what);
  void check_heartbeats();
  void shutdown_all();
  void maintain();  // heartbeats, checkpoints, recovery steps: once per loop iteration
  void on_snapshot(const std::string& name, Snapshot snapshot);
  void progress_recovery(ComponentStatus& s);
  void on_update_request(ComponentStatus& s, const std::string& text);
  std::vector<std::string> subscribers_of(const std::string& topic) const;

  const components::PipelineSpec& spec_;
  bus::ControlServer server_;
  std::filesystem::path out_dir_;
  std::map<std::string, ComponentStatus> status_;
  /// (subscriber, topic, publisher) acknowledgements still expected in the handshake.
  std::set<std::tuple<std::string, std::string, std::string>> pending_acks_;
  std::function<void(const std::string&)> on_missing_;
  std::function<bool(const std::string&)> restarter_;
  std::function<void(const std::string&, const nlohmann::json&)> on_stats_;
  std::map<std::string, std::deque<Snapshot>> snapshots_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> trimmed_;  // (publisher, topic)
  bool running_ = false;
  std::uint64_t handler_errors_ = 0;
  std::optional<MemoryBudgetManager> budget_;
  // Test-time learning: one controller per learning component.
  struct Learner {
    LearningRateSchedule schedule;
    StabilityMonitor monitor;
    std::size_t keep_backups = 3;
    std::deque<std::string> backups;  // host snapshots, newest last
    std::uint64_t steps = 0, committed = 0, discarded = 0, rollbacks = 0;
    double last_lr = 0.0;
  };
  std::map<std::string, Learner> learners_;
  std::chrono::steady_clock::time_point next_checkpoint_{};
  bool abort_on_missing_ = true;
  RunOutcome outcome_;
};

}  // namespace neat::coordinator
