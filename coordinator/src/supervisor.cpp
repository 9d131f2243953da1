// Supervisor: control-plane phases of a run (see supervisor.hpp).
#include "neat/coordinator/supervisor.hpp"

#include <spdlog/spdlog.h>

namespace neat::coordinator {

using Clock = std::chrono::steady_clock;

nlohmann::json RunOutcome::to_json() const {
  nlohmann::json comps = nlohmann::json::object();
  for (const auto& [name, c] : components) {
    comps[name] = {{"kind", c.kind},       {"pid", c.pid},     {"done", c.done},
                   {"missing", c.missing}, {"error", c.error}, {"stats", c.stats},
                   {"summary", c.summary}};
  }
  return {{"completed", completed},
          {"interrupted", interrupted},
          {"error", error},
          {"missing", missing},
          {"wall_seconds", wall_seconds},
          {"control_rejected", control_rejected},
          {"components", comps}};
}

Supervisor::Supervisor(zmq::context_t& context, const components::PipelineSpec& spec,
                       const std::vector<std::string>& control_endpoints,
                       std::filesystem::path out_dir)
    : spec_(spec), server_(context, control_endpoints), out_dir_(std::move(out_dir)) {
  for (const auto& c : spec_.components) {
    auto& s = status_[c.name];
    s.name = c.name;
    s.kind = c.kind;
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
    if (!j.is_discarded()) s.stats = std::move(j);
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
  }
}

void Supervisor::check_heartbeats() {
  const auto now = Clock::now();
  for (auto& [name, s] : status_) {
    if (!s.registered || s.missing || !s.active) continue;
    if (now - s.last_heartbeat > spec_.heartbeat_timeout) {
      s.missing = true;
      outcome_.missing.push_back(name);
      spdlog::error(
          "coordinator: component '{}' (pid {}) missing: no heartbeat for {} ms", name, s.pid,
          std::chrono::duration_cast<std::chrono::milliseconds>(now - s.last_heartbeat).count());
      if (on_missing_) on_missing_(name);
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
    check_heartbeats();
    if (abort_on_missing_ && !outcome_.missing.empty()) {
      outcome_.error = "component '" + outcome_.missing.front() + "' missing while " + what;
      return false;
    }
    if (timeout.count() > 0 && Clock::now() > deadline) {
      outcome_.error = "timed out after " + std::to_string(timeout.count()) + " ms " + what;
      return false;
    }
    if (auto in = server_.recv(std::chrono::milliseconds(50))) handle(*in);
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
    if (auto in = server_.recv(std::chrono::milliseconds(50))) handle(*in);
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
    outcome_.control_rejected = server_.rejected();
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
