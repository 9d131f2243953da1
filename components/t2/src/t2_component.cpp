// t2 component: task embedding -> cosine dispatch -> Adaptation; composed weights in the cache.
#include "neat/t2/t2_component.hpp"

#include <chrono>
#include <cmath>

#include "neat/blt/byte_lm.hpp"
#include "neat/components/paths.hpp"
#include "neat/t2/dispatch.hpp"
#include "neat/t2/shared.hpp"

namespace neat::t2 {

config::Schema T2Component::schema() {
  using config::Schema;
  auto cache = Schema::map()
                   .optional("max_entries", Schema::integer(0, 1 << 20).default_value("8"),
                             "composed weight sets kept (LRU)")
                   .optional("max_bytes", Schema::integer(0, 1ll << 40).default_value("268435456"),
                             "bytes of composed weights kept (LRU)")
                   .optional("ttl_seconds", Schema::number(0, 1e9).default_value("600"),
                             "an entry older than this is recomposed");
  return Schema::map()
      .optional("experts", Schema::string().default_value("models/t2/experts.ckpt"),
                "experts file written by `neat train t2`")
      .optional("base_model", Schema::string().default_value("models/blt/byte_lm.bf16.ckpt"),
                "byte LM whose matrices the experts adapt")
      .optional("compose", Schema::boolean().default_value("true"),
                "compose the adapted weights of each decision into the cache")
      .optional("compose_delta_energy", Schema::number(1e-6, 1).default_value("0.99999999"),
                "p: compose W + U_r diag(sigma (z - 1))_r V_r^T over the fewest components "
                "holding this fraction of the change's energy (1: exact; default: relative "
                "error of the change <= 1e-4)")
      .optional("expert_basis", Schema::boolean().default_value("true"),
                "precompute each expert's change of the adapted matrices once, so that a mixture "
                "is W + sum_k alpha_k dW_k (exact, no matrix product; 4 bytes x experts x "
                "adapted weights); skipped when larger than the cache's share of the memory budget")
      .optional("input", Schema::string().default_value("blt.doc_embedding"),
                "topic of DocEmbedding messages")
      .optional("output", Schema::string().default_value("t2.adaptation"),
                "topic for Adaptation messages")
      .optional("stats_topic", Schema::string().default_value("t2.stats"), "topic for T2Stats")
      .optional("stats_every", Schema::integer(0, 1'000'000'000).default_value("0"),
                "publish statistics every n documents (0: only when deactivated)")
      .optional("temperature", Schema::number(1e-9, 100).default_value("0.02"),
                "softmax temperature of the confidence over cosines")
      .optional("center", Schema::boolean().default_value("true"),
                "centre embedding and prototypes on the prototypes' mean before the cosines")
      .optional("cache", cache, "composed-weight cache");
}

T2Stats T2Component::current_stats() const {
  T2Stats s = stats_;
  const auto c = cache_->stats();
  s.cache_hits = c.hits;
  s.cache_misses = c.misses;
  s.cache_evictions = c.evictions;
  s.cache_expirations = c.expirations;
  s.cache_hit_rate = c.hit_rate();
  s.mean_confidence = s.documents ? confidence_sum_ / static_cast<double>(s.documents) : 0.0;
  s.mean_compose_ms = composed_ ? compose_ms_sum_ / static_cast<double>(composed_) : 0.0;
  return s;
}

blt::Adaptation T2Component::decide(std::uint64_t doc_id, const std::vector<float>& embedding) {
  if (!experts_) throw std::logic_error("t2: decide before experts are loaded");
  // Cosine similarity to the prototypes stored with the experts (several per class and a
  // whitening learned on train in a version-2 file; ExpertSet::classify). Throws
  // std::invalid_argument for an embedding of the wrong width.
  const auto c = experts_->classify(embedding, temperature_, center_);
  const auto& cls = experts_->classes[c.index];
  blt::Adaptation a;
  a.doc_id = doc_id;
  a.domain = cls.fewshot ? "fewshot" : cls.name;
  a.confidence = c.confidence;
  a.domains = experts_->domains;
  a.alpha = cls.alpha;
  if (factors_) {
    const auto t0 = std::chrono::steady_clock::now();
    cache_->get_or_compose(a.alpha, [&] {
      return basis_ ? basis_->compose(*factors_, a.alpha)
                    : compose_all(*factors_, experts_->mix(a.alpha), compose_options_);
    });
    compose_ms_sum_ +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ++composed_;
  }
  ++stats_.documents;
  ++stats_.per_domain[cls.name];
  if (cls.fewshot) ++stats_.fewshot;
  confidence_sum_ += c.confidence;
  return a;
}

void T2Component::configure(const YAML::Node& config, components::Context& ctx) {
  std::string experts_file = "models/t2/experts.ckpt";
  std::string base_file = "models/blt/byte_lm.bf16.ckpt";
  bool compose = true;
  if (config["experts"]) experts_file = config["experts"].as<std::string>();
  if (config["base_model"]) base_file = config["base_model"].as<std::string>();
  if (config["compose"]) compose = config["compose"].as<bool>();
  bool expert_basis = true;
  if (config["compose_delta_energy"])
    compose_options_.delta_energy = config["compose_delta_energy"].as<double>();
  if (config["expert_basis"]) expert_basis = config["expert_basis"].as<bool>();
  if (config["input"]) input_ = config["input"].as<std::string>();
  if (config["output"]) output_ = config["output"].as<std::string>();
  if (config["stats_topic"]) stats_topic_ = config["stats_topic"].as<std::string>();
  if (config["stats_every"]) stats_every_ = config["stats_every"].as<std::uint64_t>();
  if (config["temperature"]) temperature_ = config["temperature"].as<double>();
  if (config["center"]) center_ = config["center"].as<bool>();
  WeightCacheOptions cache_options;
  if (const auto c = config["cache"]) {
    if (c["max_entries"]) cache_options.max_entries = c["max_entries"].as<std::size_t>();
    if (c["max_bytes"]) cache_options.max_bytes = c["max_bytes"].as<std::uint64_t>();
    if (c["ttl_seconds"]) cache_options.ttl_seconds = c["ttl_seconds"].as<double>();
  }
  // The profile (issue 8): U, V in its precision, the cache within its share of the budget.
  precision_ = ctx.profile().precision;
  cache_options = budgeted_cache_options(cache_options, ctx.profile().memory_budget_bytes);
  if (!experts_) experts_.emplace(ExpertSet::load(components::resolve_path(experts_file)));
  if (compose) {
    const auto base = components::resolve_path(base_file);
    factors_ = shared_model_factors(base, factor_storage(precision_), experts_->matrices);
    experts_->check_compatible(*factors_);
    // The expert basis makes a composition a copy plus axpys; it costs experts x the adapted
    // weights, kept only within the cache's share of the run's memory budget (if any).
    std::uint64_t basis_bytes = 0;
    for (const auto& f : factors_->factors) basis_bytes += 4ull * f.rows * f.cols;
    basis_bytes *= experts_->experts.size();
    if (expert_basis &&
        (ctx.profile().memory_budget_bytes == 0 ||
         basis_bytes <= ctx.profile().memory_budget_bytes / kWeightCacheBudgetDivisor)) {
      basis_.emplace(*factors_, *experts_);
    } else if (expert_basis) {
      ctx.log().info(
          "t2: expert basis ({} bytes) exceeds the cache's budget share; composing "
          "with p = {}",
          basis_bytes, compose_options_.delta_energy);
    }
    cache_ = shared_weight_cache(
        components::resolve_path(experts_file).string() + "|" + base.string() + "|" + precision_,
        cache_options);
  } else {
    cache_ = std::make_shared<WeightCache>(cache_options);
  }
  ctx.log().info(
      "t2: {} experts, {} dispatch classes, compose {}, factors {}, cache {} bytes, expert "
      "basis {} bytes, p {}",
      experts_->domains.size(), experts_->classes.size(), compose, precision_,
      cache_options.max_bytes, basis_ ? basis_->bytes() : 0, compose_options_.delta_energy);
  bus::subscribe<blt::DocEmbedding>(
      ctx.node(), input_, [this, &ctx](const blt::DocEmbedding& doc, const bus::Message& m) {
        const auto where = "document " + std::to_string(doc.doc_id) + " (" + doc.path + ")";
        const auto tensors = m.tensors();
        const bus::TensorView* view = nullptr;
        for (const auto& t : tensors)
          if (t.desc().name == "embedding") view = &t;
        if (view == nullptr || view->desc().dtype != bus::DType::f32) {
          ++stats_.rejected;
          throw bus::PayloadError("t2: " + where +
                                  ": DocEmbedding needs an f32 tensor 'embedding'");
        }
        blt::Adaptation a;
        try {
          a = decide(doc.doc_id, view->to_vector<float>());
        } catch (const std::invalid_argument& e) {
          ++stats_.rejected;
          ctx.log().warn("t2: rejected {}: {}", where, e.what());
          throw bus::PayloadError("t2: " + where + ": " + e.what());
        }
        bus::publish(ctx.node(), output_, a);
        if (stats_every_ > 0 && stats_.documents % stats_every_ == 0) {
          bus::publish(ctx.node(), stats_topic_, current_stats());
        }
      });
}

void T2Component::deactivate(components::Context& ctx) {
  if (final_sent_) return;
  final_sent_ = true;
  T2Stats s = current_stats();
  s.final = true;
  bus::publish(ctx.node(), stats_topic_, s);
}

nlohmann::json T2Component::stats() const {
  const T2Stats s = current_stats();
  return {{"documents", s.documents},
          {"per_domain", s.per_domain},
          {"fewshot", s.fewshot},
          {"rejected", s.rejected},
          {"cache_hits", s.cache_hits},
          {"cache_misses", s.cache_misses},
          {"cache_evictions", s.cache_evictions},
          {"cache_expirations", s.cache_expirations},
          {"cache_hit_rate", s.cache_hit_rate},
          {"mean_confidence", s.mean_confidence},
          {"mean_compose_ms", s.mean_compose_ms},
          {"factors", factors_ ? nlohmann::json{{"precision", precision_},
                                                {"stored_bytes",
                                                 [this] {
                                                   std::uint64_t b = 0;
                                                   for (const auto& f : factors_->factors)
                                                     b += f.stored_bytes();
                                                   return b;
                                                 }()}}
                               : nlohmann::json()},
          {"cache_bytes", cache_->stats().bytes},
          {"expert_basis_bytes", basis_ ? basis_->bytes() : 0},
          {"compose_delta_energy", compose_options_.delta_energy}};
}

}  // namespace neat::t2

namespace neat::components {

ComponentKind t2_kind() {
  return {"t2",
          "Transformer²: cosine dispatch of task embeddings to singular-value experts, CEM "
          "few-shot mixtures, composed-weight cache",
          [] { return std::make_unique<neat::t2::T2Component>(); },
          [] { return neat::t2::T2Component::schema(); }};
}

}  // namespace neat::components
