// ComponentHost: the executor loop that serves control commands, bus messages and steps.
#include "neat/components/host.hpp"

#include <malloc.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>

#include <msgpack.hpp>

#include "neat/bus/control.hpp"
#include "neat/components/pipeline.hpp"
#include "neat/nn/tensor.hpp"

namespace neat::components {

namespace {

std::shared_ptr<spdlog::logger> component_logger(const std::string& name) {
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, spdlog::default_logger()->sinks().begin(),
                                                 spdlog::default_logger()->sinks().end());
  logger->set_level(spdlog::default_logger()->level());
  spdlog::register_logger(logger);
  return logger;
}

nlohmann::json node_stats_json(const bus::NodeStats& s) {
  nlohmann::json topics = nlohmann::json::object();
  for (const auto& [topic, t] : s.topics) {
    topics[topic] = {{"published", t.published},   {"published_bytes", t.published_bytes},
                     {"received", t.received},     {"received_bytes", t.received_bytes},
                     {"dropped", t.dropped},       {"rejected", t.rejected},
                     {"duplicates", t.duplicates}, {"held", t.held},
                     {"replayed", t.replayed},     {"retention_evicted", t.retention_evicted}};
  }
  nlohmann::json reasons = nlohmann::json::object();
  for (std::size_t r = 0; r < s.rejected_by_reason.size(); ++r) {
    reasons[std::string(bus::reason_name(static_cast<bus::DecodeReason>(r)))] =
        s.rejected_by_reason[r];
  }
  return {{"topics", topics},
          {"rejected_by_reason", reasons},
          {"handler_errors", s.handler_errors},
          {"probes_received", s.probes_received}};
}

// Memory of the whole process this component runs in (issue 8): the kernel's resident set and
// its high-water mark (VmRSS, VmHWM of /proc/self/status: this process only, not the children
// it waits for, such as the compressors the report runs), glibc's heap (mallinfo2) and the
// tensor bytes nn's allocator counts over all tags. Components of one process report the
// same process (same pid).
nlohmann::json process_memory_json() {
  nlohmann::json j = {{"pid", ::getpid()}};
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    for (const auto& [key, name] :
         {std::pair{"VmHWM:", "peak_rss_bytes"}, std::pair{"VmRSS:", "rss_bytes"}}) {
      if (line.rfind(key, 0) == 0) j[name] = std::stoull(line.substr(std::strlen(key))) * 1024;
    }
  }
  const struct mallinfo2 m = ::mallinfo2();
  j["heap"] = {{"arena_bytes", m.arena},
               {"mmap_bytes", m.hblkhd},
               {"in_use_bytes", m.uordblks},
               {"free_bytes", m.fordblks},
               {"releasable_bytes", m.keepcost}};
  const auto t = nn::memory_stats();
  j["tensors"] = {{"current_bytes", t.current_bytes}, {"peak_bytes", t.peak_bytes}};
  return j;
}

// The profile's heap policy; mallopt settings are process-wide (each component of an embedded
// run sets the same values). A fixed M_MMAP_THRESHOLD also stops glibc from raising it.
void apply_heap_policy(const ProfileSettings& p) {
  if (p.malloc_arena_max > 0) ::mallopt(M_ARENA_MAX, p.malloc_arena_max);
  if (p.mmap_threshold_bytes > 0) {
    ::mallopt(M_MMAP_THRESHOLD, static_cast<int>(std::min<std::uint64_t>(p.mmap_threshold_bytes,
                                                                         std::uint64_t{32} << 20)));
  }
}

