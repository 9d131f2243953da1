// Supervisor: control-plane phases of a run (see supervisor.hpp).
#include "neat/coordinator/supervisor.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <fstream>

namespace neat::coordinator {

using Clock = std::chrono::steady_clock;

nlohmann::json RunOutcome::to_json() const {
  nlohmann::json comps = nlohmann::json::object();
  for (const auto& [name, c] : components) {
    comps[name] = {{"kind", c.kind},         {"pid", c.pid},        {"done", c.done},
                   {"missing", c.missing},   {"error", c.error},    {"stats", c.stats},
                   {"restarts", c.restarts}, {"summary", c.summary}};
  }
  return {{"completed", completed},
          {"interrupted", interrupted},
          {"error", error},
          {"missing", missing},
          {"restarted", restarted},
          {"memory", memory},
          {"learning", learning},
          {"checkpoints", checkpoints},
          {"wall_seconds", wall_seconds},
          {"control_rejected", control_rejected},
          {"components", comps}};
}

Supervisor::Supervisor(zmq::context_t& context, const components::PipelineSpec& spec,
                       const std::vector<std::string>& control_endpoints,
                       std::filesystem::path out_dir)
    : spec_(spec), server_(context, control_endpoints), out_dir_(std::move(out_dir)) {
  std::vector<config::Issue> issues;
  for (const auto& c : spec_.components) {
    auto& s = status_[c.name];
    s.name = c.name;
    s.kind = c.kind;
    if (!c.learning || c.learning.IsNull()) continue;
    for (auto& i : config::validate(c.learning, learning_schema(), spec_.file.string())) {
      i.path = "components." + c.name + ".learning" + (i.path.empty() ? "" : "." + i.path);
      issues.push_back(std::move(i));
    }
    if (!issues.empty()) continue;
    Learner l;
    l.schedule = LearningRateSchedule::from_yaml(c.learning["schedule"]);
    l.monitor = StabilityMonitor(StabilityThresholds::from_yaml(c.learning["stability"]));
    if (c.learning["keep_backups"]) l.keep_backups = c.learning["keep_backups"].as<std::size_t>();
    learners_.emplace(c.name, std::move(l));
  }
  if (!issues.empty()) throw config::ConfigError(std::move(issues));
}

config::Schema learning_schema() {
  using config::Schema;
  return Schema::map()
      .optional("schedule", LearningRateSchedule::schema(), "learning-rate schedule")
      .optional("stability", StabilityThresholds::schema(), "stability thresholds and actions")
      .optional("keep_backups", Schema::integer(1, 100).default_value("3"),
                "good parameter backups kept for rollback");
}

void Supervisor::on_update_request(ComponentStatus& s, const std::string& text) {
  auto reply = [&](const char* action, double lr, const std::string& reason) {
    server_.send(
        s.name,
        {"update_grant",
         s.name,
         nlohmann::json{{"action", action}, {"learning_rate", lr}, {"reason", reason}}.dump(),
         "",
         {},
         {}});
  };
  auto it = learners_.find(s.name);
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (it == learners_.end() || j.is_discarded()) {
    reply("discard", 0.0,
          it == learners_.end() ? "no learning block for this component" : "malformed request");
    return;
  }
  auto& l = it->second;
  ++l.steps;
  const double lr = l.schedule.at(l.steps) * l.monitor.lr_scale();
  // JSON has no NaN or Inf: a non-finite value arrives as null and is read back as NaN.
  auto number = [&](const char* key, double fallback) {
    if (!j.contains(key)) return fallback;
    return j[key].is_number() ? j[key].get<double>() : std::nan("");
  };
  StepReport r;
  r.step = j.contains("step") && j["step"].is_number_unsigned() ? j["step"].get<std::uint64_t>()
                                                                : l.steps;
  r.loss = number("loss", 0.0);
  r.grad_norm = number("grad_norm", 0.0);
  r.update_norm = lr * number("direction_norm", 0.0);
  r.param_norm = number("param_norm", 1.0);
  r.grad_cosine = number("grad_cosine", 1.0);
  if (!std::isfinite(r.grad_cosine)) r.grad_cosine = 1.0;
  const auto d = l.monitor.observe(r);
  const double granted = l.schedule.at(l.steps) * d.lr_scale;
  switch (d.action) {
    case StabilityAction::none:
    case StabilityAction::backup:
      ++l.committed;
      l.last_lr = lr;
      reply("commit", lr, d.reason);
      if (d.action == StabilityAction::backup) {
        server_.send(s.name, {"checkpoint", s.name, "", "", {}, {{"purpose", "backup"}}});
      }
      break;
    case StabilityAction::reduce_lr:
      ++l.committed;
      l.last_lr = granted;
      reply("commit", granted, d.reason);  // applied at the reduced learning rate
      break;
    case StabilityAction::rollback:
      ++l.rollbacks;
      if (l.backups.empty()) {
        ++l.discarded;
        reply("discard", granted, d.reason + " (no backup yet)");
        break;
      }
      server_.send(s.name,
                   {"restore", s.name, "", l.backups.back(), {}, {{"scope", "parameters"}}});
      reply("rollback", granted, d.reason);
      break;
  }
  if (d.action != StabilityAction::none && d.action != StabilityAction::backup) {
    spdlog::warn("coordinator: {} step {}: {} ({}); learning-rate scale {:.3g}", s.name, r.step,
                 action_name(d.action), d.reason, d.lr_scale);
  }
}

void Supervisor::handle(const bus::ControlServer::Incoming& in) {
  const auto& m = in.message;
  auto it = status_.find(m.component);
  if (it == status_.end()) {
    spdlog::warn("coordinator: message '{}' from unknown component '{}' ignored", m.type,
                 m.component);
    return;
  }
  auto& s = it->second;
  s.last_heartbeat = Clock::now();
  if (m.type == "register") {
    s.registered = true;
    if (auto p = m.fields.find("pid"); p != m.fields.end()) s.pid = std::stol(p->second);
    if (auto k = m.fields.find("kind"); k != m.fields.end() && k->second != s.kind) {
      s.error = "registered as kind '" + k->second + "', pipeline says '" + s.kind + "'";
    }
    spdlog::debug("coordinator: {} registered (pid {})", s.name, s.pid);
  } else if (m.type == "configured") {
    auto j = nlohmann::json::parse(m.text, nullptr, false);
    if (j.is_discarded()) {
      s.error = "configured: malformed JSON";
      return;
    }
    s.subscribes = j.value("subscribes", std::vector<std::string>{});
    s.publishes = j.value("publishes", std::vector<std::string>{});
    s.configured = true;
  } else if (m.type == "probe_ack") {
    auto sender = m.fields.find("sender");
    if (sender != m.fields.end()) pending_acks_.erase({s.name, m.text, sender->second});
  } else if (m.type == "stats") {
    auto j = nlohmann::json::parse(m.text, nullptr, false);
    if (j.is_discarded()) return;
    s.stats = std::move(j);
    if (on_stats_) on_stats_(s.name, s.stats);
    const auto& memory = s.stats["component"]["memory"];
    if (budget_ && memory.is_object() && memory.contains("current_bytes")) {
      auto cmd = budget_->report(s.name, memory["current_bytes"].get<std::uint64_t>(),
                                 memory.value("peak_bytes", std::uint64_t{0}));
      if (cmd) {
        spdlog::warn("coordinator: {} over its memory grant ({}): degrade '{}'", s.name,
                     cmd->reason, cmd->action);
        server_.send(s.name, {"degrade", s.name, cmd->action, "", {}, {}});
      }
    }
  } else if (m.type == "done") {
    s.done = true;
    auto j = nlohmann::json::parse(m.text, nullptr, false);
    if (!j.is_discarded()) s.summary = std::move(j);
  } else if (m.type == "error") {
    s.error = m.text;
    spdlog::error("coordinator: {} reported: {}", s.name, m.text);
  } else if (m.type == "ack") {
    if (m.text == "activate") s.active = true;
    if (m.text == "shutdown") s.active = false;
    if (m.text == "restore") s.restored = true;
  } else if (m.type == "update_request") {
    on_update_request(s, m.text);
  } else if (m.type == "snapshot" && m.fields.count("purpose") &&
             m.fields.at("purpose") == "backup") {
    if (auto it = learners_.find(s.name); it != learners_.end()) {
      auto& l = it->second;
      l.backups.push_back(m.blob);
      while (l.backups.size() > l.keep_backups) l.backups.pop_front();
      l.monitor.backup_taken();
      // On disk too, so that a restart can resume from the last good parameters.
      const auto dir = out_dir_ / "snapshots";
      std::filesystem::create_directories(dir);
      std::ofstream(dir / (s.name + ".backup.msgpack"), std::ios::binary) << m.blob;
    }
  } else if (m.type == "snapshot") {
    auto seq = nlohmann::json::parse(m.text, nullptr, false);
    if (seq.is_discarded()) seq = nlohmann::json::object();
    on_snapshot(s.name, {m.blob, std::move(seq)});
  }
}

void Supervisor::handle_safely(const bus::ControlServer::Incoming& in) {
  // A malformed report from a component is rejected and counted; it never ends the run.
  try {
    handle(in);
  } catch (const std::exception& e) {
    ++handler_errors_;
    spdlog::error("coordinator: '{}' from '{}' rejected: {}", in.message.type, in.message.component,
                  e.what());
  }
}

std::vector<std::string> Supervisor::subscribers_of(const std::string& topic) const {
  std::vector<std::string> subs;
  for (const auto& [name, s] : status_) {
    for (const auto& prefix : s.subscribes) {
      if (topic.starts_with(prefix)) {
        subs.push_back(name);
        break;
      }
    }
  }
  return subs;
}

void Supervisor::on_snapshot(const std::string& name, Snapshot snapshot) {
  ++outcome_.checkpoints;
  auto& kept = snapshots_[name];
  kept.push_back(std::move(snapshot));
  while (kept.size() > spec_.keep_snapshots) kept.pop_front();
  const auto dir = out_dir_ / "snapshots";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / (name + ".msgpack"), std::ios::binary) << kept.back().blob;
  // Retention can be trimmed up to what every subscriber of a topic has in a snapshot.
  for (const auto& [publisher, topics] : kept.back().last_seq.items()) {
    if (!status_.contains(publisher)) continue;
    for (const auto& [topic, seq_json] : topics.items()) {
      std::uint64_t up_to = seq_json.get<std::uint64_t>();
      for (const auto& sub : subscribers_of(topic)) {
        auto it = snapshots_.find(sub);
        if (it == snapshots_.end() || it->second.empty()) {
          up_to = 0;
          break;
        }
        const auto& last = it->second.front().last_seq;  // oldest kept: restores may use it
        up_to = std::min<std::uint64_t>(up_to,
                                        last.contains(publisher) && last[publisher].contains(topic)
                                            ? last[publisher][topic].get<std::uint64_t>()
                                            : 0);
      }
      auto& done = trimmed_[{publisher, topic}];
      if (up_to > done) {
        done = up_to;
        server_.send(publisher,
                     {"trim", publisher, topic, "", {}, {{"up_to", std::to_string(up_to)}}});
      }
    }
  }
}

