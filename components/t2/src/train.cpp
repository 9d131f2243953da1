// Expert training (SVF with a KL penalty), prototypes, CEM few-shot mixtures, evaluation.
#include "neat/t2/train.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <limits>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>

#include "neat/blt/byte_lm.hpp"
#include "neat/config/optimizer_keys.hpp"
#include "neat/data/corpus.hpp"
#include "neat/nn/ops.hpp"
#include "neat/nn/optim.hpp"
#include "neat/t2/experts.hpp"

namespace neat::t2 {

using config::Schema;
using Clock = std::chrono::steady_clock;

namespace {

std::string number_text(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

// The search keys shared by dispatch.cem and dispatch.refine, with `d`'s values as defaults.
Schema cem_search_keys(const CemOptions& d, const char* std_what) {
  return Schema::map()
      .optional("population",
                Schema::integer(2, 100000).default_value(std::to_string(d.population)),
                "CEM samples per iteration")
      .optional("elite_ratio", Schema::number(1e-6, 1).default_value(number_text(d.elite_ratio)),
                "fraction of the population that refits the Gaussian")
      .optional("iterations",
                Schema::integer(1, 100000).default_value(std::to_string(d.iterations)),
                "CEM iterations")
      .optional("initial_std", Schema::number(1e-6, 100).default_value(number_text(d.initial_std)),
                std_what);
}

void read_cem_search_keys(const YAML::Node& node, CemOptions& o) {
  if (node["population"]) o.population = node["population"].as<std::int64_t>();
  if (node["elite_ratio"]) o.elite_ratio = node["elite_ratio"].as<double>();
  if (node["iterations"]) o.iterations = node["iterations"].as<std::int64_t>();
  if (node["initial_std"]) o.initial_std = node["initial_std"].as<double>();
}

}  // namespace

config::Schema T2TrainOptions::schema() {
  const T2TrainOptions defaults;
  auto cem =
      cem_search_keys(CemOptions{}, "initial std of the search distribution over theta")
          .optional("identity_component", Schema::boolean().default_value("true"),
                    "also weigh z = 1 (the base LM) in the mixture; first sample alpha_0 = 1");
  auto svd =
      Schema::map()
          .optional("energy_fraction", Schema::number(1e-6, 1).default_value("1.0"),
                    "keep the smallest rank holding this fraction of ||W||_F^2 (experts: 1)")
          .optional("randomized_threshold", Schema::integer(1, 1 << 30).default_value("2048"),
                    "min(rows, cols) from which the randomized SVD is used")
          .optional("randomized_rank", Schema::integer(1, 1 << 30).default_value("256"),
                    "singular triplets sought by the randomized SVD")
          .optional("oversampling", Schema::integer(0, 1 << 20).default_value("10"),
                    "extra random directions (Halko et al. p)")
          .optional("power_iterations", Schema::integer(0, 100).default_value("2"),
                    "subspace iterations (Halko et al. q)")
          .optional("storage", Schema::one_of({"f32", "bf16"}).default_value("f32"),
                    "dtype of U and V")
          .optional("matrices", Schema::one_of({"mlp", "all", "all+head"}).default_value("mlp"),
                    "matrices SVF adapts: mlp (each block's MLP up and down), all (also the "
                    "attention projections wq, wk, wv, wo) or all+head (also the output "
                    "projection lm_head)");
  T2TrainOptions d;  // the documented defaults are the struct's
  auto train =
      Schema::map()
          .optional("steps", Schema::integer(1, 100000000).default_value("150"),
                    "AdamW steps per domain")
          .optional("batch", Schema::integer(1, 4096).default_value("8"), "windows per step")
          .optional("seq_len", Schema::integer(2, 8192).default_value("128"), "tokens per window");
  config::add_optimizer_keys(train, {d.lr, d.min_lr, d.warmup, d.weight_decay, d.clip}, 10, " of z")
      .optional("kl_coefficient", Schema::number(0, 1e6).default_value("0.05"),
                "lambda of CE + lambda KL(adapted || base)")
      .optional("average_last", Schema::number(0, 1).default_value("0"),
                "the expert is the mean z over this fraction of the last steps (Polyak-Ruppert "
                "iterate averaging; 0: the last z)")
      .optional("eval_bytes", Schema::integer(1, 1ll << 40).default_value("16384"),
                "validation bytes per domain scored before and after")
      .optional("init", Schema::string().default_value(""),
                "experts file whose z of the same domain each run starts from (\"\": z = 1)")
      .optional("eval_every", Schema::integer(0, 100000000).default_value("0"),
                "also score the validation bits per byte every this many steps (0: only at the "
                "end); logged in train_log.csv");
  config::add_run_keys(train, {d.seed, d.threads});
  auto dispatch =
      Schema::map()
          .optional("embedding_positions", Schema::integer(1, 8192).default_value("256"),
                    "N: task embedding over BOS + the first N-1 bytes")
          .optional("prototype_documents", Schema::integer(0, 1 << 30).default_value("32"),
                    "train documents averaged per prototype (0: all)")
          .optional("prototypes_per_class", Schema::list(Schema::integer(1, 4096), 1),
                    "k-means prototypes per class tried; the best on the validation split is "
                    "kept (default [1, 2, 4, 8])")
          .optional("whitening_shrinkage", Schema::list(Schema::number(1e-9, 1e6)),
                    "shrinkage of the within-class whitening tried next to centring only "
                    "(default [0.01, 0.1, 1])")
          .optional("temperature", Schema::number(1e-9, 100).default_value("0.02"),
                    "softmax temperature of the confidence over cosines")
          .optional("fewshot_domains", Schema::list(Schema::string()),
                    "domains without an expert, served by a CEM mixture")
          .optional("fewshot_documents", Schema::integer(1, 100000).default_value("5"),
                    "k few-shot train documents")
          .optional("expert_scales", Schema::list(Schema::number(0.0, 4.0), 1),
                    "expert strengths s tried by --merge per expert domain: alpha = s e_k, "
                    "z' = 1 + s (z_k - 1), chosen by validation bits per byte (default [1])")
          .optional("fewshot_bytes", Schema::integer(1, 1ll << 30).default_value("512"),
                    "bytes of each few-shot document scored by CEM")
          .optional("cem", cem, "cross-entropy method")
          .optional(
              "refine",
              cem_search_keys(defaults.refine_cem, "initial std around the class's alpha")
                  .optional("domains", Schema::list(Schema::string()),
                            "expert domains whose alpha --merge refines on the validation split "
                            "(default none)"),
              "CEM over real alpha = theta started at each listed expert domain's alpha, scored "
              "by its validation bits per byte (train.eval_bytes)");
  return Schema::map()
      .optional("base_model", Schema::string().default_value("models/blt/byte_lm.bf16.ckpt"),
                "byte LM checkpoint whose matrices are decomposed")
      .optional("corpus", Schema::string().default_value("data/corpus"), "prepared corpus")
      .optional("domains", Schema::list(Schema::string(), 1), "one expert per domain")
      .optional("decomposition", svd, "SVD settings")
      .optional("train", train, "optimisation of z")
      .optional("dispatch", dispatch, "prototypes and few-shot mixtures")
      .optional("out_dir", Schema::string().default_value("models/t2"), "experts.ckpt, provenance");
}

T2TrainOptions T2TrainOptions::load(const std::filesystem::path& file) {
  const auto root = config::load_file(file, schema());
  T2TrainOptions o;
  if (root["base_model"]) o.base_model = root["base_model"].as<std::string>();
  if (root["corpus"]) o.corpus = root["corpus"].as<std::string>();
  if (root["domains"]) o.domains = root["domains"].as<std::vector<std::string>>();
  if (root["out_dir"]) o.out_dir = root["out_dir"].as<std::string>();
  if (const auto s = root["decomposition"]) {
    if (s["energy_fraction"]) o.svd.energy_fraction = s["energy_fraction"].as<double>();
    if (s["randomized_threshold"])
      o.svd.randomized_threshold = s["randomized_threshold"].as<std::int64_t>();
    if (s["randomized_rank"]) o.svd.randomized_rank = s["randomized_rank"].as<std::int64_t>();
    if (s["oversampling"]) o.svd.oversampling = s["oversampling"].as<std::int64_t>();
    if (s["power_iterations"]) o.svd.power_iterations = s["power_iterations"].as<std::int64_t>();
    if (s["storage"])
      o.svd.storage = s["storage"].as<std::string>() == "bf16" ? nn::DType::bf16 : nn::DType::f32;
    if (s["matrices"]) o.matrices = parse_matrix_set(s["matrices"].as<std::string>());
  }
  if (const auto t = root["train"]) {
    if (t["steps"]) o.steps = t["steps"].as<std::int64_t>();
    if (t["batch"]) o.batch = t["batch"].as<std::int64_t>();
    if (t["seq_len"]) o.seq_len = t["seq_len"].as<std::int64_t>();
    config::read_optimizer_keys(t, {o.lr, o.min_lr, o.warmup, o.weight_decay, o.clip});
    if (t["kl_coefficient"]) o.kl_coefficient = t["kl_coefficient"].as<double>();
    if (t["average_last"]) o.average_last = t["average_last"].as<double>();
    if (t["eval_bytes"]) o.eval_bytes = t["eval_bytes"].as<std::uint64_t>();
    if (t["eval_every"]) o.eval_every = t["eval_every"].as<std::int64_t>();
    if (t["init"]) o.init = t["init"].as<std::string>();
    config::read_run_keys(t, {o.seed, o.threads});
  }
  if (const auto d = root["dispatch"]) {
    if (d["embedding_positions"])
      o.embedding_positions = d["embedding_positions"].as<std::int64_t>();
    if (d["prototype_documents"])
      o.prototype_documents = d["prototype_documents"].as<std::int64_t>();
    if (d["temperature"]) o.temperature = d["temperature"].as<double>();
    if (d["prototypes_per_class"])
      o.prototypes_per_class = d["prototypes_per_class"].as<std::vector<std::int64_t>>();
    if (d["whitening_shrinkage"])
      o.whitening_shrinkage = d["whitening_shrinkage"].as<std::vector<double>>();
    if (d["fewshot_domains"])
      o.fewshot_domains = d["fewshot_domains"].as<std::vector<std::string>>();
    if (d["fewshot_documents"]) o.fewshot_documents = d["fewshot_documents"].as<std::int64_t>();
    if (d["expert_scales"]) o.expert_scales = d["expert_scales"].as<std::vector<double>>();
    if (d["fewshot_bytes"]) o.fewshot_bytes = d["fewshot_bytes"].as<std::uint64_t>();
    if (const auto c = d["cem"]) {
      read_cem_search_keys(c, o.cem);
      if (c["identity_component"]) o.cem.identity_component = c["identity_component"].as<bool>();
    }
    if (const auto r = d["refine"]) {
      if (r["domains"]) o.refine_domains = r["domains"].as<std::vector<std::string>>();
      read_cem_search_keys(r, o.refine_cem);
    }
  }
  o.cem.seed = o.seed;
  o.refine_cem.seed = o.seed;
  o.svd.seed = o.seed;
  return o;
}

namespace {

// Training, CEM and evaluation compose W' exactly (p = 1): the gradient and the scores are those
// of the expert itself, not of the runtime's adaptive precision.
const ComposeOptions kExact{1.0};

// Bits per byte of `docs` (at most max_bytes; 0: all) under the mixture z' = mix(alpha) of `set`,
// its exact weights written into `adapted` first.
double mixture_bits_per_byte(const ModelFactors& factors, const ExpertSet& set,
                             const std::vector<double>& alpha, nn::TransformerLM<float>& adapted,
                             const std::vector<std::vector<std::uint8_t>>& docs,
                             std::uint64_t max_bytes) {
  apply_weights(factors, compose_all(factors, set.mix(alpha), kExact), adapted);
  return blt::bits_per_byte(adapted, docs, max_bytes);
}

std::string file_sha256(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  std::ostringstream s;
  s << in.rdbuf();
  return data::sha256_hex(s.str());
}

std::vector<std::vector<float>> embeddings_of(const nn::TransformerLM<float>& model,
                                              const std::vector<std::vector<std::uint8_t>>& docs,
                                              std::int64_t positions) {
  std::vector<std::vector<float>> out;
  for (const auto& d : docs) out.push_back(task_embedding(model, d, positions));
  return out;
}

std::vector<float> mean_of(const std::vector<std::vector<float>>& rows) {
  std::vector<double> sum(rows.front().size(), 0.0);
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) sum[i] += r[i];
  std::vector<float> out(sum.size());
  for (std::size_t i = 0; i < sum.size(); ++i)
    out[i] = static_cast<float>(sum[i] / static_cast<double>(rows.size()));
  return out;
}

std::vector<std::vector<std::uint8_t>> split_bytes(const data::Manifest& m,
                                                   const std::string& domain, data::Split split) {
  std::vector<std::vector<std::uint8_t>> out;
  for (auto& d : data::load_split(m, domain, split)) out.push_back(std::move(d.bytes));
  return out;
}

std::string now_utc() {
  const auto t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::ostringstream s;
  s << std::put_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  return s.str();
}

// One domain's SVF run: AdamW on z (one vector per adapted matrix), the base model frozen.
// L = CE(adapted) + λ KL(adapted ‖ base), ∂L/∂z from ∂L/∂W' (reverse mode) by z_gradient().
struct DomainRun {
  ExpertVector z;
  double final_loss = 0.0, final_kl = 0.0;
  double seconds = 0.0;
};

DomainRun train_domain(const T2TrainOptions& o, const nn::TransformerLM<float>& base,
                       nn::TransformerLM<float>& adapted, const ModelFactors& factors,
                       const std::vector<std::int32_t>& stream,
                       const std::vector<std::vector<std::uint8_t>>& val, std::ostream& progress,
                       std::ostream& log, const std::string& domain, std::uint64_t seed,
                       const ExpertVector* init) {
  const auto start = Clock::now();
  const std::int64_t B = o.batch, T = o.seq_len;
  if (static_cast<std::int64_t>(stream.size()) < T + 1) {
    throw std::runtime_error("t2: the train split of '" + domain + "' is shorter than one window");
  }
  std::vector<nn::Tensor<float>> z;
  for (std::size_t m = 0; m < factors.factors.size(); ++m) {
    const auto rank = factors.factors[m].rank;
    z.push_back(init != nullptr ? nn::Tensor<float>::from_vector({rank}, init->at(m))
                                : nn::Tensor<float>::full({rank}, 1.0f));
    z.back().set_requires_grad(true);
  }
  nn::AdamW<float> opt(z, {o.lr, 0.9, 0.999, 1e-8, o.weight_decay});
  nn::WarmupCosineLr schedule(o.lr, std::min(o.warmup, o.steps), o.steps, o.min_lr);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::size_t> offset(
      0, stream.size() - static_cast<std::size_t>(T) - 1);
  std::vector<nn::Tensor<float>*> weights;
  for (const auto& name : factors.names) weights.push_back(&adapted_linear(adapted, name).weight);
  DomainRun run;
  // Iterate averaging over the last `averaged` steps (o.average_last; 0: the last z only).
  const std::int64_t averaged =
      o.average_last > 0.0
          ? std::clamp<std::int64_t>(std::llround(o.average_last * static_cast<double>(o.steps)), 1,
                                     o.steps)
          : 0;
  std::vector<std::vector<double>> z_sum;
  if (averaged > 0)
    for (const auto& t : z) z_sum.emplace_back(static_cast<std::size_t>(t.numel()), 0.0);
  for (std::int64_t step = 0; step < o.steps; ++step) {
    {
      nn::NoGradGuard no_grad;
      ExpertVector zv;
      for (const auto& t : z) zv.push_back(t.to_vector());
      apply_weights(factors, compose_all(factors, zv, kExact), adapted);
    }
    std::vector<std::int32_t> in, target;
    in.reserve(static_cast<std::size_t>(B * T));
    for (std::int64_t b = 0; b < B; ++b) {
      const auto at = offset(rng);
      in.insert(in.end(), stream.begin() + at, stream.begin() + at + T);
      target.insert(target.end(), stream.begin() + at + 1, stream.begin() + at + T + 1);
    }
    nn::Tensor<float> base_logp;
    {
      nn::NoGradGuard no_grad;
      base_logp = nn::log_softmax(base.forward(in, B, T));
    }
    for (auto* w : weights) w->zero_grad();
    const auto logits = adapted.forward(in, B, T);
    const auto ce = nn::cross_entropy(logits, target);
    const auto logp = nn::log_softmax(logits);
    // KL(p_adapted ‖ p_base) per position = Σ_v p(v) (log p(v) − log p_base(v)), averaged.
    const auto kl = nn::scale(nn::sum(nn::mul(nn::exp(logp), nn::sub(logp, base_logp))),
                              1.0f / static_cast<float>(B * T));
    const auto loss = nn::add(ce, nn::scale(kl, static_cast<float>(o.kl_coefficient)));
    loss.backward();
    for (std::size_t m = 0; m < z.size(); ++m) {
      const auto g = z_gradient(factors.factors[m], weights[m]->grad().contiguous().to_vector());
      z[m].set_grad(nn::Tensor<float>::from_vector({static_cast<std::int64_t>(g.size())}, g));
    }
    const double norm = nn::clip_grad_norm(z, o.clip);
    opt.set_lr(schedule.lr());
    opt.step();
    schedule.advance();
    if (step >= o.steps - averaged) {
      for (std::size_t m = 0; m < z.size(); ++m) {
        const auto v = z[m].to_vector();
        for (std::size_t i = 0; i < v.size(); ++i) z_sum[m][i] += v[i];
      }
    }
    run.final_loss = ce.item();
    run.final_kl = kl.item();
    log << domain << ',' << step + 1 << ',' << run.final_loss << ',' << run.final_kl << ',' << norm
        << ',' << opt.lr() << ',';
    if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && step + 1 < o.steps) {
      // The validation curve: z after this step, composed into the copy, scored without a graph.
      nn::NoGradGuard no_grad;
      ExpertVector zv;
      for (const auto& t : z) zv.push_back(t.to_vector());
      apply_weights(factors, compose_all(factors, zv, kExact), adapted);
      const double bpb = blt::bits_per_byte(adapted, val, o.eval_bytes);
      log << bpb;
      progress << "t2 " << domain << " step " << step + 1 << ": val bits/byte " << bpb << "\n";
    }
    log << '\n' << std::flush;
    if ((step + 1) % 25 == 0 || step + 1 == o.steps) {
      progress << "t2 " << domain << " step " << step + 1 << "/" << o.steps << " ce "
               << std::setprecision(4) << run.final_loss << " nats, kl " << run.final_kl
               << ", |dL/dz| " << norm << ", "
               << std::chrono::duration<double>(Clock::now() - start).count() << " s\n";
    }
  }
  if (averaged > 0) {
    for (const auto& sum : z_sum) {
      std::vector<float> mean(sum.size());
      for (std::size_t i = 0; i < sum.size(); ++i)
        mean[i] = static_cast<float>(sum[i] / static_cast<double>(averaged));
      run.z.push_back(std::move(mean));
    }
    progress << "t2 " << domain << ": expert = mean z of the last " << averaged << " steps\n";
  } else {
    for (const auto& t : z) run.z.push_back(t.to_vector());
  }
  for (auto* w : weights) w->zero_grad();
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return run;
}

// CEM few-shot mixture of one domain (Sun et al. §3.2): α maximising the log-likelihood of the
// k shots (as −bits per byte over the same bytes, a monotone function of it) under
// z' = α_0·1 + Σ α_k z_k; the val bits per byte of the base and the mixture. Returns the score
// record; `alpha` receives the expert weights.
nlohmann::json fewshot_mixture(const T2TrainOptions& o, const data::Manifest& manifest,
                               const nn::TransformerLM<float>& base,
                               nn::TransformerLM<float>& adapted, const ModelFactors& factors,
                               const ExpertSet& set, const std::string& domain,
                               std::vector<double>& alpha, std::ostream& progress) {
  const auto t_start = Clock::now();
  auto docs = split_bytes(manifest, domain, data::Split::kTrain);
  if (docs.size() > static_cast<std::size_t>(o.fewshot_documents))
    docs.resize(static_cast<std::size_t>(o.fewshot_documents));
  if (docs.empty())
    throw std::runtime_error("t2: no train documents for few-shot '" + domain + "'");
  std::vector<std::vector<std::uint8_t>> shots;
  for (const auto& doc : docs) {
    shots.emplace_back(doc.begin(),
                       doc.begin() + static_cast<std::ptrdiff_t>(
                                         std::min<std::uint64_t>(doc.size(), o.fewshot_bytes)));
  }
  const auto objective = [&](const std::vector<double>& a) {
    return -mixture_bits_per_byte(factors, set, a, adapted, shots, 0);
  };
  const double base_shots = blt::bits_per_byte(base, shots);
  const auto cem = cem_search(set.domains.size(), objective, o.cem);
  const auto val = split_bytes(manifest, domain, data::Split::kVal);
  const double base_bpb = blt::bits_per_byte(base, val, o.eval_bytes);
  const double mix_bpb = mixture_bits_per_byte(factors, set, cem.alpha, adapted, val, o.eval_bytes);
  alpha = cem.alpha;
  const double secs = std::chrono::duration<double>(Clock::now() - t_start).count();
  progress << "t2 few-shot " << domain << ": CEM " << cem.evaluations
           << " evaluations, identity weight " << cem.identity_weight << ", shots bits/byte base "
           << base_shots << " -> " << -cem.best_score << "; val base " << base_bpb << " -> "
           << mix_bpb << " (" << secs << " s)\n";
  return {{"fewshot", true},
          {"alpha", cem.alpha},
          {"identity_weight", cem.identity_weight},
          {"identity_component", o.cem.identity_component},
          {"cem_evaluations", cem.evaluations},
          {"cem",
           {{"population", o.cem.population},
            {"elite_ratio", o.cem.elite_ratio},
            {"iterations", o.cem.iterations},
            {"initial_std", o.cem.initial_std}}},
          {"shots_bits_per_byte_base", base_shots},
          {"shots_bits_per_byte_mixture", -cem.best_score},
          {"val_bits_per_byte_base", base_bpb},
          {"val_bits_per_byte_mixture", mix_bpb},
          {"ratio", mix_bpb / base_bpb},
          {"seconds", secs}};
}

// Train (and val) embeddings of every class of `set`, then fit_dispatch(); the mean prototype of
// each class is refreshed too. Returns the record for the provenance.
nlohmann::json build_dispatch(const T2TrainOptions& o, const data::Manifest& manifest,
                              const nn::TransformerLM<float>& base, ExpertSet& set,
                              std::ostream& progress) {
  ClassEmbeddings train, val;
  nlohmann::json counts = nlohmann::json::object();
  for (auto& cls : set.classes) {
    auto docs = split_bytes(manifest, cls.name, data::Split::kTrain);
    const std::int64_t limit = cls.fewshot ? o.fewshot_documents : o.prototype_documents;
    if (limit > 0 && docs.size() > static_cast<std::size_t>(limit))
      docs.resize(static_cast<std::size_t>(limit));
    if (docs.empty()) throw std::runtime_error("t2: no train documents for '" + cls.name + "'");
    train.push_back(embeddings_of(base, docs, o.embedding_positions));
    cls.prototype = mean_of(train.back());
    val.push_back(embeddings_of(base, split_bytes(manifest, cls.name, data::Split::kVal),
                                o.embedding_positions));
    counts[cls.name] = {{"train", train.back().size()}, {"val", val.back().size()}};
    progress << "t2: embedded " << cls.name << ": " << train.back().size() << " train, "
             << val.back().size() << " val documents\n";
  }
  auto record =
      fit_dispatch(set, train, val, o.prototypes_per_class, o.whitening_shrinkage, o.seed);
  record["documents"] = counts;
  record["embedding_positions"] = o.embedding_positions;
  progress << "t2: dispatch " << record["chosen"].dump() << "\n";
  return record;
}

}  // namespace

