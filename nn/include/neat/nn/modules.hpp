// Modules with named parameters: Linear, Embedding, RMSNorm, LayerNorm, MLP,
// CausalSelfAttention (with a KV cache), TransformerBlock and a decoder-only TransformerLM.
// Names are dotted paths ("blocks.0.attn.wq.weight") used by checkpoints and the coordinator.
// Invariant: a module registers pointers to its own members, so modules are neither copied nor
// moved; hold them by value in their parent or by unique_ptr.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "neat/nn/bf16_weights.hpp"
#include "neat/nn/ops.hpp"
#include "neat/nn/tensor.hpp"

namespace neat::nn {

// --- initialisation schemes (in place, no history) ---
template <typename T>
void init_normal(Tensor<T>& t, std::mt19937_64& rng, double stddev);
template <typename T>
void init_uniform(Tensor<T>& t, std::mt19937_64& rng, double bound);  // U(-bound, bound)
// Glorot & Bengio 2010: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) for a (out, in) weight.
template <typename T>
void init_xavier_uniform(Tensor<T>& t, std::mt19937_64& rng);
template <typename T>
void init_constant(Tensor<T>& t, T value);

template <typename T>
class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter (trainable or frozen) with its dotted name, in registration order.
  std::vector<std::pair<std::string, Tensor<T>>> named_parameters() const;
  std::vector<Tensor<T>> parameters() const;            // all
  std::vector<Tensor<T>> trainable_parameters() const;  // requires_grad only
  int64_t parameter_count() const;

  // Freezing: a frozen parameter gets no gradient and optimizers skip it.
  void set_trainable(bool trainable);
  void zero_grad();

 protected:
  // Registers a member tensor (marked requires_grad) under name; the member must outlive this.
  void register_parameter(std::string name, Tensor<T>& parameter);
  void register_module(std::string name, Module<T>& child);

 private:
  void collect(const std::string& prefix,
               std::vector<std::pair<std::string, Tensor<T>>>& out) const;
  std::vector<std::pair<std::string, Tensor<T>*>> parameters_;
  std::vector<std::pair<std::string, Module<T>*>> children_;
};

// y = x W^T + b. x (..., in) -> (..., out); weight (out, in) as in PyTorch.
// Init: weight N(0, init_std), bias 0.
// Weight storage: T (`weight`, the default) or, for inference, bfloat16 (`weight_bf16`, after
// store_weight_bf16(); products computed in float32 by bf16_linear, bf16_weights.hpp).
template <typename T>
class Linear : public Module<T> {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, std::mt19937_64& rng,
         double init_std = 0.02);
  // linear(x, weight, bias), or bf16_linear(x, weight_bf16, bias) when the weight is stored in
  // bfloat16 (then inference only: std::logic_error when grad mode is on and x or the weight
  // placeholder requires a gradient).
  Tensor<T> forward(const Tensor<T>& x) const;

  // Rounds the weight to bfloat16 (nearest even) and stores it in weight_bf16: 2 bytes per
  // value instead of sizeof(T), counted by memory_stats(). `weight` then becomes a shape-only
  // placeholder: the same (out, in) shape as a broadcast view of one NaN (4 bytes, strides 0,
  // frozen), so parameter walks (named_parameters, parameter_count) still see the parameter,
  // code that needs a dense float weight rejects it (t2::apply_weights: not contiguous;
  // t2::ModelFactors::decompose: not finite), and a value read through it is NaN, never a
  // stale number. TokenDecoder reads weight_bf16 in place.
  // Lossless for bfloat16-exact weights (bf16_representable). Only for Linear<float>:
  // Linear<double> (gradient checks) throws std::logic_error; throws std::logic_error too for a
  // weight that is not a 2-D tensor. A second call does nothing.
  void store_weight_bf16();
  bool weight_is_bf16() const { return weight_bf16.defined(); }

  Tensor<T> weight;
  Tensor<T> bias;          // undefined without bias
  Bf16Matrix weight_bf16;  // empty unless store_weight_bf16() was called
};

// Token embedding: indices (N) shaped index_shape -> index_shape + (dim). Init N(0, init_std).
template <typename T>
class Embedding : public Module<T> {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, std::mt19937_64& rng, double init_std = 0.02);
  Tensor<T> forward(const std::vector<int32_t>& indices, const Shape& index_shape) const;
  Tensor<T> weight;  // (num_embeddings, dim)
};

template <typename T>
class RMSNorm : public Module<T> {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-5);
  Tensor<T> forward(const Tensor<T>& x) const;  // (..., dim)
  Tensor<T> weight;                             // (dim), init 1
  double eps;
};

template <typename T>
class LayerNorm : public Module<T> {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Tensor<T> forward(const Tensor<T>& x) const;  // (..., dim)
  Tensor<T> weight;                             // (dim), init 1
  Tensor<T> bias;                               // (dim), init 0
  double eps;
};

