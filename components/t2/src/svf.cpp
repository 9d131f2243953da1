// SVF: exact (LAPACKE dgesdd) and randomized (Halko et al. 2011) SVD, energy truncation,
// composition W' = U diag(σ ⊙ z) Vᵀ and the gradient of z.
#include "neat/t2/svf.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <stdexcept>

#include "neat/nn/ops.hpp"

namespace neat::t2 {

namespace {

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void check_shape(std::size_t size, std::int64_t rows, std::int64_t cols, const char* what) {
  if (rows <= 0 || cols <= 0) {
    throw std::invalid_argument(std::string("t2: ") + what + ": empty matrix " +
                                std::to_string(rows) + "x" + std::to_string(cols));
  }
  if (size != static_cast<std::size_t>(rows * cols)) {
    throw std::invalid_argument(std::string("t2: ") + what + ": " + std::to_string(size) +
                                " values for a " + std::to_string(rows) + "x" +
                                std::to_string(cols) + " matrix");
  }
}

// Orthonormal basis of the columns of y (rows x k, k <= rows) by Householder QR (Eigen).
RowMat orthonormal_columns(const RowMat& y) {
  Eigen::HouseholderQR<RowMat> qr(y);
  return qr.householderQ() * RowMat::Identity(y.rows(), y.cols());
}

SvfFactors finish(const std::vector<double>& u, const std::vector<double>& s,
                  const std::vector<double>& vt, std::int64_t rows, std::int64_t cols,
                  double frobenius2, bool randomized, const SvdOptions& o) {
  const auto k = static_cast<std::int64_t>(s.size());
  std::int64_t rank = k;
  double kept = 0.0;
  if (o.energy_fraction < 1.0) {
    rank = 0;
    for (std::int64_t i = 0; i < k; ++i) {
      kept += s[i] * s[i];
      rank = i + 1;
      if (kept >= o.energy_fraction * frobenius2) break;
    }
  }
  kept = 0.0;
  for (std::int64_t i = 0; i < rank; ++i) kept += s[i] * s[i];
  SvfFactors f;
  f.rows = rows;
  f.cols = cols;
  f.rank = rank;
  f.randomized = randomized;
  f.energy_kept = frobenius2 > 0 ? kept / frobenius2 : 1.0;
  f.storage = o.storage;
  f.singular_values.assign(s.begin(), s.begin() + rank);
  std::vector<float> uf(static_cast<std::size_t>(rows * rank)),
      vf(static_cast<std::size_t>(cols * rank));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t r = 0; r < rank; ++r) uf[i * rank + r] = static_cast<float>(u[i * k + r]);
  for (std::int64_t j = 0; j < cols; ++j)
    for (std::int64_t r = 0; r < rank; ++r) vf[j * rank + r] = static_cast<float>(vt[r * cols + j]);
  if (o.storage == nn::DType::bf16) {
    f.u_bf16.resize(uf.size());
    f.v_bf16.resize(vf.size());
    std::transform(uf.begin(), uf.end(), f.u_bf16.begin(), nn::float_to_bf16);
    std::transform(vf.begin(), vf.end(), f.v_bf16.begin(), nn::float_to_bf16);
  } else if (o.storage == nn::DType::f32) {
    f.u_f32 = std::move(uf);
    f.v_f32 = std::move(vf);
  } else {
    throw std::invalid_argument("t2: decomposition storage must be f32 or bf16");
  }
  return f;
}

}  // namespace

std::vector<float> SvfFactors::u() const {
  if (storage == nn::DType::f32) return u_f32;
  std::vector<float> out(u_bf16.size());
  std::transform(u_bf16.begin(), u_bf16.end(), out.begin(), nn::bf16_to_float);
  return out;
}

std::vector<float> SvfFactors::v() const {
  if (storage == nn::DType::f32) return v_f32;
  std::vector<float> out(v_bf16.size());
  std::transform(v_bf16.begin(), v_bf16.end(), out.begin(), nn::bf16_to_float);
  return out;
}

