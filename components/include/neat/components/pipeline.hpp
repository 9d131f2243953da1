// A pipeline description (configs/pipelines/*.yaml): which components run, in which process
// shape, over which transport, with which per-topic delivery policy and control timeouts.
// Invariant: a PipelineSpec returned by load_pipeline() has passed the pipeline schema and
// every component's own config schema; nothing starts on a bad config.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "neat/bus/endpoints.hpp"
#include "neat/bus/node.hpp"
#include "neat/components/component.hpp"
#include "neat/components/registry.hpp"
#include "neat/config/schema.hpp"
#include "neat/hardware/profile.hpp"

namespace neat::components {

enum class Process { embedded, separate };

struct ComponentSpec {
  std::string name;  ///< unique in the pipeline; also the bus sender id
  std::string kind;  ///< registry name
  Process process = Process::embedded;
  YAML::Node config;  ///< the `config:` block, validated against the kind's schema
  /// The `learning:` block (test-time learning: schedule, stability thresholds), validated by
  /// the coordinator; absent for components that do not learn at run time.
  YAML::Node learning;
};

struct PipelineSpec {
  std::filesystem::path file;
  std::string name;
  /// Transport between processes (ipc or tcp); embedded components always use inproc.
  bus::Transport transport = bus::Transport::ipc;
  std::string tcp_host = "127.0.0.1";
  int tcp_base_port = 5555;
  std::string ipc_dir = "/tmp";
  /// The broker runs in the launcher (false) or is started separately with `neat broker`
  /// (true); then every component, embedded ones included, reaches it over `transport`.
  bool external_broker = false;
  int hwm = 1000;
  std::size_t max_message_bytes = 64u << 20;
  /// Messages retained per lossless topic for replay after a restart (0: no retention).
  std::size_t retention = 0;
  std::vector<bus::TopicPolicy> policies;
  std::chrono::milliseconds heartbeat_interval{200};
  std::chrono::milliseconds heartbeat_timeout{1000};
  std::chrono::milliseconds startup_timeout{20000};
  std::chrono::milliseconds shutdown_timeout{5000};
  /// Snapshot every component this often (0: never); the last `keep_snapshots` are kept.
  std::chrono::milliseconds checkpoint_interval{0};
  std::size_t keep_snapshots = 3;
  /// Restart a separate component that stops sending heartbeats, restore its last snapshot and
  /// replay what it missed; at most `max_restarts` times per component.
  bool restart = false;
  int max_restarts = 3;
  std::string log_level = "info";
  /// The run ends when every component named here has reported done.
  std::vector<std::string> finish_when;
  std::vector<ComponentSpec> components;

  bool any_separate() const;
  const ComponentSpec& component(const std::string& name) const;  ///< throws std::out_of_range
  /// Endpoints of the broker and control plane for `run_id`: inproc (embedded side) or the
  /// configured inter-process transport.
  bus::BusEndpoints endpoints(const std::string& run_id, bool embedded) const;
  /// Node options for component `name` in this run.
  bus::NodeOptions node_options(const std::string& name, const std::string& run_id,
                                bool embedded) const;
};

/// Schema of a pipeline file (the `config:` blocks are checked against their kind's schema).
config::Schema pipeline_schema();

/// Loads and validates a pipeline file, including each component's config block against
/// `registry`. Throws config::ConfigError with every issue (file:line:column: key.path: what).
PipelineSpec load_pipeline(const std::filesystem::path& file, const Registry& registry);

/// Command-line overrides applied after loading (used by `neat launch` and the tests that run
/// one pipeline in several shapes).
struct PipelineOverrides {
  std::optional<Process> process;  ///< every component embedded or separate
  std::optional<bus::Transport> transport;
  std::optional<int> tcp_base_port;
  std::vector<std::string> inputs;  ///< replaces the source's `inputs` when non-empty
};
void apply_overrides(PipelineSpec& spec, const PipelineOverrides& overrides);

}  // namespace neat::components

namespace neat::components {

/// Reserved key of a component's `config:` block that carries its ProfileSettings (a JSON
/// string) from the launcher, through the coordinator's configure command, to the host. No
/// component schema has it, so a pipeline file cannot set it; the host removes it before the
/// component's configure() runs.
inline constexpr const char* kProfileConfigKey = "profile";

/// The resolved hardware profile's settings for each component of `spec` (issue 8): the
/// precision of its neural family (hardware::neural_family, float32 for the others), the
/// profile's batch_size, its memory grant (hardware::memory_grants) and the heap policy;
/// written under kProfileConfigKey of every component's config block. Called by the launcher
/// once the profile is known, before components are started.
void apply_profile(PipelineSpec& spec, const hardware::Profile& profile);

/// Removes kProfileConfigKey from `config` and returns the settings it carried (defaults when
/// absent). Throws std::invalid_argument for a malformed block.
ProfileSettings take_profile_settings(YAML::Node& config);

}  // namespace neat::components
