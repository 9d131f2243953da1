// Reference compressors: known inputs (zeros, random bytes), agreement with the command-line
// tools, per-document sums, and zpaq present or absent.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "neat/data/compressors.hpp"

namespace fs = std::filesystem;
namespace nd = neat::data;

namespace {

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(rng() >> 56);
  return out;
}

// English-like text with repetition at several scales, so compressors differ.
std::vector<std::uint8_t> sample_text(std::size_t n) {
  static const char* kWords[] = {"entropy",  "patch", "byte",  "latent", "memory",
                                 "surprise", "the",   "of",    "and",    "momentum",
                                 "forget",   "gate",  "expert"};
  std::mt19937_64 rng(42);
  std::string s;
  while (s.size() < n) {
    s += kWords[rng() % std::size(kWords)];
    s += (rng() % 11 == 0) ? ".\n" : " ";
  }
  s.resize(n);
  return {s.begin(), s.end()};
}

bool on_path(const std::string& tool) {
  return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

// Output size in bytes of `command` run through the shell.
long long command_bytes(const std::string& command) {
  FILE* pipe = ::popen((command + " | wc -c").c_str(), "r");
  if (pipe == nullptr) return -1;
  long long bytes = -1;
  if (std::fscanf(pipe, "%lld", &bytes) != 1) bytes = -1;
  ::pclose(pipe);
  return bytes;
}

constexpr nd::Compressor kLibraryCompressors[] = {nd::Compressor::kXz, nd::Compressor::kBzip2,
                                                  nd::Compressor::kZstd};

}  // namespace

TEST(Compressors, OneMebibyteOfZerosCostsUnderOneHundredthOfABitPerByte) {
  const std::vector<std::uint8_t> zeros(1 << 20, 0);
  for (nd::Compressor c : kLibraryCompressors) {
    const auto r = nd::compress_stream(c, zeros);
    ASSERT_TRUE(r.bits_per_byte()) << nd::compressor_name(c);
    EXPECT_LT(*r.bits_per_byte(), 0.01) << nd::compressor_name(c);
    EXPECT_EQ(r.raw_bytes, zeros.size());
  }
}

TEST(Compressors, RandomBytesStayAtLeastSevenPointNineBitsPerByte) {
  const auto noise = random_bytes(1 << 20, 7);
  for (nd::Compressor c : kLibraryCompressors) {
    const auto r = nd::compress_stream(c, noise);
    ASSERT_TRUE(r.bits_per_byte()) << nd::compressor_name(c);
    EXPECT_GE(*r.bits_per_byte(), 7.9) << nd::compressor_name(c);
  }
}

// The library settings reproduce the tools' files: the tolerance is 0 bytes for xz -9e and
// bzip2 -9 (same encoder, same container) and 16 bytes for zstd -19, whose tool streams the
// input in 128 KiB reads where the library compresses in one call.
TEST(Compressors, LibraryMatchesTheCommandLineTools) {
  const auto text = sample_text(300000);
  const fs::path file =
      fs::temp_directory_path() / ("neat-compressors-" + std::to_string(::getpid()));
  std::ofstream(file, std::ios::binary)
      .write(reinterpret_cast<const char*>(text.data()), static_cast<std::streamsize>(text.size()));
  struct Case {
    nd::Compressor compressor;
    std::string tool, command;
    long long tolerance;
  };
  const Case cases[] = {{nd::Compressor::kXz, "xz", "xz -9e -c " + file.string(), 0},
                        {nd::Compressor::kBzip2, "bzip2", "bzip2 -9 -c " + file.string(), 0},
                        {nd::Compressor::kZstd, "zstd", "zstd -q -19 -c " + file.string(), 16}};
  int compared = 0;
  for (const Case& c : cases) {
    if (!on_path(c.tool)) continue;
    const long long tool_bytes = command_bytes(c.command);
    const long long lib_bytes =
        static_cast<long long>(*nd::compress_stream(c.compressor, text).compressed_bytes);
    EXPECT_LE(std::llabs(tool_bytes - lib_bytes), c.tolerance)
        << c.command << ": tool " << tool_bytes << " bytes, library " << lib_bytes;
    ++compared;
  }
  fs::remove(file);
  if (compared == 0) GTEST_SKIP() << "none of xz, bzip2, zstd is installed (scripts/install-deps)";
}

TEST(Compressors, PerDocumentResultSumsIndependentCompressions) {
  const auto a = sample_text(5000);
  const auto b = random_bytes(3000, 1);
  const std::vector<std::span<const std::uint8_t>> docs{a, b};
  for (nd::Compressor c : kLibraryCompressors) {
    const auto together = nd::compress_documents(c, docs);
    ASSERT_TRUE(together.compressed_bytes);
    EXPECT_EQ(together.raw_bytes, 8000u);
    EXPECT_EQ(*together.compressed_bytes, *nd::compress_stream(c, a).compressed_bytes +
                                              *nd::compress_stream(c, b).compressed_bytes);
  }
}

TEST(Compressors, EmptyInputHasNoBitsPerByte) {
  const std::vector<std::uint8_t> empty;
  const auto r = nd::compress_stream(nd::Compressor::kXz, empty);
  EXPECT_TRUE(r.compressed_bytes);
  EXPECT_FALSE(r.bits_per_byte());
}

TEST(Zpaq, AbsentBinaryIsUnavailableWithAReasonNotANumber) {
  nd::CompressorOptions options;
  options.zpaq_binary = "/nonexistent/zpaq";
  const auto text = sample_text(1000);
  std::string reason;
  EXPECT_FALSE(nd::zpaq_compressed_bytes(text, options, &reason));
  EXPECT_NE(reason.find("/nonexistent/zpaq"), std::string::npos) << reason;
  EXPECT_NE(reason.find("scripts/install-deps"), std::string::npos) << reason;

  options.zpaq_binary = "neat-no-such-zpaq-binary";
  const auto r = nd::compress_stream(nd::Compressor::kZpaq, text, options);
  EXPECT_FALSE(r.compressed_bytes);
  EXPECT_FALSE(r.bits_per_byte());
  EXPECT_FALSE(r.unavailable_reason.empty());
  const std::vector<std::span<const std::uint8_t>> docs{text, text};
  EXPECT_FALSE(nd::compress_documents(nd::Compressor::kZpaq, docs, options).compressed_bytes);
}

TEST(Zpaq, PresentBinaryCompressesZerosAndNoise) {
  if (!on_path("zpaq")) GTEST_SKIP() << "zpaq is not installed (scripts/install-deps)";
  const std::vector<std::uint8_t> zeros(1 << 20, 0);
  const auto z = nd::compress_stream(nd::Compressor::kZpaq, zeros);
  ASSERT_TRUE(z.bits_per_byte()) << z.unavailable_reason;
  EXPECT_LT(*z.bits_per_byte(), 0.01);
  const auto noise = random_bytes(1 << 16, 3);
  const auto n = nd::compress_stream(nd::Compressor::kZpaq, noise);
  ASSERT_TRUE(n.bits_per_byte()) << n.unavailable_reason;
  EXPECT_GE(*n.bits_per_byte(), 7.9);
  const auto text = sample_text(100000);
  const auto t = nd::compress_stream(nd::Compressor::kZpaq, text);
  ASSERT_TRUE(t.bits_per_byte());
  EXPECT_LT(*t.bits_per_byte(), *nd::compress_stream(nd::Compressor::kBzip2, text).bits_per_byte());
}
