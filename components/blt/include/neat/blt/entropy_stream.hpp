// Incremental next-token entropies of the BLT entropy model (Pagnoni et al. 2024, §2.3, eq. 2)
// over a token stream, with the KV cache: each pushed token costs one cached forward step of
// the byte LM (no quadratic re-run). One code path for next_token_entropies, `neat blt patch`
// and the `blt` component.
//
// Invariant: position k of a document is decoded with a context that starts at the last
// restart before k; restarts happen at a document boundary (reset()) and every `context`
// positions (the model's max_seq_len, or fewer when the window was shortened), exactly like
// the fixed windows of next_token_entropies_batch, so stream and batch give the same numbers
// up to float rounding.
//
// Two paths, the same model: a push of few tokens (bytes arriving one at a time) decodes each
// position with nn::TokenDecoder (matrix-vector products, no tensors per token); a longer push
// decodes each context window as one cached forward call (TransformerLM::hidden_cached, one
// GEMM per weight).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "neat/nn/decode.hpp"
#include "neat/nn/modules.hpp"

namespace neat::blt {

/// Log-sum-exp and entropy of one row of logits z (length V): log Z = log sum_v exp z_v and
/// H = -sum_v p_v ln p_v = log Z - sum_v p_v z_v, nats, with p = softmax(z) (BLT eq. 2).
/// Computed in double from the max-shifted row. Requires a non-empty row.
struct LogitRowStats {
  double logsumexp = 0.0;
  double entropy = 0.0;
};
LogitRowStats logit_row_stats(std::span<const float> logits);

/// What push() computes for each pushed token k (appended, one entry per token).
struct EntropyStreamOutput {
  /// H_k = -sum_v p_k(v) ln p_k(v), nats: entropy of the next-token distribution predicted at
  /// position k (for token k + 1) (BLT eq. 2).
  std::vector<double> entropies;
  /// ln p(token k | tokens before k), nats, under the prediction made at position k - 1 (the
  /// log-probability of the actual next token of position k - 1); NaN for position 0 of a
  /// document, which nothing predicts.
  std::vector<double> log_probs;
  /// Final hidden states norm_f(x_L) at each position, row-major [tokens, dim] (the input of
  /// the LM head; BLT pools them into patch latents).
  std::vector<float> hidden;
  void clear();
};

/// Decodes one document at a time through a byte LM, keeping the KV cache between calls.
/// The model must outlive the stream and keep its weights while the stream decodes: the
/// token-at-a-time path may hold a bfloat16 copy of them (nn::TokenDecoder, taken at the first
/// short push; half the float32 weights' bytes, outside the tensors that memory_stats counts).
/// Not thread-safe (one stream per thread).
class EntropyStream {
 public:
  /// `context`: positions per context window, in [1, model max_seq_len]; 0 selects the model's
  /// max_seq_len. Throws std::invalid_argument outside that range.
  explicit EntropyStream(const nn::TransformerLM<float>& model, std::int64_t context = 0);

  /// Pushes of fewer than this many tokens (within one context window) decode position by
  /// position with nn::TokenDecoder; longer ones as one forward call per context window.
  static constexpr std::size_t kTokenDecoderBelow = 4;

  /// Decodes the next tokens of the current document (any count, including windows longer than
  /// the context) and appends one entry per token to `out`: entropies with
  /// nn::softmax_entropy (float exponentials, double sums). Throws std::out_of_range naming
  /// the offending token when a token is outside [0, vocab_size); nothing is decoded then.
  void push(std::span<const std::int32_t> tokens, EntropyStreamOutput& out);

  /// Document boundary: the next token is position 0 of a new document (fresh context, no
  /// prediction for it).
  void reset();

  /// Shortens (or restores) the context window: from the next window on, the context restarts
  /// every `context` positions (0: the model's max_seq_len). The KV cache is reallocated with
  /// that capacity, so a shorter window also holds less memory. Starts a new context window at
  /// the next position (the document continues). Throws std::invalid_argument as the
  /// constructor.
  void set_context(std::int64_t context);
  std::int64_t context() const { return context_; }
  /// Tokens pushed since the last reset().
  std::int64_t position() const { return position_; }
  const nn::TransformerLM<float>& model() const { return model_; }

 private:
  const nn::TransformerLM<float>& model_;
  std::int64_t context_ = 0;
  std::int64_t position_ = 0;
  std::vector<nn::KVCache<float>> cache_;
  std::unique_ptr<nn::TokenDecoder> decoder_;  ///< made at the first short push
  std::vector<float> last_logits_;  ///< prediction made at the last position (vocab floats)
  double last_logsumexp_ = 0.0;     ///< log Z of last_logits_

  /// Appends the entries of one decoded position (its token, hidden state and logits).
  void record(std::int32_t token, std::span<const float> hidden, std::span<const float> logits,
              EntropyStreamOutput& out);
};

}  // namespace neat::blt
