// Byte LM: training on the prepared corpora, bits per byte, next-token entropies.
#include "neat/blt/byte_lm.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <numeric>
#include <ostream>
#include <random>
#include <sstream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "neat/blt/entropy_stream.hpp"
#include "neat/components/plot.hpp"
#include "neat/config/optimizer_keys.hpp"
#include "neat/data/corpus.hpp"
#include "neat/nn/checkpoint.hpp"
#include "neat/nn/ops.hpp"
#include "neat/nn/optim.hpp"

namespace neat::blt {

using config::Schema;

config::Schema ByteLMTrainOptions::schema() {
  auto model = Schema::map()
                   .optional("dim", Schema::integer(8, 4096).default_value("256"), "width")
                   .optional("layers", Schema::integer(1, 64).default_value("4"), "blocks")
                   .optional("heads", Schema::integer(1, 64).default_value("4"), "attention heads")
                   .optional("mlp_hidden", Schema::integer(8, 65536).default_value("1024"),
                             "MLP hidden width")
                   .optional("context", Schema::integer(8, 8192).default_value("256"),
                             "tokens of context (max_seq_len)")
                   .optional("window", Schema::integer(0, 8192).default_value("0"),
                             "sliding attention window (0: full causal)")
                   .optional("image_codes", Schema::integer(0, 65536).default_value("512"),
                             "codebook size K: vocabulary is 261 + K");
  ByteLMTrainOptions d;  // the documented defaults are the struct's
  auto train =
      Schema::map()
          .optional("steps", Schema::integer(1, 100000000).default_value("2000"), "optimizer steps")
          .optional("batch", Schema::integer(1, 4096).default_value("16"), "sequences per step");
  config::add_optimizer_keys(train, {d.lr, d.min_lr, d.warmup, d.weight_decay, d.clip}, 1)
      .optional("eval_every", Schema::integer(1, 100000000).default_value("200"),
                "steps between validations")
      .optional("eval_bytes", Schema::integer(1, 1ll << 40).default_value("65536"),
                "validation bytes scored each time");
  config::add_run_keys(train, {d.seed, d.threads});
  auto data = Schema::map()
                  .optional("corpus", Schema::string().default_value("data/corpus"),
                            "prepared corpus (neat data prepare)")
                  .optional("domains", Schema::list(Schema::string(), 1),
                            "domains of the train split to use");
  return Schema::map()
      .optional("model", model, "architecture")
      .optional("train", train, "optimisation")
      .optional("data", data, "training data")
      .optional("out_dir", Schema::string().default_value("out/train-blt"), "checkpoints, CSV log");
}

ByteLMTrainOptions ByteLMTrainOptions::load(const std::filesystem::path& file) {
  const auto root = config::load_file(file, schema());
  ByteLMTrainOptions o;
  o.model.vocab_size = kFirstImageCode + 512;
  o.model.max_seq_len = 256;
  if (const auto m = root["model"]) {
    if (m["dim"]) o.model.dim = m["dim"].as<std::int64_t>();
    if (m["layers"]) o.model.layers = m["layers"].as<std::int64_t>();
    if (m["heads"]) o.model.heads = m["heads"].as<std::int64_t>();
    if (m["mlp_hidden"]) o.model.mlp_hidden = m["mlp_hidden"].as<std::int64_t>();
    if (m["context"]) o.model.max_seq_len = m["context"].as<std::int64_t>();
    if (m["window"]) o.model.window = m["window"].as<std::int64_t>();
    if (m["image_codes"])
      o.model.vocab_size = kFirstImageCode + m["image_codes"].as<std::int64_t>();
  }
  if (const auto t = root["train"]) {
    if (t["steps"]) o.steps = t["steps"].as<std::int64_t>();
    if (t["batch"]) o.batch = t["batch"].as<std::int64_t>();
    config::read_optimizer_keys(t, {o.lr, o.min_lr, o.warmup, o.weight_decay, o.clip});
    if (t["eval_every"]) o.eval_every = t["eval_every"].as<std::int64_t>();
    if (t["eval_bytes"]) o.eval_bytes = t["eval_bytes"].as<std::uint64_t>();
    config::read_run_keys(t, {o.seed, o.threads});
  }
  if (const auto d = root["data"]) {
    if (d["corpus"]) o.corpus = d["corpus"].as<std::string>();
    if (d["domains"]) o.domains = d["domains"].as<std::vector<std::string>>();
  }
  if (root["out_dir"]) o.out_dir = root["out_dir"].as<std::string>();
  if (o.model.dim % o.model.heads != 0) {
    throw std::invalid_argument(file.string() + ": model.dim must be a multiple of model.heads");
  }
  o.model.seed = o.seed;
  return o;
}

nlohmann::json model_config_json(const nn::TransformerConfig& c) {
  return {{"vocab_size", c.vocab_size}, {"dim", c.dim},
          {"layers", c.layers},         {"heads", c.heads},
          {"mlp_hidden", c.mlp_hidden}, {"context", c.max_seq_len},
          {"window", c.window}};
}

nn::TransformerConfig model_config_from_json(const nlohmann::json& j) {
  auto get = [&](const char* key) {
    if (!j.contains(key) || !j[key].is_number_integer()) {
      throw std::runtime_error(std::string("byte LM config lacks integer '") + key + "'");
    }
    return j[key].get<std::int64_t>();
  };
  nn::TransformerConfig c;
  c.vocab_size = get("vocab_size");
  c.dim = get("dim");
  c.layers = get("layers");
  c.heads = get("heads");
  c.mlp_hidden = get("mlp_hidden");
  c.max_seq_len = get("context");
  c.window = j.contains("window") ? get("window") : 0;
  return c;
}

std::unique_ptr<nn::TransformerLM<float>> load_byte_lm(const std::filesystem::path& checkpoint) {
  const auto file = nn::read_checkpoint(checkpoint.string());
  const auto cfg = nlohmann::json::parse(file.config, nullptr, false);
  if (cfg.is_discarded()) {
    throw std::runtime_error(checkpoint.string() + ": config block is not JSON");
  }
  nn::TransformerConfig c;
  try {
    c = model_config_from_json(cfg);
  } catch (const std::exception& e) {
    throw std::runtime_error(checkpoint.string() + ": " + e.what());
  }
  auto model = std::make_unique<nn::TransformerLM<float>>(c);
  nn::load_checkpoint(checkpoint.string(), *model);
  return model;
}

std::vector<std::int32_t> document_tokens(const std::vector<std::uint8_t>& bytes) {
  std::vector<std::int32_t> t;
  t.reserve(bytes.size() + 2);
  t.push_back(kBos);
  for (auto b : bytes) t.push_back(b);
  t.push_back(kEos);
  return t;
}

namespace {

nn::Tensor<float> contiguous(const nn::Tensor<float>& t) {
  return t.is_contiguous() ? t : t.clone();
}

}  // namespace

std::vector<double> target_log_probs(const nn::TransformerLM<float>& model,
                                     const std::vector<std::int32_t>& tokens, int batch,
                                     const WindowHook& hook) {
  nn::NoGradGuard no_grad;
  const std::int64_t context = model.config().max_seq_len;
  const std::int64_t vocab = model.config().vocab_size;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      throw std::invalid_argument("target_log_probs: token " + std::to_string(tokens[i]) +
                                  " at position " + std::to_string(i) + " is outside [0, " +
                                  std::to_string(vocab) + ")");
    }
  }
  const auto n = static_cast<std::int64_t>(tokens.size());
  std::vector<double> out(n > 0 ? static_cast<std::size_t>(n - 1) : 0);
  // Windows [start, start + len) predict tokens start+1 .. start+len.
  std::vector<std::int64_t> starts;
  for (std::int64_t start = 0; start + 1 < n; start += context) starts.push_back(start);
  auto run = [&](const std::vector<std::int64_t>& group, std::int64_t len) {
    std::vector<std::int32_t> in;
    in.reserve(group.size() * static_cast<std::size_t>(len));
    for (auto s : group) in.insert(in.end(), tokens.begin() + s, tokens.begin() + s + len);
    const auto b = static_cast<std::int64_t>(group.size());
    const auto block_hook = hook ? hook(group, len) : nn::TransformerLM<float>::BlockHook{};
    auto logits = model.lm_head.forward(model.hidden(in, b, len, block_hook)).contiguous();
    const float* p = logits.data();
    for (std::int64_t r = 0; r < b; ++r) {
      for (std::int64_t i = 0; i < len; ++i) {
        const float* row = p + (r * len + i) * vocab;
        const std::int32_t target = tokens[static_cast<std::size_t>(group[r] + i + 1)];
        const auto s = logit_row_stats({row, static_cast<std::size_t>(vocab)});
        out[static_cast<std::size_t>(group[r] + i)] = double(row[target]) - s.logsumexp;
      }
    }
  };
  std::vector<std::int64_t> group;
  for (auto s : starts) {
    const std::int64_t len = std::min(context, n - 1 - s);
    if (len != context) {  // the last, shorter window goes alone
      run({s}, len);
      continue;
    }
    group.push_back(s);
    if (static_cast<int>(group.size()) >= std::max(1, batch)) {
      run(group, context);
      group.clear();
    }
  }
  if (!group.empty()) run(group, context);
  return out;
}

