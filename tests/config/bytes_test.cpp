// Byte sizes: units, fractions, and the errors for text that is not a size.
#include <gtest/gtest.h>

#include <stdexcept>

#include "neat/config/bytes.hpp"

namespace neat::config {
namespace {

TEST(ParseBytes, PlainNumberIsBytes) { EXPECT_EQ(parse_bytes("4096"), 4096u); }

TEST(ParseBytes, BinaryUnits) {
  EXPECT_EQ(parse_bytes("1B"), 1u);
  EXPECT_EQ(parse_bytes("2KiB"), 2048u);
  EXPECT_EQ(parse_bytes("512MiB"), 512ull << 20);
  EXPECT_EQ(parse_bytes("768MiB"), 768ull << 20);
  EXPECT_EQ(parse_bytes("4GiB"), 4ull << 30);
  EXPECT_EQ(parse_bytes("1TiB"), 1ull << 40);
}

TEST(ParseBytes, DecimalUnits) {
  EXPECT_EQ(parse_bytes("1KB"), 1000u);
  EXPECT_EQ(parse_bytes("2GB"), 2000000000u);
  EXPECT_EQ(parse_bytes("3MB"), 3000000u);
}

TEST(ParseBytes, FractionsAndSpaces) {
  EXPECT_EQ(parse_bytes("1.5GiB"), 3ull << 29);
  EXPECT_EQ(parse_bytes(" 1.5 GiB "), 3ull << 29);
  EXPECT_EQ(parse_bytes("0.5KiB"), 512u);
}

TEST(ParseBytes, RejectsEmpty) { EXPECT_THROW(parse_bytes(""), std::invalid_argument); }

TEST(ParseBytes, RejectsNegative) { EXPECT_THROW(parse_bytes("-1GiB"), std::invalid_argument); }

TEST(ParseBytes, RejectsUnknownUnitNamingIt) {
  try {
    parse_bytes("4gb");
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "'4gb' is not a byte size: unknown unit 'gb' (use B, KiB, MiB, GiB, TiB, or "
                 "decimal KB, MB, GB, TB)");
  }
}

TEST(ParseBytes, RejectsTextWithoutNumber) {
  EXPECT_THROW(parse_bytes("GiB"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("."), std::invalid_argument);
}

TEST(ParseBytes, RejectsFractionOfAByte) {
  EXPECT_THROW(parse_bytes("1.5"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("1.5B"), std::invalid_argument);
}

TEST(ParseBytes, RejectsOverflow) {
  EXPECT_EQ(parse_bytes("18446744073709551615"), 18446744073709551615ull);
  EXPECT_THROW(parse_bytes("20000000TiB"), std::invalid_argument);
}

TEST(FormatBytes, UsesBinaryUnits) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1000), "1000 B");
  EXPECT_EQ(format_bytes(512ull << 20), "512 MiB");
  EXPECT_EQ(format_bytes(3ull << 29), "1.5 GiB");
  EXPECT_EQ(format_bytes(49152), "48 KiB");
}

}  // namespace
}  // namespace neat::config
