// bfloat16 <-> float32 bit conversions, inline for the loops that widen or round whole weight
// matrices (tensor.cpp's float_to_bf16 / bf16_to_float, checkpoint storage, Bf16Matrix, the
// TokenDecoder's bf16 matvec). Internal to neat::nn.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace neat::nn::detail {

/// The float a bfloat16 stands for: its bits are the float's high half (exact).
inline float bf16_bits_to_float(std::uint16_t bits) {
  const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// float -> bfloat16, rounded to nearest even; NaN stays a (quiet) NaN.
inline std::uint16_t float_to_bf16_bits(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if (std::isnan(value)) return static_cast<std::uint16_t>((bits >> 16) | 0x40);
  const std::uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

/// out[i] = bf16_bits_to_float(in[i]) for i < n.
inline void widen_bf16(const std::uint16_t* in, std::int64_t n, float* out) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_bits_to_float(in[i]);
}

}  // namespace neat::nn::detail
