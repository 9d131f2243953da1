// The visual codebook of MVoT (Li et al. 2025, arXiv 2501.07542, Sec. 3: images as discrete
// visual tokens of a VQ tokenizer). Here the tokenizer is plain vector quantisation: a 28x28
// grayscale image is cut into 49 non-overlapping 4x4 patches (16-dim vectors, pixels / 255 in
// [0, 1]) and each patch is replaced by the index of its nearest codebook entry (squared
// Euclidean distance). Optionally the vector that is quantised is a patch *descriptor*: the 16
// patch pixels followed by the ring of pixels around the patch (radius r = 1: the 20 pixels of
// the 6x6 window that are not the patch), scaled by a context weight beta, so that a patch's code
// also depends on its surroundings, like the receptive field of a VQ-VAE encoder (an all-black
// patch at a garment's edge and one in an empty corner get different codes). Decoding uses the
// 16 patch values of the centre only. The codebook is trained with k-means (k-means++ seeding,
// Lloyd steps, dead-code restarts). Invariant: a Codebook always holds K >= 1 finite centres that
// were trained on real data or loaded from a checksummed file, never made up.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "neat/mvot/idx.hpp"

namespace neat::mvot {

inline constexpr int kImageSide = 28;                            ///< pixels per side of an image
inline constexpr int kPatchSide = 4;                             ///< pixels per side of a patch
inline constexpr int kPatchDims = 16;                            ///< values per patch vector
inline constexpr int kGrid = kImageSide / kPatchSide;            ///< 7 patches per side
inline constexpr int kCodesPerImage = kGrid * kGrid;             ///< 49 codes per image
inline constexpr int kPixelsPerImage = kImageSide * kImageSide;  ///< 784

/// Row-major float matrix; rows are vectors (patches or centres).
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Patch vectors of `count` 28x28 images stored back to back (count * 784 u8 pixels).
/// Returns (count * 49, 16): row i*49 + py*7 + px is patch (py, px) of image i, values / 255.
/// Throws std::invalid_argument if pixels.size() != count * 784.
RowMatrix image_patches(std::span<const std::uint8_t> pixels, std::size_t count);

/// The context of a patch descriptor: the ring of pixels within `radius` pixels around the 4x4
/// patch, each scaled by `weight` (beta). radius 0 (weight ignored): the plain 16-dim patch.
struct PatchContext {
  int radius = 0;       ///< 0 or 1 (a 6x6 window: 36 dims); larger rings exceed the kernel's 64
  float weight = 0.0f;  ///< beta >= 0, the weight of each ring pixel in the squared distance
};

/// Values per descriptor: (4 + 2 radius)^2. Throws std::invalid_argument unless radius is 0 or 1
/// and weight is finite and >= 0.
int descriptor_dims(const PatchContext& context);

/// Patch descriptors of `count` 28x28 images: (count * 49, descriptor_dims(context)); columns
/// 0..15 are image_patches' values, then the ring pixels of the (4 + 2r)^2 window around the
/// patch in raster order (pixels outside the image are 0), times context.weight. With radius 0
/// equal to image_patches. Throws std::invalid_argument as image_patches and descriptor_dims.
RowMatrix patch_descriptors(std::span<const std::uint8_t> pixels, std::size_t count,
                            const PatchContext& context);

/// Nearest centre of every row of `x` (N, D) among `centres` (K, D), by squared Euclidean
/// distance ||x||^2 - 2 x.c + ||c||^2 (the VQ assignment of MVoT's visual tokenizer). The
/// -2 x.c + ||c||^2 part is computed as a GEMM would (fma over d = 0..D-1 from zero, then
/// + ||c||^2), but fused with the argmin in register tiles of 8 rows x 16 centres, so the (N, K)
/// distance matrix is never stored. Ties go to the lower index. Writes codes (N) and, if
/// non-null, squared errors (N) of each row.
/// Throws std::invalid_argument on a dimension mismatch, K == 0 or D > 64.
void assign_nearest(const RowMatrix& x, const RowMatrix& centres, std::vector<std::int32_t>& codes,
                    std::vector<float>* squared_errors = nullptr);

struct KMeansOptions {
  int k = 512;                      ///< number of centres
  int iterations = 25;              ///< maximum Lloyd iterations
  std::uint64_t seed = 1;           ///< seeds the subsample and k-means++ draws
  std::size_t init_sample = 20000;  ///< rows drawn (without replacement) for k-means++ seeding
  double tolerance = 1e-5;          ///< stop when relative inertia change is below this
  /// Start from these (k, D) centres instead of k-means++ seeding when non-empty.
  RowMatrix initial_centres;
};

struct KMeansResult {
  RowMatrix centres;            ///< (K, D)
  int iterations = 0;           ///< Lloyd iterations run
  std::vector<double> inertia;  ///< mean squared error per row after each iteration
  int restarted_codes = 0;      ///< dead codes restarted from high-error rows, summed
};

/// k-means (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007) on a
/// deterministic subsample. After each assignment, centres with no assigned row (dead codes)
/// are moved to the rows with the largest squared error, distinct rows, largest first.
/// Deterministic for a given seed. Throws std::invalid_argument if x has fewer rows than k.
KMeansResult kmeans(const RowMatrix& x, const KMeansOptions& options);

/// Where a codebook came from (stored in its file).
struct Provenance {
  std::uint64_t seed = 0;
  int iterations = 0;
  int k = 0;
  std::uint64_t init_sample = 0;
  std::uint64_t train_images = 0;
  std::string train_file;              ///< path of the training IDX gzip file
  std::uint64_t train_file_bytes = 0;  ///< its size in bytes (compressed)
  std::uint32_t train_file_crc32 = 0;  ///< zlib crc32 of its compressed bytes
  double wall_seconds = 0.0;           ///< training wall time, seconds
  double train_mse = 0.0;              ///< final k-means inertia (mean squared error per value*16)
  double test_psnr_mean_db = 0.0;      ///< mean over test images of per-image PSNR, dB
  double test_psnr_of_mean_mse_db = 0.0;  ///< PSNR of the mean test MSE, dB
  double test_perplexity = 0.0;           ///< exp(H) of the test code histogram, H in nats
  int restarted_codes = 0;
};

/// A trained VQ codebook: K centres over patch descriptors; decode uses their 16 patch values.

class Codebook {
 public:
  /// Takes trained centres (K, descriptor_dims(context)). Throws std::invalid_argument on a
  /// wrong width, K == 0, a non-finite value or an invalid context.
  explicit Codebook(RowMatrix centres, Provenance provenance = {}, PatchContext context = {});

