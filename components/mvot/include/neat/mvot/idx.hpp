// Fashion-MNIST in IDX format (LeCun's IDX: big-endian magic, dims, then u8 data), read from the
// gzip files of Debian's dataset-fashion-mnist with zlib. Invariant: a returned IdxImages has
// exactly count * rows * cols pixels; anything else is rejected with an error naming the file.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace neat::mvot {

/// Images of an IDX3 file: `pixels` is (count, rows, cols) row-major u8 (0 = black, 255 = white).
struct IdxImages {
  std::size_t count = 0;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<std::uint8_t> pixels;
  /// Pixels of image i, rows * cols bytes. Precondition: i < count.
  std::span<const std::uint8_t> image(std::size_t i) const {
    return {pixels.data() + i * rows * cols, rows * cols};
  }
};

/// Where Debian's dataset-fashion-mnist installs the four gzip files.
inline constexpr std::string_view kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Class names of Fashion-MNIST labels 0..9.
const std::array<std::string_view, 10>& fashion_mnist_classes();

/// Whole content of a gzip (or plain) file, decompressed with zlib (gzopen/gzread).
/// Throws std::runtime_error naming the file if it cannot be opened or the stream is corrupt or
/// truncated.
std::vector<std::uint8_t> read_gzip_file(const std::filesystem::path& file);

/// True if `bytes` starts with an IDX3 u8 header (magic 0x00000803) whose dims match the size.
bool is_idx_images(std::span<const std::uint8_t> bytes);

/// Parses IDX3 u8 images (magic 0x00000803, dims count, rows, cols). `name` is used in errors.
/// Throws std::runtime_error on a wrong magic, zero dims, or a size that is not 16 + n*r*c.
IdxImages parse_idx_images(std::span<const std::uint8_t> bytes, const std::string& name);

/// Parses IDX1 u8 labels (magic 0x00000801, dim count). Throws std::runtime_error as above.
std::vector<std::uint8_t> parse_idx_labels(std::span<const std::uint8_t> bytes,
                                           const std::string& name);

/// read_gzip_file + parse_idx_images.
IdxImages read_idx_images(const std::filesystem::path& file);
/// read_gzip_file + parse_idx_labels.
std::vector<std::uint8_t> read_idx_labels(const std::filesystem::path& file);

}  // namespace neat::mvot
