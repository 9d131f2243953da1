// IDX (MNIST format) parsing with full validation; gzip decompression with zlib.
#include "neat/mvot/idx.hpp"

#include <zlib.h>

#include <stdexcept>

namespace neat::mvot {

namespace {

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

constexpr std::uint32_t kImagesMagic = 0x00000803;  // u8 data, 3 dims
constexpr std::uint32_t kLabelsMagic = 0x00000801;  // u8 data, 1 dim

}  // namespace

const std::array<std::string_view, 10>& fashion_mnist_classes() {
  static const std::array<std::string_view, 10> names = {
      "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

std::vector<std::uint8_t> read_gzip_file(const std::filesystem::path& file) {
  gzFile gz = gzopen(file.c_str(), "rb");
  if (gz == nullptr) throw std::runtime_error(file.string() + ": cannot open");
  std::vector<std::uint8_t> out;
  std::array<std::uint8_t, 1 << 16> buf{};
  for (;;) {
    const int n = gzread(gz, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int errnum = 0;
      const std::string msg = gzerror(gz, &errnum);
      gzclose(gz);
      throw std::runtime_error(file.string() + ": corrupt gzip stream: " + msg);
    }
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
  int errnum = 0;
  const char* msg = gzerror(gz, &errnum);
  if (errnum != Z_OK && errnum != Z_STREAM_END) {
    const std::string text = msg;
    gzclose(gz);
    throw std::runtime_error(file.string() + ": truncated or corrupt gzip stream: " + text);
  }
  gzclose(gz);
  return out;
}

bool is_idx_images(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < 16 || be32(bytes.data()) != kImagesMagic) return false;
  const std::uint64_t n = be32(bytes.data() + 4), r = be32(bytes.data() + 8),
                      c = be32(bytes.data() + 12);
  return n > 0 && r > 0 && c > 0 && bytes.size() == 16 + n * r * c;
}

IdxImages parse_idx_images(std::span<const std::uint8_t> bytes, const std::string& name) {
  if (bytes.size() < 16) {
    throw std::runtime_error(name + ": IDX image header needs 16 bytes, file has " +
                             std::to_string(bytes.size()));
  }
  const std::uint32_t magic = be32(bytes.data());
  if (magic != kImagesMagic) {
    throw std::runtime_error(name + ": bad IDX magic " + std::to_string(magic) +
                             " (expected 2051 = u8 images with 3 dims)");
  }
  IdxImages out;
  out.count = be32(bytes.data() + 4);
  out.rows = be32(bytes.data() + 8);
  out.cols = be32(bytes.data() + 12);
  if (out.count == 0 || out.rows == 0 || out.cols == 0) {
    throw std::runtime_error(name + ": IDX dims must be positive");
  }
  const std::uint64_t expected = 16 + std::uint64_t{out.count} * out.rows * out.cols;
  if (bytes.size() != expected) {
    throw std::runtime_error(name + ": IDX size mismatch: dims " + std::to_string(out.count) + "x" +
                             std::to_string(out.rows) + "x" + std::to_string(out.cols) + " need " +
                             std::to_string(expected) + " bytes, file has " +
                             std::to_string(bytes.size()));
  }
  out.pixels.assign(bytes.begin() + 16, bytes.end());
  return out;
}

std::vector<std::uint8_t> parse_idx_labels(std::span<const std::uint8_t> bytes,
                                           const std::string& name) {
  if (bytes.size() < 8) {
    throw std::runtime_error(name + ": IDX label header needs 8 bytes, file has " +
                             std::to_string(bytes.size()));
  }
  const std::uint32_t magic = be32(bytes.data());
  if (magic != kLabelsMagic) {
    throw std::runtime_error(name + ": bad IDX magic " + std::to_string(magic) +
                             " (expected 2049 = u8 labels with 1 dim)");
  }
  const std::uint64_t n = be32(bytes.data() + 4);
  if (bytes.size() != 8 + n) {
    throw std::runtime_error(name + ": IDX size mismatch: " + std::to_string(n) + " labels need " +
                             std::to_string(8 + n) + " bytes, file has " +
                             std::to_string(bytes.size()));
  }
  std::vector<std::uint8_t> labels(bytes.begin() + 8, bytes.end());
  for (auto l : labels) {
    if (l > 9) throw std::runtime_error(name + ": label " + std::to_string(l) + " out of 0..9");
  }
  return labels;
}

IdxImages read_idx_images(const std::filesystem::path& file) {
  return parse_idx_images(read_gzip_file(file), file.string());
}

std::vector<std::uint8_t> read_idx_labels(const std::filesystem::path& file) {
  return parse_idx_labels(read_gzip_file(file), file.string());
}

}  // namespace neat::mvot
