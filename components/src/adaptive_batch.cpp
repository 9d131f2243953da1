// AdaptiveBatch: multiplicative search for the throughput knee under a memory ceiling.
#include "neat/components/adaptive_batch.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace neat::components {

AdaptiveBatch::AdaptiveBatch(AdaptiveBatchOptions o)
    : options_(o), size_(o.initial), ceiling_(o.max) {
  if (!(1 <= o.min && o.min <= o.initial && o.initial <= o.max) || !(o.gain >= 1.0)) {
    throw std::invalid_argument("AdaptiveBatch: need 1 <= min (" + std::to_string(o.min) +
                                ") <= initial (" + std::to_string(o.initial) + ") <= max (" +
                                std::to_string(o.max) + ") and gain >= 1");
  }
}

int AdaptiveBatch::observe(double items_per_second, bool memory_ok) {
  ++observations_;
  if (!memory_ok) {
    size_ = std::max(options_.min, size_ / 2);
    ceiling_ = size_;
    settled_ = true;
    since_settled_ = 0;
    last_throughput_ = 0.0;
    return size_;
  }
  if (settled_) {
    if (options_.probe_every > 0 && ++since_settled_ >= options_.probe_every && size_ < ceiling_) {
      settled_ = false;  // probe one step up again: the load may have changed
      last_throughput_ = items_per_second;
      size_ = std::min(ceiling_, size_ * 2);
    }
    return size_;
  }
  if (last_throughput_ > 0.0 && !(items_per_second > options_.gain * last_throughput_)) {
    size_ = std::max(options_.min, size_ / 2);  // the last doubling did not pay: go back
    settled_ = true;
    since_settled_ = 0;
    return size_;
  }
  last_throughput_ = items_per_second;
  if (size_ >= ceiling_) {
    settled_ = true;
    since_settled_ = 0;
    return size_;
  }
  size_ = std::min(ceiling_, size_ * 2);
  return size_;
}

int AdaptiveBatch::shrink() {
  size_ = std::max(options_.min, size_ / 2);
  ceiling_ = size_;
  settled_ = true;
  since_settled_ = 0;
  return size_;
}

nlohmann::json AdaptiveBatch::to_json() const {
  return {{"size", size_},
          {"ceiling", ceiling_},
          {"settled", settled_},
          {"observations", observations_}};
}

}  // namespace neat::components
