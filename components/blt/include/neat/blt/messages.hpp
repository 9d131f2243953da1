// Messages of the BLT, Transformer² and Titans components (schema name + version each). They
// are the contracts between those components and the sink; topic names are in
// docs/architecture.md. Vectors travel as f32 tensor frames (named below), never inside the
// msgpack payload. Messages carry values only: no gradient state crosses the bus.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "neat/bus/typed.hpp"

namespace neat::blt {

/// Entropy patches of one slice of one document (topic `blt.patches`); a document is published
/// as one or more slices in order, the last with `last = true`. Tensor "latents" (f32,
/// [patch_count, dim]): patch latent = mean of the entropy model's final hidden states (after
/// the final norm) over the patch's positions (BLT §3.1, the pooled representation).
/// Positions index the document's token stream (BOS at 0, bytes from 1; images BOI codes EOI).
struct Patches {
  static constexpr std::string_view kSchema = "neat.blt.Patches";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t doc_id = 0;
  std::string path;
  std::string modality;                ///< "text" or "image" (from mvot)
  std::uint64_t first_patch = 0;       ///< index of this slice's first patch in the document
  std::vector<std::uint64_t> starts;   ///< patch start positions (token index)
  std::vector<std::uint32_t> lengths;  ///< patch lengths, tokens
  std::vector<float> mean_entropy;     ///< mean next-token entropy over the patch, nats
  std::vector<std::int32_t> tokens;    ///< the slice's tokens (sum of lengths)
  std::vector<float> entropies;        ///< per-token next-token entropy H_i, nats
  bool last = false;                   ///< last slice of the document
  MSGPACK_DEFINE_MAP(doc_id, path, modality, first_patch, starts, lengths, mean_entropy, tokens,
                     entropies, last);
};

/// Code length of one document under the byte LM (topic `blt.scores`), sent when the document
/// ends. bits[v] = sum over the document's byte targets of -log2 p_v(byte) under variant
/// variants[v] ("base": the entropy model as trained; later "t2", "titans", "full"). Tensor
/// "logprob" (f32, [variants, token_count - 1]): ln p of each target token t+1 given tokens
/// 0..t (BOS first), so that a report can recompute every figure.
struct Scores {
  static constexpr std::string_view kSchema = "neat.blt.Scores";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t doc_id = 0;
  std::string path;
  std::string modality;
  std::uint64_t bytes = 0;        ///< byte targets scored (text: the document's bytes)
  std::uint64_t token_count = 0;  ///< tokens of the document (BOS .. EOS)
  std::vector<std::string> variants;
  std::vector<double> bits;  ///< per variant: code length of the byte targets, bits
  MSGPACK_DEFINE_MAP(doc_id, path, modality, bytes, token_count, variants, bits);
};

/// Task embedding of a document (topic `blt.doc_embedding`), Transformer² pass 1: tensor
/// "embedding" (f32, [dim]) = mean of the entropy model's final hidden states over the first
/// `positions` tokens of the document (N from the blt config, default 256 bytes).
struct DocEmbedding {
  static constexpr std::string_view kSchema = "neat.blt.DocEmbedding";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t doc_id = 0;
  std::string path;
  std::string modality;
  std::uint64_t positions = 0;  ///< tokens pooled
  MSGPACK_DEFINE_MAP(doc_id, path, modality, positions);
};

/// Running statistics of the blt entropy model (topic `blt.stats`).
struct BltStats {
  static constexpr std::string_view kSchema = "neat.blt.Stats";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t documents = 0;
  std::uint64_t bytes = 0;   ///< byte tokens seen
  std::uint64_t tokens = 0;  ///< all tokens seen (bytes, specials, image codes)
  std::uint64_t patches = 0;
  double bits_per_byte = 0.0;     ///< entropy model's code length so far, bits per byte
  double bytes_per_second = 0.0;  ///< over the component's busy time
  double patches_per_second = 0.0;
  double mean_patch_size = 0.0;  ///< tokens per patch so far
  double threshold = 0.0;        ///< entropy threshold in use (theta_g, or theta_r), nats
  /// Mean patch size the compute-budget calibration achieved on its sample, tokens (0: none).
  double calibration_mean_patch_size = 0.0;
  std::uint64_t rejected = 0;  ///< items rejected as bad input
  bool final = false;          ///< end-of-stream report
  MSGPACK_DEFINE_MAP(documents, bytes, tokens, patches, bits_per_byte, bytes_per_second,
                     patches_per_second, mean_patch_size, threshold, calibration_mean_patch_size,
                     rejected, final);
};

/// Transformer² pass-2 decision for one document (topic `t2.adaptation`): the expert mixture
/// z' = sum_k alpha_k z_k over `domains` (Sun et al. 2025, §3.2). A one-hot alpha is plain
/// classification; `domain` is the arg-max (or "fewshot" for a CEM mixture).
struct Adaptation {
  static constexpr std::string_view kSchema = "neat.t2.Adaptation";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t doc_id = 0;
  std::string domain;
  double confidence = 0.0;           ///< in [0, 1]
  std::vector<std::string> domains;  ///< expert order
  std::vector<double> alpha;         ///< mixture weights, one per domain
  MSGPACK_DEFINE_MAP(doc_id, domain, confidence, domains, alpha);
};

/// Titans memory readout for a range of patches of one document (topic `titans.readout`):
/// tensor "readout" (f32, [patch_count, dim]), row p read from memory written by earlier chunks
/// only (Behrouz et al. 2024, eq. 15; the MAG form reads with the previous patch's latent,
/// titans/mag.hpp). `starts` repeats the patches' start positions from blt.patches, so that a
/// predictor can give each token position its patch's readout.
struct Readout {
  static constexpr std::string_view kSchema = "neat.titans.Readout";
  static constexpr std::uint32_t kVersion = 2;
  std::uint64_t doc_id = 0;
  std::uint64_t first_patch = 0;
  std::uint64_t patch_count = 0;
  bool last = false;                  ///< last range of the document
  std::vector<std::uint64_t> starts;  ///< patch start positions (token index), patch_count
  MSGPACK_DEFINE_MAP(doc_id, first_patch, patch_count, last, starts);
};

}  // namespace neat::blt