  int size() const { return static_cast<int>(centres_.rows()); }
  /// Centres in descriptor space (K, descriptor_dims(context())): what encoding compares with.
  const RowMatrix& centres() const { return centres_; }
  /// The 16 patch values of each centre (K, 16), pixels / 255: what decoding writes, and the
  /// visual embedding of each code (token discrepancy distances, LM row initialisation).
  const RowMatrix& patch_centres() const { return patch_centres_; }
  const PatchContext& context() const { return context_; }
  const Provenance& provenance() const { return provenance_; }
  void set_provenance(Provenance p) { provenance_ = std::move(p); }

  /// Codes (49, raster order of the 7x7 patch grid) of one 28x28 image (784 u8 pixels).
  /// Throws std::invalid_argument on a wrong pixel count.
  std::array<std::int32_t, kCodesPerImage> encode(std::span<const std::uint8_t> image) const;
  /// Codes of `count` images back to back: (count * 49).
  std::vector<std::int32_t> encode_batch(std::span<const std::uint8_t> pixels,
                                         std::size_t count) const;
  /// The 784 u8 pixels reconstructed from 49 codes (centre values * 255, rounded, clamped).
  /// Throws std::out_of_range on a code outside [0, K).
  std::vector<std::uint8_t> decode(std::span<const std::int32_t> codes) const;

