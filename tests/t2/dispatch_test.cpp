// Dispatch: cosine classification and its confidence, CEM recovering a known mixture, and the
// composed-weight cache (LRU eviction by entries and bytes, TTL expiry, hit rate).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "neat/t2/dispatch.hpp"
#include "neat/t2/experts.hpp"

using namespace neat;

TEST(CosineDispatch, PicksTheNearestPrototypeWithSoftmaxConfidence) {
  const std::vector<std::vector<float>> protos{{1, 0, 0}, {0, 1, 0}, {0.7f, 0.7f, 0}};
  const auto c = t2::classify({0.9f, 0.1f, 0.0f}, protos, 0.1);
  EXPECT_EQ(c.index, 0u);
  ASSERT_EQ(c.cosines.size(), 3u);
  EXPECT_NEAR(c.cosines[0], 0.9 / std::sqrt(0.82), 1e-6);
  double z = 0;
  for (double v : c.cosines) z += std::exp(v / 0.1);
  EXPECT_NEAR(c.confidence, std::exp(c.cosines[0] / 0.1) / z, 1e-9);
  EXPECT_NEAR(c.margin, c.cosines[0] - c.cosines[2], 1e-12);
  // A lower temperature sharpens the confidence.
  EXPECT_GT(t2::classify({0.9f, 0.1f, 0.0f}, protos, 0.01).confidence, c.confidence);
  // Centring on the prototypes' mean removes the component they share.
  const auto cc = t2::classify({10.f, 0.2f}, {{10.f, 1.f}, {10.f, -1.f}}, 0.1, true);
  EXPECT_EQ(cc.index, 0u);
  EXPECT_NEAR(cc.cosines[0], 1.0, 1e-9);
  EXPECT_NEAR(cc.cosines[1], -1.0, 1e-9);
  EXPECT_THROW(t2::classify({NAN, 0, 0}, protos, 0.1), std::invalid_argument);
  EXPECT_THROW(t2::classify({1, 0}, protos, 0.1), std::invalid_argument);
  EXPECT_THROW(t2::classify({1, 0, 0}, {}, 0.1), std::invalid_argument);
}

TEST(Cem, RecoversAKnownMixtureOfCategoricalDistributions) {
  // Three distributions over 6 symbols; 4000 samples drawn from Σ α*_k p_k. CEM maximises the
  // log-likelihood Σ_x log Σ_k α_k p_k(x) over α.
  const std::vector<std::vector<double>> p{{0.4, 0.3, 0.1, 0.1, 0.05, 0.05},
                                           {0.05, 0.05, 0.4, 0.3, 0.1, 0.1},
                                           {0.1, 0.1, 0.05, 0.05, 0.3, 0.4}};
  const std::vector<double> alpha_star{0.6, 0.3, 0.1};
  std::mt19937_64 rng(7);
  std::vector<double> mix(6, 0.0);
  for (int v = 0; v < 6; ++v)
    for (int k = 0; k < 3; ++k) mix[v] += alpha_star[k] * p[k][v];
  std::discrete_distribution<int> draw(mix.begin(), mix.end());
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 4000; ++i) ++counts[draw(rng)];
  const auto log_likelihood = [&](const std::vector<double>& a) {
    double ll = 0.0;
    for (int v = 0; v < 6; ++v) {
      double q = 0.0;
      for (int k = 0; k < 3; ++k) q += a[k] * p[k][v];
      ll += counts[v] * std::log(q);
    }
    return ll;
  };
  t2::CemOptions o;  // the reference defaults: 32, 0.2, 50
  const auto r = t2::cem_search(3, log_likelihood, o);
  EXPECT_EQ(r.evaluations, 32 * 50);
  ASSERT_EQ(r.alpha.size(), 3u);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(r.alpha[k], alpha_star[k], 0.05) << "alpha " << k;
  EXPECT_NEAR(r.alpha[0] + r.alpha[1] + r.alpha[2], 1.0, 1e-12);
  EXPECT_GE(r.best_score, log_likelihood(alpha_star) - 1.0);
  for (std::size_t i = 1; i < r.best_per_iteration.size(); ++i)
    EXPECT_GE(r.best_per_iteration[i], r.best_per_iteration[i - 1]);
}