void Supervisor::progress_recovery(ComponentStatus& r) {
  switch (r.recovery) {
    case ComponentStatus::Recovery::registering:  // waiting for the new process to register
      if (!r.registered) return;
      {
        YAML::Emitter out;
        out << spec_.component(r.name).config;
        server_.send(r.name,
                     {"configure", r.name, out.c_str(), "", {}, {{"out_dir", out_dir_.string()}}});
      }
      r.recovery = ComponentStatus::Recovery::configuring;
      return;
    case ComponentStatus::Recovery::configuring:  // then restore the last snapshot, if there is one
      if (!r.configured) return;
      if (auto it = snapshots_.find(r.name); it != snapshots_.end() && !it->second.empty()) {
        r.restored = false;
        r.restored_last_seq = it->second.back().last_seq;
        server_.send(r.name, {"restore", r.name, "", it->second.back().blob, {}, {}});
      } else {
        r.restored = true;
        r.restored_last_seq = nlohmann::json::object();
      }
      r.recovery = ComponentStatus::Recovery::restoring;
      return;
    case ComponentStatus::Recovery::restoring: {  // then re-join through the subscription
                                                  // handshake, both ways
      if (!r.restored) return;
      std::map<std::string, std::vector<std::string>> sync;  // publisher -> topics
      for (const auto& [pub, ps] : status_) {
        for (const auto& topic : ps.publishes) {
          for (const auto& sub : subscribers_of(topic)) {
            if (pub != r.name && sub != r.name) continue;
            pending_acks_.insert({sub, topic, pub});
            sync[pub].push_back(topic);
          }
        }
      }
      for (auto& [pub, topics] : sync) {
        std::sort(topics.begin(), topics.end());
        topics.erase(std::unique(topics.begin(), topics.end()), topics.end());
        server_.send(pub, {"sync", pub, "", "", topics, {}});
      }
      r.recovery = ComponentStatus::Recovery::rejoining;
      return;
    }
    case ComponentStatus::Recovery::rejoining: {
      for (const auto& [sub, topic, pub] : pending_acks_) {
        if (sub == r.name || pub == r.name) return;
      }
      for (const auto& [name, s] : status_) {
        if (s.active || name == r.name) server_.send(name, {"synced", name, "", "", {}, {}});
      }
      server_.send(r.name, {"activate", r.name, "", "", {}, {}});
      // Upstream publishers resend everything after what the snapshot had processed.
      for (const auto& [pub, ps] : status_) {
        if (pub == r.name) continue;
        for (const auto& topic : ps.publishes) {
          const auto subs = subscribers_of(topic);
          if (std::find(subs.begin(), subs.end(), r.name) == subs.end()) continue;
          std::uint64_t from = 1;
          const auto& last = r.restored_last_seq;
          if (last.contains(pub) && last[pub].contains(topic)) {
            from = last[pub][topic].get<std::uint64_t>() + 1;
          }
          server_.send(pub, {"replay", pub, topic, "", {}, {{"from", std::to_string(from)}}});
        }
      }
      spdlog::info("coordinator: {} recovered (restart {}), upstream replaying", r.name,
                   r.restarts);
      r.recovery = ComponentStatus::Recovery::none;
      return;
    }
    case ComponentStatus::Recovery::none:
      return;
  }
}

