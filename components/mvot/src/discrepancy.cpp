// Token discrepancy loss L_D (MVoT Sec. 3): forward over image-token columns and its
// hand-written backward, recorded on the nn tape through the public Node interface.
#include "neat/mvot/discrepancy.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace neat::mvot {

CodeDistances code_distances(const Codebook& codebook) {
  const int k = codebook.size();
  if (k < 2) throw std::invalid_argument("code_distances: codebook has fewer than 2 codes");
  const RowMatrix& c = codebook.patch_centres();
  CodeDistances out;
  out.k = k;
  out.d.assign(static_cast<std::size_t>(k) * k, 0.0);
  double total = 0.0;
  for (int i = 0; i < k; ++i) {
    for (int j = i + 1; j < k; ++j) {
      const double v = (c.row(i) - c.row(j)).cast<double>().squaredNorm();
      out.d[static_cast<std::size_t>(i) * k + j] = v;
      out.d[static_cast<std::size_t>(j) * k + i] = v;
      total += 2.0 * v;
    }
  }
  const double mean = total / (static_cast<double>(k) * (k - 1));
  if (!(mean > 0.0)) throw std::invalid_argument("code_distances: all codebook centres coincide");
  for (auto& v : out.d) v /= mean;
  return out;
}

template <typename T>
nn::Tensor<T> token_discrepancy_loss(const nn::Tensor<T>& logits_in,
                                     const std::vector<std::int32_t>& target_codes,
                                     const CodeDistances& distances, std::int64_t first) {
  const nn::Tensor<T> logits = logits_in.contiguous();
  const std::int64_t V = logits.size(-1);
  const std::int64_t N = logits.numel() / std::max<std::int64_t>(V, 1);
  const int K = distances.k;
  if (first < 0 || first + K > V)
    throw std::invalid_argument("token_discrepancy_loss: image columns [" + std::to_string(first) +
                                ", " + std::to_string(first + K) + ") outside logits of width " +
                                std::to_string(V));
  if (static_cast<std::int64_t>(target_codes.size()) != N)
    throw std::invalid_argument("token_discrepancy_loss: " + std::to_string(target_codes.size()) +
                                " target codes for " + std::to_string(N) + " rows");
  // p (rows, K) of the image-restricted softmax, kept for the backward.
  std::vector<std::int64_t> rows;
  std::vector<T> probs;
  std::vector<T> expected;  // sum_k p_k D_yk per kept row
  const T* x = logits.data();
  T total = 0;
  for (std::int64_t r = 0; r < N; ++r) {
    const std::int32_t y = target_codes[static_cast<std::size_t>(r)];
    if (y == -1) continue;
    if (y < -1 || y >= K)
      throw std::out_of_range("token_discrepancy_loss: target code " + std::to_string(y) +
                              " at row " + std::to_string(r) + " outside [0, " + std::to_string(K) +
                              ")");
    const T* row = x + r * V + first;
    const T m = *std::max_element(row, row + K);
    T z = 0;
    const std::size_t base = probs.size();
    probs.resize(base + K);
    for (int j = 0; j < K; ++j) {
      probs[base + j] = std::exp(row[j] - m);
      z += probs[base + j];
    }
    T e = 0;
    for (int j = 0; j < K; ++j) {
      probs[base + j] /= z;
      e += probs[base + j] * static_cast<T>(distances.at(y, j));
    }
    rows.push_back(r);
    expected.push_back(e);
    total += e;
  }
  const auto count = static_cast<std::int64_t>(rows.size());
  nn::Tensor<T> loss = nn::Tensor<T>::scalar(count > 0 ? total / static_cast<T>(count) : T(0));
  if (!nn::grad_enabled() || !logits.requires_grad()) return loss;

  nn::Node<T>* node = loss.node();
  node->requires_grad = true;
  node->op = "token_discrepancy_loss";
  node->parents = {logits};
  node->backward = [logits, rows, probs, expected, target_codes, distances, first, V, K,
                    count](const nn::Tensor<T>& g) {
    if (nn::grad_enabled())
      throw std::logic_error(
          "neat::mvot::token_discrepancy_loss has no second derivative (fused backward)");
    nn::Tensor<T> dx = nn::Tensor<T>::zeros(logits.shape());
    if (count == 0) return std::vector<nn::Tensor<T>>{dx};
    const T s = g.item() / static_cast<T>(count);
    T* d = dx.data();
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int32_t y = target_codes[static_cast<std::size_t>(rows[i])];
      const T* p = probs.data() + i * K;
      T* out = d + rows[i] * V + first;
      for (int j = 0; j < K; ++j)
        out[j] = s * p[j] * (static_cast<T>(distances.at(y, j)) - expected[i]);
    }
    return std::vector<nn::Tensor<T>>{dx};
  };
  return loss;
}

template nn::Tensor<float> token_discrepancy_loss(const nn::Tensor<float>&,
                                                  const std::vector<std::int32_t>&,
                                                  const CodeDistances&, std::int64_t);
template nn::Tensor<double> token_discrepancy_loss(const nn::Tensor<double>&,
                                                   const std::vector<std::int32_t>&,
                                                   const CodeDistances&, std::int64_t);

}  // namespace neat::mvot
