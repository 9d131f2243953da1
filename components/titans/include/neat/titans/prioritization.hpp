// Memory prioritisation by surprise (Titans §3.1: surprising events are the ones worth
// memorising): under a tight byte budget only the most surprising chunk updates are written.
// The budget fixes the fraction of chunks that may be written; the surprise threshold is the
// matching quantile of the surprises of recent chunks, so the skip rate follows the budget.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

#include "neat/titans/memory.hpp"

namespace neat::titans {

/// Bytes one chunk of n patches allocates for retrieval only (queries and the memory's
/// activations for them) and, additionally, for a write (keys, values, activations and
/// deltas of the inner backward, three weighted gradients, new M and S), for element size
/// elem (4 for f32). Counted from the shapes of memory.cpp's computation.
struct ChunkBytes {
  std::int64_t retrieval = 0;
  std::int64_t update = 0;
};
ChunkBytes chunk_working_bytes(const MemoryConfig& config, std::int64_t n, std::size_t elem);

/// Fraction of chunk updates that fit a budget of budget_bytes per chunk:
/// clamp((budget - state - retrieval) / update, 0, 1); 1 when budget_bytes <= 0 (no budget).
double keep_fraction_for_budget(std::int64_t budget_bytes, std::int64_t state_bytes,
                                const ChunkBytes& chunk);

/// Admits or skips chunk updates by their surprise (gradient norm).
class SurprisePrioritizer {
 public:
  /// window: how many recent surprises define the threshold (>= 1).
  explicit SurprisePrioritizer(std::size_t window = 64);
  /// Fraction r in [0, 1] of chunks to write; r >= 1 writes all (no threshold).
  void set_keep_fraction(double r);
  double keep_fraction() const { return keep_; }
  /// The (1 - r)-quantile of the recent surprises (0 when r >= 1 or none seen yet).
  double threshold() const;
  /// Decides one chunk: written iff keep fraction >= 1, or no history yet, or
  /// surprise >= threshold() (and r > 0). Then records the surprise in the window.
  bool admit(double surprise);
  std::uint64_t seen() const { return seen_; }
  std::uint64_t skipped() const { return skipped_; }
  double skip_rate() const { return seen_ ? static_cast<double>(skipped_) / seen_ : 0.0; }

 private:
  std::size_t window_;
  double keep_ = 1.0;
  std::deque<double> recent_;
  std::uint64_t seen_ = 0, skipped_ = 0;
};

}  // namespace neat::titans