std::uint64_t SvfFactors::stored_bytes() const {
  return static_cast<std::uint64_t>((rows + cols) * rank) * nn::dtype_size(storage) +
         4ull * static_cast<std::uint64_t>(rank);
}

void SvfFactors::copy_base(std::vector<float>& out) const {
  const auto n = static_cast<std::size_t>(rows * cols);
  if (base.size() == n) {
    out.assign(base.begin(), base.end());  // one pass: no zero fill before the copy
  } else if (base_bf16.size() == n) {
    out.resize(n);
    std::transform(base_bf16.begin(), base_bf16.end(), out.begin(), nn::bf16_to_float);
  } else {
    throw std::invalid_argument(
        "t2: the factors do not hold the decomposed matrix W (SvfFactors::base) of " +
        std::to_string(rows) + "x" + std::to_string(cols) + " values");
  }
}

std::uint64_t SvfFactors::base_bytes() const {
  return base.size() * sizeof(float) + base_bf16.size() * sizeof(std::uint16_t);
}

void svd_exact(const std::vector<double>& w, std::int64_t rows, std::int64_t cols,
               std::vector<double>& u, std::vector<double>& s, std::vector<double>& vt) {
  check_shape(w.size(), rows, cols, "svd_exact");
  const std::int64_t k = std::min(rows, cols);
  std::vector<double> a = w;  // dgesdd overwrites its input
  u.assign(static_cast<std::size_t>(rows * k), 0.0);
  s.assign(static_cast<std::size_t>(k), 0.0);
  vt.assign(static_cast<std::size_t>(k * cols), 0.0);
  const lapack_int info = LAPACKE_dgesdd(
      LAPACK_ROW_MAJOR, 'S', static_cast<lapack_int>(rows), static_cast<lapack_int>(cols), a.data(),
      static_cast<lapack_int>(cols), s.data(), u.data(), static_cast<lapack_int>(k), vt.data(),
      static_cast<lapack_int>(cols));
  if (info != 0) {
    throw std::runtime_error("t2: LAPACKE_dgesdd failed with info " + std::to_string(info) +
                             " on a " + std::to_string(rows) + "x" + std::to_string(cols) +
                             " matrix");
  }
}

void svd_randomized(const std::vector<double>& w, std::int64_t rows, std::int64_t cols,
                    std::int64_t rank, std::int64_t oversampling, std::int64_t power_iterations,
                    std::uint64_t seed, std::vector<double>& u, std::vector<double>& s,
                    std::vector<double>& vt) {
  check_shape(w.size(), rows, cols, "svd_randomized");
  if (rank <= 0 || oversampling < 0 || power_iterations < 0) {
    throw std::invalid_argument(
        "t2: svd_randomized needs rank > 0, oversampling >= 0 and "
        "power_iterations >= 0");
  }
  const std::int64_t l = std::min({rank + oversampling, rows, cols});
  Eigen::Map<const RowMat> a(w.data(), rows, cols);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  RowMat omega(cols, l);
  for (std::int64_t i = 0; i < omega.size(); ++i) omega.data()[i] = normal(rng);
  // Algorithm 4.4 (randomized subspace iteration): orthonormalise after each product so that
  // the small singular values are not lost to rounding.
  RowMat q = orthonormal_columns(a * omega);  // (rows, l)
  for (std::int64_t it = 0; it < power_iterations; ++it) {
    const RowMat z = orthonormal_columns(a.transpose() * q);  // (cols, l)
    q = orthonormal_columns(a * z);
  }
  // Algorithm 5.1: B = Qᵀ A (l x cols), its exact SVD, U = Q Ũ.
  const RowMat b = q.transpose() * a;
  std::vector<double> bw(b.data(), b.data() + b.size()), ub;
  svd_exact(bw, l, cols, ub, s, vt);
  Eigen::Map<const RowMat> ubm(ub.data(), l, l);
  const RowMat full_u = q * ubm;  // (rows, l)
  u.assign(full_u.data(), full_u.data() + full_u.size());
}

