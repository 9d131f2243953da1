// Memory as a gate (MAG, Behrouz et al. 2024, arXiv 2501.00663, §4.2) on the frozen BLT byte
// LM: the Titans memory, written with "what followed this context", is read with the latent of
// the last finished patch, and the readout is projected and added through a learned gate to the
// residual stream after one block of the byte LM:
//     x' = x + g ⊙ (r W_o + r W_off[o]),   g = sigmoid(x W_g + b_g)   (per position, channel),
// o the position's offset within its patch (the W_off term only for models with offsets > 0).
//
// Two value sides of an association j (key = latent of patch j):
//   - latents (the first models): value = latent of patch j + 1 (mean final hidden state);
//   - bytes ("copy" values, ByteValues): value = u_{j+1} = sum_o E[o, b_{j+1,o}], a learned
//     embedding of the bytes patch j + 1's positions predict (its targets: the tokens at
//     start(j+1) + 1 .. start(j+2), each with its offset o in the patch, padded with a learned
//     "no byte" row up to K offsets), so that a readout carries the identity of the next bytes
//     and W_off[o] decodes the byte of offset o.
//
// Causality (exactly which readout a position receives): position i of a document lies in
// patch p(i) (entropy patches of the byte LM, global threshold). Row p of the readouts is
//     r_p = M_{c(p)}*(q(x_{p-1}))   for p >= 1,   r_0 = 0,
// where x_{p-1} is the latent (mean final hidden state) of patch p - 1 and M_{c(p)} is the
// memory after the chunks of associations j whose indices all lie below floor((p - 1) / C) * C.
// Those values use latents of patches <= p - 1, or (bytes) tokens up to start(p) (the targets of
// patch p - 1 end at the first token of patch p). Position i, which predicts token i + 1, has
// seen every token up to i >= start(p(i)), so nothing it receives depends on token i + 1 or
// later.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/patcher.hpp"
#include "neat/nn/modules.hpp"
#include "neat/titans/memory.hpp"

namespace neat::titans {

/// Where and how wide the injection is.
struct MagConfig {
  std::int64_t layer = 2;         ///< inject after block `layer` (0-based) of the byte LM
  std::int64_t model_dim = 256;   ///< C, width of the byte LM's residual stream
  std::int64_t memory_dim = 256;  ///< d, width of the memory readout
  /// K: per-offset projections W_off[o] (o = offset of the position in its patch, offsets >= K
  /// use W_off[K - 1]); 0: none (r W_o only, the first models).
  std::int64_t offsets = 0;
  /// Normalise the readout before the projections (Titans §4.2: the memory's output is
  /// normalised with learnable vector-valued weights): r̂ = r / sqrt(mean(r²) + 1e-5) ⊙ γ, γ (d)
  /// learned, starting at 1. Without it (the first models) r enters as read.
  bool readout_norm = false;
  /// The gate also reads the readout's level ("seen before"): g = sigmoid(x W_g + b_g + ℓ w_ℓ),
  /// ℓ = log(mean(r²) + 1e-8) of the raw readout row (before the normalisation), w_ℓ (C)
  /// learned, starting at 0 (the gate of a model without it). A linear memory with
  /// near-orthogonal keys returns r ≈ 0 for a context it has not stored, and the readout
  /// normalisation hides exactly that from the projections.
  bool gate_level = false;
};

/// The injection's learned parameters: w_o (d, C), w_g (C, C), b_g (C), when
/// config.offsets = K > 0, w_off (d, K C): block o (columns [o C, (o + 1) C)) is W_off[o], and
/// when config.readout_norm, r_gain (d), the γ of the readout normalisation, and when
/// config.gate_level, w_level (C), the gate's weight of the readout level ℓ.
template <typename T>
struct MagInjection {
  MagConfig config;
  nn::Tensor<T> w_o, w_g, b_g, w_off, r_gain, w_level;

