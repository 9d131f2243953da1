// The `blt` pipeline component (BLT, Pagnoni et al. 2024, arXiv 2412.09871): the entropy model
// of BLT on the bus. It subscribes `tokens` (neat.Tokens from mvot), decodes each item through
// the shipped byte LM with the KV cache (EntropyStream), cuts it into entropy patches (§2.3) and
// publishes per document:
//   blt.doc_embedding  DocEmbedding + f32 "embedding" [dim]: mean final hidden state over the
//                      first N positions (sent once, as soon as N positions are decoded);
//   blt.patches        Patches slices of at most patches_per_message patches + f32 "latents"
//                      [n, dim]: mean final hidden state over each patch's positions;
//   blt.stats          BltStats every stats_every documents and at the end of the stream;
// and forwards EndOfStream on blt.patches (then reports itself finished, with its statistics as
// the summary).
// A text item is the document BOS, bytes, EOS; an image item is mvot's BOI codes EOI sequence
// as it is (each image is delimited already). The context restarts at every document.
// Invariant: bad input (missing or mistyped tensor, token outside the model's vocabulary,
// token_count that disagrees with the tensor) is rejected with a logged reason and counted;
// nothing throws out of a handler, and no other document is lost.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "neat/blt/entropy_stream.hpp"
#include "neat/blt/messages.hpp"
#include "neat/blt/patcher.hpp"
#include "neat/components/component.hpp"
#include "neat/components/messages.hpp"
#include "neat/components/registry.hpp"

namespace neat::blt {

/// A patches message with its tensor "latents" (row-major [patch_count, dim]).
struct PatchSlice {
  Patches patches;
  std::vector<float> latents;
};

/// A doc embedding message with its tensor "embedding" ([dim]).
struct DocEmbeddingOut {
  DocEmbedding message;
  std::vector<float> embedding;
};

/// What one call of BltComponent::process() or end_of_stream() has to publish, in order:
/// embeddings first, then the patch slices, then the statistics (if due).
struct BltOutput {
  std::vector<DocEmbeddingOut> embeddings;
  std::vector<PatchSlice> slices;
  std::optional<BltStats> stats;
  std::string rejected;  ///< non-empty: the item was rejected for this reason (and counted)
};

class BltComponent : public components::Component {
 public:
  /// `config:` keys: model, mode, threshold, relative_threshold, stride,
  /// target_mean_patch_size, calibration_documents, max_patch_length, patches_per_message,
  /// doc_embedding_positions, context, stats_every, input, patches_topic, embedding_topic,
  /// stats_topic (documented in docs/configuration.md and docs/blt.md).
  static config::Schema schema();

  /// Reads the config, loads the byte LM (throws nn::CheckpointError or std::runtime_error
  /// naming the file; std::invalid_argument for an unusable combination of keys, e.g. a
  /// target_mean_patch_size with space or stride patching) and subscribes.
  void configure(const YAML::Node& config, components::Context& ctx) override;
  std::vector<std::string> publishes() const override {
    return {patches_topic_, embedding_topic_, stats_topic_};
  }
  /// Counters, calibration, context window and "memory" (tensor bytes allocated under this
  /// component's nn::MemoryTag: model weights, KV cache, activations).
  nlohmann::json stats() const override;
  /// "shorter_window": halves the context window (restart every N/2 tokens, at least 16) and
  /// reallocates the KV cache accordingly. "smaller_batch" and others: false (the entropy
  /// model decodes at batch 1 already).
  bool degrade(const std::string& action) override;

  /// Processes one whole item (what the `tokens` handler does; tests call it directly).
  /// `tokens` are the item's tokens as mvot sent them. Never throws for bad input: it fills
  /// BltOutput::rejected and counts the rejection.
  BltOutput process(const components::Tokens& item, std::span<const std::int32_t> tokens);
  /// End of the input stream: patches documents still waiting for the calibration and returns
  /// the final statistics.
  BltOutput end_of_stream();
  /// Current statistics (bits per byte, rates and mean patch size so far).
  BltStats current_stats() const;
  /// The patcher options in use (threshold after calibration), and the calibration result if
  /// one ran.
  const PatcherOptions& patcher_options() const { return patcher_; }
  const std::optional<Calibration>& calibration() const { return calibration_; }
  /// The entropy model (loaded by configure).
  const nn::TransformerLM<float>& model() const { return *model_; }
  /// Rejected items so far.
  std::uint64_t rejected() const { return rejected_; }

 private:
  /// One document: the item and its token stream (text: BOS bytes EOS; image: as sent);
  /// `entropies` are filled while it waits in the calibration sample.
  struct Document {
    components::Tokens item;
    std::vector<std::int32_t> tokens;
    std::vector<double> entropies;
  };
  std::string reject(const std::string& reason);
  /// Decodes `doc` from a fresh context: with `embed`, adds its DocEmbedding to `out` as soon as
  /// N positions are decoded; with `patch`, patches it, pools latents, adds its slices and
  /// counts it in the statistics; appends H_i to `entropies` when given.
  void run_document(const Document& doc, bool embed, bool patch, BltOutput& out,
                    std::vector<double>* entropies);
  /// Bisection on the pending sample (BLT compute budget), then patches the pending documents.
  void calibrate(BltOutput& out);

  std::string input_ = "tokens";
  std::string patches_topic_ = "blt.patches";
  std::string embedding_topic_ = "blt.doc_embedding";
  std::string stats_topic_ = "blt.stats";
  std::string memory_tag_ = "blt";
  PatcherOptions patcher_;
  std::optional<double> target_mean_patch_;
  std::uint64_t calibration_documents_ = 1;
  std::uint64_t patches_per_message_ = 64;
  std::uint64_t embedding_positions_ = 256;
  std::uint64_t stats_every_ = 0;
  std::shared_ptr<const nn::TransformerLM<float>> model_;  ///< shared_byte_lm (issue 8)
  std::unique_ptr<EntropyStream> stream_;
  std::optional<Calibration> calibration_;
  std::vector<Document> pending_;  ///< calibration sample, decoded, not yet patched

  BltStats stats_;
  double nats_ = 0.0;  ///< sum over byte targets of -ln p
  double busy_seconds_ = 0.0;
  std::uint64_t rejected_ = 0;
  std::uint64_t degrades_ = 0;
};

}  // namespace neat::blt

namespace neat::components {
/// Registration of the `blt` kind: `registry.add(blt_kind());`.
ComponentKind blt_kind();
}  // namespace neat::components
