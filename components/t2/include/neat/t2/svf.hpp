// Singular value fine-tuning (SVF, Transformer²: Sun et al. 2025, arXiv 2501.06252, §3.1):
// the SVD W = U Σ Vᵀ of a weight matrix through LAPACK (LAPACKE dgesdd of OpenBLAS) or, above a
// size threshold, the randomized SVD of Halko, Martinsson & Tropp 2011 (Algorithm 4.4: Gaussian
// range finder with oversampling and power iterations, then the SVD of the small projection);
// rank truncation to an energy fraction p; the adapted matrix W' = U diag(σ ⊙ z) Vᵀ (eq. 1 of
// the paper's SVF) and its gradient with respect to the expert vector z; the same W' composed as
// the base plus the low-rank change, W' = W + U diag(σ ⊙ (z − 1)) Vᵀ, over the fewest
// components that hold a fraction p of the change's energy (adaptive precision of the
// composition, with the error bound √(1 − p) relative to the change).
// Invariant: U (rows x rank) and V (cols x rank) have orthonormal columns up to their storage
// precision (f32 or bf16), singular values are non-negative and non-increasing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "neat/nn/tensor.hpp"

namespace neat::t2 {

/// How a matrix is decomposed (the `decomposition:` block of the t2 profile).
struct SvdOptions {
  double energy_fraction = 1.0;  ///< p: keep the smallest rank r with Σ_{i<r} σ_i² ≥ p ‖W‖_F²
  std::int64_t randomized_threshold = 2048;  ///< min(rows, cols) at or above this: randomized
  std::int64_t randomized_rank = 256;        ///< k: singular triplets the randomized SVD seeks
  std::int64_t oversampling = 10;            ///< p of Halko et al.: extra random directions
  std::int64_t power_iterations = 2;         ///< q of Halko et al. (Algorithm 4.4)
  nn::DType storage = nn::DType::f32;        ///< U and V stored in f32 or bf16
  std::uint64_t seed = 1;                    ///< Gaussian test matrix of the randomized SVD
};

/// Factors of one matrix W (rows x cols, row-major): W ≈ U diag(σ) Vᵀ.
struct SvfFactors {
  std::int64_t rows = 0, cols = 0, rank = 0;
  std::vector<float> singular_values;  ///< σ, length rank, non-increasing
  nn::DType storage = nn::DType::f32;  ///< dtype of u and v below
  std::vector<float> u_f32, v_f32;     ///< U (rows x rank), V (cols x rank), row-major, if f32
  std::vector<std::uint16_t> u_bf16, v_bf16;  ///< the same in bf16, if storage == bf16
  /// W itself as decomposed (rows x cols, row-major): the start of compose_delta(), which adds
  /// only the change U diag(σ ⊙ (z − 1)) Vᵀ to it. In `base` (f32) for f32 storage, in
  /// `base_bf16` for bf16 storage (lossless for a bf16 checkpoint, whose weights are bf16
  /// values; rounded otherwise, like U and V). Not counted in stored_bytes().
  std::vector<float> base;
  std::vector<std::uint16_t> base_bf16;
  bool randomized = false;  ///< computed by the randomized SVD
  double energy_kept = 1.0;  ///< Σ_{i<rank} σ_i² / ‖W‖_F² (the fraction of spectral energy held)