nlohmann::json fit_dispatch(ExpertSet& set, const ClassEmbeddings& train,
                            const ClassEmbeddings& val, const std::vector<std::int64_t>& ks,
                            const std::vector<double>& shrinkages, std::uint64_t seed) {
  if (train.size() != set.classes.size() || val.size() != set.classes.size() || ks.empty()) {
    throw std::invalid_argument(
        "t2: fit_dispatch needs train and val embeddings of every class "
        "and at least one k");
  }
  struct Setting {
    EmbeddingNormalisation normalisation;
    double shrinkage;
  };
  std::vector<Setting> settings{{EmbeddingNormalisation::center, 0.0}};
  for (double e : shrinkages) settings.push_back({EmbeddingNormalisation::whiten, e});
  nlohmann::json grid = nlohmann::json::array();
  double best_acc = -1.0, best_worst = -1.0;
  EmbeddingTransform best_transform;
  std::vector<std::vector<std::vector<float>>> best_prototypes;
  nlohmann::json chosen;
  for (const auto& st : settings) {
    const auto transform = fit_embedding_transform(train, st.normalisation, st.shrinkage);
    ClassEmbeddings train_t(train.size()), val_t(val.size());
    for (std::size_t c = 0; c < train.size(); ++c) {
      for (const auto& e : train[c]) train_t[c].push_back(transform.apply(e));
      for (const auto& e : val[c]) val_t[c].push_back(transform.apply(e));
    }
    for (const auto k : ks) {
      std::vector<std::vector<std::vector<float>>> prototypes;
      for (std::size_t c = 0; c < train_t.size(); ++c)
        prototypes.push_back(
            kmeans_centroids(train_t[c], static_cast<std::size_t>(k), 100, seed + c));
      std::size_t correct = 0, total = 0;
      double worst = 1.0;
      nlohmann::json per_class = nlohmann::json::object();
      for (std::size_t c = 0; c < val_t.size(); ++c) {
        std::size_t ok = 0;
        for (const auto& e : val_t[c]) ok += classify_nearest(e, prototypes, 1.0).index == c;
        correct += ok;
        total += val_t[c].size();
        if (!val_t[c].empty()) {
          const double acc = double(ok) / double(val_t[c].size());
          worst = std::min(worst, acc);
          per_class[set.classes[c].name] = acc;
        }
      }
      const double acc = total ? double(correct) / double(total) : 0.0;
      nlohmann::json row = {
          {"normalisation",
           st.normalisation == EmbeddingNormalisation::center ? "center" : "whiten"},
          {"shrinkage", st.shrinkage},
          {"prototypes_per_class", k},
          {"val_accuracy", acc},
          {"val_worst_class_accuracy", worst},
          {"val_accuracy_per_class", per_class}};
      grid.push_back(row);
      if (acc > best_acc || (acc == best_acc && worst > best_worst)) {
        best_acc = acc;
        best_worst = worst;
        best_transform = transform;
        best_prototypes = prototypes;
        chosen = row;
      }
    }
  }
  set.dispatch_transform = best_transform;
  set.dispatch_prototypes = best_prototypes;
  return {{"grid", grid}, {"chosen", chosen}, {"selected_on", "val"}, {"fitted_on", "train"}};
}

