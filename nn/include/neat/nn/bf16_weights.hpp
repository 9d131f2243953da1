// bfloat16 storage of weight matrices, computed in float32 (issue 8: the profile's
// `precision: bf16`). A Bf16Matrix keeps a (rows, cols) matrix as bfloat16 values (2 bytes each)
// in tensor storage, so its bytes count in memory_stats() (and under the caller's MemoryTag);
// bf16_linear widens it panel by panel into a small float32 buffer that feeds the float32 GEMM
// (cblas_sgemm), so every product is computed in float32. Inference only: no gradient flows
// into or through a bfloat16 weight.
//
// Invariant: a Bf16Matrix is immutable after construction; copies share the same storage (a
// shared model and a model copy can hold one set of bfloat16 weights). For weights that are
// exactly bfloat16 values (a model loaded from a bf16 checkpoint, as the shipped byte LM) the
// storage loses nothing: widening gives back the same floats.
#pragma once

#include <cstdint>

#include "neat/nn/tensor.hpp"

namespace neat::nn {

template <typename T>
class TransformerLM;

/// A read-only (rows, cols) row-major matrix of bfloat16 values in counted tensor storage.
class Bf16Matrix {
 public:
  Bf16Matrix() = default;

  /// Rounds each value of the 2-D float tensor `w` (any layout) to the nearest bfloat16 (ties to
  /// even; float_to_bf16). Bytes: 2 per value (rounded up to 4 for an odd count), counted by
  /// memory_stats() under the current MemoryTag. Throws std::invalid_argument when `w` is
  /// undefined or not 2-D.
  static Bf16Matrix from_float(const Tensor<float>& w);

  bool defined() const { return packed_.defined(); }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  /// rows * cols bfloat16 values, row-major (the high 16 bits of the float each stands for).
  const uint16_t* data() const;
  /// Tensor bytes this matrix holds (2 * rows * cols, plus 2 when that count is odd).
  int64_t stored_bytes() const;
  /// The widened values as a new contiguous float tensor (rows, cols), no history.
  Tensor<float> to_float() const;

 private:
  // ceil(rows * cols / 2) floats whose bytes hold the bfloat16 values, two per element: the
  // allocator's storage is typed by element, and this keeps the bytes counted like any tensor.
  Tensor<float> packed_;
  int64_t rows_ = 0, cols_ = 0;
};

/// Whether every value of the float tensor `w` is exactly a bfloat16 value (its low 16 bits are
/// zero), i.e. Bf16Matrix::from_float(w).to_float() equals `w` bit for bit. Any layout.
bool bf16_representable(const Tensor<float>& w);

/// y = x W^T + b (Linear's forward) with a bfloat16 weight W (out, in), computed in float32:
/// W is widened in panels of rows (at most 1 MiB of floats each, a multiple of 16 rows) into a
/// per-thread buffer, and each panel's columns of y come from one cblas_sgemm. x (..., in) ->
/// y (..., out); bias (out) or undefined. For bfloat16-exact weights y equals
/// linear(x, W.to_float(), b): bit for bit when W fits one panel (every matrix of the shipped
/// byte LM: the same single GEMM), else up to the GEMM's summation order. Gradients: none through W
/// or x; the bias term is added with add() and so is differentiable. Throws std::invalid_argument
/// for mismatched shapes and std::logic_error when grad mode is on and x requires a gradient
/// (bfloat16 weights are inference only).
Tensor<float> bf16_linear(const Tensor<float>& x, const Bf16Matrix& weight,
                          const Tensor<float>& bias);

/// Stores every Linear weight of `model` (the attention projections wq, wk, wv, wo, the MLP's up
/// and down, lm_head) in bfloat16 (Linear::store_weight_bf16); embeddings, norms and biases stay
/// float32. Halves those weights' tensor bytes; the float32 tensors are released (when nothing
/// else holds them). Returns the number of weights converted. Call before sharing the model.
int64_t store_linear_weights_bf16(TransformerLM<float>& model);

/// Number of Linear weights of `model` held in bfloat16.
int64_t count_bf16_linear_weights(const TransformerLM<float>& model);

}  // namespace neat::nn