  /// w_o = 0 and w_off = 0 (the injection starts as the identity), w_g N(0, 1/C), b_g = 0,
  /// r_gain = 1, w_level = 0; leaves with requires_grad.
  static MagInjection init(const MagConfig& config, std::uint64_t seed);
  /// {"w_o", "w_g", "b_g"} (and "w_off" when K > 0, "r_gain" with readout_norm, "w_level" with
  /// gate_level) with their tensors.
  std::vector<std::pair<std::string, nn::Tensor<T>>> named() const;
  /// x + sigmoid(x W_g + b_g [+ ℓ w_level]) ⊙ (r W_o + r W_off[o]) (r -> r̂ with readout_norm;
  /// ℓ = log(mean(r²) + 1e-8) with gate_level):
  /// x (B, L, C), r (B, L, d) -> (B, L, C);
  /// offsets (B L values, row-major, >= 0; values >= K use block K - 1) are required when
  /// K > 0 and ignored otherwise. Differentiable in x, r and the parameters. Throws
  /// std::invalid_argument on shape mismatch or missing / negative offsets.
  nn::Tensor<T> inject(const nn::Tensor<T>& x, const nn::Tensor<T>& readout,
                       const std::vector<std::int32_t>* offsets = nullptr) const;
};

/// The "copy" value side: a learned table E (K (V + 1), d_in); row o (V + 1) + b embeds byte
/// (token) b at offset o of a patch, row o (V + 1) + V says "no token at offset o".
template <typename T>
struct ByteValues {
  std::int64_t offsets = 8;  ///< K
  std::int64_t vocab = 0;    ///< V, the byte LM's vocabulary
  nn::Tensor<T> table;       ///< (K (V + 1), d_in); undefined: the model uses latent values

