// Modules: parameter registration and naming, layers, and the decoder-only TransformerLM with
// its KV-cache decoding path.
#include "neat/nn/modules.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "internal.hpp"

namespace neat::nn {

// ---------------------------------------------------------------- init

template <typename T>
void init_normal(Tensor<T>& t, std::mt19937_64& rng, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  T* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(dist(rng));
}

template <typename T>
void init_uniform(Tensor<T>& t, std::mt19937_64& rng, double bound) {
  std::uniform_real_distribution<double> dist(-bound, bound);
  T* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(dist(rng));
}

template <typename T>
void init_xavier_uniform(Tensor<T>& t, std::mt19937_64& rng) {
  if (t.dim() != 2)
    throw std::invalid_argument("neat::nn::init_xavier_uniform: needs a 2-D weight, got " +
                                shape_string(t.shape()));
  init_uniform(t, rng, std::sqrt(6.0 / static_cast<double>(t.shape()[0] + t.shape()[1])));
}

template <typename T>
void init_constant(Tensor<T>& t, T value) {
  std::fill_n(t.data(), t.numel(), value);
}

// ---------------------------------------------------------------- Module

template <typename T>
void Module<T>::register_parameter(std::string name, Tensor<T>& parameter) {
  parameter.set_requires_grad(true);
  parameters_.emplace_back(std::move(name), &parameter);
}

template <typename T>
void Module<T>::register_module(std::string name, Module<T>& child) {
  children_.emplace_back(std::move(name), &child);
}

template <typename T>
void Module<T>::collect(const std::string& prefix,
                        std::vector<std::pair<std::string, Tensor<T>>>& out) const {
  for (const auto& [name, p] : parameters_) out.emplace_back(prefix + name, *p);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

template <typename T>
std::vector<std::pair<std::string, Tensor<T>>> Module<T>::named_parameters() const {
  std::vector<std::pair<std::string, Tensor<T>>> out;
  collect("", out);
  return out;
}

template <typename T>
std::vector<Tensor<T>> Module<T>::parameters() const {
  std::vector<Tensor<T>> out;
  for (auto& [name, p] : named_parameters()) out.push_back(p);
  return out;
}

template <typename T>
std::vector<Tensor<T>> Module<T>::trainable_parameters() const {
  std::vector<Tensor<T>> out;
  for (auto& [name, p] : named_parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

template <typename T>
int64_t Module<T>::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, p] : named_parameters()) n += p.numel();
  return n;
}

template <typename T>
void Module<T>::set_trainable(bool trainable) {
  for (auto& [name, p] : named_parameters()) {
    Tensor<T> t = p;
    t.set_requires_grad(trainable);
    if (!trainable) t.zero_grad();
  }
}

template <typename T>
void Module<T>::zero_grad() {
  for (auto& [name, p] : named_parameters()) {
    Tensor<T> t = p;
    t.zero_grad();
  }
}

// ---------------------------------------------------------------- layers

template <typename T>
Linear<T>::Linear(int64_t in_features, int64_t out_features, bool with_bias, std::mt19937_64& rng,
                  double init_std) {
  weight = Tensor<T>::zeros({out_features, in_features});
  init_normal(weight, rng, init_std);
  this->register_parameter("weight", weight);
  if (with_bias) {
    bias = Tensor<T>::zeros({out_features});
    this->register_parameter("bias", bias);
  }
}

template <typename T>
Tensor<T> Linear<T>::forward(const Tensor<T>& x) const {
  if constexpr (std::is_same_v<T, float>) {
    if (weight_bf16.defined()) {
      if (grad_enabled() && weight.requires_grad())
        throw std::logic_error(
            "neat::nn::Linear: a gradient was requested for a bfloat16-stored weight; bf16 "
            "weights are for inference only (store the model in float32 to train it)");
      return bf16_linear(x, weight_bf16, bias);
    }
  }
  return linear(x, weight, bias);
}

template <typename T>
void Linear<T>::store_weight_bf16() {
  if constexpr (!std::is_same_v<T, float>) {
    throw std::logic_error(
        "neat::nn::Linear::store_weight_bf16: bfloat16 storage is for "
        "Linear<float> weights only");
  } else {
    if (weight_bf16.defined()) return;
    if (!weight.defined() || weight.dim() != 2)
      throw std::logic_error("neat::nn::Linear::store_weight_bf16: the weight is not a 2-D tensor");
    weight_bf16 = Bf16Matrix::from_float(weight);
    const Tensor<T> nan = Tensor<T>::full({1}, std::numeric_limits<T>::quiet_NaN());
    weight = detail::make_view(nan, weight.shape(), Shape{0, 0}, 0);
    weight.set_requires_grad(false);
  }
}

template <typename T>
Embedding<T>::Embedding(int64_t num_embeddings, int64_t dim, std::mt19937_64& rng,
                        double init_std) {
  weight = Tensor<T>::zeros({num_embeddings, dim});
  init_normal(weight, rng, init_std);
  this->register_parameter("weight", weight);
}

template <typename T>
Tensor<T> Embedding<T>::forward(const std::vector<int32_t>& indices,
                                const Shape& index_shape) const {
  return gather_rows(weight, indices, index_shape);
}

template <typename T>
RMSNorm<T>::RMSNorm(int64_t dim, double eps_in) : eps(eps_in) {
  weight = Tensor<T>::full({dim}, T(1));
  this->register_parameter("weight", weight);
}

template <typename T>
Tensor<T> RMSNorm<T>::forward(const Tensor<T>& x) const {
  return rms_norm(x, weight, static_cast<T>(eps));
}

template <typename T>
LayerNorm<T>::LayerNorm(int64_t dim, double eps_in) : eps(eps_in) {
  weight = Tensor<T>::full({dim}, T(1));
  bias = Tensor<T>::zeros({dim});
  this->register_parameter("weight", weight);
  this->register_parameter("bias", bias);
}

template <typename T>
Tensor<T> LayerNorm<T>::forward(const Tensor<T>& x) const {
  return layer_norm(x, weight, bias, static_cast<T>(eps));
}

template <typename T>
MLP<T>::MLP(int64_t dim, int64_t hidden, Activation act, std::mt19937_64& rng, double down_init_std)
    : up(dim, hidden, true, rng), down(hidden, dim, true, rng, down_init_std), activation(act) {
  this->register_module("up", up);
  this->register_module("down", down);
}

template <typename T>
Tensor<T> MLP<T>::forward(const Tensor<T>& x) const {
  return down.forward(nn::activation(up.forward(x), activation, 0));
}

template <typename T>
CausalSelfAttention<T>::CausalSelfAttention(int64_t dim, int64_t heads_in, int64_t window_in,
                                            std::mt19937_64& rng, double out_init_std)
    : wq(dim, dim, false, rng),
      wk(dim, dim, false, rng),
      wv(dim, dim, false, rng),
      wo(dim, dim, false, rng, out_init_std),
      heads(heads_in),
      window(window_in) {
  if (heads <= 0 || dim % heads != 0)
    throw std::invalid_argument("neat::nn::CausalSelfAttention: dim " + std::to_string(dim) +
                                " is not a multiple of " + std::to_string(heads) + " heads");
  this->register_module("wq", wq);
  this->register_module("wk", wk);
  this->register_module("wv", wv);
  this->register_module("wo", wo);
}

template <typename T>
Tensor<T> CausalSelfAttention<T>::forward(const Tensor<T>& x) const {
  const Tensor<T> q = wq.forward(x), k = wk.forward(x), v = wv.forward(x);
  return wo.forward(causal_attention(q, k, v, heads, window));
}

template <typename T>
KVCache<T> CausalSelfAttention<T>::make_cache(int64_t batch, int64_t capacity) const {
  const int64_t dim = wq.weight.shape()[0];
  return KVCache<T>{Tensor<T>::zeros({batch, capacity, dim}),
                    Tensor<T>::zeros({batch, capacity, dim}), 0};
}

template <typename T>
Tensor<T> CausalSelfAttention<T>::forward_cached(const Tensor<T>& x, KVCache<T>& cache) const {
  NoGradGuard no_grad;
  const int64_t B = x.shape()[0], Tn = x.shape()[1], C = x.shape()[2];
  const int64_t capacity = cache.k.shape()[1];
  if (cache.k.shape()[0] != B || cache.k.shape()[2] != C)
    throw std::invalid_argument("neat::nn::CausalSelfAttention::forward_cached: cache " +
                                shape_string(cache.k.shape()) + " for input " +
                                shape_string(x.shape()));
  if (cache.length + Tn > capacity)
    throw std::length_error("neat::nn::CausalSelfAttention::forward_cached: cache of " +
                            std::to_string(capacity) + " positions is full");
  const Tensor<T> q = wq.forward(x), k = wk.forward(x), v = wv.forward(x);
  for (int64_t b = 0; b < B; ++b) {
    std::memcpy(cache.k.data() + (b * capacity + cache.length) * C, k.data() + b * Tn * C,
                Tn * C * sizeof(T));
    std::memcpy(cache.v.data() + (b * capacity + cache.length) * C, v.data() + b * Tn * C,
                Tn * C * sizeof(T));
  }
  cache.length += Tn;
  const Tensor<T> keys = slice(cache.k, 1, 0, cache.length);
  const Tensor<T> values = slice(cache.v, 1, 0, cache.length);
  return wo.forward(causal_attention(q, keys, values, heads, window));
}

template <typename T>
TransformerBlock<T>::TransformerBlock(const TransformerConfig& c, std::mt19937_64& rng)
    : norm1(c.dim, c.norm_eps),
      attn(c.dim, c.heads, c.window, rng, 0.02 / std::sqrt(2.0 * static_cast<double>(c.layers))),
      norm2(c.dim, c.norm_eps),
      mlp(c.dim, c.mlp_hidden, c.activation, rng,
          0.02 / std::sqrt(2.0 * static_cast<double>(c.layers))) {
  this->register_module("norm1", norm1);
  this->register_module("attn", attn);
  this->register_module("norm2", norm2);
  this->register_module("mlp", mlp);
}

template <typename T>
Tensor<T> TransformerBlock<T>::forward(const Tensor<T>& x) const {
  const Tensor<T> h = add(x, attn.forward(norm1.forward(x)));
  return add(h, mlp.forward(norm2.forward(h)));
}

template <typename T>
Tensor<T> TransformerBlock<T>::forward_cached(const Tensor<T>& x, KVCache<T>& cache) const {
  NoGradGuard no_grad;
  const Tensor<T> h = add(x, attn.forward_cached(norm1.forward(x), cache));
  return add(h, mlp.forward(norm2.forward(h)));
}

// ---------------------------------------------------------------- TransformerLM

template <typename T>
TransformerLM<T>::TransformerLM(const TransformerConfig& c)
    : config_(c),
      rng_(c.seed),
      tok_emb(c.vocab_size, c.dim, rng_),
      pos_emb(c.max_seq_len, c.dim, rng_),
      norm_f(c.dim, c.norm_eps),
      lm_head(c.dim, c.vocab_size, false, rng_) {
  this->register_module("tok_emb", tok_emb);
  this->register_module("pos_emb", pos_emb);
  for (int64_t i = 0; i < c.layers; ++i) {
    blocks.push_back(std::make_unique<TransformerBlock<T>>(c, rng_));
    this->register_module("blocks." + std::to_string(i), *blocks.back());
  }
  this->register_module("norm_f", norm_f);
  this->register_module("lm_head", lm_head);
}

template <typename T>
Tensor<T> TransformerLM<T>::forward(const std::vector<int32_t>& tokens, int64_t batch,
                                    int64_t seq_len) const {
  return lm_head.forward(hidden(tokens, batch, seq_len));
}

template <typename T>
Tensor<T> TransformerLM<T>::hidden(const std::vector<int32_t>& tokens, int64_t batch,
                                   int64_t seq_len, const BlockHook& hook) const {
  if (seq_len > config_.max_seq_len || static_cast<int64_t>(tokens.size()) != batch * seq_len)
    throw std::invalid_argument(
        "neat::nn::TransformerLM::forward: " + std::to_string(tokens.size()) +
        " tokens for batch " + std::to_string(batch) + " x " + std::to_string(seq_len) +
        " (max_seq_len " + std::to_string(config_.max_seq_len) + ")");
  std::vector<int32_t> positions(seq_len);
  for (int64_t t = 0; t < seq_len; ++t) positions[t] = static_cast<int32_t>(t);
  Tensor<T> x =
      add(tok_emb.forward(tokens, {batch, seq_len}), pos_emb.forward(positions, {seq_len}));
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    x = blocks[i]->forward(x);
    if (hook) x = hook(static_cast<int64_t>(i), x);
  }
  return norm_f.forward(x);
}