// Sends heartbeats on its own DEALER until stopped.
class Heartbeat {
 public:
  Heartbeat(zmq::context_t& ctx, const HostOptions& o)
      : thread_([this, &ctx, o] {
          bus::ControlClient client(ctx, o.control_endpoint, o.name + "/heartbeat");
          bus::ControlMessage beat{"heartbeat", o.name, "",
                                   "",          {},     {{"pid", std::to_string(getpid())}}};
          while (!stop_.load()) {
            client.send(beat);
            std::unique_lock lock(mutex_);
            cv_.wait_for(lock, o.heartbeat_interval, [this] { return stop_.load(); });
          }
        }) {}
  ~Heartbeat() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace

std::string encode_snapshot(const std::string& component_state, const bus::SequenceState& seq) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(4);
  pk.pack(std::string_view("neat.snapshot/1"));
  pk.pack_bin(static_cast<std::uint32_t>(component_state.size()));
  pk.pack_bin_body(component_state.data(), static_cast<std::uint32_t>(component_state.size()));
  pk.pack(seq.next_seq);
  pk.pack(seq.last_seq);
  return {buf.data(), buf.size()};
}

std::pair<std::string, bus::SequenceState> decode_snapshot(std::string_view bytes) {
  try {
    auto handle = msgpack::unpack(bytes.data(), bytes.size());
    const auto& o = handle.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 4 ||
        o.via.array.ptr[0].as<std::string>() != "neat.snapshot/1") {
      throw std::runtime_error("not a neat snapshot");
    }
    const auto& bin = o.via.array.ptr[1];
    if (bin.type != msgpack::type::BIN) throw std::runtime_error("component state is not bin");
    bus::SequenceState seq;
    o.via.array.ptr[2].convert(seq.next_seq);
    o.via.array.ptr[3].convert(seq.last_seq);
    return {std::string(bin.via.bin.ptr, bin.via.bin.size), std::move(seq)};
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("corrupt snapshot: ") + e.what());
  }
}

namespace {
int current_niceness() {
  errno = 0;
  const int n = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
  if (n == -1 && errno != 0) throw std::system_error(errno, std::generic_category(), "getpriority");
  return n;
}
}  // namespace

int set_thread_niceness(int increment) {
  const int target = std::min(current_niceness() + increment, 19);
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), target) != 0) {
    throw std::system_error(errno, std::generic_category(),
                            "setpriority(nice " + std::to_string(target) + ")");
  }
  return current_niceness();
}

ComponentHost::ComponentHost(zmq::context_t& context, HostOptions options,
                             std::unique_ptr<Component> component)
    : context_(context), options_(std::move(options)), component_(std::move(component)) {}

