// Hardware profiles: the shipped files load, selection follows the match rules on synthetic
// machines, device profiles are never chosen without their device, bad files are rejected
// with file:line:column.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "neat/hardware/profile.hpp"

namespace neat::hardware {
namespace {

namespace fs = std::filesystem;
using neat::config::ConfigError;
using neat::config::Issue;

const fs::path kProfilesDir = NEAT_PROFILES_DIR;

constexpr std::uint64_t kGiB = 1ull << 30;

HardwareInfo machine(int cores, std::uint64_t ram, bool avx2_fma = true) {
  HardwareInfo hw;
  hw.cpu_model = "synthetic";
  hw.logical_cores = cores;
  hw.physical_cores = cores;
  hw.ram_bytes = ram;
  hw.avx2 = avx2_fma;
  hw.fma = avx2_fma;
  return hw;
}

// A scratch directory removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    path_ = fs::temp_directory_path() /
            ("neat_profile_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
    return path_ / name;
  }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

const std::string kMinimalProfile =
    "name: tiny\n"
    "description: test\n"
    "device: cpu\n"
    "threads: 1\n"
    "memory_budget: 64MiB\n"
    "batch_size: 1\n";

TEST(LoadProfiles, ShippedProfilesAllLoad) {
  const std::vector<Profile> profiles = load_profiles(kProfilesDir);
  std::vector<std::string> names;
  for (const Profile& p : profiles) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"apple-silicon", "cpu-constrained", "cpu-default",
                                             "cpu-throughput", "cuda"}));
}

TEST(LoadProfiles, ConstrainedProfileIsOneThreadSmallBudget) {
  const Profile p = load_profile(kProfilesDir / "cpu-constrained.yaml");
  EXPECT_EQ(p.threads, 1);
  EXPECT_EQ(p.memory_budget_bytes, 384ull << 20);
  EXPECT_EQ(p.batch_size, 1);
  EXPECT_EQ(p.device, "cpu");
  EXPECT_EQ(p.match.min_cores, 1);
  EXPECT_EQ(p.match.min_memory_bytes, 0u);
  EXPECT_EQ(p.precision("blt"), "bf16");
  EXPECT_EQ(p.precision("t2"), "bf16");
  EXPECT_EQ(p.precision("titans"), "float32");
  EXPECT_EQ(p.malloc_arena_max, 2);
  EXPECT_EQ(p.mmap_threshold_bytes, 128u << 10);
  EXPECT_TRUE(p.trim_heap);
  EXPECT_DOUBLE_EQ(p.priority("blt"), 3.0);
}

TEST(LoadProfiles, CudaProfileRequiresItsDevice) {
  const Profile p = load_profile(kProfilesDir / "cuda.yaml");
  EXPECT_EQ(p.device, "cuda");
  EXPECT_EQ(p.match.requires_device, "cuda");
  EXPECT_EQ(p.precision("blt"), "bf16");
  EXPECT_EQ(p.precision("t2"), "float32");
}

TEST(LoadProfiles, MinimalProfileGetsDefaults) {
  ScratchDir dir;
  const Profile p = load_profile(dir.write("tiny.yaml", kMinimalProfile));
  EXPECT_EQ(p.default_precision, "float32");
  EXPECT_EQ(p.precision("mvot"), "float32");
  EXPECT_DOUBLE_EQ(p.priority("mvot"), 1.0);
  EXPECT_EQ(p.match.min_cores, 1);
  EXPECT_TRUE(p.match.required_cpu_flags.empty());
  EXPECT_EQ(p.thread_count(machine(6, 8 * kGiB)), 1);
}

TEST(SelectProfile, ConstrainedMachineGetsConstrainedProfile) {
  const std::vector<Profile> profiles = load_profiles(kProfilesDir);
  std::string reason;
  EXPECT_EQ(select_profile(profiles, machine(1, 1 * kGiB), &reason).name, "cpu-constrained");
  EXPECT_NE(reason.find("cpu-default (needs at least 2 usable cores"), std::string::npos) << reason;
  HardwareInfo quota = machine(32, 64 * kGiB);
  quota.cgroup_cpu_limit = 1.0;
  quota.cgroup_memory_limit = 1 * kGiB;
  EXPECT_EQ(select_profile(profiles, quota, nullptr).name, "cpu-constrained");
}

TEST(SelectProfile, OrdinaryMachineGetsDefaultProfile) {
  const std::vector<Profile> profiles = load_profiles(kProfilesDir);
  EXPECT_EQ(select_profile(profiles, machine(4, 8 * kGiB), nullptr).name, "cpu-default");
}

