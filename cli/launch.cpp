// Launcher: broker + supervisor + embedded threads + child processes with forwarded logs.
#include "launch.hpp"
#include "builtin.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "neat/bus/broker.hpp"
#include "neat/components/host.hpp"
#include "neat/nn/tensor.hpp"

extern char** environ;

namespace neat::cli {

namespace {

std::atomic<bool> g_stop{false};

struct Child {
  std::string name;
  pid_t pid = -1;
  int out_fd = -1;
  std::thread forwarder;
};

// Copies a child's output to stderr line by line with a "[name] " prefix.
void forward_lines(int fd, std::string name) {
  std::string pending;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t pos;
    while ((pos = pending.find('\n')) != std::string::npos) {
      std::string line = "[" + name + "] " + pending.substr(0, pos + 1);
      (void)!::write(STDERR_FILENO, line.data(), line.size());
      pending.erase(0, pos + 1);
    }
  }
  if (!pending.empty()) {
    std::string line = "[" + name + "] " + pending + "\n";
    (void)!::write(STDERR_FILENO, line.data(), line.size());
  }
  ::close(fd);
}

// The progress line of `neat run` (LaunchOptions::progress).
class RunProgress {
 public:
  explicit RunProgress(std::chrono::steady_clock::time_point start)
      : start_(start), tty_(::isatty(STDERR_FILENO) == 1) {}
  void update(const nlohmann::json& stats) {
    const auto it = stats.find("component");
    if (it == stats.end() || !it->is_object() || !it->contains("progress")) return;
    const auto& p = (*it)["progress"];
    if (p.contains("items_total")) total_ = p["items_total"].get<std::uint64_t>();
    if (p.contains("items_done")) {
      done_ = p["items_done"].get<std::uint64_t>();
      bytes_ = p.value("bytes", std::uint64_t{0});
      bits_ = p.value("bits", 0.0);
    }
    draw(false);
  }
  void finish() {
    if (drawn_) draw(true);
    if (tty_ && drawn_) std::fputc('\n', stderr);
  }

 private:
  void draw(bool force) {
    const auto now = std::chrono::steady_clock::now();
    if (!force && !tty_ && now - last_ < std::chrono::seconds(10)) return;
    last_ = now;
    drawn_ = true;
    const double s = std::chrono::duration<double>(now - start_).count();
    const double eta = done_ > 0 && total_ > done_ ? s * double(total_ - done_) / double(done_) : 0;
    std::fprintf(stderr,
                 "%s[%llu/%llu items] %.1f KiB, %.3f bits/byte so far, %.1f KiB/s, ETA %.0f s%s",
                 tty_ ? "\r" : "", static_cast<unsigned long long>(done_),
                 static_cast<unsigned long long>(total_), double(bytes_) / 1024.0,
                 bytes_ ? bits_ / double(bytes_) : 0.0, s > 0 ? double(bytes_) / 1024.0 / s : 0.0,
                 eta, tty_ ? "   " : "\n");
    std::fflush(stderr);
  }
  std::chrono::steady_clock::time_point start_, last_{};
  bool tty_, drawn_ = false;
  std::uint64_t total_ = 0, done_ = 0, bytes_ = 0;
  double bits_ = 0.0;
};

Child spawn_component(const LaunchOptions& o, const std::string& name, int nice) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  std::vector<std::string> args = {o.neat_binary.string(),    "component", name,     "--pipeline",
                                   o.spec.file.string(),      "--run-id",  o.run_id, "--parent-pid",
                                   std::to_string(::getpid())};
  for (auto& a : override_args(o.overrides)) args.push_back(a);
  if (nice != 0) args.insert(args.end(), {"--nice", std::to_string(nice)});
  if (o.threads > 0) args.insert(args.end(), {"--threads", std::to_string(o.threads)});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The launcher blocks SIGINT/SIGTERM in its threads (a signal thread takes them); the child
  // starts with them unblocked.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, o.neat_binary.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error("cannot spawn " + o.neat_binary.string() + " for component '" + name +
                             "': " + std::strerror(rc));
  }
  Child c;
  c.name = name;
  c.pid = pid;
  c.out_fd = fds[0];
  c.forwarder = std::thread(forward_lines, fds[0], name);
  return c;
}

