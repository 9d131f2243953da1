// Cosine classification against prototypes and the CEM search over expert mixtures.
#include "neat/t2/dispatch.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>

namespace neat::t2 {

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    throw std::invalid_argument("t2: cosine of vectors of lengths " + std::to_string(a.size()) +
                                " and " + std::to_string(b.size()));
  }
  double dot = 0.0, na = 0.0, nb = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    dot += double(a[i]) * b[i];
    na += double(a[i]) * a[i];
    nb += double(b[i]) * b[i];
  }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0;
}

Classification classify(const std::vector<float>& embedding,
                        const std::vector<std::vector<float>>& prototypes, double temperature,
                        bool center) {
  if (prototypes.empty()) throw std::invalid_argument("t2: classify without prototypes");
  if (!(temperature > 0)) throw std::invalid_argument("t2: classify: temperature must be > 0");
  for (std::size_t i = 0; i < embedding.size(); ++i) {
    if (!std::isfinite(embedding[i])) {
      throw std::invalid_argument("t2: task embedding has a non-finite value at index " +
                                  std::to_string(i));
    }
  }
  Classification c;
  if (center) {
    std::vector<float> mu(embedding.size(), 0.0f);
    for (const auto& p : prototypes) {
      if (p.size() != mu.size()) throw std::invalid_argument("t2: prototype length differs");
      for (std::size_t i = 0; i < mu.size(); ++i)
        mu[i] += p[i] / static_cast<float>(prototypes.size());
    }
    auto minus_mu = [&](const std::vector<float>& v) {
      std::vector<float> out(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) out[i] = v[i] - mu[i];
      return out;
    };
    const auto e = minus_mu(embedding);
    for (const auto& p : prototypes) c.cosines.push_back(cosine(e, minus_mu(p)));
  } else {
    for (const auto& p : prototypes) c.cosines.push_back(cosine(embedding, p));
  }
  c.index = static_cast<std::size_t>(std::max_element(c.cosines.begin(), c.cosines.end()) -
                                     c.cosines.begin());
  const double top = c.cosines[c.index];
  double second = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < c.cosines.size(); ++i)
    if (i != c.index) second = std::max(second, c.cosines[i]);
  c.margin = std::isfinite(second) ? top - second : 0.0;
  double z = 0.0;
  for (double v : c.cosines) {
    c.probabilities.push_back(std::exp((v - top) / temperature));
    z += c.probabilities.back();
  }
  for (auto& p : c.probabilities) p /= z;
  c.confidence = c.probabilities[c.index];
  return c;
}

std::vector<double> alpha_from_theta(const std::vector<double>& theta) {
  std::vector<double> a(theta.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < theta.size(); ++i) {
    a[i] = std::max(theta[i], 0.0);
    sum += a[i];
  }
  if (!(sum > 0)) {
    std::fill(a.begin(), a.end(), 1.0 / static_cast<double>(a.size()));
    return a;
  }
  for (auto& v : a) v /= sum;
  return a;
}

CemResult cem_search(std::size_t experts,
                     const std::function<double(const std::vector<double>&)>& objective,
                     const CemOptions& o) {
  if (experts == 0) throw std::invalid_argument("t2: CEM over zero experts");
  if (o.population < 2 || !(o.elite_ratio > 0 && o.elite_ratio <= 1) || o.iterations < 1 ||
      !(o.initial_std > 0) || o.min_std < 0) {
    throw std::invalid_argument(
        "t2: CEM needs population >= 2, elite_ratio in (0, 1], iterations >= 1, "
        "initial_std > 0, min_std >= 0");
  }
  const auto elites = static_cast<std::size_t>(
      std::max<double>(1.0, std::ceil(o.elite_ratio * static_cast<double>(o.population))));
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> mu(experts, 1.0 / static_cast<double>(experts)), sd(experts, o.initial_std);
  CemResult result;
  result.best_score = -std::numeric_limits<double>::infinity();
  result.alpha = alpha_from_theta(mu);
  std::vector<std::vector<double>> thetas(static_cast<std::size_t>(o.population));
  std::vector<double> scores(thetas.size());
  for (std::int64_t it = 0; it < o.iterations; ++it) {
    for (std::size_t s = 0; s < thetas.size(); ++s) {
      thetas[s].resize(experts);
      // The first sample of every iteration is the current mean: the incumbent is re-scored.
      for (std::size_t k = 0; k < experts; ++k)
        thetas[s][k] = s == 0 ? mu[k] : mu[k] + sd[k] * normal(rng);
      const auto alpha = alpha_from_theta(thetas[s]);
      double f = objective(alpha);
      ++result.evaluations;
      if (std::isnan(f)) f = -std::numeric_limits<double>::infinity();
      scores[s] = f;
      if (f > result.best_score) {
        result.best_score = f;
        result.alpha = alpha;
      }
    }
    std::vector<std::size_t> order(thetas.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(elites),
                      order.end(), [&](auto a, auto b) { return scores[a] > scores[b]; });
    for (std::size_t k = 0; k < experts; ++k) {
      double m = 0.0, v = 0.0;
      for (std::size_t e = 0; e < elites; ++e) m += thetas[order[e]][k];
      m /= static_cast<double>(elites);
      for (std::size_t e = 0; e < elites; ++e) v += std::pow(thetas[order[e]][k] - m, 2);
      mu[k] = m;
      sd[k] = std::max(std::sqrt(v / static_cast<double>(elites)), o.min_std);
    }
    result.best_per_iteration.push_back(result.best_score);
  }
  return result;
}

}  // namespace neat::t2