void Supervisor::maintain() {
  check_heartbeats();
  for (auto& [name, s] : status_) {
    if (s.recovery != ComponentStatus::Recovery::none) progress_recovery(s);
  }
  if (running_ && spec_.checkpoint_interval.count() > 0 && Clock::now() >= next_checkpoint_) {
    for (const auto& [name, s] : status_) {
      if (s.active && s.recovery == ComponentStatus::Recovery::none && !s.missing) {
        server_.send(name, {"checkpoint", name, "", "", {}, {}});
      }
    }
    next_checkpoint_ = Clock::now() + spec_.checkpoint_interval;
  }
}

void Supervisor::check_heartbeats() {
  const auto now = Clock::now();
  for (auto& [name, s] : status_) {
    if (!s.registered || s.missing || !s.active) continue;
    if (now - s.last_heartbeat > spec_.heartbeat_timeout) {
      spdlog::error(
          "coordinator: component '{}' (pid {}) missing: no heartbeat for {} ms", name, s.pid,
          std::chrono::duration_cast<std::chrono::milliseconds>(now - s.last_heartbeat).count());
      if (on_missing_) on_missing_(name);
      if (spec_.restart && restarter_ && s.restarts < spec_.max_restarts && restarter_(name)) {
        ++s.restarts;
        outcome_.restarted.push_back(name);
        s.registered = s.configured = s.active = s.restored = false;
        s.recovery = ComponentStatus::Recovery::registering;
        s.last_heartbeat = now;
        spdlog::warn("coordinator: restarting '{}' (restart {} of at most {})", name, s.restarts,
                     spec_.max_restarts);
        continue;
      }
      s.missing = true;
      outcome_.missing.push_back(name);
    }
  }
}

