// VQ codebook: patch extraction, fused register-tiled nearest-code search, k-means training,
// msgpack file with a crc32 checksum, and evaluation (PSNR, code perplexity).
#include "neat/mvot/codebook.hpp"

#include <zlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>

#include <msgpack.hpp>

namespace neat::mvot {

RowMatrix image_patches(std::span<const std::uint8_t> pixels, std::size_t count) {
  if (pixels.size() != count * kPixelsPerImage) {
    throw std::invalid_argument("image_patches: " + std::to_string(pixels.size()) + " pixels for " +
                                std::to_string(count) + " 28x28 images");
  }
  RowMatrix x(static_cast<Eigen::Index>(count * kCodesPerImage), kPatchDims);
  constexpr float kScale = 1.0f / 255.0f;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint8_t* img = pixels.data() + i * kPixelsPerImage;
    for (int py = 0; py < kGrid; ++py) {
      for (int px = 0; px < kGrid; ++px) {
        float* row = x.row(static_cast<Eigen::Index>(i * kCodesPerImage + py * kGrid + px)).data();
        for (int y = 0; y < kPatchSide; ++y) {
          for (int xx = 0; xx < kPatchSide; ++xx) {
            row[y * kPatchSide + xx] =
                img[(py * kPatchSide + y) * kImageSide + px * kPatchSide + xx] * kScale;
          }
        }
      }
    }
  }
  return x;
}

int descriptor_dims(const PatchContext& context) {
  if (context.radius < 0 || context.radius > 1) {
    throw std::invalid_argument("patch context radius must be 0 or 1, got " +
                                std::to_string(context.radius));
  }
  if (!(std::isfinite(context.weight) && context.weight >= 0.0f)) {
    throw std::invalid_argument("patch context weight must be finite and >= 0, got " +
                                std::to_string(context.weight));
  }
  const int side = kPatchSide + 2 * context.radius;
  return side * side;
}

RowMatrix patch_descriptors(std::span<const std::uint8_t> pixels, std::size_t count,
                            const PatchContext& context) {
  const int dims = descriptor_dims(context);
  if (context.radius == 0) return image_patches(pixels, count);
  if (pixels.size() != count * kPixelsPerImage) {
    throw std::invalid_argument("patch_descriptors: " + std::to_string(pixels.size()) +
                                " pixels for " + std::to_string(count) + " 28x28 images");
  }
  // One pass per image: the ring values come from a zero-bordered copy of the image already
  // multiplied by weight / 255, read at the ring's offsets in raster order of the window.
  const int r = context.radius, side = kPatchSide + 2 * r, padded_side = kImageSide + 2 * r;
  std::vector<int> ring_offsets;
  for (int y = 0; y < side; ++y)
    for (int xx = 0; xx < side; ++xx)
      if (!(y >= r && y < r + kPatchSide && xx >= r && xx < r + kPatchSide))
        ring_offsets.push_back(y * padded_side + xx);
  const float scale = context.weight / 255.0f;
  constexpr float kScale = 1.0f / 255.0f;
  std::vector<float> padded(static_cast<std::size_t>(padded_side * padded_side), 0.0f);
  RowMatrix x(static_cast<Eigen::Index>(count * kCodesPerImage), dims);
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint8_t* img = pixels.data() + i * kPixelsPerImage;
    for (int y = 0; y < kImageSide; ++y)
      for (int xx = 0; xx < kImageSide; ++xx)
        padded[static_cast<std::size_t>((y + r) * padded_side + xx + r)] =
            img[y * kImageSide + xx] * scale;
    for (int py = 0; py < kGrid; ++py) {
      for (int px = 0; px < kGrid; ++px) {
        float* row = x.row(static_cast<Eigen::Index>(i * kCodesPerImage + py * kGrid + px)).data();
        for (int y = 0; y < kPatchSide; ++y)
          for (int xx = 0; xx < kPatchSide; ++xx)
            row[y * kPatchSide + xx] =
                img[(py * kPatchSide + y) * kImageSide + px * kPatchSide + xx] * kScale;
        const float* window = padded.data() + py * kPatchSide * padded_side + px * kPatchSide;
        for (std::size_t k = 0; k < ring_offsets.size(); ++k)
          row[kPatchDims + k] = window[ring_offsets[k]];
      }
    }
  }
  return x;
}

