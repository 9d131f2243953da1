// Single-position decoding of a TransformerLM<float> at batch 1: the inner loop of streaming
// inference (one new token, its keys and values appended to the KV cache, the next-token
// logits), written without tensors. Each step runs on buffers allocated once, the 6 L + 1 weight
// products are matrix-vector products over the (out, in) weights, and the attention of the one
// query over the cache is computed directly. It is the same model as
// TransformerLM::forward_cached / hidden_cached with one token (equal up to float summation
// order; tested), and it shares their KVCache, so a caller can mix both on one cache.
//
// Invariant: a decoder never changes the model; it keeps either pointers to the model's float32
// weights (read at every step) or, when every weight of a product is exactly a bfloat16 value
// (a model loaded from a bf16 checkpoint), a bfloat16 copy of the products' weights taken at
// construction, which halves the bytes each step streams from memory and gives the same
// products bit for bit before summation.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "neat/nn/modules.hpp"

namespace neat::nn {

/// How a TokenDecoder holds the weights of its matrix-vector products. A Linear whose weight
/// the model itself stores in bfloat16 (Linear::store_weight_bf16) is always read in place
/// from that storage, with no copy, whichever is chosen.
enum class DecodeWeights : std::uint8_t {
  /// bfloat16 copies when every weight of the model's products is exactly representable in
  /// bfloat16 (widening back gives the same float) and the build has the AVX2 or AVX-512 kernel
  /// for them; otherwise the model's float32 weights in place.
  automatic,
  /// Always the model's float32 weights in place (read at every step, no copy).
  f32,
};

/// Log-partition and entropy of one row of logits z (V values, nats), the next-token
/// distribution p = softmax(z) (BLT eq. 2): log Z = log sum_v exp z_v and
/// H = -sum_v p_v ln p_v = log Z - sum_v p_v z_v. The exponentials of the max-shifted row are
/// taken in float (vectorised), their sums accumulated in double; agrees with an all-double
/// computation to about 1e-6 relative. Throws std::invalid_argument for an empty row.
struct SoftmaxEntropy {
  double log_partition = 0.0;
  double entropy = 0.0;
};
SoftmaxEntropy softmax_entropy(std::span<const float> logits);

/// Decodes one position at a time through a TransformerLM<float> at batch 1 with its KV cache.
/// Not thread-safe; the model must outlive the decoder.
class TokenDecoder {
 public:
  /// Prepares the buffers (and, for bfloat16 weights, the copies) for `model`. With
  /// DecodeWeights::automatic and bfloat16-exact weights the copies are taken now: changing
  /// the model's weights afterwards needs a new decoder. The copies and the step buffers are
  /// plain aligned allocations, not tensors, so memory_stats does not count them (bfloat16:
  /// 2 bytes per weight of the 6 L + 1 products). Throws std::invalid_argument when a
  /// weight is not a dense (out, in) matrix of the model's configured sizes, or the model has
  /// no blocks.
  explicit TokenDecoder(const TransformerLM<float>& model,
                        DecodeWeights weights = DecodeWeights::automatic);
  ~TokenDecoder();
  TokenDecoder(const TokenDecoder&) = delete;
  TokenDecoder& operator=(const TokenDecoder&) = delete;

  /// Decodes `token` at position p = cache[0].length (Vaswani et al. 2017, decoder with
  /// learned positions; pre-norm blocks as TransformerBlock):
  ///   x = tok_emb[token] + pos_emb[p];
  ///   per block: x += W_o attn(q, K, V), q = W_q n1(x), (k, v) = (W_k n1(x), W_v n1(x))
  ///              appended to the cache, attn = softmax(q K^T / sqrt(d_head)) V per head over
  ///              the cached positions (the last `window` ones when the model has a window);
  ///              x += W_down act(W_up n2(x) + b_up) + b_down;
  ///   hidden = norm_f(x) (dim floats), logits = W_lm hidden (vocab floats).
  /// `cache`: one KVCache per layer, each (1, capacity, dim) with the same length (as
  /// TransformerLM::make_cache(1) or CausalSelfAttention::make_cache(1, capacity) make them);
  /// every length grows by one. Throws std::out_of_range for a token outside [0, vocab),
  /// std::invalid_argument for a cache of the wrong count or shape, std::length_error when a
  /// cache is full or p reaches max_seq_len; nothing is changed then.
  void step(std::int32_t token, std::vector<KVCache<float>>& cache);

  /// norm_f(x_L) of the last step, dim floats; valid until the next step.
  std::span<const float> hidden() const;
  /// Next-token logits of the last step, vocab floats; valid until the next step.
  std::span<const float> logits() const;
  /// Whether the products read bfloat16 copies of the weights (see DecodeWeights).
  bool bf16_weights() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace neat::nn
