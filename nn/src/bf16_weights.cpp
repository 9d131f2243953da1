// bfloat16 weight storage and the float32 product over it: panels of bfloat16 rows widened into
// a per-thread float buffer, each panel multiplied by cblas_sgemm (see bf16_weights.hpp).
#include "neat/nn/bf16_weights.hpp"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "bf16_bits.hpp"

#include "internal.hpp"
#include "neat/nn/modules.hpp"
#include "neat/nn/ops.hpp"

namespace neat::nn {

namespace {

// Floats per widened panel: 1 MiB. Each panel is one GEMM call, which packs the input x
// again, so small panels cost more than they save: with 64 KiB panels (16 rows of a 1024-wide
// matrix) a (1024, 1024) x (1024 -> 256) product took 2x the float32 time; with 1 MiB panels
// every matrix of the shipped byte LM is one panel and the product is one GEMM as in float32.
constexpr int64_t kPanelFloats = 262144;
// Panel heights are multiples of this (whole register blocks of the GEMM kernels).
constexpr int64_t kPanelRowStep = 16;

struct FreeFloats {
  void operator()(float* p) const { std::free(p); }
};

// The calling thread's panel buffer, 64-byte aligned, grown on demand (kPanelFloats floats, or
// one kPanelRowStep-row panel of a wider matrix). Not tensor storage: a working buffer.
float* panel_buffer(int64_t floats) {
  thread_local std::unique_ptr<float[], FreeFloats> buffer;
  thread_local int64_t capacity = 0;
  if (floats > capacity) {
    const auto bytes = static_cast<std::size_t>((floats * 4 + 63) / 64 * 64);
    auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
    buffer.reset(p);
    capacity = floats;
  }
  return buffer.get();
}

}  // namespace

Bf16Matrix Bf16Matrix::from_float(const Tensor<float>& w) {
  if (!w.defined() || w.dim() != 2)
    throw std::invalid_argument("neat::nn::Bf16Matrix: needs a 2-D float weight, got " +
                                (w.defined() ? shape_string(w.shape()) : std::string("none")));
  Bf16Matrix m;
  m.rows_ = w.shape()[0];
  m.cols_ = w.shape()[1];
  const int64_t n = m.rows_ * m.cols_;
  m.packed_ = Tensor<float>::zeros({(n + 1) / 2});
  auto* out = reinterpret_cast<uint16_t*>(m.packed_.data());
  const std::vector<float> values = w.to_vector();  // row-major whatever the layout
  for (int64_t i = 0; i < n; ++i)
    out[i] = detail::float_to_bf16_bits(values[static_cast<std::size_t>(i)]);
  return m;
}

const uint16_t* Bf16Matrix::data() const {
  if (!packed_.defined()) throw std::logic_error("neat::nn::Bf16Matrix: use of an empty matrix");
  return reinterpret_cast<const uint16_t*>(packed_.data());
}

int64_t Bf16Matrix::stored_bytes() const {
  return packed_.defined() ? packed_.numel() * static_cast<int64_t>(sizeof(float)) : 0;
}

Tensor<float> Bf16Matrix::to_float() const {
  Tensor<float> out = Tensor<float>::zeros({rows_, cols_});
  if (rows_ * cols_ > 0) detail::widen_bf16(data(), rows_ * cols_, out.data());
  return out;
}

bool bf16_representable(const Tensor<float>& w) {
  const std::vector<float> values = w.to_vector();
  for (const float v : values) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    if ((u & 0xFFFFu) != 0) return false;
  }
  return true;
}

Tensor<float> bf16_linear(const Tensor<float>& x, const Bf16Matrix& weight,
                          const Tensor<float>& bias) {
  const int64_t out_features = weight.rows(), in_features = weight.cols();
  if (!weight.defined() || x.dim() < 1 || x.size(-1) != in_features)
    throw std::invalid_argument("neat::nn::bf16_linear: input " + shape_string(x.shape()) +
                                " with bf16 weight (" + std::to_string(out_features) + ", " +
                                std::to_string(in_features) + ")");
  if (bias.defined() && (bias.dim() != 1 || bias.shape()[0] != out_features))
    throw std::invalid_argument("neat::nn::bf16_linear: bias " + shape_string(bias.shape()) +
                                " for " + std::to_string(out_features) + " outputs");
  if (grad_enabled() && x.requires_grad())
    throw std::logic_error(
        "neat::nn::bf16_linear: a gradient was requested through a bfloat16-stored weight; "
        "bf16 weights are for inference only (store the model in float32 to train or "
        "differentiate through it)");
  const Tensor<float> a = x.is_contiguous() ? x : x.clone();
  Shape shape = a.shape();
  shape.back() = out_features;
  Tensor<float> y = detail::empty<float>(shape);
  const int64_t rows = a.numel() / std::max<int64_t>(in_features, 1);
  if (y.numel() > 0) {
    if (in_features == 0) {
      std::fill_n(y.data(), y.numel(), 0.0f);
    } else {
      // y[:, r0:r0+h] = a (rows, in) @ panel(h, in)^T, panel = widened rows r0..r0+h of W.
      const int64_t step =
          std::max(kPanelRowStep, kPanelFloats / in_features / kPanelRowStep * kPanelRowStep);
      float* panel = panel_buffer(std::min(step, out_features) * in_features);
      const uint16_t* w = weight.data();
      for (int64_t r0 = 0; r0 < out_features; r0 += step) {
        const int64_t h = std::min(step, out_features - r0);
        detail::widen_bf16(w + r0 * in_features, h * in_features, panel);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                    static_cast<int>(h), static_cast<int>(in_features), 1.0f, a.data(),
                    static_cast<int>(in_features), panel, static_cast<int>(in_features), 0.0f,
                    y.data() + r0, static_cast<int>(out_features));
      }
    }
  }
  return bias.defined() ? add(y, bias) : y;
}

int64_t store_linear_weights_bf16(TransformerLM<float>& model) {
  int64_t n = 0;
  auto store = [&n](Linear<float>& linear) {
    if (!linear.weight_is_bf16()) {
      linear.store_weight_bf16();
      ++n;
    }
  };
  for (auto& block : model.blocks) {
    for (Linear<float>* l : {&block->attn.wq, &block->attn.wk, &block->attn.wv, &block->attn.wo,
                             &block->mlp.up, &block->mlp.down})
      store(*l);
  }
  store(model.lm_head);
  return n;
}

int64_t count_bf16_linear_weights(const TransformerLM<float>& model) {
  int64_t n = model.lm_head.weight_is_bf16() ? 1 : 0;
  for (const auto& block : model.blocks) {
    for (const Linear<float>* l : {&block->attn.wq, &block->attn.wk, &block->attn.wv,
                                   &block->attn.wo, &block->mlp.up, &block->mlp.down})
      n += l->weight_is_bf16() ? 1 : 0;
  }
  return n;
}

}  // namespace neat::nn
