// Hardware detection on the machine running the tests, and the derived limits.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "neat/hardware/detect.hpp"

namespace neat::hardware {
namespace {

TEST(DetectHardware, CoresMatchTheOperatingSystem) {
  const HardwareInfo info = detect_hardware();
  ASSERT_GE(info.logical_cores, 1);
  EXPECT_EQ(info.logical_cores, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  const unsigned hc = std::thread::hardware_concurrency();
  if (hc > 0) {
    // hardware_concurrency() counts either online CPUs or the affinity mask, depending on libc.
    EXPECT_GE(info.logical_cores, static_cast<int>(hc));
    EXPECT_LE(info.usable_cores(), info.logical_cores);
  }
  EXPECT_GE(info.usable_cores(), 1);
  if (info.physical_cores > 0) {
    EXPECT_LE(info.physical_cores, info.logical_cores);
  }
}

TEST(DetectHardware, MemoryIsKnownAndPositive) {
  const HardwareInfo info = detect_hardware();
  EXPECT_GT(info.ram_bytes, 0u);
  EXPECT_GT(info.usable_memory(), 0u);
  EXPECT_LE(info.usable_memory(), info.ram_bytes);
  EXPECT_LE(info.available_ram_bytes, info.ram_bytes);
}

TEST(DetectHardware, NamedFlagsAgreeWithFlagList) {
  const HardwareInfo info = detect_hardware();
  auto listed = [&](const char* f) {
    return std::find(info.cpu_flags.begin(), info.cpu_flags.end(), f) != info.cpu_flags.end();
  };
  EXPECT_EQ(info.avx2, listed("avx2"));
  EXPECT_EQ(info.avx512f, listed("avx512f"));
  EXPECT_EQ(info.fma, listed("fma"));
  EXPECT_EQ(info.avx512_bf16, listed("avx512_bf16"));
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (!info.cpu_flags.empty()) {
    EXPECT_EQ(info.avx2, __builtin_cpu_supports("avx2") != 0);
    EXPECT_EQ(info.fma, __builtin_cpu_supports("fma") != 0);
  }
#endif
}

TEST(DetectHardware, CachesAreOrderedWhenKnown) {
  const HardwareInfo info = detect_hardware();
  if (info.l1d_bytes > 0 && info.l2_bytes > 0) {
    EXPECT_LT(info.l1d_bytes, info.l2_bytes);
  }
}

TEST(DetectHardware, ToStringSaysNotAvailableInsteadOfGuessing) {
  HardwareInfo info;  // nothing known
  const std::string text = to_string(info);
  EXPECT_NE(text.find("cpu model          not available"), std::string::npos) << text;
  EXPECT_NE(text.find("ram                not available"), std::string::npos) << text;
  EXPECT_NE(text.find("nvidia gpu         not available"), std::string::npos) << text;
  EXPECT_NE(text.find("cpu flags          not available"), std::string::npos) << text;
  const std::string real = to_string(detect_hardware());
  EXPECT_NE(real.find("logical cores"), std::string::npos);
}

TEST(DetectHardware, JsonHasNullForUnknown) {
  HardwareInfo info;
  info.logical_cores = 4;
  info.ram_bytes = 1ull << 30;
  const nlohmann::json j = info;
  EXPECT_EQ(j["logical_cores"], 4);
  EXPECT_TRUE(j["physical_cores"].is_null());
  EXPECT_TRUE(j["nvidia_gpu"].is_null());
  EXPECT_EQ(j["ram_bytes"], 1ull << 30);
}

// Runs detect_hardware() with PATH pointing at a directory holding an `nvidia-smi` script.
std::optional<std::string> gpu_with_nvidia_smi(const std::string& script) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("neat_nvsmi_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir / "nvidia-smi");
    out << "#!/bin/sh\n" << script << "\n";
  }
  std::filesystem::permissions(dir / "nvidia-smi", std::filesystem::perms::owner_all);
  const char* old = std::getenv("PATH");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("PATH", (dir.string() + ":" + saved).c_str(), 1);
  const HardwareInfo info = detect_hardware();
  ::setenv("PATH", saved.c_str(), 1);
  std::filesystem::remove_all(dir);
  return info.nvidia_gpu;
}

TEST(DetectHardware, NvidiaGpuReadFromNvidiaSmi) {
  EXPECT_EQ(gpu_with_nvidia_smi("echo 'NVIDIA H100 80GB HBM3, 81559 MiB'\n"
                                "echo 'NVIDIA H100 80GB HBM3, 81559 MiB'"),
            "NVIDIA H100 80GB HBM3, 81559 MiB; NVIDIA H100 80GB HBM3, 81559 MiB");
}

TEST(DetectHardware, FailingNvidiaSmiMeansNoGpu) {
  EXPECT_EQ(gpu_with_nvidia_smi("echo 'NVIDIA-SMI has failed'; exit 9"), std::nullopt);
  EXPECT_EQ(gpu_with_nvidia_smi("exit 0"), std::nullopt);
}

TEST(HardwareInfo, UsableCoresHonoursCgroupAndAffinity) {
  HardwareInfo info;
  info.logical_cores = 16;
  EXPECT_EQ(info.usable_cores(), 16);
  info.affinity_cores = 8;
  EXPECT_EQ(info.usable_cores(), 8);
  info.cgroup_cpu_limit = 1.5;
  EXPECT_EQ(info.usable_cores(), 2);
  info.cgroup_cpu_limit = 0.2;
  EXPECT_EQ(info.usable_cores(), 1);
  EXPECT_EQ(HardwareInfo{}.usable_cores(), 1);
}

TEST(HardwareInfo, UsableMemoryHonoursCgroup) {
  HardwareInfo info;
  EXPECT_EQ(info.usable_memory(), 0u);
  info.ram_bytes = 8ull << 30;
  EXPECT_EQ(info.usable_memory(), 8ull << 30);
  info.cgroup_memory_limit = 1ull << 30;
  EXPECT_EQ(info.usable_memory(), 1ull << 30);
}

TEST(HardwareInfo, HasCpuFlagReadsNamedFlagsAndList) {
  HardwareInfo info;
  info.avx2 = true;
  info.cpu_flags = {"sse4_2"};
  EXPECT_TRUE(info.has_cpu_flag("avx2"));
  EXPECT_TRUE(info.has_cpu_flag("sse4_2"));
  EXPECT_FALSE(info.has_cpu_flag("avx512f"));
}

}  // namespace
}  // namespace neat::hardware

