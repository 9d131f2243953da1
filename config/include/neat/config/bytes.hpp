// neat/config/bytes.hpp: byte sizes written by people ("512MiB", "4GiB", "1.5GB") and back.
//
// Invariant: parse_bytes() either returns the exact number of bytes the text names (rounded to
// the nearest byte for fractional sizes) or throws; it never guesses a unit.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace neat::config {

// Parses a byte size: a non-negative decimal number, optional spaces, then an optional unit.
// Units (case-sensitive): B; binary KiB MiB GiB TiB (powers of 1024); decimal KB MB GB TB
// (powers of 1000). Without a unit the number is bytes and must be whole.
// Examples: "4096" -> 4096, "512MiB" -> 536870912, "1.5 GiB" -> 1610612736, "2GB" -> 2e9.
// Throws std::invalid_argument with a message naming the text and the problem (empty, not a
// number, negative, unknown unit, fraction of a byte, larger than 2^64-1).
std::uint64_t parse_bytes(std::string_view text);

// Human-readable size with binary units: 536870912 -> "512 MiB", 1610612736 -> "1.5 GiB",
// 1000 -> "1000 B". Up to two decimals, trailing zeros removed.
std::string format_bytes(std::uint64_t bytes);

}  // namespace neat::config