namespace {

// What a run does once z of every domain is known: the CEM mixtures of the few-shot domains,
// the dispatch, the provenance (`prov` already holds the caller's own records, and the base
// model's sha256 when the caller hashed it), experts.ckpt and provenance.json in out_dir.
nlohmann::json finish_expert_set(const T2TrainOptions& o, const data::Manifest& manifest,
                                 const nn::TransformerLM<float>& base,
                                 nn::TransformerLM<float>& adapted, const ModelFactors& factors,
                                 ExpertSet& set, nlohmann::json scores, nlohmann::json prov,
                                 Clock::time_point wall_start, const std::string& command,
                                 const std::string& config_text, std::ostream& progress) {
  for (const auto& domain : o.fewshot_domains) {
    DispatchClass cls;
    cls.name = domain;
    cls.fewshot = true;
    scores[domain] =
        fewshot_mixture(o, manifest, base, adapted, factors, set, domain, cls.alpha, progress);
    set.classes.push_back(std::move(cls));
  }
  const auto dispatch = build_dispatch(o, manifest, base, set, progress);
  const double wall = std::chrono::duration<double>(Clock::now() - wall_start).count();
  prov["command"] = command;
  prov["config"] = config_text;
  prov["corpus_manifest_sha256"] = manifest.manifest_sha256;
  prov["base_model"] = o.base_model.string();
  if (!prov.contains("base_model_sha256")) prov["base_model_sha256"] = file_sha256(o.base_model);
  prov["matrices"] = matrix_set_name(o.matrices);
  prov["finished_utc"] = now_utc();
  prov["wall_seconds"] = wall;
  prov["threads"] = o.threads;
  prov["scores"] = scores;
  prov["dispatch"] = dispatch;
  set.provenance = prov;
  set.save(o.out_dir / "experts.ckpt");
  std::ofstream(o.out_dir / "provenance.json") << prov.dump(2) << "\n";
  progress << "t2: wrote " << (o.out_dir / "experts.ckpt").string() << " in " << wall << " s\n";
  return prov;
}

}  // namespace