double byte_bits(const std::vector<std::int32_t>& tokens, const std::vector<double>& log_probs) {
  double nats = 0.0;
  for (std::size_t t = 0; t < log_probs.size(); ++t) {
    if (tokens[t + 1] < 256) nats -= log_probs[t];
  }
  return nats / std::log(2.0);
}

double bits_per_byte(const nn::TransformerLM<float>& model,
                     const std::vector<std::vector<std::uint8_t>>& documents,
                     std::uint64_t max_bytes) {
  double bits = 0.0;
  std::uint64_t bytes = 0;
  for (const auto& doc : documents) {
    auto tokens = document_tokens(doc);
    if (max_bytes > 0 && bytes + doc.size() > max_bytes) {
      // Score only the bytes still allowed: cut the document (no EOS target then).
      tokens.resize(1 + (max_bytes - bytes));
    }
    const auto lp = target_log_probs(model, tokens);
    bits += byte_bits(tokens, lp);
    for (std::size_t t = 1; t < tokens.size(); ++t) bytes += tokens[t] < 256 ? 1 : 0;
    if (max_bytes > 0 && bytes >= max_bytes) break;
  }
  return bytes == 0 ? 0.0 : bits / static_cast<double>(bytes);
}

std::vector<double> next_token_entropies(const nn::TransformerLM<float>& model,
                                         const std::vector<std::int32_t>& tokens) {
  EntropyStream stream(model);
  EntropyStreamOutput out;
  stream.push(tokens, out);
  return std::move(out.entropies);
}

