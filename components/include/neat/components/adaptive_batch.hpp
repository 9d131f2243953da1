// Adaptive batch size for a component's numerical work (the profile's `batch_size` is the
// starting point): grow while the measured throughput rises and memory allows, shrink under
// budget pressure. Multiplicative steps (x2 / ÷2), so a few observations find the knee of the
// throughput curve; a degrade command lowers the ceiling for the rest of the run.
#pragma once

#include <nlohmann/json.hpp>

namespace neat::components {

struct AdaptiveBatchOptions {
  int min = 1;
  int max = 64;
  int initial = 1;
  /// Growth continues only while throughput(2b) > gain x throughput(b).
  double gain = 1.05;
  /// After settling, try one size up again every this many observations (0: never).
  int probe_every = 0;
};

class AdaptiveBatch {
 public:
  /// Throws std::invalid_argument unless 1 <= min <= initial <= max and gain >= 1.
  explicit AdaptiveBatch(AdaptiveBatchOptions options);

  /// The batch size to use for the next unit of work.
  int size() const { return size_; }

  /// Reports the throughput (items per second, > 0) measured at size() and whether memory is
  /// within the component's grant; returns the next size. Memory pressure halves the size and
  /// caps growth at the new size; a throughput gain below `gain` after a growth step reverts
  /// to the previous size and settles there.
  int observe(double items_per_second, bool memory_ok = true);

  /// Budget pressure from the coordinator (degrade command): halves the size and the ceiling.
  int shrink();

  /// size, ceiling, settled, best throughput, observations: for stats().
  nlohmann::json to_json() const;

 private:
  AdaptiveBatchOptions options_;
  int size_;
  int ceiling_;
  bool settled_ = false;
  double last_throughput_ = 0.0;  ///< at the size before the current growth step
  int observations_ = 0, since_settled_ = 0;
};

}  // namespace neat::components
