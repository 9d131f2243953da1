// Hardware profiles: the YAML schema, loading, and the choice of a profile for a machine.
#include "neat/hardware/profile.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace neat::hardware {
namespace {

namespace fs = std::filesystem;
using neat::config::ConfigError;
using neat::config::Issue;
using neat::config::join;
using neat::config::Schema;

const std::vector<std::string> kPrecisions{"float32", "bf16"};

Schema component_schema() {
  Schema s = Schema::map().doc("Settings of one component.");
  s.optional("priority",
             Schema::number(0.0, 1000.0)
                 .default_value("1.0")
                 .check([](const YAML::Node& n) -> std::optional<std::string> {
                   if (n.as<double>() <= 0.0) return "priority must be greater than 0";
                   return std::nullopt;
                 }),
             "Relative share of CPU time when components compete (weights, > 0).");
  s.optional("precision", Schema::one_of(kPrecisions).default_value("= precision"),
             "Number format of this component's stored weights: with bf16, blt's, t2's and "
             "blt_predict's copy of the byte LM keeps its Linear weights in bf16, and t2's and "
             "blt_predict's SVD factors U, V are stored in bf16 (compute stays float32; titans "
             "and mvot keep float32).");
  return s;
}

Schema build_profile_schema() {
  Schema components = Schema::map().doc("Per-component settings.");
  for (const std::string& name : component_names()) {
    components.optional(name, component_schema(), "Settings of the `" + name + "` component.");
  }

  Schema match = Schema::map();
  match.optional("min_cores", Schema::integer(1, 4096).default_value("1"),
                 "Usable cores (logical cores within the affinity mask and cgroup CPU limit) "
                 "the machine must have.");
  match.optional("min_memory", Schema::bytes().default_value("0"),
                 "Usable memory (RAM, or the cgroup memory limit if lower) the machine must have.");
  match.optional(
      "cpu_flags",
      Schema::list(Schema::string().check([](const YAML::Node& n) -> std::optional<std::string> {
        const std::string& f = n.Scalar();
        if (f.empty() ||
            f.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos) {
          return "'" + f + "' is not a CPU flag name (lowercase /proc/cpuinfo name, e.g. avx2)";
        }
        return std::nullopt;
      })).default_value("[]"),
      "CPU flags the machine must have, as named in /proc/cpuinfo (avx2, fma, avx512f, "
      "avx512_bf16, avx512_vnni, avx_vnni).");

  Schema s = Schema::map().doc(
      "A hardware profile (`configs/profiles/<name>.yaml`): how a run uses the machine, and "
      "which machines the profile is meant for.");
  s.required("name", Schema::string(), "Profile name; must equal the file name without .yaml.");
  s.required("description", Schema::string(), "One line shown by `neat hw` and in logs.");
  s.required("device", Schema::one_of({"cpu", "cuda", "apple"}),
             "Where the numerical work runs. A `cuda` or `apple` profile is only selected when "
             "that device is detected.");
  s.required("threads", Schema::integer(0, 4096),
             "Worker threads; 0 = all usable cores of the machine.");
  s.required("memory_budget", Schema::bytes(std::uint64_t{16} << 20),
             "Upper bound on the memory of the whole run (model, optimiser state, buffers); "
             "divided among components by priority, and 1/32 of it bounds the composed-weight "
             "cache of t2.");
  s.required("batch_size", Schema::integer(1, 65536),
             "Sequences per training or adaptation step; caps blt_predict's adaptive batch.");
  s.optional("precision", Schema::one_of(kPrecisions).default_value("float32"),
             "Default number format for all components.");
  s.optional("components", components, "Per-component priority and precision.");
  Schema heap = Schema::map().doc("The process heap (glibc malloc) of every neat process.");
  heap.optional("arena_max", Schema::integer(0, 1024).default_value("0"),
                "Most malloc arenas (mallopt M_ARENA_MAX); 0 = glibc's default (8 per core). "
                "Each thread that allocates may otherwise get its own arena, whose free memory "
                "stays resident.");
  heap.optional("mmap_threshold", Schema::bytes().default_value("0"),
                "Allocations at least this large get their own mapping, returned to the system "
                "when freed (mallopt M_MMAP_THRESHOLD); 0 = glibc's default, a threshold that "
                "grows with the largest block freed so far (up to 32 MiB).");
  heap.optional("trim", Schema::boolean().default_value("false"),
                "Return free heap memory to the system (malloc_trim) after every batch of "
                "messages a component handles.");
  s.optional("heap", heap, "Heap policy (memory footprint against allocation speed).");
  s.optional("match", match, "Rules the machine must meet for automatic selection.");
  return s;
}

std::vector<std::string> known_names(const std::vector<Profile>& profiles) {
  std::vector<std::string> names;
  for (const Profile& p : profiles) names.push_back(p.name);
  return names;
}

// Sort key for "most demanding" (larger is more demanding).
auto demand(const Profile& p) {
  return std::make_tuple(!p.match.requires_device.empty(), p.match.min_cores,
                         p.match.min_memory_bytes, p.match.required_cpu_flags.size());
}

bool device_present(const std::string& device, const HardwareInfo& hw) {
  if (device == "cuda") return hw.nvidia_gpu.has_value();
  if (device == "apple") return hw.apple_silicon.has_value();
  return true;
}

std::string device_missing_message(const std::string& device) {
  if (device == "cuda") return "needs a CUDA GPU, and nvidia-smi reports none on this machine";
  if (device == "apple") return "needs Apple silicon, and this machine is not one";
  return "needs device '" + device + "', which is not detected";
}

}  // namespace