namespace {

SvfFactors decompose_double(const std::vector<double>& w, std::int64_t rows, std::int64_t cols,
                            const SvdOptions& o) {
  check_shape(w.size(), rows, cols, "decompose");
  if (!(o.energy_fraction > 0.0 && o.energy_fraction <= 1.0)) {
    throw std::invalid_argument("t2: energy_fraction must be in (0, 1], got " +
                                std::to_string(o.energy_fraction));
  }
  double frob2 = 0.0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(w[i])) {
      throw std::invalid_argument("t2: decompose: non-finite weight at index " + std::to_string(i) +
                                  " (row " + std::to_string(i / cols) + ", column " +
                                  std::to_string(i % cols) + ")");
    }
    frob2 += w[i] * w[i];
  }
  std::vector<double> u, s, vt;
  const bool randomized = std::min(rows, cols) >= o.randomized_threshold &&
                          o.randomized_rank + o.oversampling < std::min(rows, cols);
  if (randomized) {
    svd_randomized(w, rows, cols, o.randomized_rank, o.oversampling, o.power_iterations, o.seed, u,
                   s, vt);
  } else {
    svd_exact(w, rows, cols, u, s, vt);
  }
  auto f = finish(u, s, vt, rows, cols, frob2, randomized, o);
  if (o.storage == nn::DType::bf16) {
    f.base_bf16.resize(w.size());
    std::transform(w.begin(), w.end(), f.base_bf16.begin(),
                   [](double x) { return nn::float_to_bf16(static_cast<float>(x)); });
  } else {
    f.base.assign(w.begin(), w.end());
  }
  return f;
}

}  // namespace

SvfFactors decompose(const std::vector<double>& w, std::int64_t rows, std::int64_t cols,
                     const SvdOptions& options) {
  return decompose_double(w, rows, cols, options);
}

SvfFactors decompose(const std::vector<float>& w, std::int64_t rows, std::int64_t cols,
                     const SvdOptions& options) {
  return decompose_double(std::vector<double>(w.begin(), w.end()), rows, cols, options);
}

void compose(const SvfFactors& f, const std::vector<float>& z, std::vector<float>& out) {
  if (static_cast<std::int64_t>(z.size()) != f.rank) {
    throw std::invalid_argument("t2: compose: z has " + std::to_string(z.size()) +
                                " entries, the factors have rank " + std::to_string(f.rank));
  }
  // U diag(σ ⊙ z): scale the columns of a copy of U, then one sgemm with Vᵀ.
  std::vector<float> us = f.u();
  const std::vector<float> v = f.v();
  for (std::int64_t i = 0; i < f.rows; ++i) {
    float* row = us.data() + i * f.rank;
    for (std::int64_t r = 0; r < f.rank; ++r) row[r] *= f.singular_values[r] * z[r];
  }
  out.resize(static_cast<std::size_t>(f.rows * f.cols));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(f.rows),
              static_cast<int>(f.cols), static_cast<int>(f.rank), 1.0f, us.data(),
              static_cast<int>(f.rank), v.data(), static_cast<int>(f.rank), 0.0f, out.data(),
              static_cast<int>(f.cols));
}

