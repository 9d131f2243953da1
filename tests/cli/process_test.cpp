// End-to-end runs of the `neat` binary (NEAT_BINARY) on real files from Debian packages.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

extern char** environ;

#include "neat/mvot/idx.hpp"
#include "neat/mvot/image_io.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string neat_binary() { return NEAT_BINARY; }

fs::path source_dir() { return NEAT_SOURCE_DIR; }

fs::path fresh_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("neat-test-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

int free_port_base() {
  std::mt19937 rng(static_cast<unsigned>(::getpid()) ^
                   static_cast<unsigned>(Clock::now().time_since_epoch().count()));
  return 20000 + static_cast<int>(rng() % 2000) * 5;
}

// A child `neat` process whose stderr+stdout lines are collected with arrival times.
class NeatProcess {
 public:
  explicit NeatProcess(std::vector<std::string> args) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
    args.insert(args.begin(), neat_binary());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, args[0].c_str(), &fa, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("cannot spawn " + args[0]);
    }
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] {
      std::string pending;
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) {
        pending.append(buf, static_cast<std::size_t>(n));
        std::size_t pos;
        while ((pos = pending.find('\n')) != std::string::npos) {
          std::lock_guard lock(mutex_);
          lines_.push_back({Clock::now(), pending.substr(0, pos)});
          pending.erase(0, pos + 1);
        }
      }
      ::close(fd);
    });
  }
  ~NeatProcess() {
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    if (reader_.joinable()) reader_.join();
  }
  pid_t pid() const { return pid_; }

  /// Waits for a line containing `text`; returns its arrival time.
  std::optional<Clock::time_point> wait_for_line(const std::string& text,
                                                 std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      {
        std::lock_guard lock(mutex_);
        for (const auto& [t, line] : lines_) {
          if (line.find(text) != std::string::npos) return t;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
  }
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exited_ = true;
    if (reader_.joinable()) reader_.join();
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  std::string output() {
    std::lock_guard lock(mutex_);
    std::string all;
    for (const auto& [t, line] : lines_) all += line + "\n";
    return all;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::thread reader_;
  std::mutex mutex_;
  std::vector<std::pair<Clock::time_point, std::string>> lines_;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string demo_pipeline() { return (source_dir() / "configs/pipelines/demo.yaml").string(); }

TEST(Pipeline, DemoReportsAreIdenticalEmbeddedAndAsThreeProcessesOverIpcAndTcp) {
  ASSERT_TRUE(fs::exists("/usr/share/games/fortunes")) << "Debian package fortunes missing";
  const auto dir = fresh_dir("shapes");
  struct Shape {
    std::string name;
    std::vector<std::string> args;
  };
  const std::vector<Shape> shapes = {{"embedded", {}},
                                     {"ipc", {"--process", "separate", "--transport", "ipc"}},
                                     {"tcp",
                                      {"--process", "separate", "--transport", "tcp",
                                       "--tcp-base-port", std::to_string(free_port_base())}}};
  std::map<std::string, std::string> reports;
  for (const auto& s : shapes) {
    std::vector<std::string> args = {"launch",   demo_pipeline(),
                                     "--out",    (dir / s.name).string(),
                                     "--run-id", "shape-" + s.name + std::to_string(::getpid())};
    args.insert(args.end(), s.args.begin(), s.args.end());
    NeatProcess p(args);
    ASSERT_EQ(p.wait(), 0) << s.name << " run failed:\n" << p.output();
    reports[s.name] = read_file(dir / s.name / "report.json");
    auto run = nlohmann::json::parse(read_file(dir / s.name / "run.json"));
    EXPECT_TRUE(run["completed"].get<bool>());
    std::set<long> pids;
    for (const auto& [name, c] : run["components"].items()) pids.insert(c["pid"].get<long>());
    if (s.name == "embedded") {
      EXPECT_EQ(pids, std::set<long>{p.pid()}) << "embedded components run in the launcher";
    } else {
      EXPECT_EQ(pids.size(), 3u) << "each component is its own process";
      EXPECT_FALSE(pids.contains(p.pid()));
    }
    // lossless topics: nothing dropped, nothing rejected
    for (const auto& [name, c] : run["components"].items()) {
      for (const auto& [topic, t] : c["stats"]["bus"]["topics"].items()) {
        EXPECT_EQ(t["dropped"].get<int>(), 0) << name << " " << topic;
        EXPECT_EQ(t["rejected"].get<int>(), 0) << name << " " << topic;
      }
    }
  }
  auto report = nlohmann::json::parse(reports["embedded"]);
  EXPECT_GT(report["totals"]["documents"].get<int>(), 10);
  EXPECT_GT(report["totals"]["bytes"].get<long>(), 1000000);
  EXPECT_EQ(reports["embedded"], reports["ipc"]);
  EXPECT_EQ(reports["embedded"], reports["tcp"]);
}

// A pipeline that runs long enough to be interrupted: all of /usr/include in small chunks.
fs::path long_pipeline(const fs::path& dir) {
  auto text = read_file(demo_pipeline());
  auto at = text.find("inputs: [/usr/share/games/fortunes]");
  text.replace(at, std::string("inputs: [/usr/share/games/fortunes]").size(),
               "inputs: [/usr/include]\n      recursive: true");
  at = text.find("chunk_bytes: 4096");
  text.replace(at, std::string("chunk_bytes: 4096").size(), "chunk_bytes: 256");
  auto file = dir / "long.yaml";
  std::ofstream(file) << text;
  return file;
}

bool process_alive(long pid) { return ::kill(static_cast<pid_t>(pid), 0) == 0; }

std::vector<long> children_of(pid_t parent) {
  std::vector<long> kids;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    long ppid;
    rest >> state >> ppid;
    if (ppid == parent) kids.push_back(std::stol(name));
  }
  return kids;
}

TEST(Launch, SigkilledComponentIsReportedMissingWithinTheHeartbeatTimeout) {
  const auto dir = fresh_dir("heartbeat");
  NeatProcess launcher({"launch", long_pipeline(dir).string(), "--out", (dir / "out").string(),
                        "--process", "separate", "--run-id", "hb" + std::to_string(::getpid())});
  ASSERT_TRUE(launcher.wait_for_line("pipeline 'demo' active", std::chrono::seconds(30)))
      << launcher.output();
  auto kids = children_of(launcher.pid());
  ASSERT_EQ(kids.size(), 3u) << launcher.output();
  // Kill the middle component; find it by its command line.
  long victim = 0;
  for (auto pid : kids) {
    auto cmd = read_file(fs::path("/proc") / std::to_string(pid) / "cmdline");
    if (cmd.find("byte_stats") != std::string::npos) victim = pid;
  }
  ASSERT_NE(victim, 0);
  const auto killed_at = Clock::now();
  ::kill(static_cast<pid_t>(victim), SIGKILL);
  auto reported = launcher.wait_for_line("component 'byte_stats'", std::chrono::seconds(10));
  ASSERT_TRUE(reported) << launcher.output();
  const auto latency = std::chrono::duration_cast<std::chrono::milliseconds>(*reported - killed_at);
  // timeout 1000 ms + one heartbeat interval (200 ms) of phase + one poll slice (50 ms)
  EXPECT_LE(latency.count(), 1000 + 200 + 100) << launcher.output();
  EXPECT_NE(launcher.wait(), 0) << "a run that lost a component did not complete";
  auto run = nlohmann::json::parse(read_file(dir / "out" / "run.json"));
  EXPECT_EQ(run["missing"], nlohmann::json::array({"byte_stats"}));
  for (auto pid : kids) EXPECT_FALSE(process_alive(pid)) << "orphan " << pid;
}

TEST(Launch, SigtermStopsEveryProcessAndLeavesNoOrphans) {
  const auto dir = fresh_dir("sigterm");
  NeatProcess launcher({"launch", long_pipeline(dir).string(), "--out", (dir / "out").string(),
                        "--process", "separate", "--run-id", "st" + std::to_string(::getpid())});
  ASSERT_TRUE(launcher.wait_for_line("pipeline 'demo' active", std::chrono::seconds(30)))
      << launcher.output();
  auto kids = children_of(launcher.pid());
  ASSERT_EQ(kids.size(), 3u);
  ::kill(launcher.pid(), SIGTERM);
  EXPECT_EQ(launcher.wait(), 130) << launcher.output();
  for (auto pid : kids) EXPECT_FALSE(process_alive(pid)) << "orphan " << pid;
  auto run = nlohmann::json::parse(read_file(dir / "out" / "run.json"));
  EXPECT_TRUE(run["interrupted"].get<bool>());
}

TEST(Launch, BadPipelineIsRejectedWithPositionsAndNothingStarts) {
  const auto dir = fresh_dir("badconfig");
  auto text = read_file(demo_pipeline());
  text.replace(text.find("hwm: 1000"), 9, "hwm: -3");
  text.replace(text.find("chunk_bytes: 4096"), 17, "chunk_byts: 4096");
  const auto file = dir / "bad.yaml";
  std::ofstream(file) << text;
  NeatProcess p({"launch", file.string(), "--out", (dir / "out").string()});
  EXPECT_EQ(p.wait(), 2);
  const auto out = p.output();
  EXPECT_NE(out.find("bad.yaml:"), std::string::npos) << out;
  EXPECT_NE(out.find("bus.hwm"), std::string::npos) << out;
  EXPECT_NE(out.find("components.source.config.chunk_byts"), std::string::npos) << out;
  EXPECT_NE(out.find("did you mean 'chunk_bytes'"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir / "out" / "run.json")) << "nothing may start on a bad config";
}

TEST(Launch, UnreadableInputIsReportedAndSkipped) {
  const auto dir = fresh_dir("unreadable");
  std::ofstream(dir / "a.txt") << "hello hello";
  NeatProcess p({"run", "--out", (dir / "out").string(), (dir / "a.txt").string(),
                 (dir / "missing.txt").string()});
  ASSERT_EQ(p.wait(), 0) << p.output();
  EXPECT_NE(p.output().find("missing.txt"), std::string::npos);
  auto report = nlohmann::json::parse(read_file(dir / "out" / "report.json"));
  EXPECT_EQ(report["totals"]["documents"].get<int>(), 1);
  EXPECT_EQ(report["totals"]["bytes"].get<int>(), 11);
}

TEST(Cli, VersionAndHelpWork) {
  NeatProcess v({"--version"});
  EXPECT_EQ(v.wait(), 0);
  EXPECT_NE(v.output().find("neat 0."), std::string::npos);
  for (const char* sub :
       {"run", "launch", "component", "broker", "topic", "hw", "check", "data", "schema"}) {
    NeatProcess h({sub, "--help"});
    EXPECT_EQ(h.wait(), 0) << sub;
    EXPECT_NE(h.output().find("Usage"), std::string::npos) << sub;
  }
}

TEST(Pipeline, MainJobGivesTheSameReportEmbeddedAndAsSeparateProcesses) {
  // Real inputs: the first 3 KiB of an English and a German fortune file, one C header, and a
  // Fashion-MNIST test image as a PGM item; the default pipeline (mvot, blt, t2, titans, the
  // predictor, the report) embedded and as one process per component.
  const auto dir = fresh_dir("mainjob");
  auto cut = [&](const fs::path& from, const std::string& name, std::size_t bytes) {
    auto text = read_file(from);
    text.resize(std::min(text.size(), bytes));
    std::ofstream(dir / name, std::ios::binary) << text;
    return (dir / name).string();
  };
  std::vector<std::string> inputs = {cut("/usr/share/games/fortunes/fortunes", "en.txt", 3072),
                                     cut("/usr/share/games/fortunes/de/computer", "de.txt", 3072),
                                     cut("/usr/include/stdio.h", "stdio.h", 3072)};
  const auto images =
      neat::mvot::read_idx_images("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
  neat::mvot::GrayImage image{
      28, 28, std::vector<std::uint8_t>(images.pixels.begin(), images.pixels.begin() + 784)};
  const auto pgm = neat::mvot::encode_pgm(image);
  std::ofstream(dir / "image.pgm", std::ios::binary)
      .write(reinterpret_cast<const char*>(pgm.data()), static_cast<std::streamsize>(pgm.size()));
  inputs.push_back((dir / "image.pgm").string());
  std::map<std::string, nlohmann::json> reports;
  for (const std::string shape : {"default", "multiprocess"}) {
    std::vector<std::string> args = {
        "run",
        "--pipeline",
        (source_dir() / "configs/pipelines" / (shape + ".yaml")).string(),
        "--out",
        (dir / shape).string(),
        "--run-id",
        "main-" + shape + std::to_string(::getpid())};
    args.insert(args.end(), inputs.begin(), inputs.end());
    NeatProcess p(args);
    ASSERT_EQ(p.wait(), 0) << shape << " run failed:\n" << p.output();
    reports[shape] = nlohmann::json::parse(read_file(dir / shape / "report.json"));
  }
  const auto& a = reports["default"];
  const auto& b = reports["multiprocess"];
  // Consistency of each report: bits recomputed from the logged log-probabilities, patch
  // lengths summing to the items' tokens, every item of the stream reported.
  for (const auto* r : {&a, &b}) {
    const auto& c = (*r)["totals"]["consistency"];
    EXPECT_GT(c["bits_checked"].get<int>(), 0);
    EXPECT_EQ(c["bits_mismatches"], 0);
    EXPECT_GT(c["patch_sums_checked"].get<int>(), 0);
    EXPECT_EQ(c["patch_sum_mismatches"], 0);
    EXPECT_TRUE(c["items_match"].get<bool>());
    EXPECT_EQ((*r)["totals"]["items"], 4);
    EXPECT_EQ((*r)["images"].size(), 1u);
  }
  // Same numbers in both shapes: bits per byte to 1e-6 relative, patches, detected domains.
  ASSERT_EQ(a["documents"].size(), 3u);
  ASSERT_EQ(b["documents"].size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    const auto& da = a["documents"][i];
    const auto& db = b["documents"][i];
    EXPECT_EQ(da["path"], db["path"]);
    EXPECT_EQ(da["patches"], db["patches"]);
    EXPECT_EQ(da.value("detected_domain", ""), db.value("detected_domain", ""));
    for (const auto& [variant, bpb] : da["bits_per_byte"].items()) {
      const double x = bpb.get<double>(), y = db["bits_per_byte"][variant].get<double>();
      EXPECT_NEAR(x, y, 1e-6 * x) << da["path"] << " " << variant;
      EXPECT_GT(x, 0.5);
      EXPECT_LT(x, 8.0);
    }
    EXPECT_TRUE(da["bits_per_byte"].contains("t2"));
    EXPECT_TRUE(da["bits_per_byte"].contains("titans"));  // the titans node's readouts
    EXPECT_TRUE(da["bits_per_byte"].contains("full"));
  }
  // The titans node learned under the coordinator's grants in both shapes, step for step.
  for (const auto* r : {&a, &b}) {
    const auto& titans = (*r)["run"]["stability"]["titans"];
    EXPECT_GT(titans["committed"].get<int>(), 0);
    EXPECT_EQ(titans["committed"], a["run"]["stability"]["titans"]["committed"]);
  }
  EXPECT_EQ(a["images"][0]["psnr_db"], b["images"][0]["psnr_db"]);
}

TEST(Pipeline, CtrlCStopsTheMainJobAndStillWritesAPartialReport) {
  const auto dir = fresh_dir("ctrlc");
  auto text = read_file("/usr/share/games/fortunes/fortunes");
  text.resize(std::min<std::size_t>(text.size(), 48 * 1024));  // long enough to interrupt
  std::ofstream(dir / "en.txt", std::ios::binary) << text;
  NeatProcess run({"run", "--out", (dir / "out").string(), "--run-id",
                   "ctrlc" + std::to_string(::getpid()), (dir / "en.txt").string()});
  ASSERT_TRUE(run.wait_for_line("pipeline 'default' active", std::chrono::seconds(60)))
      << run.output();
  ::kill(run.pid(), SIGINT);
  EXPECT_EQ(run.wait(), 130) << run.output();
  const auto report = nlohmann::json::parse(read_file(dir / "out" / "report.json"));
  EXPECT_TRUE(report.value("partial", false));
  EXPECT_TRUE(report.contains("totals"));
}

TEST(Cli, OpenBlasKernelsAreChosenByCpuFeatures) {
  // OpenBLAS picks kernels by CPU model and falls back to SSE3 ones on CPUs it does not know;
  // neat re-executes itself with OPENBLAS_CORETYPE chosen from the CPU's features.
  NeatProcess hw({"hw"});
  ASSERT_EQ(hw.wait(), 0);
  const auto out = hw.output();
  const auto at = out.find("blas kernels");
  ASSERT_NE(at, std::string::npos) << out;
  const auto line = out.substr(at, out.find('\n', at) - at);
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512) {
    EXPECT_TRUE(line.find("SkylakeX ") != std::string::npos ||
                line.find("Cooperlake") != std::string::npos ||
                line.find("SapphireRapids") != std::string::npos)
        << line;
  }
  EXPECT_EQ(line.find("Prescott (") == std::string::npos || !avx512, true) << line;
}

}  // namespace

namespace {

fs::path with_external_broker(const fs::path& dir) {
  auto text = read_file(demo_pipeline());
  text.replace(text.find("  transport: ipc"), 16, "  broker: external\n  transport: ipc");
  auto file = dir / "external.yaml";
  std::ofstream(file) << text;
  return file;
}

TEST(Launch, StandaloneBrokerCarriesARunWhoseBrokerIsExternal) {
  const auto dir = fresh_dir("external");
  const auto pipeline = with_external_broker(dir).string();
  const std::string id = "ext" + std::to_string(::getpid());
  NeatProcess broker({"broker", pipeline, "--run-id", id});
  ASSERT_TRUE(broker.wait_for_line("running", std::chrono::seconds(10))) << broker.output();
  NeatProcess run({"launch", pipeline, "--run-id", id, "--out", (dir / "out").string()});
  ASSERT_EQ(run.wait(), 0) << run.output();
  auto report = nlohmann::json::parse(read_file(dir / "out" / "report.json"));
  EXPECT_GT(report["totals"]["documents"].get<int>(), 10);
  ::kill(broker.pid(), SIGTERM);
  EXPECT_EQ(broker.wait(), 0);
}

TEST(TopicTools, ListHzAndEchoObserveARunningPipeline) {
  const auto dir = fresh_dir("topic");
  const auto pipeline = long_pipeline(dir).string();
  const std::string id = "tt" + std::to_string(::getpid());
  NeatProcess launcher({"launch", pipeline, "--out", (dir / "out").string(), "--run-id", id});
  ASSERT_TRUE(launcher.wait_for_line("pipeline 'demo' active", std::chrono::seconds(30)))
      << launcher.output();

  NeatProcess hz(
      {"topic", "hz", "--pipeline", pipeline, "--run-id", id, "--window", "0.5", "-n", "1"});
  ASSERT_EQ(hz.wait(), 0) << hz.output();
  const auto table = hz.output();
  const auto row = table.find("\ninput.item");
  ASSERT_NE(row, std::string::npos) << table;
  std::istringstream fields(table.substr(row + 1));
  std::string topic;
  double rate = 0;
  fields >> topic >> rate;
  EXPECT_GT(rate, 0.0) << table;

  NeatProcess echo({"topic", "echo", "input.", "--pipeline", pipeline, "--run-id", id, "-n", "2"});
  ASSERT_EQ(echo.wait(), 0) << echo.output();
  std::istringstream lines(echo.output());
  std::string line;
  int messages = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    EXPECT_EQ(j["topic"], "input.item");
    EXPECT_EQ(j["schema"], "neat.InputChunk");
    EXPECT_EQ(j["sender"], "source");
    EXPECT_EQ(j["tensors"][0]["dtype"], "u8");
    EXPECT_TRUE(j["payload"].contains("doc_id"));
    ++messages;
  }
  EXPECT_EQ(messages, 2) << echo.output();

  NeatProcess list({"topic", "list", "--pipeline", pipeline, "--run-id", id, "--window", "0.3"});
  ASSERT_EQ(list.wait(), 0);
  EXPECT_NE(list.output().find("input.item"), std::string::npos) << list.output();
  EXPECT_NE(list.output().find("byte_stats.doc"), std::string::npos) << list.output();

  ::kill(launcher.pid(), SIGTERM);
  EXPECT_EQ(launcher.wait(), 130);
}

}  // namespace

