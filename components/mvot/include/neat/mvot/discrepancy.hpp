// The token discrepancy loss of MVoT (Li et al. 2025, arXiv 2501.07542, Sec. 3, "token
// discrepancy loss" L_D): on a position whose target is an image token, the expected distance,
// under the model's predicted distribution over image tokens, between the target code's
// codebook embedding and every code's embedding. It punishes a wrong code in proportion to how
// far it lies from the right one in the visual codebook, which plain cross-entropy ignores.
// Invariant: the distance matrix always comes from a trained codebook (never made up), is
// symmetric with a zero diagonal, and is normalised to a mean of 1 off the diagonal.
#pragma once

#include <cstdint>
#include <vector>

#include "neat/mvot/codebook.hpp"
#include "neat/nn/tensor.hpp"

namespace neat::mvot {

/// D (K, K) row-major, in units of the mean off-diagonal squared distance:
/// D_ij = ||c_i - c_j||^2 / mean_{a != b} ||c_a - c_b||^2, with c the codebook centres (16-dim,
/// pixels / 255). So D_ii = 0 and a uniform prediction has E[L_D] close to 1.
struct CodeDistances {
  int k = 0;
  std::vector<double> d;  ///< K * K values; d[i * k + j] = D_ij
  double at(int i, int j) const { return d[static_cast<std::size_t>(i) * k + j]; }
};

/// The normalised squared Euclidean distances between all codebook centres (see CodeDistances).
/// Throws std::invalid_argument if the codebook has fewer than 2 codes or all centres coincide.
CodeDistances code_distances(const Codebook& codebook);

/// Mean over the rows r with a target code y_r >= 0 of
///   L_D(r) = sum_j p_rj D_{y_r j},   p_r = softmax(logits[r, first .. first + K))
/// (MVoT Sec. 3: the softmax is restricted to the K image-token columns; other columns get no
/// gradient). logits (..., V) with V >= first + K; target_codes one per row (N = numel / V):
/// a code in [0, K), or -1 for a row that is not an image position (ignored). Returns a scalar
/// (0 when every row is ignored). Backward (hand-written, first order):
///   dL/dlogit[r, first + j] = p_rj (D_{y_r j} - sum_k p_rk D_{y_r k}) / n_rows.
/// A one-hot prediction of the target gives L_D = 0 (D_yy = 0). Errors: std::invalid_argument on
/// a row-count or width mismatch, std::out_of_range on a code outside [-1, K); the gradient
/// refuses a second derivative (std::logic_error) instead of returning a wrong one.
template <typename T>
nn::Tensor<T> token_discrepancy_loss(const nn::Tensor<T>& logits,
                                     const std::vector<std::int32_t>& target_codes,
                                     const CodeDistances& distances, std::int64_t first);

extern template nn::Tensor<float> token_discrepancy_loss(const nn::Tensor<float>&,
                                                         const std::vector<std::int32_t>&,
                                                         const CodeDistances&, std::int64_t);
extern template nn::Tensor<double> token_discrepancy_loss(const nn::Tensor<double>&,
                                                          const std::vector<std::int32_t>&,
                                                          const CodeDistances&, std::int64_t);

}  // namespace neat::mvot
