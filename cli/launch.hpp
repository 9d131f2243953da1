// The launcher behind `neat launch` and `neat run`: starts the broker and the coordinator in
// this process, runs embedded components as threads, spawns separate ones as
// `neat component NAME` processes (their logs forwarded with a "[NAME] " prefix), and on
// Ctrl-C/SIGTERM, or when the run ends, stops them all: no process outlives the launcher
// (children also ask the kernel for SIGTERM when their parent dies).
#pragma once

#include <atomic>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "neat/components/pipeline.hpp"
#include "neat/coordinator/supervisor.hpp"
#include "neat/hardware/profile.hpp"

namespace neat::cli {

struct LaunchOptions {
  components::PipelineSpec spec;
  components::PipelineOverrides overrides;  ///< forwarded to child processes
  std::string run_id;
  std::filesystem::path out_dir = "out";
  std::filesystem::path neat_binary;  ///< for spawning
  /// The hardware profile: its memory budget is divided among the pipeline's neural
  /// components by the profile's priorities.
  std::optional<hardware::Profile> profile;
  /// Also bind the inter-process endpoints when every component is embedded, so that
  /// `neat topic` can attach to the run.
  bool expose = true;
  /// Worker threads of the numerical core (nn::set_num_threads) in this process and in every
  /// child: the profile's thread pool. 0 leaves the library default.
  int threads = 0;
  /// Draw a progress line on stderr (items, bytes, bits per byte so far, throughput, ETA) from
  /// the components' "progress" statistics: {"items_total"} from the source and {"items_done",
  /// "bytes", "bits"} from the predictor. Rewritten in place on a terminal, else every 10 s.
  bool progress = false;
};

/// CPU priority of each component of `spec` under `profile`: the nice increment of its thread
/// (embedded) or process (separate), hardware::nice_for_priority relative to the
/// highest-priority neural component present. Non-neural kinds (source, sink, ...) keep 0.
std::map<std::string, int> component_niceness(const components::PipelineSpec& spec,
                                              const hardware::Profile& profile);

/// Runs a pipeline to its end (or until *stop). Writes `run.json` (outcome, component and bus
/// statistics) in out_dir. Throws on a failure to start (bind error, spawn error).
coordinator::RunOutcome launch(const LaunchOptions& options, const std::atomic<bool>& stop);

/// Arguments that reproduce `overrides` on a child's command line.
std::vector<std::string> override_args(const components::PipelineOverrides& overrides);

/// Installs SIGINT/SIGTERM handlers that set the returned flag (once per process).
std::atomic<bool>& install_stop_signals();

/// Runs one component as this process (`neat component NAME`): returns its exit code.
int run_component_process(const components::PipelineSpec& spec, const std::string& name,
                          const std::string& run_id, const std::atomic<bool>& stop, int nice = 0,
                          int threads = 0);

}  // namespace neat::cli
