// Pipeline file schema, loading and derived endpoints.
#include "neat/components/pipeline.hpp"

#include <map>
#include <set>

#include <stdexcept>
#include "neat/config/bytes.hpp"

namespace neat::components {

using config::Schema;

config::Schema pipeline_schema() {
  auto topic = Schema::map().required("delivery", Schema::one_of({"lossless", "lossy"}),
                                      "lossless: publisher blocks, nothing dropped; lossy: "
                                      "drops allowed and counted from sequence gaps");
  auto bus =
      Schema::map()
          .optional("transport", Schema::one_of({"ipc", "tcp"}).default_value("ipc"),
                    "transport between processes (embedded components use inproc)")
          .optional("tcp_host", Schema::string().default_value("127.0.0.1"),
                    "host the broker binds for tcp")
          .optional("tcp_base_port", Schema::integer(1024, 65530).default_value("5555"),
                    "tcp ports base .. base+4 (lossless in/out, lossy in/out, control)")
          .optional("ipc_dir", Schema::string().default_value("/tmp"),
                    "directory of ipc socket files")
          .optional("broker", Schema::one_of({"embedded", "external"}).default_value("embedded"),
                    "embedded: the launcher runs the broker; external: `neat broker` "
                    "runs it and every component connects over `transport`")
          .optional("hwm", Schema::integer(1, 1000000).default_value("1000"),
                    "high-water mark, messages")
          .optional("max_message_bytes", Schema::bytes(1024, 1ull << 32).default_value("64MiB"),
                    "largest accepted message (all frames)")
          .optional("retention", Schema::integer(0, 100000000).default_value("0"),
                    "messages kept per lossless topic for replay to a restarted subscriber "
                    "(needed by control.restart)")
          .optional("topics", Schema::dict(topic),
                    "delivery policy by topic prefix (longest prefix wins; unlisted "
                    "topics are lossless)");
  auto control =
      Schema::map()
          .optional("heartbeat_interval_ms", Schema::integer(10, 60000).default_value("200"),
                    "how often each component sends a heartbeat")
          .optional("heartbeat_timeout_ms", Schema::integer(50, 600000).default_value("1000"),
                    "a component silent this long is reported missing")
          .optional("startup_timeout_ms", Schema::integer(100, 600000).default_value("20000"),
                    "limit for registration, configuration and the subscription "
                    "handshake")
          .optional("shutdown_timeout_ms", Schema::integer(100, 600000).default_value("5000"),
                    "grace before a process is sent SIGTERM, then SIGKILL")
          .optional("checkpoint_interval_ms", Schema::integer(0, 3600000).default_value("0"),
                    "snapshot every component this often (0: never)")
          .optional("keep_snapshots", Schema::integer(1, 1000).default_value("3"),
                    "snapshots kept per component (the latest also on disk)")
          .optional("restart", Schema::boolean().default_value("false"),
                    "restart a separate component whose heartbeat stops, restore its last "
                    "snapshot and replay what it missed")
          .optional("max_restarts", Schema::integer(0, 1000).default_value("3"),
                    "restarts allowed per component");
  auto component =
      Schema::map()
          .required("kind", Schema::string(), "registered component kind")
          .optional("process", Schema::one_of({"embedded", "separate"}).default_value("embedded"),
                    "embedded: a thread of the neat process; separate: its own")
          .optional("config", Schema::any(), "the kind's own settings")
          .optional("learning", Schema::any(),
                    "test-time learning: schedule, stability, keep_backups (validated by the "
                    "coordinator, see below)");
  return Schema::map()
      .required("name", Schema::string(), "pipeline name, shown in logs and reports")
      .optional("bus", bus, "broker, transport and delivery policies")
      .optional("control", control, "control-plane timing")
      .optional("log_level",
                Schema::one_of({"trace", "debug", "info", "warn", "error", "critical", "off"})
                    .default_value("info"),
                "spdlog level of every component (-v on the command line overrides)")
      .required("finish_when", Schema::list(Schema::string(), 1),
                "the run ends when all of these components report done")
      .required("components", Schema::dict(component), "components by name (the bus sender id)");
}

namespace {

config::Issue issue_at(const std::filesystem::path& file, const YAML::Node& node,
                       const std::string& path, const std::string& message) {
  const auto mark = node.Mark();
  return {file.string(), mark.line + 1, mark.column + 1, path, message};
}

}  // namespace

PipelineSpec load_pipeline(const std::filesystem::path& file, const Registry& registry) {
  // Parse errors and a missing file come back as ConfigError from load_file; the schema is
  // applied here so that pipeline-level and component-level issues are reported together.
  const YAML::Node root = config::load_file(file, Schema::any());
  std::vector<config::Issue> issues = config::validate(root, pipeline_schema(), file.string());
  // Component config blocks: checked whenever the component's kind is readable.
  if (root.IsMap() && root["components"] && root["components"].IsMap()) {
    for (const auto& c : root["components"]) {
      const auto name = c.first.as<std::string>();
      const auto kind = c.second.IsMap() ? c.second["kind"] : YAML::Node();
      if (!kind || !kind.IsScalar()) continue;
      const std::string path = "components." + name;
      if (!registry.contains(kind.as<std::string>())) {
        issues.push_back(issue_at(file, kind, path + ".kind",
                                  "unknown component kind '" + kind.as<std::string>() +
                                      "' (known: " + config::join(registry.names(), ", ") + ")"));
        continue;
      }
      const auto block = c.second["config"] ? c.second["config"] : YAML::Node(YAML::NodeType::Map);
      for (auto& i :
           config::validate(block, registry.get(kind.as<std::string>()).schema(), file.string())) {
        i.path = path + ".config" + (i.path.empty() ? "" : (i.path[0] == '[' ? "" : ".") + i.path);
        issues.push_back(std::move(i));
      }
    }
  }
  if (!issues.empty()) throw config::ConfigError(std::move(issues));

  PipelineSpec spec;
  spec.file = file;
  spec.name = root["name"].as<std::string>();
  if (const auto bus = root["bus"]) {
    if (bus["transport"]) spec.transport = bus::parse_transport(bus["transport"].as<std::string>());
    if (bus["tcp_host"]) spec.tcp_host = bus["tcp_host"].as<std::string>();
    if (bus["tcp_base_port"]) spec.tcp_base_port = bus["tcp_base_port"].as<int>();
    if (bus["ipc_dir"]) spec.ipc_dir = bus["ipc_dir"].as<std::string>();
    if (bus["broker"]) spec.external_broker = bus["broker"].as<std::string>() == "external";
    if (bus["hwm"]) spec.hwm = bus["hwm"].as<int>();
    if (bus["retention"]) spec.retention = bus["retention"].as<std::size_t>();
    if (bus["max_message_bytes"]) {
      spec.max_message_bytes = config::parse_bytes(bus["max_message_bytes"].as<std::string>());
    }
    for (const auto& t : bus["topics"]) {
      spec.policies.push_back(
          {t.first.as<std::string>(), t.second["delivery"].as<std::string>() == "lossy"
                                          ? bus::Delivery::lossy
                                          : bus::Delivery::lossless});
    }
  }
  if (const auto c = root["control"]) {
    auto ms = [&](const char* key, std::chrono::milliseconds& out) {
      if (c[key]) out = std::chrono::milliseconds(c[key].as<std::int64_t>());
    };
    ms("heartbeat_interval_ms", spec.heartbeat_interval);
    ms("heartbeat_timeout_ms", spec.heartbeat_timeout);
    ms("startup_timeout_ms", spec.startup_timeout);
    ms("shutdown_timeout_ms", spec.shutdown_timeout);
    ms("checkpoint_interval_ms", spec.checkpoint_interval);
    if (c["keep_snapshots"]) spec.keep_snapshots = c["keep_snapshots"].as<std::size_t>();
    if (c["restart"]) spec.restart = c["restart"].as<bool>();
    if (c["max_restarts"]) spec.max_restarts = c["max_restarts"].as<int>();
    if (spec.restart && spec.retention == 0) {
      issues.push_back(issue_at(file, c["restart"], "control.restart",
                                "needs bus.retention > 0 to replay what a restarted component "
                                "missed"));
    }
    if (spec.heartbeat_timeout <= spec.heartbeat_interval) {
      issues.push_back(issue_at(file, c, "control.heartbeat_timeout_ms",
                                "must be larger than heartbeat_interval_ms"));
    }
  }
  if (root["log_level"]) spec.log_level = root["log_level"].as<std::string>();
  for (const auto& c : root["components"]) {
    ComponentSpec cs;
    cs.name = c.first.as<std::string>();
    cs.kind = c.second["kind"].as<std::string>();
    cs.process = c.second["process"] && c.second["process"].as<std::string>() == "separate"
                     ? Process::separate
                     : Process::embedded;
    cs.config = c.second["config"] ? c.second["config"] : YAML::Node(YAML::NodeType::Map);
    if (c.second["learning"]) cs.learning = c.second["learning"];
    spec.components.push_back(std::move(cs));
  }
  std::set<std::string> names;
  for (const auto& c : spec.components) names.insert(c.name);
  for (std::size_t i = 0; i < root["finish_when"].size(); ++i) {
    auto n = root["finish_when"][i].as<std::string>();
    if (!names.contains(n)) {
      issues.push_back(issue_at(file, root["finish_when"][i],
                                "finish_when[" + std::to_string(i) + "]",
                                "names no component of this pipeline: '" + n + "'"));
    }
    spec.finish_when.push_back(n);
  }
  if (!issues.empty()) throw config::ConfigError(std::move(issues));
  return spec;
}

bool PipelineSpec::any_separate() const {
  for (const auto& c : components) {
    if (c.process == Process::separate) return true;
  }
  return false;
}

const ComponentSpec& PipelineSpec::component(const std::string& n) const {
  for (const auto& c : components) {
    if (c.name == n) return c;
  }
  throw std::out_of_range("pipeline '" + name + "' has no component '" + n + "'");
}

bus::BusEndpoints PipelineSpec::endpoints(const std::string& run_id, bool embedded) const {
  const bool inproc_bus = embedded && !external_broker;
  auto e = bus::make_endpoints(inproc_bus ? bus::Transport::inproc : transport, run_id, tcp_host,
                               tcp_base_port, ipc_dir);
  // The coordinator always lives in the launcher: embedded components reach it in-process.
  if (embedded) e.control = bus::make_endpoints(bus::Transport::inproc, run_id).control;
  return e;
}

bus::NodeOptions PipelineSpec::node_options(const std::string& n, const std::string& run_id,
                                            bool embedded) const {
  bus::NodeOptions o;
  o.name = n;
  o.endpoints = endpoints(run_id, embedded);
  o.policies = policies;
  o.max_message_bytes = max_message_bytes;
  o.sndhwm = hwm;
  o.rcvhwm = hwm;
  o.retention = retention;
  return o;
}

void apply_overrides(PipelineSpec& spec, const PipelineOverrides& o) {
  if (o.process) {
    for (auto& c : spec.components) c.process = *o.process;
  }
  if (o.transport) {
    if (*o.transport == bus::Transport::inproc) {
      throw std::invalid_argument(
          "--transport inproc: processes cannot share inproc; use "
          "--process embedded instead");
    }
    spec.transport = *o.transport;
  }
  if (o.tcp_base_port) spec.tcp_base_port = *o.tcp_base_port;
  if (!o.inputs.empty()) {
    bool applied = false;
    for (auto& c : spec.components) {
      if (c.kind == "corpus_source") {
        // Files or directories instead of the prepared corpus: the same stage as a plain
        // source of those paths (chunk size and topic kept).
        YAML::Node config(YAML::NodeType::Map);
        for (const char* key : {"chunk_bytes", "topic"}) {
          if (c.config[key]) config[key] = c.config[key];
        }
        c.kind = "source";
        c.config = config;
      }
      if (c.kind != "source") continue;
      YAML::Node list(YAML::NodeType::Sequence);
      for (const auto& i : o.inputs) list.push_back(i);
      c.config["inputs"] = list;
      applied = true;
    }
    if (!applied) throw std::invalid_argument("inputs given but the pipeline has no source");
  }
}

void apply_profile(PipelineSpec& spec, const hardware::Profile& profile) {
  std::map<std::string, std::string> families;
  for (const auto& c : spec.components) families[c.name] = hardware::neural_family(c.kind);
  const auto grants = hardware::memory_grants(profile, families);
  for (auto& c : spec.components) {
    ProfileSettings s;
    s.profile = profile.name;
    const auto& family = families.at(c.name);
    s.precision = family.empty() ? "float32" : profile.precision(family);
    s.batch_size = profile.batch_size;
    if (const auto it = grants.find(c.name); it != grants.end()) s.memory_grant_bytes = it->second;
    s.memory_budget_bytes = profile.memory_budget_bytes;
    s.malloc_arena_max = profile.malloc_arena_max;
    s.mmap_threshold_bytes = profile.mmap_threshold_bytes;
    s.trim_heap = profile.trim_heap;
    if (!c.config || !c.config.IsMap()) c.config = YAML::Node(YAML::NodeType::Map);
    c.config[kProfileConfigKey] = s.to_json().dump();
  }
}

ProfileSettings take_profile_settings(YAML::Node& config) {
  if (!config || !config.IsMap() || !config[kProfileConfigKey]) return {};
  const auto node = config[kProfileConfigKey];
  if (!node.IsScalar()) throw std::invalid_argument("config.profile: not a JSON string");
  const auto j = nlohmann::json::parse(node.Scalar(), nullptr, false);
  if (j.is_discarded()) throw std::invalid_argument("config.profile: malformed JSON");
  auto settings = ProfileSettings::from_json(j);
  config.remove(kProfileConfigKey);
  return settings;
}

}  // namespace neat::components
