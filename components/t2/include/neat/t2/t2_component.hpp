// The `t2` pipeline component (Transformer², Sun et al. 2025, arXiv 2501.06252, §3.2): pass 1
// receives each document's task embedding on `blt.doc_embedding` (DocEmbedding + f32 tensor
// "embedding" [dim]), classifies it by cosine similarity to the prototypes of the shipped
// experts (an expert domain, α one-hot, or a few-shot domain, α from CEM), and publishes the
// pass-2 decision on `t2.adaptation` (blt::Adaptation). It also composes the adapted
// weights for α through its WeightCache (so that blt's predictor, in the same process, finds
// them composed; apply_adaptation() in experts.hpp), and publishes T2Stats on `t2.stats` every
// `stats_every` documents and when it is deactivated.
// Invariant: bad input (missing or mistyped tensor, wrong dimension, non-finite value) is
// rejected with a PayloadError naming the document, counted in `rejected`; nothing else is lost.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "neat/blt/messages.hpp"
#include "neat/bus/typed.hpp"
#include "neat/components/component.hpp"
#include "neat/components/registry.hpp"
#include "neat/t2/experts.hpp"

namespace neat::t2 {

/// Running statistics of the t2 component (topic `t2.stats`).
struct T2Stats {
  static constexpr std::string_view kSchema = "neat.t2.Stats";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t documents = 0;                      ///< adaptations published
  std::map<std::string, std::uint64_t> per_domain;  ///< documents per chosen class
  std::uint64_t fewshot = 0;                        ///< documents given a few-shot mixture
  std::uint64_t rejected = 0;                       ///< malformed embeddings
  std::uint64_t cache_hits = 0, cache_misses = 0, cache_evictions = 0, cache_expirations = 0;
  double cache_hit_rate = 0.0;   ///< hits / (hits + misses)
  double mean_confidence = 0.0;  ///< mean dispatch confidence over documents
  double mean_compose_ms = 0.0;  ///< mean time to obtain composed weights (miss or hit), ms
  bool final = false;            ///< sent on deactivation
  MSGPACK_DEFINE_MAP(documents, per_domain, fewshot, rejected, cache_hits, cache_misses,
                     cache_evictions, cache_expirations, cache_hit_rate, mean_confidence,
                     mean_compose_ms, final);
};

class T2Component : public components::Component {
 public:
  /// `config:` keys: experts, base_model, compose, compose_delta_energy, expert_basis, input,
  /// output, stats_topic, stats_every, temperature, center, cache {max_entries, max_bytes,
  /// ttl_seconds}.
  static config::Schema schema();
  /// Loads the experts (and, with compose, the base model and its SVD); throws
  /// std::runtime_error when a file is missing or does not match.
  void configure(const YAML::Node& config, components::Context& ctx) override;
  std::vector<std::string> publishes() const override { return {output_, stats_topic_}; }
  void deactivate(components::Context& ctx) override;
  nlohmann::json stats() const override;

  /// Pass 1 for one embedding (also used without a bus): classification, α, confidence;
  /// composes the weights through the cache when enabled. Throws std::invalid_argument for a
  /// wrong dimension or a non-finite value.
  blt::Adaptation decide(std::uint64_t doc_id, const std::vector<float>& embedding);
  /// Loads experts directly (tests); configure() does this from the config.
  void set_experts(ExpertSet experts) { experts_.emplace(std::move(experts)); }
  T2Stats current_stats() const;
  /// The cache of composed weights (shared with an embedded blt predictor).
  WeightCache& cache() { return *cache_; }

 private:
  std::string input_ = "blt.doc_embedding";
  std::string output_ = "t2.adaptation";
  std::string stats_topic_ = "t2.stats";
  std::uint64_t stats_every_ = 0;
  double temperature_ = 0.02;
  bool center_ = true;
  std::optional<ExpertSet> experts_;
  // The byte LM's SVD factors and the composed-weight cache, shared with an embedded
  // blt_predict of the same process (t2/shared.hpp); U, V in the profile's precision.
  std::shared_ptr<const ModelFactors> factors_;
  std::shared_ptr<WeightCache> cache_ = std::make_shared<WeightCache>();
  std::string precision_ = "float32";
  /// Precision of compose_all() when there is no expert basis (compose_delta_energy).
  ComposeOptions compose_options_{kDefaultDeltaEnergy};
  /// The experts' changes, composed once (expert_basis): a decision's weights are W + Σ α_k ΔW_k.
  std::optional<ExpertBasis> basis_;
  T2Stats stats_;
  double confidence_sum_ = 0.0, compose_ms_sum_ = 0.0;
  std::uint64_t composed_ = 0;
  bool final_sent_ = false;
};

}  // namespace neat::t2

namespace neat::components {
/// Registration of the `t2` kind: `registry.add(t2_kind());`.
ComponentKind t2_kind();
}  // namespace neat::components