// Waits for a child up to `grace`, then SIGTERM, then SIGKILL.
void reap(Child& c, std::chrono::milliseconds grace) {
  auto wait_for = [&](std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  if (!wait_for(grace)) {
    ::kill(c.pid, SIGTERM);
    if (!wait_for(std::chrono::milliseconds(2000))) {
      spdlog::warn("launcher: {} (pid {}) ignored SIGTERM; killing", c.name, c.pid);
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, nullptr, 0);
    }
  }
  if (c.forwarder.joinable()) c.forwarder.join();
}

}  // namespace

namespace {

// Runs in whichever thread the kernel picks among those that do not block the signal: only
// threads created before install_stop_signals() (OpenBLAS's pool, started when the library
// loads) can be that thread. Async-signal-safe: an atomic store, or _exit on the second signal.
void on_stop_signal(int) {
  if (g_stop.exchange(true)) std::_Exit(130);
}

}  // namespace

std::atomic<bool>& install_stop_signals() {
  static std::once_flag once;
  std::call_once(once, [] {
    // A handler for threads started before this call (libraries' thread pools) ...
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    // ... and blocked in this thread and every thread it starts, where one waiting thread takes
    // them: no ZeroMQ call of ours is ever interrupted by EINTR.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set] {
      int sig = 0;
      while (sigwait(&set, &sig) == 0) {
        if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C: the user insists
        spdlog::warn("received {}, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
      }
    }).detach();
  });
  return g_stop;
}

std::vector<std::string> override_args(const components::PipelineOverrides& o) {
  std::vector<std::string> args;
  if (o.transport) {
    args.push_back("--transport");
    args.push_back(*o.transport == bus::Transport::tcp ? "tcp" : "ipc");
  }
  if (o.tcp_base_port) {
    args.push_back("--tcp-base-port");
    args.push_back(std::to_string(*o.tcp_base_port));
  }
  for (const auto& input : o.inputs) {
    args.push_back("--input");
    args.push_back(input);
  }
  return args;
}

