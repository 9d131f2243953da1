// neat/hardware/detect.hpp: what this machine offers (cores, CPU features, caches, memory,
// container limits, accelerators), read from the operating system.
//
// Invariant: every value is measured; nothing is assumed. A value the system does not expose
// stays 0, false or std::nullopt and is printed as "not available", never replaced by a guess.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace neat::hardware {

struct HardwareInfo {
  std::string cpu_model;   // e.g. "Intel(R) Xeon(R) Processor"; "" when not exposed
  int logical_cores = 0;   // online logical CPUs (hardware threads); 0 = unknown
  int physical_cores = 0;  // distinct (package, core) pairs; 0 = unknown (some VMs, ARM)
  int affinity_cores = 0;  // CPUs this process may run on (sched_getaffinity); 0 = unknown

  // CPU features, from /proc/cpuinfo flags (or the compiler's runtime CPU check).
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  bool avx_vnni = false;
  bool fma = false;
  std::vector<std::string> cpu_flags;  // every flag the kernel lists, sorted

  // Cache sizes of cpu0, in bytes; 0 = not exposed.
  std::size_t l1d_bytes = 0;
  std::size_t l2_bytes = 0;
  std::size_t l3_bytes = 0;

  std::uint64_t ram_bytes = 0;            // MemTotal; 0 = unknown
  std::uint64_t available_ram_bytes = 0;  // MemAvailable at detection time; 0 = unknown

  // Container limits (cgroup v2 cpu.max / memory.max, or v1 cfs quota / limit_in_bytes), the
  // tightest along the process's cgroup path; std::nullopt = no limit set or no cgroup found.
  std::optional<double> cgroup_cpu_limit;            // in CPUs, e.g. 1.5
  std::optional<std::uint64_t> cgroup_memory_limit;  // in bytes

  // NVIDIA GPUs as reported by `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader`
  // ("NVIDIA H100 80GB HBM3, 81559 MiB"; several GPUs joined by "; "); std::nullopt when
  // nvidia-smi is absent, fails or lists no GPU.
  std::optional<std::string> nvidia_gpu;
  // Apple silicon chip name (sysctl machdep.cpu.brand_string, e.g. "Apple M2"); macOS only.
  std::optional<std::string> apple_silicon;

  // Threads worth running: the smallest of logical cores, the affinity mask and the cgroup CPU
  // limit (rounded up). At least 1.
  int usable_cores() const;
  // Bytes this process may use: the smaller of RAM and the cgroup memory limit; 0 if neither
  // is known.
  std::uint64_t usable_memory() const;
  // True when the CPU has `flag` (a /proc/cpuinfo name such as "avx2", "avx512_bf16"). The named
  // booleans above count even when cpu_flags is empty (synthetic values in tests).
  bool has_cpu_flag(std::string_view flag) const;
};

// Reads this machine's hardware: /proc/cpuinfo, /sys/devices/system/cpu, /proc/meminfo,
// cgroup v2 and v1 files, nvidia-smi if installed, sysctl on macOS. Never throws; unreadable
// sources leave their fields unknown. Runs nvidia-smi (if present), which takes up to a second.
HardwareInfo detect_hardware();

// Resolves `binary` as execvp(3) would: as given when it contains a '/', else the first
// directory of $PATH (default "/usr/local/bin:/usr/bin:/bin" when unset; an empty entry is the
// current directory) holding an executable file of that name. Empty when none is found.
std::string find_executable(const std::string& binary);

// Whether an executable file `name` is found by find_executable (nvidia-smi, gnuplot, zpaq, ...).
bool executable_on_path(const std::string& name);

// Multi-line, human-readable report (for `neat hw`); unknown values read "not available".
std::string to_string(const HardwareInfo& info);

// JSON form for reports; unknown values are null. Enables `nlohmann::json j = info;`.
void to_json(nlohmann::json& j, const HardwareInfo& info);

}  // namespace neat::hardware