nlohmann::json train_experts(const T2TrainOptions& o, std::ostream& progress,
                             const std::string& command, const std::string& config_text) {
  const auto wall_start = Clock::now();
  nn::set_num_threads(o.threads);
  const auto manifest = data::load_manifest(o.corpus);
  auto base = blt::load_byte_lm(o.base_model);
  auto adapted = copy_model(*base);
  base->set_trainable(false);
  adapted->set_trainable(false);
  const auto names = adapted_matrix_names(*base, o.matrices);
  for (const auto& name : names) adapted_linear(*adapted, name).weight.set_requires_grad(true);
  const auto t0 = Clock::now();
  const auto factors = ModelFactors::decompose(*base, o.svd, names);
  const double svd_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::optional<ExpertSet> init;
  if (!o.init.empty()) {
    // An init over fewer matrices (e.g. "all" experts continued as "all+head") starts the
    // others at z = 1.
    init.emplace(ExpertSet::load(o.init).lifted_to(factors));
    init->check_compatible(factors);
  }
  progress << "t2: decomposed " << factors.factors.size() << " matrices ("
           << matrix_set_name(o.matrices) << ") in " << svd_seconds << " s\n";

  ExpertSet set;
  set.matrices = factors.names;
  set.ranks = factors.ranks();
  set.domains = o.domains;
  std::filesystem::create_directories(o.out_dir);
  std::ofstream log(o.out_dir / "train_log.csv");
  log << "domain,step,ce_nats,kl_nats,grad_norm,lr,val_bits_per_byte\n";
  nlohmann::json scores = nlohmann::json::object();
  for (std::size_t d = 0; d < o.domains.size(); ++d) {
    const auto& domain = o.domains[d];
    std::vector<std::int32_t> stream;
    const auto train_docs = split_bytes(manifest, domain, data::Split::kTrain);
    for (const auto& doc : train_docs) {
      const auto t = blt::document_tokens(doc);
      stream.insert(stream.end(), t.begin(), t.end());
    }
    const auto val = split_bytes(manifest, domain, data::Split::kVal);
    const double base_bpb = blt::bits_per_byte(*base, val, o.eval_bytes);
    const ExpertVector* start = nullptr;
    if (init) {
      start = &init->experts.at(init->domain_index(domain));
      progress << "t2 " << domain << ": z starts from " << o.init.string() << "\n";
    }
    auto run = train_domain(o, *base, *adapted, factors, stream, val, progress, log, domain,
                            o.seed + 1000 * d, start);
    apply_weights(factors, compose_all(factors, run.z, kExact), *adapted);
    const double expert_bpb = blt::bits_per_byte(*adapted, val, o.eval_bytes);
    progress << "t2 " << domain << ": val bits/byte base " << base_bpb << " -> expert "
             << expert_bpb << " (" << run.seconds << " s)\n";
    DispatchClass cls;  // prototypes: build_dispatch() below
    cls.name = domain;
    cls.alpha.assign(o.domains.size(), 0.0);
    cls.alpha[d] = 1.0;
    set.classes.push_back(std::move(cls));
    set.experts.push_back(std::move(run.z));
    scores[domain] = {
        {"val_bits_per_byte_base", base_bpb}, {"val_bits_per_byte_expert", expert_bpb},
        {"ratio", expert_bpb / base_bpb},     {"final_ce_nats", run.final_loss},
        {"final_kl_nats", run.final_kl},      {"train_seconds", run.seconds}};
  }
  nlohmann::json prov;
  prov["svd_seconds"] = svd_seconds;
  return finish_expert_set(o, manifest, *base, *adapted, factors, set, scores, std::move(prov),
                           wall_start, command, config_text, progress);
}