TEST(SelectProfile, BigMachineGetsThroughputProfile) {
  const std::vector<Profile> profiles = load_profiles(kProfilesDir);
  std::string reason;
  const Profile& p = select_profile(profiles, machine(64, 256 * kGiB), &reason);
  EXPECT_EQ(p.name, "cpu-throughput");
  EXPECT_EQ(p.thread_count(machine(64, 256 * kGiB)), 64);
  EXPECT_NE(reason.find("cuda (needs a CUDA GPU"), std::string::npos) << reason;
}

TEST(SelectProfile, BigMachineWithoutAvx2DoesNotGetThroughputProfile) {
  const std::vector<Profile> profiles = load_profiles(kProfilesDir);
  std::string reason;
  EXPECT_EQ(select_profile(profiles, machine(64, 256 * kGiB, false), &reason).name, "cpu-default");
  EXPECT_NE(reason.find("needs CPU flags this CPU lacks: avx2, fma"), std::string::npos) << reason;
}

TEST(SelectProfile, CudaNeverChosenWithoutGpu) {
  const std::vector<Profile> profiles = load_profiles(kProfilesDir);
  for (int cores : {1, 2, 8, 128}) {
    for (std::uint64_t ram : {kGiB, 16 * kGiB, 1024 * kGiB}) {
      const Profile& p = select_profile(profiles, machine(cores, ram), nullptr);
      EXPECT_EQ(p.device, "cpu") << cores << " cores, " << ram << " bytes: " << p.name;
    }
  }
}

TEST(SelectProfile, CudaChosenWhenGpuDetected) {
  const std::vector<Profile> profiles = load_profiles(kProfilesDir);
  HardwareInfo hw = machine(16, 128 * kGiB);
  hw.nvidia_gpu = "NVIDIA H100 80GB HBM3, 81559 MiB";
  EXPECT_EQ(select_profile(profiles, hw, nullptr).name, "cuda");
}

TEST(SelectProfile, AppleSiliconChosenOnlyOnApple) {
  const std::vector<Profile> profiles = load_profiles(kProfilesDir);
  HardwareInfo hw = machine(8, 16 * kGiB, false);
  EXPECT_EQ(select_profile(profiles, hw, nullptr).name, "cpu-default");
  hw.apple_silicon = "Apple M2";
  EXPECT_EQ(select_profile(profiles, hw, nullptr).name, "apple-silicon");
}

TEST(SelectProfile, NothingMatchingThrowsWithReasons) {
  ScratchDir dir;
  const Profile p = load_profile(
      dir.write("tiny.yaml", kMinimalProfile + "match:\n  min_cores: 8\n  cpu_flags: [avx512f]\n"));
  try {
    select_profile({p}, machine(2, kGiB), nullptr);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("tiny (needs at least 8 usable cores, this machine has 2"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("avx512f"), std::string::npos) << what;
  }
}

TEST(ResolveProfile, ForcedCudaWithoutGpuFallsBackToCpuWithWarning) {
  std::vector<std::string> warnings;
  const Profile p = resolve_profile(kProfilesDir, machine(4, 8 * kGiB), "cuda", &warnings);
  EXPECT_EQ(p.name, "cpu-default");
  EXPECT_EQ(p.device, "cpu");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0],
            "profile 'cuda' needs a CUDA GPU, and nvidia-smi reports none on this machine; "
            "falling back to CPU profile 'cpu-default'");
}

TEST(ResolveProfile, ForcedAppleOffAppleFallsBackToCpu) {
  std::vector<std::string> warnings;
  const Profile p = resolve_profile(kProfilesDir, machine(1, kGiB), "apple-silicon", &warnings);
  EXPECT_EQ(p.name, "cpu-constrained");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("needs Apple silicon"), std::string::npos);
}

TEST(ResolveProfile, ForcedCudaWithGpuIsUsed) {
  HardwareInfo hw = machine(16, 64 * kGiB);
  hw.nvidia_gpu = "NVIDIA A100, 40960 MiB";
  std::vector<std::string> warnings;
  EXPECT_EQ(resolve_profile(kProfilesDir, hw, "cuda", &warnings).name, "cuda");
  EXPECT_TRUE(warnings.empty());
}

TEST(ResolveProfile, ForcedCpuProfileKeptWithWarningsForUnmetRules) {
  std::vector<std::string> warnings;
  const Profile p =
      resolve_profile(kProfilesDir, machine(2, 4 * kGiB), "cpu-throughput", &warnings);
  EXPECT_EQ(p.name, "cpu-throughput");
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("needs at least 8 usable cores, this machine has 2"),
            std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[1].find("16 GiB"), std::string::npos) << warnings[1];
}