coordinator::RunOutcome launch(const LaunchOptions& o, const std::atomic<bool>& stop) {
  zmq::context_t context(2);
  const auto& spec = o.spec;
  std::vector<bus::BusEndpoints> bind = {spec.endpoints(o.run_id, true)};
  if (spec.any_separate() || o.expose) bind.push_back(spec.endpoints(o.run_id, false));
  std::optional<bus::Broker> broker;
  if (!spec.external_broker) broker.emplace(context, bus::BrokerOptions{bind, spec.hwm});
  std::vector<std::string> control;
  for (const auto& b : bind) control.push_back(b.control);
  coordinator::Supervisor supervisor(context, spec, control, o.out_dir);
  if (o.profile) {
    std::map<std::string, double> priorities;
    std::map<std::string, std::string> kinds;
    for (const auto& c : spec.components) {
      const auto family = hardware::neural_family(c.kind);
      if (family.empty()) continue;
      priorities[c.name] = o.profile->priority(family);
      kinds[c.name] = family;
    }
    if (!priorities.empty()) {
      supervisor.set_memory_budget(coordinator::MemoryBudgetManager(
          o.profile->memory_budget_bytes, std::move(priorities), std::move(kinds)));
    }
  }

  if (o.threads > 0) nn::set_num_threads(o.threads);
  const auto niceness =
      o.profile ? component_niceness(spec, *o.profile) : std::map<std::string, int>{};
  auto nice_of = [&](const std::string& name) {
    const auto it = niceness.find(name);
    return it == niceness.end() ? 0 : it->second;
  };
  std::atomic<bool> stop_embedded{false};
  std::vector<std::thread> threads;
  std::vector<Child> children;
  // Whatever happens below, no thread is left running and no child outlives this function.
  struct Cleanup {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    std::vector<Child>& children;
    std::chrono::milliseconds grace;
    ~Cleanup() {
      stop = true;
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
      for (auto& c : children) reap(c, grace);
    }
  } cleanup{stop_embedded, threads, children, spec.shutdown_timeout};
  const auto& registry = cli::builtin_registry();
  for (const auto& c : spec.components) {
    if (c.process == components::Process::separate) {
      children.push_back(spawn_component(o, c.name, nice_of(c.name)));
      continue;
    }
    components::HostOptions h;
    h.name = c.name;
    h.kind = c.kind;
    h.node = spec.node_options(c.name, o.run_id, true);
    h.control_endpoint = spec.endpoints(o.run_id, true).control;
    h.heartbeat_interval = spec.heartbeat_interval;
    h.out_dir = o.out_dir;
    h.nice = nice_of(c.name);
    threads.emplace_back([&context, &registry, &stop_embedded, h, kind = c.kind]() mutable {
      components::ComponentHost host(context, h, registry.get(kind).create());
      host.run(stop_embedded);
    });
  }
  // Crash recovery: a separate component whose heartbeat stopped is spawned again.
  supervisor.set_restarter([&](const std::string& name) {
    for (auto& c : children) {
      if (c.name != name || c.pid <= 0) continue;
      ::kill(c.pid, SIGKILL);  // it may be hung rather than dead
      ::waitpid(c.pid, nullptr, 0);
      if (c.forwarder.joinable()) c.forwarder.join();
      c = spawn_component(o, name, nice_of(name));
      return true;
    }
    return false;  // embedded components share the launcher's fate
  });
  RunProgress progress(std::chrono::steady_clock::now());
  if (o.progress) {
    supervisor.on_stats(
        [&progress](const std::string&, const nlohmann::json& stats) { progress.update(stats); });
  }
  auto outcome = supervisor.run(stop);
  if (o.progress) progress.finish();
  stop_embedded = true;
  for (auto& t : threads) t.join();
  for (auto& c : children) reap(c, spec.shutdown_timeout);
  children.clear();

  std::filesystem::create_directories(o.out_dir);
  auto j = outcome.to_json();
  j["pipeline"] = spec.name;
  j["run_id"] = o.run_id;
  std::ofstream(o.out_dir / "run.json") << j.dump(2) << "\n";
  return outcome;
}

std::map<std::string, int> component_niceness(const components::PipelineSpec& spec,
                                              const hardware::Profile& profile) {
  double max_priority = 0;
  for (const auto& c : spec.components) {
    const auto family = hardware::neural_family(c.kind);
    if (!family.empty()) max_priority = std::max(max_priority, profile.priority(family));
  }
  std::map<std::string, int> out;
  for (const auto& c : spec.components) {
    const auto family = hardware::neural_family(c.kind);
    out[c.name] =
        family.empty() ? 0 : hardware::nice_for_priority(profile.priority(family), max_priority);
  }
  return out;
}

int run_component_process(const components::PipelineSpec& spec, const std::string& name,
                          const std::string& run_id, const std::atomic<bool>& stop, int nice,
                          int threads) {
  if (threads > 0) nn::set_num_threads(threads);
  const auto& c = spec.component(name);
  components::HostOptions h;
  h.name = c.name;
  h.kind = c.kind;
  h.node = spec.node_options(c.name, run_id, false);
  h.control_endpoint = spec.endpoints(run_id, false).control;
  h.heartbeat_interval = spec.heartbeat_interval;
  h.nice = nice;
  zmq::context_t context(1);
  components::ComponentHost host(context, h, cli::builtin_registry().get(c.kind).create());
  return host.run(stop);
}

}  // namespace neat::cli