namespace {

// dispatch.refine: for each listed expert domain, a CEM over real α started at its class's α,
// scored by the validation bits per byte of z' = mix(α); the class keeps the best α if it scores
// below the start (the CEM's first sample is the start itself). Returns the record per domain.
nlohmann::json refine_alphas(const T2TrainOptions& o, const data::Manifest& manifest,
                             nn::TransformerLM<float>& adapted, const ModelFactors& factors,
                             ExpertSet& set, std::ostream& progress) {
  nlohmann::json record = nlohmann::json::object();
  for (const auto& domain : o.refine_domains) {
    const auto it = std::find(set.domains.begin(), set.domains.end(), domain);
    if (it == set.domains.end()) {
      throw std::runtime_error("t2: dispatch.refine: '" + domain +
                               "' is not an expert domain of the merge");
    }
    const auto d = static_cast<std::size_t>(it - set.domains.begin());
    const auto t_start = Clock::now();
    const auto val = split_bytes(manifest, domain, data::Split::kVal);
    const auto score = [&](const std::vector<double>& a) {
      return mixture_bits_per_byte(factors, set, a, adapted, val, o.eval_bytes);
    };
    auto cem_options = o.refine_cem;
    const auto start = set.classes[d].alpha;
    cem_options.initial_mean = start;
    const double start_bpb = score(start);
    const auto cem = cem_search(
        set.domains.size(), [&](const std::vector<double>& a) { return -score(a); }, cem_options);
    const bool kept = -cem.best_score < start_bpb;
    if (kept) set.classes[d].alpha = cem.alpha;
    const double secs = std::chrono::duration<double>(Clock::now() - t_start).count();
    progress << "t2: refine " << domain << ": CEM " << cem.evaluations
             << " evaluations, val bits/byte " << start_bpb << " -> " << -cem.best_score
             << (kept ? "" : " (start kept)") << " (" << secs << " s)\n";
    record[domain] = {{"start_alpha", start},
                      {"alpha", set.classes[d].alpha},
                      {"val_bits_per_byte_start", start_bpb},
                      {"val_bits_per_byte", kept ? -cem.best_score : start_bpb},
                      {"cem_evaluations", cem.evaluations},
                      {"cem",
                       {{"population", cem_options.population},
                        {"elite_ratio", cem_options.elite_ratio},
                        {"iterations", cem_options.iterations},
                        {"initial_std", cem_options.initial_std}}},
                      {"seconds", secs}};
  }
  return record;
}

}  // namespace

