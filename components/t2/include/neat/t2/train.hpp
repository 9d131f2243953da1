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
#include "neat/t2/experts.hpp"
#include "neat/t2/svf.hpp"

namespace neat::t2 {

/// Everything `neat train t2` reads from configs/train/t2.yaml (keys in docs/configuration.md).
struct T2TrainOptions {
  std::filesystem::path base_model = "models/blt/byte_lm.bf16.ckpt";
  std::filesystem::path corpus = "data/corpus";
  std::vector<std::string> domains = {"en", "de", "it", "c", "python"};  ///< one expert each
  std::vector<std::string> fewshot_domains = {"es"};  ///< CEM mixtures of the experts
  /// Expert strengths s tried per expert domain by `--merge` (dispatch.expert_scales): the
  /// domain's class gets alpha = s e_k, i.e. z' = 1 + s (z_k - 1) (s > 1 extrapolates along the
  /// trained change), s chosen by validation bits per byte; {1}: the plain expert.
  std::vector<double> expert_scales = {1.0};
  /// Expert domains whose class α is refined by `--merge` (dispatch.refine.domains): a CEM over
  /// real α (refine_cem.simplex = false), started at the class's α (e_k, or s e_k after
  /// expert_scales), maximising the log-likelihood of the domain's validation bytes
  /// (train.eval_bytes) — Sun et al. §3.2's few-shot adaptation with held-out documents as the
  /// shots, applied to a domain that has an expert. Kept only when it scores below the start.
  std::vector<std::string> refine_domains;
  CemOptions refine_cem = [] {
    CemOptions c;
    c.population = 12;
    c.elite_ratio = 0.25;
    c.iterations = 6;
    c.initial_std = 0.1;
    c.simplex = false;
    c.identity_component = false;
    return c;
  }();
  std::int64_t fewshot_documents = 5;  ///< k train documents of a few-shot domain
  std::uint64_t fewshot_bytes = 512;   ///< bytes of each few-shot document scored by CEM
  CemOptions cem;  ///< population, elite ratio, iterations, identity component (default on)
  T2TrainOptions() { cem.identity_component = true; }
  SvdOptions svd;                        ///< decomposition (experts need energy_fraction 1)
  MatrixSet matrices = MatrixSet::kMlp;  ///< which matrices SVF adapts (decomposition.matrices)
  std::int64_t steps = 150, batch = 8, seq_len = 128;
  double lr = 5e-3, min_lr = 5e-4, weight_decay = 0.0, clip = 1.0;
  std::int64_t warmup = 10;
  double kl_coefficient = 0.05;  ///< λ of L = CE + λ KL(adapted ‖ base)
  /// Iterate averaging (`train.average_last`): the expert is the mean of z after each of the last
  /// round(average_last · steps) steps (at least one) instead of the last z — Polyak–Ruppert
  /// averaging (Polyak & Juditsky 1992), as in stochastic weight averaging (Izmailov et al. 2018):
  /// the mean of the noisy iterates around a minimum lies nearer to it. 0: the last z.
  double average_last = 0.0;
  std::int64_t embedding_positions = 256;  ///< N: BOS + first N − 1 bytes
  std::int64_t prototype_documents = 32;   ///< train documents per prototype (0: all)
  /// k-means prototypes per class tried by the dispatch fit (chosen on the validation split).
  std::vector<std::int64_t> prototypes_per_class = {1, 2, 4, 8};
  /// Shrinkage ε of the within-class whitening tried next to centring only.
  std::vector<double> whitening_shrinkage = {0.01, 0.1, 1.0};
  double temperature = 0.02;         ///< softmax temperature of the dispatch confidence
  std::uint64_t eval_bytes = 16384;  ///< validation bytes per domain for the gain
  std::int64_t eval_every = 0;  ///< validation bits per byte every this many steps (0: end only)
  std::uint64_t seed = 1;
  int threads = 1;
  std::filesystem::path out_dir = "models/t2";
  /// Warm start (`train.init`): z of each domain starts from this experts file's z for the same
  /// domain (same matrices and ranks) instead of 1; empty: from 1.
  std::filesystem::path init;

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

/// Combines the experts of several `neat train t2` runs (`parts`, their experts.ckpt files; same
/// base model, matrices and ranks) into one set over the options' `domains`, in that order, each
/// domain's z taken from the LAST part that has it (so a later training stage overrides an
/// earlier one: parts trained in parallel over disjoint domains, or stages), then does what a
/// full run does after training: the CEM mixtures of the options' few-shot domains, the
/// dispatch, out_dir/experts.ckpt and out_dir/provenance.json (each part's command, config,
/// wall time and scores under "parts", the file each domain came from under
/// "domain_sources"). Throws std::runtime_error naming the file for other matrices or ranks, a
/// part trained on another base model (sha256 differs) or a domain not in the options'
/// `domains`, and naming the domain when no part has it. Returns the provenance.
nlohmann::json merge_experts(const T2TrainOptions& options,
                             const std::vector<std::filesystem::path>& parts,
                             std::ostream& progress, const std::string& command,
                             const std::string& config_text);

/// Recomputes the dispatch of out_dir/experts.ckpt, keeping z and α: the mean prototype of each
/// class and the multi-prototype dispatch (fit_dispatch()) from the train embeddings (expert
/// domains: first prototype_documents train documents, 0 = all; few-shot domains: their k
/// few-shot documents); records the refresh (command, time, documents per class, the validation
/// grid) in the provenance and rewrites experts.ckpt and provenance.json. Returns the provenance.
nlohmann::json refresh_prototypes(const T2TrainOptions& options, std::ostream& progress,
                                  const std::string& command);

/// Recomputes the CEM mixture α of every few-shot class of out_dir/experts.ckpt (z and the
/// prototypes unchanged) with the options' CEM settings (identity component included unless
/// disabled); records it in the provenance ("fewshot_refreshes") and rewrites experts.ckpt and
/// provenance.json. Returns the provenance.
nlohmann::json refresh_fewshot(const T2TrainOptions& options, std::ostream& progress,
                               const std::string& command);

/// Task embeddings of documents by class: [classes][documents][dim] (see task_embedding()).
using ClassEmbeddings = std::vector<std::vector<std::vector<float>>>;

/// Multi-prototype dispatch fit: for every normalisation (centring; within-class whitening for
/// each shrinkage in `shrinkages`) and every k in `ks`, the transform and the k-means centroids
/// of each class are fitted on `train` only, and the validation accuracy of classify_nearest()
/// on `val` is measured; the setting with the best overall validation accuracy (ties: the best
/// worst-class accuracy, then the earlier, simpler setting) is written into set.dispatch_transform
/// and the classes' prototypes. `train` and `val` are indexed like set.classes. Returns the grid
/// and the choice as JSON. Throws std::invalid_argument on empty inputs or mismatched classes.
nlohmann::json fit_dispatch(ExpertSet& set, const ClassEmbeddings& train,
                            const ClassEmbeddings& val, const std::vector<std::int64_t>& ks,
                            const std::vector<double>& shrinkages, std::uint64_t seed);

struct T2EvalOptions {
  std::filesystem::path experts = "models/t2/experts.ckpt";
  std::filesystem::path base_model = "models/blt/byte_lm.bf16.ckpt";
  std::filesystem::path corpus = "data/corpus";
  std::string split = "test";
  /// Bytes per domain scored for bits per byte, from the split's first document on; 0: every
  /// byte of the split (the default: a prefix can be mostly one document).
  std::uint64_t eval_bytes = 0;
  std::int64_t embedding_positions = 256;  ///< N of the task embedding
  double temperature = 0.02;
  bool center = true;    ///< classify with prototypes centred on their mean (see classify())
  bool id_only = false;  ///< skip bits per byte (domain identification only)
  int threads = 1;
};

/// Per class (expert and few-shot domains): domain identification accuracy over the split's
/// documents from their first N positions, base and expert bits per byte and their ratio, the
/// bits-per-byte target (expert ≤ 0.98 x base, few-shot < base) and whether it is met; overall:
/// the identification accuracy over all documents and its target (≥ 0.95), and
/// `all_targets_met` (overall identification and every class's bits per byte). Each class's
/// `id_accuracy_at_least_0_95` is reported too, but is not a target.
nlohmann::json evaluate(const T2EvalOptions& options, std::ostream& progress);

}  // namespace neat::t2