int Profile::thread_count(const HardwareInfo& hw) const {
  return threads > 0 ? threads : hw.usable_cores();
}

const std::string& Profile::precision(const std::string& component) const {
  const auto it = component_precision.find(component);
  return it != component_precision.end() ? it->second : default_precision;
}

double Profile::priority(const std::string& component) const {
  const auto it = component_priority.find(component);
  return it != component_priority.end() ? it->second : 1.0;
}

std::map<std::string, std::uint64_t> share_by_priority(
    std::uint64_t total, const std::map<std::string, double>& priorities) {
  double sum = 0.0;
  for (const auto& [name, p] : priorities) {
    if (!(p > 0.0)) throw std::invalid_argument("priority of '" + name + "' must be > 0");
    sum += p;
  }
  std::map<std::string, std::uint64_t> shares;
  for (const auto& [name, p] : priorities)
    shares[name] = static_cast<std::uint64_t>(static_cast<double>(total) * (p / sum));
  return shares;
}

std::map<std::string, std::uint64_t> memory_grants(
    const Profile& profile, const std::map<std::string, std::string>& families) {
  std::map<std::string, double> priorities;
  for (const auto& [name, family] : families) {
    if (!family.empty()) priorities[name] = profile.priority(family);
  }
  return share_by_priority(profile.memory_budget_bytes, priorities);
}

int nice_for_priority(double priority, double max_priority) {
  if (!(priority > 0) || !(priority <= max_priority)) {
    throw std::invalid_argument("nice_for_priority: need 0 < priority (" +
                                std::to_string(priority) + ") <= max_priority (" +
                                std::to_string(max_priority) + ")");
  }
  const double levels = std::log(max_priority / priority) / std::log(1.25);
  return std::clamp(static_cast<int>(std::lround(levels)), 0, 19);
}

const Schema& profile_schema() {
  static const Schema kSchema = build_profile_schema();
  return kSchema;
}