  /// Table N(0, 1/(K d_in)) per element (so that a sum of K rows has norm about 1), a leaf with
  /// requires_grad. Throws std::invalid_argument for K, V or d_in < 1.
  static ByteValues init(std::int64_t offsets, std::int64_t vocab, std::int64_t input_dim,
                         std::uint64_t seed);
  bool defined() const { return table.defined(); }
  /// u (n, d_in): row t = sum_o table[ids[t K + o]] for ids of target_byte_ids (n K values).
  /// Differentiable in the table. Throws std::invalid_argument when ids.size() != n K or an id
  /// is outside the table.
  nn::Tensor<T> embed(const std::vector<std::int32_t>& ids, std::int64_t n) const;
};

/// Table ids of the targets of patches [first, first + count) (count K values each): the
/// targets of patch p are the tokens at positions starts[p] + 1 .. end(p), end(p) = starts[p + 1]
/// (the first token of the next patch) or, for the last patch in `starts`, tokens.size() - 1;
/// target o (o < K) gets id o (V + 1) + token, offsets without a target (short patch) id
/// o (V + 1) + V; targets beyond K are dropped. `tokens` holds the document's tokens from
/// position starts[first] on (index = position - starts[first]), through end of the last patch.
/// Throws std::invalid_argument for a token outside [0, V), starts out of order or tokens
/// missing.
std::vector<std::int32_t> target_byte_ids(const std::vector<std::int32_t>& tokens,
                                          const std::vector<std::int64_t>& starts,
                                          std::int64_t first, std::int64_t count,
                                          std::int64_t offsets, std::int64_t vocab);

/// Offsets of every position within its patch (i - first position of patch p(i)), from
/// patch_of_position (non-decreasing, starting at 0). Throws std::invalid_argument otherwise.
std::vector<std::int32_t> offsets_in_patch(const std::vector<std::int64_t>& patch_of_position);

/// Hashed n-gram context features of a patch ("n-gram keys"): the memory's input for patch p
/// is x_p = [x̂_p ; h_p] (width C + dim), x̂_p the unit latent and
///     h_p = [s(n_1, g_{n_1}(e_p)) ; ... ; s(n_m, g_{n_m}(e_p))],
/// g_n(e) the n tokens ending at position e_p = the last position of patch p (fewer at the
/// document start), s(n, g) a fixed pseudo-random sign vector (entries ±1/sqrt(dim), block of
/// dim / m entries per n) drawn from a 64-bit hash of (n, g). These are BLT's hash n-gram
/// embeddings (Pagnoni et al. 2024, arXiv 2412.09871, §3.2.1) in the form of feature hashing
/// (Weinberger et al. 2009): no table to learn or ship; two contexts share a block exactly when
/// they share that n-gram, and distinct n-grams give nearly orthogonal blocks (|cos| about
/// 1/sqrt(block)), so that keys k = x W_K can address many associations without interference
/// (the pooled latents of neighbouring patches are far from orthogonal). Identical contexts
/// give identical keys, so the association written after a context in an earlier copy of a text
/// is the one its later copy reads.
struct NgramKeys {
  std::vector<std::int64_t> sizes;  ///< n of each block (each >= 1); empty: no n-gram keys
  std::int64_t dim = 0;             ///< total width of h (a multiple of sizes.size())
  bool defined() const { return dim > 0 && !sizes.empty(); }
  /// Longest n (the tokens of history a stream must keep, plus one).
  std::int64_t longest() const;
  /// Throws std::invalid_argument naming the field when a size is < 1, dim < 1 or dim is not a
  /// multiple of the number of sizes.
  void validate() const;
  /// h for the n-grams ending at absolute position `end` of a document whose tokens at positions
  /// [offset, offset + tokens.size()) are given (end in that range; the n-gram uses positions
  /// max(0, end - n + 1) .. end, all of which must be given). Writes dim values to out.
  /// Throws std::invalid_argument when a needed position is missing.
  void features(const std::vector<std::int32_t>& tokens, std::int64_t offset, std::int64_t end,
                float* out) const;
};

/// Memory inputs [x̂_p ; h_p] (P, C + keys.dim) of a document: x̂ = unit_rows(latents) (P, C),
/// h_p = keys.features at the last position of patch p (patch_starts[p + 1] - 1, or
/// tokens.size() - 1 for the last patch); tokens = the document from position 0. Without keys
/// (undefined): the latents unchanged. Throws std::invalid_argument on a shape mismatch or
/// tokens missing.
template <typename T>
nn::Tensor<T> key_inputs(const NgramKeys& keys, const nn::Tensor<T>& latents,
                         const std::vector<std::int32_t>& tokens,
                         const std::vector<std::int64_t>& patch_starts);

/// A document as the frozen byte LM patches it.
struct DocumentPatches {
  std::vector<std::int64_t> patch_of_position;  ///< p(i) for every token position i
  std::vector<std::int64_t> patch_starts;       ///< first position of each patch
  nn::Tensor<float> latents;                    ///< (P, C): mean final hidden state per patch
  std::vector<double> entropies;                ///< H_i, nats, per position (BLT eq. 2)
  /// Residual stream after block `capture_layer` (B windows, context, C) when asked for
  /// (training), in the windows of blt::target_log_probs; undefined otherwise.
  nn::Tensor<float> captured;
};

/// Runs the frozen byte LM over `tokens` (one document, BOS first) in consecutive windows of
/// its context (the windows of blt::target_log_probs; the context restarts every max_seq_len
/// tokens), takes the entropies H_i from the logits, the patch starts from the global rule
/// with `patcher` (blt::patch_starts) and the latents as the mean final hidden state of each
/// patch (BLT §3.1). With capture_layer >= 0 it also keeps the residual stream after that
/// block; this needs (tokens.size() - 1) to be a multiple of the context (full windows).
/// No graph is recorded. Throws std::invalid_argument for an empty document or a token
/// outside the vocabulary.
DocumentPatches patch_document(const nn::TransformerLM<float>& model,
                               const std::vector<std::int32_t>& tokens,
                               const blt::PatcherOptions& patcher, std::int64_t capture_layer = -1);

/// Readouts r_p (P, d) of the header comment for patch latents (P, d_in), each latent first
/// scaled to unit l2 norm (raw pooled hidden states have norms of about 25, which makes the
/// inner updates diverge): associations
/// x_j -> x_{j+1} are written chunk by chunk (write_pairs, C = the memory's chunk) starting
/// from memory.initial_state(); with update = false nothing is written (memory frozen at M_0
/// after the persistent vectors: the baseline of the evaluation). With `values` (P, d_in)
/// (byte models: ByteValues::embed of target_byte_ids for patches 0..P-1) association j takes
/// its value side from values row j + 1 instead of the unit latent x_{j+1} (keys, gates and
/// queries stay latents). Differentiable in the memory parameters (and values) when a graph is
/// recorded (training). Appends one record per written chunk. Throws std::invalid_argument on
/// a shape mismatch.
template <typename T>
nn::Tensor<T> mag_readouts(const NeuralMemory<T>& memory, const nn::Tensor<T>& latents, bool update,
                           std::vector<ChunkRecord>* records = nullptr,
                           const nn::Tensor<T>* values = nullptr);

/// Streaming form of mag_readouts (update = true) for a bus node: a document's patch latents
/// arrive in slices (blt.patches), push() returns the readout rows r_p of exactly the slice's
/// patches — the rows mag_readouts gives for the whole document (up to float rounding of the
/// row blocks) — and writes the chunk of associations x_j -> x_{j+1}, j in [s, s + C), as soon
/// as a later key needs it (so a write uses latents of patches <= p - 1 only), each write
/// decided by `policy` (the coordinator's grant: theta scaled, or skipped). With byte values
/// (a model with ByteValues) each slice also brings its patches' lengths and tokens, and the
/// value of association j is embedded when it is written (its targets reach the first token of
/// patch j + 2, which has arrived by then). The memory (and values) must outlive the stream.
template <typename T>
class MagStream {
 public:
  /// With n-gram keys (keys->defined()) the memory's input of a patch is [unit latent ; h_p]
  /// (key_inputs): pushes then need the slice's lengths and tokens, and the stream keeps the
  /// last keys->longest() - 1 tokens of the document (history()).
  explicit MagStream(const NeuralMemory<T>& memory, const ByteValues<T>* values = nullptr,
                     const NgramKeys* keys = nullptr)
      : memory_(&memory),
        values_(values && values->defined() ? values : nullptr),
        keys_(keys && keys->defined() ? keys : nullptr) {}
  /// Starts a document: M = M_0 after the persistent vectors (NeuralMemory::initial_state)
  /// unless keep_memory (memory_scope: stream), patch indices from 0.
  void start_document(std::uint64_t document, bool keep_memory = false);
  /// Latents (n, d_in) of the next n patches of the document -> readouts (n, d), row i for
  /// patch patches() - n + i. Appends one record per written chunk. Throws
  /// std::invalid_argument on a shape mismatch (nothing changes then).
  nn::Tensor<T> push(const nn::Tensor<T>& latents, const WritePolicy& policy = {},
                     std::vector<ChunkRecord>* records = nullptr);
  /// push() for byte values or n-gram keys: lengths (n patch lengths, tokens) and the slice's
  /// tokens (their sum); latents (n, C), C = the memory's input width less keys->dim. Throws
  /// std::invalid_argument when they do not match the latents or a token is outside the
  /// vocabulary (nothing changes then). Without either the tokens are unused.
  nn::Tensor<T> push(const nn::Tensor<T>& latents, const std::vector<std::uint32_t>& lengths,
                     const std::vector<std::int32_t>& tokens, const WritePolicy& policy = {},
                     std::vector<ChunkRecord>* records = nullptr);
  /// Writes the associations not yet written (end of a document whose memory carries over).
  void finish(const WritePolicy& policy = {}, std::vector<ChunkRecord>* records = nullptr);