namespace {

TEST(Docs, ConfigurationReferenceMatchesTheSchemas) {
  NeatProcess schema({"schema"});
  ASSERT_EQ(schema.wait(), 0);
  const auto doc = read_file(source_dir() / "docs/configuration.md");
  const std::string marker = "<!-- generated by `neat schema` below this line -->\n";
  const auto at = doc.find(marker);
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(doc.substr(at + marker.size()), schema.output())
      << "docs/configuration.md is out of date: regenerate it with `neat schema`";
}

}  // namespace

namespace {

fs::path recovery_pipeline(const fs::path& dir) {
  const auto file = dir / "recover.yaml";
  std::ofstream(file) << R"(name: recover
bus:
  transport: ipc
  retention: 2000000
control:
  heartbeat_interval_ms: 100
  heartbeat_timeout_ms: 1500   # ctest -j2 runs the main-job tests beside this one: a starved
  checkpoint_interval_ms: 100  # but live component must not be taken for dead
  restart: true
finish_when: [sink]
components:
  source:
    kind: source
    process: separate
    config: {inputs: [/usr/share/games/fortunes], skip_suffixes: [.dat, .u8], chunk_bytes: 8}
  byte_stats: {kind: byte_stats, process: separate}
  sink: {kind: sink, process: separate}
)";
  return file;
}

