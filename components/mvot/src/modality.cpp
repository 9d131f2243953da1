// Modality decision from format signatures and byte statistics.
#include "neat/mvot/modality.hpp"

#include <cstring>
#include <stdexcept>

#include "neat/mvot/codebook.hpp"
#include "neat/mvot/idx.hpp"

namespace neat::mvot {

std::string_view to_string(Modality m) { return m == Modality::image ? "image" : "text"; }

std::string_view to_string(ImageFormat f) {
  switch (f) {
    case ImageFormat::idx:
      return "idx";
    case ImageFormat::png:
      return "png";
    case ImageFormat::pgm:
      return "pgm";
    case ImageFormat::none:
      break;
  }
  return "none";
}

double text_byte_fraction(std::span<const std::uint8_t> b) {
  if (b.empty()) return 1.0;
  std::size_t good = 0;
  for (std::size_t i = 0; i < b.size();) {
    const std::uint8_t c = b[i];
    if ((c >= 0x20 && c < 0x7f) || c == '\t' || c == '\n' || c == '\r' || c == '\f') {
      ++good;
      ++i;
      continue;
    }
    // UTF-8 multibyte: lead byte, then continuation bytes 10xxxxxx; reject overlong forms.
    std::size_t len = 0;
    if (c >= 0xc2 && c <= 0xdf)
      len = 2;
    else if (c >= 0xe0 && c <= 0xef)
      len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
      len = 4;
    bool ok = len > 0 && i + len <= b.size();
    for (std::size_t j = 1; ok && j < len; ++j) ok = (b[i + j] & 0xc0) == 0x80;
    if (ok && len == 3 && c == 0xe0) ok = b[i + 1] >= 0xa0;
    if (ok && len == 4 && c == 0xf0) ok = b[i + 1] >= 0x90;
    if (ok && len == 4 && c == 0xf4) ok = b[i + 1] < 0x90;
    if (ok) {
      good += len;
      i += len;
    } else {
      ++i;
    }
  }
  return static_cast<double>(good) / static_cast<double>(b.size());
}

namespace {

bool png_signature(std::span<const std::uint8_t> b) {
  static constexpr std::uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  // Signature, then the first chunk must be IHDR of length 13.
  return b.size() >= 33 && std::memcmp(b.data(), sig, 8) == 0 &&
         std::memcmp(b.data() + 8, "\0\0\0\x0dIHDR", 8) == 0;
}

}  // namespace

ModalityDecision decide_modality(std::span<const std::uint8_t> bytes) {
  ModalityDecision d;
  d.text_fraction = text_byte_fraction(bytes);
  if (is_idx_images(bytes)) {
    d.modality = Modality::image;
    d.format = ImageFormat::idx;
    d.confidence = 1.0;
    d.reason = "IDX3 u8 magic with dims matching the size";
    return d;
  }
  if (png_signature(bytes)) {
    try {
      (void)decode_png(bytes);
      d.modality = Modality::image;
      d.format = ImageFormat::png;
      d.confidence = 1.0;
      d.reason = "PNG signature and a decodable image";
      return d;
    } catch (const std::exception& e) {
      d.reason = std::string("PNG signature but undecodable (") + e.what() + "); ";
    }
  }
  if (bytes.size() >= 2 && bytes[0] == 'P' && (bytes[1] == '5' || bytes[1] == '2')) {
    try {
      (void)decode_pgm(bytes);
      d.modality = Modality::image;
      d.format = ImageFormat::pgm;
      d.confidence = 1.0;
      d.reason = "PGM header consistent with the data";
      return d;
    } catch (const std::exception& e) {
      d.reason += std::string("PGM signature but malformed (") + e.what() + "); ";
    }
  }
  d.modality = Modality::text;
  d.confidence = d.text_fraction;
  d.reason += "no image format; text byte fraction " + std::to_string(d.text_fraction);
  return d;
}

std::vector<std::uint8_t> item_images_28(std::span<const std::uint8_t> bytes, ImageFormat format,
                                         std::size_t& count) {
  GrayImage g;
  switch (format) {
    case ImageFormat::idx: {
      IdxImages idx = parse_idx_images(bytes, "item");
      if (idx.rows == kImageSide && idx.cols == kImageSide) {
        count = idx.count;
        return std::move(idx.pixels);
      }
      std::vector<std::uint8_t> out;
      for (std::size_t i = 0; i < idx.count; ++i) {
        const auto im = idx.image(i);
        GrayImage one{
            static_cast<int>(idx.cols), static_cast<int>(idx.rows), {im.begin(), im.end()}};
        const auto r = resample_area(one, kImageSide, kImageSide);
        out.insert(out.end(), r.pixels.begin(), r.pixels.end());
      }
      count = idx.count;
      return out;
    }
    case ImageFormat::png:
      g = decode_png(bytes);
      break;
    case ImageFormat::pgm:
      g = decode_pgm(bytes);
      break;
    case ImageFormat::none:
      throw std::runtime_error("item_images_28: item is not an image");
  }
  if (g.width != kImageSide || g.height != kImageSide) g = resample_area(g, kImageSide, kImageSide);
  count = 1;
  return std::move(g.pixels);
}

}  // namespace neat::mvot
