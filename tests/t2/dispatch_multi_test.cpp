// Multi-prototype dispatch (k-means centroids per class, the train-split transform chosen on a
// validation split), CEM with the identity z = 1 as a mixture component, and the experts file:
// version 2 round trip and backward-compatible loading of a version 1 file.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <random>

#include "neat/nn/checkpoint.hpp"
#include "neat/t2/dispatch.hpp"
#include "neat/t2/experts.hpp"
#include "neat/t2/train.hpp"

using namespace neat;

namespace {

// Two experts of one 6-entry matrix, for the CEM tests.
t2::ExpertSet two_vector_experts() {
  t2::ExpertSet set;
  set.domains = {"a", "b"};
  set.experts = {t2::ExpertVector{std::vector<float>{2.0f, 0.0f, 1.5f, 0.2f, 2.5f, 1.0f}},
                 t2::ExpertVector{std::vector<float>{0.3f, 1.4f, 0.6f, 2.2f, 0.1f, 3.0f}}};
  return set;
}

// -||mix(alpha) - target||^2: maximal (0) where the mixture is the target.
std::function<double(const std::vector<double>&)> distance_to(const t2::ExpertSet& set,
                                                              const std::vector<float>& target) {
  return [&set, target](const std::vector<double>& alpha) {
    const auto z = set.mix(alpha);
    double d = 0.0;
    for (std::size_t i = 0; i < target.size(); ++i)
      d += (z[0][i] - target[i]) * (z[0][i] - target[i]);
    return -d;
  };
}

// Points around `centre` (unit-ish direction) with isotropic noise of std `noise`.
std::vector<std::vector<float>> cloud(const std::vector<float>& centre, std::size_t n, double noise,
                                      std::mt19937_64& rng) {
  std::normal_distribution<double> g(0.0, noise);
  std::vector<std::vector<float>> out;
  for (std::size_t i = 0; i < n; ++i) {
    auto p = centre;
    for (auto& v : p) v += static_cast<float>(g(rng));
    out.push_back(p);
  }
  return out;
}

std::vector<std::vector<float>> concat(std::vector<std::vector<float>> a,
                                       const std::vector<std::vector<float>>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Class A is two clusters (+x and −x), class B two clusters (+y and −y): both means are near 0
// (also after centring, and the pooled within-class covariance is isotropic, so whitening does
// not help either). One prototype per class cannot separate them, two prototypes per class can.
struct TwoClusterData {
  t2::ClassEmbeddings train, val;
};
TwoClusterData two_cluster_data(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::vector<float> px{1, 0, 0}, nx{-1, 0, 0}, py{0, 1, 0}, ny{0, -1, 0};
  TwoClusterData d;
  d.train = {concat(cloud(px, 40, 0.1, rng), cloud(nx, 40, 0.1, rng)),
             concat(cloud(py, 40, 0.1, rng), cloud(ny, 40, 0.1, rng))};
  d.val = {concat(cloud(px, 20, 0.1, rng), cloud(nx, 20, 0.1, rng)),
           concat(cloud(py, 20, 0.1, rng), cloud(ny, 20, 0.1, rng))};
  return d;
}

}  // namespace

TEST(MultiPrototypeDispatch, KMeansFindsBothClustersOfATwoClusterClass) {
  const auto d = two_cluster_data(3);
  const auto centroids = t2::kmeans_centroids(d.train[0], 2, 100, 1);
  ASSERT_EQ(centroids.size(), 2u);
  // Spherical k-means: one centroid near +x, the other near −x (unit norm directions).
  const double c0 = t2::cosine(centroids[0], {1, 0, 0}), c1 = t2::cosine(centroids[1], {1, 0, 0});
  EXPECT_GT(std::max(c0, c1), 0.98);
  EXPECT_LT(std::min(c0, c1), -0.98);
  // k above the number of points gives one centroid per point.
  EXPECT_EQ(t2::kmeans_centroids({{1, 0}, {0, 1}}, 5).size(), 2u);
  EXPECT_THROW(t2::kmeans_centroids({}, 2), std::invalid_argument);
  EXPECT_THROW(t2::kmeans_centroids({{1, 0}, {1}}, 2), std::invalid_argument);
}

TEST(MultiPrototypeDispatch, ClassIsTheClassOfTheMostSimilarPrototype) {
  const auto d = two_cluster_data(5);
  const std::vector<std::vector<std::vector<float>>> one{{t2::kmeans_centroids(d.train[0], 1)},
                                                         {t2::kmeans_centroids(d.train[1], 1)}};
  const std::vector<std::vector<std::vector<float>>> two{t2::kmeans_centroids(d.train[0], 2),
                                                         t2::kmeans_centroids(d.train[1], 2)};
  std::size_t ok_one = 0, ok_two = 0, total = 0;
  for (std::size_t c = 0; c < 2; ++c)
    for (const auto& e : d.val[c]) {
      ok_one += t2::classify_nearest(e, one, 0.1).index == c;
      ok_two += t2::classify_nearest(e, two, 0.1).index == c;
      ++total;
    }
  EXPECT_EQ(ok_two, total);        // every point goes to its class
  EXPECT_LT(ok_one, total * 0.9);  // one prototype per class misses one cluster of A
  const auto c = t2::classify_nearest({-1, 0.05f, 0}, two, 0.1);
  EXPECT_EQ(c.index, 0u);
  ASSERT_EQ(c.cosines.size(), 2u);  // one cosine per class: the best over its prototypes
  EXPECT_GT(c.margin, 0.0);
  EXPECT_NEAR(c.probabilities[0] + c.probabilities[1], 1.0, 1e-12);
  EXPECT_THROW(t2::classify_nearest({1, 0, 0}, {{}, two[1]}, 0.1), std::invalid_argument);
  EXPECT_THROW(t2::classify_nearest({NAN, 0, 0}, two, 0.1), std::invalid_argument);
}

TEST(MultiPrototypeDispatch, FitChoosesTwoPrototypesOnValidationAndStoresThem) {
  const auto d = two_cluster_data(11);
  t2::ExpertSet set;
  set.domains = {"a"};
  set.classes.push_back({"a", false, {1.0}, {}});
  set.classes.push_back({"b", true, {0.0}, {}});
  const auto record = t2::fit_dispatch(set, d.train, d.val, {1, 2}, {0.1}, 1);
  EXPECT_EQ(record["chosen"]["prototypes_per_class"], 2);
  EXPECT_EQ(record["chosen"]["val_accuracy"], 1.0);
  ASSERT_EQ(record["grid"].size(), 4u);  // (centre, whiten 0.1) x (k = 1, 2)
  EXPECT_LT(record["grid"][0]["val_accuracy"].get<double>(), 0.9);  // centre, k = 1
  EXPECT_LT(record["grid"][2]["val_accuracy"].get<double>(), 0.9);  // whiten, k = 1
  ASSERT_TRUE(set.has_multi_prototypes());
  EXPECT_EQ(set.dispatch_prototypes[0].size(), 2u);
  EXPECT_EQ(set.dispatch_transform.mean.size(), 3u);
  // ExpertSet::classify applies the stored transform, then the nearest prototype.
  EXPECT_EQ(set.classify({-1, 0, 0}, 0.02).index, 0u);
  EXPECT_EQ(set.classify({0.1f, -1, 0}, 0.02).index, 1u);
  EXPECT_THROW(t2::fit_dispatch(set, d.train, {d.val[0]}, {1}, {}, 1), std::invalid_argument);
}

TEST(EmbeddingTransform, CentringAndWithinClassWhitening) {
  std::mt19937_64 rng(2);
  // Within-class spread is large along z and small along x, y.
  std::normal_distribution<double> g(0.0, 1.0);
  t2::ClassEmbeddings by_class(2);
  for (int i = 0; i < 400; ++i) {
    by_class[0].push_back({static_cast<float>(1 + 0.1 * g(rng)), static_cast<float>(0.1 * g(rng)),
                           static_cast<float>(5 * g(rng))});
    by_class[1].push_back({static_cast<float>(-1 + 0.1 * g(rng)), static_cast<float>(0.1 * g(rng)),
                           static_cast<float>(5 * g(rng))});
  }
  const auto c = t2::fit_embedding_transform(by_class, t2::EmbeddingNormalisation::center);
  EXPECT_TRUE(c.whitening.empty());
  EXPECT_NEAR(c.mean[0], 0.0, 0.05);
  const auto w = t2::fit_embedding_transform(by_class, t2::EmbeddingNormalisation::whiten, 1e-6);
  ASSERT_EQ(w.whitening.size(), 9u);
  // After whitening, the within-class variance of each coordinate is ≈ 1.
  for (std::size_t dim = 0; dim < 3; ++dim) {
    double s = 0, s2 = 0;
    for (const auto& e : by_class[0]) {
      const double v = w.apply(e)[dim];
      s += v;
      s2 += v * v;
    }
    const double n = static_cast<double>(by_class[0].size());
    EXPECT_NEAR(s2 / n - (s / n) * (s / n), 1.0, 0.15) << "dimension " << dim;
  }
  EXPECT_THROW(w.apply({1, 2}), std::invalid_argument);
  EXPECT_THROW(t2::fit_embedding_transform({}, t2::EmbeddingNormalisation::center),
               std::invalid_argument);
  EXPECT_THROW(t2::fit_embedding_transform(by_class, t2::EmbeddingNormalisation::whiten, 0.0),
               std::invalid_argument);
}

TEST(Cem, IdentityComponentRecoversAlphaZeroOneWhenNoExpertHelps) {
  // Two experts whose z are far from 1; the objective is −‖z'(α) − 1‖² (the base is best).
  t2::ExpertSet set;
  set.domains = {"a", "b"};
  set.experts = {t2::ExpertVector{std::vector<float>{1.5f, 0.5f, 2.0f}},
                 t2::ExpertVector{std::vector<float>{0.2f, 1.8f, 1.3f}}};
  const auto objective = [&](const std::vector<double>& alpha) {
    const auto z = set.mix(alpha);
    double d = 0.0;
    for (float v : z[0]) d += (v - 1.0) * (v - 1.0);
    return -d;
  };
  t2::CemOptions o;  // 32, 0.2, 50
  o.identity_component = true;
  const auto r = t2::cem_search(2, objective, o);
  ASSERT_EQ(r.alpha.size(), 2u);  // the objective and the result see only the expert weights
  EXPECT_DOUBLE_EQ(r.identity_weight, 1.0);
  EXPECT_DOUBLE_EQ(r.alpha[0], 0.0);
  EXPECT_DOUBLE_EQ(r.alpha[1], 0.0);
  EXPECT_DOUBLE_EQ(r.best_score, 0.0);
  // α = 0 composes exactly z = 1, the base model.
  const auto z = set.mix(r.alpha);
  for (float v : z[0]) EXPECT_EQ(v, 1.0f);
  // Without the identity the best convex mixture of the experts is worse than the base.
  o.identity_component = false;
  const auto plain = t2::cem_search(2, objective, o);
  EXPECT_DOUBLE_EQ(plain.identity_weight, 0.0);
  EXPECT_LT(plain.best_score, -0.1);
}

TEST(Cem, IdentityComponentFindsAPartialAdaptation) {
  // The best z' is halfway between the base (z = 1) and expert a: α_0 = 0.5, α_a = 0.5.
  const auto set = two_vector_experts();
  const std::vector<float> target{1.5f, 0.5f, 1.25f, 0.6f, 1.75f, 1.0f};
  const auto objective = distance_to(set, target);
  t2::CemOptions o;
  o.identity_component = true;
  const auto r = t2::cem_search(2, objective, o);
  EXPECT_NEAR(r.identity_weight, 0.5, 0.05);
  EXPECT_NEAR(r.alpha[0], 0.5, 0.05);
  EXPECT_NEAR(r.alpha[1], 0.0, 0.05);
  EXPECT_NEAR(r.identity_weight + r.alpha[0] + r.alpha[1], 1.0, 1e-12);
}

TEST(Cem, RealWeightsFromAnExpertFindAnExtrapolationOutsideTheSimplex) {
  // dispatch.refine's search: α = θ (no simplex), started at expert a (e_a). The best z' lies
  // beyond expert a and away from b: α* = (1.3, -0.2), z' = 1 + 1.3 (z_a - 1) - 0.2 (z_b - 1).
  const auto set = two_vector_experts();
  const auto target = set.mix({1.3, -0.2})[0];
  const auto objective = distance_to(set, target);
  t2::CemOptions o;
  o.simplex = false;
  o.initial_mean = {1.0, 0.0};
  o.initial_std = 0.1;
  const auto r = t2::cem_search(2, objective, o);
  EXPECT_NEAR(r.alpha[0], 1.3, 0.02);
  EXPECT_NEAR(r.alpha[1], -0.2, 0.02);
  EXPECT_EQ(r.identity_weight, 0.0);
  // The start is the first sample: one iteration never returns something scoring below it.
  o.iterations = 1;
  const auto one = t2::cem_search(2, objective, o);
  EXPECT_GE(one.best_score, objective({1.0, 0.0}));
  // Refused: an initial mean of the wrong length, real weights with the identity component.
  o.initial_mean = {1.0};
  EXPECT_THROW(t2::cem_search(2, objective, o), std::invalid_argument);
  o.initial_mean = {1.0, 0.0};
  o.identity_component = true;
  EXPECT_THROW(t2::cem_search(2, objective, o), std::invalid_argument);
}

TEST(ExpertsFile, VersionTwoRoundTripsPrototypesAndTransform) {
  const auto d = two_cluster_data(13);
  t2::ExpertSet set;
  set.matrices = {"m"};
  set.ranks = {3};
  set.domains = {"a"};
  set.experts = {t2::ExpertVector{std::vector<float>{1.0f, 1.1f, 0.9f}}};
  set.classes.push_back({"a", false, {1.0}, {0.1f, 0.2f, 0.3f}});
  set.classes.push_back({"b", true, {0.4}, {0.3f, 0.2f, 0.1f}});
  t2::fit_dispatch(set, d.train, d.val, {2}, {0.1}, 1);
  const auto file = std::filesystem::temp_directory_path() /
                    ("t2-experts-v2-" + std::to_string(::getpid()) + ".ckpt");
  set.save(file);
  const auto l = t2::ExpertSet::load(file);
  ASSERT_TRUE(l.has_multi_prototypes());
  EXPECT_EQ(l.dispatch_prototypes, set.dispatch_prototypes);
  EXPECT_EQ(l.dispatch_transform.mean, set.dispatch_transform.mean);
  EXPECT_EQ(l.dispatch_transform.whitening, set.dispatch_transform.whitening);
  EXPECT_EQ(l.classes[1].alpha, std::vector<double>{0.4000000059604645});  // f32 on disk
  const std::vector<float> probe{-0.9f, 0.1f, 0.05f};
  EXPECT_EQ(l.classify(probe, 0.02).index, set.classify(probe, 0.02).index);
  EXPECT_DOUBLE_EQ(l.classify(probe, 0.02).confidence, set.classify(probe, 0.02).confidence);
  // The mixture with Σα = 0.4 adds 0.6 of the identity: z' = 0.6 + 0.4 z.
  EXPECT_NEAR(l.mix(l.classes[1].alpha)[0][1], 0.6 + 0.4 * 1.1, 1e-6);
  // A file where only some classes have multi-prototypes, or without the transform's mean, is
  // rejected naming the file and the tensor.
  for (const std::string dropped : {"prototypes.b", "dispatch.mean"}) {
    auto c = nn::read_checkpoint(file.string());
    std::erase_if(c.tensors, [&](const auto& t) { return t.name == dropped; });
    nn::write_checkpoint(file.string(), c);
    try {
      t2::ExpertSet::load(file);
      ADD_FAILURE() << "loaded a file without " << dropped;
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(file.string()), std::string::npos) << what;
      EXPECT_NE(what.find(dropped == "prototypes.b" ? "prototypes" : "dispatch.mean"),
                std::string::npos)
          << what;
    }
    set.save(file);
  }
  std::filesystem::remove(file);
}