TEST(Cem, AlphaIsAConvexCombinationAndOptionsAreChecked) {
  const auto a = t2::alpha_from_theta({2.0, -1.0, 2.0});
  EXPECT_DOUBLE_EQ(a[0], 0.5);
  EXPECT_DOUBLE_EQ(a[1], 0.0);
  const auto u = t2::alpha_from_theta({-1.0, -2.0});
  EXPECT_DOUBLE_EQ(u[0], 0.5);
  t2::CemOptions bad;
  bad.population = 1;
  EXPECT_THROW(t2::cem_search(
                   2, [](const auto&) { return 0.0; }, bad),
               std::invalid_argument);
  EXPECT_THROW(t2::cem_search(0, [](const auto&) { return 0.0; }), std::invalid_argument);
}

namespace {

t2::ComposedWeights weights_of(std::size_t floats, float value) {
  t2::ComposedWeights w;
  w.matrices.push_back(std::vector<float>(floats, value));
  return w;
}

}  // namespace

TEST(WeightCache, EvictsTheLeastRecentlyUsedEntryBeyondTheEntryLimit) {
  t2::WeightCache cache({2, 1ull << 30, 1e9});
  int composed = 0;
  auto get = [&](double a) {
    return cache.get_or_compose({a, 1 - a}, [&] {
      ++composed;
      return weights_of(10, static_cast<float>(a));
    });
  };
  EXPECT_EQ(get(0.1)->matrices[0][0], 0.1f);
  get(0.2);
  get(0.1);  // hit: 0.1 becomes the most recent
  get(0.3);  // evicts 0.2
  EXPECT_TRUE(cache.contains({0.1, 0.9}));
  EXPECT_FALSE(cache.contains({0.2, 0.8}));
  EXPECT_TRUE(cache.contains({0.3, 0.7}));
  const auto s = cache.stats();
  EXPECT_EQ(composed, 3);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 3u);
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(s.entries, 2u);
  EXPECT_EQ(s.bytes, 80u);
  EXPECT_DOUBLE_EQ(s.hit_rate(), 0.25);
}

TEST(WeightCache, EvictsByBytesAndNeverKeepsAnEntryLargerThanTheLimit) {
  t2::WeightCache cache({100, 100, 1e9});                         // 100 bytes = 25 floats
  cache.get_or_compose({1.0}, [] { return weights_of(10, 1); });  // 40 bytes
  cache.get_or_compose({2.0}, [] { return weights_of(10, 2); });  // 80 bytes
  cache.get_or_compose({3.0}, [] { return weights_of(10, 3); });  // 120 > 100: evict 1.0
  EXPECT_FALSE(cache.contains({1.0}));
  EXPECT_TRUE(cache.contains({2.0}));
  EXPECT_EQ(cache.stats().bytes, 80u);
  const auto big = cache.get_or_compose({4.0}, [] { return weights_of(30, 4); });  // 120 bytes
  EXPECT_EQ(big->matrices[0].size(), 30u);
  EXPECT_FALSE(cache.contains({4.0}));
  EXPECT_TRUE(cache.contains({3.0}));
}

TEST(WeightCache, RecomposesAnEntryOlderThanTheTtl) {
  auto now = t2::WeightCache::Clock::time_point{};
  t2::WeightCache cache({8, 1ull << 30, 10.0}, [&] { return now; });
  int composed = 0;
  auto get = [&] {
    return cache.get_or_compose({0.5, 0.5}, [&] {
      ++composed;
      return weights_of(4, 1);
    });
  };
  get();
  now += std::chrono::seconds(9);
  get();  // 9 s old: a hit
  EXPECT_EQ(composed, 1);
  now += std::chrono::seconds(2);
  get();  // 11 s after insertion: expired, recomposed
  EXPECT_EQ(composed, 2);
  const auto s = cache.stats();
  EXPECT_EQ(s.expirations, 1u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.entries, 1u);
}
