// neat/hardware/profile.hpp: hardware profiles (configs/profiles/*.yaml) and the choice of one
// for the machine at hand.
//
// A profile says how many threads to use, how much memory the run may take, which precision
// and share of CPU each component gets, and which machines it is meant for (its match rules).
// Invariants: a loaded Profile passed profile_schema() and its name equals its file's stem; a
// profile for a device this machine lacks (cuda, apple) is never returned by selection, and
// when one is forced by name the caller gets a CPU profile and a warning saying so.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "neat/config/bytes.hpp"
#include "neat/config/schema.hpp"
#include "neat/hardware/detect.hpp"

namespace neat::hardware {

using neat::config::format_bytes;
using neat::config::parse_bytes;

// Component names a profile may configure.
inline const std::vector<std::string>& component_names() {
  static const std::vector<std::string> kNames{"blt", "titans", "t2", "mvot"};
  return kNames;
}

// The neural component a component kind belongs to, for budgets, priorities and precision:
// the kind itself when it is one of component_names(), the prefix before '_' when that is
// (e.g. "blt_predict", the byte LM's predictor stage, belongs to "blt"), else "".
inline std::string neural_family(const std::string& kind) {
  for (const auto& name : component_names()) {
    if (kind == name || kind.starts_with(name + "_")) return name;
  }
  return "";
}

struct Profile {
  std::string name;         // equals the file stem: cpu-default.yaml -> "cpu-default"
  std::string description;  // one line for `neat hw` and logs
  std::string device;       // "cpu" | "cuda" | "apple"
  int threads = 0;          // worker threads; 0 = all usable cores (see thread_count())
  std::uint64_t memory_budget_bytes = 0;      // upper bound for the whole run, in bytes
  int batch_size = 1;                         // sequences per training/adaptation step
  std::string default_precision = "float32";  // "float32" | "bf16"
  // Share of CPU time per component, > 0; relative weights used by the coordinator's scheduler.
  std::map<std::string, double> component_priority;
  // Per-component precision ("float32" | "bf16"); components not listed use default_precision.
  std::map<std::string, std::string> component_precision;
  // Heap policy of every neat process (key `heap`): most glibc malloc arenas (0: glibc's
  // default), the mmap threshold, and whether components return free heap to the system
  // after each message batch.
  int malloc_arena_max = 0;
  std::uint64_t mmap_threshold_bytes = 0;  // M_MMAP_THRESHOLD; 0: glibc's dynamic default
  bool trim_heap = false;

  // When selection may pick this profile. All rules must hold.
  struct Match {
    int min_cores = 1;                            // usable cores at least
    std::uint64_t min_memory_bytes = 0;           // usable memory at least, in bytes
    std::vector<std::string> required_cpu_flags;  // /proc/cpuinfo names, e.g. "avx2"
    std::string requires_device;  // "" (none) | "cuda" | "apple"; = device unless cpu
  } match;

  std::filesystem::path source;  // file it was loaded from ("" if built in code)

  // Threads to run with on `hw`: `threads`, or hw.usable_cores() when threads is 0.
  int thread_count(const HardwareInfo& hw) const;
  // Precision of `component`: its entry in component_precision, else default_precision.
  const std::string& precision(const std::string& component) const;
  // Priority weight of `component`: its entry in component_priority, else 1.0.
  double priority(const std::string& component) const;
};

// `total` bytes divided in proportion to positive weights: share(c) = total x w(c) / sum of the
// weights, rounded down. The one division of a memory budget by priority (memory_grants and
// coordinator::MemoryBudgetManager). Throws std::invalid_argument naming a weight that is not
// > 0. Empty for no weights.
std::map<std::string, std::uint64_t> share_by_priority(
    std::uint64_t total, const std::map<std::string, double>& priorities);

// The profile's memory budget divided among components by priority: `families` maps each
// component name of a run to its neural family (neural_family(); components with "" get no
// grant and are left out). grant(c) = memory_budget_bytes x priority(family(c)) / sum of the
// priorities of all listed components, in bytes (share_by_priority, as in coordinator::
// MemoryBudgetManager). Empty when no component has a family.
std::map<std::string, std::uint64_t> memory_grants(
    const Profile& profile, const std::map<std::string, std::string>& families);

// CPU scheduling by priority: the nice increment that gives a thread of weight `priority` its
// share next to the highest-priority component (weight `max_priority`) under Linux CFS, where
// one nice level scales a thread's CPU weight by about 1.25 (sched_prio_to_weight):
// nice = round(ln(max_priority / priority) / ln 1.25), clamped to [0, 19]. The top component
// keeps nice 0; a component of a sixth of its priority gets nice 8 (weight ratio 6.0).
// Throws std::invalid_argument unless 0 < priority <= max_priority.
int nice_for_priority(double priority, double max_priority);

// Schema of a profile file (see docs/hardware.md, generated from describe()).
const neat::config::Schema& profile_schema();

// Loads and validates one profile. Throws neat::config::ConfigError (file:line:column) when
// the file is missing, not YAML, does not match profile_schema(), or its name differs from
// the file stem.
Profile load_profile(const std::filesystem::path& file);

// Every *.yaml / *.yml file of `dir`, sorted by name. Throws ConfigError carrying the issues of
// all bad files together, or when `dir` is missing or holds no profile.
std::vector<Profile> load_profiles(const std::filesystem::path& dir);

// The reasons `profile` cannot run on `hw` (empty when all match rules hold), e.g.
// "needs at least 8 usable cores, this machine has 2".
std::vector<std::string> unmet_requirements(const Profile& profile, const HardwareInfo& hw);

// The most demanding profile whose match rules `hw` meets. "Most demanding" orders by: needs
// an accelerator, then min_cores, then min_memory_bytes, then the number of required CPU
// flags, then name (for a deterministic tie-break). A profile whose device is absent is never
// chosen. `reason` (optional) receives why this one was chosen and why others were not.
// Returns a reference into `profiles`. Throws std::runtime_error when no profile matches (the
// message lists each one's unmet rules).
const Profile& select_profile(const std::vector<Profile>& profiles, const HardwareInfo& hw,
                              std::string* reason);

// Loads the profiles of `dir` and returns the one to run with. Without `forced_name`, this is
// select_profile(). With it, that profile is used, except that a device profile whose device
// is absent is replaced by select_profile() over the CPU profiles, with a warning; a forced CPU
// profile whose other rules are unmet is kept, with a warning per unmet rule. `warnings`
// (optional) receives those messages; nothing is appended when the choice needed no warning.
// Throws ConfigError for bad files, std::invalid_argument for an unknown forced name (with the
// closest known name), std::runtime_error when nothing matches.
Profile resolve_profile(const std::filesystem::path& dir, const HardwareInfo& hw,
                        std::optional<std::string> forced_name, std::vector<std::string>* warnings);

// Same as above on profiles already loaded.
Profile resolve_profile(const std::vector<Profile>& profiles, const HardwareInfo& hw,
                        std::optional<std::string> forced_name, std::vector<std::string>* warnings);

// Multi-line description of a profile (for `neat hw`).
std::string to_string(const Profile& profile);

}  // namespace neat::hardware
