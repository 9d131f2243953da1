// SVF: SVD reconstruction and orthogonality (exact and randomized), z = 1 identity, energy
// truncation, bf16 storage, and the finite-difference check of ∂L/∂z = σ ⊙ diag(Uᵀ G V).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "../nn/gradcheck.hpp"
#include "neat/nn/ops.hpp"
#include "neat/t2/svf.hpp"

using namespace neat;

namespace {

std::vector<double> random_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::vector<double> w(static_cast<std::size_t>(rows * cols));
  for (auto& x : w) x = n(rng);
  return w;
}

// A matrix with a decaying spectrum: U diag(0.9^i) Vᵀ of random orthonormal factors.
std::vector<double> decaying_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::vector<double> u, s, vt;
  t2::svd_exact(random_matrix(rows, cols, seed), rows, cols, u, s, vt);
  const std::int64_t k = std::min(rows, cols);
  std::vector<double> w(static_cast<std::size_t>(rows * cols), 0.0);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j)
      for (std::int64_t r = 0; r < k; ++r)
        w[i * cols + j] += u[i * k + r] * std::pow(0.9, r) * vt[r * cols + j];
  return w;
}

double max_orthogonality_error(const std::vector<float>& q, std::int64_t rows, std::int64_t r) {
  double worst = 0.0;
  for (std::int64_t a = 0; a < r; ++a)
    for (std::int64_t b = 0; b < r; ++b) {
      double dot = 0.0;
      for (std::int64_t i = 0; i < rows; ++i) dot += double(q[i * r + a]) * q[i * r + b];
      worst = std::max(worst, std::abs(dot - (a == b ? 1.0 : 0.0)));
    }
  return worst;
}

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0.0, n = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    e += (a[i] - b[i]) * (a[i] - b[i]);
    n += a[i] * a[i];
  }
  return std::sqrt(e / n);
}

}  // namespace

TEST(Svd, ExactDgesddReconstructsInDouble) {
  for (auto [rows, cols] : {std::pair<std::int64_t, std::int64_t>{40, 17}, {17, 40}, {64, 64}}) {
    const auto w = random_matrix(rows, cols, 3);
    std::vector<double> u, s, vt;
    t2::svd_exact(w, rows, cols, u, s, vt);
    const std::int64_t k = std::min(rows, cols);
    std::vector<double> v(static_cast<std::size_t>(cols * k));
    for (std::int64_t j = 0; j < cols; ++j)
      for (std::int64_t r = 0; r < k; ++r) v[j * k + r] = vt[r * cols + j];
    const auto back = t2::compose(u, s, v, std::vector<double>(k, 1.0), rows, cols);
    EXPECT_LT(relative_error(w, back), 1e-12) << rows << "x" << cols;
    for (std::int64_t r = 1; r < k; ++r) EXPECT_LE(s[r], s[r - 1]);
  }
}

TEST(Svf, IdentityExpertReproducesTheMatrixBelowOneInAMillion) {
  const std::int64_t rows = 48, cols = 96;
  const auto w = random_matrix(rows, cols, 5);
  const auto f = t2::decompose(w, rows, cols);
  ASSERT_EQ(f.rank, 48);
  std::vector<float> back;
  t2::compose(f, std::vector<float>(f.rank, 1.0f), back);
  std::vector<double> b(back.begin(), back.end());
  // Compose runs in f32, so the reference is W itself at f32 precision; the error bound of the
  // issue (1e-6) holds.
  EXPECT_LT(relative_error(w, b), 1e-6);
  EXPECT_LT(max_orthogonality_error(f.u(), rows, f.rank), 1e-5);
  EXPECT_LT(max_orthogonality_error(f.v(), cols, f.rank), 1e-5);
  EXPECT_NEAR(f.energy_kept, 1.0, 1e-12);
}

TEST(Svf, EnergyTruncationKeepsTheSmallestRankHoldingTheFraction) {
  const std::int64_t rows = 60, cols = 80;
  const auto w = decaying_matrix(rows, cols, 7);
  t2::SvdOptions o;
  o.energy_fraction = 0.9;
  const auto f = t2::decompose(w, rows, cols, o);
  // σ_i = 0.9^i: energy of the first r is (1 − 0.81^r) / (1 − 0.81^60).
  std::int64_t expected = 0;
  double total = 0.0, kept = 0.0;
  for (int i = 0; i < 60; ++i) total += std::pow(0.81, i);
  while (kept < 0.9 * total) kept += std::pow(0.81, expected++);
  EXPECT_EQ(f.rank, expected);
  EXPECT_GE(f.energy_kept, 0.9);
  const auto r =
      t2::report_decomposition(std::vector<float>(w.begin(), w.end()), rows, cols, o, "p=0.9");
  EXPECT_NEAR(r.relative_error, std::sqrt(1.0 - r.energy_kept), 1e-4);
  EXPECT_GT(r.bytes_saved, 0);
}