nlohmann::json merge_experts(const T2TrainOptions& o,
                             const std::vector<std::filesystem::path>& parts,
                             std::ostream& progress, const std::string& command,
                             const std::string& config_text) {
  const auto wall_start = Clock::now();
  if (parts.empty()) throw std::runtime_error("t2: merge without expert files");
  nn::set_num_threads(o.threads);
  const auto manifest = data::load_manifest(o.corpus);
  const auto base_sha = file_sha256(o.base_model);
  // The merged file adapts the config's matrices (decomposition.matrices); a part over a subset
  // of them is lifted (z = 1 for the matrices it lacks), one over others is refused.
  auto base = blt::load_byte_lm(o.base_model);
  auto adapted = copy_model(*base);
  const auto factors =
      ModelFactors::decompose(*base, o.svd, adapted_matrix_names(*base, o.matrices));
  ExpertSet set;
  set.matrices = factors.names;
  set.ranks = factors.ranks();
  std::vector<ExpertSet> loaded;
  nlohmann::json records = nlohmann::json::array();
  for (const auto& file : parts) {
    ExpertSet part;
    try {
      part = ExpertSet::load(file).lifted_to(factors);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(file.string() + ": " + e.what() +
                               " (decomposition.matrices: " + matrix_set_name(o.matrices) + ")");
    }
    const auto sha = part.provenance.value("base_model_sha256", std::string());
    if (sha != base_sha) {
      throw std::runtime_error(file.string() + ": trained on base model sha256 '" + sha +
                               "', not " + o.base_model.string() + " (" + base_sha + ")");
    }
    for (const auto& domain : part.domains) {
      if (std::find(o.domains.begin(), o.domains.end(), domain) == o.domains.end()) {
        throw std::runtime_error(file.string() + ": domain '" + domain +
                                 "' is not in the config's domains");
      }
    }
    nlohmann::json record = part.provenance;
    record.erase("dispatch");
    record["file"] = file.string();
    records.push_back(std::move(record));
    loaded.push_back(std::move(part));
  }
  // Each of the config's domains from the last part that has it (a later stage overrides).
  nlohmann::json scores = nlohmann::json::object(), sources = nlohmann::json::object();
  for (const auto& domain : o.domains) {
    std::optional<std::size_t> from;
    for (std::size_t p = 0; p < loaded.size(); ++p) {
      const auto& d = loaded[p].domains;
      if (std::find(d.begin(), d.end(), domain) != d.end()) from = p;
    }
    if (!from) throw std::runtime_error("t2: merge: no part has an expert for '" + domain + "'");
    const auto& part = loaded[*from];
    set.domains.push_back(domain);
    set.experts.push_back(part.experts.at(part.domain_index(domain)));
    sources[domain] = parts[*from].string();
    if (part.provenance.contains("scores") && part.provenance["scores"].contains(domain))
      scores[domain] = part.provenance["scores"][domain];
    progress << "t2: merge: " << domain << " from " << parts[*from].string() << "\n";
  }
  for (std::size_t d = 0; d < set.domains.size(); ++d) {
    DispatchClass cls;  // prototypes: build_dispatch()
    cls.name = set.domains[d];
    cls.alpha.assign(set.domains.size(), 0.0);
    cls.alpha[d] = 1.0;
    set.classes.push_back(std::move(cls));
  }
  progress << "t2: merged " << set.domains.size() << " experts from " << parts.size() << " files\n";
  set.check_compatible(factors);
  nlohmann::json prov;
  if (o.expert_scales != std::vector<double>{1.0}) {
    // Expert strength per domain, chosen on the validation split (the bytes the training runs
    // report): alpha = s e_k composes z' = 1 + s (z_k - 1).
    nlohmann::json chosen = nlohmann::json::object();
    for (std::size_t d = 0; d < set.domains.size(); ++d) {
      const auto val = split_bytes(manifest, set.domains[d], data::Split::kVal);
      double best = 0.0, best_bpb = std::numeric_limits<double>::infinity();
      nlohmann::json tried = nlohmann::json::object();
      for (const double s : o.expert_scales) {
        std::vector<double> alpha(set.domains.size(), 0.0);
        alpha[d] = s;
        const double bpb = mixture_bits_per_byte(factors, set, alpha, *adapted, val, o.eval_bytes);
        tried[std::to_string(s)] = bpb;
        progress << "t2: merge: " << set.domains[d] << " strength " << s << ": val bits/byte "
                 << bpb << "\n";
        if (bpb < best_bpb) best = s, best_bpb = bpb;
      }
      set.classes[d].alpha[d] = best;
      chosen[set.domains[d]] = {{"scale", best}, {"val_bits_per_byte", tried}};
    }
    prov["expert_scales"] = std::move(chosen);
  }
  if (!o.refine_domains.empty())
    prov["refine"] = refine_alphas(o, manifest, *adapted, factors, set, progress);
  prov["base_model_sha256"] = base_sha;  // hashed once, above
  prov["parts"] = std::move(records);
  prov["domain_sources"] = std::move(sources);
  return finish_expert_set(o, manifest, *base, *adapted, factors, set, scores, std::move(prov),
                           wall_start, command, config_text, progress);
}

