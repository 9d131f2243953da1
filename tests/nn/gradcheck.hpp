// Finite-difference gradient checks in float64 for the nn tests: central differences of a
// scalar function against the reverse-mode gradient, compared by relative error of the whole
// gradient vector.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "neat/nn/ops.hpp"
#include "neat/nn/tensor.hpp"

namespace neat::nn::testing {

using Fn = std::function<Tensord(const std::vector<Tensord>&)>;

// ||analytic - numeric|| / max(||analytic|| + ||numeric||, 1e-12), worst over inputs.
inline double gradient_relative_error(const Fn& f, std::vector<Tensord> inputs,
                                      double step = 1e-6) {
  for (auto& x : inputs) {
    x = x.clone();  // a private leaf: the caller's tensor stays as it was
    x.set_requires_grad(true);
  }
  const Tensord y = f(inputs);
  const std::vector<Tensord> analytic = grad(y, inputs);
  double worst = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const std::vector<double> a = analytic[k].to_vector();
    double diff = 0, norm_a = 0, norm_n = 0;
    double* p = inputs[k].data();
    for (int64_t i = 0; i < inputs[k].numel(); ++i) {
      const double saved = p[i];
      double plus, minus;
      {
        NoGradGuard no_grad;
        p[i] = saved + step;
        plus = f(inputs).item();
        p[i] = saved - step;
        minus = f(inputs).item();
        p[i] = saved;
      }
      const double numeric = (plus - minus) / (2 * step);
      diff += (a[i] - numeric) * (a[i] - numeric);
      norm_a += a[i] * a[i];
      norm_n += numeric * numeric;
    }
    const double rel = std::sqrt(diff) / std::max(std::sqrt(norm_a) + std::sqrt(norm_n), 1e-12);
    worst = std::max(worst, rel);
  }
  return worst;
}

// A scalar from an output: sum(out * w) with fixed random weights w, so every output element
// contributes a different weight to the checked gradient.
inline Tensord weighted_sum(const Tensord& out, uint64_t seed = 99) {
  std::mt19937_64 rng(seed);
  return sum(mul(out, Tensord::randn(out.shape(), rng)));
}

inline Tensord random(const Shape& shape, std::mt19937_64& rng, double stddev = 1.0) {
  return Tensord::randn(shape, rng, stddev);
}

}  // namespace neat::nn::testing
