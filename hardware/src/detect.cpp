// Hardware detection from /proc, /sys, cgroup files, nvidia-smi and (macOS) sysctl.
// Each reader fills only what it could read; a missing source leaves the field unknown.
#include "neat/hardware/detect.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "neat/config/bytes.hpp"

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif
#include <unistd.h>

namespace neat::hardware {
namespace {

namespace fs = std::filesystem;

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

std::optional<std::string> read_text(const fs::path& file) {
  std::ifstream in(file);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::optional<std::uint64_t> to_u64(const std::string& text) {
  const std::string t = trim(text);
  if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  errno = 0;
  const unsigned long long v = std::strtoull(t.c_str(), nullptr, 10);
  if (errno == ERANGE) return std::nullopt;
  return static_cast<std::uint64_t>(v);
}

// "48K", "2048K", "32M" (sysfs cache size) -> bytes.
std::size_t sysfs_size(const std::string& text) {
  std::string t = trim(text);
  if (t.empty()) return 0;
  std::size_t factor = 1;
  const char unit = t.back();
  if (unit == 'K') factor = 1024;
  if (unit == 'M') factor = std::size_t{1024} * 1024;
  if (unit == 'G') factor = std::size_t{1024} * 1024 * 1024;
  if (factor != 1) t.pop_back();
  const std::optional<std::uint64_t> v = to_u64(t);
  return v ? static_cast<std::size_t>(*v) * factor : 0;
}

void read_cpuinfo(HardwareInfo& info) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) return;
  std::string line;
  int processors = 0;
  std::set<std::pair<std::string, std::string>> cores;  // (physical id, core id)
  std::string physical_id;
  std::set<std::string> flags;
  bool flags_read = false;
  while (std::getline(in, line)) {
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(std::string_view(line).substr(0, colon));
    const std::string value = trim(std::string_view(line).substr(colon + 1));
    if (key == "processor") {
      ++processors;
    } else if (key == "model name" && info.cpu_model.empty()) {
      info.cpu_model = value;
    } else if (key == "physical id") {
      physical_id = value;
    } else if (key == "core id") {
      cores.emplace(physical_id, value);
    } else if ((key == "flags" || key == "Features") && !flags_read) {
      std::istringstream words(value);
      std::string w;
      while (words >> w) flags.insert(w);
      flags_read = true;
    }
  }
  info.logical_cores = processors;
  info.physical_cores = static_cast<int>(cores.size());
  info.cpu_flags.assign(flags.begin(), flags.end());
}

// Physical cores from sysfs topology when /proc/cpuinfo has no core ids (e.g. aarch64).
int sysfs_physical_cores() {
  std::set<std::pair<std::string, std::string>> cores;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/devices/system/cpu", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < 4 || name.compare(0, 3, "cpu") != 0 ||
        name.find_first_not_of("0123456789", 3) != std::string::npos) {
      continue;
    }
    const auto package = read_text(entry.path() / "topology/physical_package_id");
    const auto core = read_text(entry.path() / "topology/core_id");
    if (!package || !core) continue;
    cores.emplace(trim(*package), trim(*core));
  }
  return static_cast<int>(cores.size());
}

void read_caches(HardwareInfo& info) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/devices/system/cpu/cpu0/cache", ec)) {
    if (entry.path().filename().string().rfind("index", 0) != 0) continue;
    const auto level = read_text(entry.path() / "level");
    const auto type = read_text(entry.path() / "type");
    const auto size = read_text(entry.path() / "size");
    if (!level || !type || !size) continue;
    const std::string l = trim(*level);
    const std::string t = trim(*type);
    const std::size_t bytes = sysfs_size(*size);
    if (l == "1" && t == "Data") info.l1d_bytes = bytes;
    if (l == "2" && t != "Instruction") info.l2_bytes = bytes;
    if (l == "3" && t != "Instruction") info.l3_bytes = bytes;
  }
}

void read_meminfo(HardwareInfo& info) {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    if (!(fields >> key >> kib)) continue;
    if (key == "MemTotal:") info.ram_bytes = kib * 1024;
    if (key == "MemAvailable:") info.available_ram_bytes = kib * 1024;
  }
}

// Cgroup directories of this process, from /proc/self/cgroup: for v2 the "0::" entry, for v1
// the entry whose controller list contains `controller`. Returns the path inside the hierarchy.
std::optional<std::string> cgroup_path(std::string_view controller) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t a = line.find(':');
    const std::size_t b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    if (controller.empty()) {
      if (line.compare(0, a, "0") == 0 && controllers.empty()) return path;
      continue;
    }
    std::istringstream list(controllers);
    std::string c;
    while (std::getline(list, c, ',')) {
      if (c == controller) return path;
    }
  }
  return std::nullopt;
}