  /// Writes the msgpack file: outer array [body (bin), crc32(body)], body a map with format
  /// "neat.mvot.codebook", version 2, k, dims, data (K*dims float32 little-endian),
  /// context_radius, context_weight and provenance. Version 1 files (no context) still load.
  /// Throws std::runtime_error if the file cannot be written.
  void save(const std::filesystem::path& file) const;
  /// Reads and validates a file written by save(). Throws std::runtime_error naming the file if
  /// it is missing (saying how to train one: `neat train mvot`), fails the checksum, or has a
  /// wrong format, version, shape or non-finite value.
  static Codebook load(const std::filesystem::path& file);

 private:
  RowMatrix centres_;
  RowMatrix patch_centres_;
  Provenance provenance_;
  PatchContext context_;
};

/// Mean squared error of two equally sized u8 images with values scaled to [0, 1].
double image_mse(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b);
/// PSNR in dB with peak 1.0: 10 log10(1 / mse); mse below 1e-10 counts as 1e-10 (100 dB).
double psnr_db(double mse);

/// Reconstruction quality and code usage of a codebook on a set of images.
struct EvalReport {
  std::size_t images = 0;
  double psnr_mean_db = 0.0;         ///< mean over images of per-image PSNR, dB
  double psnr_of_mean_mse_db = 0.0;  ///< PSNR of the MSE averaged over all images, dB
  double mean_mse = 0.0;             ///< on [0, 1] pixel scale
  double code_entropy_nats = 0.0;    ///< H of the code histogram, nats
  double perplexity = 0.0;           ///< exp(H)
  int used_codes = 0;                ///< codes with at least one occurrence
  double top_code_share = 0.0;       ///< share of all codes taken by the most frequent code
  double zero_patch_share = 0.0;     ///< share of patches whose 16 pixels are all 0 (black)
  /// share of patch descriptors that are all 0 (black patch and, with a context, black ring);
  /// equals zero_patch_share without a context
  double zero_descriptor_share = 0.0;
  /// Largest perplexity any nearest-code quantiser over these descriptors with this K can reach
  /// on these images: max_perplexity_with_atom(zero_descriptor_share, K) (identical descriptors
  /// get the same code).
  double perplexity_bound = 0.0;
  double seconds = 0.0;  ///< wall time of encode + decode, seconds
};

/// Upper bound on the code perplexity exp(H) of a K-code histogram in which one code holds a
/// share of at least `share`: exp(-s ln s - (1 - s) ln((1 - s) / (K - 1))), the entropy with
/// that code at exactly s and the rest spread evenly over the other K - 1 codes (H is concave,
/// and decreasing in the top share once s >= 1/K). A nearest-code quantiser sends identical
/// patches (e.g. all-black ones) to one code, so their share s gives this bound for every
/// codebook of size K. Returns K when share <= 1/K. Throws std::invalid_argument if share is
/// outside [0, 1] or k < 1.
double max_perplexity_with_atom(double share, int k);

/// Encodes and decodes every image and measures EvalReport. Throws std::invalid_argument if
/// the images are not 28x28.
EvalReport evaluate(const Codebook& codebook, const IdxImages& images);

struct TrainOptions {
  std::filesystem::path dataset_dir = std::string(kFashionMnistDir);
  std::filesystem::path output;  ///< where to save; empty: do not save
  KMeansOptions kmeans;
  PatchContext context;              ///< descriptor the codebook quantises
  std::size_t max_train_images = 0;  ///< 0: all 60,000 training images
};

struct TrainReport {
  Provenance provenance;
  EvalReport test;
  std::vector<double> inertia;  ///< per iteration
};

/// Trains the codebook on the train split, evaluates it on the 10,000 test images and, if
/// options.output is set, saves it with its provenance. Throws std::runtime_error on data errors.
TrainReport train_codebook(const TrainOptions& options);

}  // namespace neat::mvot
