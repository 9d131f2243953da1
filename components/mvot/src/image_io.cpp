// libpng (png_image API, libpng >= 1.6.29) and PGM codecs, area resampling, contact sheets.
#include "neat/mvot/image_io.hpp"

#include <png.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

namespace neat::mvot {

namespace {

void check_size(const GrayImage& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<std::size_t>(image.width) * image.height) {
    throw std::invalid_argument("GrayImage: " + std::to_string(image.width) + "x" +
                                std::to_string(image.height) + " with " +
                                std::to_string(image.pixels.size()) + " pixels");
  }
}

}  // namespace

std::vector<std::uint8_t> encode_png(const GrayImage& image) {
  check_size(image);
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(image.width);
  img.height = static_cast<png_uint_32>(image.height);
  img.format = PNG_FORMAT_GRAY;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&img, nullptr, &size, 0, image.pixels.data(), 0, nullptr)) {
    throw std::runtime_error(std::string("libpng: ") + img.message);
  }
  std::vector<std::uint8_t> out(size);
  if (!png_image_write_to_memory(&img, out.data(), &size, 0, image.pixels.data(), 0, nullptr)) {
    throw std::runtime_error(std::string("libpng: ") + img.message);
  }
  out.resize(size);
  return out;
}

void write_png(const std::filesystem::path& file, const GrayImage& image) {
  const auto bytes = encode_png(image);
  std::ofstream f(file, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error(file.string() + ": cannot write PNG");
}

GrayImage decode_png(std::span<const std::uint8_t> bytes) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size())) {
    throw std::runtime_error(std::string("PNG: ") + img.message);
  }
  img.format = PNG_FORMAT_GRAY;
  GrayImage out;
  out.width = static_cast<int>(img.width);
  out.height = static_cast<int>(img.height);
  if (out.width <= 0 || out.height <= 0 ||
      static_cast<std::uint64_t>(img.width) * img.height > (std::uint64_t{1} << 28)) {
    png_image_free(&img);
    throw std::runtime_error("PNG: unsupported size " + std::to_string(img.width) + "x" +
                             std::to_string(img.height));
  }
  out.pixels.resize(PNG_IMAGE_SIZE(img));
  png_color background{0, 0, 0};
  if (!png_image_finish_read(&img, &background, out.pixels.data(), 0, nullptr)) {
    const std::string msg = img.message;
    png_image_free(&img);
    throw std::runtime_error("PNG: " + msg);
  }
  return out;
}

std::vector<std::uint8_t> encode_pgm(const GrayImage& image, bool binary) {
  check_size(image);
  std::string head = std::string(binary ? "P5" : "P2") + "\n" + std::to_string(image.width) + " " +
                     std::to_string(image.height) + "\n255\n";
  std::vector<std::uint8_t> out(head.begin(), head.end());
  if (binary) {
    out.insert(out.end(), image.pixels.begin(), image.pixels.end());
    return out;
  }
  for (int y = 0; y < image.height; ++y) {
    std::string line;
    for (int x = 0; x < image.width; ++x) {
      if (x) line += ' ';
      line += std::to_string(image.pixels[static_cast<std::size_t>(y * image.width + x)]);
    }
    line += '\n';
    out.insert(out.end(), line.begin(), line.end());
  }
  return out;
}

namespace {

// Reads the next whitespace-separated unsigned integer of a PGM header, skipping comments.
long pgm_number(std::span<const std::uint8_t> b, std::size_t& pos, const char* what) {
  for (;;) {
    while (pos < b.size() && std::isspace(b[pos])) ++pos;
    if (pos < b.size() && b[pos] == '#') {
      while (pos < b.size() && b[pos] != '\n') ++pos;
      continue;
    }
    break;
  }
  if (pos >= b.size() || !std::isdigit(b[pos])) {
    throw std::runtime_error(std::string("PGM: expected ") + what);
  }
  long v = 0;
  while (pos < b.size() && std::isdigit(b[pos])) {
    v = v * 10 + (b[pos++] - '0');
    if (v > 1'000'000) throw std::runtime_error(std::string("PGM: ") + what + " too large");
  }
  return v;
}

}  // namespace