namespace {

// Register tile of the fused nearest-code search: kTilePatches patches against kLanes codes at a
// time. With AVX-512 the 8 accumulators, running minima and their indices are 24 registers that
// stay in place while the transposed codebook streams from L1; elsewhere a portable loop does the
// same arithmetic (std::fma), slower.
constexpr int kLanes = 16;
constexpr int kTilePatches = 8;

// One tile: for each of `rows` (<= kTilePatches) patches starting at x(s, 0), the nearest of the
// kp (multiple of kLanes) codes whose -2 c^T is `m2ct` (D, kp) and ||c||^2 is `cnorm` (kp; padded
// codes have +inf). Distances are formed exactly as a GEMM followed by a broadcast add would form
// them: sum_d fma(x_d, -2 c_d) in order d = 0..D-1 from zero, then + ||c||^2; ties go to the
// lower index.
void nearest_tile(const RowMatrix& x, Eigen::Index s, int rows, const float* m2ct,
                  const float* cnorm, Eigen::Index d_dims, Eigen::Index kp, std::int32_t* codes,
                  float* minima) {
  alignas(64) float xs[kTilePatches][64];
  // Patches beyond `rows` are zero rows whose results are discarded; D <= 64 here.
  for (int p = 0; p < kTilePatches; ++p) {
    for (Eigen::Index d = 0; d < d_dims; ++d) {
      xs[p][d] = p < rows ? x(s + p, d) : 0.0f;
    }
  }
  alignas(64) float best[kTilePatches][kLanes];
  alignas(64) std::int32_t best_index[kTilePatches][kLanes];
  for (int p = 0; p < kTilePatches; ++p) {
    for (int l = 0; l < kLanes; ++l) {
      best[p][l] = std::numeric_limits<float>::infinity();
      best_index[p][l] = 0;  // never a padded code, even for non-finite x
    }
  }
#if defined(__AVX512F__)
  // One 512-bit register per patch: the same fma sequence as the portable loop below, in lanes.
  __m512 acc[kTilePatches], best_v[kTilePatches];
  __m512i index_v[kTilePatches];
  for (int p = 0; p < kTilePatches; ++p) {
    best_v[p] = _mm512_set1_ps(std::numeric_limits<float>::infinity());
    index_v[p] = _mm512_setzero_si512();
  }
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  for (Eigen::Index c0 = 0; c0 < kp; c0 += kLanes) {
    for (int p = 0; p < kTilePatches; ++p) acc[p] = _mm512_setzero_ps();
    for (Eigen::Index d = 0; d < d_dims; ++d) {
      const __m512 col = _mm512_loadu_ps(m2ct + d * kp + c0);
      for (int p = 0; p < kTilePatches; ++p) {
        acc[p] = _mm512_fmadd_ps(_mm512_set1_ps(xs[p][d]), col, acc[p]);
      }
    }
    const __m512 cn = _mm512_loadu_ps(cnorm + c0);
    const __m512i code = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(c0)), lane);
    for (int p = 0; p < kTilePatches; ++p) {
      const __m512 v = _mm512_add_ps(acc[p], cn);
      const __mmask16 better = _mm512_cmp_ps_mask(v, best_v[p], _CMP_LT_OQ);  // strict
      best_v[p] = _mm512_mask_mov_ps(best_v[p], better, v);
      index_v[p] = _mm512_mask_mov_epi32(index_v[p], better, code);
    }
  }
  for (int p = 0; p < kTilePatches; ++p) {
    _mm512_store_ps(best[p], best_v[p]);
    _mm512_store_si512(reinterpret_cast<__m512i*>(best_index[p]), index_v[p]);
  }
#else
  for (Eigen::Index c0 = 0; c0 < kp; c0 += kLanes) {
    alignas(64) float acc[kTilePatches][kLanes] = {};
    for (Eigen::Index d = 0; d < d_dims; ++d) {
      const float* col = m2ct + d * kp + c0;
      for (int p = 0; p < kTilePatches; ++p) {
        const float xv = xs[p][d];
        for (int l = 0; l < kLanes; ++l) acc[p][l] = std::fma(xv, col[l], acc[p][l]);
      }
    }
    for (int p = 0; p < kTilePatches; ++p) {
      for (int l = 0; l < kLanes; ++l) {
        const float v = acc[p][l] + cnorm[c0 + l];
        const bool better = v < best[p][l];  // strict: an earlier code keeps a tie
        best[p][l] = better ? v : best[p][l];
        best_index[p][l] = better ? static_cast<std::int32_t>(c0 + l) : best_index[p][l];
      }
    }
  }