void compose_delta(const SvfFactors& f, const std::vector<float>& z, double delta_energy,
                   std::vector<float>& out, DeltaComposeInfo* info) {
  if (static_cast<std::int64_t>(z.size()) != f.rank) {
    throw std::invalid_argument("t2: compose_delta: z has " + std::to_string(z.size()) +
                                " entries, the factors have rank " + std::to_string(f.rank));
  }
  if (!(delta_energy > 0.0 && delta_energy <= 1.0)) {
    throw std::invalid_argument("t2: compose_delta: delta_energy must be in (0, 1], got " +
                                std::to_string(delta_energy));
  }
  // d_i = σ_i (z_i − 1); the components in decreasing |d_i| until delta_energy of Σ d_i².
  std::vector<double> d(static_cast<std::size_t>(f.rank));
  double total = 0.0;
  for (std::int64_t i = 0; i < f.rank; ++i) {
    if (!std::isfinite(z[i])) {
      throw std::invalid_argument("t2: compose_delta: z[" + std::to_string(i) + "] is not finite");
    }
    d[i] = double(f.singular_values[i]) * (double(z[i]) - 1.0);
    total += d[i] * d[i];
  }
  std::vector<std::int64_t> order(static_cast<std::size_t>(f.rank));
  for (std::int64_t i = 0; i < f.rank; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return std::abs(d[a]) > std::abs(d[b]); });
  std::vector<std::int64_t> kept;
  double energy = 0.0;
  for (const auto i : order) {
    if (d[i] == 0.0) break;  // the rest changes nothing
    if (delta_energy < 1.0 && energy >= delta_energy * total) break;
    kept.push_back(i);
    energy += d[i] * d[i];
  }
  std::sort(kept.begin(), kept.end());  // gather in storage order
  const auto r = static_cast<std::int64_t>(kept.size());
  f.copy_base(out);  // W; throws when the factors do not hold it
  if (r > 0) {
    // U_r diag(d_r) (rows x r) and V_r (cols x r), gathered from the stored precision into
    // per-thread scratch reused across calls (no fresh pages per composition).
    thread_local std::vector<float> ud, vr;
    ud.resize(static_cast<std::size_t>(f.rows * r));
    vr.resize(static_cast<std::size_t>(f.cols * r));
    const bool bf16 = f.storage == nn::DType::bf16;
    for (std::int64_t row = 0; row < f.rows; ++row) {
      float* dst = ud.data() + row * r;
      const std::int64_t at = row * f.rank;
      for (std::int64_t j = 0; j < r; ++j) {
        const auto i = kept[j];
        const float u = bf16 ? nn::bf16_to_float(f.u_bf16[at + i]) : f.u_f32[at + i];
        dst[j] = u * static_cast<float>(d[i]);
      }
    }
    for (std::int64_t col = 0; col < f.cols; ++col) {
      float* dst = vr.data() + col * r;
      const std::int64_t at = col * f.rank;
      for (std::int64_t j = 0; j < r; ++j)
        dst[j] = bf16 ? nn::bf16_to_float(f.v_bf16[at + kept[j]]) : f.v_f32[at + kept[j]];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(f.rows),
                static_cast<int>(f.cols), static_cast<int>(r), 1.0f, ud.data(), static_cast<int>(r),
                vr.data(), static_cast<int>(r), 1.0f, out.data(), static_cast<int>(f.cols));
  }
  if (info != nullptr) {
    info->components = r;
    info->delta_norm = std::sqrt(total);
    info->energy_kept = total > 0.0 ? std::min(1.0, energy / total) : 1.0;
    info->error_bound = std::sqrt(std::max(0.0, 1.0 - info->energy_kept));
  }
}

std::vector<double> compose(const std::vector<double>& u, const std::vector<double>& sigma,
                            const std::vector<double>& v, const std::vector<double>& z,
                            std::int64_t rows, std::int64_t cols) {
  const auto r = static_cast<std::int64_t>(sigma.size());
  if (static_cast<std::int64_t>(z.size()) != r) {
    throw std::invalid_argument("t2: compose: z and sigma differ in length");
  }
  check_shape(u.size(), rows, r, "compose (U)");
  check_shape(v.size(), cols, r, "compose (V)");
  std::vector<double> us = u;
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t k = 0; k < r; ++k) us[i * r + k] *= sigma[k] * z[k];
  std::vector<double> out(static_cast<std::size_t>(rows * cols));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
              static_cast<int>(cols), static_cast<int>(r), 1.0, us.data(), static_cast<int>(r),
              v.data(), static_cast<int>(r), 0.0, out.data(), static_cast<int>(cols));
  return out;
}