GrayImage decode_pgm(std::span<const std::uint8_t> b) {
  if (b.size() < 2 || b[0] != 'P' || (b[1] != '5' && b[1] != '2')) {
    throw std::runtime_error("PGM: signature is not P5 or P2");
  }
  const bool binary = b[1] == '5';
  std::size_t pos = 2;
  GrayImage out;
  out.width = static_cast<int>(pgm_number(b, pos, "width"));
  out.height = static_cast<int>(pgm_number(b, pos, "height"));
  const long maxval = pgm_number(b, pos, "maxval");
  if (out.width <= 0 || out.height <= 0 || maxval <= 0 || maxval > 65535) {
    throw std::runtime_error("PGM: bad header values");
  }
  const std::size_t n = static_cast<std::size_t>(out.width) * out.height;
  if (n > (std::size_t{1} << 28)) throw std::runtime_error("PGM: image too large");
  out.pixels.resize(n);
  auto scale = [&](long v) {
    if (v > maxval) throw std::runtime_error("PGM: sample above maxval");
    return static_cast<std::uint8_t>(std::lround(255.0 * static_cast<double>(v) / maxval));
  };
  if (binary) {
    if (pos >= b.size() || !std::isspace(b[pos])) throw std::runtime_error("PGM: bad header end");
    ++pos;
    const std::size_t bps = maxval < 256 ? 1 : 2;
    if (b.size() - pos < n * bps) throw std::runtime_error("PGM: truncated pixel data");
    for (std::size_t i = 0; i < n; ++i) {
      const long v = bps == 1 ? b[pos + i] : (long{b[pos + 2 * i]} << 8) | b[pos + 2 * i + 1];
      out.pixels[i] = scale(v);
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) out.pixels[i] = scale(pgm_number(b, pos, "sample"));
  }
  return out;
}

GrayImage resample_area(const GrayImage& image, int width, int height) {
  check_size(image);
  if (width <= 0 || height <= 0) throw std::invalid_argument("resample_area: bad output size");
  GrayImage out{width, height, std::vector<std::uint8_t>(static_cast<std::size_t>(width) * height)};
  const double sx = static_cast<double>(image.width) / width;
  const double sy = static_cast<double>(image.height) / height;
  for (int oy = 0; oy < height; ++oy) {
    const double y0 = oy * sy, y1 = (oy + 1) * sy;
    for (int ox = 0; ox < width; ++ox) {
      const double x0 = ox * sx, x1 = (ox + 1) * sx;
      double sum = 0.0, area = 0.0;
      for (int y = static_cast<int>(y0); y < std::min<int>(image.height, std::ceil(y1)); ++y) {
        const double wy = std::min<double>(y + 1, y1) - std::max<double>(y, y0);
        if (wy <= 0) continue;
        for (int x = static_cast<int>(x0); x < std::min<int>(image.width, std::ceil(x1)); ++x) {
          const double wx = std::min<double>(x + 1, x1) - std::max<double>(x, x0);
          if (wx <= 0) continue;
          sum += wx * wy * image.pixels[static_cast<std::size_t>(y * image.width + x)];
          area += wx * wy;
        }
      }
      out.pixels[static_cast<std::size_t>(oy * width + ox)] =
          static_cast<std::uint8_t>(std::clamp(std::lround(sum / area), 0L, 255L));
    }
  }
  return out;
}

GrayImage contact_sheet(const std::vector<GrayImage>& images, int columns, int gap) {
  if (images.empty() || columns <= 0 || gap < 0) {
    throw std::invalid_argument("contact_sheet: no images or bad layout");
  }
  const int w = images[0].width, h = images[0].height;
  for (const auto& im : images) {
    check_size(im);
    if (im.width != w || im.height != h) throw std::invalid_argument("contact_sheet: sizes differ");
  }
  const int n = static_cast<int>(images.size());
  const int rows = (n + columns - 1) / columns;
  GrayImage out;
  out.width = columns * w + (columns + 1) * gap;
  out.height = rows * h + (rows + 1) * gap;
  out.pixels.assign(static_cast<std::size_t>(out.width) * out.height, 128);
  for (int i = 0; i < n; ++i) {
    const int ox = gap + (i % columns) * (w + gap), oy = gap + (i / columns) * (h + gap);
    for (int y = 0; y < h; ++y) {
      std::copy_n(images[static_cast<std::size_t>(i)].pixels.begin() + y * w, w,
                  out.pixels.begin() + (oy + y) * out.width + ox);
    }
  }
  return out;
}

}  // namespace neat::mvot
