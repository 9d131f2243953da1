// Transformer² dispatch (Sun et al. 2025, §3.2): (a) classification of a task embedding by
// cosine similarity to per-domain prototypes, with a confidence; (b) few-shot adaptation by the
// cross-entropy method (CEM, Rubinstein 1999; the paper's §3.2 "few-shot adaptation") over the
// mixture weights α of the experts.
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

/// Settings of the CEM search (defaults as the reference implementation: 32, 0.2, 50).
struct CemOptions {
  std::int64_t population = 32;  ///< samples per iteration
  double elite_ratio = 0.2;      ///< fraction of the population refitting the Gaussian
  std::int64_t iterations = 50;
  double initial_std = 0.5;  ///< std of the initial Gaussian over θ (mean: uniform α)
  double min_std = 1e-3;     ///< floor of the std, so that the search never freezes
  std::uint64_t seed = 1;
};

struct CemResult {
  std::vector<double> alpha;  ///< best α found (non-negative, sums to 1)
  double best_score = 0.0;    ///< objective at alpha
  std::vector<double> best_per_iteration;
  std::int64_t evaluations = 0;
};

/// Mixture weights from CEM parameters θ: α_k = max(θ_k, 0) / Σ_j max(θ_j, 0) (uniform when all
/// θ_k ≤ 0), so that z' = Σ α_k z_k is a convex combination of the experts.
std::vector<double> alpha_from_theta(const std::vector<double>& theta);

/// Maximises objective(α) over α = alpha_from_theta(θ), θ ~ N(μ, diag(s²)) refitted each
/// iteration to the elite samples (the top ceil(elite_ratio x population)). `experts` = length
/// of α. Throws std::invalid_argument for experts == 0 or options out of range; an objective
/// that returns NaN for a sample counts as -inf for it.
CemResult cem_search(std::size_t experts,
                     const std::function<double(const std::vector<double>&)>& objective,
                     const CemOptions& options = {});

}  // namespace neat::t2
