// A small Titans memory configuration for finite-difference and equivalence tests in float64:
// 5-dim inputs, a 2-layer memory of width 4 (hidden 3), chunks of 2, one persistent vector; and
// random token documents cut into short patches (copy values, n-gram keys).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "neat/titans/memory.hpp"

namespace neat::titans::testing {

inline MemoryConfig small_memory_config() {
  MemoryConfig c;
  c.input_dim = 5;
  c.dim = 4;
  c.depth = 2;
  c.hidden = 3;
  c.chunk = 2;
  c.persistent = 1;
  c.theta_max = 0.5;
  c.seed = 3;
  return c;
}

// A document of n tokens (values < vocab) cut into patches of 1..3 tokens.
struct Doc {
  std::vector<std::int32_t> tokens;
  std::vector<std::int64_t> starts;
};

inline Doc random_doc(std::int64_t n, std::int64_t vocab, std::mt19937_64& rng) {
  Doc d;
  for (std::int64_t i = 0; i < n; ++i) d.tokens.push_back(static_cast<std::int32_t>(rng() % vocab));
  for (std::int64_t i = 0; i < n; i += 1 + static_cast<std::int64_t>(rng() % 3))
    d.starts.push_back(i);
  return d;
}

// Patch lengths and tokens of patches [at, at + n) of d (a document of `total` tokens), as a
// blt.patches slice carries them.
struct Slice {
  std::vector<std::uint32_t> lengths;
  std::vector<std::int32_t> tokens;
};

inline Slice slice_of(const Doc& d, std::int64_t total, std::int64_t at, std::int64_t n) {
  Slice out;
  const auto P = static_cast<std::int64_t>(d.starts.size());
  for (std::int64_t p = at; p < at + n; ++p) {
    const auto s = d.starts[static_cast<std::size_t>(p)];
    const std::int64_t end = p + 1 < P ? d.starts[static_cast<std::size_t>(p + 1)] : total;
    out.lengths.push_back(static_cast<std::uint32_t>(end - s));
    out.tokens.insert(out.tokens.end(), d.tokens.begin() + s, d.tokens.begin() + end);
  }
  return out;
}

// Causality of readouts over tokens: for every token t >= 1 of d changed to (t + 1) % vocab,
// every readout row p (width `dim`) with start(p) < t must stay bit-identical (row p may use
// tokens up to start(p) only); returns whether some later row changed at all (the tokens do
// reach the readouts).
inline bool rows_before_each_token_unchanged(
    const Doc& d, std::int64_t vocab, std::int64_t dim,
    const std::function<std::vector<double>(const Doc&)>& readouts) {
  const auto P = static_cast<std::int64_t>(d.starts.size());
  const auto base = readouts(d);
  bool some_changed = false;
  for (std::size_t t = 1; t < d.tokens.size(); ++t) {
    Doc changed = d;
    changed.tokens[t] = static_cast<std::int32_t>((changed.tokens[t] + 1) % vocab);
    const auto r = readouts(changed);
    for (std::int64_t p = 0; p < P; ++p) {
      for (std::int64_t c = 0; c < dim; ++c) {
        const auto i = static_cast<std::size_t>(p * dim + c);
        if (d.starts[static_cast<std::size_t>(p)] < static_cast<std::int64_t>(t)) {
          EXPECT_EQ(r[i], base[i]) << "token " << t << " reached the readout of patch " << p;
        } else if (r[i] != base[i]) {
          some_changed = true;
        }
      }
    }
  }
  return some_changed;
}

}  // namespace neat::titans::testing