bool Supervisor::wait_until(const std::atomic<bool>& stop, std::chrono::milliseconds timeout,
                            const std::function<bool()>& ready, const std::string& what) {
  const auto deadline = Clock::now() + timeout;
  while (!ready()) {
    if (stop.load()) {
      outcome_.interrupted = true;
      outcome_.error = "interrupted while " + what;
      return false;
    }
    for (const auto& [name, s] : status_) {
      if (!s.error.empty()) {
        outcome_.error = name + ": " + s.error;
        return false;
      }
    }
    maintain();
    if (abort_on_missing_ && !outcome_.missing.empty()) {
      outcome_.error = "component '" + outcome_.missing.front() + "' missing while " + what;
      return false;
    }
    if (timeout.count() > 0 && Clock::now() > deadline) {
      outcome_.error = "timed out after " + std::to_string(timeout.count()) + " ms " + what;
      std::string late;  // the components the wait was for (ready() is per component)
      for (const auto& [name, st] : status_) {
        if (!st.registered || (what == "configuring components" && !st.configured) ||
            (what == "activating components" && !st.active)) {
          late += (late.empty() ? "" : ", ") + name;
        }
      }
      if (!late.empty()) outcome_.error += " (not yet: " + late + ")";
      return false;
    }
    if (auto in = server_.recv(std::chrono::milliseconds(50))) handle_safely(*in);
  }
  return true;
}