TEST(Recovery, KilledComponentIsRestartedRestoredAndEveryItemProcessedExactlyOnce) {
  const auto dir = fresh_dir("recovery");
  const auto pipeline = recovery_pipeline(dir).string();
  {
    NeatProcess clean({"launch", pipeline, "--out", (dir / "clean").string(), "--run-id",
                       "rc" + std::to_string(::getpid())});
    ASSERT_EQ(clean.wait(), 0) << clean.output();
  }
  NeatProcess run({"launch", pipeline, "--out", (dir / "crash").string(), "--run-id",
                   "rk" + std::to_string(::getpid())});
  ASSERT_TRUE(run.wait_for_line("pipeline 'recover' active", std::chrono::seconds(30)));
  std::this_thread::sleep_for(std::chrono::milliseconds(800));  // a few checkpoints in
  long victim = 0;
  for (auto pid : children_of(run.pid())) {
    if (read_file(fs::path("/proc") / std::to_string(pid) / "cmdline").find("byte_stats") !=
        std::string::npos) {
      victim = pid;
    }
  }
  ASSERT_NE(victim, 0);
  ::kill(static_cast<pid_t>(victim), SIGKILL);
  ASSERT_EQ(run.wait(), 0) << run.output();
  ASSERT_NE(run.output().find("byte_stats recovered"), std::string::npos) << run.output();

  const auto clean_report = read_file(dir / "clean" / "report.json");
  EXPECT_EQ(read_file(dir / "crash" / "report.json"), clean_report)
      << "a run with a crash gives the same report as one without";
  auto report = nlohmann::json::parse(clean_report);
  EXPECT_EQ(report["totals"]["results_received"], report["totals"]["documents"])
      << "every item processed exactly once";
  auto outcome = nlohmann::json::parse(read_file(dir / "crash" / "run.json"));
  EXPECT_EQ(outcome["restarted"], nlohmann::json::array({"byte_stats"}));
  EXPECT_TRUE(outcome["missing"].empty());
  EXPECT_GT(outcome["checkpoints"].get<int>(), 3);
  EXPECT_GT(outcome["components"]["source"]["stats"]["bus"]["topics"]["input.item"]["replayed"]
                .get<int>(),
            0);
  EXPECT_TRUE(fs::exists(dir / "crash" / "snapshots" / "byte_stats.msgpack"));
}

}  // namespace

