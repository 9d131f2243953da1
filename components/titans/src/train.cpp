// `neat train titans` (memory + MAG injection on the frozen byte LM, backpropagating through
// the inner updates) and `neat titans eval` (bits per byte with test-time memory vs memory
// frozen at M_0, per domain, and on a document repeated twice in one stream).
#include "neat/titans/train.hpp"

#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "neat/blt/byte_lm.hpp"
#include "neat/config/optimizer_keys.hpp"
#include "neat/data/corpus.hpp"
#include "neat/nn/ops.hpp"
#include "neat/nn/optim.hpp"

namespace neat::titans {

using config::Schema;
using nn::Tensor;

config::Schema TitansTrainOptions::schema() {
  auto memory =
      Schema::map()
          .optional("dim", Schema::integer(1, 4096).default_value("256"),
                    "d: keys, values, readout")
          .optional("depth", Schema::integer(1, 3).default_value("2"),
                    "L_M, layers of the memory MLP")
          .optional("hidden", Schema::integer(1, 8192).default_value("256"),
                    "hidden width (L_M >= 2)")
          .optional("chunk", Schema::integer(1, 4096).default_value("32"),
                    "C, associations per chunk")
          .optional("persistent", Schema::integer(0, 1024).default_value("4"),
                    "N_p persistent vectors")
          .optional("l2_norm", Schema::boolean().default_value("true"), "l2-normalise q and k")
          .optional("theta_max", Schema::number(0, 100).default_value("0.5"),
                    "max inner learning rate")
          .optional("eta_max", Schema::number(0, 1).default_value("0.9"), "max momentum decay")
          .optional("alpha_max", Schema::number(0, 1).default_value("0.1"), "max forgetting");
  TitansTrainOptions d;  // the documented defaults are the struct's
  auto train =
      Schema::map()
          .optional("steps", Schema::integer(1, 100000000).default_value("300"), "AdamW steps")
          .optional("windows", Schema::integer(1, 1024).default_value("8"),
                    "context windows per training sequence")
          .optional("repeat_probability", Schema::number(0, 1).default_value("0.5"),
                    "share of sequences whose second half repeats the first")
          .optional("balance_domains", Schema::boolean().default_value("false"),
                    "draw the domain uniformly, then one of its documents (false: every document "
                    "equally likely)");
  config::add_optimizer_keys(train, {d.lr, d.min_lr, d.warmup, d.weight_decay, d.clip}, 10)
      .optional("max_minutes", Schema::number(0.01, 1e6).default_value("20"),
                "wall-clock budget; training stops and saves when exceeded");
  config::add_run_keys(train, {d.seed, d.threads});
  return Schema::map()
      .optional("base_model", Schema::string().default_value("models/blt/byte_lm.bf16.ckpt"),
                "frozen byte LM")
      .optional("corpus", Schema::string().default_value("data/corpus"), "prepared corpus")
      .optional("domains", Schema::list(Schema::string(), 1), "train domains")
      .optional("out_dir", Schema::string().default_value("models/titans"), "output directory")
      .optional("init", Schema::string(),
                "warm start from this MAG checkpoint (memory parameters and injection; shapes "
                "must match)")
      .optional("layer", Schema::integer(0, 64).default_value("2"),
                "MAG injection after this block")
      .optional("patch_threshold", Schema::number(0, 100).default_value("1.335442066192627"),
                "theta_g of the global entropy patching rule (nats)")
      .optional("values", Schema::one_of({"latents", "bytes"}).default_value("latents"),
                "value side of an association: the next patch's latent, or a learned embedding "
                "of the bytes the next patch predicts (copy values)")
      .optional("offsets", Schema::integer(0, 64).default_value("0"),
                "K: offsets of the byte values and per-offset injection projections (0: none)")
      .optional("keys",
                Schema::map()
                    .required("ngrams", Schema::list(Schema::integer(1, 64), 1),
                              "n of each hashed n-gram block (the n tokens ending a patch)")
                    .required("dim", Schema::integer(1, 65536),
                              "width of the n-gram features h (a multiple of the number of "
                              "ngrams); the memory reads [unit latent ; h]"),
                "n-gram keys (hashed n-gram features of the patch's last tokens; absent: the "
                "unit latents alone)")
      .optional("readout_norm", Schema::boolean().default_value("false"),
                "normalise the readout (RMS, learned gain) before the MAG projections (Titans "
                "§4.2); a fresh model only, a warm start keeps its own")
      .optional("gate_level", Schema::boolean().default_value("false"),
                "the MAG gate also reads the readout's level log(mean r^2) (a 'seen before' "
                "signal), weight starting at 0; a warm start without it gains it")
      .optional("storage", Schema::one_of({"f32", "bf16"}).default_value("f32"),
                "tensor storage of the saved model (bf16: half the file, rounded to nearest "
                "even; training stays float32)")
      .optional("memory", memory, "the neural memory")
      .optional("train", train, "the outer loop");
}

TitansTrainOptions TitansTrainOptions::load(const std::filesystem::path& file) {
  const auto root = config::load_file(file, schema());
  TitansTrainOptions o;
  o.memory.chunk = 32;
  o.memory.theta_max = 0.5;
  if (root["base_model"]) o.base_model = root["base_model"].as<std::string>();
  if (root["corpus"]) o.corpus = root["corpus"].as<std::string>();
  if (root["domains"]) o.domains = root["domains"].as<std::vector<std::string>>();
  if (root["out_dir"]) o.out_dir = root["out_dir"].as<std::string>();
  if (root["init"]) o.init_model = root["init"].as<std::string>();
  if (root["layer"]) o.layer = root["layer"].as<std::int64_t>();
  if (root["patch_threshold"]) o.patch_threshold = root["patch_threshold"].as<double>();
  if (root["values"]) o.byte_values = root["values"].as<std::string>() == "bytes";
  if (root["offsets"]) o.offsets = root["offsets"].as<std::int64_t>();
  if (o.byte_values && o.offsets < 1) {
    config::Issue issue;
    issue.file = file.string();
    issue.path = "offsets";
    issue.message = "values: bytes needs offsets >= 1";
    throw config::ConfigError({issue});
  }
  if (root["readout_norm"]) o.readout_norm = root["readout_norm"].as<bool>();
  if (root["gate_level"]) o.gate_level = root["gate_level"].as<bool>();
  if (root["storage"]) o.store_bf16 = root["storage"].as<std::string>() == "bf16";
  if (const auto k = root["keys"]) {
    o.keys.sizes = k["ngrams"].as<std::vector<std::int64_t>>();
    o.keys.dim = k["dim"].as<std::int64_t>();
    try {
      o.keys.validate();
    } catch (const std::invalid_argument& e) {
      config::Issue issue;
      issue.file = file.string();
      issue.path = "keys";
      issue.message = e.what();
      throw config::ConfigError({issue});
    }
  }
  if (const auto m = root["memory"]) {
    if (m["dim"]) o.memory.dim = m["dim"].as<std::int64_t>();
    if (m["depth"]) o.memory.depth = m["depth"].as<std::int64_t>();
    if (m["hidden"]) o.memory.hidden = m["hidden"].as<std::int64_t>();
    if (m["chunk"]) o.memory.chunk = m["chunk"].as<std::int64_t>();
    if (m["persistent"]) o.memory.persistent = m["persistent"].as<std::int64_t>();
    if (m["l2_norm"]) o.memory.l2_norm = m["l2_norm"].as<bool>();
    if (m["theta_max"]) o.memory.theta_max = m["theta_max"].as<double>();
    if (m["eta_max"]) o.memory.eta_max = m["eta_max"].as<double>();
    if (m["alpha_max"]) o.memory.alpha_max = m["alpha_max"].as<double>();
  }
  if (const auto t = root["train"]) {
    if (t["steps"]) o.steps = t["steps"].as<std::int64_t>();
    if (t["windows"]) o.windows = t["windows"].as<std::int64_t>();
    if (t["repeat_probability"]) o.repeat_probability = t["repeat_probability"].as<double>();
    if (t["balance_domains"]) o.balance_domains = t["balance_domains"].as<bool>();
    config::read_optimizer_keys(t, {o.lr, o.min_lr, o.warmup, o.weight_decay, o.clip});
    if (t["max_minutes"]) o.max_minutes = t["max_minutes"].as<double>();
    config::read_run_keys(t, {o.seed, o.threads});
  }
  return o;
}

namespace {

double norm_of_difference(const Tensor<float>& a, const std::vector<float>& b) {
  const auto v = a.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < v.size(); ++i) s += double(v[i] - b[i]) * double(v[i] - b[i]);
  return std::sqrt(s);
}

blt::PatcherOptions global_patcher(double threshold) {
  blt::PatcherOptions p;
  p.mode = blt::PatchMode::global;
  p.threshold = threshold;
  return p;
}

}  // namespace