#endif
  for (int p = 0; p < rows; ++p) {
    float m = best[p][0];
    std::int32_t idx = best_index[p][0];
    for (int l = 1; l < kLanes; ++l) {
      if (best[p][l] < m || (best[p][l] == m && best_index[p][l] < idx)) {
        m = best[p][l];
        idx = best_index[p][l];
      }
    }
    codes[p] = idx;
    minima[p] = m;
  }
}

}  // namespace

void assign_nearest(const RowMatrix& x, const RowMatrix& centres, std::vector<std::int32_t>& codes,
                    std::vector<float>* squared_errors) {
  if (centres.rows() == 0 || x.cols() != centres.cols() || x.cols() > 64) {
    throw std::invalid_argument("assign_nearest: x is (" + std::to_string(x.rows()) + ", " +
                                std::to_string(x.cols()) + "), centres (" +
                                std::to_string(centres.rows()) + ", " +
                                std::to_string(centres.cols()) + "); need equal D <= 64, K >= 1");
  }
  const Eigen::Index n = x.rows(), k = centres.rows(), d_dims = x.cols();
  codes.resize(static_cast<std::size_t>(n));
  if (squared_errors) squared_errors->resize(static_cast<std::size_t>(n));
  // -2 C^T (D, Kp) and ||c||^2 (Kp), K padded to a multiple of kLanes with codes at +inf
  // distance. ||x||^2 does not change the argmin and is added back only for the error.
  const Eigen::Index kp = (k + kLanes - 1) / kLanes * kLanes;
  RowMatrix m2ct = RowMatrix::Zero(d_dims, kp);
  m2ct.leftCols(k) = -2.0f * centres.transpose();
  std::vector<float> cnorm(static_cast<std::size_t>(kp), std::numeric_limits<float>::infinity());
  for (Eigen::Index j = 0; j < k; ++j) {
    cnorm[static_cast<std::size_t>(j)] = centres.row(j).squaredNorm();
  }
  std::int32_t tile_codes[kTilePatches];
  float tile_minima[kTilePatches];
  for (Eigen::Index s = 0; s < n; s += kTilePatches) {
    const int rows = static_cast<int>(std::min<Eigen::Index>(kTilePatches, n - s));
    nearest_tile(x, s, rows, m2ct.data(), cnorm.data(), d_dims, kp, tile_codes, tile_minima);
    for (int p = 0; p < rows; ++p) {
      codes[static_cast<std::size_t>(s + p)] = tile_codes[p];
      if (squared_errors) {
        (*squared_errors)[static_cast<std::size_t>(s + p)] =
            std::max(0.0f, tile_minima[p] + x.row(s + p).squaredNorm());
      }
    }
  }
}

namespace {

// k-means++ seeding on the rows `sample` of x: first centre uniform, then each next one drawn
// with probability proportional to the squared distance to the nearest chosen centre.
RowMatrix kmeans_pp(const RowMatrix& x, const std::vector<Eigen::Index>& sample, int k,
                    std::mt19937_64& rng) {
  RowMatrix c(k, x.cols());
  const std::size_t s = sample.size();
  std::vector<double> d2(s, std::numeric_limits<double>::infinity());
  std::size_t pick = std::uniform_int_distribution<std::size_t>(0, s - 1)(rng);
  for (int j = 0; j < k; ++j) {
    c.row(j) = x.row(sample[pick]);
    double total = 0.0;
    for (std::size_t i = 0; i < s; ++i) {
      const double dist = (x.row(sample[i]) - c.row(j)).squaredNorm();
      d2[i] = std::min(d2[i], dist);
      total += d2[i];
    }
    if (j + 1 == k) break;
    if (total <= 0.0) {  // fewer distinct rows than k: take the next rows in sample order
      pick = (pick + 1) % s;
      continue;
    }
    const double r = std::uniform_real_distribution<double>(0.0, total)(rng);
    double acc = 0.0;
    pick = s - 1;
    for (std::size_t i = 0; i < s; ++i) {
      acc += d2[i];
      if (acc >= r && d2[i] > 0.0) {
        pick = i;
        break;
      }
    }
  }
  return c;
}

}  // namespace