// `file` in the process's cgroup directory under `mount` and in each ancestor up to `mount`.
// A container usually sees its own cgroup as the root, so the root is always included.
std::vector<fs::path> cgroup_candidates(const fs::path& mount,
                                        const std::optional<std::string>& sub,
                                        const std::string& file) {
  std::vector<fs::path> out;
  if (sub) {
    const std::size_t root_length = mount.string().size();
    for (fs::path dir = mount / fs::path(*sub).relative_path(); dir.string().size() > root_length;
         dir = dir.parent_path()) {
      out.push_back(dir / file);
    }
  }
  out.push_back(mount / file);
  return out;
}

template <class T>
void keep_smaller(std::optional<T>& current, T value) {
  if (!current || value < *current) current = value;
}

void read_cgroup_limits(HardwareInfo& info) {
  // v2: unified hierarchy at /sys/fs/cgroup (or /sys/fs/cgroup/unified on hybrid systems).
  const std::optional<std::string> v2 = cgroup_path("");
  for (const fs::path& mount : {fs::path("/sys/fs/cgroup"), fs::path("/sys/fs/cgroup/unified")}) {
    for (const fs::path& file : cgroup_candidates(mount, v2, "cpu.max")) {
      const auto text = read_text(file);
      if (!text) continue;
      std::istringstream fields(*text);
      std::string quota, period;
      if (!(fields >> quota >> period) || quota == "max") continue;
      const auto q = to_u64(quota);
      const auto p = to_u64(period);
      if (q && p && *p > 0) keep_smaller(info.cgroup_cpu_limit, double(*q) / double(*p));
    }
    for (const fs::path& file : cgroup_candidates(mount, v2, "memory.max")) {
      const auto text = read_text(file);
      if (!text || trim(*text) == "max") continue;
      if (const auto v = to_u64(*text)) keep_smaller(info.cgroup_memory_limit, *v);
    }
  }
  // v1: separate cpu and memory hierarchies. "No limit" reads -1 (cpu) or a huge page-rounded
  // number near 2^63 (memory).
  const std::optional<std::string> v1_cpu = cgroup_path("cpu");
  for (const fs::path& mount :
       {fs::path("/sys/fs/cgroup/cpu"), fs::path("/sys/fs/cgroup/cpu,cpuacct")}) {
    for (const fs::path& quota_file : cgroup_candidates(mount, v1_cpu, "cpu.cfs_quota_us")) {
      const auto quota = read_text(quota_file);
      const auto period = read_text(quota_file.parent_path() / "cpu.cfs_period_us");
      if (!quota || !period) continue;
      const auto q = to_u64(*quota);  // "-1" does not parse: no limit
      const auto p = to_u64(*period);
      if (q && p && *p > 0) keep_smaller(info.cgroup_cpu_limit, double(*q) / double(*p));
    }
  }
  const std::optional<std::string> v1_memory = cgroup_path("memory");
  constexpr std::uint64_t kUnlimited = std::uint64_t{1} << 62;
  for (const fs::path& file :
       cgroup_candidates("/sys/fs/cgroup/memory", v1_memory, "memory.limit_in_bytes")) {
    const auto text = read_text(file);
    if (!text) continue;
    const auto v = to_u64(*text);
    if (v && *v < kUnlimited) keep_smaller(info.cgroup_memory_limit, *v);
  }
}

void read_affinity(HardwareInfo& info) {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) info.affinity_cores = CPU_COUNT(&set);
#else
  (void)info;
#endif
}

void read_cpu_builtin_flags(HardwareInfo& info) {
#if defined(__x86_64__) || defined(__i386__)
  // Only when the kernel lists no flags (macOS, restricted /proc): ask the CPU itself.
  __builtin_cpu_init();
  std::vector<std::string> flags;
  if (__builtin_cpu_supports("avx2")) flags.push_back("avx2");
  if (__builtin_cpu_supports("avx512f")) flags.push_back("avx512f");
  if (__builtin_cpu_supports("fma")) flags.push_back("fma");
  if (__builtin_cpu_supports("avx512bf16")) flags.push_back("avx512_bf16");
  if (__builtin_cpu_supports("avx512vnni")) flags.push_back("avx512_vnni");
#if !defined(__clang__)
  // Clang 14 does not know this name; with it, avx_vnni stays false.
  if (__builtin_cpu_supports("avxvnni")) flags.push_back("avx_vnni");
#endif
  info.cpu_flags = flags;
#else
  (void)info;
#endif
}

}  // namespace

std::string find_executable(const std::string& binary) {
  if (binary.empty()) return {};
  if (binary.find('/') != std::string::npos) {
    return access(binary.c_str(), X_OK) == 0 ? binary : std::string{};
  }
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const auto colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + binary;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  return {};
}

bool executable_on_path(const std::string& name) { return !find_executable(name).empty(); }