nlohmann::json train_titans(const TitansTrainOptions& o, std::ostream& progress) {
  nn::set_num_threads(o.threads);
  const auto t0 = std::chrono::steady_clock::now();
  auto lm = blt::load_byte_lm(o.base_model);
  lm->set_trainable(false);
  const auto& lc = lm->config();
  if (o.layer >= lc.layers) {
    throw std::invalid_argument("titans train: layer " + std::to_string(o.layer) +
                                " but the byte LM has " + std::to_string(lc.layers) + " blocks");
  }
  MemoryConfig mc = o.memory;
  mc.input_dim = lc.dim + (o.keys.defined() ? o.keys.dim : 0);
  mc.seed = o.seed;
  MagModel model;
  model.memory_config = mc;
  model.keys = o.keys;
  model.patcher = global_patcher(o.patch_threshold);
  auto leaf = [](const Tensor<float>& t) {
    Tensor<float> c = t.detach().clone();
    c.set_requires_grad(true);
    return c;
  };
  if (o.init_model.empty()) {
    MemoryParams<float> fresh = MemoryParams<float>::init(mc);
    if (o.keys.defined() && o.keys.dim == mc.dim) {
      // Keys and queries start as the n-gram features themselves (W = [0 ; I]): identical
      // contexts address the same association, distinct ones nearly orthogonal directions.
      std::vector<float> w(static_cast<std::size_t>(mc.input_dim * mc.dim), 0.0f);
      for (std::int64_t i = 0; i < mc.dim; ++i)
        w[static_cast<std::size_t>((lc.dim + i) * mc.dim + i)] = 1;
      fresh.w_k = Tensor<float>::from_vector({mc.input_dim, mc.dim}, w, true);
      fresh.w_q = Tensor<float>::from_vector({mc.input_dim, mc.dim}, w, true);
      // A linear memory starts empty (M_0 = 0): a random M_0 q of norm ~1 would drown the
      // associations written at theta <= theta_max (measured in the recall test: cos 0.24
      // with a random M_0, 0.58 with M_0 = 0).
      if (mc.depth == 1) fresh.m0[0] = Tensor<float>::zeros({mc.dim, mc.dim}, true);
    }
    model.memory = std::make_unique<NeuralMemory<float>>(mc, std::move(fresh));
    model.injection = MagInjection<float>::init(
        {o.layer, lc.dim, mc.dim, o.offsets, o.readout_norm, o.gate_level}, o.seed + 1);
    if (o.byte_values)
      model.values = ByteValues<float>::init(o.offsets, lc.vocab_size, mc.input_dim, o.seed + 2);
  } else {
    // Warm start: parameters from the checkpoint (shapes checked by NeuralMemory against this
    // config), trainable again; gate maxima and chunk from this config.
    MagModel init = load_mag_model(o.init_model);
    const auto& ic = init.injection.config;
    if (ic.layer != o.layer || ic.model_dim != lc.dim || ic.memory_dim != mc.dim) {
      throw std::invalid_argument(
          "titans train: init " + o.init_model.string() + " injects after block " +
          std::to_string(ic.layer) + " with widths " + std::to_string(ic.model_dim) + "/" +
          std::to_string(ic.memory_dim) + ", the config asks for block " + std::to_string(o.layer) +
          " with " + std::to_string(lc.dim) + "/" + std::to_string(mc.dim));
    }
    if (init.keys.sizes != o.keys.sizes || init.keys.dim != o.keys.dim) {
      throw std::invalid_argument("titans train: init " + o.init_model.string() +
                                  " has other n-gram keys than the config");
    }
    const MemoryParams<float>& p = init.memory->params();
    MemoryParams<float> fresh;
    fresh.w_k = leaf(p.w_k);
    fresh.w_v = leaf(p.w_v);
    fresh.w_q = leaf(p.w_q);
    fresh.theta_w = leaf(p.theta_w);
    fresh.theta_b = leaf(p.theta_b);
    fresh.eta_w = leaf(p.eta_w);
    fresh.eta_b = leaf(p.eta_b);
    fresh.alpha_w = leaf(p.alpha_w);
    fresh.alpha_b = leaf(p.alpha_b);
    for (const auto& w : p.m0) fresh.m0.push_back(leaf(w));
    if (p.persistent.defined()) fresh.persistent = leaf(p.persistent);
    model.memory = std::make_unique<NeuralMemory<float>>(mc, std::move(fresh));
    model.injection = init.injection;
    for (auto* t : {&model.injection.w_o, &model.injection.w_g, &model.injection.b_g})
      *t = leaf(*t);
    if (ic.readout_norm) model.injection.r_gain = leaf(model.injection.r_gain);
    // A model without the gate's level input gains it (w_level = 0: the same gate); one with
    // it keeps it.
    if (ic.gate_level && !o.gate_level) {
      throw std::invalid_argument("titans train: init " + o.init_model.string() +
                                  " has gate_level; set gate_level: true");
    }
    model.injection.config.gate_level = o.gate_level;
    if (o.gate_level) {
      model.injection.w_level =
          ic.gate_level ? leaf(init.injection.w_level) : Tensor<float>::zeros({lc.dim}, true);
    }
    // A model without per-offset projections or byte values gains them (w_off = 0, a fresh
    // table): the memory, keys, queries, gates and W_o carry over.
    const std::int64_t have = ic.offsets;
    model.injection.config.offsets = o.offsets;
    if (o.offsets != have && have > 0) {
      throw std::invalid_argument("titans train: init " + o.init_model.string() + " has " +
                                  std::to_string(have) + " offsets, the config asks for " +
                                  std::to_string(o.offsets));
    }
    if (o.offsets > 0) {
      model.injection.w_off = have > 0 ? leaf(init.injection.w_off)
                                       : Tensor<float>::zeros({mc.dim, o.offsets * lc.dim}, true);
    }
    if (o.byte_values) {
      if (init.values.defined() &&
          (init.values.offsets != o.offsets || init.values.vocab != lc.vocab_size)) {
        throw std::invalid_argument("titans train: init " + o.init_model.string() +
                                    " has byte values of other offsets or vocabulary");
      }
      model.values = init.values.defined() ? init.values
                                           : ByteValues<float>::init(o.offsets, lc.vocab_size,
                                                                     mc.input_dim, o.seed + 2);
      model.values.table = leaf(model.values.table);
    } else if (init.values.defined()) {
      throw std::invalid_argument("titans train: init " + o.init_model.string() +
                                  " has byte values; set values: bytes");
    }
    progress << "titans train: warm start from " << o.init_model.string() << "\n";
  }

  const auto manifest = data::load_manifest(o.corpus);
  const std::uint64_t seq_bytes = static_cast<std::uint64_t>(o.windows * lc.max_seq_len);
  std::vector<std::vector<std::uint8_t>> docs;
  std::vector<std::vector<std::size_t>> by_domain;  // indices into docs per domain with any
  for (const auto& domain : o.domains) {
    std::vector<std::size_t> mine;
    for (auto& d : data::load_split(manifest, domain, data::Split::kTrain)) {
      if (d.bytes.size() >= std::max<std::uint64_t>(16384, seq_bytes)) {
        mine.push_back(docs.size());
        docs.push_back(std::move(d.bytes));
      }
    }
    if (!mine.empty()) by_domain.push_back(std::move(mine));
  }
  if (docs.empty()) throw std::invalid_argument("titans train: no train document long enough");
  progress << "titans train: " << docs.size()
           << " documents >= " << std::max<std::uint64_t>(16384, seq_bytes)
           << " bytes, sequences of " << seq_bytes << " bytes\n";

  std::vector<Tensor<float>> params;
  std::vector<std::pair<std::string, Tensor<float>>> named;
  for (auto& [n, t] : model.memory->params().named()) named.emplace_back("memory." + n, t);
  for (auto& [n, t] : model.injection.named()) named.emplace_back("mag." + n, t);
  if (model.values.defined()) named.emplace_back("values.table", model.values.table);
  for (auto& [n, t] : named) params.push_back(t);
  const auto w_k0 = model.memory->params().w_k.to_vector();
  const auto w_v0 = model.memory->params().w_v.to_vector();
  const auto w_q0 = model.memory->params().w_q.to_vector();
  const auto w_o0 = model.injection.w_o.to_vector();
  nn::AdamWOptions ao;
  ao.lr = o.lr;
  ao.weight_decay = o.weight_decay;
  nn::AdamW<float> opt(params, ao);
  nn::WarmupCosineLr schedule(o.lr, o.warmup, o.steps, o.min_lr);

  std::filesystem::create_directories(o.out_dir);
  const nn::DType storage = o.store_bf16 ? nn::DType::bf16 : nn::DType::f32;
  std::ofstream log(o.out_dir / "train_log.csv");
  log << "step,bits_per_byte,repeat,lr,grad_norm,dW_K,dW_V,dW_Q,dW_o,seconds\n";
  std::mt19937_64 rng(o.seed);
  double first_loss = -1, last_loss = 0, avg = 0;
  std::int64_t step = 0, diverged = 0;
  nlohmann::json summary;
  for (; step < o.steps; ++step) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (elapsed > o.max_minutes * 60) {
      progress << "titans train: wall-clock budget of " << o.max_minutes << " min reached at step "
               << step << "\n";
      break;
    }
    std::size_t pick = 0;
    if (o.balance_domains) {
      const auto& mine = by_domain[rng() % by_domain.size()];
      pick = mine[rng() % mine.size()];
    } else {
      pick = rng() % docs.size();
    }
    const auto& doc = docs[pick];
    const std::uint64_t off = rng() % (doc.size() - seq_bytes + 1);
    const bool repeat = std::uniform_real_distribution<double>(0, 1)(rng) < o.repeat_probability;
    std::vector<std::int32_t> tokens = {blt::kBos};
    for (std::uint64_t i = 0; i < seq_bytes; ++i)
      tokens.push_back(doc[off + (repeat ? i % (seq_bytes / 2) : i)]);
    const DocumentPatches dp = patch_document(*lm, tokens, model.patcher, o.layer);
    const Tensor<float> readouts =
        model_readouts(model, dp.latents, tokens, dp.patch_starts, /*update=*/true);
    bool finite = true;
    for (float v : readouts.to_vector()) finite = finite && std::isfinite(v);
    if (!finite) {  // the inner updates diverged on this sequence: no outer step, counted
      ++diverged;
      progress << "titans train: step " << step + 1
               << ": the memory diverged (non-finite readout); step skipped (" << diverged
               << " so far; lower memory.theta_max or memory.chunk if this recurs)\n";
      log << step + 1 << ",nan," << (repeat ? 1 : 0) << ",0,0,0,0,0,0,0\n";
      schedule.advance();
      if (diverged > std::max<std::int64_t>(5, o.steps / 10))
        throw std::runtime_error("titans train: the memory diverged on " +
                                 std::to_string(diverged) +
                                 " sequences; lower memory.theta_max or memory.chunk");
      continue;
    }
    std::vector<std::int32_t> index, targets;
    for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
      index.push_back(static_cast<std::int32_t>(dp.patch_of_position[i]));
      targets.push_back(tokens[i + 1]);
    }
    const Tensor<float> r = nn::gather_rows(readouts, index, {o.windows, lc.max_seq_len});
    std::vector<std::int32_t> offsets = offsets_in_patch(dp.patch_of_position);
    offsets.pop_back();  // the last position predicts nothing
    Tensor<float> x = model.injection.inject(dp.captured, r, &offsets);
    for (std::size_t b = static_cast<std::size_t>(o.layer) + 1; b < lm->blocks.size(); ++b)
      x = lm->blocks[b]->forward(x);
    const Tensor<float> logits = lm->lm_head.forward(lm->norm_f.forward(x));
    const Tensor<float> loss = nn::cross_entropy(logits, targets);
    loss.backward();
    const double gnorm = nn::clip_grad_norm(params, o.clip);
    opt.set_lr(schedule.lr());
    opt.step();
    opt.zero_grad();
    const double bpb = static_cast<double>(loss.item()) / std::log(2.0);
    if (!std::isfinite(bpb))
      throw std::runtime_error("titans train: non-finite loss at step " + std::to_string(step));
    if (first_loss < 0) first_loss = bpb;
    last_loss = bpb;
    avg = step == 0 ? bpb : 0.95 * avg + 0.05 * bpb;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double dk = norm_of_difference(model.memory->params().w_k, w_k0);
    const double dv = norm_of_difference(model.memory->params().w_v, w_v0);
    const double dq = norm_of_difference(model.memory->params().w_q, w_q0);
    const double dwo = norm_of_difference(model.injection.w_o, w_o0);
    log << step + 1 << ',' << bpb << ',' << (repeat ? 1 : 0) << ',' << schedule.lr() << ',' << gnorm
        << ',' << dk << ',' << dv << ',' << dq << ',' << dwo << ',' << secs << '\n';
    log.flush();
    progress << "step " << step + 1 << "/" << o.steps << " bpb " << std::fixed
             << std::setprecision(4) << bpb << " (avg " << avg << ") |dW_K| " << dk << " |dW_V| "
             << dv << " |dW_Q| " << dq << " |dW_o| " << dwo << " " << std::setprecision(1) << secs
             << " s\n";
    schedule.advance();
    if ((step + 1) % 25 == 0)
      save_mag_model(o.out_dir / "mag.ckpt", model, storage);  // progress so far
    summary["final_dW_K"] = dk;
    summary["final_dW_V"] = dv;
    summary["final_dW_Q"] = dq;
    summary["final_dW_o"] = dwo;
  }
  save_mag_model(o.out_dir / "mag.ckpt", model, storage);
  summary["steps"] = step;
  summary["diverged_steps_skipped"] = diverged;
  summary["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  summary["first_bits_per_byte"] = first_loss;
  summary["last_bits_per_byte"] = last_loss;
  summary["smoothed_last_bits_per_byte"] = avg;
  summary["corpus_manifest_sha256"] = manifest.manifest_sha256;
  summary["checkpoint"] = (o.out_dir / "mag.ckpt").string();
  return summary;
}

