// The byte LM of BLT (Pagnoni et al. 2024, §3.1: the small entropy model): a causal transformer
// over the unified token space of DESIGN.md, trained on the prepared corpora (`neat train blt`),
// and the next-token entropies it gives for patching (§2.3, eq. 2).
//
// Tokens: 0..255 bytes, 256 BOS, 257 EOS, 258 PAD, 259 BOI, 260 EOI, 261.. image codes. A
// document is BOS, its bytes, EOS. Bits per byte = (sum over the document's byte targets of
// -ln p) / (bytes x ln 2); the EOS target is not a byte and is not counted.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "neat/config/schema.hpp"
#include "neat/nn/modules.hpp"

namespace neat::blt {

inline constexpr std::int32_t kBos = 256, kEos = 257, kPad = 258, kBoi = 259, kEoi = 260;
inline constexpr std::int32_t kFirstImageCode = 261;

/// Everything `neat train blt` reads from configs/train/blt.yaml.
struct ByteLMTrainOptions {
  nn::TransformerConfig model;  ///< vocab_size = 261 + image codebook size
  std::int64_t steps = 2000;    ///< optimizer steps
  std::int64_t batch = 16;      ///< sequences per step
  double lr = 3e-3, min_lr = 3e-4, weight_decay = 0.01, clip = 1.0;
  std::int64_t warmup = 100;         ///< linear warm-up steps, then cosine to min_lr
  std::int64_t eval_every = 200;     ///< steps between validations
  std::uint64_t eval_bytes = 65536;  ///< bytes of the validation split scored per validation
  std::uint64_t seed = 1;
  int threads = 0;  ///< 0: all usable cores
  std::filesystem::path corpus = "data/corpus";
  std::vector<std::string> domains = {"en", "de", "it", "es", "c", "python"};
  std::filesystem::path out_dir = "out/train-blt";
  /// Steps this session runs at most before it stops with a checkpoint (a run in several
  /// sessions, each continued with resume); 0: until `steps`. The schedule still spans `steps`.
  std::int64_t stop_after = 0;

  /// Schema of configs/train/blt.yaml (every key documented in docs/configuration.md).
  static config::Schema schema();
  /// Loads and validates a training config; throws config::ConfigError.
  static ByteLMTrainOptions load(const std::filesystem::path& file);
};

struct TrainReport {
  std::int64_t steps = 0;
  double final_train_loss = 0.0;  ///< nats per token
  double val_bits_per_byte = 0.0;
  double seconds = 0.0;
  double tokens_per_second = 0.0;
  std::filesystem::path checkpoint;
};

/// Trains the byte LM on the corpus's train split with AdamW and a warm-up + cosine schedule.
/// Writes to out_dir: `train_log.csv` (step, loss, bits per token, validation bits per byte,
/// tokens/s, learning rate), the weights `byte_lm.ckpt` (config in JSON) and the AdamW state
/// `optimizer.ckpt` (moments m, v and step t) at each validation and when the session stops,
/// and `loss_curve.png` (train bits per token and validation bits per byte against the step)
/// with gnuplot when it is on PATH (said on `progress` otherwise). Progress (step/total, loss,
/// bits, tokens/s, ETA) goes to `progress`: one line rewritten with '\r' when it is a terminal
/// (std::cerr/std::cout and isatty), plain lines every 10 steps otherwise. With `resume` and an
/// out_dir/byte_lm.ckpt, it continues exactly: weights, AdamW state, schedule and the batches
/// (a function of seed and step), so N steps in one run equal N/2 + N/2 resumed; log rows after
/// the checkpoint are dropped. Throws data::CorpusError when the corpus is missing (run
/// `neat data prepare`), nn::CheckpointError for an unusable checkpoint or optimizer state.
TrainReport train_byte_lm(const ByteLMTrainOptions& options, std::ostream& progress,
                          bool resume = false);

/// Bits per byte of documents under `model`: each document is BOS, bytes, EOS, scored in
/// windows of the model's context (a window restarts the context at a document boundary or
/// when it is full), at most `max_bytes` bytes in all (0: no limit).
double bits_per_byte(const nn::TransformerLM<float>& model,
                     const std::vector<std::vector<std::uint8_t>>& documents,
                     std::uint64_t max_bytes = 0);

/// Block hook for a batch of context windows: `starts` are the windows' first token positions
/// in the document, all windows `len` tokens long; returns the hook for
/// TransformerLM::hidden(tokens, starts.size(), len, hook), or an empty function for none.
using WindowHook = std::function<nn::TransformerLM<float>::BlockHook(
    const std::vector<std::int64_t>& starts, std::int64_t len)>;

/// ln p(tokens[t + 1] | tokens[w..t]) for t = 0 .. n-2 (nats): the document (BOS first) scored
/// in consecutive windows of the model's context, each window restarting the context — the
/// windows of blt::bits_per_byte, which this reproduces for the base LM. `batch` windows of
/// equal length go through the model in one forward pass (any batch gives the same numbers up
/// to float rounding). Throws std::invalid_argument for a token outside the vocabulary.
std::vector<double> target_log_probs(const nn::TransformerLM<float>& model,
                                     const std::vector<std::int32_t>& tokens, int batch = 1,
                                     const WindowHook& hook = {});

/// Code length, bits, of the byte targets (< 256) among `log_probs` (targets tokens[1..]).
double byte_bits(const std::vector<std::int32_t>& tokens, const std::vector<double>& log_probs);

/// Next-token entropies H_i = -sum_v p_i(v) ln p_i(v) (nats) at every position of `tokens`
/// (one document, BOS first), computed incrementally with the KV cache by an EntropyStream
/// (entropy_stream.hpp): each position costs one cached forward step, no quadratic re-run.
/// When the cache is full the context restarts from the current position (the model's context
/// is its max_seq_len). Throws std::out_of_range for a token outside the vocabulary.
std::vector<double> next_token_entropies(const nn::TransformerLM<float>& model,
                                         const std::vector<std::int32_t>& tokens);

/// The same entropies from one full forward pass per context window (batch mode); equal to
/// next_token_entropies up to float rounding (tested).
std::vector<double> next_token_entropies_batch(const nn::TransformerLM<float>& model,
                                               const std::vector<std::int32_t>& tokens);

/// The architecture as stored in a byte LM checkpoint's config block (vocab_size, dim, layers,
/// heads, mlp_hidden, context, window), and back. model_config_from_json throws
/// std::runtime_error naming the missing key.
nlohmann::json model_config_json(const nn::TransformerConfig& config);
nn::TransformerConfig model_config_from_json(const nlohmann::json& json);

/// Loads a byte LM written by train_byte_lm: the architecture from the checkpoint's config
/// block, then the weights (validated by nn::load_checkpoint). Throws nn::CheckpointError or
/// std::runtime_error naming the file.
std::unique_ptr<nn::TransformerLM<float>> load_byte_lm(const std::filesystem::path& checkpoint);

/// BOS, the bytes, EOS.
std::vector<std::int32_t> document_tokens(const std::vector<std::uint8_t>& bytes);

}  // namespace neat::blt
