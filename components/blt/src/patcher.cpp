// Entropy patching rules and threshold calibration (see patcher.hpp).
#include "neat/blt/patcher.hpp"

#include <cmath>
#include <stdexcept>

namespace neat::blt {

PatchMode parse_patch_mode(std::string_view name) {
  if (name == "global") return PatchMode::global;
  if (name == "monotonic") return PatchMode::monotonic;
  if (name == "combined") return PatchMode::combined;
  if (name == "space") return PatchMode::space;
  if (name == "stride") return PatchMode::stride;
  throw std::invalid_argument("unknown patch mode '" + std::string(name) +
                              "' (expected global, monotonic, combined, space or stride)");
}

std::string_view patch_mode_name(PatchMode mode) {
  switch (mode) {
    case PatchMode::global:
      return "global";
    case PatchMode::monotonic:
      return "monotonic";
    case PatchMode::combined:
      return "combined";
    case PatchMode::space:
      return "space";
    case PatchMode::stride:
      return "stride";
  }
  return "?";
}

namespace {

// A byte that continues a word: ASCII letter or digit, or a UTF-8 continuation byte.
bool continues_word(std::int32_t token) {
  if (token < 0 || token > 255) return false;
  const auto b = static_cast<unsigned>(token);
  return (b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') ||
         (b >= 0x80 && b <= 0xBF);
}

}  // namespace

StreamPatcher::StreamPatcher(PatcherOptions options) : options_(options) {
  if (options_.mode == PatchMode::stride && options_.stride == 0) {
    throw std::invalid_argument("stride patching needs stride >= 1");
  }
}

void StreamPatcher::reset() {
  position_ = 0;
  patch_length_ = 0;
  previous_token_ = -1;
  previous_entropy_ = 0.0;
}

bool StreamPatcher::next(std::int32_t token, double entropy_before) {
  const std::size_t k = position_++;
  bool start = false;
  switch (options_.mode) {
    case PatchMode::global:
      start = k < 2 || entropy_before > options_.threshold;
      break;
    case PatchMode::monotonic:
      start = k < 2 || entropy_before - previous_entropy_ > options_.relative_threshold;
      break;
    case PatchMode::combined:
      start = k < 2 || entropy_before > options_.threshold ||
              entropy_before - previous_entropy_ > options_.relative_threshold;
      break;
    case PatchMode::space:
      start = k == 0 || !continues_word(previous_token_);
      break;
    case PatchMode::stride:
      start = k % options_.stride == 0;
      break;
  }
  if (options_.max_patch_length > 0 && patch_length_ >= options_.max_patch_length) start = true;
  patch_length_ = start ? 1 : patch_length_ + 1;
  if (k >= 1) previous_entropy_ = entropy_before;
  previous_token_ = token;
  return start;
}

std::vector<std::uint8_t> patch_starts(std::span<const double> entropies,
                                       std::span<const std::int32_t> tokens,
                                       const PatcherOptions& options) {
  if (options.mode == PatchMode::space && tokens.size() != entropies.size()) {
    throw std::invalid_argument("space patching needs one token per position (" +
                                std::to_string(tokens.size()) + " tokens, " +
                                std::to_string(entropies.size()) + " positions)");
  }
  if (!tokens.empty() && tokens.size() != entropies.size()) {
    throw std::invalid_argument("tokens and entropies differ in length");
  }
  StreamPatcher patcher(options);
  std::vector<std::uint8_t> starts(entropies.size());
  for (std::size_t k = 0; k < entropies.size(); ++k) {
    starts[k] = patcher.next(tokens.empty() ? 0 : tokens[k], k == 0 ? 0.0 : entropies[k - 1]);
  }
  return starts;
}

std::vector<Patch> patches_from_starts(std::span<const std::uint8_t> starts) {
  std::vector<Patch> patches;
  for (std::size_t k = 0; k < starts.size(); ++k) {
    if (starts[k] || patches.empty()) {
      patches.push_back({k, 1});
    } else {
      ++patches.back().length;
    }
  }
  return patches;
}

namespace {

double mean_patch(const std::vector<std::vector<double>>& sample,
                  const std::vector<std::vector<std::int32_t>>& tokens,
                  const PatcherOptions& options) {
  std::size_t positions = 0, patches = 0;
  for (std::size_t d = 0; d < sample.size(); ++d) {
    const std::span<const std::int32_t> t = d < tokens.size()
                                                ? std::span<const std::int32_t>(tokens[d])
                                                : std::span<const std::int32_t>();
    auto starts = patch_starts(sample[d], t, options);
    positions += starts.size();
    for (auto s : starts) patches += s;
  }
  return patches == 0 ? 0.0 : static_cast<double>(positions) / static_cast<double>(patches);
}

}  // namespace

Calibration calibrate_threshold(const std::vector<std::vector<double>>& sample,
                                const std::vector<std::vector<std::int32_t>>& tokens,
                                PatcherOptions options, double target_mean_patch,
                                int max_iterations) {
  if (options.mode == PatchMode::space || options.mode == PatchMode::stride) {
    throw std::invalid_argument("calibration applies to entropy patching only");
  }
  if (sample.empty()) throw std::invalid_argument("calibration needs a non-empty sample");
  if (!(target_mean_patch >= 1.0)) {
    throw std::invalid_argument("target mean patch size must be >= 1 token");
  }
  double& theta =
      options.mode == PatchMode::monotonic ? options.relative_threshold : options.threshold;
  // Bracket: every position starts below the smallest entropy (or difference); the largest
  // threshold needed is above the largest entropy.
  double lo = -1.0, hi = 1.0;
  for (const auto& seq : sample) {
    for (double h : seq) {
      hi = std::max(hi, std::abs(h) + 1.0);
      lo = std::min(lo, -std::abs(h) - 1.0);
    }
  }
  Calibration best;
  double best_error = INFINITY;
  for (int it = 0; it < max_iterations; ++it) {
    theta = 0.5 * (lo + hi);
    const double mean = mean_patch(sample, tokens, options);
    const double error = std::abs(mean - target_mean_patch);
    if (error < best_error) {
      best_error = error;
      best = {theta, mean, it + 1};
    }
    if (mean < target_mean_patch) {
      lo = theta;  // patches too short: raise the threshold
    } else {
      hi = theta;
    }
    if (hi - lo < 1e-9) break;
  }
  return best;
}

}  // namespace neat::blt
