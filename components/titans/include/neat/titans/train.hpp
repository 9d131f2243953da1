// `neat train titans` and `neat titans eval`: the Titans memory (W_K, W_V, W_Q, the theta /
// eta / alpha gate maps, the persistent memory and M_0) and the MAG injection (W_o, W_g, b_g)
// trained on top of the FROZEN byte LM by next-byte cross-entropy, backpropagating through the
// memory's inner updates; and the bits-per-byte evaluation with test-time memory against the
// same model with memory frozen at M_0.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "neat/config/schema.hpp"
#include "neat/titans/mag.hpp"

namespace neat::titans {

/// Everything `neat train titans` reads from configs/train/titans.yaml.
struct TitansTrainOptions {
  std::filesystem::path base_model = "models/blt/byte_lm.bf16.ckpt";
  std::filesystem::path corpus = "data/corpus";
  std::vector<std::string> domains = {"en", "de", "it", "es", "c", "python"};
  MemoryConfig memory;                         ///< input_dim is the byte LM's width (checked)
  std::int64_t layer = 2;                      ///< MAG injection after this block
  double patch_threshold = 1.335442066192627;  ///< theta_g of the global patching rule
  /// YAML `values: bytes`: association values are ByteValues (copy values) instead of the next
  /// patch's latent.
  bool byte_values = false;
  std::int64_t offsets = 0;  ///< YAML `offsets`: K of the byte values and of W_off (0: none)
  /// YAML `keys: {ngrams, dim}`: n-gram keys (NgramKeys; undefined: the unit latents alone).
  /// With them the memory reads [unit latent ; h] and a fresh model starts with W_K = W_Q =
  /// [0 ; I] (keys and queries are the n-gram features) when keys.dim equals memory.dim, and a
  /// linear memory (depth 1) with M_0 = 0.
  NgramKeys keys;
  /// YAML `readout_norm`: MagConfig::readout_norm (a fresh model only; a warm start keeps its).
  bool readout_norm = false;
  /// YAML `gate_level`: MagConfig::gate_level (a warm start without it gains w_level = 0).
  bool gate_level = false;
  /// YAML `storage`: tensors of the saved model in f32 (default) or bf16 (half the file; the
  /// training itself stays in float32).
  bool store_bf16 = false;
  std::int64_t windows =
      8;  ///< context windows per training sequence (sequence = BOS + windows x context tokens)
  double repeat_probability = 0.5;  ///< share of sequences whose second half repeats the first
  /// YAML `balance_domains`: draw the domain uniformly, then a document of it (false: every
  /// document equally likely, so the domains with many long documents dominate).
  bool balance_domains = false;
  std::int64_t steps = 300;
  double lr = 3e-3, min_lr = 3e-4, weight_decay = 0.0, clip = 1.0;
  std::int64_t warmup = 20;
  double max_minutes = 20;  ///< wall-clock budget: stops (and saves) when exceeded
  std::uint64_t seed = 1;
  int threads = 2;
  std::filesystem::path out_dir = "models/titans";
  /// Warm start (YAML `init`, empty: random initialisation): the memory parameters and the MAG
  /// injection of this MAG checkpoint, whose shapes must match `memory`, `layer` and the byte
  /// LM; the gate maxima, chunk and the rest of `memory` come from this config.
  std::filesystem::path init_model;

  static config::Schema schema();
  /// Loads and validates; throws config::ConfigError.
  static TitansTrainOptions load(const std::filesystem::path& file);
};

/// Trains with AdamW (warm-up + cosine) on sequences cut from train documents >= 16 KiB of the
/// domains (random document and offset from seed), a repeat_probability share of them made of
/// a half-length cut followed by itself. Per step: the frozen LM patches the sequence and
/// gives the residual stream after block `layer` (no graph), the memory readouts are computed
/// with a graph through the inner updates, injected (MAG), and blocks layer+1.. and the head
/// give the next-byte cross-entropy. Writes out_dir/mag.ckpt, out_dir/train_log.csv (step,
/// loss in bits per byte, lr, grad norm, ||dW_K||, ||dW_V||, ||dW_Q||, ||dW_o||, seconds) and
/// returns the summary (steps, seconds, first/last loss, final ||dW||). Throws
/// data::CorpusError when the corpus is missing, std::invalid_argument for inconsistent
/// options.
nlohmann::json train_titans(const TitansTrainOptions& options, std::ostream& progress);

struct TitansEvalOptions {
  std::filesystem::path model = "models/titans/mag_ngram.ckpt";
  std::filesystem::path base_model = "models/blt/byte_lm.bf16.ckpt";
  std::filesystem::path corpus = "data/corpus";
  std::string split = "test";
  std::vector<std::string> domains = {"en", "de", "it", "es", "c", "python"};
  std::uint64_t min_document_bytes = 16384;  ///< only documents at least this long
  std::int64_t max_documents = 0;            ///< per domain; 0: all
  bool repeat = false;                       ///< also the repeated-document test
  bool repeat_only = false;                  ///< only the repeated-document test
  std::uint64_t repeat_bytes = 4096;         ///< length of the repeated copy (the first bytes)
  int threads = 2;
};

/// Bits per byte per domain and overall on every split document >= min_document_bytes:
/// the base LM, the MAG model with test-time memory, and the same model with memory frozen at
/// M_0 (no writes). With repeat: per domain, the first repeat_bytes bytes of the first such
/// document twice in one stream, BOS + copy + copy + EOS; bits per byte of the second copy with
/// memory vs frozen, and the relative reduction (target >= 10 %).
nlohmann::json evaluate_titans(const TitansEvalOptions& options, std::ostream& progress);

}  // namespace neat::titans