Profile load_profile(const fs::path& file) {
  const YAML::Node root = neat::config::load_file(file, profile_schema());
  Profile p;
  p.source = file;
  p.name = root["name"].as<std::string>();
  const std::string stem = file.stem().string();
  if (p.name != stem) {
    const YAML::Mark m = root["name"].Mark();
    throw ConfigError({Issue{
        file.string(), m.line + 1, m.column + 1, "name",
        "profile name '" + p.name + "' must equal the file name '" + stem + "' (without .yaml)"}});
  }
  p.description = root["description"].as<std::string>();
  p.device = root["device"].as<std::string>();
  p.threads = root["threads"].as<int>();
  p.memory_budget_bytes = parse_bytes(root["memory_budget"].Scalar());
  p.batch_size = root["batch_size"].as<int>();
  p.default_precision = neat::config::get_or<std::string>(root, "precision", "float32");
  if (const YAML::Node components = root["components"]; components && components.IsMap()) {
    for (const std::string& c : component_names()) {
      const YAML::Node entry = components[c];
      if (!entry || !entry.IsMap()) continue;
      if (entry["priority"]) p.component_priority[c] = entry["priority"].as<double>();
      if (entry["precision"]) p.component_precision[c] = entry["precision"].as<std::string>();
    }
  }
  if (const YAML::Node heap = root["heap"]; heap && heap.IsMap()) {
    p.malloc_arena_max = neat::config::get_or<int>(heap, "arena_max", 0);
    p.trim_heap = neat::config::get_or<bool>(heap, "trim", false);
    if (heap["mmap_threshold"])
      p.mmap_threshold_bytes = parse_bytes(heap["mmap_threshold"].Scalar());
  }
  if (const YAML::Node match = root["match"]; match && match.IsMap()) {
    p.match.min_cores = neat::config::get_or<int>(match, "min_cores", 1);
    if (match["min_memory"]) p.match.min_memory_bytes = parse_bytes(match["min_memory"].Scalar());
    if (match["cpu_flags"]) {
      p.match.required_cpu_flags = match["cpu_flags"].as<std::vector<std::string>>();
    }
  }
  p.match.requires_device = p.device == "cpu" ? "" : p.device;
  return p;
}

std::vector<Profile> load_profiles(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw ConfigError({Issue{dir.string(), 0, 0, "", "profile directory not found"}});
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml")) files.push_back(entry.path());
  }
  if (ec) throw ConfigError({Issue{dir.string(), 0, 0, "", "cannot list: " + ec.message()}});
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    throw ConfigError({Issue{dir.string(), 0, 0, "", "no profile (*.yaml) in this directory"}});
  }
  std::vector<Profile> profiles;
  std::vector<Issue> issues;
  for (const fs::path& f : files) {
    try {
      profiles.push_back(load_profile(f));
    } catch (const ConfigError& e) {
      issues.insert(issues.end(), e.issues().begin(), e.issues().end());
    }
  }
  if (!issues.empty()) throw ConfigError(std::move(issues));
  return profiles;
}

std::vector<std::string> unmet_requirements(const Profile& profile, const HardwareInfo& hw) {
  std::vector<std::string> unmet;
  const std::string& device = profile.match.requires_device;
  if (!device.empty() && !device_present(device, hw))
    unmet.push_back(device_missing_message(device));
  const int cores = hw.usable_cores();
  if (profile.match.min_cores > cores) {
    unmet.push_back("needs at least " + std::to_string(profile.match.min_cores) +
                    " usable cores, this machine has " + std::to_string(cores));
  }
  if (profile.match.min_memory_bytes > 0) {
    const std::uint64_t memory = hw.usable_memory();
    if (memory == 0) {
      unmet.push_back("needs at least " + format_bytes(profile.match.min_memory_bytes) +
                      " of memory, and this machine's memory is not available");
    } else if (profile.match.min_memory_bytes > memory) {
      unmet.push_back("needs at least " + format_bytes(profile.match.min_memory_bytes) +
                      " of usable memory, this machine has " + format_bytes(memory));
    }
  }
  std::vector<std::string> missing;
  for (const std::string& flag : profile.match.required_cpu_flags) {
    if (!hw.has_cpu_flag(flag)) missing.push_back(flag);
  }
  if (!missing.empty()) unmet.push_back("needs CPU flags this CPU lacks: " + join(missing, ", "));
  return unmet;
}

const Profile& select_profile(const std::vector<Profile>& profiles, const HardwareInfo& hw,
                              std::string* reason) {
  const Profile* best = nullptr;
  std::vector<std::string> matching;
  std::vector<std::string> rejected;
  for (const Profile& p : profiles) {
    const std::vector<std::string> unmet = unmet_requirements(p, hw);
    if (!unmet.empty()) {
      rejected.push_back(p.name + " (" + join(unmet, "; ") + ")");
      continue;
    }
    matching.push_back(p.name);
    if (best == nullptr || demand(p) > demand(*best) ||
        (demand(p) == demand(*best) && p.name < best->name)) {
      best = &p;
    }
  }
  if (best == nullptr) {
    throw std::runtime_error(profiles.empty() ? "no hardware profile to choose from"
                                              : "no hardware profile matches this machine: " +
                                                    join(rejected, "; "));
  }
  if (reason != nullptr) {
    *reason = "selected profile '" + best->name +
              "', the most demanding of those this machine meets (" + join(matching, ", ") + ")";
    if (!rejected.empty()) *reason += "; not eligible: " + join(rejected, "; ");
  }
  return *best;
}

