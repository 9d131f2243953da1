// Transformer² dispatch (Sun et al. 2025, §3.2): (a) classification of a task embedding by
// cosine similarity to per-domain prototypes, with a confidence; (b) few-shot adaptation by the
// cross-entropy method (CEM, Rubinstein 1999; the paper's §3.2 "few-shot adaptation") over the
// mixture weights α of the experts, optionally with the identity z = 1 (the base LM) as one more
// component. Several prototypes per class (k-means centroids of the class's train embeddings)
// and a centring / whitening transform of the embeddings learned on the train split.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace neat::t2 {

/// cos(a, b) = a·b / (‖a‖ ‖b‖); 0 when either is the zero vector. Throws std::invalid_argument
/// on a length mismatch.
double cosine(const std::vector<float>& a, const std::vector<float>& b);

struct Classification {
  std::size_t index = 0;              ///< arg-max class
  double confidence = 0.0;            ///< probability of the arg-max class, in [0, 1]
  double margin = 0.0;                ///< best cosine minus second best
  std::vector<double> cosines;        ///< one per prototype
  std::vector<double> probabilities;  ///< softmax(cosines / temperature)
};

/// Cosine classification: class = argmax_c cos(e, prototype_c); confidence = softmax of the
/// cosines divided by `temperature` (> 0), at the arg-max. Throws std::invalid_argument when
/// there is no prototype, the temperature is not positive, a length differs, or the embedding
/// holds a non-finite value. With `center`, the mean μ of the prototypes is subtracted from the
/// embedding and from every prototype first (cos(e − μ, p_c − μ)): task embeddings of all
/// domains share a large common component that otherwise dominates the cosines.
Classification classify(const std::vector<float>& embedding,
                        const std::vector<std::vector<float>>& prototypes, double temperature,
                        bool center = false);

/// Nearest-prototype cosine classification with several prototypes per class:
/// cos_c = max_j cos(e, p_{c,j}); class = argmax_c cos_c (the class of the most similar
/// prototype); confidence = softmax(cos / temperature) at the arg-max, margin and probabilities
/// as classify(), all per class. No centring here: apply an EmbeddingTransform first. Throws
/// std::invalid_argument when there is no class, a class has no prototype, the temperature is
/// not positive, a length differs, or the embedding holds a non-finite value.
Classification classify_nearest(const std::vector<float>& embedding,
                                const std::vector<std::vector<std::vector<float>>>& prototypes,
                                double temperature);

/// Affine map of task embeddings, x' = W (x − μ), learned on train embeddings only.
/// `mean` empty: no centring; `whitening` empty: W = I, else row-major [dim, dim].
struct EmbeddingTransform {
  std::vector<float> mean;
  std::vector<float> whitening;
  bool empty() const { return mean.empty() && whitening.empty(); }
  /// Throws std::invalid_argument on a length mismatch.
  std::vector<float> apply(const std::vector<float>& x) const;
};

/// How fit_embedding_transform() maps embeddings: `center` subtracts the train mean μ;
/// `whiten` (ZCA) also multiplies by W = V diag(1/sqrt(λ + ε·mean(λ))) Vᵀ from the eigen
/// decomposition Σ = V diag(λ) Vᵀ of the pooled within-class covariance of the train embeddings
/// (LDA-style whitening; ε = shrinkage > 0 keeps W finite for a rank-deficient Σ).
enum class EmbeddingNormalisation { center, whiten };

/// Fits the transform on train embeddings grouped by class ([classes][documents][dim]).
/// Throws std::invalid_argument when there are no embeddings, lengths differ, or shrinkage <= 0
/// for `whiten`.
EmbeddingTransform fit_embedding_transform(
    const std::vector<std::vector<std::vector<float>>>& embeddings_by_class,
    EmbeddingNormalisation normalisation, double shrinkage = 0.1);

/// k-means (Lloyd, k-means++ seeding, Arthur & Vassilvitskii 2007) of `points` ([n][dim]) under
/// the squared Euclidean distance after L2-normalising each point (spherical k-means, so that
/// the centroids suit cosine classification). Returns min(k, n) centroids, [k][dim]. Stops after
/// `iterations` or when no assignment changes. Throws std::invalid_argument for no point, k < 1
/// or differing lengths.
std::vector<std::vector<float>> kmeans_centroids(const std::vector<std::vector<float>>& points,
                                                 std::size_t k, std::int64_t iterations = 50,
                                                 std::uint64_t seed = 1);

/// Settings of the CEM search (defaults as the reference implementation: 32, 0.2, 50).
struct CemOptions {
  std::int64_t population = 32;  ///< samples per iteration
  double elite_ratio = 0.2;      ///< fraction of the population refitting the Gaussian
  std::int64_t iterations = 50;
  double initial_std = 0.5;  ///< std of the initial Gaussian over θ (mean: uniform α)
  double min_std = 1e-3;     ///< floor of the std, so that the search never freezes
  std::uint64_t seed = 1;
  /// Also weigh the identity z = 1 ("no adaptation") as component 0 of the mixture:
  /// z' = α_0·1 + Σ_k α_k z_k. The search then runs over experts + 1 weights, the very first
  /// sample is α_0 = 1 (the base model), so that the best score is never below the base's;
  /// the objective and the result see only the expert weights α_1..α_K (sum 1 − α_0), which
  /// ExpertSet::mix() completes with the identity.
  bool identity_component = false;
  /// Mean of the initial Gaussian over θ; empty: uniform α (1 / dims each). Its length must be
  /// the number of θ entries (experts, + 1 with identity_component).
  std::vector<double> initial_mean;
  /// true: α = alpha_from_theta(θ), a convex combination. false: α = θ as is, any real weights,
  /// z' = (1 − Σ α)·1 + Σ α_k z_k = 1 + Σ α_k (z_k − 1) (ExpertSet::mix), which can extrapolate
  /// along an expert's change or subtract another's; needs identity_component = false.
  bool simplex = true;
};

struct CemResult {
  std::vector<double> alpha;   ///< best expert weights (non-negative, sum 1 − identity_weight)
  double identity_weight = 0;  ///< α_0 of the identity component (0 without it)
  double best_score = 0.0;     ///< objective at alpha
  std::vector<double> best_per_iteration;
  std::int64_t evaluations = 0;
};

/// Mixture weights from CEM parameters θ: α_k = max(θ_k, 0) / Σ_j max(θ_j, 0) (uniform when all
/// θ_k ≤ 0), so that z' = Σ α_k z_k is a convex combination of the experts.
std::vector<double> alpha_from_theta(const std::vector<double>& theta);

/// Maximises objective(α) over α = alpha_from_theta(θ) (or α = θ with options.simplex = false),
/// θ ~ N(μ, diag(s²)) refitted each iteration to the elite samples (the top ceil(elite_ratio x
/// population)); the first sample of every iteration is μ itself, so the result never scores
/// below the initial mean. `experts` = length of α. With options.identity_component, θ has
/// experts + 1 entries, θ_0 weighs z = 1, and the objective receives α_1..α_K only (see
/// CemOptions::identity_component). Throws std::invalid_argument for experts == 0, options out
/// of range, an initial_mean of the wrong length or simplex = false with identity_component; an
/// objective that returns NaN for a sample counts as -inf for it.
CemResult cem_search(std::size_t experts,
                     const std::function<double(const std::vector<double>&)>& objective,
                     const CemOptions& options = {});

}  // namespace neat::t2