KMeansResult kmeans(const RowMatrix& x, const KMeansOptions& options) {
  const Eigen::Index n = x.rows();
  const int k = options.k;
  if (k < 1 || n < k) {
    throw std::invalid_argument("kmeans: need at least k = " + std::to_string(k) + " rows, have " +
                                std::to_string(n));
  }
  std::mt19937_64 rng(options.seed);
  std::vector<Eigen::Index> sample(static_cast<std::size_t>(n));
  std::iota(sample.begin(), sample.end(), Eigen::Index{0});
  const std::size_t s = std::min<std::size_t>(
      static_cast<std::size_t>(n), std::max<std::size_t>(options.init_sample, std::size_t(k)));
  for (std::size_t i = 0; i < s; ++i) {  // partial Fisher-Yates: first s rows are the sample
    const std::size_t j =
        std::uniform_int_distribution<std::size_t>(i, static_cast<std::size_t>(n) - 1)(rng);
    std::swap(sample[i], sample[j]);
  }
  sample.resize(s);

  KMeansResult out;
  if (options.initial_centres.size() > 0) {
    if (options.initial_centres.rows() != k || options.initial_centres.cols() != x.cols()) {
      throw std::invalid_argument("kmeans: initial_centres must be (k, D)");
    }
    out.centres = options.initial_centres;
  } else {
    out.centres = kmeans_pp(x, sample, k, rng);
  }
  std::vector<std::int32_t> codes;
  std::vector<float> err;
  Eigen::MatrixXd sums(k, x.cols());
  std::vector<std::int64_t> counts(static_cast<std::size_t>(k));
  for (int it = 0; it < options.iterations; ++it) {
    assign_nearest(x, out.centres, codes, &err);
    double inertia = 0.0;
    for (float e : err) inertia += e;
    inertia /= static_cast<double>(n);
    out.inertia.push_back(inertia);
    out.iterations = it + 1;

    sums.setZero();
    std::fill(counts.begin(), counts.end(), 0);
    for (Eigen::Index i = 0; i < n; ++i) {
      const auto c = codes[static_cast<std::size_t>(i)];
      sums.row(c) += x.row(i).cast<double>();
      ++counts[static_cast<std::size_t>(c)];
    }
    std::vector<int> dead;
    for (int j = 0; j < k; ++j) {
      if (counts[static_cast<std::size_t>(j)] > 0) {
        out.centres.row(j) = (sums.row(j) / static_cast<double>(counts[j])).cast<float>();
      } else {
        dead.push_back(j);
      }
    }
    if (!dead.empty()) {
      // Restart each dead code at one of the rows that are worst served by the current centres.
      std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
      std::iota(order.begin(), order.end(), Eigen::Index{0});
      const std::size_t m = std::min(dead.size(), order.size());
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m), order.end(),
                        [&](Eigen::Index a, Eigen::Index b) {
                          const float ea = err[static_cast<std::size_t>(a)];
                          const float eb = err[static_cast<std::size_t>(b)];
                          return ea != eb ? ea > eb : a < b;
                        });
      for (std::size_t i = 0; i < m; ++i) out.centres.row(dead[i]) = x.row(order[i]);
      out.restarted_codes += static_cast<int>(m);
    }
    if (it > 0 && dead.empty()) {
      const double prev = out.inertia[out.inertia.size() - 2];
      if (prev - inertia <= options.tolerance * std::max(prev, 1e-30)) break;
    }
  }
  return out;
}

Codebook::Codebook(RowMatrix centres, Provenance provenance, PatchContext context)
    : centres_(std::move(centres)), provenance_(std::move(provenance)), context_(context) {
  const int dims = descriptor_dims(context_);
  if (centres_.rows() == 0 || centres_.cols() != dims) {
    throw std::invalid_argument("Codebook: centres must be (K >= 1, " + std::to_string(dims) +
                                "), got (" + std::to_string(centres_.rows()) + ", " +
                                std::to_string(centres_.cols()) + ")");
  }
  if (!centres_.allFinite()) throw std::invalid_argument("Codebook: non-finite centre value");
  patch_centres_ = centres_.leftCols(kPatchDims);
}

