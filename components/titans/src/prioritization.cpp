// Surprise-based memory prioritisation: budget -> keep fraction -> surprise quantile threshold.
#include "neat/titans/prioritization.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace neat::titans {

ChunkBytes chunk_working_bytes(const MemoryConfig& c, std::int64_t n, std::size_t elem) {
  std::int64_t weights = 0, activations = 0;
  for (std::int64_t l = 0; l < c.depth; ++l) {
    const std::int64_t in = l == 0 ? c.dim : c.hidden, out = l + 1 == c.depth ? c.dim : c.hidden;
    weights += in * out;
    activations += n * out * (l + 1 == c.depth ? 1 : 2);  // z_l and silu(z_l)
  }
  ChunkBytes b;
  const auto e = static_cast<std::int64_t>(elem);
  b.retrieval = e * (n * c.dim + activations);  // q and the forward
  // k, v, forward, error + delta per layer, three weighted gradients, M and S out.
  b.update = e * (2 * n * c.dim + activations + 2 * activations + 3 * weights + 2 * weights);
  return b;
}

double keep_fraction_for_budget(std::int64_t budget_bytes, std::int64_t state_bytes,
                                const ChunkBytes& chunk) {
  if (budget_bytes <= 0) return 1.0;
  if (chunk.update <= 0) return 1.0;
  const double r = static_cast<double>(budget_bytes - state_bytes - chunk.retrieval) /
                   static_cast<double>(chunk.update);
  return std::clamp(r, 0.0, 1.0);
}

SurprisePrioritizer::SurprisePrioritizer(std::size_t window) : window_(window) {
  if (window_ == 0) throw std::invalid_argument("titans: prioritisation window must be >= 1");
}

void SurprisePrioritizer::set_keep_fraction(double r) {
  if (!std::isfinite(r)) throw std::invalid_argument("titans: keep fraction must be finite");
  keep_ = std::clamp(r, 0.0, 1.0);
}

double SurprisePrioritizer::threshold() const {
  if (keep_ >= 1.0 || recent_.empty()) return 0.0;
  std::vector<double> v(recent_.begin(), recent_.end());
  const auto rank = static_cast<std::size_t>(
      std::min<double>(std::floor((1.0 - keep_) * static_cast<double>(v.size())), v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rank), v.end());
  return v[rank];
}

bool SurprisePrioritizer::admit(double surprise) {
  bool write = true;
  if (keep_ <= 0.0) {
    write = false;
  } else if (keep_ < 1.0 && !recent_.empty()) {
    write = surprise >= threshold();
  }
  ++seen_;
  if (!write) ++skipped_;
  recent_.push_back(surprise);
  if (recent_.size() > window_) recent_.pop_front();
  return write;
}

}  // namespace neat::titans
