// ComponentHost: the executor loop that serves control commands, bus messages and steps.
#include "neat/components/host.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "neat/bus/control.hpp"

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
    topics[topic] = {{"published", t.published},
                     {"published_bytes", t.published_bytes},
                     {"received", t.received},
                     {"received_bytes", t.received_bytes},
                     {"dropped", t.dropped},
                     {"rejected", t.rejected},
                     {"publisher_restarts", t.publisher_restarts}};
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

  auto report = [&](std::string type, std::string text = {}, std::vector<std::string> list = {},
                    std::map<std::string, std::string> fields = {}, std::string blob = {}) {
    control.send({std::move(type), options_.name, std::move(text), std::move(blob), std::move(list),
                  std::move(fields)});
  };
  auto send_stats = [&] {
    nlohmann::json j = {{"bus", node_stats_json(node.stats())},
                        {"component", component_->stats()},
                        {"control_rejected", control.rejected()}};
    report("stats", j.dump());
  };

  std::set<std::pair<std::string, std::string>> acked;
  node.on_probe([&](const std::string& topic, const std::string& sender) {
    if (acked.emplace(topic, sender).second) report("probe_ack", topic, {}, {{"sender", sender}});
  });

  report("register", "", {}, {{"kind", options_.kind}, {"pid", std::to_string(getpid())}});
  bool configured = false, active = false, finish_reported = false;
  std::vector<std::string> probe_topics;
  auto next_probe = std::chrono::steady_clock::now();
  auto next_stats = std::chrono::steady_clock::now() + options_.stats_interval;
  bool want_step = false;

  try {
    while (!stop.load()) {
      zmq::pollitem_t items[] = {{control.socket().handle(), 0, ZMQ_POLLIN, 0},
                                 {node.subscriber_socket().handle(), 0, ZMQ_POLLIN, 0}};
      auto timeout = std::chrono::milliseconds(want_step ? 0 : 20);
      if (!probe_topics.empty()) timeout = std::min(timeout, options_.probe_interval);
      zmq::poll(items, 2, timeout);

      if (items[0].revents & ZMQ_POLLIN) {
        auto cmd = control.recv(std::chrono::milliseconds(0));
        if (cmd) {
          const auto& t = cmd->type;
          if (t == "configure") {
            try {
              if (!cmd->fields["out_dir"].empty()) options_.out_dir = cmd->fields["out_dir"];
              ctx.set_out_dir(options_.out_dir);
              component_->configure(YAML::Load(cmd->text), ctx);
              configured = true;
              nlohmann::json j = {{"subscribes", node.subscriptions()},
                                  {"publishes", component_->publishes()}};
              report("configured", j.dump());
            } catch (const std::exception& e) {
              logger->error("configure failed: {}", e.what());
              report("error", std::string("configure failed: ") + e.what());
            }
          } else if (t == "sync") {
            probe_topics = cmd->list;
          } else if (t == "activate" && configured) {
            probe_topics.clear();
            component_->activate(ctx);
            active = true;
            report("ack", "activate");
          } else if (t == "deactivate") {
            active = false;
            component_->deactivate(ctx);
            report("ack", "deactivate");
          } else if (t == "checkpoint") {
            report("snapshot", "", {}, {}, component_->snapshot());
          } else if (t == "restore") {
            component_->restore(cmd->blob);
            report("ack", "restore");
          } else if (t == "shutdown") {
            component_->shutdown(ctx);
            send_stats();
            report("ack", "shutdown");
            return 0;
          }
        }
      }
      if (!probe_topics.empty() && std::chrono::steady_clock::now() >= next_probe) {
        for (const auto& topic : probe_topics) node.probe(topic);
        next_probe = std::chrono::steady_clock::now() + options_.probe_interval;
      }
      // Drain what is queued, bounded so that control commands stay responsive.
      for (int i = 0; i < 256 && node.dispatch_one(); ++i) {
      }
      want_step = active && !ctx.finished() && component_->step(ctx);
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