namespace {

struct DocScores {
  double base_bits = 0, memory_bits = 0, frozen_bits = 0;
  std::uint64_t bytes = 0;
};

// Bits of the byte targets whose position t + 1 lies in [from, to) (all when to == 0).
double bits_in(const std::vector<std::int32_t>& tokens, const std::vector<double>& lp,
               std::size_t from, std::size_t to) {
  double nats = 0;
  for (std::size_t t = 0; t < lp.size(); ++t) {
    const std::size_t target = t + 1;
    if (tokens[target] < 256 && target >= from && (to == 0 || target < to)) nats -= lp[t];
  }
  return nats / std::log(2.0);
}

std::vector<double> scored(const nn::TransformerLM<float>& lm, const MagModel& model,
                           const std::vector<std::int32_t>& tokens, const DocumentPatches& dp,
                           bool update) {
  nn::NoGradGuard no_grad;
  const Tensor<float> r = model_readouts(model, dp.latents, tokens, dp.patch_starts, update);
  return blt::target_log_probs(
      lm, tokens, 8,
      make_readout_hook(model.injection, dp.patch_of_position, r.contiguous().to_vector()));
}

}  // namespace

nlohmann::json evaluate_titans(const TitansEvalOptions& o, std::ostream& progress) {
  nn::set_num_threads(o.threads);
  auto lm = blt::load_byte_lm(o.base_model);
  const MagModel model = load_mag_model(o.model);
  if (model.injection.config.model_dim != lm->config().dim) {
    throw std::invalid_argument("titans eval: the MAG model is for width " +
                                std::to_string(model.injection.config.model_dim) +
                                ", the byte LM has " + std::to_string(lm->config().dim));
  }
  const auto manifest = data::load_manifest(o.corpus);
  const auto split = data::parse_split(o.split);
  nlohmann::json out;
  out["split"] = o.split;
  out["min_document_bytes"] = o.min_document_bytes;
  out["corpus_manifest_sha256"] = manifest.manifest_sha256;
  DocScores total;
  std::int64_t total_docs = 0;
  for (const auto& domain : o.domains) {
    DocScores ds;
    std::int64_t n_docs = 0;
    std::vector<std::uint8_t> first;
    for (const auto& doc : data::load_split(manifest, domain, split)) {
      if (doc.bytes.size() < o.min_document_bytes) continue;
      if (first.empty()) first = doc.bytes;
      if (o.repeat_only) break;
      if (o.max_documents > 0 && n_docs >= o.max_documents) break;
      const auto tokens = blt::document_tokens(doc.bytes);
      const DocumentPatches dp = patch_document(*lm, tokens, model.patcher);
      ds.base_bits += blt::byte_bits(tokens, blt::target_log_probs(*lm, tokens, 8));
      ds.memory_bits += bits_in(tokens, scored(*lm, model, tokens, dp, true), 0, 0);
      ds.frozen_bits += bits_in(tokens, scored(*lm, model, tokens, dp, false), 0, 0);
      ds.bytes += doc.bytes.size();
      ++n_docs;
    }
    if (n_docs > 0) {
      const double b = static_cast<double>(ds.bytes);
      out["domains"][domain] = {{"documents", n_docs},
                                {"bytes", ds.bytes},
                                {"base_bpb", ds.base_bits / b},
                                {"memory_bpb", ds.memory_bits / b},
                                {"frozen_memory_bpb", ds.frozen_bits / b}};
      progress << "titans eval " << domain << ": " << out["domains"][domain].dump() << "\n";
      total.base_bits += ds.base_bits;
      total.memory_bits += ds.memory_bits;
      total.frozen_bits += ds.frozen_bits;
      total.bytes += ds.bytes;
      total_docs += n_docs;
    }
    if ((o.repeat || o.repeat_only) && !first.empty()) {
      // One stream: BOS, the document's first repeat_bytes bytes, the same bytes again, EOS.
      const std::size_t len = std::min<std::size_t>(first.size(), o.repeat_bytes);
      std::vector<std::uint8_t> twice(first.begin(),
                                      first.begin() + static_cast<std::ptrdiff_t>(len));
      twice.insert(twice.end(), first.begin(), first.begin() + static_cast<std::ptrdiff_t>(len));
      const auto tokens = blt::document_tokens(twice);
      const DocumentPatches dp = patch_document(*lm, tokens, model.patcher);
      const double base =
          bits_in(tokens, blt::target_log_probs(*lm, tokens, 8), 1 + len, 1 + 2 * len);
      const double mem =
          bits_in(tokens, scored(*lm, model, tokens, dp, true), 1 + len, 1 + 2 * len);
      const double frozen =
          bits_in(tokens, scored(*lm, model, tokens, dp, false), 1 + len, 1 + 2 * len);
      const double b = static_cast<double>(len);
      out["repeat"][domain] = {{"copy_bytes", len},
                               {"second_copy_base_bpb", base / b},
                               {"second_copy_memory_bpb", mem / b},
                               {"second_copy_frozen_memory_bpb", frozen / b},
                               {"reduction_vs_frozen", 1.0 - mem / frozen},
                               {"target_met", 1.0 - mem / frozen >= 0.10}};
      progress << "titans eval repeat " << domain << ": " << out["repeat"][domain].dump() << "\n";
    }
  }
  if (total.bytes > 0) {
    const double b = static_cast<double>(total.bytes);
    out["all"] = {{"documents", total_docs},
                  {"bytes", total.bytes},
                  {"base_bpb", total.base_bits / b},
                  {"memory_bpb", total.memory_bits / b},
                  {"frozen_memory_bpb", total.frozen_bits / b}};
  }
  return out;
}

}  // namespace neat::titans
