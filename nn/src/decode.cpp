// TokenDecoder: one position of a TransformerLM<float> at batch 1 on preallocated buffers, with
// matrix-vector products (Eigen over the float32 weights, or an AVX kernel over exact bfloat16
// copies) and single-query attention over the KV cache. Mirrors TransformerLM::hidden_cached and
// lm_head for one token; the formulas of each part are those of nn/src/ops_nn.cpp (rms_norm,
// causal_attention, the activations) so that both paths are the same model.
#include "neat/nn/decode.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include <Eigen/Core>

#include "bf16_bits.hpp"

namespace neat::nn {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>>;
using VecMap = Eigen::Map<Eigen::VectorXf>;
using ConstVecMap = Eigen::Map<const Eigen::VectorXf>;

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
constexpr bool kBf16Kernel = true;
#else
constexpr bool kBf16Kernel = false;
#endif

using detail::bf16_bits_to_float;

#if defined(__AVX512F__)
constexpr std::int64_t kLanes = 16;
using Acc = __m512;
inline Acc acc_zero() { return _mm512_setzero_ps(); }
inline Acc load_x(const float* p) { return _mm512_loadu_ps(p); }
// 16 bfloat16 values -> 16 floats: the bf16 bits are the high half of the float.
inline Acc load_w(const std::uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Acc fma(Acc a, Acc b, Acc c) { return _mm512_fmadd_ps(a, b, c); }
inline float reduce(Acc a) { return _mm512_reduce_add_ps(a); }
#elif defined(__AVX2__) && defined(__FMA__)
constexpr std::int64_t kLanes = 8;
using Acc = __m256;
inline Acc acc_zero() { return _mm256_setzero_ps(); }
inline Acc load_x(const float* p) { return _mm256_loadu_ps(p); }
inline Acc load_w(const std::uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline Acc fma(Acc a, Acc b, Acc c) { return _mm256_fmadd_ps(a, b, c); }
inline float reduce(Acc a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// y = W x for a bfloat16 W (rows, cols) row-major: four rows share each load of x.
void bf16_matvec(const std::uint16_t* w, std::int64_t rows, std::int64_t cols, const float* x,
                 float* y) {
  std::int64_t r = 0;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  const std::int64_t vec_cols = cols - cols % kLanes;
  for (; r + 4 <= rows; r += 4) {
    const std::uint16_t* w0 = w + r * cols;
    const std::uint16_t* w1 = w0 + cols;
    const std::uint16_t* w2 = w1 + cols;
    const std::uint16_t* w3 = w2 + cols;
    Acc a0 = acc_zero(), a1 = acc_zero(), a2 = acc_zero(), a3 = acc_zero();
    for (std::int64_t j = 0; j < vec_cols; j += kLanes) {
      const Acc xv = load_x(x + j);
      a0 = fma(load_w(w0 + j), xv, a0);
      a1 = fma(load_w(w1 + j), xv, a1);
      a2 = fma(load_w(w2 + j), xv, a2);
      a3 = fma(load_w(w3 + j), xv, a3);
    }
    float s0 = reduce(a0), s1 = reduce(a1), s2 = reduce(a2), s3 = reduce(a3);
    for (std::int64_t j = vec_cols; j < cols; ++j) {
      s0 += bf16_bits_to_float(w0[j]) * x[j];
      s1 += bf16_bits_to_float(w1[j]) * x[j];
      s2 += bf16_bits_to_float(w2[j]) * x[j];
      s3 += bf16_bits_to_float(w3[j]) * x[j];
    }
    y[r] = s0;
    y[r + 1] = s1;
    y[r + 2] = s2;
    y[r + 3] = s3;
  }
  for (; r < rows; ++r) {
    const std::uint16_t* wr = w + r * cols;
    Acc a = acc_zero();
    for (std::int64_t j = 0; j < vec_cols; j += kLanes) a = fma(load_w(wr + j), load_x(x + j), a);
    float s = reduce(a);
    for (std::int64_t j = vec_cols; j < cols; ++j) s += bf16_bits_to_float(wr[j]) * x[j];
    y[r] = s;
  }
#endif
  for (; r < rows; ++r) {  // builds without the AVX kernels (DecodeWeights never picks bf16 then)
    float s = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) s += bf16_bits_to_float(w[r * cols + j]) * x[j];
    y[r] = s;
  }
}

// Step buffers 64-byte aligned, as tensor storage: Eigen's vectorised reductions (sum, mean,
// max) peel by the address's alignment, so a fixed alignment keeps every step's summation
// order, and with it the results, the same from run to run.
struct FreeFloats {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeFloats>;
Buffer aligned_buffer(std::int64_t n) {
  const std::size_t bytes =
      (static_cast<std::size_t>(std::max<std::int64_t>(n, 1)) * sizeof(float) + 63) / 64 * 64;
  auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return Buffer(p);
}

bool bf16_exact(const Tensor<float>& w) {
  const float* p = w.data();
  for (std::int64_t i = 0; i < w.numel(); ++i) {
    std::uint32_t u;
    std::memcpy(&u, p + i, sizeof u);
    if ((u & 0xFFFFu) != 0) return false;
  }
  return true;
}

// One weight product y = W x (+ b) of a Linear, W (out, in).
struct Product {
  const Linear<float>* linear = nullptr;
  std::int64_t out = 0, in = 0;
  std::vector<std::uint16_t> bf16;  ///< (out, in) bfloat16 copy; empty: W read in place

  void apply(const float* x, float* y) const {
    if (linear->weight_is_bf16()) {  // stored in bfloat16 by the model itself: read in place
      bf16_matvec(linear->weight_bf16.data(), out, in, x, y);
    } else if (!bf16.empty()) {
      bf16_matvec(bf16.data(), out, in, x, y);
    } else {
      VecMap(y, out).noalias() =
          Eigen::Map<const RowMajor>(linear->weight.data(), out, in) * ConstVecMap(x, in);
    }
    if (linear->bias.defined()) VecMap(y, out) += ConstVecMap(linear->bias.data(), out);
  }
};

Product make_product(const Linear<float>& linear, std::int64_t out, std::int64_t in,
                     const std::string& name) {
  const Tensor<float>& w = linear.weight;
  if (linear.weight_is_bf16()) {
    if (linear.weight_bf16.rows() != out || linear.weight_bf16.cols() != in)
      throw std::invalid_argument("neat::nn::TokenDecoder: " + name + ".weight is bf16 (" +
                                  std::to_string(linear.weight_bf16.rows()) + ", " +
                                  std::to_string(linear.weight_bf16.cols()) + "), expected (" +
                                  std::to_string(out) + ", " + std::to_string(in) + ")");
  } else if (w.dim() != 2 || w.shape()[0] != out || w.shape()[1] != in || !w.is_contiguous())
    throw std::invalid_argument("neat::nn::TokenDecoder: " + name + ".weight is " +
                                shape_string(w.shape()) + ", expected a dense (" +
                                std::to_string(out) + ", " + std::to_string(in) + ")");
  if (linear.bias.defined() &&
      (linear.bias.dim() != 1 || linear.bias.shape()[0] != out || !linear.bias.is_contiguous()))
    throw std::invalid_argument("neat::nn::TokenDecoder: " + name + ".bias is " +
                                shape_string(linear.bias.shape()) + ", expected (" +
                                std::to_string(out) + ")");
  return Product{&linear, out, in, {}};
}

void to_bf16(Product& p) {
  const float* w = p.linear->weight.data();
  p.bf16.resize(static_cast<std::size_t>(p.out * p.in));
  for (std::size_t i = 0; i < p.bf16.size(); ++i) {
    p.bf16[i] = detail::float_to_bf16_bits(w[i]);  // exact: the weights are bf16 values
  }
}

// y = x / sqrt(mean(x^2) + eps) * w, as rms_norm.
void rms_norm_row(const float* x, const RMSNorm<float>& norm, std::int64_t n, float* y) {
  Eigen::Map<const Eigen::ArrayXf> xr(x, n);
  const float rstd = 1.0f / std::sqrt(xr.square().mean() + static_cast<float>(norm.eps));
  Eigen::Map<Eigen::ArrayXf>(y, n) =
      xr * rstd * Eigen::Map<const Eigen::ArrayXf>(norm.weight.data(), n);
}

// In place, the order-0 formulas of nn::activation (ops_nn.cpp).
void activate(Activation kind, float* p, std::int64_t n) {
  Eigen::Map<Eigen::ArrayXf> x(p, n);
  switch (kind) {
    case Activation::exp:
      x = x.exp();
      return;
    case Activation::log:
      x = x.log();
      return;
    case Activation::tanh:
      x = x.tanh();
      return;
    case Activation::sigmoid:
      x = (1.0f + (-x).exp()).inverse();
      return;
    case Activation::silu:
      x = x * (1.0f + (-x).exp()).inverse();
      return;
    case Activation::gelu: {
      const float c = 0.7978845608028654f, k = 0.044715f;
      x = 0.5f * x * (1.0f + (c * (x + k * x.cube())).tanh());
      return;
    }
  }
}

void check_norm(const RMSNorm<float>& norm, std::int64_t dim, const std::string& name) {
  if (norm.weight.dim() != 1 || norm.weight.shape()[0] != dim || !norm.weight.is_contiguous())
    throw std::invalid_argument("neat::nn::TokenDecoder: " + name + ".weight is " +
                                shape_string(norm.weight.shape()) + ", expected (" +
                                std::to_string(dim) + ")");
}

}  // namespace

SoftmaxEntropy softmax_entropy(std::span<const float> logits) {
  if (logits.empty()) throw std::invalid_argument("neat::nn::softmax_entropy: empty row of logits");
  const auto n = static_cast<Eigen::Index>(logits.size());
  const float mx = Eigen::Map<const Eigen::ArrayXf>(logits.data(), n).maxCoeff();
  // Chunk by chunk through aligned buffers: the exponentials in float, then both sums over
  // the values widened to double (vectorised reductions; a float expression cast to double on
  // the fly would not vectorise the exponential).
  constexpr Eigen::Index kChunk = 256;
  alignas(64) float shifted[kChunk];
  alignas(64) float e[kChunk];
  alignas(64) double shifted_d[kChunk];
  alignas(64) double e_d[kChunk];
  double sum = 0.0, weighted = 0.0;
  for (Eigen::Index at = 0; at < n; at += kChunk) {
    const Eigen::Index len = std::min(kChunk, n - at);
    Eigen::Map<Eigen::ArrayXf> s(shifted, len), ex(e, len);
    Eigen::Map<Eigen::ArrayXd> sd(shifted_d, len), exd(e_d, len);
    s = Eigen::Map<const Eigen::ArrayXf>(logits.data() + at, len) - mx;
    ex = s.exp();
    sd = s.cast<double>();
    exd = ex.cast<double>();
    sum += exd.sum();
    weighted += (exd * sd).sum();
  }
  const double log_sum = std::log(sum);
  return SoftmaxEntropy{static_cast<double>(mx) + log_sum, log_sum - weighted / sum};
}

struct TokenDecoder::Impl {
  struct Layer {
    Product wq, wk, wv, wo, up, down;
  };
  const TransformerLM<float>& model;
  std::int64_t dim, heads, head_dim, mlp_hidden, vocab, window;
  std::vector<Layer> layers;
  Product lm_head;
  bool bf16 = false;
  // Buffers of one step: residual x, normed input a, query q, attention output, product output,
  // MLP hidden, attention scores over the cache, final hidden state, logits.
  Buffer x, a, q, attended, product, mlp, scores, hidden, logits;
};

TokenDecoder::TokenDecoder(const TransformerLM<float>& model, DecodeWeights weights) {
  const TransformerConfig& c = model.config();
  if (model.blocks.empty())
    throw std::invalid_argument(
        "neat::nn::TokenDecoder: a model without blocks has no KV cache to decode with");
  if (c.heads <= 0 || c.dim % c.heads != 0)
    throw std::invalid_argument("neat::nn::TokenDecoder: dim " + std::to_string(c.dim) +
                                " is not a multiple of " + std::to_string(c.heads) + " heads");
  impl_ = std::make_unique<Impl>(Impl{model,
                                      c.dim,
                                      c.heads,
                                      c.dim / c.heads,
                                      c.mlp_hidden,
                                      c.vocab_size,
                                      c.window,
                                      {},
                                      {},
                                      false,
                                      {},
                                      {},
                                      {},
                                      {},
                                      {},
                                      {},
                                      {},
                                      {},
                                      {}});
  Impl& m = *impl_;
  for (const auto* emb : {&model.tok_emb.weight, &model.pos_emb.weight}) {
    if (emb->dim() != 2 || emb->shape()[1] != c.dim || !emb->is_contiguous())
      throw std::invalid_argument("neat::nn::TokenDecoder: embedding " +
                                  shape_string(emb->shape()) + " is not a dense (n, " +
                                  std::to_string(c.dim) + ")");
  }
  if (model.tok_emb.weight.shape()[0] != c.vocab_size ||
      model.pos_emb.weight.shape()[0] != c.max_seq_len)
    throw std::invalid_argument("neat::nn::TokenDecoder: embeddings do not match the config");
  for (std::size_t l = 0; l < model.blocks.size(); ++l) {
    const auto& b = *model.blocks[l];
    const std::string name = "blocks." + std::to_string(l);
    check_norm(b.norm1, c.dim, name + ".norm1");
    check_norm(b.norm2, c.dim, name + ".norm2");
    if (b.attn.heads != c.heads || b.attn.window != c.window)
      throw std::invalid_argument("neat::nn::TokenDecoder: " + name +
                                  ".attn heads or window differ from the config");
    m.layers.push_back({make_product(b.attn.wq, c.dim, c.dim, name + ".attn.wq"),
                        make_product(b.attn.wk, c.dim, c.dim, name + ".attn.wk"),
                        make_product(b.attn.wv, c.dim, c.dim, name + ".attn.wv"),
                        make_product(b.attn.wo, c.dim, c.dim, name + ".attn.wo"),
                        make_product(b.mlp.up, c.mlp_hidden, c.dim, name + ".mlp.up"),
                        make_product(b.mlp.down, c.dim, c.mlp_hidden, name + ".mlp.down")});
  }
  check_norm(model.norm_f, c.dim, "norm_f");
  m.lm_head = make_product(model.lm_head, c.vocab_size, c.dim, "lm_head");

  std::vector<Product*> products;
  for (auto& layer : m.layers)
    for (Product* p : {&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.up, &layer.down})
      products.push_back(p);
  products.push_back(&m.lm_head);
  if (weights == DecodeWeights::automatic && kBf16Kernel) {
    m.bf16 = std::all_of(products.begin(), products.end(), [](const Product* p) {
      return p->linear->weight_is_bf16() || bf16_exact(p->linear->weight);
    });
    if (m.bf16)
      for (Product* p : products)
        if (!p->linear->weight_is_bf16()) to_bf16(*p);
  }
  m.x = aligned_buffer(c.dim);
  m.a = aligned_buffer(c.dim);
  m.q = aligned_buffer(c.dim);
  m.attended = aligned_buffer(c.dim);
  m.product = aligned_buffer(c.dim);
  m.mlp = aligned_buffer(c.mlp_hidden);
  m.scores = aligned_buffer(c.max_seq_len);
  m.hidden = aligned_buffer(c.dim);
  m.logits = aligned_buffer(c.vocab_size);
}

TokenDecoder::~TokenDecoder() = default;

std::span<const float> TokenDecoder::hidden() const {
  return {impl_->hidden.get(), static_cast<std::size_t>(impl_->dim)};
}
std::span<const float> TokenDecoder::logits() const {
  return {impl_->logits.get(), static_cast<std::size_t>(impl_->vocab)};
}
bool TokenDecoder::bf16_weights() const { return impl_->bf16; }

void TokenDecoder::step(std::int32_t token, std::vector<KVCache<float>>& cache) {
  Impl& m = *impl_;
  const TransformerConfig& c = m.model.config();
  const std::int64_t C = m.dim, D = m.head_dim;
  if (token < 0 || token >= m.vocab)
    throw std::out_of_range("neat::nn::TokenDecoder::step: token " + std::to_string(token) +
                            " is outside the vocabulary [0, " + std::to_string(m.vocab) + ")");
  if (cache.size() != m.layers.size())
    throw std::invalid_argument("neat::nn::TokenDecoder::step: " + std::to_string(cache.size()) +
                                " caches for " + std::to_string(m.layers.size()) + " layers");
  const std::int64_t p = cache.front().length;
  for (const auto& layer : cache) {
    const Shape& s = layer.k.shape();
    if (s.size() != 3 || s[0] != 1 || s[2] != C || layer.v.shape() != s ||
        !layer.k.is_contiguous() || !layer.v.is_contiguous() || layer.length != p)
      throw std::invalid_argument("neat::nn::TokenDecoder::step: cache " + shape_string(s) +
                                  " of length " + std::to_string(layer.length) +
                                  ", expected dense (1, capacity, " + std::to_string(C) +
                                  ") caches of one length");
    if (p >= s[1])
      throw std::length_error("neat::nn::TokenDecoder::step: cache of " + std::to_string(s[1]) +
                              " positions is full");
  }
  if (p >= c.max_seq_len)
    throw std::length_error("neat::nn::TokenDecoder::step: past max_seq_len " +
                            std::to_string(c.max_seq_len));

  VecMap x(m.x.get(), C);
  x = ConstVecMap(m.model.tok_emb.weight.data() + token * C, C) +
      ConstVecMap(m.model.pos_emb.weight.data() + p * C, C);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const std::int64_t lo = m.window > 0 ? std::max<std::int64_t>(0, p - m.window + 1) : 0;
  const std::int64_t n = p - lo + 1;  // cached positions the query sees
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    const auto& block = *m.model.blocks[l];
    const auto& w = m.layers[l];
    KVCache<float>& kv = cache[l];
    float* keys = kv.k.data();
    float* values = kv.v.data();
    // Attention: q, and k, v written straight into the cache row of position p.
    rms_norm_row(m.x.get(), block.norm1, C, m.a.get());
    w.wq.apply(m.a.get(), m.q.get());
    w.wk.apply(m.a.get(), keys + p * C);
    w.wv.apply(m.a.get(), values + p * C);
    for (std::int64_t h = 0; h < m.heads; ++h) {
      VecMap s(m.scores.get(), n);
      s.noalias() = scale * (Strided(keys + lo * C + h * D, n, D, Eigen::OuterStride<>(C)) *
                             ConstVecMap(m.q.get() + h * D, D));
      s = (s.array() - s.maxCoeff()).exp();
      s /= s.sum();
      VecMap(m.attended.get() + h * D, D).noalias() =
          Strided(values + lo * C + h * D, n, D, Eigen::OuterStride<>(C)).transpose() * s;
    }
    w.wo.apply(m.attended.get(), m.product.get());
    x += ConstVecMap(m.product.get(), C);
    // MLP.
    rms_norm_row(m.x.get(), block.norm2, C, m.a.get());
    w.up.apply(m.a.get(), m.mlp.get());
    activate(block.mlp.activation, m.mlp.get(), m.mlp_hidden);
    w.down.apply(m.mlp.get(), m.product.get());
    x += ConstVecMap(m.product.get(), C);
    kv.length = p + 1;
  }
  rms_norm_row(m.x.get(), m.model.norm_f, C, m.hidden.get());
  m.lm_head.apply(m.hidden.get(), m.logits.get());
}

}  // namespace neat::nn