std::array<std::int32_t, kCodesPerImage> Codebook::encode(
    std::span<const std::uint8_t> image) const {
  if (image.size() != kPixelsPerImage) {
    throw std::invalid_argument("Codebook::encode: expected 784 pixels, got " +
                                std::to_string(image.size()));
  }
  std::vector<std::int32_t> codes;
  assign_nearest(patch_descriptors(image, 1, context_), centres_, codes);
  std::array<std::int32_t, kCodesPerImage> out{};
  std::copy(codes.begin(), codes.end(), out.begin());
  return out;
}

std::vector<std::int32_t> Codebook::encode_batch(std::span<const std::uint8_t> pixels,
                                                 std::size_t count) const {
  std::vector<std::int32_t> codes;
  assign_nearest(patch_descriptors(pixels, count, context_), centres_, codes);
  return codes;
}

std::vector<std::uint8_t> Codebook::decode(std::span<const std::int32_t> codes) const {
  if (codes.size() != kCodesPerImage) {
    throw std::invalid_argument("Codebook::decode: expected 49 codes, got " +
                                std::to_string(codes.size()));
  }
  std::vector<std::uint8_t> img(kPixelsPerImage);
  for (int p = 0; p < kCodesPerImage; ++p) {
    const std::int32_t c = codes[static_cast<std::size_t>(p)];
    if (c < 0 || c >= size()) {
      throw std::out_of_range("Codebook::decode: code " + std::to_string(c) + " outside [0, " +
                              std::to_string(size()) + ")");
    }
    const int py = p / kGrid, px = p % kGrid;
    for (int y = 0; y < kPatchSide; ++y) {
      for (int x = 0; x < kPatchSide; ++x) {
        const float v = patch_centres_(c, y * kPatchSide + x) * 255.0f;
        img[static_cast<std::size_t>((py * kPatchSide + y) * kImageSide + px * kPatchSide + x)] =
            static_cast<std::uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
    }
  }
  return img;
}

namespace {

constexpr std::string_view kFormat = "neat.mvot.codebook";
constexpr std::uint32_t kFileVersion = 2;  // 2: context_radius, context_weight; 1 still loads

struct ProvenanceRecord {
  std::uint64_t seed, init_sample, train_images, train_file_bytes;
  int iterations, k, restarted_codes;
  std::string train_file;
  std::uint32_t train_file_crc32;
  double wall_seconds, train_mse, test_psnr_mean_db, test_psnr_of_mean_mse_db, test_perplexity;
  MSGPACK_DEFINE_MAP(seed, init_sample, train_images, train_file_bytes, iterations, k,
                     restarted_codes, train_file, train_file_crc32, wall_seconds, train_mse,
                     test_psnr_mean_db, test_psnr_of_mean_mse_db, test_perplexity);
};

struct CodebookRecord {
  std::string format;
  std::uint32_t version = 0;
  std::int64_t k = 0, dims = 0;
  msgpack::type::raw_ref data;
  ProvenanceRecord provenance;
  int context_radius = 0;
  float context_weight = 0.0f;
  MSGPACK_DEFINE_MAP(format, version, k, dims, data, provenance, context_radius, context_weight);
};

}  // namespace

void Codebook::save(const std::filesystem::path& file) const {
  const auto& p = provenance_;
  CodebookRecord rec;
  rec.format = std::string(kFormat);
  rec.version = kFileVersion;
  rec.k = centres_.rows();
  rec.dims = centres_.cols();
  rec.context_radius = context_.radius;
  rec.context_weight = context_.weight;
  static_assert(std::endian::native == std::endian::little, "codebook files are little-endian");
  rec.data = msgpack::type::raw_ref(reinterpret_cast<const char*>(centres_.data()),
                                    static_cast<std::uint32_t>(centres_.size() * sizeof(float)));
  rec.provenance = {p.seed,
                    p.init_sample,
                    p.train_images,
                    p.train_file_bytes,
                    p.iterations,
                    p.k,
                    p.restarted_codes,
                    p.train_file,
                    p.train_file_crc32,
                    p.wall_seconds,
                    p.train_mse,
                    p.test_psnr_mean_db,
                    p.test_psnr_of_mean_mse_db,
                    p.test_perplexity};
  msgpack::sbuffer body;
  msgpack::pack(body, rec);
  const auto crc = static_cast<std::uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
  msgpack::sbuffer outer;
  msgpack::packer<msgpack::sbuffer> pk(outer);
  pk.pack_array(2);
  pk.pack_bin(static_cast<std::uint32_t>(body.size()));
  pk.pack_bin_body(body.data(), static_cast<std::uint32_t>(body.size()));
  pk.pack(crc);
  std::ofstream f(file, std::ios::binary | std::ios::trunc);
  f.write(outer.data(), static_cast<std::streamsize>(outer.size()));
  if (!f) throw std::runtime_error(file.string() + ": cannot write codebook");
}

Codebook Codebook::load(const std::filesystem::path& file) {
  const std::string name = file.string();
  if (!std::filesystem::exists(file)) {
    throw std::runtime_error(name +
                             ": codebook file not found; train one with `neat train mvot`, which "
                             "writes models/mvot/codebook.msgpack");
  }
  std::ifstream f(file, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CodebookRecord rec;
  try {
    auto outer = msgpack::unpack(bytes.data(), bytes.size());
    const auto& o = outer.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 2 ||
        o.via.array.ptr[0].type != msgpack::type::BIN) {
      throw std::runtime_error("not a [body, crc32] codebook container");
    }
    const auto& bin = o.via.array.ptr[0].via.bin;
    const auto stored = o.via.array.ptr[1].as<std::uint32_t>();
    const auto crc = static_cast<std::uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(bin.ptr), static_cast<uInt>(bin.size)));
    if (crc != stored) {
      throw std::runtime_error("checksum mismatch (crc32 " + std::to_string(crc) + ", stored " +
                               std::to_string(stored) + ")");
    }
    auto body = msgpack::unpack(bin.ptr, bin.size);
    body.get().convert(rec);
    if (rec.format != kFormat) throw std::runtime_error("format is '" + rec.format + "'");
    if (rec.version != 1 && rec.version != kFileVersion) {
      throw std::runtime_error("unsupported version " + std::to_string(rec.version));
    }
    PatchContext context;
    if (rec.version >= 2) context = {rec.context_radius, rec.context_weight};
    if (rec.dims != descriptor_dims(context) || rec.k < 1 ||
        rec.data.size != static_cast<std::uint32_t>(rec.k * rec.dims * 4)) {
      throw std::runtime_error("shape k=" + std::to_string(rec.k) +
                               " dims=" + std::to_string(rec.dims) + " does not match " +
                               std::to_string(rec.data.size) + " data bytes");
    }
    RowMatrix c(rec.k, rec.dims);
    std::memcpy(c.data(), rec.data.ptr, rec.data.size);
    const auto& r = rec.provenance;
    Provenance p{r.seed,
                 r.iterations,
                 r.k,
                 r.init_sample,
                 r.train_images,
                 r.train_file,
                 r.train_file_bytes,
                 r.train_file_crc32,
                 r.wall_seconds,
                 r.train_mse,
                 r.test_psnr_mean_db,
                 r.test_psnr_of_mean_mse_db,
                 r.test_perplexity,
                 r.restarted_codes};
    return Codebook(std::move(c), std::move(p), context);
  } catch (const std::exception& e) {
    throw std::runtime_error(name + ": invalid codebook file: " + e.what());
  }
}

