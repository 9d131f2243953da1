// The `neat` executable: one binary, sub-commands (run, launch, component, broker, topic, hw,
// config). Every sub-command has --help.
#include <sys/prctl.h>
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>

#include "builtin.hpp"
#include "commands.hpp"
#include "launch.hpp"
#include "neat/blt/byte_lm.hpp"
#include "neat/blt/patcher.hpp"
#include "neat/bus/broker.hpp"
#include "neat/config/schema.hpp"
#include "neat/data/baselines.hpp"
#include "neat/data/compressors.hpp"
#include "neat/data/corpus.hpp"
#include "neat/hardware/detect.hpp"
#include "neat/hardware/profile.hpp"
#include "neat/job/report.hpp"
#include "neat/mvot/codebook.hpp"
#include "neat/mvot/interleaved_lm.hpp"
#include "neat/nn/checkpoint.hpp"
#include "neat/t2/train.hpp"
#include "neat/titans/train.hpp"
#include "topic_tools.hpp"

namespace {

using namespace neat;

using cli::config_dir;

// The shipped byte LM (models/blt, see its PROVENANCE.md).
std::string default_byte_lm() {
  return (std::filesystem::path(NEAT_SOURCE_DIR) / "models/blt/byte_lm.bf16.ckpt").string();
}

std::filesystem::path self_exe() { return std::filesystem::read_symlink("/proc/self/exe"); }

struct ShapeFlags {
  std::string process, transport;
  int tcp_base_port = 0;
  components::PipelineOverrides to_overrides() const {
    components::PipelineOverrides o;
    if (!process.empty()) {
      o.process =
          process == "separate" ? components::Process::separate : components::Process::embedded;
    }
    if (!transport.empty()) o.transport = bus::parse_transport(transport);
    if (tcp_base_port > 0) o.tcp_base_port = tcp_base_port;
    return o;
  }
  void add(CLI::App* app, bool with_process) {
    if (with_process) {
      app->add_option("--process", process, "run every component embedded or separate")
          ->check(CLI::IsMember({"embedded", "separate"}));
    }
    app->add_option("--transport", transport, "inter-process transport")
        ->check(CLI::IsMember({"ipc", "tcp"}));
    app->add_option("--tcp-base-port", tcp_base_port, "first of the 5 tcp ports");
  }
};

components::PipelineSpec load_spec(const std::string& file, const ShapeFlags& shape,
                                   const std::vector<std::string>& inputs = {}) {
  auto spec = components::load_pipeline(file, cli::builtin_registry());
  auto o = shape.to_overrides();
  o.inputs = inputs;
  components::apply_overrides(spec, o);
  if (spec.log_level != "info" && spdlog::get_level() == spdlog::level::info) {
    spdlog::set_level(spdlog::level::from_str(spec.log_level));
  }
  return spec;
}

void print_report_table(const std::filesystem::path& report_file) {
  std::ifstream in(report_file);
  if (!in) return;
  auto report = nlohmann::json::parse(in, nullptr, false);
  if (report.is_discarded()) return;
  if (report.contains("domains")) {  // the main job's report (components/job)
    std::cout << job::report_table(report);
    return;
  }
  if (!report.contains("documents")) return;
  const bool online = report["totals"].contains("online_bits_per_byte");
  std::cout << std::left << std::setw(48) << "document" << std::right << std::setw(10) << "bytes"
            << std::setw(16) << "order-0 bits/B" << (online ? "   online bits/B" : "") << "\n";
  std::cout << std::fixed << std::setprecision(3);
  for (const auto& d : report["documents"]) {
    std::string path = d.value("path", "");
    if (path.size() > 46) path = "..." + path.substr(path.size() - 43);
    std::cout << std::left << std::setw(48) << path << std::right << std::setw(10)
              << d.value("bytes", 0) << std::setw(16) << d.value("entropy_bits_per_byte", 0.0);
    if (online) std::cout << std::setw(16) << d.value("online_bits_per_byte", 0.0);
    std::cout << "\n";
  }
  const auto& t = report["totals"];
  std::cout << std::left << std::setw(48)
            << ("total (" + std::to_string(t.value("documents", 0)) + " documents)") << std::right
            << std::setw(10) << t.value("bytes", 0) << std::setw(16)
            << t.value("mean_order0_bits_per_byte", 0.0);
  if (online) std::cout << std::setw(16) << t.value("online_bits_per_byte", 0.0);
  std::cout << "\n";
}

// Markdown reference of every pipeline key and every component kind's `config:` keys.
std::string configuration_reference() {
  std::string out = "## Pipeline files (`configs/pipelines/*.yaml`)\n\n";
  out += components::pipeline_schema().describe();
  const auto& registry = cli::builtin_registry();
  for (const auto& name : registry.names()) {
    const auto& kind = registry.get(name);
    out += "\n## Component `" + name + "`: `components.<name>.config`\n\n" + kind.description +
           ".\n\n" + kind.schema().describe();
  }
  out += "\n## BLT training (`configs/train/blt.yaml`)\n\n" +
         blt::ByteLMTrainOptions::schema().describe();
  out += "\n## MVoT interleaved LM training (`configs/train/mvot_lm.yaml`)\n\n" +
         mvot::InterleavedTrainOptions::schema().describe();
  out += "\n## Transformer² expert training (`configs/train/t2.yaml`)\n\n" +
         t2::T2TrainOptions::schema().describe();
  out += "\n## Titans MAG training (`configs/train/titans.yaml`)\n\n" +
         titans::TitansTrainOptions::schema().describe();
  out += "\n## Test-time learning: `components.<name>.learning`\n\n" +
         coordinator::learning_schema().describe();
  out += "\n## Hardware profiles (`configs/profiles/*.yaml`)\n\n" +
         hardware::profile_schema().describe();
  return out;
}

int do_launch(const std::string& pipeline, const ShapeFlags& shape,
              const std::vector<std::string>& inputs, const std::string& out, std::string run_id,
              const std::string& profile_name, bool print_table) {
  auto& stop = cli::install_stop_signals();
  cli::LaunchOptions o;
  std::vector<std::string> warnings;
  const auto hw = hardware::detect_hardware();
  o.profile = hardware::resolve_profile(
      config_dir() / "profiles", hw,
      profile_name.empty() ? std::nullopt : std::optional<std::string>(profile_name), &warnings);
  for (const auto& w : warnings) spdlog::warn("{}", w);
  o.threads = o.profile->thread_count(hw);
  spdlog::info("hardware profile: {} ({} memory budget, {} threads)", o.profile->name,
               config::format_bytes(o.profile->memory_budget_bytes), o.threads);
  o.spec = load_spec(pipeline, shape, inputs);
  components::apply_profile(o.spec, *o.profile);  // precision, batch cap, grant (issue 8)
  o.overrides = shape.to_overrides();
  o.overrides.inputs = inputs;  // children apply the same inputs to their copy of the spec
  o.run_id = run_id.empty() ? "p" + std::to_string(::getpid()) : run_id;
  o.out_dir = out;
  o.neat_binary = self_exe();
  o.progress = print_table;
  spdlog::info("launching pipeline '{}' (run id {}, output {})", o.spec.name, o.run_id, out);
  auto outcome = cli::launch(o, stop);
  if (print_table && outcome.completed) {
    job::add_run_totals(std::filesystem::path(out) / "report.json",
                        std::filesystem::path(out) / "run.json");
    print_report_table(std::filesystem::path(out) / "report.json");
  }
  if (!outcome.completed) {
    spdlog::error("run did not complete: {}", outcome.error);
    return outcome.interrupted ? 130 : 1;
  }
  spdlog::info("run complete in {:.2f} s; {}/run.json", outcome.wall_seconds, out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // OpenBLAS picks its kernels when it loads, by CPU model; on CPUs it does not know (VMs
  // reporting a generic model) it falls back to SSE3 kernels. Choose by CPU features instead
  // (children inherit the choice); an explicit OPENBLAS_CORETYPE is left alone.
  nn::use_best_blas_kernels(argv);
  // Logs go to stderr; stdout carries reports, tables and JSON only.
  auto logger = spdlog::stderr_color_mt("neat");
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
  CLI::App app{
      "neat: four neural components on a ZeroMQ bus under a test-time-learning "
      "coordinator"};
  app.set_version_flag("--version", std::string("neat ") + NEAT_VERSION);
  app.require_subcommand(1);
  int verbose = 0;
  app.add_flag("-v,--verbose", verbose, "more log output (-v debug, -vv trace)");

  // run
  auto* run = app.add_subcommand(
      "run",
      "run the main job (the prepared test split of every domain and Fashion-MNIST test "
      "images through mvot, blt, the predictor and the report) and print its report");
  std::string run_pipeline = (config_dir() / "pipelines/default.yaml").string();
  std::string run_out = "out", run_profile, run_id;
  std::vector<std::string> run_inputs;
  ShapeFlags run_shape;
  run->add_option("--pipeline", run_pipeline, "pipeline YAML")->capture_default_str();
  run->add_option("--out", run_out, "output directory")->capture_default_str();
  run->add_option("--profile", run_profile, "hardware profile name (default: detected)");
  run->add_option("--run-id", run_id, "name of this run's endpoints");
  run->add_option("inputs", run_inputs, "files or directories (default: the pipeline's)");
  run_shape.add(run, true);

  // launch
  auto* launch = app.add_subcommand("launch",
                                    "start a pipeline: broker, coordinator, embedded "
                                    "threads and separate processes");
  std::string launch_pipeline, launch_out = "out", launch_id;
  ShapeFlags launch_shape;
  launch->add_option("pipeline", launch_pipeline, "pipeline YAML")->required();
  launch->add_option("--out", launch_out, "output directory")->capture_default_str();
  launch->add_option("--run-id", launch_id, "name of this run's endpoints");
  std::string launch_profile;
  launch->add_option("--profile", launch_profile, "hardware profile name (default: detected)");
  launch_shape.add(launch, true);

  // component
  auto* comp = app.add_subcommand("component", "run one component of a pipeline as this process");
  std::string comp_name, comp_pipeline, comp_id;
  int parent_pid = 0;
  ShapeFlags comp_shape;
  comp->add_option("name", comp_name, "component name in the pipeline")->required();
  comp->add_option("--pipeline,--config", comp_pipeline, "pipeline YAML")->required();
  comp->add_option("--run-id", comp_id, "the launcher's run id")->required();
  comp->add_option("--parent-pid", parent_pid, "exit when this process dies");
  int comp_nice = 0, comp_threads = 0;
  std::vector<std::string> comp_inputs;
  comp->add_option("--input", comp_inputs, "input paths given to the run (replace the source's)");
  comp->add_option("--nice", comp_nice, "CPU priority: nice increment (from the profile)");
  comp->add_option("--threads", comp_threads, "numerical worker threads (0: default)");
  comp_shape.add(comp, false);

  // broker
  auto* broker = app.add_subcommand("broker", "run a standalone broker for a pipeline's endpoints");
  std::string broker_pipeline, broker_id;
  ShapeFlags broker_shape;
  broker->add_option("pipeline", broker_pipeline, "pipeline YAML")->required();
  broker->add_option("--run-id", broker_id, "run id")->required();
  broker_shape.add(broker, false);

  // topic
  auto* topic = app.add_subcommand("topic", "live introspection of a running bus");
  topic->require_subcommand(1);
  std::string topic_pipeline, topic_id, topic_prefix;
  double window_s = 1.0;
  std::size_t topic_count = 0;
  ShapeFlags topic_shape;
  for (auto* t : {topic->add_subcommand("list", "topics seen in one window, with rates"),
                  topic->add_subcommand("echo", "print messages as JSON"),
                  topic->add_subcommand("hz", "rate, bandwidth and drops per topic")}) {
    t->add_option("--pipeline", topic_pipeline, "pipeline YAML of the run")->required();
    t->add_option("--run-id", topic_id, "the run's id (printed by neat launch)")->required();
    t->add_option("prefix", topic_prefix, "topic prefix (default: all)");
    t->add_option("--window", window_s, "seconds per measurement window");
    t->add_option("-n,--count", topic_count, "stop after N messages (echo) or windows (hz)");
    topic_shape.add(t, false);
  }

  // hw
  auto* hw = app.add_subcommand("hw", "print the detected hardware and the profile it selects");
  std::string hw_profile;
  hw->add_option("--profile", hw_profile, "force a profile by name");

  // config check
  auto* check = app.add_subcommand("check", "validate a pipeline YAML file");
  std::string check_file;
  check->add_option("pipeline", check_file, "pipeline YAML")->required();

  // data
  auto* data = app.add_subcommand("data", "corpora from installed Debian packages");
  data->require_subcommand(1);
  auto* prepare = data->add_subcommand(
      "prepare", "build data/corpus: documents, deterministic train/val/test splits, manifest");
  std::string corpus_dir = "data/corpus";
  std::uint64_t code_budget = data::kDefaultCodeBudgetBytes, max_document = 64 * 1024;
  prepare->add_option("--out", corpus_dir, "output directory")->capture_default_str();
  prepare->add_option("--code-budget", code_budget, "bytes taken from C and Python sources")
      ->capture_default_str();
  prepare->add_option("--max-document", max_document, "longer files are cut, bytes")
      ->capture_default_str();
  auto* baselines = data->add_subcommand(
      "baselines", "bits per byte of xz -9e, bzip2 -9, zstd -19, zpaq -m5 on a prepared split");
  std::string baseline_split = "test";
  bool per_document = false;
  baselines->add_option("--corpus", corpus_dir, "prepared corpus")->capture_default_str();
  baselines->add_option("--split", baseline_split, "train, val or test")->capture_default_str();
  baselines->add_flag("--per-document", per_document, "compress each document on its own");

  // blt
  auto* blt = app.add_subcommand("blt", "the byte latent transformer's patching");
  blt->require_subcommand(1);
  auto* patch = blt->add_subcommand(
      "patch",
      "patch a FILE with the byte LM's entropies, or precomputed entropies (--entropies); print "
      "the patch starts (and for a file its spans and entropies) as JSON");
  std::string entropies_file, patch_mode = "global", patch_file, model_file = default_byte_lm();
  blt::PatcherOptions patch_options;
  patch->add_option("--entropies", entropies_file,
                    "JSON array of entropies in nats (or an object with an \"entropies\" array)");
  patch->add_option("file", patch_file, "a file to patch with the byte LM's entropies");
  patch->add_option("--model", model_file, "byte LM checkpoint")->capture_default_str();
  patch->add_option("--mode", patch_mode, "global, monotonic, combined, space, stride")
      ->capture_default_str();
  patch->add_option("--threshold", patch_options.threshold, "theta_g, nats")->capture_default_str();
  patch->add_option("--relative-threshold", patch_options.relative_threshold, "theta_r, nats")
      ->capture_default_str();
  patch->add_option("--stride", patch_options.stride, "tokens per patch (stride mode)");
  patch->add_option("--max-patch-length", patch_options.max_patch_length, "0: no limit");

  // train
  auto* train = app.add_subcommand("train", "train a component offline");
  train->require_subcommand(1);
  auto* train_blt = train->add_subcommand("blt", "train the BLT byte LM on the prepared corpus");
  std::string train_config = (config_dir() / "train/blt.yaml").string();
  bool train_resume = false;
  train_blt->add_option("--config", train_config, "training YAML")->capture_default_str();
  train_blt->add_flag("--resume", train_resume, "continue from out_dir/byte_lm.ckpt");

  auto* export_cmd = blt->add_subcommand(
      "export", "write a byte LM checkpoint with bf16 weights (half the size; widened on load)");
  std::string export_in, export_out;
  export_cmd->add_option("--model", export_in, "f32 checkpoint")->required();
  export_cmd->add_option("--out", export_out, "bf16 checkpoint to write")->required();

  // eval
  auto* eval = app.add_subcommand(
      "eval",
      "bits per byte of files under the full system and its ablations (base LM, +T2, +Titans, "
      "full), next to xz -9e, bzip2 -9, zstd -19 and zpaq -m5; --base-only: the byte LM alone");
  std::vector<std::string> eval_files;
  std::string eval_model = default_byte_lm();
  std::string eval_corpus, eval_split = "test";
  eval->add_option("files", eval_files, "files to score");
  eval->add_option("--corpus", eval_corpus,
                   "score every domain's split of a prepared corpus instead of files");
  eval->add_option("--split", eval_split, "train, val or test (with --corpus)")
      ->capture_default_str();
  eval->add_option("--model", eval_model, "byte LM checkpoint (with --base-only or --corpus)")
      ->capture_default_str();
  bool eval_base_only = false;
  std::string eval_out = "out/eval";
  eval->add_flag("--base-only", eval_base_only,
                 "only the byte LM, file by file, without running the pipeline");
  eval->add_option("--out", eval_out, "output directory of the pipeline run")
      ->capture_default_str();

  auto* train_mvot = train->add_subcommand(
      "mvot", "train the MVoT visual codebook (k-means on 4x4 patches of Fashion-MNIST)");
  mvot::TrainOptions mvot_options;
  mvot_options.kmeans.iterations = 40;
  std::string mvot_out = "models/mvot/codebook.msgpack";
  train_mvot->add_option("--k", mvot_options.kmeans.k, "codebook size")->capture_default_str();
  train_mvot->add_option("--iterations", mvot_options.kmeans.iterations, "Lloyd iterations")
      ->capture_default_str();
  train_mvot->add_option("--seed", mvot_options.kmeans.seed, "random seed")->capture_default_str();
  train_mvot
      ->add_option("--init-sample", mvot_options.kmeans.init_sample,
                   "patches drawn for k-means++ seeding")
      ->capture_default_str();
  train_mvot
      ->add_option("--context-radius", mvot_options.context.radius,
                   "ring of pixels around each patch in the quantised descriptor (0 or 1)")
      ->capture_default_str();
  train_mvot
      ->add_option("--context-weight", mvot_options.context.weight,
                   "weight beta of each ring pixel in the squared distance")
      ->capture_default_str();
  train_mvot->add_option("--data", mvot_options.dataset_dir, "Fashion-MNIST directory")
      ->capture_default_str();
  train_mvot->add_option("--out", mvot_out, "codebook file to write")->capture_default_str();

  // schema
  auto* schema = app.add_subcommand("schema",
                                    "print every YAML key of pipelines and component "
                                    "configs as markdown (docs/configuration.md)");

  // sub-command modules of the component libraries (cli/commands.hpp)
  std::vector<cli::CommandRunner> modules;
  const cli::CommandParents parents{app, *train};
  modules.push_back(cli::add_mvot_commands(parents));
  modules.push_back(cli::add_t2_commands(parents));
  modules.push_back(cli::add_titans_commands(parents));
  (void)parents;

  CLI11_PARSE(app, argc, argv);
  if (verbose == 1) spdlog::set_level(spdlog::level::debug);
  if (verbose >= 2) spdlog::set_level(spdlog::level::trace);
  if (const char* fallback = std::getenv("NEAT_BLAS_FALLBACK")) {
    spdlog::debug("OpenBLAS kernels {} (it had chosen {} on this CPU; set by neat)",
                  nn::blas_core(), fallback);
  }

  try {
    for (const auto& module : modules) {
      if (auto status = module()) return *status;
    }
    if (*run)
      return do_launch(run_pipeline, run_shape, run_inputs, run_out, run_id, run_profile, true);
    if (*launch) {
      return do_launch(launch_pipeline, launch_shape, {}, launch_out, launch_id, launch_profile,
                       false);
    }
    if (*comp) {
      if (parent_pid > 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent_pid) return 1;  // the launcher died before we got here
      }
      auto& stop = cli::install_stop_signals();
      auto spec = load_spec(comp_pipeline, comp_shape, comp_inputs);
      return cli::run_component_process(spec, comp_name, comp_id, stop, comp_nice, comp_threads);
    }
    if (*broker) {
      auto& stop = cli::install_stop_signals();
      auto spec = load_spec(broker_pipeline, broker_shape);
      zmq::context_t ctx(2);
      bus::Broker b(ctx, {{spec.endpoints(broker_id, false)}, spec.hwm});
      spdlog::info("broker for '{}' (run id {}) running; Ctrl-C stops", spec.name, broker_id);
      while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      return 0;
    }
    if (*topic) {
      auto& stop = cli::install_stop_signals();
      auto spec = load_spec(topic_pipeline, topic_shape);
      cli::TopicToolOptions o;
      o.endpoints = spec.endpoints(topic_id, false);
      o.prefix = topic_prefix;
      o.window = std::chrono::milliseconds(static_cast<long>(window_s * 1000));
      if (topic_count > 0) o.count = topic_count;
      auto* sub = topic->get_subcommands().front();
      if (sub->get_name() == "echo") return cli::topic_echo(o, std::cout, stop);
      if (sub->get_name() == "hz") return cli::topic_hz(o, std::cout, stop);
      return cli::topic_list(o, std::cout, stop);
    }
    if (*hw) {
      auto info = hardware::detect_hardware();
      std::cout << hardware::to_string(info) << "\n";
      const char* fallback = std::getenv("NEAT_BLAS_FALLBACK");
      std::cout << "blas kernels       OpenBLAS " << nn::blas_core()
                << (fallback ? std::string(" (set by neat; OpenBLAS chose ") + fallback + ")" : "")
                << "\n";
      std::vector<std::string> warnings;
      auto profile = hardware::resolve_profile(
          config_dir() / "profiles", info,
          hw_profile.empty() ? std::nullopt : std::optional<std::string>(hw_profile), &warnings);
      for (const auto& w : warnings) std::cout << "warning: " << w << "\n";
      std::cout << hardware::to_string(profile) << "\n";
      return 0;
    }
    if (*export_cmd) {
      const auto model = blt::load_byte_lm(export_in);
      const auto config = nn::read_checkpoint(export_in).config;
      nn::save_checkpoint(export_out, *model, config, nn::DType::bf16);
      std::cout << export_out << ": " << std::filesystem::file_size(export_out) << " bytes\n";
      return 0;
    }
    if (*patch) {
      std::vector<double> entropies;
      std::vector<std::int32_t> tokens;
      if (!entropies_file.empty()) {
        std::ifstream in(entropies_file);
        if (!in) throw std::runtime_error("cannot read " + entropies_file);
        auto j = nlohmann::json::parse(in);
        if (j.is_object()) j = j.at("entropies");
        entropies = j.get<std::vector<double>>();
      } else if (!patch_file.empty()) {
        std::ifstream in(patch_file, std::ios::binary);
        if (!in) throw std::runtime_error("cannot read " + patch_file);
        std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
        tokens = blt::document_tokens(bytes);
        entropies = blt::next_token_entropies(*blt::load_byte_lm(model_file), tokens);
      } else {
        throw std::invalid_argument("blt patch needs --entropies FILE.json or a FILE to patch");
      }
      patch_options.mode = blt::parse_patch_mode(patch_mode);
      const auto starts = blt::patch_starts(entropies, tokens, patch_options);
      const auto patches = blt::patches_from_starts(starts);
      nlohmann::json out;
      std::vector<std::size_t> positions;
      for (const auto& p : patches) positions.push_back(p.start);
      out["patch_starts"] = positions;
      out["patches"] = patches.size();
      out["positions"] = entropies.size();
      out["mean_patch_length"] =
          patches.empty() ? 0.0 : double(entropies.size()) / double(patches.size());
      if (!tokens.empty()) {
        // spans as text (bytes as Latin-1 escapes kept by JSON) and their mean entropy
        nlohmann::json spans = nlohmann::json::array();
        for (const auto& p : patches) {
          std::string text;
          double h = 0;
          for (std::size_t k = p.start; k < p.start + p.length; ++k) {
            if (tokens[k] < 256) text.push_back(static_cast<char>(tokens[k]));
            h += entropies[k];
          }
          spans.push_back({{"start", p.start},
                           {"length", p.length},
                           {"mean_entropy_nats", h / double(p.length)},
                           {"text", nlohmann::json::binary_t(
                                        std::vector<std::uint8_t>(text.begin(), text.end()))}});
        }
        out["spans"] = spans;
        out["entropies"] = entropies;
      }
      std::cout << out.dump() << "\n";
      return 0;
    }
    if (*train_mvot) {
      mvot_options.output = mvot_out;
      const auto r = mvot::train_codebook(mvot_options);
      std::cout << nlohmann::json{{"k", r.provenance.k},
                                  {"iterations", r.provenance.iterations},
                                  {"restarted_codes", r.provenance.restarted_codes},
                                  {"train_images", r.provenance.train_images},
                                  {"wall_seconds", r.provenance.wall_seconds},
                                  {"test_images", r.test.images},
                                  {"psnr_mean_db", r.test.psnr_mean_db},
                                  {"psnr_of_mean_mse_db", r.test.psnr_of_mean_mse_db},
                                  {"perplexity", r.test.perplexity},
                                  {"used_codes", r.test.used_codes},
                                  {"inertia", r.inertia},
                                  {"codebook", mvot_out}}
                       .dump(2)
                << "\n";
      return 0;
    }
    if (*train_blt) {
      const auto options = blt::ByteLMTrainOptions::load(train_config);
      const auto r = blt::train_byte_lm(options, std::cerr, train_resume);
      std::cout << nlohmann::json{{"steps", r.steps},
                                  {"final_train_loss_nats", r.final_train_loss},
                                  {"val_bits_per_byte", r.val_bits_per_byte},
                                  {"seconds", r.seconds},
                                  {"tokens_per_second", r.tokens_per_second},
                                  {"checkpoint", r.checkpoint.string()}}
                       .dump(2)
                << "\n";
      return 0;
    }
    if (*eval && !eval_corpus.empty()) {
      const auto model = blt::load_byte_lm(eval_model);
      const auto manifest = data::load_manifest(eval_corpus);
      const auto split = data::parse_split(eval_split);
      std::cout << "| domain | " << eval_split
                << " bytes | byte LM | xz -9e | bzip2 -9 | zstd -19 | zpaq -m5 |\n"
                << "|---|---:|---:|---:|---:|---:|---:|\n";
      for (const auto& domain : manifest.domains) {
        std::vector<std::vector<std::uint8_t>> docs;
        std::vector<std::uint8_t> stream;
        for (auto& d : data::load_split(manifest, domain.name, split)) {
          stream.insert(stream.end(), d.bytes.begin(), d.bytes.end());
          docs.push_back(std::move(d.bytes));
        }
        std::cout << "| " << domain.name << " | " << stream.size() << " | " << std::fixed
                  << std::setprecision(3) << blt::bits_per_byte(*model, docs);
        for (auto c : data::kCompressors) {
          const auto r = data::compress_stream(c, stream);
          if (r.bits_per_byte()) {
            std::cout << " | " << *r.bits_per_byte();
          } else {
            std::cout << " | n/a";
          }
        }
        std::cout << " |\n" << std::flush;
      }
      return 0;
    }
    if (*eval && !eval_base_only) {
      // The main job on these files: one row per file with every ablation (report.json in
      // --out).
      if (eval_files.empty()) throw std::invalid_argument("eval needs FILE... or --corpus DIR");
      return do_launch((config_dir() / "pipelines/default.yaml").string(), ShapeFlags{}, eval_files,
                       eval_out, "", "", true);
    }
    if (*eval) {
      if (eval_files.empty()) throw std::invalid_argument("eval needs FILE... or --corpus DIR");
      const auto model = blt::load_byte_lm(eval_model);
      std::cout << "| file | bytes | byte LM | xz -9e | bzip2 -9 | zstd -19 |\n"
                << "|---|---:|---:|---:|---:|---:|\n";
      for (const auto& f : eval_files) {
        std::ifstream in(f, std::ios::binary);
        if (!in) {
          spdlog::error("cannot read {}: skipped", f);
          continue;
        }
        std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
        std::cout << "| " << f << " | " << bytes.size() << " | " << std::fixed
                  << std::setprecision(3) << blt::bits_per_byte(*model, {bytes});
        for (auto c : {data::Compressor::kXz, data::Compressor::kBzip2, data::Compressor::kZstd}) {
          const auto r = data::compress_stream(c, bytes);
          std::cout << " | " << (r.bits_per_byte() ? *r.bits_per_byte() : 0.0);
        }
        std::cout << " |\n";
      }
      return 0;
    }
    if (*prepare) {
      data::PrepareOptions o;
      o.sources = data::default_sources("/var/lib/dpkg/info", code_budget);
      o.output_dir = corpus_dir;
      o.max_document_bytes = max_document;
      std::cout << data::summary(data::prepare_corpus(o)).dump(2) << "\n";
      return 0;
    }
    if (*baselines) {
      auto manifest = data::load_manifest(corpus_dir);
      std::cout << data::compressor_table(manifest, data::parse_split(baseline_split),
                                          per_document);
      return 0;
    }
    if (*schema) {
      std::cout << configuration_reference();
      return 0;
    }
    if (*check) {
      auto spec = components::load_pipeline(check_file, cli::builtin_registry());
      std::cout << check_file << ": ok (" << spec.components.size() << " components)\n";
      return 0;
    }
  } catch (const config::ConfigError& e) {
    for (const auto& i : e.issues()) std::cerr << i.str() << "\n";
    std::cerr << "neat: configuration rejected (" << e.issues().size() << " issue(s))\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "neat: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