TEST(ResolveProfile, UnknownForcedNameSuggestsClosest) {
  try {
    resolve_profile(kProfilesDir, machine(2, 4 * kGiB), "cpu-defualt", nullptr);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'cpu-default'?"), std::string::npos)
        << e.what();
  }
}

TEST(ResolveProfile, AutomaticOnThisMachineNeverPicksAbsentDevice) {
  const HardwareInfo hw = detect_hardware();
  std::vector<std::string> warnings;
  const Profile p = resolve_profile(kProfilesDir, hw, std::nullopt, &warnings);
  EXPECT_TRUE(warnings.empty());
  if (!hw.nvidia_gpu) {
    EXPECT_NE(p.device, "cuda");
  }
  if (!hw.apple_silicon) {
    EXPECT_NE(p.device, "apple");
  }
  EXPECT_TRUE(unmet_requirements(p, hw).empty());
}

Issue first_issue(const fs::path& file) {
  try {
    load_profile(file);
  } catch (const ConfigError& e) {
    EXPECT_FALSE(e.issues().empty());
    return e.issues().front();
  }
  ADD_FAILURE() << "expected ConfigError for " << file;
  return {};
}

TEST(LoadProfile, BadValueRejectedWithFileLineColumn) {
  ScratchDir dir;
  const fs::path file = dir.write("bad.yaml",
                                  "name: bad\n"
                                  "description: x\n"
                                  "device: metal\n"
                                  "threads: 1\n"
                                  "memory_budget: 64MiB\n"
                                  "batch_size: 1\n");
  const Issue issue = first_issue(file);
  EXPECT_EQ(issue.str(), file.string() + ":3:9: device: 'metal' is not one of: cpu, cuda, apple");
}

TEST(LoadProfile, BadMemorySizeRejectedWithPosition) {
  ScratchDir dir;
  const fs::path file = dir.write("bad.yaml",
                                  "name: bad\n"
                                  "description: x\n"
                                  "device: cpu\n"
                                  "threads: 1\n"
                                  "memory_budget: 4 gigs\n"
                                  "batch_size: 1\n");
  const Issue issue = first_issue(file);
  EXPECT_EQ(issue.line, 5);
  EXPECT_EQ(issue.column, 16);
  EXPECT_EQ(issue.path, "memory_budget");
  EXPECT_NE(issue.message.find("unknown unit 'gigs'"), std::string::npos) << issue.message;
}

TEST(LoadProfile, TypoInNestedKeyRejectedWithSuggestion) {
  ScratchDir dir;
  const fs::path file = dir.write(
      "tiny.yaml",
      kMinimalProfile + "components:\n  blt:\n    priorty: 2\n  titan:\n    priority: 1\n");
  try {
    load_profile(file);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.issues().size(), 2u) << e.what();
    EXPECT_EQ(e.issues()[0].str(), file.string() +
                                       ":9:5: components.blt.priorty: unknown key 'priorty' "
                                       "(did you mean 'priority'?)");
    EXPECT_EQ(e.issues()[1].line, 10);
    EXPECT_EQ(e.issues()[1].path, "components.titan");
    EXPECT_NE(e.issues()[1].message.find("did you mean 'titans'?"), std::string::npos);
  }
}

TEST(LoadProfile, NonPositivePriorityRejected) {
  ScratchDir dir;
  const fs::path file =
      dir.write("tiny.yaml", kMinimalProfile + "components:\n  t2:\n    priority: 0\n");
  const Issue issue = first_issue(file);
  EXPECT_EQ(issue.line, 9);
  EXPECT_EQ(issue.path, "components.t2.priority");
  EXPECT_EQ(issue.message, "priority must be greater than 0");
}

TEST(LoadProfile, NameMustMatchFileName) {
  ScratchDir dir;
  const fs::path file = dir.write("other.yaml", kMinimalProfile);
  const Issue issue = first_issue(file);
  EXPECT_EQ(issue.line, 1);
  EXPECT_EQ(issue.column, 7);
  EXPECT_EQ(issue.path, "name");
}

TEST(LoadProfile, MissingKeysAllReported) {
  ScratchDir dir;
  const fs::path file = dir.write("tiny.yaml", "name: tiny\ndevice: cpu\n");
  try {
    load_profile(file);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    std::vector<std::string> paths;
    for (const Issue& i : e.issues()) paths.push_back(i.path);
    EXPECT_EQ(paths,
              (std::vector<std::string>{"description", "threads", "memory_budget", "batch_size"}));
  }
}