void Supervisor::shutdown_all() {
  for (auto& [name, s] : status_) {
    if (s.registered && !s.missing) server_.send(name, {"shutdown", name, "", "", {}, {}});
  }
  const auto deadline = Clock::now() + spec_.shutdown_timeout;
  auto all_down = [&] {
    for (const auto& [name, s] : status_) {
      if (s.registered && !s.missing && s.active) return false;
    }
    return true;
  };
  // Active components answer with final statistics and an ack; the others only needed the
  // command.
  while (!all_down() && Clock::now() < deadline) {
    if (auto in = server_.recv(std::chrono::milliseconds(50))) handle_safely(*in);
  }
  for (const auto& [name, s] : status_) {
    if (s.registered && !s.missing && s.active) {
      spdlog::warn("coordinator: {} did not acknowledge shutdown within {} ms", name,
                   spec_.shutdown_timeout.count());
    }
  }
}

RunOutcome Supervisor::run(const std::atomic<bool>& stop) {
  const auto start = Clock::now();
  auto finish = [&] {
    shutdown_all();
    outcome_.components = status_;
    outcome_.control_rejected = server_.rejected() + handler_errors_;
    if (budget_) outcome_.memory = budget_->summary();
    for (const auto& [name, l] : learners_) {
      outcome_.learning[name] = {{"steps", l.steps},
                                 {"committed", l.committed},
                                 {"discarded", l.discarded},
                                 {"rollbacks", l.rollbacks},
                                 {"backups_kept", l.backups.size()},
                                 {"last_learning_rate", l.last_lr},
                                 {"lr_scale", l.monitor.lr_scale()},
                                 {"events", l.monitor.history()}};
    }
    outcome_.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return outcome_;
  };
  auto all = [&](auto pred) {
    return [this, pred] {
      for (const auto& [n, s] : status_) {
        if (!pred(s)) return false;
      }
      return true;
    };
  };
  if (!wait_until(stop, spec_.startup_timeout,
                  all([](const ComponentStatus& s) { return s.registered; }),
                  "waiting for components to register")) {
    return finish();
  }
  for (const auto& c : spec_.components) {
    YAML::Emitter out;
    out << c.config;
    server_.send(c.name,
                 {"configure", c.name, out.c_str(), "", {}, {{"out_dir", out_dir_.string()}}});
  }
  if (!wait_until(stop, spec_.startup_timeout,
                  all([](const ComponentStatus& s) { return s.configured; }),
                  "configuring components")) {
    return finish();
  }
  // Subscription handshake: every (subscriber, topic, publisher) must see a probe.
  for (const auto& [pub, ps] : status_) {
    std::vector<std::string> probed;
    for (const auto& topic : ps.publishes) {
      bool any = false;
      for (const auto& [sub, ss] : status_) {
        for (const auto& prefix : ss.subscribes) {
          if (topic.starts_with(prefix)) {
            pending_acks_.insert({sub, topic, pub});
            any = true;
          }
        }
      }
      if (any) probed.push_back(topic);
    }
    if (!probed.empty()) server_.send(pub, {"sync", pub, "", "", probed, {}});
  }
  if (!wait_until(
          stop, spec_.startup_timeout, [this] { return pending_acks_.empty(); },
          "confirming subscriptions")) {
    for (const auto& [sub, topic, pub] : pending_acks_) {
      spdlog::error("coordinator: {} never confirmed '{}' from {}", sub, topic, pub);
    }
    return finish();
  }
  for (const auto& c : spec_.components) server_.send(c.name, {"activate", c.name, "", "", {}, {}});
  if (!wait_until(stop, spec_.startup_timeout,
                  all([](const ComponentStatus& s) { return s.active; }),
                  "activating components")) {
    return finish();
  }
  spdlog::info("coordinator: pipeline '{}' active ({} components)", spec_.name, status_.size());
  running_ = true;
  next_checkpoint_ = Clock::now() + spec_.checkpoint_interval;
  auto finished = [this] {
    for (const auto& n : spec_.finish_when) {
      if (!status_.at(n).done) return false;
    }
    return true;
  };
  outcome_.completed = wait_until(stop, std::chrono::milliseconds(0), finished, "running");
  return finish();
}

}  // namespace neat::coordinator