namespace fs = std::filesystem;

TEST(FindExecutable, ResolvesLikeExecvp) {
  // A private PATH: an executable script in a temporary directory, then a directory without it.
  const fs::path dir = fs::temp_directory_path() / ("neat-find-exe-" + std::to_string(::getpid()));
  fs::create_directories(dir / "empty");
  const fs::path tool = dir / "neat-probe-tool";
  std::ofstream(tool) << "#!/bin/sh\nexit 0\n";
  fs::permissions(tool, fs::perms::owner_all);
  const char* saved = std::getenv("PATH");
  const std::string saved_path = saved != nullptr ? saved : "";
  ::setenv("PATH", ((dir / "empty").string() + ":" + dir.string()).c_str(), 1);
  EXPECT_EQ(neat::hardware::find_executable("neat-probe-tool"), tool.string());
  EXPECT_TRUE(neat::hardware::executable_on_path("neat-probe-tool"));
  EXPECT_EQ(neat::hardware::find_executable("neat-no-such-tool"), "");
  EXPECT_FALSE(neat::hardware::executable_on_path("neat-no-such-tool"));
  EXPECT_EQ(neat::hardware::find_executable(""), "");
  // With a '/', the name is taken as given: found only if it is an executable file.
  EXPECT_EQ(neat::hardware::find_executable(tool.string()), tool.string());
  EXPECT_EQ(neat::hardware::find_executable((dir / "empty" / "x").string()), "");
  ::setenv("PATH", saved_path.c_str(), 1);
  fs::remove_all(dir);
}
