// Byte LM: training on the prepared corpora, bits per byte, next-token entropies.
#include "neat/blt/byte_lm.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <numeric>
#include <ostream>
#include <random>

#include <nlohmann/json.hpp>

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
  auto train =
      Schema::map()
          .optional("steps", Schema::integer(1, 100000000).default_value("2000"), "optimizer steps")
          .optional("batch", Schema::integer(1, 4096).default_value("16"), "sequences per step")
          .optional("lr", Schema::number(0, 1).default_value("0.003"), "peak learning rate")
          .optional("min_lr", Schema::number(0, 1).default_value("0.0003"), "end of the cosine")
          .optional("warmup", Schema::integer(0, 100000000).default_value("100"), "warm-up steps")
          .optional("weight_decay", Schema::number(0, 1).default_value("0.01"), "AdamW decay")
          .optional("clip", Schema::number(0, 1e6).default_value("1.0"), "global norm clip")
          .optional("eval_every", Schema::integer(1, 100000000).default_value("200"),
                    "steps between validations")
          .optional("eval_bytes", Schema::integer(1, 1ll << 40).default_value("65536"),
                    "validation bytes scored each time")
          .optional("seed", Schema::integer(0, 1ll << 62).default_value("1"), "random seed")
          .optional("threads", Schema::integer(0, 4096).default_value("0"), "0: all cores");
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
    if (t["lr"]) o.lr = t["lr"].as<double>();
    if (t["min_lr"]) o.min_lr = t["min_lr"].as<double>();
    if (t["warmup"]) o.warmup = t["warmup"].as<std::int64_t>();
    if (t["weight_decay"]) o.weight_decay = t["weight_decay"].as<double>();
    if (t["clip"]) o.clip = t["clip"].as<double>();
    if (t["eval_every"]) o.eval_every = t["eval_every"].as<std::int64_t>();
    if (t["eval_bytes"]) o.eval_bytes = t["eval_bytes"].as<std::uint64_t>();
    if (t["seed"]) o.seed = t["seed"].as<std::uint64_t>();
    if (t["threads"]) o.threads = t["threads"].as<int>();
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

// Row r of a contiguous (..., V) logits tensor: log-sum-exp and the entropy in nats.
struct RowStats {
  double logsumexp = 0.0, entropy = 0.0;
};

RowStats row_stats(const float* logits, std::int64_t vocab) {
  const float mx = *std::max_element(logits, logits + vocab);
  double z = 0.0, weighted = 0.0;
  for (std::int64_t v = 0; v < vocab; ++v) {
    const double e = std::exp(static_cast<double>(logits[v] - mx));
    z += e;
    weighted += e * static_cast<double>(logits[v] - mx);
  }
  RowStats s;
  s.logsumexp = mx + std::log(z);
  // H = log Z - E_p[logit]
  s.entropy = std::log(z) - weighted / z;
  return s;
}

nn::Tensor<float> contiguous(const nn::Tensor<float>& t) {
  return t.is_contiguous() ? t : t.clone();
}

}  // namespace

double bits_per_byte(const nn::TransformerLM<float>& model,
                     const std::vector<std::vector<std::uint8_t>>& documents,
                     std::uint64_t max_bytes) {
  nn::NoGradGuard no_grad;
  const std::int64_t context = model.config().max_seq_len;
  const std::int64_t vocab = model.config().vocab_size;
  double nats = 0.0;
  std::uint64_t bytes = 0;
  for (const auto& doc : documents) {
    const auto tokens = document_tokens(doc);
    const auto n = static_cast<std::int64_t>(tokens.size());
    for (std::int64_t start = 0; start + 1 < n; start += context) {
      const std::int64_t len = std::min(context, n - 1 - start);
      std::vector<std::int32_t> in(tokens.begin() + start, tokens.begin() + start + len);
      auto logits = contiguous(model.forward(in, 1, len));
      const float* p = logits.data();
      for (std::int64_t i = 0; i < len; ++i) {
        const std::int32_t target = tokens[static_cast<std::size_t>(start + i + 1)];
        if (target >= 256) continue;  // EOS: not a byte
        const auto s = row_stats(p + i * vocab, vocab);
        nats += s.logsumexp - p[i * vocab + target];
        ++bytes;
        if (max_bytes > 0 && bytes >= max_bytes) return nats / (bytes * std::log(2.0));
      }
    }
  }
  return bytes == 0 ? 0.0 : nats / (static_cast<double>(bytes) * std::log(2.0));
}

