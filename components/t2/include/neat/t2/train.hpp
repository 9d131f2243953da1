// `neat train t2` and `neat t2 eval`: singular value fine-tuning of one expert vector set per
// domain on the byte LM (Sun et al. 2025, §3.1: next-byte cross-entropy plus a KL penalty to the
// base model, AdamW on z only, the base frozen), the per-domain prototypes of the task
// embeddings, the CEM few-shot mixtures of domains without an expert (§3.2), and the evaluation
// of domain identification and bits per byte on a split of the prepared corpus.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "neat/config/schema.hpp"
#include "neat/t2/dispatch.hpp"
#include "neat/t2/svf.hpp"

namespace neat::t2 {

/// Everything `neat train t2` reads from configs/train/t2.yaml (keys in docs/configuration.md).
struct T2TrainOptions {
  std::filesystem::path base_model = "models/blt/byte_lm.bf16.ckpt";
  std::filesystem::path corpus = "data/corpus";
  std::vector<std::string> domains = {"en", "de", "it", "c", "python"};  ///< one expert each
  std::vector<std::string> fewshot_domains = {"es"};  ///< CEM mixtures of the experts
  std::int64_t fewshot_documents = 5;                 ///< k train documents of a few-shot domain
  std::uint64_t fewshot_bytes = 512;  ///< bytes of each few-shot document scored by CEM
  CemOptions cem;                     ///< population, elite ratio, iterations
  SvdOptions svd;                     ///< decomposition (experts need energy_fraction 1)
  std::int64_t steps = 150, batch = 8, seq_len = 128;
  double lr = 5e-3, min_lr = 5e-4, weight_decay = 0.0, clip = 1.0;
  std::int64_t warmup = 10;
  double kl_coefficient = 0.05;            ///< λ of L = CE + λ KL(adapted ‖ base)
  std::int64_t embedding_positions = 256;  ///< N: BOS + first N − 1 bytes
  std::int64_t prototype_documents = 32;   ///< train documents per prototype (0: all)
  double temperature = 0.02;               ///< softmax temperature of the dispatch confidence
  std::uint64_t eval_bytes = 16384;        ///< validation bytes per domain for the gain
  std::uint64_t seed = 1;
  int threads = 1;
  std::filesystem::path out_dir = "models/t2";

  static config::Schema schema();
  /// Loads and validates; relative paths stay relative to the working directory. Throws
  /// config::ConfigError.
  static T2TrainOptions load(const std::filesystem::path& file);
};

/// Trains the experts, computes prototypes and few-shot mixtures, writes out_dir/experts.ckpt,
/// out_dir/provenance.json (config, corpus manifest sha256, base model sha256, command, wall
/// time, scores) and out_dir/train_log.csv. Progress lines go to `progress`. Returns the
/// provenance JSON. Throws data::CorpusError when the corpus is missing.
nlohmann::json train_experts(const T2TrainOptions& options, std::ostream& progress,
                             const std::string& command, const std::string& config_text);

/// Recomputes the prototypes of out_dir/experts.ckpt (expert domains: first
/// prototype_documents train documents, 0 = all; few-shot domains: their k few-shot documents)
/// with the options' embedding settings, keeping z and α; records the refresh (command, time,
/// documents per class) in the provenance and rewrites experts.ckpt and provenance.json.
/// Returns the provenance.
nlohmann::json refresh_prototypes(const T2TrainOptions& options, std::ostream& progress,
                                  const std::string& command);

struct T2EvalOptions {
  std::filesystem::path experts = "models/t2/experts.ckpt";
  std::filesystem::path base_model = "models/blt/byte_lm.bf16.ckpt";
  std::filesystem::path corpus = "data/corpus";
  std::string split = "test";
  std::uint64_t eval_bytes = 65536;        ///< bytes per domain scored for bits per byte
  std::int64_t embedding_positions = 256;  ///< N of the task embedding
  double temperature = 0.02;
  bool center = true;    ///< classify with prototypes centred on their mean (see classify())
  bool id_only = false;  ///< skip bits per byte (domain identification only)
  int threads = 1;
};

/// Per class (expert and few-shot domains): domain identification accuracy over the split's
/// documents from their first N positions, base and expert bits per byte and their ratio, the
/// targets (id ≥ 0.95, expert ≤ 0.98 x base, few-shot < base) and whether each is met.
nlohmann::json evaluate(const T2EvalOptions& options, std::ostream& progress);

}  // namespace neat::t2
