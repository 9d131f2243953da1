// Memory as a gate (MAG, Behrouz et al. 2024, arXiv 2501.00663, §4.2) on the frozen BLT byte
// LM: the Titans memory, written with "what followed this context" (key = latent of patch p,
// value = latent of patch p + 1), is read with the latent of the last finished patch, and the
// readout is projected and added through a learned gate to the residual stream after one block
// of the byte LM:
//     x' = x + g ⊙ (r W_o),   g = sigmoid(x W_g + b_g)   (per position, per channel).
//
// Causality (exactly which readout a position receives): position i of a document lies in
// patch p(i) (entropy patches of the byte LM, global threshold). Row p of the readouts is
//     r_p = M_{c(p)}*(q(x_{p-1}))   for p >= 1,   r_0 = 0,
// where x_{p-1} is the latent (mean final hidden state) of patch p - 1 and M_{c(p)} is the
// memory after the chunks of associations (x_j -> x_{j+1}) whose indices j all lie below
// floor((p - 1) / C) * C, i.e. written from latents of patches <= p - 1 only. Position i, which
// predicts token i + 1, has seen every token of patches < p(i) (they end before i), so nothing
// it receives depends on token i + 1 or later.
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
};

/// The injection's learned parameters: w_o (d, C), w_g (C, C), b_g (C).
template <typename T>
struct MagInjection {
  MagConfig config;
  nn::Tensor<T> w_o, w_g, b_g;

  /// w_o = 0 (the injection starts as the identity), w_g N(0, 1/C), b_g = 0; leaves with
  /// requires_grad.
  static MagInjection init(const MagConfig& config, std::uint64_t seed);
  /// {"w_o", "w_g", "b_g"} with their tensors.
  std::vector<std::pair<std::string, nn::Tensor<T>>> named() const;
  /// x + sigmoid(x W_g + b_g) ⊙ (r W_o): x (B, L, C), r (B, L, d) -> (B, L, C). Differentiable
  /// in x, r and the parameters. Throws std::invalid_argument on shape mismatch.
  nn::Tensor<T> inject(const nn::Tensor<T>& x, const nn::Tensor<T>& readout) const;
};

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
/// after the persistent vectors: the baseline of the evaluation). Differentiable in the memory
/// parameters when a graph is recorded (training). Appends one record per written chunk.
template <typename T>
nn::Tensor<T> mag_readouts(const NeuralMemory<T>& memory, const nn::Tensor<T>& latents, bool update,
                           std::vector<ChunkRecord>* records = nullptr);

/// Streaming form of mag_readouts (update = true) for a bus node: a document's patch latents
/// arrive in slices (blt.patches), push() returns the readout rows r_p of exactly the slice's
/// patches — the rows mag_readouts gives for the whole document (up to float rounding of the
/// row blocks) — and writes the chunk of associations x_j -> x_{j+1}, j in [s, s + C), as soon
/// as a later key needs it (so a write uses latents of patches <= p - 1 only), each write
/// decided by `policy` (the coordinator's grant: theta scaled, or skipped). The memory must
/// outlive the stream.
template <typename T>
class MagStream {
 public:
  explicit MagStream(const NeuralMemory<T>& memory) : memory_(&memory) {}
  /// Starts a document: M = M_0 after the persistent vectors (NeuralMemory::initial_state)
  /// unless keep_memory (memory_scope: stream), patch indices from 0.
  void start_document(std::uint64_t document, bool keep_memory = false);
  /// Latents (n, d_in) of the next n patches of the document -> readouts (n, d), row i for
  /// patch patches() - n + i. Appends one record per written chunk. Throws
  /// std::invalid_argument on a shape mismatch (nothing changes then).
  nn::Tensor<T> push(const nn::Tensor<T>& latents, const WritePolicy& policy = {},
                     std::vector<ChunkRecord>* records = nullptr);
  /// Writes the associations not yet written (end of a document whose memory carries over).
  void finish(const WritePolicy& policy = {}, std::vector<ChunkRecord>* records = nullptr);

  std::int64_t patches() const { return received_; }  ///< patches pushed in this document
  std::int64_t written() const { return written_; }   ///< keys written (a multiple of C)
  /// Unit-norm latents of patches [written(), patches()) (undefined when none).
  const nn::Tensor<T>& unwritten() const { return window_; }
  const MemoryState<T>& state() const { return state_; }
  bool started() const { return started_; }
  /// Puts back a state saved from state(), patches(), written() and unwritten(). Throws
  /// std::invalid_argument when the unwritten rows do not equal patches - written.
  void restore(MemoryState<T> state, std::int64_t patches, std::int64_t written,
               nn::Tensor<T> unwritten);

 private:
  const NeuralMemory<T>* memory_;
  MemoryState<T> state_;
  nn::Tensor<T> window_;
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
/// no readout row. Gradients do not flow into the captured tensors.
blt::WindowHook make_readout_hook(const MagInjection<float>& injection,
                                  const std::vector<std::int64_t>& patch_of_position,
                                  const std::vector<float>& readouts);

/// A trained MAG model: memory (config and parameters), injection and the patcher it was
/// trained with.
struct MagModel {
  MemoryConfig memory_config;
  blt::PatcherOptions patcher;
  std::unique_ptr<NeuralMemory<float>> memory;
  MagInjection<float> injection;
};

/// Writes a MAG model as an nn checkpoint (f32; msgpack + CRC-32): tensors "memory.<name>"
/// (MemoryParams::named) and "mag.<name>", config block JSON with the memory config, the MAG
/// config and the patch threshold. Throws nn::CheckpointError on I/O failure.
void save_mag_model(const std::filesystem::path& path, const MagModel& model);
/// Loads a file written by save_mag_model (models/titans/mag.ckpt). Throws nn::CheckpointError
/// (corrupt file) or std::runtime_error naming the file and the missing or misshapen tensor or
/// config key.
MagModel load_mag_model(const std::filesystem::path& path);

extern template class MagStream<float>;
extern template class MagStream<double>;
extern template struct MagInjection<float>;
extern template struct MagInjection<double>;

}  // namespace neat::titans