double image_mse(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  if (a.size() != b.size() || a.empty()) throw std::invalid_argument("image_mse: size mismatch");
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = (double(a[i]) - double(b[i])) / 255.0;
    s += d * d;
  }
  return s / static_cast<double>(a.size());
}

double psnr_db(double mse) { return 10.0 * std::log10(1.0 / std::max(mse, 1e-10)); }

EvalReport evaluate(const Codebook& codebook, const IdxImages& images) {
  if (images.rows != kImageSide || images.cols != kImageSide) {
    throw std::invalid_argument("evaluate: images must be 28x28");
  }
  const auto t0 = std::chrono::steady_clock::now();
  // One descriptor matrix: it is what encode_batch would build, and its rows tell the all-black
  // patches (first 16 values) and the all-zero descriptors apart.
  const RowMatrix descriptors = patch_descriptors(images.pixels, images.count, codebook.context());
  std::vector<std::int32_t> codes;
  assign_nearest(descriptors, codebook.centres(), codes);
  EvalReport r;
  r.images = images.count;
  std::vector<std::uint64_t> hist(static_cast<std::size_t>(codebook.size()));
  double sum_psnr = 0.0, sum_mse = 0.0;
  for (std::size_t i = 0; i < images.count; ++i) {
    std::span<const std::int32_t> c(codes.data() + i * kCodesPerImage, kCodesPerImage);
    for (auto v : c) ++hist[static_cast<std::size_t>(v)];
    const auto rec = codebook.decode(c);
    const double mse = image_mse(images.image(i), rec);
    sum_mse += mse;
    sum_psnr += psnr_db(mse);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.mean_mse = sum_mse / static_cast<double>(images.count);
  r.psnr_mean_db = sum_psnr / static_cast<double>(images.count);
  r.psnr_of_mean_mse_db = psnr_db(r.mean_mse);
  const double total = static_cast<double>(codes.size());
  for (auto h : hist) {
    if (h == 0) continue;
    ++r.used_codes;
    const double p = static_cast<double>(h) / total;
    r.code_entropy_nats -= p * std::log(p);
  }
  r.perplexity = std::exp(r.code_entropy_nats);
  r.top_code_share = static_cast<double>(*std::max_element(hist.begin(), hist.end())) / total;
  std::size_t zero_patches = 0, zero_descriptors = 0;
  for (Eigen::Index i = 0; i < descriptors.rows(); ++i) {
    zero_patches += descriptors.row(i).leftCols(kPatchDims).isZero(0.0f);
    zero_descriptors += descriptors.row(i).isZero(0.0f);
  }
  r.zero_patch_share = static_cast<double>(zero_patches) / total;
  // Identical descriptors get the same code: with a context ring only the black patches whose
  // ring is black too are forced onto one code.
  r.zero_descriptor_share = static_cast<double>(zero_descriptors) / total;
  r.perplexity_bound = max_perplexity_with_atom(r.zero_descriptor_share, codebook.size());
  return r;
}

double max_perplexity_with_atom(double share, int k) {
  if (!(share >= 0.0 && share <= 1.0) || k < 1)
    throw std::invalid_argument("max_perplexity_with_atom: need share in [0, 1] and k >= 1");
  if (share <= 1.0 / k) return static_cast<double>(k);
  const double rest = 1.0 - share;
  double h = -share * std::log(share);
  if (rest > 0.0) h -= rest * std::log(rest / (k - 1));
  return std::exp(h);
}

TrainReport train_codebook(const TrainOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto train_path = options.dataset_dir / "train-images-idx3-ubyte.gz";
  const auto test_path = options.dataset_dir / "t10k-images-idx3-ubyte.gz";
  IdxImages train = read_idx_images(train_path);
  if (train.rows != kImageSide || train.cols != kImageSide) {
    throw std::runtime_error(train_path.string() + ": images are not 28x28");
  }
  std::size_t n = train.count;
  if (options.max_train_images > 0) n = std::min(n, options.max_train_images);
  const RowMatrix x =
      patch_descriptors(std::span(train.pixels).first(n * kPixelsPerImage), n, options.context);
  KMeansResult km = kmeans(x, options.kmeans);

  TrainReport report;
  auto& p = report.provenance;
  p.seed = options.kmeans.seed;
  p.iterations = km.iterations;
  p.k = options.kmeans.k;
  p.init_sample = options.kmeans.init_sample;
  p.train_images = n;
  p.train_file = train_path.string();
  {
    std::ifstream f(train_path, std::ios::binary);
    std::string gz((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    p.train_file_bytes = gz.size();
    p.train_file_crc32 = static_cast<std::uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(gz.data()), static_cast<uInt>(gz.size())));
  }
  p.train_mse = km.inertia.empty() ? 0.0 : km.inertia.back();
  p.restarted_codes = km.restarted_codes;
  p.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.inertia = km.inertia;

  Codebook codebook(std::move(km.centres), p, options.context);
  report.test = evaluate(codebook, read_idx_images(test_path));
  p.test_psnr_mean_db = report.test.psnr_mean_db;
  p.test_psnr_of_mean_mse_db = report.test.psnr_of_mean_mse_db;
  p.test_perplexity = report.test.perplexity;
  codebook.set_provenance(p);
  if (!options.output.empty()) codebook.save(options.output);
  return report;
}

}  // namespace neat::mvot
