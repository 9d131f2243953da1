// AdaptiveBatch: finds the knee of a saturating throughput curve, backs off under memory
// pressure and degrade commands.
#include <gtest/gtest.h>

#include <algorithm>

#include "neat/components/adaptive_batch.hpp"

namespace neat::components {
namespace {

// Throughput of a machine that saturates at batch 8 (e.g. its cores are busy from there on).
double saturating(int batch) { return 100.0 * std::min(batch, 8); }

TEST(AdaptiveBatch, GrowsWhileThroughputRisesThenSettlesAtTheKnee) {
  AdaptiveBatch b({.min = 1, .max = 64, .initial = 1, .gain = 1.05, .probe_every = 0});
  std::vector<int> sizes;
  for (int i = 0; i < 8; ++i) sizes.push_back(b.observe(saturating(b.size())));
  // 1 -> 2 -> 4 -> 8 -> 16 (no gain) -> back to 8, then it stays.
  EXPECT_EQ(sizes, (std::vector<int>{2, 4, 8, 16, 8, 8, 8, 8}));
}

TEST(AdaptiveBatch, MemoryPressureHalvesAndCapsGrowth) {
  AdaptiveBatch b({.min = 1, .max = 64, .initial = 16, .gain = 1.05, .probe_every = 2});
  EXPECT_EQ(b.observe(1000.0, /*memory_ok=*/false), 8);
  // Even with a rising throughput it never exceeds the ceiling set under pressure.
  for (int i = 0; i < 10; ++i) EXPECT_LE(b.observe(1e6 * (i + 1)), 8);
  EXPECT_EQ(b.shrink(), 4);  // a degrade command lowers the ceiling again
  for (int i = 0; i < 10; ++i) EXPECT_LE(b.observe(1e9 * (i + 1)), 4);
  EXPECT_EQ(b.to_json()["ceiling"], 4);
}

TEST(AdaptiveBatch, ProbesUpwardAgainAfterSettlingWhenAllowed) {
  AdaptiveBatch b({.min = 1, .max = 64, .initial = 4, .gain = 1.05, .probe_every = 3});
  EXPECT_EQ(b.observe(400), 8);
  EXPECT_EQ(b.observe(400), 4);  // no gain at 8: settle at 4
  EXPECT_EQ(b.observe(400), 4);
  EXPECT_EQ(b.observe(400), 4);
  EXPECT_EQ(b.observe(400), 8);  // third observation since settling: probe once more
  EXPECT_THROW(AdaptiveBatch({.min = 2, .max = 64, .initial = 1}), std::invalid_argument);
}

}  // namespace
}  // namespace neat::components
