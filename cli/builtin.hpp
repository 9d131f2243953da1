// The registry of every built-in component kind (source, byte_stats, sink, online_unigram,
// mvot, and the neural components as they land).
#pragma once

#include "neat/components/registry.hpp"

namespace neat::cli {

const components::Registry& builtin_registry();

}  // namespace neat::cli
