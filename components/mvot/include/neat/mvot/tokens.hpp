// The unified token space of neat (DESIGN.md; MVoT, Li et al. 2025, arXiv 2501.07542, Sec. 3:
// text and image tokens interleaved in one vocabulary): 0..255 bytes, 256 BOS, 257 EOS, 258 PAD,
// 259 BOI, 260 EOI, 261 .. 261+K-1 image codes of a K-entry codebook. An image item is
// BOI code... EOI. Invariant: every mapping here is a bijection on its domain; anything outside
// it throws std::out_of_range, never clamps.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace neat::mvot {

inline constexpr std::int32_t kBos = 256;
inline constexpr std::int32_t kEos = 257;
inline constexpr std::int32_t kPad = 258;
inline constexpr std::int32_t kBoi = 259;
inline constexpr std::int32_t kEoi = 260;
inline constexpr std::int32_t kFirstImageToken = 261;

/// Vocabulary size for a K-entry codebook: 261 + K.
constexpr std::int32_t vocabulary_size(int k) { return kFirstImageToken + k; }

/// Bytes to tokens 0..255, one token per byte. (n) -> (n).
std::vector<std::int32_t> bytes_to_tokens(std::span<const std::uint8_t> bytes);
/// Tokens 0..255 back to bytes. Throws std::out_of_range naming the position of any token > 255
/// or < 0.
std::vector<std::uint8_t> tokens_to_bytes(std::span<const std::int32_t> tokens);

/// Code c in [0, k) to token 261 + c. Throws std::out_of_range otherwise.
std::int32_t code_to_token(std::int32_t code, int k);
/// Token in [261, 261 + k) to code token - 261. Throws std::out_of_range otherwise.
std::int32_t token_to_code(std::int32_t token, int k);

/// Image codes (n) to the image item BOI, 261 + c..., EOI: (n + 2). Throws on a code outside
/// [0, k).
std::vector<std::int32_t> image_codes_to_tokens(std::span<const std::int32_t> codes, int k);
/// Image item (BOI ... EOI) back to its codes. Throws std::out_of_range if it does not start
/// with BOI, end with EOI, or holds a token that is not an image code of a k-entry codebook.
std::vector<std::int32_t> tokens_to_image_codes(std::span<const std::int32_t> tokens, int k);

}  // namespace neat::mvot
