// A small Titans memory configuration for finite-difference and equivalence tests in float64:
// 5-dim inputs, a 2-layer memory of width 4 (hidden 3), chunks of 2, one persistent vector.
#pragma once

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

}  // namespace neat::titans::testing
