// Cosine classification against prototypes (one or several per class), the train-split
// embedding transform, spherical k-means of the prototypes and the CEM search over expert
// mixtures (with the identity as an optional component).
#include "neat/t2/dispatch.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>

namespace neat::t2 {

namespace {

void check_finite(const std::vector<float>& embedding) {
  for (std::size_t i = 0; i < embedding.size(); ++i) {
    if (!std::isfinite(embedding[i])) {
      throw std::invalid_argument("t2: task embedding has a non-finite value at index " +
                                  std::to_string(i));
    }
  }
}

// Arg-max, margin and softmax confidence of per-class cosines (filled in c.cosines).
void finish(Classification& c, double temperature) {
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
}

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace

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
  check_finite(embedding);
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
  finish(c, temperature);
  return c;
}

Classification classify_nearest(const std::vector<float>& embedding,
                                const std::vector<std::vector<std::vector<float>>>& prototypes,
                                double temperature) {
  if (prototypes.empty()) throw std::invalid_argument("t2: classify without prototypes");
  if (!(temperature > 0)) throw std::invalid_argument("t2: classify: temperature must be > 0");
  check_finite(embedding);
  Classification c;
  for (std::size_t k = 0; k < prototypes.size(); ++k) {
    if (prototypes[k].empty()) {
      throw std::invalid_argument("t2: class " + std::to_string(k) + " has no prototype");
    }
    double best = -std::numeric_limits<double>::infinity();
    for (const auto& p : prototypes[k]) best = std::max(best, cosine(embedding, p));
    c.cosines.push_back(best);
  }
  finish(c, temperature);
  return c;
}

std::vector<float> EmbeddingTransform::apply(const std::vector<float>& x) const {
  std::vector<float> centred = x;
  if (!mean.empty()) {
    if (mean.size() != x.size()) {
      throw std::invalid_argument("t2: embedding has " + std::to_string(x.size()) +
                                  " values, the transform's mean " + std::to_string(mean.size()));
    }
    for (std::size_t i = 0; i < x.size(); ++i) centred[i] -= mean[i];
  }
  if (whitening.empty()) return centred;
  if (whitening.size() != x.size() * x.size()) {
    throw std::invalid_argument("t2: whitening matrix does not match an embedding of " +
                                std::to_string(x.size()) + " values");
  }
  const auto d = static_cast<Eigen::Index>(x.size());
  const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> w(
      whitening.data(), d, d);
  const Eigen::Map<const Eigen::VectorXf> v(centred.data(), d);
  std::vector<float> out(x.size());
  Eigen::Map<Eigen::VectorXf>(out.data(), d).noalias() = w * v;
  return out;
}

EmbeddingTransform fit_embedding_transform(
    const std::vector<std::vector<std::vector<float>>>& by_class,
    EmbeddingNormalisation normalisation, double shrinkage) {
  std::size_t n = 0, dim = 0;
  for (const auto& cls : by_class)
    for (const auto& e : cls) {
      if (dim == 0) dim = e.size();
      if (e.size() != dim) throw std::invalid_argument("t2: train embeddings of differing lengths");
      ++n;
    }
  if (n == 0 || dim == 0) throw std::invalid_argument("t2: no train embeddings for the transform");
  if (normalisation == EmbeddingNormalisation::whiten && !(shrinkage > 0)) {
    throw std::invalid_argument("t2: whitening needs shrinkage > 0");
  }
  Eigen::VectorXd mu = Eigen::VectorXd::Zero(static_cast<Eigen::Index>(dim));
  for (const auto& cls : by_class)
    for (const auto& e : cls)
      for (std::size_t i = 0; i < dim; ++i) mu[static_cast<Eigen::Index>(i)] += e[i];
  mu /= static_cast<double>(n);
  EmbeddingTransform t;
  t.mean.assign(mu.data(), mu.data() + dim);
  if (normalisation == EmbeddingNormalisation::center) return t;
  // Pooled within-class covariance Σ_w = (1/n) Σ_c Σ_{x∈c} (x − μ_c)(x − μ_c)ᵀ.
  const auto d = static_cast<Eigen::Index>(dim);
  Eigen::MatrixXd sw = Eigen::MatrixXd::Zero(d, d);
  for (const auto& cls : by_class) {
    if (cls.empty()) continue;
    RowMatrix x(static_cast<Eigen::Index>(cls.size()), d);
    for (std::size_t r = 0; r < cls.size(); ++r)
      for (std::size_t i = 0; i < dim; ++i)
        x(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(i)) = cls[r][i];
    x.rowwise() -= x.colwise().mean();
    sw.noalias() += x.transpose() * x;
  }
  sw /= static_cast<double>(n);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(sw);
  if (eig.info() != Eigen::Success) throw std::runtime_error("t2: eigen decomposition failed");
  const Eigen::VectorXd lambda = eig.eigenvalues().cwiseMax(0.0);
  const double floor = shrinkage * lambda.mean();
  if (!(floor > 0)) throw std::invalid_argument("t2: train embeddings have no within-class spread");
  const Eigen::VectorXd scale = (lambda.array() + floor).rsqrt().matrix();
  const RowMatrix w = eig.eigenvectors() * scale.asDiagonal() * eig.eigenvectors().transpose();
  t.whitening.assign(w.data(), w.data() + w.size());
  return t;
}

std::vector<std::vector<float>> kmeans_centroids(const std::vector<std::vector<float>>& points,
                                                 std::size_t k, std::int64_t iterations,
                                                 std::uint64_t seed) {
  if (points.empty() || k < 1) throw std::invalid_argument("t2: k-means needs points and k >= 1");
  const std::size_t n = points.size(), dim = points.front().size();
  RowMatrix x(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(dim));
  for (std::size_t r = 0; r < n; ++r) {
    if (points[r].size() != dim) throw std::invalid_argument("t2: k-means points differ in length");
    for (std::size_t i = 0; i < dim; ++i)
      x(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(i)) = points[r][i];
    const double norm = x.row(static_cast<Eigen::Index>(r)).norm();
    if (norm > 0) x.row(static_cast<Eigen::Index>(r)) /= norm;
  }
  k = std::min(k, n);
  std::mt19937_64 rng(seed);
  // k-means++ seeding: each next centre drawn with probability ∝ squared distance.
  RowMatrix centres(static_cast<Eigen::Index>(k), static_cast<Eigen::Index>(dim));
  centres.row(0) =
      x.row(static_cast<Eigen::Index>(std::uniform_int_distribution<std::size_t>(0, n - 1)(rng)));
  Eigen::VectorXd d2 = (x.rowwise() - centres.row(0)).rowwise().squaredNorm();
  for (std::size_t c = 1; c < k; ++c) {
    std::size_t pick = 0;
    if (d2.sum() > 0) {
      std::discrete_distribution<std::size_t> draw(d2.data(), d2.data() + d2.size());
      pick = draw(rng);
    } else {
      pick = c;  // all points coincide with the centres: any distinct index
    }
    centres.row(static_cast<Eigen::Index>(c)) = x.row(static_cast<Eigen::Index>(pick));
    d2 = d2.cwiseMin(
        (x.rowwise() - centres.row(static_cast<Eigen::Index>(c))).rowwise().squaredNorm());
  }
  std::vector<Eigen::Index> assignment(n, -1);
  for (std::int64_t it = 0; it < iterations; ++it) {
    bool changed = false;
    for (std::size_t r = 0; r < n; ++r) {
      Eigen::Index best = 0;
      (centres.rowwise() - x.row(static_cast<Eigen::Index>(r)))
          .rowwise()
          .squaredNorm()
          .minCoeff(&best);
      if (best != assignment[r]) changed = true;
      assignment[r] = best;
    }
    if (!changed) break;
    RowMatrix sum = RowMatrix::Zero(centres.rows(), centres.cols());
    std::vector<std::size_t> count(k, 0);
    for (std::size_t r = 0; r < n; ++r) {
      sum.row(assignment[r]) += x.row(static_cast<Eigen::Index>(r));
      ++count[static_cast<std::size_t>(assignment[r])];
    }
    for (std::size_t c = 0; c < k; ++c)  // an empty cluster keeps its centre
      if (count[c] > 0)
        centres.row(static_cast<Eigen::Index>(c)) =
            sum.row(static_cast<Eigen::Index>(c)) / static_cast<double>(count[c]);
  }
  std::vector<std::vector<float>> out(k, std::vector<float>(dim));
  for (std::size_t c = 0; c < k; ++c)
    for (std::size_t i = 0; i < dim; ++i)
      out[c][i] =
          static_cast<float>(centres(static_cast<Eigen::Index>(c), static_cast<Eigen::Index>(i)));
  return out;
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
  if (!o.simplex && o.identity_component) {
    throw std::invalid_argument(
        "t2: CEM with simplex = false weighs the identity implicitly (1 - sum alpha); "
        "identity_component must be false");
  }
  const auto elites = static_cast<std::size_t>(
      std::max<double>(1.0, std::ceil(o.elite_ratio * static_cast<double>(o.population))));
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  // θ_0 weighs the identity z = 1 when it is a component; θ_1..θ_K the experts.
  const std::size_t offset = o.identity_component ? 1 : 0;
  const std::size_t dims = experts + offset;
  std::vector<double> mu(dims, 1.0 / static_cast<double>(dims)), sd(dims, o.initial_std);
  if (!o.initial_mean.empty()) {
    if (o.initial_mean.size() != dims) {
      throw std::invalid_argument("t2: CEM initial_mean has " +
                                  std::to_string(o.initial_mean.size()) + " entries, expected " +
                                  std::to_string(dims));
    }
    mu = o.initial_mean;
  }
  const auto weights = [&](const std::vector<double>& theta) {
    return o.simplex ? alpha_from_theta(theta) : theta;
  };
  const auto split = [&](const std::vector<double>& full, double& identity) {
    identity = offset ? full[0] : 0.0;
    return std::vector<double>(full.begin() + static_cast<std::ptrdiff_t>(offset), full.end());
  };
  CemResult result;
  result.best_score = -std::numeric_limits<double>::infinity();
  result.alpha = split(weights(mu), result.identity_weight);
  std::vector<std::vector<double>> thetas(static_cast<std::size_t>(o.population));
  std::vector<double> scores(thetas.size());
  for (std::int64_t it = 0; it < o.iterations; ++it) {
    for (std::size_t s = 0; s < thetas.size(); ++s) {
      thetas[s].resize(dims);
      // The first sample of every iteration is the current mean: the incumbent is re-scored.
      // With the identity component, the very first sample is α_0 = 1 (the base model).
      for (std::size_t k = 0; k < dims; ++k) {
        if (offset && it == 0 && s == 0)
          thetas[s][k] = k == 0 ? 1.0 : 0.0;
        else
          thetas[s][k] = s == 0 ? mu[k] : mu[k] + sd[k] * normal(rng);
      }
      double identity = 0.0;
      const auto alpha = split(weights(thetas[s]), identity);
      double f = objective(alpha);
      ++result.evaluations;
      if (std::isnan(f)) f = -std::numeric_limits<double>::infinity();
      scores[s] = f;
      if (f > result.best_score) {
        result.best_score = f;
        result.alpha = alpha;
        result.identity_weight = identity;
      }
    }
    std::vector<std::size_t> order(thetas.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(elites),
                      order.end(), [&](auto a, auto b) { return scores[a] > scores[b]; });
    for (std::size_t k = 0; k < dims; ++k) {
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