std::vector<float> z_gradient(const SvfFactors& f, const std::vector<float>& grad_w) {
  check_shape(grad_w.size(), f.rows, f.cols, "z_gradient");
  const std::vector<float> u = f.u(), v = f.v();
  // GV (rows x r), then diag(Uᵀ (G V))_k = Σ_i U_ik (GV)_ik.
  std::vector<float> gv(static_cast<std::size_t>(f.rows * f.rank));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(f.rows),
              static_cast<int>(f.rank), static_cast<int>(f.cols), 1.0f, grad_w.data(),
              static_cast<int>(f.cols), v.data(), static_cast<int>(f.rank), 0.0f, gv.data(),
              static_cast<int>(f.rank));
  std::vector<double> d(static_cast<std::size_t>(f.rank), 0.0);
  for (std::int64_t i = 0; i < f.rows; ++i)
    for (std::int64_t k = 0; k < f.rank; ++k)
      d[k] += double(u[i * f.rank + k]) * gv[i * f.rank + k];
  std::vector<float> out(static_cast<std::size_t>(f.rank));
  for (std::int64_t k = 0; k < f.rank; ++k)
    out[k] = static_cast<float>(f.singular_values[k] * d[k]);
  return out;
}

std::vector<double> z_gradient(const std::vector<double>& u, const std::vector<double>& sigma,
                               const std::vector<double>& v, const std::vector<double>& grad_w,
                               std::int64_t rows, std::int64_t cols) {
  const auto r = static_cast<std::int64_t>(sigma.size());
  check_shape(grad_w.size(), rows, cols, "z_gradient");
  check_shape(u.size(), rows, r, "z_gradient (U)");
  check_shape(v.size(), cols, r, "z_gradient (V)");
  std::vector<double> gv(static_cast<std::size_t>(rows * r));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
              static_cast<int>(r), static_cast<int>(cols), 1.0, grad_w.data(),
              static_cast<int>(cols), v.data(), static_cast<int>(r), 0.0, gv.data(),
              static_cast<int>(r));
  std::vector<double> out(static_cast<std::size_t>(r), 0.0);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t k = 0; k < r; ++k) out[k] += u[i * r + k] * gv[i * r + k];
  for (std::int64_t k = 0; k < r; ++k) out[k] *= sigma[k];
  return out;
}

nn::Tensor<double> compose_graph(const nn::Tensor<double>& u, const nn::Tensor<double>& sigma,
                                 const nn::Tensor<double>& v, const nn::Tensor<double>& z) {
  // (rows, r) * (r) broadcast, then (rows, r) @ (r, cols).
  return nn::matmul(nn::mul(u, nn::mul(sigma, z)), nn::transpose(v, 0, 1));
}

DecompositionReport report_decomposition(const std::vector<float>& w, std::int64_t rows,
                                         std::int64_t cols, const SvdOptions& options,
                                         const std::string& setting) {
  const auto t0 = std::chrono::steady_clock::now();
  const SvfFactors f = decompose(w, rows, cols, options);
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<float> back;
  compose(f, std::vector<float>(static_cast<std::size_t>(f.rank), 1.0f), back);
  double err = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double d = double(w[i]) - back[i];
    err += d * d;
    norm += double(w[i]) * w[i];
  }
  DecompositionReport r;
  r.setting = setting;
  r.rows = rows;
  r.cols = cols;
  r.rank = f.rank;
  r.randomized = f.randomized;
  r.energy_kept = f.energy_kept;
  r.relative_error = norm > 0 ? std::sqrt(err / norm) : std::sqrt(err);
  r.seconds = std::chrono::duration<double>(t1 - t0).count();
  r.dense_bytes = static_cast<std::uint64_t>(rows * cols) * 4;
  r.stored_bytes = f.stored_bytes();
  r.bytes_saved =
      static_cast<std::int64_t>(r.dense_bytes) - static_cast<std::int64_t>(r.stored_bytes);
  return r;
}

}  // namespace neat::t2
