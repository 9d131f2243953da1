// neat/data/compressors.hpp: reference compressors, to put the models' bits per byte beside.
//
// xz -9e (liblzma, preset 9 | LZMA_PRESET_EXTREME, CRC64 check: the .xz file `xz -9e -c`
// writes), bzip2 -9 (libbz2, 900 kB blocks: the file `bzip2 -9 -c` writes), zstd -19 (libzstd
// level 19 with content size and checksum: the frame `zstd -19 -c` writes) and zpaq -m5 (the
// `zpaq` binary of Debian package zpaq, run on a temporary file; the size of the archive).
// Bits per byte = 8 x compressed bytes / raw bytes; container overhead (headers, checksums,
// zpaq's archive index) is included, as a user of the tool would pay it.
//
// Invariants: the library compressors are always available (linked in) and deterministic; a
// missing zpaq binary is reported as unavailable with its reason, never replaced by a number.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace neat::data {

enum class Compressor { kXz, kBzip2, kZstd, kZpaq };

inline constexpr std::array<Compressor, 4> kCompressors{Compressor::kXz, Compressor::kBzip2,
                                                        Compressor::kZstd, Compressor::kZpaq};

// The command line it stands for: "xz -9e", "bzip2 -9", "zstd -19", "zpaq -m5".
std::string_view compressor_name(Compressor compressor);

struct CompressorOptions {
  std::string zpaq_binary = "zpaq";  // looked up in PATH unless it contains a '/'
  std::filesystem::path temp_dir;    // for zpaq's files; empty: the system's temp directory
};

struct CompressionResult {
  Compressor compressor = Compressor::kXz;
  std::uint64_t raw_bytes = 0;
  std::optional<std::uint64_t> compressed_bytes;  // absent: compressor unavailable
  std::string unavailable_reason;                 // set when compressed_bytes is absent

  // 8 x compressed_bytes / raw_bytes, bits per byte; absent when unavailable or raw_bytes is 0.
  std::optional<double> bits_per_byte() const;
};

// Compressed size in bytes of `bytes` as one .xz stream (xz -9e). Throws std::runtime_error
// on a liblzma failure (out of memory).
std::uint64_t xz_compressed_bytes(std::span<const std::uint8_t> bytes);
// Compressed size in bytes as one .bz2 stream (bzip2 -9). Throws std::runtime_error on a
// libbz2 failure or an input of 4 GiB or more.
std::uint64_t bzip2_compressed_bytes(std::span<const std::uint8_t> bytes);
// Compressed size in bytes as one zstd frame (zstd -19). Throws std::runtime_error on a
// libzstd failure.
std::uint64_t zstd_compressed_bytes(std::span<const std::uint8_t> bytes);
// Size in bytes of the archive `zpaq a <archive> <file> -m5` makes of `bytes`, or nullopt with
// `*reason` set (when reason is not null) if the zpaq binary is not found or cannot be
// started. Throws std::runtime_error when zpaq runs but fails, or a temporary file cannot be
// written.
std::optional<std::uint64_t> zpaq_compressed_bytes(std::span<const std::uint8_t> bytes,
                                                   const CompressorOptions& options = {},
                                                   std::string* reason = nullptr);

// `bytes` compressed as one stream by `compressor`. Errors as above.
CompressionResult compress_stream(Compressor compressor, std::span<const std::uint8_t> bytes,
                                  const CompressorOptions& options = {});

// Every document compressed on its own; raw and compressed bytes are sums over documents, so
// bits_per_byte() includes one container overhead per document. Errors as above.
CompressionResult compress_documents(Compressor compressor,
                                     const std::vector<std::span<const std::uint8_t>>& documents,
                                     const CompressorOptions& options = {});

}  // namespace neat::data
