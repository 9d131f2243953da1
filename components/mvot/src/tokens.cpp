// Unified token space mappings (bytes, specials, image codes), range-checked.
#include "neat/mvot/tokens.hpp"

#include <stdexcept>
#include <string>

namespace neat::mvot {

std::vector<std::int32_t> bytes_to_tokens(std::span<const std::uint8_t> bytes) {
  return {bytes.begin(), bytes.end()};
}

std::vector<std::uint8_t> tokens_to_bytes(std::span<const std::int32_t> tokens) {
  std::vector<std::uint8_t> out(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] > 255) {
      throw std::out_of_range("tokens_to_bytes: token " + std::to_string(tokens[i]) +
                              " at position " + std::to_string(i) + " is not a byte (0..255)");
    }
    out[i] = static_cast<std::uint8_t>(tokens[i]);
  }
  return out;
}

std::int32_t code_to_token(std::int32_t code, int k) {
  if (code < 0 || code >= k) {
    throw std::out_of_range("code_to_token: code " + std::to_string(code) + " outside [0, " +
                            std::to_string(k) + ")");
  }
  return kFirstImageToken + code;
}

std::int32_t token_to_code(std::int32_t token, int k) {
  if (token < kFirstImageToken || token >= kFirstImageToken + k) {
    throw std::out_of_range("token_to_code: token " + std::to_string(token) +
                            " is not an image code token [261, " +
                            std::to_string(kFirstImageToken + k) + ")");
  }
  return token - kFirstImageToken;
}

std::vector<std::int32_t> image_codes_to_tokens(std::span<const std::int32_t> codes, int k) {
  std::vector<std::int32_t> out;
  out.reserve(codes.size() + 2);
  out.push_back(kBoi);
  for (auto c : codes) out.push_back(code_to_token(c, k));
  out.push_back(kEoi);
  return out;
}

std::vector<std::int32_t> tokens_to_image_codes(std::span<const std::int32_t> tokens, int k) {
  if (tokens.size() < 2 || tokens.front() != kBoi || tokens.back() != kEoi) {
    throw std::out_of_range(
        "tokens_to_image_codes: an image item must be BOI (259) codes EOI (260)");
  }
  std::vector<std::int32_t> out;
  out.reserve(tokens.size() - 2);
  for (std::size_t i = 1; i + 1 < tokens.size(); ++i) out.push_back(token_to_code(tokens[i], k));
  return out;
}

}  // namespace neat::mvot