nlohmann::json refresh_prototypes(const T2TrainOptions& o, std::ostream& progress,
                                  const std::string& command) {
  const auto start = Clock::now();
  nn::set_num_threads(o.threads);
  const auto manifest = data::load_manifest(o.corpus);
  const auto base = blt::load_byte_lm(o.base_model);
  const auto file = o.out_dir / "experts.ckpt";
  auto set = ExpertSet::load(file);
  auto record = build_dispatch(o, manifest, *base, set, progress);
  record["command"] = command;
  record["finished_utc"] = now_utc();
  record["wall_seconds"] = std::chrono::duration<double>(Clock::now() - start).count();
  auto& refreshes = set.provenance["prototype_refreshes"];
  if (!refreshes.is_array()) refreshes = nlohmann::json::array();
  refreshes.push_back(record);
  set.save(file);
  std::ofstream(o.out_dir / "provenance.json") << set.provenance.dump(2) << "\n";
  return set.provenance;
}

nlohmann::json refresh_fewshot(const T2TrainOptions& o, std::ostream& progress,
                               const std::string& command) {
  const auto start = Clock::now();
  nn::set_num_threads(o.threads);
  const auto manifest = data::load_manifest(o.corpus);
  const auto base = blt::load_byte_lm(o.base_model);
  auto adapted = copy_model(*base);
  const auto file = o.out_dir / "experts.ckpt";
  auto set = ExpertSet::load(file);
  const auto factors = ModelFactors::decompose(*base, o.svd, set.matrices);
  set.check_compatible(factors);
  nlohmann::json scores = nlohmann::json::object();
  for (auto& cls : set.classes) {
    if (!cls.fewshot) continue;
    scores[cls.name] =
        fewshot_mixture(o, manifest, *base, *adapted, factors, set, cls.name, cls.alpha, progress);
  }
  if (scores.empty()) throw std::runtime_error(file.string() + ": no few-shot class to refresh");
  auto& refreshes = set.provenance["fewshot_refreshes"];
  if (!refreshes.is_array()) refreshes = nlohmann::json::array();
  refreshes.push_back(
      {{"command", command},
       {"finished_utc", now_utc()},
       {"scores", scores},
       {"wall_seconds", std::chrono::duration<double>(Clock::now() - start).count()}});
  set.save(file);
  std::ofstream(o.out_dir / "provenance.json") << set.provenance.dump(2) << "\n";
  return set.provenance;
}

