// Composition of the adapted weights: W' = W + U_r diag(σ ⊙ (z − 1))_r V_rᵀ (compose_delta) is
// exact at p = 1 and within its stated bound √(1 − p) otherwise, with the fewest components;
// the expert basis (W + Σ α_k ΔW_k) equals the exact composition of the mixture; and the default
// precision changes the shipped experts' bits per byte by less than 1e-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "neat/blt/byte_lm.hpp"
#include "neat/t2/experts.hpp"
#include "neat/t2/svf.hpp"

using namespace neat;

namespace {

struct Case {
  std::int64_t rows, cols;
  std::vector<double> w;
  std::vector<double> u, s, vt;  // exact double SVD of w
};

Case random_case(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  Case c{rows, cols, std::vector<double>(static_cast<std::size_t>(rows * cols)), {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  for (auto& x : c.w) x = n(rng);
  t2::svd_exact(c.w, rows, cols, c.u, c.s, c.vt);
  return c;
}

// ΔW = U diag(σ ⊙ (z − 1)) Vᵀ in double from the exact factors.
std::vector<double> reference_delta(const Case& c, const std::vector<float>& z) {
  const auto k = static_cast<std::int64_t>(c.s.size());
  std::vector<double> d(static_cast<std::size_t>(c.rows * c.cols), 0.0);
  for (std::int64_t i = 0; i < c.rows; ++i)
    for (std::int64_t j = 0; j < c.cols; ++j)
      for (std::int64_t r = 0; r < k; ++r)
        d[i * c.cols + j] += c.u[i * k + r] * c.s[r] * (double(z[r]) - 1.0) * c.vt[r * c.cols + j];
  return d;
}

// ‖(out − base) − ref‖_F / ‖ref‖_F.
double delta_error(const std::vector<float>& out, const std::vector<float>& base,
                   const std::vector<double>& ref) {
  double e = 0.0, n = 0.0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double d = double(out[i]) - double(base[i]);
    e += (d - ref[i]) * (d - ref[i]);
    n += ref[i] * ref[i];
  }
  return std::sqrt(e / n);
}

std::vector<float> random_z(std::int64_t rank, double spread, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(1.0, spread);
  std::vector<float> z(static_cast<std::size_t>(rank));
  for (auto& x : z) x = static_cast<float>(n(rng));
  return z;
}

}  // namespace

TEST(ComposeDelta, ExactAtPOneMatchesTheFullProduct) {
  const auto c = random_case(48, 32, 3);
  const auto f = t2::decompose(c.w, c.rows, c.cols);
  ASSERT_EQ(f.base.size(), c.w.size());
  EXPECT_EQ(f.base_bytes(), 4u * c.w.size());
  const auto z = random_z(f.rank, 0.1, 4);
  std::vector<float> delta, full;
  t2::DeltaComposeInfo info;
  t2::compose_delta(f, z, 1.0, delta, &info);
  t2::compose(f, z, full);
  EXPECT_EQ(info.components, f.rank);
  EXPECT_DOUBLE_EQ(info.energy_kept, 1.0);
  EXPECT_LT(info.error_bound, 1e-7);
  // Same W' as the full product U diag(σ ⊙ z) Vᵀ, and the change matches double precision.
  double e = 0.0, n = 0.0;
  for (std::size_t i = 0; i < full.size(); ++i) {
    e += std::pow(double(delta[i]) - full[i], 2);
    n += double(full[i]) * full[i];
  }
  EXPECT_LT(std::sqrt(e / n), 1e-6);
  EXPECT_LT(delta_error(delta, f.base, reference_delta(c, z)), 1e-5);
  // ‖ΔW‖_F = √(Σ σ_i² (z_i − 1)²) (orthonormal U, V).
  double d2 = 0.0;
  for (const double x : reference_delta(c, z)) d2 += x * x;
  EXPECT_NEAR(info.delta_norm, std::sqrt(d2), 1e-5 * std::sqrt(d2));
}

TEST(ComposeDelta, IdentityZGivesTheBaseBitForBitAndUnchangedComponentsAreSkipped) {
  const auto c = random_case(20, 30, 5);
  const auto f = t2::decompose(c.w, c.rows, c.cols);
  std::vector<float> out;
  t2::DeltaComposeInfo info;
  t2::compose_delta(f, std::vector<float>(static_cast<std::size_t>(f.rank), 1.0f), 0.5, out, &info);
  EXPECT_EQ(out, f.base);
  EXPECT_EQ(info.components, 0);
  EXPECT_EQ(info.delta_norm, 0.0);
  // p = 1 keeps exactly the components with z_i != 1.
  auto z = random_z(f.rank, 0.2, 6);
  for (std::int64_t i = 0; i < f.rank; i += 3) z[i] = 1.0f;
  t2::compose_delta(f, z, 1.0, out, &info);
  EXPECT_EQ(info.components, f.rank - (f.rank + 2) / 3);
  EXPECT_LT(delta_error(out, f.base, reference_delta(c, z)), 1e-5);
}

TEST(ComposeDelta, ErrorStaysWithinTheBoundWithTheFewestComponents) {
  const auto c = random_case(64, 40, 7);
  for (const auto storage : {nn::DType::f32}) {
    t2::SvdOptions o;
    o.storage = storage;
    const auto f = t2::decompose(c.w, c.rows, c.cols, o);
    const auto z = random_z(f.rank, 0.3, 8);
    const auto ref = reference_delta(c, z);
    std::vector<double> d2(static_cast<std::size_t>(f.rank));
    double total = 0.0;
    for (std::int64_t i = 0; i < f.rank; ++i) {
      d2[i] = std::pow(double(f.singular_values[i]) * (double(z[i]) - 1.0), 2);
      total += d2[i];
    }
    std::vector<double> sorted = d2;
    std::sort(sorted.rbegin(), sorted.rend());
    std::int64_t previous = f.rank + 1;
    for (const double p : {0.5, 0.9, 0.99, 0.999, t2::kDefaultDeltaEnergy}) {
      std::vector<float> out;
      t2::DeltaComposeInfo info;
      t2::compose_delta(f, z, p, out, &info);
      const double err = delta_error(out, f.base, ref);
      EXPECT_LE(info.error_bound, std::sqrt(1.0 - p) + 1e-12) << "p " << p;
      EXPECT_LE(err, info.error_bound + 1e-5) << "p " << p;
      EXPECT_GT(err, info.error_bound - 1e-5) << "p " << p;  // the bound is attained
      // Fewest components: the r largest hold p of the energy, the r − 1 largest do not.
      const auto r = info.components;
      ASSERT_GE(r, 1);
      double top = 0.0;
      for (std::int64_t i = 0; i < r - 1; ++i) top += sorted[i];
      EXPECT_LT(top, p * total) << "p " << p;
      EXPECT_GE(top + sorted[r - 1], p * total * (1 - 1e-12)) << "p " << p;
      EXPECT_NEAR(info.energy_kept, (top + sorted[r - 1]) / total, 1e-9);
      EXPECT_GE(r, previous == f.rank + 1 ? 1 : previous) << "p " << p;  // more with larger p
      previous = r;
    }
  }
}

TEST(ComposeDelta, Bf16StorageKeepsWInBf16AndTheChangeWithinItsRounding) {
  const auto c = random_case(64, 40, 9);
  t2::SvdOptions o;
  o.storage = nn::DType::bf16;
  const auto f = t2::decompose(c.w, c.rows, c.cols, o);
  const auto z = random_z(f.rank, 0.2, 10);
  std::vector<float> out;
  t2::compose_delta(f, z, 1.0, out);
  // W kept in bf16 (half the bytes), U and V rounded to 8 significant bits (relative 2^-9
  // each): the change within 1e-2.
  EXPECT_TRUE(f.base.empty());
  EXPECT_EQ(f.base_bytes(), 2u * 64 * 40);
  std::vector<float> w;
  f.copy_base(w);
  EXPECT_LT(delta_error(out, w, reference_delta(c, z)), 1e-2);
  t2::compose_delta(f, std::vector<float>(static_cast<std::size_t>(f.rank), 1.0f), 1.0, out);
  EXPECT_EQ(out, w);
  // A matrix of bf16 values (a bf16 checkpoint's) is kept exactly.
  std::vector<double> rounded(c.w.size());
  for (std::size_t i = 0; i < rounded.size(); ++i)
    rounded[i] = nn::bf16_to_float(nn::float_to_bf16(static_cast<float>(c.w[i])));
  t2::compose_delta(t2::decompose(rounded, c.rows, c.cols, o),
                    std::vector<float>(static_cast<std::size_t>(f.rank), 1.0f), 1.0, out);
  for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(double(out[i]), rounded[i]) << i;
}

TEST(ComposeDelta, RejectsBadInputNamingIt) {
  const auto c = random_case(10, 8, 11);
  auto f = t2::decompose(c.w, c.rows, c.cols);
  std::vector<float> out;
  const std::vector<float> ones(static_cast<std::size_t>(f.rank), 1.0f);
  EXPECT_THROW(t2::compose_delta(f, std::vector<float>(3, 1.0f), 1.0, out), std::invalid_argument);
  EXPECT_THROW(t2::compose_delta(f, ones, 0.0, out), std::invalid_argument);
  EXPECT_THROW(t2::compose_delta(f, ones, 1.5, out), std::invalid_argument);
  auto nan = ones;
  nan[2] = std::numeric_limits<float>::quiet_NaN();
  try {
    t2::compose_delta(f, nan, 1.0, out);
    FAIL() << "NaN accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("z[2]"), std::string::npos) << e.what();
  }
  f.base.clear();
  f.base_bf16.clear();
  EXPECT_THROW(t2::compose_delta(f, ones, 1.0, out), std::invalid_argument);
}

namespace {

class ShippedExperts : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string root = NEAT_SOURCE_DIR;
    model_ = blt::load_byte_lm(root + "/models/blt/byte_lm.bf16.ckpt").release();
    experts_ = new t2::ExpertSet(t2::ExpertSet::load(root + "/models/t2/experts.ckpt"));
    // The matrices the shipped experts adapt (the file names them).
    factors_ = new t2::ModelFactors(t2::ModelFactors::decompose(*model_, {}, experts_->matrices));
  }
  static void TearDownTestSuite() {
    delete experts_;
    delete factors_;
    delete model_;
  }
  static nn::TransformerLM<float>* model_;
  static t2::ModelFactors* factors_;
  static t2::ExpertSet* experts_;
};
nn::TransformerLM<float>* ShippedExperts::model_ = nullptr;
t2::ModelFactors* ShippedExperts::factors_ = nullptr;
t2::ExpertSet* ShippedExperts::experts_ = nullptr;

}  // namespace