  /// U and V widened to f32 (a copy for bf16 storage, the stored vector otherwise).
  std::vector<float> u() const;
  std::vector<float> v() const;
  /// Bytes of the stored factors: (rows + cols) x rank x dtype size + 4 x rank.
  std::uint64_t stored_bytes() const;
  /// W widened to f32 into `out` (resized to rows x cols). Throws std::invalid_argument when
  /// neither base nor base_bf16 holds rows x cols values.
  void copy_base(std::vector<float>& out) const;
  /// Bytes of the stored W: rows x cols x (4 or 2).
  std::uint64_t base_bytes() const;
};

/// Decomposes W (rows x cols, row-major, any finite values) in double precision. Exact SVD via
/// LAPACKE_dgesdd when min(rows, cols) < options.randomized_threshold, else the randomized SVD
/// (rank ≤ randomized_rank + oversampling before truncation). Then keeps the smallest rank
/// holding options.energy_fraction of ‖W‖_F² and rounds U, V to options.storage.
/// Throws std::invalid_argument for an empty matrix, a size mismatch, a non-finite entry
/// (naming its index) or an option out of range; std::runtime_error if LAPACK fails.
SvfFactors decompose(const std::vector<float>& w, std::int64_t rows, std::int64_t cols,
                     const SvdOptions& options = {});
/// The same for a double matrix (tests: reconstruction at 1e-6 needs double input).
SvfFactors decompose(const std::vector<double>& w, std::int64_t rows, std::int64_t cols,
                     const SvdOptions& options = {});

/// Exact thin SVD in double: u (rows x k), s (k), vt (k x cols), k = min(rows, cols), row-major.
/// LAPACKE_dgesdd (divide and conquer). Throws std::runtime_error if LAPACK fails.
void svd_exact(const std::vector<double>& w, std::int64_t rows, std::int64_t cols,
               std::vector<double>& u, std::vector<double>& s, std::vector<double>& vt);
/// Randomized SVD (Halko et al. 2011, Algorithm 4.4 + 5.1) of rank ≤ rank + oversampling, in
/// double: Y = (A Aᵀ)^q A Ω with QR re-orthonormalisation after every product, Q = qr(Y),
/// B = Qᵀ A, B = Ũ Σ Vᵀ (dgesdd), U = Q Ũ. Same output layout as svd_exact.
void svd_randomized(const std::vector<double>& w, std::int64_t rows, std::int64_t cols,
                    std::int64_t rank, std::int64_t oversampling, std::int64_t power_iterations,
                    std::uint64_t seed, std::vector<double>& u, std::vector<double>& s,
                    std::vector<double>& vt);

/// W' = U diag(σ ⊙ z) Vᵀ (rows x cols, row-major, f32) into `out` (resized), one sgemm.
/// z has length rank (z = 1 gives back the decomposed W up to truncation and storage rounding).
/// Throws std::invalid_argument when z.size() != rank.
void compose(const SvfFactors& f, const std::vector<float>& z, std::vector<float>& out);

/// Default p of compose_delta(): the kept components hold 1 − 1e-8 of ‖ΔW‖_F², so the change is
/// composed with a relative error ‖ΔW_p − ΔW‖_F / ‖ΔW‖_F ≤ √(1e-8) = 1e-4 (1 − 1e-6, bound 1e-3,
/// moved the bits per byte by up to 1.1e-4 with the experts over all 24 matrices, whose changes
/// reach ‖ΔW‖_F ≈ ‖W‖_F).
inline constexpr double kDefaultDeltaEnergy = 1.0 - 1e-8;

/// What compose_delta() kept (one matrix).
struct DeltaComposeInfo {
  std::int64_t components = 0;  ///< r: components i with σ_i (z_i − 1) composed
  double delta_norm = 0.0;   ///< ‖ΔW‖_F = √(Σ_i σ_i² (z_i − 1)²) over all components
  double energy_kept = 1.0;  ///< Σ_kept σ_i² (z_i − 1)² / ‖ΔW‖_F² (1 when ΔW = 0)
  /// √(1 − energy_kept): bound on ‖ΔW_p − ΔW‖_F / ‖ΔW‖_F (exact when U and V are orthonormal).
  double error_bound = 0.0;
};

/// W' = W + U_r diag(d_r) V_rᵀ with d_i = σ_i (z_i − 1), into `out` (rows x cols, f32,
/// resized): W (SvfFactors::copy_base) is copied and only the change is multiplied, over the fewest
/// components r, taken by decreasing |d_i|, whose Σ d_i² is at least delta_energy · ‖ΔW‖_F²
/// (ties: lower index first). Since ‖U_r diag(d_r) V_rᵀ − U diag(d) Vᵀ‖_F² = Σ_dropped d_i² for
/// orthonormal U and V, the composed change has relative error ≤ √(1 − delta_energy)
/// (DeltaComposeInfo::error_bound gives the achieved one). delta_energy = 1 keeps every
/// component with z_i ≠ 1 and is exact: W' = U diag(σ ⊙ z) Vᵀ up to the decomposition's own
/// reconstruction error (compose(), with W in place of U diag(σ) Vᵀ). Cost: a memcpy of W plus
/// one sgemm of inner dimension r (compose(): inner dimension rank). Same equation as compose()
/// (Sun et al. eq. 1), rewritten as W + U diag(σ ⊙ (z − 1)) Vᵀ.
/// Throws std::invalid_argument when z.size() != rank, z is not finite, W is missing or
/// delta_energy is outside (0, 1].
void compose_delta(const SvfFactors& f, const std::vector<float>& z, double delta_energy,
                   std::vector<float>& out, DeltaComposeInfo* info = nullptr);

/// The same in double from double factors (gradient checks): u (rows x r), v (cols x r).
std::vector<double> compose(const std::vector<double>& u, const std::vector<double>& sigma,
                            const std::vector<double>& v, const std::vector<double>& z,
                            std::int64_t rows, std::int64_t cols);

/// ∂L/∂z = σ ⊙ diag(Uᵀ G V) with G = ∂L/∂W' (rows x cols, row-major): the chain rule through
/// W' = U diag(σ ⊙ z) Vᵀ, since ∂W'_ij/∂z_k = σ_k U_ik V_jk. Returns a vector of length rank.
/// Throws std::invalid_argument when G has the wrong size.
std::vector<float> z_gradient(const SvfFactors& f, const std::vector<float>& grad_w);
std::vector<double> z_gradient(const std::vector<double>& u, const std::vector<double>& sigma,
                               const std::vector<double>& v, const std::vector<double>& grad_w,
                               std::int64_t rows, std::int64_t cols);

/// W' as an nn autograd graph of z (z: (r) leaf; u (rows x r), sigma (r), v (cols x r) constant):
/// matmul(u * (sigma * z), vᵀ). Used to cross-check z_gradient against reverse mode.
nn::Tensor<double> compose_graph(const nn::Tensor<double>& u, const nn::Tensor<double>& sigma,
                                 const nn::Tensor<double>& v, const nn::Tensor<double>& z);

/// What one decomposition setting costs and gives (the adaptive-precision report).
struct DecompositionReport {
  std::string setting;  ///< e.g. "exact p=0.99 bf16"
  std::int64_t rows = 0, cols = 0, rank = 0;
  bool randomized = false;
  double energy_kept = 0.0;        ///< fraction of ‖W‖_F² held by the kept rank
  double relative_error = 0.0;     ///< ‖W − U diag(σ) Vᵀ‖_F / ‖W‖_F
  double seconds = 0.0;            ///< wall time of decompose()
  std::uint64_t dense_bytes = 0;   ///< rows x cols x 4 (f32 W)
  std::uint64_t stored_bytes = 0;  ///< SvfFactors::stored_bytes()
  std::int64_t bytes_saved = 0;    ///< dense_bytes − stored_bytes (negative: costs more)
};
/// Decomposes w with options, timing it, and measures the reconstruction error.
DecompositionReport report_decomposition(const std::vector<float>& w, std::int64_t rows,
                                         std::int64_t cols, const SvdOptions& options,
                                         const std::string& setting);

}  // namespace neat::t2
