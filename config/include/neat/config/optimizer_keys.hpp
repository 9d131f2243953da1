// neat/config/optimizer_keys.hpp: the optimizer keys every trainer's `train:` block shares
// (AdamW with a linear warm-up then a cosine from lr to min_lr, global-norm clipping): one
// declaration and one reader, so that the four training schemas (blt, mvot-lm, t2, titans)
// cannot drift apart.
#pragma once

#include <cstdint>
#include <string>

#include <yaml-cpp/yaml.h>

#include "neat/config/schema.hpp"

namespace neat::config {

// References to a trainer's own option fields; their values on entry are the defaults.
struct OptimizerKeys {
  double& lr;            // peak learning rate, [0, lr_max]
  double& min_lr;        // end of the cosine, [0, lr_max]
  std::int64_t& warmup;  // linear warm-up steps, >= 0
  double& weight_decay;  // AdamW decoupled decay, [0, 1]
  double& clip;          // global gradient-norm clip, [0, 1e6]
};

// Declares lr, min_lr, warmup, weight_decay and clip on the map schema `train`, with the
// current values of `keys` as the documented defaults; `of` names what is trained in the
// descriptions (e.g. " of z"; "" for a whole model). Returns `train` for chaining. Throws
// std::logic_error when a key is already declared (Schema::optional).
Schema& add_optimizer_keys(Schema& train, const OptimizerKeys& keys, double lr_max,
                           const std::string& of = "");

// Reads those keys present in the (validated) `train` node into `keys`; absent keys keep their
// values. Throws YAML::BadConversion for a value of the wrong type.
void read_optimizer_keys(const YAML::Node& train, const OptimizerKeys& keys);

// References to a trainer's random seed and BLAS thread count; their values on entry are the
// defaults (each trainer keeps its own: threads 0 means all usable cores).
struct RunKeys {
  std::uint64_t& seed;  // [0, 2^62]
  int& threads;         // [0, 4096], 0: all usable cores
};

// Declares seed and threads on the map schema `train` with the current values of `keys` as the
// documented defaults. Returns `train` for chaining. Throws std::logic_error when a key is
// already declared.
Schema& add_run_keys(Schema& train, const RunKeys& keys);

// Reads seed and threads, when present in the (validated) `train` node, into `keys`.
void read_run_keys(const YAML::Node& train, const RunKeys& keys);

}  // namespace neat::config