TEST_F(ShippedExperts, ExpertBasisEqualsTheExactCompositionOfEveryMixture) {
  const t2::ExpertBasis basis(*factors_, *experts_);
  ASSERT_EQ(basis.experts(), experts_->domains.size());
  std::uint64_t weights = 0;
  for (const auto& f : factors_->factors) weights += static_cast<std::uint64_t>(f.rows * f.cols);
  EXPECT_EQ(basis.bytes(), experts_->domains.size() * weights * 4);
  std::vector<std::vector<double>> mixtures;
  for (const auto& c : experts_->classes) mixtures.push_back(c.alpha);
  mixtures.push_back({0.1, 0.3, 0.05, 0.2, 0.15});
  mixtures.push_back({-0.2, 0.0, 0.7, 0.0, 0.0});  // outside the simplex: still linear
  for (const auto& alpha : mixtures) {
    ASSERT_EQ(alpha.size(), basis.experts());
    const auto exact = t2::compose_all(*factors_, experts_->mix(alpha), {1.0});
    const auto fast = basis.compose(*factors_, alpha);
    for (std::size_t m = 0; m < exact.matrices.size(); ++m) {
      double e = 0.0, d = 0.0;
      for (std::size_t i = 0; i < exact.matrices[m].size(); ++i) {
        e += std::pow(double(fast.matrices[m][i]) - exact.matrices[m][i], 2);
        d += std::pow(double(exact.matrices[m][i]) - factors_->factors[m].base[i], 2);
      }
      EXPECT_LT(std::sqrt(e / d), 1e-5) << factors_->names[m];
    }
  }
  // Shared out over threads: the same numbers as on one thread.
  {
    const int before = nn::num_threads();
    const std::vector<double> alpha{0.1, 0.3, 0.05, 0.2, 0.15};
    nn::set_num_threads(1);
    const auto one = basis.compose(*factors_, alpha);
    nn::set_num_threads(3);
    const auto three = basis.compose(*factors_, alpha);
    nn::set_num_threads(before);
    EXPECT_EQ(one.matrices, three.matrices);
  }
  // α = 0: the base, bit for bit.
  const auto base = basis.compose(*factors_, std::vector<double>(basis.experts(), 0.0));
  for (std::size_t m = 0; m < base.matrices.size(); ++m)
    EXPECT_EQ(base.matrices[m], factors_->factors[m].base) << factors_->names[m];
  EXPECT_THROW(basis.compose(*factors_, {1.0}), std::invalid_argument);
  EXPECT_THROW(basis.compose(*factors_, {0.0, std::nan(""), 0.0, 0.0, 0.0}), std::invalid_argument);
}