std::vector<double> next_token_entropies_batch(const nn::TransformerLM<float>& model,
                                               const std::vector<std::int32_t>& tokens) {
  nn::NoGradGuard no_grad;
  const std::int64_t context = model.config().max_seq_len;
  const std::int64_t vocab = model.config().vocab_size;
  std::vector<double> h;
  h.reserve(tokens.size());
  const auto n = static_cast<std::int64_t>(tokens.size());
  for (std::int64_t start = 0; start < n; start += context) {
    const std::int64_t len = std::min(context, n - start);
    std::vector<std::int32_t> in(tokens.begin() + start, tokens.begin() + start + len);
    auto logits = contiguous(model.forward(in, 1, len));
    for (std::int64_t i = 0; i < len; ++i)
      h.push_back(
          logit_row_stats({logits.data() + i * vocab, static_cast<std::size_t>(vocab)}).entropy);
  }
  return h;
}

namespace {

namespace fs = std::filesystem;

// Whether `stream` is a terminal: std::cerr and std::cout are asked with isatty; any other
// stream (a file, a string) is not.
bool is_terminal(const std::ostream& stream) {
  if (&stream == &std::cerr || &stream == &std::clog) return ::isatty(STDERR_FILENO) == 1;
  if (&stream == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
  return false;
}

std::string clock_string(double seconds) {
  const auto s = static_cast<std::int64_t>(std::max(0.0, std::round(seconds)));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

// out_dir/loss_curve.png from out_dir/train_log.csv with gnuplot: train bits per token and
// validation bits per byte against the step. Returns an empty string on success, otherwise why
// there is no plot.
std::string plot_loss_curve(const fs::path& out_dir) {
  std::ostringstream gp;
  gp << "# Written by neat train blt: the loss curve of train_log.csv.\n"
     << "set terminal png size 900,540\n"
     << "set output " << components::gnuplot_quoted(out_dir / "loss_curve.png") << "\n"
     << "set datafile separator ','\n"
     << "set datafile columnheaders\n"
     << "set xlabel 'step'\nset ylabel 'bits'\nset grid\nset key top right\n"
     << "plot " << components::gnuplot_quoted(out_dir / "train_log.csv")
     << " using 1:3 with lines title 'train, bits per token (bytes, BOS, EOS)', '' using 1:4 "
        "with linespoints pointtype 7 title 'validation, bits per byte'\n";
  return components::run_gnuplot(out_dir / "loss_curve.gp", gp.str()).value_or("");
}

// The AdamW moments and step beside the weights (optimizer.ckpt): tensors "m.<parameter>" and
// "v.<parameter>" (f32, the parameter's shape), config {"optimizer_step", "train_step"}.
void save_optimizer(const fs::path& file, const nn::TransformerLM<float>& model,
                    const nn::AdamW<float>& opt, std::int64_t train_step) {
  const auto state = opt.state();
  nn::Checkpoint c;
  c.config =
      nlohmann::json{
          {"optimizer", "AdamW"}, {"optimizer_step", state.step}, {"train_step", train_step}}
          .dump();
  std::size_t i = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;
    for (const auto* moments : {&state.m, &state.v}) {
      nn::CheckpointTensor t;
      t.name = std::string(moments == &state.m ? "m." : "v.") + name;
      t.dtype = nn::DType::f32;
      t.shape = p.shape();
      const auto& values = (*moments)[i];
      t.data.resize(values.size() * sizeof(float));
      std::memcpy(t.data.data(), values.data(), t.data.size());
      c.tensors.push_back(std::move(t));
    }
    ++i;
  }
  nn::write_checkpoint(file.string(), c);
}

// Loads optimizer.ckpt written at `train_step`; throws nn::CheckpointError naming the file when
// it is from another step or does not fit the model.
void load_optimizer(const fs::path& file, const nn::TransformerLM<float>& model,
                    nn::AdamW<float>& opt, std::int64_t train_step) {
  const auto c = nn::read_checkpoint(file.string());
  const auto cfg = nlohmann::json::parse(c.config, nullptr, false);
  if (cfg.is_discarded() || !cfg.contains("train_step") || !cfg.contains("optimizer_step")) {
    throw nn::CheckpointError(file.string() + ": config block lacks train_step/optimizer_step");
  }
  if (cfg["train_step"].get<std::int64_t>() != train_step) {
    throw nn::CheckpointError(file.string() + ": optimizer state of step " +
                              std::to_string(cfg["train_step"].get<std::int64_t>()) +
                              " does not match the weights of step " + std::to_string(train_step));
  }
  std::map<std::string, const nn::CheckpointTensor*> by_name;
  for (const auto& t : c.tensors) by_name[t.name] = &t;
  nn::AdamWState<float> state;
  state.step = cfg["optimizer_step"].get<std::int64_t>();
  for (const auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;
    for (auto* moments : {&state.m, &state.v}) {
      const std::string key = std::string(moments == &state.m ? "m." : "v.") + name;
      const auto it = by_name.find(key);
      if (it == by_name.end() || it->second->dtype != nn::DType::f32 ||
          it->second->shape != p.shape()) {
        throw nn::CheckpointError(file.string() + ": tensor '" + key +
                                  "' is missing or has the wrong dtype or shape");
      }
      std::vector<float> values(static_cast<std::size_t>(p.numel()));
      std::memcpy(values.data(), it->second->data.data(), values.size() * sizeof(float));
      moments->push_back(std::move(values));
    }
  }
  try {
    opt.load_state(std::move(state));
  } catch (const std::invalid_argument& e) {
    throw nn::CheckpointError(file.string() + ": " + e.what());
  }
}

// Keeps the header and the rows of steps <= last_step (a resumed run rewrites what came after
// its checkpoint).
void trim_log(const fs::path& file, std::int64_t last_step) {
  std::ifstream in(file);
  if (!in) return;
  std::string line, kept;
  bool header = true;
  while (std::getline(in, line)) {
    if (header || std::strtoll(line.c_str(), nullptr, 10) <= last_step) kept += line + "\n";
    header = false;
  }
  in.close();
  std::ofstream(file, std::ios::trunc) << kept;
}

// The window offsets of step `step`: a function of (seed, step) only, so that a resumed run
// draws exactly the batches the uninterrupted run would have drawn.
void sample_offsets(std::uint64_t seed, std::int64_t step, std::size_t max_offset,
                    std::vector<std::size_t>& offsets) {
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                    static_cast<std::uint32_t>(step), static_cast<std::uint32_t>(step >> 32)};
  std::mt19937_64 rng(seq);
  std::uniform_int_distribution<std::size_t> offset(0, max_offset);
  for (auto& o : offsets) o = offset(rng);
}

}  // namespace