int ComponentHost::run(const std::atomic<bool>& stop) {
  auto logger = component_logger(options_.name);
  bus::Node node(context_, options_.node);
  node.set_stop_flag(&stop);
  Context ctx(options_.name, node, logger);
  bus::ControlClient control(context_, options_.control_endpoint, options_.name);
  Heartbeat heartbeat(context_, options_);
  std::uint64_t grant_timeouts = 0;  // update requests that got no grant in time

  auto report = [&](std::string type, std::string text = {}, std::vector<std::string> list = {},
                    std::map<std::string, std::string> fields = {}, std::string blob = {}) {
    control.send({std::move(type), options_.name, std::move(text), std::move(blob), std::move(list),
                  std::move(fields)});
  };
  // Every tensor this component allocates on its executor thread (configure, handlers, steps)
  // is counted under its name by nn's allocator: the coordinator budgets real allocations, not
  // estimates. A component may report its own "memory" block instead (e.g. other threads).
  nn::MemoryTag memory_tag(options_.name);
  const int nice = options_.nice != 0 ? set_thread_niceness(options_.nice) : current_niceness();
  auto component_stats = [&] {
    nlohmann::json c = component_->stats();
    if (!c.is_object()) c = nlohmann::json::object();
    if (!c.contains("memory")) {
      const auto m = nn::memory_stats(options_.name);
      c["memory"] = {{"current_bytes", m.current_bytes},
                     {"peak_bytes", m.peak_bytes},
                     {"allocations", m.allocations},
                     {"source", "nn allocator, tag " + options_.name}};
    }
    return c;
  };
  auto send_stats = [&] {
    nlohmann::json j = {
        {"bus", node_stats_json(node.stats())}, {"component", component_stats()},
        {"scheduling", {{"nice", nice}}},       {"profile", ctx.profile().to_json()},
        {"process", process_memory_json()},     {"control_rejected", control.rejected()},
        {"grant_timeouts", grant_timeouts}};
    report("stats", j.dump());
  };

  // Acknowledge probes, at most every 50 ms per (topic, sender): a restarted publisher probes
  // again and must be acknowledged again.
  std::map<std::pair<std::string, std::string>, std::chrono::steady_clock::time_point> acked;
  node.on_probe([&](const std::string& topic, const std::string& sender) {
    const auto now = std::chrono::steady_clock::now();
    auto [it, fresh] = acked.try_emplace({topic, sender}, now);
    if (!fresh && now - it->second < std::chrono::milliseconds(50)) return;
    it->second = now;
    report("probe_ack", topic, {}, {{"sender", sender}});
  });

  report("register", "", {}, {{"kind", options_.kind}, {"pid", std::to_string(getpid())}});
  bool configured = false, active = false, finish_reported = false, shutting_down = false;
  std::vector<std::string> probe_topics;
  auto next_probe = std::chrono::steady_clock::now();
  auto next_stats = std::chrono::steady_clock::now() + options_.stats_interval;
  bool want_step = false;
  std::deque<bus::ControlMessage> pending;  // commands that arrived during an update request

  // Test-time learning: send the candidate step's metrics, wait for the grant; other commands
  // that arrive meanwhile are kept, in order, for the loop below.
  ctx.set_update_requester([&](const UpdateRequest& r) {
    report("update_request", nlohmann::json{{"step", r.step},
                                            {"loss", r.loss},
                                            {"grad_norm", r.grad_norm},
                                            {"direction_norm", r.direction_norm},
                                            {"param_norm", r.param_norm},
                                            {"grad_cosine", r.grad_cosine}}
                                 .dump());
    const auto deadline = std::chrono::steady_clock::now() + options_.grant_timeout;
    while (std::chrono::steady_clock::now() < deadline && !stop.load()) {
      auto cmd = control.recv(std::chrono::milliseconds(10));
      if (!cmd) continue;
      if (cmd->type != "update_grant") {
        pending.push_back(std::move(*cmd));
        continue;
      }
      auto g = nlohmann::json::parse(cmd->text, nullptr, false);
      if (g.is_discarded()) break;
      Grant grant;
      const auto action = g.value("action", std::string("discard"));
      grant.action = action == "commit"     ? Grant::Action::commit
                     : action == "rollback" ? Grant::Action::rollback
                                            : Grant::Action::discard;
      grant.learning_rate = g.value("learning_rate", 0.0);
      grant.reason = g.value("reason", std::string());
      return grant;
    }
    ++grant_timeouts;
    return Grant{Grant::Action::discard, 0.0, "no grant within the timeout"};
  });

  auto handle = [&](bus::ControlMessage& cmd) {
    const auto& t = cmd.type;
    if (t == "configure") {
      try {
        if (!cmd.fields["out_dir"].empty()) options_.out_dir = cmd.fields["out_dir"];
        ctx.set_out_dir(options_.out_dir);
        YAML::Node config = YAML::Load(cmd.text);
        ctx.set_profile(take_profile_settings(config));
        apply_heap_policy(ctx.profile());
        component_->configure(config, ctx);
        configured = true;
        nlohmann::json j = {{"subscribes", node.subscriptions()},
                            {"publishes", component_->publishes()}};
        report("configured", j.dump());
      } catch (const std::exception& e) {
        logger->error("configure failed: {}", e.what());
        report("error", std::string("configure failed: ") + e.what());
      }
    } else if (t == "sync") {
      probe_topics = cmd.list;
    } else if (t == "activate" && configured) {
      probe_topics.clear();
      component_->activate(ctx);
      active = true;
      report("ack", "activate");
    } else if (t == "deactivate") {
      active = false;
      component_->deactivate(ctx);
      report("ack", "deactivate");
    } else if (t == "synced") {
      probe_topics.clear();
    } else if (t == "checkpoint") {
      auto seq = node.sequence_state();
      report("snapshot", nlohmann::json(seq.last_seq).dump(), {}, cmd.fields,
             encode_snapshot(component_->snapshot(), seq));
    } else if (t == "restore") {
      auto [component_state, seq] = decode_snapshot(cmd.blob);
      component_->restore(component_state);
      // A learning rollback restores parameters only; crash recovery also the stream position.
      if (cmd.fields["scope"] != "parameters") node.set_sequence_state(seq);
      report("ack", "restore", {}, cmd.fields);
    } else if (t == "replay") {
      auto n = node.replay(cmd.text, std::stoull(cmd.fields["from"]));
      logger->info("replayed {} messages of '{}' from seq {}", n, cmd.text, cmd.fields["from"]);
    } else if (t == "degrade") {
      const bool done = component_->degrade(cmd.text);
      logger->warn("over memory grant: degrade '{}' {}", cmd.text,
                   done ? "applied" : "not supported by this component");
      report("ack", done ? "degrade" : "degrade_unsupported", {}, {{"action", cmd.text}});
    } else if (t == "trim") {
      node.trim(cmd.text, std::stoull(cmd.fields["up_to"]));
    } else if (t == "shutdown") {
      component_->shutdown(ctx);
      send_stats();
      report("ack", "shutdown");
      shutting_down = true;
    }
  };

  try {
    while (!stop.load() && !shutting_down) {
      while (!pending.empty() && !shutting_down) {
        auto cmd = std::move(pending.front());
        pending.pop_front();
        handle(cmd);
      }
      if (shutting_down) break;
      zmq::pollitem_t items[] = {{control.socket().handle(), 0, ZMQ_POLLIN, 0},
                                 {node.subscriber_socket().handle(), 0, ZMQ_POLLIN, 0}};
      auto timeout = std::chrono::milliseconds(want_step ? 0 : 20);
      if (!probe_topics.empty()) timeout = std::min(timeout, options_.probe_interval);
      zmq::poll(items, 2, timeout);

      if (items[0].revents & ZMQ_POLLIN) {
        if (auto cmd = control.recv(std::chrono::milliseconds(0))) handle(*cmd);
        if (shutting_down) break;
      }
      if (!probe_topics.empty() && std::chrono::steady_clock::now() >= next_probe) {
        for (const auto& topic : probe_topics) node.probe(topic);
        next_probe = std::chrono::steady_clock::now() + options_.probe_interval;
      }
      // Drain what is queued, bounded, and look at the control socket after every message so
      // that commands (activate, restore, stop) wait for one handler at most, however slow the
      // handlers are; a command kept during an update request (a rollback's restore) is
      // handled before the next message too.
      int dispatched = 0;
      while (dispatched < 256 && pending.empty() && node.dispatch_one()) {
        ++dispatched;
        if (auto cmd = control.recv(std::chrono::milliseconds(0)))
          pending.push_back(std::move(*cmd));
      }
      want_step = active && pending.empty() && !ctx.finished() && component_->step(ctx);
      // The profile's heap policy: what this batch freed goes back to the system.
      if (ctx.profile().trim_heap && (dispatched > 0 || want_step)) ::malloc_trim(0);
      if (ctx.finished() && !finish_reported) {
        finish_reported = true;
        send_stats();
        report("done", ctx.summary());
      }
      if (std::chrono::steady_clock::now() >= next_stats) {
        send_stats();
        next_stats = std::chrono::steady_clock::now() + options_.stats_interval;
      }
    }
    if (!shutting_down && configured) {
      // Stopped from outside (Ctrl-C, the launcher ending): the component still gets its
      // shutdown, e.g. to write a partial report.
      try {
        component_->shutdown(ctx);
      } catch (const std::exception& e) {
        logger->warn("shutdown after stop: {}", e.what());
      }
    }
    return 0;
  } catch (const bus::PublishInterrupted& e) {
    logger->info("{}", e.what());
    return 0;
  } catch (const std::exception& e) {
    logger->error("failed: {}", e.what());
    report("error", e.what());
    return 1;
  }
  return 0;
}

}  // namespace neat::components
