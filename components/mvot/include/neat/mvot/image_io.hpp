// Grayscale image I/O for mvot: PNG read/write with libpng (simplified png_image API), PGM
// (P5 binary / P2 ASCII) read/write, area resampling to 28x28, and contact sheets. Invariant:
// a GrayImage holds exactly width * height 8-bit pixels, row-major; decoders throw
// std::runtime_error with the reason on any malformed input instead of returning partial images.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace neat::mvot {

struct GrayImage {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> pixels;  ///< (height, width) row-major, 0 black .. 255 white
};

/// PNG bytes of an 8-bit grayscale image. Throws std::invalid_argument on a size mismatch and
/// std::runtime_error if libpng fails.
std::vector<std::uint8_t> encode_png(const GrayImage& image);
/// Writes encode_png(image) to `file`. Throws std::runtime_error if it cannot be written.
void write_png(const std::filesystem::path& file, const GrayImage& image);
/// Decodes any PNG (gray, RGB, palette, alpha, 16-bit) to 8-bit grayscale with libpng.
/// Throws std::runtime_error with libpng's message on a malformed file.
GrayImage decode_png(std::span<const std::uint8_t> bytes);

/// PGM bytes: P5 (binary) or P2 (ASCII), maxval 255.
std::vector<std::uint8_t> encode_pgm(const GrayImage& image, bool binary = true);
/// Decodes a P5 or P2 PGM (maxval 1..65535, scaled to 0..255; comments allowed).
/// Throws std::runtime_error on a malformed header or truncated data.
GrayImage decode_pgm(std::span<const std::uint8_t> bytes);

/// Area (box-filter) resampling: each output pixel is the mean of the input area it covers,
/// with fractional overlaps weighted. Throws std::invalid_argument on an empty image or size.
GrayImage resample_area(const GrayImage& image, int width, int height);

/// Grid of equally sized images, `columns` per row, `gap` pixels of mid-gray between them.
/// Throws std::invalid_argument if sizes differ or the list is empty.
GrayImage contact_sheet(const std::vector<GrayImage>& images, int columns, int gap = 2);

}  // namespace neat::mvot