namespace {

// A run of the adaptive byte model under the coordinator; returns run.json.
nlohmann::json learning_run(const std::string& name, const std::string& components_yaml,
                            const std::string& finish = "learner") {
  const auto dir = fresh_dir(name);
  const auto file = dir / "learn.yaml";
  std::ofstream(file) << "name: " << name << "\nfinish_when: [" << finish << "]"
                      << R"(
components:
  source:
    kind: source
    config: {inputs: [/usr/share/games/fortunes], skip_suffixes: [.dat, .u8], chunk_bytes: 4096}
)" << components_yaml;
  NeatProcess run({"launch", file.string(), "--out", (dir / "out").string(), "--run-id",
                   name + std::to_string(::getpid())});
  EXPECT_EQ(run.wait(), 0) << run.output();
  return nlohmann::json::parse(read_file(dir / "out" / "run.json"));
}

bool has_event(const nlohmann::json& events, const std::string& event, const std::string& action) {
  for (const auto& e : events) {
    for (const auto& name : e["events"]) {
      if (name == event && e["action"] == action) return true;
    }
  }
  return false;
}

TEST(TestTimeLearning, GrantedStepsLearnTheByteDistribution) {
  auto run = learning_run("ttl", R"(  learner:
    kind: online_unigram
    learning: {schedule: {kind: constant, lr: 0.2}}
)");
  const auto& learning = run["learning"]["learner"];
  const auto& stats = run["components"]["learner"]["stats"]["component"];
  EXPECT_GT(learning["steps"].get<int>(), 500);
  EXPECT_EQ(learning["committed"], learning["steps"]);
  EXPECT_EQ(learning["rollbacks"], 0);
  EXPECT_EQ(stats["committed"], learning["committed"]) << "component and coordinator agree";
  EXPECT_LT(stats["bits_per_byte"].get<double>(), 6.5) << "far below the uniform model's 8";
}