TEST(Svf, Bf16StorageHalvesTheFactorsAndStaysClose) {
  const std::int64_t rows = 64, cols = 128;
  const auto w = random_matrix(rows, cols, 9);
  t2::SvdOptions o;
  o.storage = nn::DType::bf16;
  const auto f = t2::decompose(w, rows, cols, o);
  EXPECT_TRUE(f.u_f32.empty());
  EXPECT_EQ(f.u_bf16.size(), static_cast<std::size_t>(rows * f.rank));
  EXPECT_EQ(f.stored_bytes(), static_cast<std::uint64_t>((rows + cols) * f.rank * 2 + 4 * f.rank));
  const auto r =
      t2::report_decomposition(std::vector<float>(w.begin(), w.end()), rows, cols, o, "bf16");
  EXPECT_LT(r.relative_error, 1e-2);  // bf16 keeps 8 bits of mantissa
  EXPECT_GT(r.relative_error, 1e-6);
  EXPECT_LT(max_orthogonality_error(f.u(), rows, f.rank), 2e-2);
}

TEST(Svf, RandomizedSvdAboveTheThresholdFindsTheLeadingSpectrum) {
  const std::int64_t rows = 120, cols = 150;
  const auto w = decaying_matrix(rows, cols, 11);
  t2::SvdOptions o;
  o.randomized_threshold = 100;
  o.randomized_rank = 60;
  o.oversampling = 10;
  o.power_iterations = 2;
  const auto f = t2::decompose(w, rows, cols, o);
  EXPECT_TRUE(f.randomized);
  EXPECT_EQ(f.rank, 70);
  for (std::int64_t r = 0; r < 40; ++r)
    EXPECT_NEAR(f.singular_values[r], std::pow(0.9, r), 1e-5) << "sigma " << r;
  EXPECT_LT(max_orthogonality_error(f.u(), rows, f.rank), 1e-5);
  EXPECT_LT(max_orthogonality_error(f.v(), cols, f.rank), 1e-5);
  // The tail beyond rank 70 is 0.81^70 of the energy: the reconstruction error is ~0.9^70.
  const auto r =
      t2::report_decomposition(std::vector<float>(w.begin(), w.end()), rows, cols, o, "randomized");
  EXPECT_LT(r.relative_error, 2 * std::pow(0.9, 70) / std::sqrt(1 - 0.81) + 1e-5);
}

TEST(Svf, RejectsNonFiniteWeightsNamingTheEntry) {
  std::vector<double> w(12, 1.0);
  w[7] = std::nan("");
  try {
    t2::decompose(w, 3, 4);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("row 1, column 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t2::decompose(std::vector<double>(5, 1.0), 2, 3), std::invalid_argument);
}

TEST(SvfGradient, ExplicitFormulaMatchesFiniteDifferencesAndAutograd) {
  const std::int64_t rows = 7, cols = 5;
  const auto w = random_matrix(rows, cols, 13);
  std::vector<double> u, s, vt;
  t2::svd_exact(w, rows, cols, u, s, vt);
  const std::int64_t r = 5;
  std::vector<double> v(static_cast<std::size_t>(cols * r));
  for (std::int64_t j = 0; j < cols; ++j)
    for (std::int64_t k = 0; k < r; ++k) v[j * r + k] = vt[k * cols + j];
  std::mt19937_64 rng(17);
  const auto c = nn::Tensord::randn({rows, cols}, rng);
  const auto ut = nn::Tensord::from_vector({rows, r}, u), st = nn::Tensord::from_vector({r}, s),
             vtn = nn::Tensord::from_vector({cols, r}, v);
  // L(z) = Σ C ⊙ tanh(W'(z)): a non-linear loss of the adapted matrix.
  auto loss = [&](const nn::Tensord& z) {
    return nn::sum(nn::mul(c, nn::tanh(t2::compose_graph(ut, st, vtn, z))));
  };
  std::vector<double> z0{1.1, 0.7, 1.3, 0.9, 1.0};
  // Reverse mode through the graph z -> W' (autograd) vs finite differences.
  const double rel = nn::testing::gradient_relative_error(
      [&](const std::vector<nn::Tensord>& in) { return loss(in[0]); },
      {nn::Tensord::from_vector({r}, z0)});
  EXPECT_LT(rel, 1e-7);
  // The explicit formula from G = ∂L/∂W' vs finite differences of L(z).
  const auto wp =
      nn::Tensord::from_vector({rows, cols}, t2::compose(u, s, v, z0, rows, cols), true);
  const auto l = nn::sum(nn::mul(c, nn::tanh(wp)));
  const auto g = nn::grad(l, {wp})[0].to_vector();
  const auto explicit_grad = t2::z_gradient(u, s, v, g, rows, cols);
  double diff = 0.0, norm = 0.0;
  for (std::int64_t k = 0; k < r; ++k) {
    auto zp = z0, zm = z0;
    zp[k] += 1e-6;
    zm[k] -= 1e-6;
    const double numeric = (loss(nn::Tensord::from_vector({r}, zp)).item() -
                            loss(nn::Tensord::from_vector({r}, zm)).item()) /
                           2e-6;
    diff += std::pow(explicit_grad[k] - numeric, 2);
    norm += numeric * numeric;
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-7);
  // The f32 path of the same formula agrees with the double one.
  t2::SvfFactors f;
  f.rows = rows;
  f.cols = cols;
  f.rank = r;
  f.singular_values.assign(s.begin(), s.end());
  f.u_f32.assign(u.begin(), u.end());
  f.v_f32.assign(v.begin(), v.end());
  const auto gf = t2::z_gradient(f, std::vector<float>(g.begin(), g.end()));
  for (std::int64_t k = 0; k < r; ++k) EXPECT_NEAR(gf[k], explicit_grad[k], 1e-4);
}