nlohmann::json evaluate(const T2EvalOptions& o, std::ostream& progress) {
  nn::set_num_threads(o.threads);
  const auto manifest = data::load_manifest(o.corpus);
  const auto split = data::parse_split(o.split);
  const auto experts = ExpertSet::load(o.experts);
  auto base = blt::load_byte_lm(o.base_model);
  auto adapted = copy_model(*base);
  const auto factors = ModelFactors::decompose(*base, SvdOptions{}, experts.matrices);
  experts.check_compatible(factors);
  nlohmann::json domains = nlohmann::json::object();
  bool all_met = true;
  std::size_t id_correct = 0, id_total = 0;
  for (const auto& cls : experts.classes) {
    const auto start = Clock::now();
    const auto docs = split_bytes(manifest, cls.name, split);
    std::size_t correct = 0;
    nlohmann::json confusion = nlohmann::json::object();
    for (const auto& doc : docs) {
      const auto c = experts.classify(task_embedding(*base, doc, o.embedding_positions),
                                      o.temperature, o.center);
      const auto& got = experts.classes[c.index].name;
      confusion[got] = confusion.value(got, 0) + 1;
      if (got == cls.name) ++correct;
    }
    id_correct += correct;
    id_total += docs.size();
    double base_bpb = 0.0, expert_bpb = 0.0;
    if (!o.id_only) {
      base_bpb = blt::bits_per_byte(*base, docs, o.eval_bytes);
      expert_bpb = mixture_bits_per_byte(factors, experts, cls.alpha, *adapted, docs, o.eval_bytes);
    }
    const double accuracy = docs.empty() ? 0.0 : double(correct) / double(docs.size());
    const double ratio = expert_bpb / base_bpb;
    const bool bpb_met = !o.id_only && (cls.fewshot ? expert_bpb < base_bpb : ratio <= 0.98);
    all_met = all_met && bpb_met;
    domains[cls.name] = {
        {"fewshot", cls.fewshot},
        {"documents", docs.size()},
        {"id_accuracy", accuracy},
        {"id_predictions", confusion},
        {"bits_per_byte_base", base_bpb},
        {"bits_per_byte_expert", expert_bpb},
        {"ratio", ratio},
        {"alpha", cls.alpha},
        {"identity_weight", 1.0 - std::accumulate(cls.alpha.begin(), cls.alpha.end(), 0.0)},
        {"target_bits_per_byte", cls.fewshot ? "< base" : "<= 0.98 x base"},
        {"target_bits_per_byte_met", bpb_met},
        {"id_accuracy_at_least_0_95", accuracy >= 0.95}};
    progress << "t2 eval " << cls.name << ": id " << correct << "/" << docs.size() << ", bits/byte "
             << base_bpb << " -> " << expert_bpb << " (ratio " << ratio << ", "
             << std::chrono::duration<double>(Clock::now() - start).count() << " s)\n";
  }
  const double id_accuracy = id_total ? double(id_correct) / double(id_total) : 0.0;
  return {
      {"split", o.split},
      {"experts", o.experts.string()},
      {"eval_bytes_per_domain", o.eval_bytes},
      {"embedding_positions", o.embedding_positions},
      {"dispatch",
       experts.has_multi_prototypes()
           ? nlohmann::json{{"prototypes_per_class", experts.dispatch_prototypes.front().size()},
                            {"whitened", !experts.dispatch_transform.whitening.empty()},
                            {"centered", !experts.dispatch_transform.mean.empty()}}
           : nlohmann::json{{"prototypes_per_class", 1}, {"centered_on_prototype_mean", o.center}}},
      {"experts_domains", experts.domains},
      {"id_accuracy_overall", id_accuracy},
      {"target_id", ">= 0.95 over all documents"},
      {"target_id_met", id_accuracy >= 0.95},
      {"domains", domains},
      {"all_targets_met", all_met && id_accuracy >= 0.95}};
}

}  // namespace neat::t2
