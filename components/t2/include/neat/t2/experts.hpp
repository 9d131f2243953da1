// Transformer² experts over the byte LM (Sun et al. 2025, §3.1–3.2): the SVD factors of every
// adapted matrix of a TransformerLM (the MLP matrices, or every Linear of the blocks), the
// per-domain expert vectors z (one per matrix), the prototypes of the task embeddings (one mean and
// k k-means prototypes per class, with the train-split embedding transform), the mixture z' = α_0·1
// + Σ_k α_k z_k, an LRU + TTL cache of the composed weights keyed by α, and the function that
// applies an Adaptation to a model copy. Invariant: an ExpertSet's z vectors have exactly the ranks
// of the ModelFactors it was trained on (checked when loading against a model and when composing).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "neat/blt/messages.hpp"
#include "neat/nn/modules.hpp"
#include "neat/t2/dispatch.hpp"
#include "neat/t2/svf.hpp"

namespace neat::t2 {

/// Which weight matrices SVF adapts (YAML `decomposition.matrices` of `neat train t2`).
/// kMlp: the MLP's blocks.<i>.mlp.up.weight (mlp_hidden x dim) and blocks.<i>.mlp.down.weight
/// (dim x mlp_hidden) of every block, the reference implementation's choice. kAll: also the
/// attention projections blocks.<i>.attn.{wq,wk,wv,wo}.weight (dim x dim) — Sun et al. §3.1
/// define SVF for any weight matrix; more singular values per expert (6 instead of 2 per block).
/// kAllHead ("all+head"): kAll and the output projection lm_head.weight (vocab x dim), whose
/// singular values scale the hidden directions that set the next-token distribution.
enum class MatrixSet { kMlp, kAll, kAllHead };
/// "mlp" / "all" / "all+head"; throws std::invalid_argument naming the accepted values otherwise.
MatrixSet parse_matrix_set(const std::string& name);
const char* matrix_set_name(MatrixSet set);

/// Parameter names of the matrices of `set`, per block in block order (kAll: wq, wk, wv, wo, up,
/// down; kMlp: up, down), kAllHead then lm_head.weight last.
std::vector<std::string> adapted_matrix_names(const nn::TransformerLM<float>& model,
                                              MatrixSet set = MatrixSet::kMlp);
/// The MLP matrices only: adapted_matrix_names(model, MatrixSet::kMlp).
std::vector<std::string> mlp_matrix_names(const nn::TransformerLM<float>& model);
/// The Linear layer whose weight is named `name` (blocks.<i>.attn.{wq,wk,wv,wo}.weight,
/// blocks.<i>.mlp.{up,down}.weight or lm_head.weight); throws std::invalid_argument for any other
/// name or a block index out of range.
nn::Linear<float>& adapted_linear(nn::TransformerLM<float>& model, const std::string& name);
const nn::Linear<float>& adapted_linear(const nn::TransformerLM<float>& model,
                                        const std::string& name);

/// The SVD factors of every adapted matrix of one model (in the order of `names`).
struct ModelFactors {
  std::vector<std::string> names;
  std::vector<SvfFactors> factors;
  /// Decomposes the matrices `names` of `model` (default: every MLP matrix) with `options` (see
  /// decompose()). Throws what adapted_linear and decompose throw.
  static ModelFactors decompose(const nn::TransformerLM<float>& model, const SvdOptions& options,
                                const std::vector<std::string>& names = {});
  std::vector<std::int64_t> ranks() const;
};

/// One expert: z for each adapted matrix (lengths = ranks), Sun et al. eq. 1.
using ExpertVector = std::vector<std::vector<float>>;
/// z = 1 for every matrix: the base model.
ExpertVector identity_expert(const ModelFactors& factors);

/// A class the dispatcher can choose: an expert domain (α one-hot) or a few-shot domain
/// (α from CEM over the experts), with its prototype task embeddings.
struct DispatchClass {
  std::string name;
  bool fewshot = false;
  /// One per expert domain; Σ α ≤ 1, the rest 1 − Σ α weighs the identity z = 1 (see mix()).
  std::vector<double> alpha;
  std::vector<float> prototype;  ///< mean raw task embedding, [dim]
};

/// The trained experts (`neat train t2`), stored as an nn checkpoint (msgpack + CRC-32):
/// tensors "z.<domain>.<matrix>" (f32, [rank]), "prototype.<class>" (f32, [dim]),
/// "alpha.<class>" (f32, [experts]); since version 2 also "prototypes.<class>" (f32, [k, dim]),
/// "dispatch.mean" (f32, [dim]) and "dispatch.whitening" (f32, [dim, dim], optional); the config
/// block is JSON with domains, classes, matrices, ranks, the dispatch settings and the
/// provenance. Version 1 files (one prototype per class) still load.
struct ExpertSet {
  std::vector<std::string> matrices;
  std::vector<std::int64_t> ranks;
  std::vector<std::string> domains;    ///< expert domains, in α order
  std::vector<ExpertVector> experts;   ///< one per domain
  std::vector<DispatchClass> classes;  ///< experts first, then few-shot domains
  /// Embedding transform of the multi-prototype dispatch (learned on the train split).
  EmbeddingTransform dispatch_transform;
  /// Per class (same order as `classes`): k-means centroids of its train embeddings after
  /// dispatch_transform, [classes][k][dim]; empty in files written before multi-prototype
  /// dispatch (version 1).
  std::vector<std::vector<std::vector<float>>> dispatch_prototypes;
  nlohmann::json provenance = nlohmann::json::object();

