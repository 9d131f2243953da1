// Differentiable ops on Tensor<T>. Each op records its backward (see docs/nn.md for the
// equations) when grad mode is on and an input requires a gradient. Elementwise and view ops
// write their backward with ops, so it can be differentiated again (create_graph); the fused
// ops (softmax, cross_entropy, norms, attention) have hand-written backward kernels and refuse
// a second derivative with std::logic_error instead of returning a wrong one.
// Errors: shape mismatches throw std::invalid_argument naming the op and the shapes.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "neat/nn/tensor.hpp"

namespace neat::nn {

// --- elementwise with NumPy broadcasting (trailing dimensions aligned) ---
template <typename T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b);
template <typename T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b);
template <typename T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b);
template <typename T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b);
template <typename T>
Tensor<T> scale(const Tensor<T>& x, T factor);  // x * factor
template <typename T>
Tensor<T> add_scalar(const Tensor<T>& x, T value);  // x + value

template <typename T>
Tensor<T> operator+(const Tensor<T>& a, const Tensor<T>& b) {
  return add(a, b);
}
template <typename T>
Tensor<T> operator-(const Tensor<T>& a, const Tensor<T>& b) {
  return sub(a, b);
}
template <typename T>
Tensor<T> operator*(const Tensor<T>& a, const Tensor<T>& b) {
  return mul(a, b);
}
template <typename T>
Tensor<T> operator/(const Tensor<T>& a, const Tensor<T>& b) {
  return div(a, b);
}

// Copy of x expanded to shape (broadcast rules); backward sums back (sum_to).
template <typename T>
Tensor<T> broadcast_to(const Tensor<T>& x, const Shape& shape);
// Sum of x over the axes that were broadcast to reach x.shape() from shape.
template <typename T>
Tensor<T> sum_to(const Tensor<T>& x, const Shape& shape);

// --- reductions ---
// Sum over axes (negative counts from the end); empty axes = all axes.
template <typename T>
Tensor<T> sum(const Tensor<T>& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
template <typename T>
Tensor<T> mean(const Tensor<T>& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);

// --- shape ---
template <typename T>
Tensor<T> reshape(const Tensor<T>& x, const Shape& shape);  // one extent may be -1
template <typename T>
Tensor<T> transpose(const Tensor<T>& x, int64_t a, int64_t b);
template <typename T>
Tensor<T> slice(const Tensor<T>& x, int64_t axis, int64_t start, int64_t end);  // [start, end)
template <typename T>
Tensor<T> concat(const std::vector<Tensor<T>>& xs, int64_t axis);

// Embedding lookup: weight (V, C), indices (N) laid out as index_shape -> index_shape + (C).
// Throws std::out_of_range for an index outside [0, V).
template <typename T>
Tensor<T> gather_rows(const Tensor<T>& weight, const std::vector<int32_t>& indices,
                      const Shape& index_shape);
// Adjoint of gather_rows: rows of grad (N, C) added into a (V, C) zero tensor.
template <typename T>
Tensor<T> scatter_add_rows(const Tensor<T>& grad, const std::vector<int32_t>& indices,
                           int64_t num_rows);

// --- matrix product (cblas_sgemm / cblas_dgemm) ---
// a (..., M, K) @ b (..., K, N) with equal batch dims, or b (K, N) shared by all batches.
// A transposed view (transpose(w, 0, 1)) is passed to BLAS as a transpose flag, not copied.
template <typename T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b);
// x (..., in) @ weight(out, in)^T + bias (out); bias may be undefined.
template <typename T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias);

// --- activations and their derivatives as ops of their own ---
enum class Activation : uint8_t { exp, log, tanh, sigmoid, silu, gelu };
// order 0: f(x); 1: f'(x); 2: f''(x); 3: f'''(x). The backward of order k is g * order k+1, so
// orders 0..2 are differentiable with ops; order 3 refuses a backward (std::logic_error).
// gelu is the tanh approximation (PyTorch approximate="tanh").
template <typename T>
Tensor<T> activation(const Tensor<T>& x, Activation kind, int order = 0);
template <typename T>
Tensor<T> exp(const Tensor<T>& x) {
  return activation(x, Activation::exp, 0);
}
template <typename T>
Tensor<T> log(const Tensor<T>& x) {
  return activation(x, Activation::log, 0);
}
template <typename T>
Tensor<T> tanh(const Tensor<T>& x) {
  return activation(x, Activation::tanh, 0);
}
template <typename T>
Tensor<T> sigmoid(const Tensor<T>& x) {
  return activation(x, Activation::sigmoid, 0);
}
template <typename T>
Tensor<T> silu(const Tensor<T>& x) {
  return activation(x, Activation::silu, 0);
}
template <typename T>
Tensor<T> gelu(const Tensor<T>& x) {
  return activation(x, Activation::gelu, 0);
}
template <typename T>
Tensor<T> tanh_grad(const Tensor<T>& x) {
  return activation(x, Activation::tanh, 1);
}
template <typename T>
Tensor<T> sigmoid_grad(const Tensor<T>& x) {
  return activation(x, Activation::sigmoid, 1);
}
template <typename T>
Tensor<T> silu_grad(const Tensor<T>& x) {
  return activation(x, Activation::silu, 1);
}
template <typename T>
Tensor<T> gelu_grad(const Tensor<T>& x) {
  return activation(x, Activation::gelu, 1);
}

// --- fused ops with hand-written backward ---
// Softmax / log-softmax over the last axis.
template <typename T>
Tensor<T> softmax(const Tensor<T>& x);
template <typename T>
Tensor<T> log_softmax(const Tensor<T>& x);

struct CrossEntropyOptions {
  int32_t ignore_index = -100;  // targets equal to this contribute nothing
  double label_smoothing = 0;   // PyTorch semantics: target = (1-e) one_hot + e / V
};
// Mean cross-entropy in nats over non-ignored targets. logits (..., V), targets one per row.
// Returns 0 when every target is ignored. Throws std::out_of_range for a target outside [0, V).
template <typename T>
Tensor<T> cross_entropy(const Tensor<T>& logits, const std::vector<int32_t>& targets,
                        const CrossEntropyOptions& options = {});

// RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + eps) * weight; x (..., C), weight (C).
template <typename T>
Tensor<T> rms_norm(const Tensor<T>& x, const Tensor<T>& weight, T eps = T(1e-5));
// LayerNorm (Ba et al. 2016): y = (x - mean) / sqrt(var + eps) * weight + bias.
template <typename T>
Tensor<T> layer_norm(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias,
                     T eps = T(1e-5));

// Causal multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1), fused.
// q (B, Tq, C), k and v (B, Tk, C) with Tq <= Tk, C = heads * D; head h uses columns
// [h*D, (h+1)*D). Query i sits at absolute position Tk - Tq + i (so a KV cache works) and
// attends to keys j <= position, and with window > 0 only to j > position - window
// (sliding window). Output (B, Tq, C). Inputs may be strided views whose last axis is dense.
template <typename T>
Tensor<T> causal_attention(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v,
                           int64_t heads, int64_t window = 0);

// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
template <typename T>
Tensor<T> dropout(const Tensor<T>& x, double p, std::mt19937_64& rng);

}  // namespace neat::nn