TEST(TestTimeLearning, NanGradientIsRolledBackAndParametersStayFinite) {
  auto run = learning_run("ttlnan", R"(  learner:
    kind: online_unigram
    config: {inject: {kind: nan, at_step: 120}}
    learning: {schedule: {kind: constant, lr: 0.2}}
)");
  const auto& learning = run["learning"]["learner"];
  EXPECT_GE(learning["rollbacks"].get<int>(), 1);
  EXPECT_TRUE(has_event(learning["events"], "non_finite", "rollback"));
  for (const auto& e : learning["events"]) {
    if (e["action"] == "rollback") {
      EXPECT_LE(e["lr_scale"].get<double>(), 0.1) << "the emergency cuts the rate tenfold";
    }
  }
  const auto& stats = run["components"]["learner"]["stats"]["component"];
  EXPECT_TRUE(stats["parameters_finite"].get<bool>());
  EXPECT_EQ(stats["rollbacks"], learning["rollbacks"]);
}

TEST(TestTimeLearning, LossSpikeReducesTheLearningRate) {
  auto run = learning_run("ttlspike", R"(  learner:
    kind: online_unigram
    config: {inject: {kind: loss_spike, at_step: 300}}
    learning: {schedule: {kind: constant, lr: 0.2}}
)");
  const auto& events = run["learning"]["learner"]["events"];
  bool found = false;
  for (const auto& e : events) {
    if (e["step"] == 300) {
      found = true;
      EXPECT_EQ(e["action"], "reduce_lr");
      EXPECT_EQ(e["events"][0], "loss_spike");
    }
  }
  EXPECT_TRUE(found) << events.dump();
}