namespace {

void read_nvidia(HardwareInfo& info) {
  if (!executable_on_path("nvidia-smi")) return;
  // A wedged driver can make nvidia-smi hang; coreutils' timeout bounds the wait.
  const std::string command =
      std::string(executable_on_path("timeout") ? "timeout 10 " : "") +
      "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return;
  std::string output;
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), static_cast<int>(buf.size()), pipe) != nullptr) {
    output += buf.data();
  }
  const int status = pclose(pipe);
  if (status != 0) return;
  std::istringstream lines(output);
  std::string line;
  std::string joined;
  while (std::getline(lines, line)) {
    line = trim(line);
    if (line.empty()) continue;
    if (!joined.empty()) joined += "; ";
    joined += line;
  }
  if (!joined.empty()) info.nvidia_gpu = joined;
}

#if defined(__APPLE__)
std::optional<std::string> sysctl_string(const char* name) {
  std::size_t size = 0;
  if (sysctlbyname(name, nullptr, &size, nullptr, 0) != 0 || size == 0) return std::nullopt;
  std::string value(size, '\0');
  if (sysctlbyname(name, value.data(), &size, nullptr, 0) != 0) return std::nullopt;
  value.resize(std::strlen(value.c_str()));
  return value;
}

std::optional<std::int64_t> sysctl_int(const char* name) {
  std::int64_t value = 0;
  std::size_t size = sizeof(value);
  if (sysctlbyname(name, &value, &size, nullptr, 0) != 0) return std::nullopt;
  if (size == sizeof(std::int32_t)) {
    std::int32_t v32 = 0;
    std::memcpy(&v32, &value, sizeof(v32));
    return v32;
  }
  return value;
}

void read_macos(HardwareInfo& info) {
  if (auto brand = sysctl_string("machdep.cpu.brand_string")) {
    info.cpu_model = *brand;
    if (brand->rfind("Apple", 0) == 0) info.apple_silicon = *brand;
  }
  if (auto n = sysctl_int("hw.logicalcpu")) info.logical_cores = static_cast<int>(*n);
  if (auto n = sysctl_int("hw.physicalcpu")) info.physical_cores = static_cast<int>(*n);
  if (auto n = sysctl_int("hw.memsize")) info.ram_bytes = static_cast<std::uint64_t>(*n);
  if (auto n = sysctl_int("hw.l1dcachesize")) info.l1d_bytes = static_cast<std::size_t>(*n);
  if (auto n = sysctl_int("hw.l2cachesize")) info.l2_bytes = static_cast<std::size_t>(*n);
  if (auto n = sysctl_int("hw.l3cachesize")) info.l3_bytes = static_cast<std::size_t>(*n);
}
#endif

void set_named_flags(HardwareInfo& info) {
  const std::set<std::string> flags(info.cpu_flags.begin(), info.cpu_flags.end());
  info.avx2 = flags.count("avx2") > 0;
  info.avx512f = flags.count("avx512f") > 0;
  info.avx512_bf16 = flags.count("avx512_bf16") > 0;
  info.avx512_vnni = flags.count("avx512_vnni") > 0;
  info.avx_vnni = flags.count("avx_vnni") > 0;
  info.fma = flags.count("fma") > 0;
}

std::string or_na(const std::string& s) { return s.empty() ? "not available" : s; }
std::string count_or_na(int n) { return n > 0 ? std::to_string(n) : "not available"; }
std::string bytes_or_na(std::uint64_t n) {
  return n > 0 ? neat::config::format_bytes(n) : "not available";
}

}  // namespace

int HardwareInfo::usable_cores() const {
  int n = logical_cores > 0 ? logical_cores : 0;
  if (affinity_cores > 0) n = n > 0 ? std::min(n, affinity_cores) : affinity_cores;
  if (cgroup_cpu_limit && *cgroup_cpu_limit > 0) {
    const int limit = static_cast<int>(std::ceil(*cgroup_cpu_limit));
    n = n > 0 ? std::min(n, limit) : limit;
  }
  return std::max(n, 1);
}

std::uint64_t HardwareInfo::usable_memory() const {
  std::uint64_t m = ram_bytes;
  if (cgroup_memory_limit) m = m > 0 ? std::min(m, *cgroup_memory_limit) : *cgroup_memory_limit;
  return m;
}

bool HardwareInfo::has_cpu_flag(std::string_view flag) const {
  if (flag == "avx2" && avx2) return true;
  if (flag == "avx512f" && avx512f) return true;
  if (flag == "avx512_bf16" && avx512_bf16) return true;
  if (flag == "avx512_vnni" && avx512_vnni) return true;
  if (flag == "avx_vnni" && avx_vnni) return true;
  if (flag == "fma" && fma) return true;
  return std::find(cpu_flags.begin(), cpu_flags.end(), flag) != cpu_flags.end();
}