  /// z' = α_0·1 + Σ_k α_k z_k with α_0 = 1 − Σ_k α_k (Sun et al. §3.2, with the identity
  /// "no adaptation" as one more component; α summing to 1 is the paper's mixture). Throws
  /// std::invalid_argument if α has the wrong length.
  ExpertVector mix(const std::vector<double>& alpha) const;
  /// True when every class has its multi-prototypes (version 2 dispatch).
  bool has_multi_prototypes() const;
  /// Pass-1 decision for a task embedding ([dim]), indices into `classes`. With
  /// multi-prototypes: classify_nearest(dispatch_transform(e), prototypes of each class);
  /// otherwise classify(e, prototype of each class, temperature, center) as before. Throws
  /// std::invalid_argument on a length mismatch, a non-finite value or no class.
  Classification classify(const std::vector<float>& embedding, double temperature,
                          bool center = true) const;
  /// Index of an expert domain; throws std::out_of_range naming the known ones.
  std::size_t domain_index(const std::string& domain) const;
  /// Throws std::invalid_argument when the ranks or matrix names differ from `factors`.
  void check_compatible(const ModelFactors& factors) const;
  /// This set over the matrices of `factors` (a superset of its own): each expert keeps its z of
  /// the matrices it has and gets z = 1 (the base weights, Sun et al. eq. 1) for the others, so
  /// that every expert composes the same weights as before. Used to continue training or merge
  /// experts over more matrices (e.g. "all" experts into an "all+head" file). Throws
  /// std::invalid_argument naming a matrix of this set that `factors` lacks, or one whose rank
  /// differs.
  ExpertSet lifted_to(const ModelFactors& factors) const;

  void save(const std::filesystem::path& file) const;
  /// Throws nn::CheckpointError (corrupt file) or std::runtime_error (missing tensor, bad
  /// config), naming the file.
  static ExpertSet load(const std::filesystem::path& file);
};

/// Adapted weights of every matrix, composed W' = U diag(σ ⊙ z') Vᵀ (f32, row-major).
struct ComposedWeights {
  std::vector<std::vector<float>> matrices;
  std::uint64_t bytes() const;
};
/// How compose_all() composes W'.
struct ComposeOptions {
  /// p of compose_delta(): the fraction of each matrix's ‖ΔW‖_F² kept. The default, 1, is exact,
  /// so that every caller (t2, blt_predict in another process, training, evaluation) composes the
  /// same weights; the t2 component passes its `compose_delta_energy` (default
  /// kDefaultDeltaEnergy: relative error of every matrix's change ≤ 1e-3) when it has no
  /// ExpertBasis.
  double delta_energy = 1.0;
};
/// W' = W + U_r diag(σ ⊙ (z − 1))_r V_rᵀ for every matrix (compose_delta(), Sun et al. eq. 1),
/// with options.delta_energy; `info`, if given, receives what each matrix kept. Throws
/// std::invalid_argument when z does not match the factors (count or ranks).
ComposedWeights compose_all(const ModelFactors& factors, const ExpertVector& z,
                            const ComposeOptions& options = {},
                            std::vector<DeltaComposeInfo>* info = nullptr);

/// The experts' changes of every matrix, composed once: ΔW_{k,m} = U_m diag(σ_m ⊙ (z_{k,m} − 1))
/// V_mᵀ (f32, compose_delta() with p = 1). W' is linear in z (Sun et al. eq. 1), so the mixture
/// z' = α_0·1 + Σ_k α_k z_k with α_0 = 1 − Σ_k α_k (ExpertSet::mix()) has
///   W'_m = W_m + Σ_k α_k ΔW_{k,m}
/// exactly (up to float rounding): composing any mixture costs a copy of W and one axpy per
/// non-zero α_k (memory-bound, no product of inner dimension rank). Holds experts x Σ_m rows·cols
/// floats (40 MiB for five experts of the shipped byte LM).
class ExpertBasis {
 public:
  /// Composes every expert of `experts` on `factors` (checked compatible; throws
  /// std::invalid_argument otherwise).
  ExpertBasis(const ModelFactors& factors, const ExpertSet& experts);
  /// W' for the expert weights α (one per expert, in ExpertSet::domains order; the identity
  /// takes 1 − Σ α) on the same `factors` it was built from; the matrices are shared out over
  /// nn::num_threads() threads. Throws std::invalid_argument when α has the wrong length or a
  /// non-finite value, or the factors' shapes differ or do not hold W.
  ComposedWeights compose(const ModelFactors& factors, const std::vector<double>& alpha) const;
  std::size_t experts() const { return deltas_.size(); }
  /// Bytes of the stored changes.
  std::uint64_t bytes() const;

