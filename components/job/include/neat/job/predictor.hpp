// blt_predict: the byte LM as the main job's predictor (DESIGN.md: blt.predict). For every
// item on `tokens` it scores each target token under the variants of the byte LM the pipeline
// enables — "base" (the trained LM), "t2" (weights adapted by the document's Transformer²
// decision on `t2.adaptation`), "titans" (the Titans readout of `titans.readout` injected into
// the residual stream), "full" (both) — and publishes neat.blt.Scores on `blt.scores` when the
// item is scored. All variants of a document are scored in the same run from the same inputs,
// so the report's ablations are exact differences, not separate runs.
//
// Causality (DESIGN.md): a document waits for its adaptation and its readouts (with
// `wait_ms`), then proceeds without a missing one, counting the miss and scoring that variant
// as the base LM would. The readout rows come from the titans node (MAG form: row p read with
// the latent of patch p - 1 from memory written with earlier patches only; titans/mag.hpp);
// position i of the document receives the row of the patch that contains i.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/messages.hpp"
#include "neat/components/adaptive_batch.hpp"
#include "neat/components/component.hpp"
#include "neat/nn/modules.hpp"
#include "neat/t2/experts.hpp"
#include "neat/titans/mag.hpp"

namespace neat::job {

using blt::WindowHook;

class Predictor : public components::Component {
 public:
  /// `config:` keys: model, tokens, output, wait_ms, batch (initial windows per forward pass;
  /// adaptive up to max_batch), max_batch, adaptation (topic; "" disables the t2 variant),
  /// experts (Transformer² expert set, models/t2/experts.ckpt), readout (topic of the titans
  /// node's MAG readouts; "" disables the "titans" and "full" variants), injection (the MAG
  /// model whose gate and projection add the readout, models/titans/mag_ngram.ckpt).
  static config::Schema schema();
  void configure(const YAML::Node& config, components::Context& ctx) override;
  std::vector<std::string> publishes() const override { return {output_}; }
  bool step(components::Context& ctx) override;
  nlohmann::json stats() const override;
  bool degrade(const std::string& action) override;

 private:
  /// The titans node's readout rows of one document, gathered slice by slice.
  struct Readouts {
    std::vector<float> rows;            ///< row-major [patches, memory_dim]
    std::vector<std::int64_t> starts;   ///< patch start positions
    bool last = false, broken = false;  ///< complete; a slice out of order or misshapen
  };
  struct Pending {
    std::string path, modality;
    std::vector<std::int32_t> tokens;
    std::uint64_t item_bytes = 0;
    std::chrono::steady_clock::time_point arrived, deadline;
    std::optional<blt::Adaptation> adaptation;
  };
  /// Position -> patch index of a document of `positions` tokens from its readouts' starts;
  /// empty when the readouts are missing, broken or do not cover the document.
  std::vector<std::int64_t> patch_of_position(const Readouts& r, std::size_t positions) const;
  /// Whether every input the enabled variants need has arrived.
  bool ready(std::uint64_t doc_id, const Pending& doc) const;
  void score(components::Context& ctx, std::uint64_t doc_id, Pending& doc);

  std::string output_ = "blt.scores";
  std::chrono::milliseconds wait_{60000};
  std::shared_ptr<const nn::TransformerLM<float>> model_;  ///< blt::shared_byte_lm
  // Transformer² variant: the experts, the base model's SVD factors, the composed-weight cache
  // and a model copy the adapted weights are written into (Sun et al. 2025, pass 2).
  std::string adaptation_topic_;
  std::optional<t2::ExpertSet> experts_;
  std::shared_ptr<const t2::ModelFactors> factors_;  ///< t2::shared_model_factors
  std::shared_ptr<t2::WeightCache> cache_;           ///< t2::shared_weight_cache
  /// float32: a full copy; bf16: own float32 MLP matrices, the rest shared with model_.
  std::unique_ptr<nn::TransformerLM<float>> adapted_;
  std::map<std::uint64_t, blt::Adaptation> early_adaptations_;  ///< before their tokens
  std::uint64_t missed_adaptations_ = 0;
  // Titans variant: the gated injection of the trained MAG model; the readouts come from the
  // titans node on `readout_topic_`.
  std::string readout_topic_;
  std::optional<titans::MagInjection<float>> injection_;
  std::map<std::uint64_t, Readouts> readouts_;  ///< by document, also before its tokens
  std::uint64_t missed_readouts_ = 0;
  std::map<std::uint64_t, Pending> pending_;
  std::optional<components::AdaptiveBatch> batch_;
  bool eos_seen_ = false, eos_sent_ = false;
  std::uint64_t eos_items_ = 0, eos_bytes_ = 0;
  // statistics (also the progress of `neat run`)
  std::uint64_t items_done_ = 0, bytes_ = 0, rejected_ = 0;
  std::map<std::string, double> bits_;  ///< per variant, over all documents
  double busy_seconds_ = 0.0;
  std::vector<double> latency_ms_;  ///< per item: tokens arrived -> scores published
  std::uint64_t tokens_scored_ = 0;
};

}  // namespace neat::job