TEST_F(ShippedExperts, DefaultPrecisionChangesBitsPerByteByLessThan1e4) {
  // Text the LM has not been trained on: this repository's T2 documentation (UTF-8 prose with
  // equations) and C++ source.
  std::vector<std::vector<std::uint8_t>> docs;
  for (const char* file : {"/docs/t2.md", "/components/t2/src/svf.cpp"}) {
    std::ifstream in(std::string(NEAT_SOURCE_DIR) + file, std::ios::binary);
    ASSERT_TRUE(in) << file;
    std::ostringstream s;
    s << in.rdbuf();
    const auto text = s.str().substr(0, 255);  // BOS + 255 bytes: one context window
    docs.emplace_back(text.begin(), text.end());
  }
  auto adapted = t2::copy_model(*model_);
  for (const auto& c : experts_->classes) {
    const auto z = experts_->mix(c.alpha);
    std::vector<t2::DeltaComposeInfo> info;
    t2::apply_weights(*factors_, t2::compose_all(*factors_, z, {1.0}), *adapted);
    const double exact = blt::bits_per_byte(*adapted, docs);
    t2::apply_weights(*factors_, t2::compose_all(*factors_, z, {t2::kDefaultDeltaEnergy}, &info),
                      *adapted);
    const double approx = blt::bits_per_byte(*adapted, docs);
    EXPECT_LT(std::abs(approx - exact), 1e-4) << c.name;
    for (const auto& i : info) EXPECT_LE(i.error_bound, 1e-4 + 1e-12) << c.name;
  }
}