  std::int64_t patches() const { return received_; }  ///< patches pushed in this document
  std::int64_t written() const { return written_; }   ///< keys written (a multiple of C)
  /// Unit-norm latents of patches [written(), patches()) (undefined when none).
  const nn::Tensor<T>& unwritten() const { return window_; }
  /// Tokens of patches [written(), patches()), one list per patch (byte values only; empty
  /// otherwise).
  const std::vector<std::vector<std::int32_t>>& unwritten_tokens() const { return tokens_; }
  const MemoryState<T>& state() const { return state_; }
  bool started() const { return started_; }
  /// n-gram keys: the document's last (up to keys->longest() - 1) tokens before the next slice;
  /// empty otherwise.
  const std::vector<std::int32_t>& history() const { return history_; }
  /// Tokens of the document received so far (n-gram keys; 0 otherwise).
  std::int64_t position() const { return position_; }
  /// Puts back a state saved from state(), patches(), written(), unwritten(), (byte values)
  /// unwritten_tokens() and (n-gram keys) history() and position(). Throws
  /// std::invalid_argument when the unwritten rows (or token lists, with byte values) do not
  /// equal patches - written, or the history is longer than keys->longest() - 1 or position.
  void restore(MemoryState<T> state, std::int64_t patches, std::int64_t written,
               nn::Tensor<T> unwritten,
               std::vector<std::vector<std::int32_t>> unwritten_tokens = {},
               std::vector<std::int32_t> history = {}, std::int64_t position = 0);