std::vector<double> next_token_entropies(const nn::TransformerLM<float>& model,
                                         const std::vector<std::int32_t>& tokens) {
  nn::NoGradGuard no_grad;
  const std::int64_t context = model.config().max_seq_len;
  const std::int64_t vocab = model.config().vocab_size;
  std::vector<double> h;
  h.reserve(tokens.size());
  auto cache = model.make_cache(1);
  for (auto token : tokens) {
    if (cache.front().length >= context) cache = model.make_cache(1);  // context restarts
    auto logits = contiguous(model.forward_cached({token}, 1, cache));
    h.push_back(row_stats(logits.data(), vocab).entropy);
  }
  return h;
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
      h.push_back(row_stats(logits.data() + i * vocab, vocab).entropy);
  }
  return h;
}

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
  std::int64_t start_step = 0;
  if (resume && std::filesystem::exists(ckpt)) {
    const auto cfg = nlohmann::json::parse(nn::load_checkpoint(ckpt.string(), model));
    start_step = cfg.value("step", std::int64_t{0});
    progress << "resumed from " << ckpt.string() << " at step " << start_step << "\n";
  }
  auto params = model.trainable_parameters();
  nn::AdamW<float> opt(params, {o.lr, 0.9, 0.95, 1e-8, o.weight_decay});
  nn::WarmupCosineLr schedule(o.lr, o.warmup, o.steps, o.min_lr);
  schedule.set_step(start_step);
  std::mt19937_64 rng(o.seed + static_cast<std::uint64_t>(start_step));
  std::uniform_int_distribution<std::size_t> offset(
      0, stream.size() - static_cast<std::size_t>(T) - 1);

  std::ofstream log(o.out_dir / "train_log.csv", resume ? std::ios::app : std::ios::trunc);
  if (!resume || start_step == 0)
    log << "step,loss_nats,bits_per_token,val_bits_per_byte,tokens_per_second,lr\n";
  auto config_json = [&](std::int64_t step, double val_bpb) {
    auto j = model_config_json(o.model);
    j["step"] = step;
    j["manifest_sha256"] = manifest.manifest_sha256;
    j["val_bits_per_byte"] = val_bpb;
    return j.dump();
  };

  TrainReport report;
  const auto t0 = Clock::now();
  auto t_log = t0;
  std::int64_t tokens_since = 0;
  double last_loss = 0.0, last_val = 0.0;
  std::vector<std::int32_t> inputs(static_cast<std::size_t>(o.batch * T)),
      targets(static_cast<std::size_t>(o.batch * T));
  for (std::int64_t step = start_step; step < o.steps; ++step) {
    for (std::int64_t b = 0; b < o.batch; ++b) {
      const std::size_t at = offset(rng);
      std::copy_n(stream.begin() + static_cast<std::ptrdiff_t>(at), T, inputs.begin() + b * T);
      std::copy_n(stream.begin() + static_cast<std::ptrdiff_t>(at) + 1, T, targets.begin() + b * T);
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
    if ((step + 1) % 10 == 0 || eval) {
      const auto now = Clock::now();
      const double dt = std::chrono::duration<double>(now - t_log).count();
      const double tps = dt > 0 ? tokens_since / dt : 0.0;
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      const double eta = elapsed / static_cast<double>(step + 1 - start_step) *
                         static_cast<double>(o.steps - step - 1);
      progress << "step " << step + 1 << "/" << o.steps << "  loss " << std::fixed
               << std::setprecision(3) << last_loss << "  bits/token " << last_loss / std::log(2.0)
               << "  val bits/byte " << last_val << "  tok/s " << std::setprecision(0) << tps
               << "  ETA " << eta << " s\n"
               << std::flush;
      log << step + 1 << "," << last_loss << "," << last_loss / std::log(2.0) << ","
          << (eval ? std::to_string(last_val) : std::string()) << "," << tps << "," << opt.lr()
          << "\n";
      log.flush();
      t_log = now;
      tokens_since = 0;
    }
    if (eval) nn::save_checkpoint(ckpt.string(), model, config_json(step + 1, last_val));
  }
  report.steps = o.steps;
  report.final_train_loss = last_loss;
  report.val_bits_per_byte = last_val;
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report.tokens_per_second =
      report.seconds > 0
          ? static_cast<double>((o.steps - start_step) * o.batch * T) / report.seconds
          : 0;
  report.checkpoint = ckpt;
  return report;
}

}  // namespace neat::blt