// Position-wise feed-forward: down(act(up(x))), up (dim -> hidden), down (hidden -> dim).
template <typename T>
class MLP : public Module<T> {
 public:
  MLP(int64_t dim, int64_t hidden, Activation activation, std::mt19937_64& rng,
      double down_init_std = 0.02);
  Tensor<T> forward(const Tensor<T>& x) const;
  Linear<T> up;
  Linear<T> down;
  Activation activation;
};

// Keys and values of the positions decoded so far, for one attention layer.
// k, v: (B, capacity, C); length: positions filled.
template <typename T>
struct KVCache {
  Tensor<T> k;
  Tensor<T> v;
  int64_t length = 0;
};

// Causal multi-head self-attention (Vaswani et al. 2017) with projections wq, wk, wv, wo
// (no bias) and an optional sliding window (0 = full causal).
template <typename T>
class CausalSelfAttention : public Module<T> {
 public:
  CausalSelfAttention(int64_t dim, int64_t heads, int64_t window, std::mt19937_64& rng,
                      double out_init_std = 0.02);
  // x (B, T, C) -> (B, T, C), recorded for training.
  Tensor<T> forward(const Tensor<T>& x) const;
  // Incremental decoding without history: x (B, T_new, C) are the next positions; their keys
  // and values are appended to cache. Throws std::length_error when the cache is full.
  Tensor<T> forward_cached(const Tensor<T>& x, KVCache<T>& cache) const;
  KVCache<T> make_cache(int64_t batch, int64_t capacity) const;
  Linear<T> wq, wk, wv, wo;
  int64_t heads;
  int64_t window;
};

struct TransformerConfig {
  int64_t vocab_size = 256;
  int64_t dim = 256;
  int64_t layers = 4;
  int64_t heads = 4;
  int64_t mlp_hidden = 1024;
  int64_t max_seq_len = 256;
  int64_t window = 0;  // 0 = full causal attention
  Activation activation = Activation::gelu;
  double norm_eps = 1e-5;
  uint64_t seed = 1234;
};

// Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(x)).
template <typename T>
class TransformerBlock : public Module<T> {
 public:
  TransformerBlock(const TransformerConfig& config, std::mt19937_64& rng);
  Tensor<T> forward(const Tensor<T>& x) const;                            // (B, T, C)
  Tensor<T> forward_cached(const Tensor<T>& x, KVCache<T>& cache) const;  // (B, T_new, C)
  RMSNorm<T> norm1;
  CausalSelfAttention<T> attn;
  RMSNorm<T> norm2;
  MLP<T> mlp;
};

// Decoder-only LM: tok_emb + pos_emb, blocks.0..L-1, norm_f, lm_head (no bias).
// Parameter names: "tok_emb.weight", "pos_emb.weight", "blocks.<i>.attn.wq.weight", ...
// Init as GPT-2: N(0, 0.02); residual output projections N(0, 0.02 / sqrt(2 L)).
template <typename T>
class TransformerLM : public Module<T> {
 public:
  explicit TransformerLM(const TransformerConfig& config);
  // tokens (B * T) row-major -> logits (B, T, vocab). Throws std::invalid_argument when
  // T > max_seq_len or tokens.size() != B * T.
  Tensor<T> forward(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq_len) const;
  // Mean next-token cross-entropy in nats (targets = tokens shifted by one, given explicitly).
  Tensor<T> loss(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets,
                 int64_t batch, int64_t seq_len) const;
  std::vector<KVCache<T>> make_cache(int64_t batch) const;  // capacity max_seq_len
  // Incremental decoding (no history): tokens (B * T_new) at the next positions ->
  // logits (B, T_new, vocab).
  Tensor<T> forward_cached(const std::vector<int32_t>& tokens, int64_t batch,
                           std::vector<KVCache<T>>& cache) const;

  // Called after block `layer` (0-based) with its output x (B, T, C); returns what the next
  // block (or norm_f) receives. Lets a caller add to the residual stream at a chosen layer
  // (e.g. a memory readout through a gate, Titans MAG) while the graph stays differentiable.
  using BlockHook = std::function<Tensor<T>(int64_t layer, const Tensor<T>& x)>;
  // Final hidden states norm_f(x_L) (B, T, C): the input of lm_head, the representation that
  // BLT pools into patch latents. forward() == lm_head(hidden()). Same errors as forward().
  Tensor<T> hidden(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq_len,
                   const BlockHook& hook = {}) const;
  // Incremental hidden states (B, T_new, C), as forward_cached (no gradient recorded).
  Tensor<T> hidden_cached(const std::vector<int32_t>& tokens, int64_t batch,
                          std::vector<KVCache<T>>& cache, const BlockHook& hook = {}) const;
  const TransformerConfig& config() const { return config_; }

 private:
  TransformerConfig config_;
  std::mt19937_64 rng_;

 public:
  Embedding<T> tok_emb;
  Embedding<T> pos_emb;
  std::vector<std::unique_ptr<TransformerBlock<T>>> blocks;
  RMSNorm<T> norm_f;
  Linear<T> lm_head;
};

extern template class Module<float>;
extern template class Module<double>;
extern template class TransformerLM<float>;
extern template class TransformerLM<double>;

}  // namespace neat::nn
