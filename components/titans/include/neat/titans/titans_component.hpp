// The `titans` pipeline component (Behrouz et al. 2024, §3): reads patch latents from
// `blt.patches`, publishes for every slice the readout of memory written by earlier chunks only
// (`titans.readout`, neat.titans.Readout + tensor "readout" f32 [n, dim]) and writes each full
// chunk into the memory, after asking the coordinator for the step (test-time learning under
// grants; theta is scaled by the granted learning rate / lr_reference). Two forms:
//  - memory shape from the YAML keys: y_p = M*(q_p), chunks of the latents x_p (eq. 12-18);
//  - `model:` a trained MAG model (models/titans/mag_ngram.ckpt or mag.ckpt, titans/mag.hpp):
//    the memory's parameters and shape from the file, readout r_p = M*(q(x_{p-1})) of the
//    associations x_j -> x_{j+1} ("what followed this context"; MagStream), which blt_predict
//    injects through the model's gate — the main job's "+Titans" variant. A model with byte
//    ("copy") values also reads the slice's patch lengths and tokens from blt.patches.
// Statistics (`titans.stats`) at the end of every document and of the stream.
// Invariants: learning uses the component's own loss only; bad input (a slice without a
// well-formed "latents" tensor, non-finite values) is rejected with a PayloadError, counted, and
// the memory is left as it was.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "neat/bus/typed.hpp"
#include "neat/components/component.hpp"
#include "neat/components/registry.hpp"
#include "neat/titans/mag.hpp"
#include "neat/titans/memory.hpp"
#include "neat/titans/prioritization.hpp"

namespace neat::titans {

/// Running statistics of the memory (topic `titans.stats`). Means are over the chunks since the
/// previous report.
struct TitansStats {
  static constexpr std::string_view kSchema = "neat.titans.Stats";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t documents = 0;
  std::uint64_t patches = 0;
  std::uint64_t chunks = 0;       ///< chunks that reached a write decision (total)
  std::uint64_t updates = 0;      ///< chunk updates written (total)
  std::uint64_t skipped = 0;      ///< skipped by surprise prioritisation (total)
  std::uint64_t discarded = 0;    ///< refused by the coordinator (discard or rollback; total)
  double loss = 0.0;              ///< mean inner loss l = ||M(k) - v||^2 per patch
  double surprise = 0.0;          ///< mean ||grad of the chunk's mean loss||
  double update_norm = 0.0;       ///< mean ||M_end - M_start|| of written chunks
  double skip_rate = 0.0;         ///< skipped / chunks (total)
  double keep_fraction = 1.0;     ///< fraction of chunks the budget allows
  std::int64_t memory_bytes = 0;  ///< nn allocator, the component's tag, now
  std::int64_t peak_memory_bytes = 0;
  std::int64_t state_bytes = 0;  ///< M, S and pending latents
  std::uint64_t rejected = 0;    ///< malformed slices rejected
  bool final = false;            ///< end-of-stream report
  MSGPACK_DEFINE_MAP(documents, patches, chunks, updates, skipped, discarded, loss, surprise,
                     update_norm, skip_rate, keep_fraction, memory_bytes, peak_memory_bytes,
                     state_bytes, rejected, final);
};

class TitansComponent : public components::Component {
 public:
  /// `config:` keys: input, output, stats_topic, memory_scope (document | stream), budget_bytes,
  /// lr_reference, prioritization_window, model (a MAG model file: memory parameters and shape
  /// from it), and otherwise the memory shape (input_dim, dim, depth, hidden, chunk,
  /// persistent, l2_norm, theta_max, eta_max, alpha_max, seed). Throws std::runtime_error for
  /// an unreadable or corrupt model file (naming it).
  static config::Schema schema();
  void configure(const YAML::Node& config, components::Context& ctx) override;
  std::vector<std::string> publishes() const override { return {output_, stats_topic_}; }
  nlohmann::json stats() const override;
  /// msgpack of (M, S, pending latents, step, document, started); restore() rejects a snapshot
  /// of another shape with std::runtime_error naming the field.
  std::string snapshot() const override;
  void restore(std::string_view bytes) override;
  /// skip_low_surprise: halves the keep fraction (floor 1/16); shrink_chunks: halves C
  /// (floor 1). Returns false for another action.
  bool degrade(const std::string& action) override;

  /// Processes one slice (also used by tests without a bus): latents (n, input_dim) row-major;
  /// lengths (n) and tokens (their sum) of the slice's patches, required by a MAG model with
  /// byte values and unused otherwise. Returns the readout (n, dim) row-major. Throws
  /// bus::PayloadError on malformed input (counted; the memory is left as it was).
  std::vector<float> process(components::Context& ctx, std::uint64_t doc_id, bool last,
                             const std::vector<float>& latents, std::int64_t n,
                             const std::vector<std::uint32_t>& lengths = {},
                             const std::vector<std::int32_t>& tokens = {});
  TitansStats current_stats() const;
  const NeuralMemory<float>& memory() const { return *memory_; }
  /// The memory state in use (the MAG stream's in the `model:` form).
  const MemoryState<float>& state() const { return mag_ ? mag_->state() : state_; }
  /// Whether the component runs a trained MAG model (`model:` key).
  bool mag() const { return mag_.has_value(); }

 private:
  double decide(components::Context& ctx, const ChunkReport& report);
  std::string input_ = "blt.patches", output_ = "titans.readout", stats_topic_ = "titans.stats";
  std::string name_ = "titans";
  bool stream_scope_ = false;
  std::int64_t budget_bytes_ = 0;
  double lr_reference_ = 1.0;
  std::optional<NeuralMemory<float>> memory_;
  MemoryState<float> state_;
  std::optional<MagStream<float>> mag_;  ///< the `model:` form (reads memory_, values_)
  ByteValues<float> values_;             ///< the MAG model's byte values (undefined: latents)
  NgramKeys keys_;                       ///< the MAG model's n-gram keys (undefined: none)
  /// Width of the blt.patches latents: the memory's input width less the n-gram keys'.
  std::int64_t latent_width() const;
  bool started_ = false;
  std::unique_ptr<SurprisePrioritizer> prioritizer_;
  double degrade_keep_ = 1.0;  ///< cap on the keep fraction set by degrade commands
  std::uint64_t request_step_ = 0;
  TitansStats totals_;
  double sum_loss_ = 0, sum_surprise_ = 0, sum_update_ = 0;
  std::uint64_t window_chunks_ = 0, window_updates_ = 0;
};

}  // namespace neat::titans

namespace neat::components {
/// Registration of the `titans` kind: `registry.add(titans_kind());`.
ComponentKind titans_kind();
}  // namespace neat::components