template <typename T>
Tensor<T> TransformerLM<T>::loss(const std::vector<int32_t>& tokens,
                                 const std::vector<int32_t>& targets, int64_t batch,
                                 int64_t seq_len) const {
  return cross_entropy(forward(tokens, batch, seq_len), targets);
}

template <typename T>
std::vector<KVCache<T>> TransformerLM<T>::make_cache(int64_t batch) const {
  std::vector<KVCache<T>> cache;
  for (const auto& block : blocks)
    cache.push_back(block->attn.make_cache(batch, config_.max_seq_len));
  return cache;
}

template <typename T>
Tensor<T> TransformerLM<T>::forward_cached(const std::vector<int32_t>& tokens, int64_t batch,
                                           std::vector<KVCache<T>>& cache) const {
  return lm_head.forward(hidden_cached(tokens, batch, cache));
}

template <typename T>
Tensor<T> TransformerLM<T>::hidden_cached(const std::vector<int32_t>& tokens, int64_t batch,
                                          std::vector<KVCache<T>>& cache,
                                          const BlockHook& hook) const {
  NoGradGuard no_grad;
  if (cache.size() != blocks.size() || batch <= 0 || tokens.size() % batch != 0)
    throw std::invalid_argument("neat::nn::TransformerLM::forward_cached: cache or batch mismatch");
  const int64_t Tn = static_cast<int64_t>(tokens.size()) / batch;
  const int64_t start = cache[0].length;
  if (start + Tn > config_.max_seq_len)
    throw std::length_error("neat::nn::TransformerLM::forward_cached: past max_seq_len " +
                            std::to_string(config_.max_seq_len));
  std::vector<int32_t> positions(Tn);
  for (int64_t t = 0; t < Tn; ++t) positions[t] = static_cast<int32_t>(start + t);
  Tensor<T> x = add(tok_emb.forward(tokens, {batch, Tn}), pos_emb.forward(positions, {Tn}));
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    x = blocks[i]->forward_cached(x, cache[i]);
    if (hook) x = hook(static_cast<int64_t>(i), x);
  }
  return norm_f.forward(x);
}

#define NEAT_NN_INSTANTIATE(T)                                      \
  template void init_normal(Tensor<T>&, std::mt19937_64&, double);  \
  template void init_uniform(Tensor<T>&, std::mt19937_64&, double); \
  template void init_xavier_uniform(Tensor<T>&, std::mt19937_64&);  \
  template void init_constant(Tensor<T>&, T);                       \
  template class Module<T>;                                         \
  template class Linear<T>;                                         \
  template class Embedding<T>;                                      \
  template class RMSNorm<T>;                                        \
  template class LayerNorm<T>;                                      \
  template class MLP<T>;                                            \
  template class CausalSelfAttention<T>;                            \
  template class TransformerBlock<T>;                               \
  template class TransformerLM<T>;

NEAT_NN_INSTANTIATE(float)
NEAT_NN_INSTANTIATE(double)

}  // namespace neat::nn