 private:
  std::vector<std::vector<std::vector<float>>> deltas_;  ///< [expert][matrix] rows x cols
};

struct WeightCacheOptions {
  std::size_t max_entries = 8;             ///< LRU capacity in entries
  std::uint64_t max_bytes = 256ull << 20;  ///< LRU capacity in bytes of composed weights
  double ttl_seconds = 600.0;              ///< an entry older than this is recomposed
};
struct WeightCacheStats {
  std::uint64_t hits = 0, misses = 0, evictions = 0, expirations = 0;
  std::uint64_t entries = 0, bytes = 0;
  double hit_rate() const {
    return hits + misses ? static_cast<double>(hits) / static_cast<double>(hits + misses) : 0.0;
  }
};

/// Composed weights keyed by α (rounded to 1e-9), least recently used evicted first when the
/// entry or byte limit is passed, expired after ttl_seconds. Thread-safe (one mutex): the t2
/// component and blt's predictor may share one in an embedded run.
class WeightCache {
 public:
  using Clock = std::chrono::steady_clock;
  explicit WeightCache(
      WeightCacheOptions options = {},
      std::function<Clock::time_point()> now = [] { return Clock::now(); });
  /// The cached weights for α, or compose() them (a miss), insert and return them. An entry
  /// larger than max_bytes is returned without being kept.
  std::shared_ptr<const ComposedWeights> get_or_compose(
      const std::vector<double>& alpha, const std::function<ComposedWeights()>& compose);
  bool contains(const std::vector<double>& alpha) const;
  WeightCacheStats stats() const;

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const ComposedWeights> weights;
    Clock::time_point inserted;
  };
  void evict_locked();
  WeightCacheOptions options_;
  std::function<Clock::time_point()> now_;
  mutable std::mutex mutex_;
  std::list<Entry> lru_;  ///< most recent first
  std::map<std::string, std::list<Entry>::iterator> index_;
  WeightCacheStats stats_;
};

/// A new TransformerLM with the architecture and every parameter of `model` (copied).
std::unique_ptr<nn::TransformerLM<float>> copy_model(const nn::TransformerLM<float>& model);
/// Writes composed weights into the matrices `factors.names` of `target` (same architecture as
/// the factors' model); throws std::invalid_argument on a name or shape mismatch.
void apply_weights(const ModelFactors& factors, const ComposedWeights& weights,
                   nn::TransformerLM<float>& target);
/// Pass 2 for one document: α of `adaptation` (over adaptation.domains, matched by name to the
/// expert set) → z' = (1 − Σ α)·1 + Σ α_k z_k (mix()) → W' for every adapted matrix through `cache`
/// (composed on a miss by `basis` when given, an ExpertBasis of these experts and factors, else
/// by compose_all() with `compose`) →
/// written into `target` (a copy of the base model that the caller owns, e.g. from copy_model).
/// Returns the weights used. Throws std::invalid_argument for an unknown domain or a mismatch of
/// lengths.
std::shared_ptr<const ComposedWeights> apply_adaptation(
    const blt::Adaptation& adaptation, const ExpertSet& experts, const ModelFactors& factors,
    WeightCache& cache, nn::TransformerLM<float>& target, const ComposeOptions& compose = {},
    const ExpertBasis* basis = nullptr);

/// Task embedding (pass 1): mean over the first `positions` tokens (BOS + bytes) of the
/// model's final hidden states norm_f(x_L), [dim]. The same quantity blt publishes on
/// `blt.doc_embedding`. Throws std::invalid_argument when positions exceeds the context.
std::vector<float> task_embedding(const nn::TransformerLM<float>& model,
                                  const std::vector<std::uint8_t>& bytes,
                                  std::int64_t positions = 256);

}  // namespace neat::t2