Profile resolve_profile(const std::vector<Profile>& profiles, const HardwareInfo& hw,
                        std::optional<std::string> forced_name,
                        std::vector<std::string>* warnings) {
  auto warn = [&](std::string message) {
    if (warnings != nullptr) warnings->push_back(std::move(message));
  };
  if (!forced_name) return select_profile(profiles, hw, nullptr);

  const auto it = std::find_if(profiles.begin(), profiles.end(),
                               [&](const Profile& p) { return p.name == *forced_name; });
  if (it == profiles.end()) {
    std::string message = "unknown hardware profile '" + *forced_name + "'";
    const std::string guess = neat::config::closest_match(*forced_name, known_names(profiles));
    if (!guess.empty()) message += " (did you mean '" + guess + "'?)";
    message += "; known profiles: " + join(known_names(profiles), ", ");
    throw std::invalid_argument(message);
  }
  const Profile& forced = *it;
  const std::string& device = forced.match.requires_device;
  if (!device.empty() && !device_present(device, hw)) {
    std::vector<Profile> cpu_profiles;
    for (const Profile& p : profiles) {
      if (p.device == "cpu") cpu_profiles.push_back(p);
    }
    if (cpu_profiles.empty()) {
      throw std::runtime_error("profile '" + forced.name + "' " + device_missing_message(device) +
                               ", and there is no CPU profile to fall back to");
    }
    const Profile& fallback = select_profile(cpu_profiles, hw, nullptr);
    warn("profile '" + forced.name + "' " + device_missing_message(device) +
         "; falling back to CPU profile '" + fallback.name + "'");
    return fallback;
  }
  for (const std::string& unmet : unmet_requirements(forced, hw)) {
    warn("profile '" + forced.name + "' is used as requested although it " + unmet);
  }
  return forced;
}

Profile resolve_profile(const fs::path& dir, const HardwareInfo& hw,
                        std::optional<std::string> forced_name,
                        std::vector<std::string>* warnings) {
  return resolve_profile(load_profiles(dir), hw, std::move(forced_name), warnings);
}

std::string to_string(const Profile& p) {
  std::ostringstream out;
  out << "profile            " << p.name << "\n";
  out << "description        " << p.description << "\n";
  out << "device             " << p.device << "\n";
  out << "threads            " << (p.threads == 0 ? "all usable cores" : std::to_string(p.threads))
      << "\n";
  out << "memory budget      " << format_bytes(p.memory_budget_bytes) << "\n";
  out << "batch size         " << p.batch_size << "\n";
  out << "precision          " << p.default_precision << "\n";
  out << "heap               arena_max "
      << (p.malloc_arena_max == 0 ? std::string("glibc default")
                                  : std::to_string(p.malloc_arena_max))
      << ", mmap_threshold "
      << (p.mmap_threshold_bytes == 0 ? std::string("glibc default")
                                      : format_bytes(p.mmap_threshold_bytes))
      << ", trim " << (p.trim_heap ? "yes" : "no") << "\n";
  for (const std::string& c : component_names()) {
    out << "  " << c << std::string(c.size() < 17 ? 17 - c.size() : 1, ' ') << "priority "
        << p.priority(c) << ", precision " << p.precision(c) << "\n";
  }
  out << "match              min_cores " << p.match.min_cores << ", min_memory "
      << format_bytes(p.match.min_memory_bytes) << ", cpu_flags ["
      << join(p.match.required_cpu_flags, ", ") << "]";
  if (!p.match.requires_device.empty()) out << ", device " << p.match.requires_device;
  out << "\n";
  if (!p.source.empty()) out << "file               " << p.source.string() << "\n";
  return out.str();
}

}  // namespace neat::hardware