TEST(LoadProfiles, IssuesOfAllBadFilesReportedTogether) {
  ScratchDir dir;
  dir.write("a.yaml", "name: a\n");
  dir.write("b.yaml", "name: b\ndevice: [\n");
  dir.write("tiny.yaml", kMinimalProfile);
  try {
    load_profiles(dir.path());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    bool saw_a = false, saw_b = false;
    for (const Issue& i : e.issues()) {
      saw_a |= fs::path(i.file).filename() == "a.yaml";
      saw_b |= fs::path(i.file).filename() == "b.yaml";
    }
    EXPECT_TRUE(saw_a && saw_b) << e.what();
  }
}

TEST(LoadProfiles, MissingDirectoryIsAConfigError) {
  EXPECT_THROW(load_profiles("/nonexistent/neat/profiles"), ConfigError);
}

TEST(ProfileSchema, DescribeCoversEveryKey) {
  const std::string text = profile_schema().describe();
  for (const char* key :
       {"`name`", "`description`", "`device`", "`threads`", "`memory_budget`", "`batch_size`",
        "`precision`", "`components`", "`components.blt.priority`", "`components.mvot.precision`",
        "`match.min_cores`", "`match.min_memory`", "`match.cpu_flags`", "`heap.arena_max`",
        "`heap.mmap_threshold`", "`heap.trim`"}) {
    EXPECT_NE(text.find(key), std::string::npos) << key;
  }
}

TEST(ProfileSchema, DocsTableMatchesDescribe) {
  const fs::path doc = kProfilesDir / "../../docs/hardware.md";
  std::ifstream in(doc);
  ASSERT_TRUE(in) << "cannot read " << doc;
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string table = profile_schema().describe();
  EXPECT_NE(text.find(table), std::string::npos)
      << "docs/hardware.md is out of date; replace its key table with:\n"
      << table;
}

}  // namespace
}  // namespace neat::hardware

namespace neat::hardware {
namespace {

TEST(Scheduling, NiceLevelsFollowTheCfsWeightRatioOfThePriorities) {
  EXPECT_EQ(nice_for_priority(3.0, 3.0), 0);  // the top component is not slowed
  EXPECT_EQ(nice_for_priority(1.0, 3.0), 5);  // ln 3 / ln 1.25 = 4.92
  EXPECT_EQ(nice_for_priority(0.5, 3.0), 8);  // ln 6 / ln 1.25 = 8.03
  EXPECT_EQ(nice_for_priority(1e-9, 1.0), 19);
  EXPECT_THROW(nice_for_priority(0.0, 1.0), std::invalid_argument);
  EXPECT_THROW(nice_for_priority(2.0, 1.0), std::invalid_argument);
  // The shipped constrained profile: prediction (blt) first, mvot and t2 yield the most.
  const Profile p = load_profile(kProfilesDir / "cpu-constrained.yaml");
  EXPECT_LT(nice_for_priority(p.priority("titans"), p.priority("blt")),
            nice_for_priority(p.priority("mvot"), p.priority("blt")));
}

}  // namespace
}  // namespace neat::hardware

namespace neat::hardware {
namespace {

TEST(MemoryGrants, BudgetDividedByPriorityOfTheComponentsFamilies) {
  const Profile p = load_profile(kProfilesDir / "cpu-constrained.yaml");
  const auto grants = memory_grants(
      p, {{"blt", "blt"}, {"predict", "blt"}, {"t2", "t2"}, {"mvot", "mvot"}, {"source", ""}});
  ASSERT_EQ(grants.size(), 4u);  // the source has no family and no grant
  const double sum = 3.0 + 3.0 + 0.5 + 0.5;
  EXPECT_EQ(grants.at("predict"),
            static_cast<std::uint64_t>(double(p.memory_budget_bytes) * (3.0 / sum)));
  EXPECT_EQ(grants.at("t2"),
            static_cast<std::uint64_t>(double(p.memory_budget_bytes) * (0.5 / sum)));
  std::uint64_t total = 0;
  for (const auto& [name, g] : grants) total += g;
  EXPECT_LE(total, p.memory_budget_bytes);
  EXPECT_TRUE(memory_grants(p, {{"source", ""}}).empty());
}

TEST(LoadProfiles, DefaultProfileKeepsGlibcHeapDefaultsAndFloat32) {
  const Profile p = load_profile(kProfilesDir / "cpu-default.yaml");
  EXPECT_EQ(p.malloc_arena_max, 0);
  EXPECT_EQ(p.mmap_threshold_bytes, 0u);
  EXPECT_FALSE(p.trim_heap);
  for (const auto& c : component_names()) EXPECT_EQ(p.precision(c), "float32") << c;
}

}  // namespace
}  // namespace neat::hardware
