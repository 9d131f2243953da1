// Entropy patching (BLT, Pagnoni et al. 2024, arXiv 2412.09871, §2.3 and §4.2): where a byte
// stream is cut into variable-length patches.
//
// Conventions, as in the paper's reference figures (Figure 4): a document's token stream is
// BOS, its bytes, EOS; position i holds token i, and entropies[i] is H_i = -sum_v p(v) ln p(v),
// in nats, of the next-token distribution predicted AT position i (i.e. for token i+1). So
// the entropy of predicting token k is H_{k-1}.
//
// Rules (`start[k]` = position k begins a patch):
//  - global (§2.3, eq. 3):     k >= 2 starts iff H_{k-1} > theta_g;
//  - monotonic (§2.3, eq. 4):  k >= 2 starts iff H_{k-1} - H_{k-2} > theta_r (approximate
//                              monotonicity: the entropy of predicting token k rose by more
//                              than theta_r over that of predicting token k-1);
//  - combined:                 global or monotonic;
//    (for the three entropy rules positions 0 and 1 always start);
//  - space (§2.2):             k >= 1 starts iff token k-1 is a byte that is not a letter, a
//                              digit or a UTF-8 continuation byte (0x80..0xBF) (position 0
//                              starts; special tokens >= 256 count as non-letters);
//  - stride (static, §2.1):    k starts iff k is a multiple of the stride.
// An optional maximum patch length forces a start when the current patch has reached it.
// Invariant: the patch lengths of a sequence sum to its length; patching a prefix gives a
// prefix of the patches (every rule looks only backwards).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace neat::blt {

enum class PatchMode { global, monotonic, combined, space, stride };

/// "global", "monotonic", "combined", "space", "stride"; throws std::invalid_argument.
PatchMode parse_patch_mode(std::string_view name);
std::string_view patch_mode_name(PatchMode mode);

struct PatcherOptions {
  PatchMode mode = PatchMode::global;
  double threshold = 1.335442066192627;  ///< theta_g, nats (global, combined)
  double relative_threshold = 0.5;       ///< theta_r, nats (monotonic, combined)
  std::size_t stride = 4;                ///< tokens per patch (stride)
  std::size_t max_patch_length = 0;      ///< tokens; 0 means no limit
};

/// A patch: positions [start, start + length).
struct Patch {
  std::size_t start = 0;
  std::size_t length = 0;
  bool operator==(const Patch&) const = default;
};

/// Decides patch starts one position at a time, from the past only, so a stream can be
/// patched as it arrives. Call reset() at a document boundary.
class StreamPatcher {
 public:
  explicit StreamPatcher(PatcherOptions options);
  /// Position k of the current document: `token` is token k, `entropy_before` is H_{k-1}
  /// (ignored for k = 0). Returns whether k starts a patch.
  bool next(std::int32_t token, double entropy_before);
  void reset();
  const PatcherOptions& options() const { return options_; }

 private:
  PatcherOptions options_;
  std::size_t position_ = 0;
  std::size_t patch_length_ = 0;
  std::int32_t previous_token_ = -1;
  double previous_entropy_ = 0.0;  ///< H_{k-2} when deciding k
};

/// Patch-start flags (0/1) for a whole sequence. `entropies[i]` = H_i (nats); `tokens` may be
/// empty for the entropy rules and stride, and must have entropies.size() elements for space.
/// Throws std::invalid_argument on mismatched sizes.
std::vector<std::uint8_t> patch_starts(std::span<const double> entropies,
                                       std::span<const std::int32_t> tokens,
                                       const PatcherOptions& options);

/// Patches from start flags (the first position must start one).
std::vector<Patch> patches_from_starts(std::span<const std::uint8_t> starts);

/// Result of compute-budget calibration.
struct Calibration {
  double threshold = 0.0;         ///< the theta found (nats)
  double mean_patch_bytes = 0.0;  ///< the mean patch size it achieves on the sample
  int iterations = 0;
};

/// Finds the threshold (theta_g for global/combined, theta_r for monotonic) whose mean patch
/// size over `sample` (one entropy sequence per document, tokens as in patch_starts) is closest
/// to `target_mean_patch` tokens, by bisection (mean patch size grows monotonically with the
/// threshold). Throws std::invalid_argument for a non-entropy mode, an empty sample or a
/// target below 1.
Calibration calibrate_threshold(const std::vector<std::vector<double>>& sample,
                                const std::vector<std::vector<std::int32_t>>& tokens,
                                PatcherOptions options, double target_mean_patch,
                                int max_iterations = 60);

}  // namespace neat::blt