TEST(ExpertsFile, VersionOneFileLoadsWithSinglePrototypeDispatch) {
  // tests/t2/data/experts_v1.ckpt: the experts file shipped before multi-prototype dispatch.
  const auto l =
      t2::ExpertSet::load(std::string(NEAT_SOURCE_DIR) + "/tests/t2/data/experts_v1.ckpt");
  ASSERT_EQ(l.classes.size(), 6u);
  EXPECT_FALSE(l.has_multi_prototypes());
  EXPECT_TRUE(l.dispatch_transform.empty());
  EXPECT_EQ(l.domains, (std::vector<std::string>{"en", "de", "it", "c", "python"}));
  // Falls back to the centred cosine against one prototype per class: every prototype is
  // classified as its own class.
  std::vector<std::vector<float>> protos;
  for (const auto& c : l.classes) protos.push_back(c.prototype);
  for (std::size_t k = 0; k < l.classes.size(); ++k) {
    const auto c = l.classify(l.classes[k].prototype, 0.02);
    EXPECT_EQ(c.index, k);
    EXPECT_EQ(c.cosines, t2::classify(l.classes[k].prototype, protos, 0.02, true).cosines);
  }
  // The one-hot α of the experts still mixes to exactly that expert (no identity share).
  EXPECT_EQ(l.mix(l.classes[3].alpha), l.experts[3]);
}

TEST(ExpertsFile, ShippedExpertsUseMultiPrototypeDispatch) {
  const auto l = t2::ExpertSet::load(std::string(NEAT_SOURCE_DIR) + "/models/t2/experts.ckpt");
  ASSERT_EQ(l.classes.size(), 6u);
  EXPECT_TRUE(l.has_multi_prototypes());
  EXPECT_EQ(l.dispatch_transform.mean.size(), 256u);
  for (const auto& c : l.classes) {
    double sum = 0.0;
    for (double a : c.alpha) {
      EXPECT_GE(a, 0.0);
      sum += a;
    }
    EXPECT_LE(sum, 1.0 + 1e-6) << c.name;  // the rest weighs the identity
  }
}