TrainReport train_byte_lm(const ByteLMTrainOptions& o, std::ostream& progress, bool resume) {
  using Clock = std::chrono::steady_clock;
  nn::set_num_threads(o.threads);
  const auto manifest = data::load_manifest(o.corpus);
  // The training stream: every train document as BOS, bytes, EOS, concatenated; windows of
  // context + 1 tokens are sampled from it.
  std::vector<std::int32_t> stream;
  std::vector<std::vector<std::uint8_t>> validation;
  for (const auto& domain : o.domains) {
    for (const auto& d : data::load_split(manifest, domain, data::Split::kTrain)) {
      const auto t = document_tokens(d.bytes);
      stream.insert(stream.end(), t.begin(), t.end());
    }
    for (auto& d : data::load_split(manifest, domain, data::Split::kVal)) {
      validation.push_back(std::move(d.bytes));
    }
  }
  const std::int64_t T = o.model.max_seq_len;
  if (static_cast<std::int64_t>(stream.size()) < T + 1) {
    throw std::runtime_error("training stream of " + std::to_string(stream.size()) +
                             " tokens is shorter than one context window");
  }
  // Validation: documents interleaved across domains, so that eval_bytes covers all of them.
  std::stable_sort(validation.begin(), validation.end(),
                   [](const auto& a, const auto& b) { return a.size() < b.size(); });

  nn::TransformerLM<float> model(o.model);
  std::filesystem::create_directories(o.out_dir);
  const auto ckpt = o.out_dir / "byte_lm.ckpt";
  const auto optimizer_ckpt = o.out_dir / "optimizer.ckpt";
  auto params = model.trainable_parameters();
  nn::AdamW<float> opt(params, {o.lr, 0.9, 0.95, 1e-8, o.weight_decay});
  std::int64_t start_step = 0;
  double last_val = 0.0;
  if (resume && std::filesystem::exists(ckpt)) {
    const auto cfg = nlohmann::json::parse(nn::load_checkpoint(ckpt.string(), model));
    start_step = cfg.value("step", std::int64_t{0});
    last_val = cfg.value("val_bits_per_byte", 0.0);
    if (std::filesystem::exists(optimizer_ckpt)) {
      load_optimizer(optimizer_ckpt, model, opt, start_step);
      progress << "resumed from " << ckpt.string() << " and " << optimizer_ckpt.string()
               << " at step " << start_step << "\n";
    } else {
      progress << "resumed from " << ckpt.string() << " at step " << start_step << " ("
               << optimizer_ckpt.string() << " missing: the AdamW moments start afresh)\n";
    }
  }
  nn::WarmupCosineLr schedule(o.lr, o.warmup, o.steps, o.min_lr);
  schedule.set_step(start_step);
  const std::size_t max_offset = stream.size() - static_cast<std::size_t>(T) - 1;
  const std::int64_t end_step =
      o.stop_after > 0 ? std::min(o.steps, start_step + o.stop_after) : o.steps;

  const auto log_file = o.out_dir / "train_log.csv";
  if (resume && start_step > 0) trim_log(log_file, start_step);
  std::ofstream log(log_file, resume && start_step > 0 ? std::ios::app : std::ios::trunc);
  if (!resume || start_step == 0)
    log << "step,loss_nats,bits_per_token,val_bits_per_byte,tokens_per_second,lr\n";
  auto config_json = [&](std::int64_t step, double val_bpb) {
    auto j = model_config_json(o.model);
    j["step"] = step;
    j["manifest_sha256"] = manifest.manifest_sha256;
    j["val_bits_per_byte"] = val_bpb;
    return j.dump();
  };
  auto save = [&](std::int64_t step) {
    nn::save_checkpoint(ckpt.string(), model, config_json(step, last_val));
    save_optimizer(optimizer_ckpt, model, opt, step);
  };
  // The loss curve is drawn at each validation and at the end when gnuplot is installed; the
  // CSV is always there.
  const bool have_gnuplot = components::gnuplot_available();
  auto plot = [&] {
    const auto failed = plot_loss_curve(o.out_dir);
    if (!failed.empty()) progress << "loss_curve.png: " << failed << "\n";
    return failed.empty();
  };
  auto fixed3 = [](double x) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(3) << x;
    return s.str();
  };

  // Progress: on a terminal one line rewritten with '\r' every step (validation lines stay);
  // otherwise a plain line every 10 steps and at each validation.
  const bool tty = is_terminal(progress);
  bool line_open = false;  // a rewritten progress line waits for its newline
  TrainReport report;
  const auto t0 = Clock::now();
  auto t_log = t0;
  std::int64_t tokens_since = 0;
  double last_loss = 0.0, tps = 0.0;
  std::vector<std::size_t> offsets(static_cast<std::size_t>(o.batch));
  std::vector<std::int32_t> inputs(static_cast<std::size_t>(o.batch * T)),
      targets(static_cast<std::size_t>(o.batch * T));
  for (std::int64_t step = start_step; step < end_step; ++step) {
    sample_offsets(o.seed, step, max_offset, offsets);
    for (std::int64_t b = 0; b < o.batch; ++b) {
      const auto at = static_cast<std::ptrdiff_t>(offsets[static_cast<std::size_t>(b)]);
      std::copy_n(stream.begin() + at, T, inputs.begin() + b * T);
      std::copy_n(stream.begin() + at + 1, T, targets.begin() + b * T);
    }
    opt.zero_grad();
    auto loss = model.loss(inputs, targets, o.batch, T);
    loss.backward();
    nn::clip_grad_norm(params, o.clip);
    opt.set_lr(schedule.lr());
    opt.step();
    schedule.advance();
    last_loss = loss.item();
    tokens_since += o.batch * T;
    const bool eval = (step + 1) % o.eval_every == 0 || step + 1 == o.steps;
    if (eval) last_val = bits_per_byte(model, validation, o.eval_bytes);
    const bool log_row = (step + 1) % 10 == 0 || eval || step + 1 == end_step;
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    const double eta = elapsed / static_cast<double>(step + 1 - start_step) *
                       static_cast<double>(o.steps - step - 1);
    if (log_row) {
      const double dt = std::chrono::duration<double>(now - t_log).count();
      tps = dt > 0 ? static_cast<double>(tokens_since) / dt : 0.0;
    }
    if (tty || log_row) {
      std::ostringstream line;
      line << "step " << step + 1 << "/" << o.steps << "  loss " << std::fixed
           << std::setprecision(3) << last_loss << "  bits/token " << last_loss / std::log(2.0)
           << "  val bits/byte " << (last_val > 0 ? fixed3(last_val) : std::string("-"))
           << "  tok/s " << std::setprecision(0)
           << (tty ? static_cast<double>((step + 1 - start_step) * o.batch * T) / elapsed : tps)
           << "  ETA " << clock_string(eta);
      if (tty) {
        // Clear to the end of the line: a shorter line must not leave the old one's tail.
        progress << "\r" << line.str() << "\x1b[K" << (eval ? "\n" : "") << std::flush;
        line_open = !eval;
      } else {
        progress << line.str() << "\n" << std::flush;
      }
    }
    if (log_row) {
      log << step + 1 << "," << last_loss << "," << last_loss / std::log(2.0) << ","
          << (eval ? std::to_string(last_val) : std::string()) << "," << tps << "," << opt.lr()
          << "\n";
      log.flush();
      t_log = now;
      tokens_since = 0;
    }
    if (eval) {
      save(step + 1);
      if (have_gnuplot) plot();
    }
  }
  if (line_open) progress << "\n";
  if (end_step <= start_step)
    progress << "nothing to train: already at step " << start_step << "\n";
  if (end_step > start_step && end_step % o.eval_every != 0 && end_step != o.steps) {
    save(end_step);  // stopped between validations (stop_after): resumable from here
  }
  log.close();
  if (!have_gnuplot) {
    progress << "loss_curve.png skipped: gnuplot is not on PATH (Debian package gnuplot-nox); "
             << log_file.string() << " has the curve\n";
  } else if (plot()) {
    progress << "wrote " << (o.out_dir / "loss_curve.png").string() << "\n";
  }
  report.steps = end_step;
  report.final_train_loss = last_loss;
  report.val_bits_per_byte = last_val;
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report.tokens_per_second =
      report.seconds > 0
          ? static_cast<double>((end_step - start_step) * o.batch * T) / report.seconds
          : 0;
  report.checkpoint = ckpt;
  return report;
}

}  // namespace neat::blt