HardwareInfo detect_hardware() {
  HardwareInfo info;
#if defined(__APPLE__)
  read_macos(info);
#else
  read_cpuinfo(info);
  if (info.physical_cores == 0) info.physical_cores = sysfs_physical_cores();
  if (info.logical_cores == 0) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n > 0) info.logical_cores = static_cast<int>(n);
  }
  read_caches(info);
  read_meminfo(info);
  read_cgroup_limits(info);
  read_affinity(info);
#endif
  if (info.cpu_flags.empty()) read_cpu_builtin_flags(info);
  set_named_flags(info);
  read_nvidia(info);
  return info;
}

std::string to_string(const HardwareInfo& info) {
  auto yes_no = [](bool b) { return b ? "yes" : "no"; };
  std::ostringstream out;
  out << "cpu model          " << or_na(info.cpu_model) << "\n";
  out << "logical cores      " << count_or_na(info.logical_cores) << "\n";
  out << "physical cores     " << count_or_na(info.physical_cores) << "\n";
  out << "affinity cores     " << count_or_na(info.affinity_cores) << "\n";
  out << "usable cores       " << info.usable_cores() << "\n";
  if (info.cpu_flags.empty()) {
    out << "cpu flags          not available\n";
  } else {
    out << "cpu flags          avx2 " << yes_no(info.avx2) << ", fma " << yes_no(info.fma)
        << ", avx512f " << yes_no(info.avx512f) << ", avx512_bf16 " << yes_no(info.avx512_bf16)
        << ", avx512_vnni " << yes_no(info.avx512_vnni) << ", avx_vnni " << yes_no(info.avx_vnni)
        << "\n";
  }
  out << "L1d cache          " << bytes_or_na(info.l1d_bytes) << "\n";
  out << "L2 cache           " << bytes_or_na(info.l2_bytes) << "\n";
  out << "L3 cache           " << bytes_or_na(info.l3_bytes) << "\n";
  out << "ram                " << bytes_or_na(info.ram_bytes) << "\n";
  out << "available ram      " << bytes_or_na(info.available_ram_bytes) << "\n";
  out << "cgroup cpu limit   ";
  if (info.cgroup_cpu_limit) {
    std::ostringstream v;
    v << *info.cgroup_cpu_limit;
    out << v.str() << " CPUs\n";
  } else {
    out << "none found\n";
  }
  out << "cgroup mem limit   "
      << (info.cgroup_memory_limit ? neat::config::format_bytes(*info.cgroup_memory_limit)
                                   : std::string("none found"))
      << "\n";
  out << "usable memory      " << bytes_or_na(info.usable_memory()) << "\n";
  out << "nvidia gpu         " << info.nvidia_gpu.value_or("not available") << "\n";
  out << "apple silicon      " << info.apple_silicon.value_or("not available") << "\n";
  return out.str();
}

void to_json(nlohmann::json& j, const HardwareInfo& info) {
  auto known_int = [](auto v) -> nlohmann::json {
    return v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr);
  };
  j = nlohmann::json::object();
  j["cpu_model"] =
      info.cpu_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(info.cpu_model);
  j["logical_cores"] = known_int(info.logical_cores);
  j["physical_cores"] = known_int(info.physical_cores);
  j["affinity_cores"] = known_int(info.affinity_cores);
  j["usable_cores"] = info.usable_cores();
  if (info.cpu_flags.empty()) {
    j["cpu_flags"] = nullptr;
  } else {
    j["cpu_flags"] = {{"avx2", info.avx2},
                      {"fma", info.fma},
                      {"avx512f", info.avx512f},
                      {"avx512_bf16", info.avx512_bf16},
                      {"avx512_vnni", info.avx512_vnni},
                      {"avx_vnni", info.avx_vnni}};
  }
  j["l1d_bytes"] = known_int(info.l1d_bytes);
  j["l2_bytes"] = known_int(info.l2_bytes);
  j["l3_bytes"] = known_int(info.l3_bytes);
  j["ram_bytes"] = known_int(info.ram_bytes);
  j["available_ram_bytes"] = known_int(info.available_ram_bytes);
  j["cgroup_cpu_limit"] =
      info.cgroup_cpu_limit ? nlohmann::json(*info.cgroup_cpu_limit) : nlohmann::json(nullptr);
  j["cgroup_memory_limit"] = info.cgroup_memory_limit ? nlohmann::json(*info.cgroup_memory_limit)
                                                      : nlohmann::json(nullptr);
  j["usable_memory_bytes"] = known_int(info.usable_memory());
  j["nvidia_gpu"] = info.nvidia_gpu ? nlohmann::json(*info.nvidia_gpu) : nlohmann::json(nullptr);
  j["apple_silicon"] =
      info.apple_silicon ? nlohmann::json(*info.apple_silicon) : nlohmann::json(nullptr);
}

}  // namespace neat::hardware
