// Helpers shared by the nn sources: result allocation, view construction, op recording and the
// 4-D strided walk that every layout-agnostic kernel uses. Not installed; not part of the API.
#pragma once

#include <array>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "neat/nn/tensor.hpp"

namespace neat::nn::detail {

// New contiguous tensor of shape with uninitialised (zero_fill = false) or zeroed elements.
template <typename T>
Tensor<T> empty(const Shape& shape, bool zero_fill = false);

// A view sharing base's storage with its own shape, strides and offset (relative to storage).
template <typename T>
Tensor<T> make_view(const Tensor<T>& base, Shape shape, Shape strides, int64_t offset);

template <typename T>
inline bool any_requires_grad(const std::vector<Tensor<T>>& inputs) {
  if (!grad_enabled()) return false;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

// Attaches history to out when grad mode is on and an input requires a gradient. The backward
// must be written with ops (it may run with recording on, for create_graph).
template <typename T>
void record(Tensor<T>& out, const char* op, std::vector<Tensor<T>> parents, BackwardFn<T> fn) {
  if (!any_requires_grad(parents)) return;
  Node<T>* n = out.node();
  n->requires_grad = true;
  n->op = op;
  n->parents = std::move(parents);
  n->backward = std::move(fn);
}

// As record, for an op whose backward is a hand-written kernel: with recording on during the
// backward (create_graph), its gradients carry a backward that refuses a second derivative.
template <typename T>
void record_fused(Tensor<T>& out, const char* op, std::vector<Tensor<T>> parents,
                  BackwardFn<T> fn) {
  BackwardFn<T> wrapped = [op, fn = std::move(fn)](const Tensor<T>& g) {
    std::vector<Tensor<T>> grads;
    {
      NoGradGuard no_grad;
      grads = fn(g);
    }
    if (grad_enabled()) {
      for (auto& gr : grads) {
        if (!gr.defined()) continue;
        Node<T>* n = gr.node();
        n->requires_grad = true;
        n->op = op;
        n->parents = {g};
        n->backward = [op](const Tensor<T>&) -> std::vector<Tensor<T>> {
          throw std::logic_error(std::string("neat::nn: op ") + op +
                                 " has no second derivative (its backward is a fused kernel)");
        };
      }
    }
    return grads;
  };
  record(out, op, std::move(parents), std::move(wrapped));
}

// Shape and strides padded on the left to 4 dimensions (extent 1, stride 0).
struct Layout4 {
  std::array<int64_t, kMaxDims> shape{1, 1, 1, 1};
  std::array<int64_t, kMaxDims> strides{0, 0, 0, 0};
};
inline Layout4 layout4(const Shape& shape, const Shape& strides) {
  Layout4 l;
  const int64_t pad = kMaxDims - static_cast<int64_t>(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    l.shape[pad + i] = shape[i];
    l.strides[pad + i] = shape[i] == 1 ? 0 : strides[i];
  }
  return l;
}

// Calls f(offset) for every element in row-major order of layout l.
template <typename F>
inline void for_each_offset(const Layout4& l, F&& f) {
  for (int64_t i0 = 0; i0 < l.shape[0]; ++i0)
    for (int64_t i1 = 0; i1 < l.shape[1]; ++i1)
      for (int64_t i2 = 0; i2 < l.shape[2]; ++i2) {
        const int64_t base = i0 * l.strides[0] + i1 * l.strides[1] + i2 * l.strides[2];
        for (int64_t i3 = 0; i3 < l.shape[3]; ++i3) f(base + i3 * l.strides[3]);
      }
}

inline int64_t normalize_axis(int64_t axis, int64_t ndim, const char* op) {
  const int64_t a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim)
    throw std::invalid_argument(std::string("neat::nn::") + op + ": axis " + std::to_string(axis) +
                                " out of range for " + std::to_string(ndim) + "-D tensor");
  return a;
}

}  // namespace neat::nn::detail
