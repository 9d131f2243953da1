// Byte sizes: parsing of "512MiB"-style text and formatting for people.
#include "neat/config/bytes.hpp"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace neat::config {
namespace {

struct Unit {
  std::string_view name;
  long double factor;
};

constexpr std::array<Unit, 9> kUnits{{
    {"B", 1.0L},
    {"KiB", 1024.0L},
    {"MiB", 1024.0L * 1024.0L},
    {"GiB", 1024.0L * 1024.0L * 1024.0L},
    {"TiB", 1024.0L * 1024.0L * 1024.0L * 1024.0L},
    {"KB", 1e3L},
    {"MB", 1e6L},
    {"GB", 1e9L},
    {"TB", 1e12L},
}};

bool is_space(char c) { return c == ' ' || c == '\t'; }

[[noreturn]] void fail(std::string_view text, const std::string& why) {
  throw std::invalid_argument("'" + std::string(text) + "' is not a byte size: " + why);
}

}  // namespace

std::uint64_t parse_bytes(std::string_view text) {
  std::string_view s = text;
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  if (s.empty()) fail(text, "it is empty (write e.g. 512MiB or 4GiB)");
  if (s.front() == '-') fail(text, "it is negative");

  // Digits with at most one decimal point.
  std::size_t i = 0;
  bool seen_digit = false;
  bool seen_point = false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c >= '0' && c <= '9') {
      seen_digit = true;
    } else if (c == '.' && !seen_point) {
      seen_point = true;
    } else {
      break;
    }
  }
  if (!seen_digit) fail(text, "it does not start with a number");
  const std::string number(s.substr(0, i));
  std::string_view unit = s.substr(i);
  while (!unit.empty() && is_space(unit.front())) unit.remove_prefix(1);

  long double factor = 1.0L;
  if (!unit.empty()) {
    bool found = false;
    for (const Unit& u : kUnits) {
      if (u.name == unit) {
        factor = u.factor;
        found = true;
        break;
      }
    }
    if (!found) {
      fail(text, "unknown unit '" + std::string(unit) +
                     "' (use B, KiB, MiB, GiB, TiB, or decimal KB, MB, GB, TB)");
    }
  }

  const long double value = std::strtold(number.c_str(), nullptr) * factor;
  if (!std::isfinite(value) || value > 18446744073709551615.0L) fail(text, "larger than 2^64-1");
  const long double rounded = std::nearbyint(value);
  if (factor == 1.0L && rounded != value) fail(text, "a fraction of a byte");
  if (rounded >= 18446744073709551615.0L) return UINT64_MAX;
  return static_cast<std::uint64_t>(rounded);
}

std::string format_bytes(std::uint64_t bytes) {
  static constexpr std::array<const char*, 5> kNames{"B", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  long double value = static_cast<long double>(bytes);
  std::size_t u = 0;
  while (value >= 1024.0L && u + 1 < kNames.size()) {
    value /= 1024.0L;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2Lf", value);
  std::string out(buf);
  while (out.back() == '0') out.pop_back();
  if (out.back() == '.') out.pop_back();
  return out + " " + kNames[u];
}

}  // namespace neat::config