 private:
  nn::Tensor<T> push_impl(const nn::Tensor<T>& latents,
                          std::vector<std::vector<std::int32_t>> patch_tokens,
                          const WritePolicy& policy, std::vector<ChunkRecord>* records);
  // Values (n, d_in) of associations [written_, written_ + n): unit latents, or the byte
  // embedding of the targets of patches written_ + 1 .. written_ + n.
  nn::Tensor<T> values_of(std::int64_t n) const;
  void drop_written(std::int64_t n);
  const NeuralMemory<T>* memory_;
  const ByteValues<T>* values_;
  const NgramKeys* keys_;
  std::vector<std::int32_t> history_;
  std::int64_t position_ = 0;
  MemoryState<T> state_;
  nn::Tensor<T> window_;
  std::vector<std::vector<std::int32_t>> tokens_;
  std::int64_t received_ = 0, written_ = 0;
  bool started_ = false;
};

/// Rows of x (n, d) scaled to unit l2 norm (the latents' normalisation of mag_readouts).
template <typename T>
nn::Tensor<T> unit_rows(const nn::Tensor<T>& x);

/// The block hook for blt::target_log_probs (or a predictor): for a batch of windows (starts,
/// len) it returns a BlockHook that, after block injection.config.layer, adds the MAG term with
/// r = readouts row patch_of_position[start + i] at window position i. readouts is row-major
/// [P, d]. The returned hook throws std::out_of_range when a position has no patch or a patch
/// no readout row. With per-offset projections (config.offsets > 0) the offset of each
/// position in its patch comes from patch_of_position (offsets_in_patch). Gradients do not flow
/// into the captured tensors.
blt::WindowHook make_readout_hook(const MagInjection<float>& injection,
                                  const std::vector<std::int64_t>& patch_of_position,
                                  const std::vector<float>& readouts);

/// A trained MAG model: memory (config and parameters), injection, the value side (byte
/// values, or undefined: latents), the key side (n-gram keys, or undefined: unit latents only)
/// and the patcher it was trained with. With keys, memory_config.input_dim = C + keys.dim.
struct MagModel {
  MemoryConfig memory_config;
  blt::PatcherOptions patcher;
  std::unique_ptr<NeuralMemory<float>> memory;
  MagInjection<float> injection;
  ByteValues<float> values;
  NgramKeys keys;
  /// Width C of the patch latents the model reads (input_dim less keys.dim).
  std::int64_t latent_dim() const { return memory_config.input_dim - keys.dim; }
};

/// Readouts of a whole document for `model` (mag_readouts of key_inputs with, for byte values,
/// the values of target_byte_ids over tokens and patch_starts; tokens = the document from
/// position 0; latents (P, model.latent_dim())).
/// Differentiable when a graph is recorded. Throws std::invalid_argument on a mismatch.
nn::Tensor<float> model_readouts(const MagModel& model, const nn::Tensor<float>& latents,
                                 const std::vector<std::int32_t>& tokens,
                                 const std::vector<std::int64_t>& patch_starts, bool update,
                                 std::vector<ChunkRecord>* records = nullptr);

/// Writes a MAG model as an nn checkpoint (msgpack + CRC-32; tensors in `storage`: f32, or bf16
/// for a smaller file, rounded to nearest even): tensors "memory.<name>"
/// (MemoryParams::named), "mag.<name>" and (byte values) "values.table", config block JSON with
/// the memory config, the MAG config (with "offsets" when K > 0), "values" ({"kind": "bytes",
/// "offsets", "vocab"}; absent: latent values, as in the first models), "keys" ({"ngrams",
/// "dim"}; absent: no n-gram keys) and the patch threshold. Throws
/// nn::CheckpointError on I/O failure, std::invalid_argument for a storage other than f32/bf16.
void save_mag_model(const std::filesystem::path& path, const MagModel& model,
                    nn::DType storage = nn::DType::f32);
/// Loads a file written by save_mag_model (models/titans/mag.ckpt; f32 or bf16 tensors, read
/// into float32). Throws nn::CheckpointError
/// (corrupt file) or std::runtime_error naming the file and the missing or misshapen tensor or
/// config key.
MagModel load_mag_model(const std::filesystem::path& path);

extern template class MagStream<float>;
extern template class MagStream<double>;
extern template struct MagInjection<float>;
extern template struct MagInjection<double>;
extern template struct ByteValues<float>;
extern template struct ByteValues<double>;

}  // namespace neat::titans