TEST(GradientIsolation, AnUpdateOfOneComponentLeavesTheOthersParametersBitIdentical) {
  auto run = learning_run("isolation", R"(  learner:
    kind: online_unigram
    learning: {schedule: {kind: constant, lr: 0.2}}
  frozen:
    kind: online_unigram
    config: {output: frozen.doc}
)",
                          "learner, frozen");
  const auto& learner = run["components"]["learner"]["stats"]["component"];
  const auto& frozen = run["components"]["frozen"]["stats"]["component"];
  // Both saw every byte in the same process; only the learner was granted updates.
  EXPECT_EQ(learner["bytes"], frozen["bytes"]);
  EXPECT_GT(learner["committed"].get<int>(), 0);
  EXPECT_EQ(frozen["committed"], 0);
  EXPECT_EQ(frozen["parameter_digest"], "0000000000000000") << "still the all-zero initial logits";
  EXPECT_NE(learner["parameter_digest"], "0000000000000000");
}

}  // namespace

namespace {

TEST(TestTimeLearning, LearningPipelineGivesTheSameReportEmbeddedAndAsSeparateProcesses) {
  const auto dir = fresh_dir("learning-shapes");
  const auto pipeline = (source_dir() / "configs/pipelines/learning.yaml").string();
  NeatProcess embedded({"launch", pipeline, "--out", (dir / "embedded").string(), "--run-id",
                        "le" + std::to_string(::getpid())});
  ASSERT_EQ(embedded.wait(), 0) << embedded.output();
  NeatProcess separate({"launch", pipeline, "--out", (dir / "separate").string(), "--run-id",
                        "ls" + std::to_string(::getpid()), "--process", "separate"});
  ASSERT_EQ(separate.wait(), 0) << separate.output();
  const auto report = read_file(dir / "embedded" / "report.json");
  EXPECT_EQ(read_file(dir / "separate" / "report.json"), report)
      << "grants depend only on the metrics: the learned model is the same in every shape";
  auto j = nlohmann::json::parse(report);
  EXPECT_LT(j["totals"]["online_bits_per_byte"].get<double>(), 6.0);
}

}  // namespace
