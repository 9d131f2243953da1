// Tests of mvot on real data: Fashion-MNIST from dataset-fashion-mnist, the shipped codebook
// models/mvot/codebook.msgpack, and real text files (fortunes, /usr/include, python stdlib).
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "neat/mvot/codebook.hpp"
#include "neat/mvot/idx.hpp"
#include "neat/mvot/image_io.hpp"
#include "neat/mvot/modality.hpp"
#include "neat/mvot/mvot_component.hpp"
#include "neat/mvot/tokens.hpp"

namespace fs = std::filesystem;
using namespace neat::mvot;

namespace {

const fs::path kData = std::string(kFashionMnistDir);
const fs::path kShipped = fs::path(NEAT_SOURCE_DIR) / "models/mvot/codebook.msgpack";

fs::path temp_dir(const std::string& name) {
  auto d =
      fs::temp_directory_path() / ("neat_mvot_test_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::vector<std::uint8_t> read_all(const fs::path& f) {
  std::ifstream in(f, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& f, std::span<const std::uint8_t> b) {
  std::ofstream out(f, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

const IdxImages& test_images() {
  static const IdxImages images = read_idx_images(kData / "t10k-images-idx3-ubyte.gz");
  return images;
}

}  // namespace

TEST(IdxReader, ReadsRealTestSplitWithLabels) {
  const auto& images = test_images();
  EXPECT_EQ(images.count, 10000u);
  EXPECT_EQ(images.rows, 28u);
  EXPECT_EQ(images.cols, 28u);
  const auto labels = read_idx_labels(kData / "t10k-labels-idx1-ubyte.gz");
  ASSERT_EQ(labels.size(), 10000u);
  std::array<int, 10> per_class{};
  for (auto l : labels) ++per_class[l];
  for (int c : per_class) EXPECT_EQ(c, 1000);  // the test split is balanced
  EXPECT_EQ(fashion_mnist_classes()[9], "Ankle boot");
}

TEST(IdxReader, RejectsTruncatedCopyNamingTheFile) {
  const auto dir = temp_dir("idx");
  const auto gz = read_all(kData / "t10k-images-idx3-ubyte.gz");
  const auto cut = dir / "truncated.gz";
  write_all(cut, std::span(gz).first(gz.size() / 2));
  try {
    read_idx_images(cut);
    FAIL() << "truncated file accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated.gz"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(IdxReader, RejectsBadMagicAndSizeMismatch) {
  auto raw = read_gzip_file(kData / "t10k-images-idx3-ubyte.gz");
  auto bad_magic = raw;
  bad_magic[3] = 0x01;
  EXPECT_THROW(parse_idx_images(bad_magic, "x"), std::runtime_error);
  raw.pop_back();
  try {
    parse_idx_images(raw, "short.idx");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("size mismatch"), std::string::npos) << e.what();
  }
}

TEST(TokenSpace, BytesRoundTripAndRejectNonBytes) {
  std::vector<std::uint8_t> all(256);
  for (int i = 0; i < 256; ++i) all[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
  const auto t = bytes_to_tokens(all);
  EXPECT_EQ(t.front(), 0);
  EXPECT_EQ(t.back(), 255);
  EXPECT_EQ(tokens_to_bytes(t), all);
  const std::vector<std::int32_t> bad = {65, kBos};
  EXPECT_THROW(tokens_to_bytes(bad), std::out_of_range);
}

TEST(TokenSpace, ImageCodesRoundTripThroughBoiEoi) {
  const int k = 512;
  std::vector<std::int32_t> codes(49);
  for (int i = 0; i < 49; ++i) codes[static_cast<std::size_t>(i)] = (i * 37) % k;
  codes[0] = 0;
  codes[1] = k - 1;
  const auto t = image_codes_to_tokens(codes, k);
  ASSERT_EQ(t.size(), 51u);
  EXPECT_EQ(t.front(), kBoi);
  EXPECT_EQ(t.back(), kEoi);
  EXPECT_EQ(t[1], 261);
  EXPECT_EQ(t[2], 261 + k - 1);
  EXPECT_EQ(tokens_to_image_codes(t, k), codes);
  for (std::int32_t tok = 0; tok < vocabulary_size(k); ++tok) {
    if (tok >= kFirstImageToken) {
      EXPECT_EQ(code_to_token(token_to_code(tok, k), k), tok);
    } else {
      EXPECT_THROW(token_to_code(tok, k), std::out_of_range);
    }
  }
  EXPECT_THROW(code_to_token(k, k), std::out_of_range);
  EXPECT_THROW(code_to_token(-1, k), std::out_of_range);
  EXPECT_THROW(token_to_code(kEoi, k), std::out_of_range);
  EXPECT_THROW(token_to_code(261 + k, k), std::out_of_range);
  auto no_eoi = t;
  no_eoi.pop_back();
  EXPECT_THROW(tokens_to_image_codes(no_eoi, k), std::out_of_range);
}

TEST(KMeans, ConvergesToKnownCentresOfSeparatedClusters) {
  // Four clusters in 16 dims around known centres, spread 0.01: k-means must recover them.
  RowMatrix truth(4, 16);
  truth.setZero();
  for (int j = 0; j < 4; ++j) truth.row(j).segment(4 * j, 4).setConstant(1.0f);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> noise(0.0f, 0.01f);
  RowMatrix x(400, 16);
  for (int i = 0; i < 400; ++i) {
    for (int d = 0; d < 16; ++d) x(i, d) = truth(i % 4, d) + noise(rng);
  }
  KMeansOptions o;
  o.k = 4;
  o.iterations = 20;
  o.seed = 3;
  const auto r = kmeans(x, o);
  for (int j = 0; j < 4; ++j) {
    float best = 1e9f;
    for (int c = 0; c < 4; ++c) best = std::min(best, (r.centres.row(c) - truth.row(j)).norm());
    EXPECT_LT(best, 0.01f) << "centre " << j << " not recovered";
  }
  EXPECT_LT(r.inertia.back(), 16 * 0.01 * 0.01 * 1.5);
}

TEST(KMeans, DeadCodeIsRestartedAtWorstServedRow) {
  // Three tight clusters at 0, 1 and 5 (all 16 values); start with two centres in the first
  // cluster and one far away at 100 that no row is nearest to. Without the restart the third
  // cluster would stay merged; with it the dead code jumps to the worst-served rows.
  RowMatrix x(90, 16);
  const float level[3] = {0.0f, 1.0f, 5.0f};
  for (int i = 0; i < 90; ++i)
    x.row(i).setConstant(level[i % 3] + 0.001f * static_cast<float>(i / 3));
  KMeansOptions o;
  o.k = 3;
  o.iterations = 20;
  o.initial_centres = RowMatrix::Zero(3, 16);
  o.initial_centres.row(1).setConstant(0.01f);
  o.initial_centres.row(2).setConstant(100.0f);
  const auto r = kmeans(x, o);
  EXPECT_GE(r.restarted_codes, 1);
  std::vector<float> means;
  for (int c = 0; c < 3; ++c) means.push_back(r.centres.row(c).mean());
  std::sort(means.begin(), means.end());
  EXPECT_NEAR(means[0], 0.0145f, 0.01f);
  EXPECT_NEAR(means[1], 1.0145f, 0.01f);
  EXPECT_NEAR(means[2], 5.0145f, 0.01f);
}

TEST(Codebook, ShippedCodebookReconstructsRealTestImages) {
  const auto cb = Codebook::load(kShipped);
  EXPECT_EQ(cb.size(), 512);
  const auto& images = test_images();
  double psnr = 0.0;
  for (std::size_t i = 0; i < 100; ++i) {
    const auto codes = cb.encode(images.image(i));
    for (auto c : codes) ASSERT_TRUE(c >= 0 && c < 512);
    const auto rec = cb.decode(codes);
    ASSERT_EQ(rec.size(), 784u);
    psnr += psnr_db(image_mse(images.image(i), rec));
  }
  psnr /= 100.0;
  std::printf("shipped codebook: mean per-image PSNR on 100 test images %.2f dB\n", psnr);
  EXPECT_GT(psnr, 20.0);
  EXPECT_EQ(cb.provenance().k, 512);
  EXPECT_GT(cb.provenance().wall_seconds, 0.0);
}

// The search as it was before the fused kernel (and as bench/mvot/numpy_encode.py does it): the
// distance block -2 X C^T by an Eigen GEMM, + ||c||^2, then the first index of the row minimum.
static std::vector<std::int32_t> gemm_reference_codes(const RowMatrix& x,
                                                      const RowMatrix& centres) {
  const Eigen::MatrixXf neg2ct = -2.0f * centres.transpose();
  const Eigen::RowVectorXf cnorm = centres.rowwise().squaredNorm().transpose();
  std::vector<std::int32_t> codes(static_cast<std::size_t>(x.rows()));
  RowMatrix d;
  for (Eigen::Index s = 0; s < x.rows(); s += 256) {
    const Eigen::Index b = std::min<Eigen::Index>(256, x.rows() - s);
    d.resize(b, centres.rows());
    d.noalias() = x.middleRows(s, b) * neg2ct;
    d.rowwise() += cnorm;
    for (Eigen::Index i = 0; i < b; ++i) {
      const float* row = d.row(i).data();
      const float m = d.row(i).minCoeff();
      codes[static_cast<std::size_t>(s + i)] =
          static_cast<std::int32_t>(std::find(row, row + centres.rows(), m) - row);
    }
  }
  return codes;
}

TEST(Codebook, FusedNearestSearchGivesTheGemmCodesOnAllTestImages) {
  const auto cb = Codebook::load(kShipped);
  const auto& images = test_images();
  const RowMatrix x = patch_descriptors(images.pixels, images.count, cb.context());  // (490000, D)
  std::vector<std::int32_t> codes;
  std::vector<float> errors;
  assign_nearest(x, cb.centres(), codes, &errors);
  const auto reference = gemm_reference_codes(x, cb.centres());
  ASSERT_EQ(codes.size(), reference.size());
  std::size_t same = 0;
  for (std::size_t i = 0; i < codes.size(); ++i) same += codes[i] == reference[i];
  EXPECT_EQ(same, codes.size()) << "codes differing from the GEMM search";
  EXPECT_EQ(cb.encode_batch(images.pixels, images.count), codes);
  for (std::size_t i = 0; i < codes.size(); i += 997) {
    const auto r = static_cast<Eigen::Index>(i);
    const float exact = (x.row(r) - cb.centres().row(codes[i])).squaredNorm();
    EXPECT_NEAR(errors[i], exact, 1e-4f) << "patch " << i;
  }
}

TEST(Codebook, PerplexityBoundOfAnAtomIsTheEvenSpreadOfTheRest) {
  EXPECT_DOUBLE_EQ(max_perplexity_with_atom(0.0, 512), 512.0);
  EXPECT_DOUBLE_EQ(max_perplexity_with_atom(1.0 / 512, 512), 512.0);
  EXPECT_NEAR(max_perplexity_with_atom(1.0, 512), 1.0, 1e-12);
  // s = 0.5, K = 3: p = (0.5, 0.25, 0.25), H = 1.5 ln 2.
  EXPECT_NEAR(max_perplexity_with_atom(0.5, 3), std::exp(1.5 * std::log(2.0)), 1e-12);
  // Any histogram with a top share >= s stays below the bound: a skewed one as an example.
  double h = -0.4 * std::log(0.4) - 0.6 * std::log(0.3);  // (0.4, 0.3, 0.3, 0) over K = 4
  EXPECT_LT(std::exp(h), max_perplexity_with_atom(0.4, 4) + 1e-12);
  EXPECT_GT(max_perplexity_with_atom(0.30, 512), max_perplexity_with_atom(0.40, 512));
  EXPECT_THROW(max_perplexity_with_atom(1.5, 512), std::invalid_argument);
  EXPECT_THROW(max_perplexity_with_atom(0.5, 0), std::invalid_argument);
}

TEST(Codebook, ShippedCodebookUsageStaysUnderTheAllBlackPatchBound) {
  const auto cb = Codebook::load(kShipped);
  const auto r = evaluate(cb, test_images());
  std::printf(
      "shipped codebook on %zu test images: PSNR %.2f dB, perplexity %.1f, top code share "
      "%.4f, all-black patch share %.4f, bound for any nearest-code quantiser at K = %d: %.1f\n",
      r.images, r.psnr_mean_db, r.perplexity, r.top_code_share, r.zero_patch_share, cb.size(),
      r.perplexity_bound);
  // Identical (all-zero) descriptors share one code, so the top code holds at least their
  // share, and no histogram with that top share beats the bound.
  EXPECT_GE(r.top_code_share, r.zero_descriptor_share);
  EXPECT_GT(r.zero_patch_share, 0.0);
  EXPECT_LE(r.zero_descriptor_share, r.zero_patch_share);
  EXPECT_LE(r.perplexity, r.perplexity_bound + 1e-9);
  EXPECT_LE(r.perplexity, max_perplexity_with_atom(r.top_code_share, cb.size()) + 1e-9);
  EXPECT_DOUBLE_EQ(r.perplexity_bound,
                   max_perplexity_with_atom(r.zero_descriptor_share, cb.size()));
  EXPECT_NEAR(r.perplexity, cb.provenance().test_perplexity, 1e-6);
}

TEST(Codebook, FusedNearestSearchHandlesOddShapesAndTies) {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (const auto [n, k, d] : {std::array<int, 3>{37, 21, 3}, std::array<int, 3>{1, 1, 16},
                               std::array<int, 3>{300, 512, 16}, std::array<int, 3>{9, 17, 64}}) {
    RowMatrix x(n, d), c(k, d);
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = g(rng);
    for (Eigen::Index i = 0; i < c.size(); ++i) c.data()[i] = g(rng);
    if (k > 2) c.row(k - 1) = c.row(1);  // a duplicate centre: the tie goes to index 1
    std::vector<std::int32_t> codes;
    assign_nearest(x, c, codes);
    EXPECT_EQ(codes, gemm_reference_codes(x, c)) << n << " x " << k << " x " << d;
    for (auto code : codes) {
      ASSERT_GE(code, 0);
      ASSERT_LT(code, k - (k > 2 ? 1 : 0));
    }
  }
  RowMatrix x = RowMatrix::Zero(2, 4), c = RowMatrix::Zero(3, 4);  // all equidistant
  std::vector<std::int32_t> codes;
  assign_nearest(x, c, codes);
  EXPECT_EQ(codes, (std::vector<std::int32_t>{0, 0}));
  EXPECT_THROW(assign_nearest(x, RowMatrix::Zero(3, 5), codes), std::invalid_argument);
  EXPECT_THROW(assign_nearest(RowMatrix::Zero(2, 65), RowMatrix::Zero(3, 65), codes),
               std::invalid_argument);
}

TEST(Codebook, DescriptorIsThePatchThenItsWeightedRing) {
  // A 28x28 image whose pixel (y, x) is (7 y + 3 x) mod 256: every value identifies its place.
  std::vector<std::uint8_t> img(kPixelsPerImage);
  for (int y = 0; y < kImageSide; ++y)
    for (int x = 0; x < kImageSide; ++x)
      img[static_cast<std::size_t>(y * kImageSide + x)] =
          static_cast<std::uint8_t>((7 * y + 3 * x) % 256);
  EXPECT_EQ(descriptor_dims({}), 16);
  EXPECT_EQ(descriptor_dims({1, 0.5f}), 36);
  EXPECT_THROW(descriptor_dims({2, 0.5f}), std::invalid_argument);
  EXPECT_THROW(descriptor_dims({1, -1.0f}), std::invalid_argument);
  EXPECT_TRUE(patch_descriptors(img, 1, {}) == image_patches(img, 1));
  const RowMatrix d = patch_descriptors(img, 1, {1, 0.5f});
  ASSERT_EQ(d.rows(), 49);
  ASSERT_EQ(d.cols(), 36);
  EXPECT_TRUE(d.leftCols(16) == image_patches(img, 1));
  auto pixel = [&](int y, int x) {
    const bool in = y >= 0 && y < kImageSide && x >= 0 && x < kImageSide;
    return in ? 0.5f * img[static_cast<std::size_t>(y * kImageSide + x)] / 255.0f : 0.0f;
  };
  for (int p : {0, 8, 24, 48}) {  // corner, interior, centre and the last patch
    const int py = p / kGrid, px = p % kGrid;
    int col = 16;
    for (int y = -1; y <= 4; ++y)
      for (int x = -1; x <= 4; ++x) {
        if (y >= 0 && y < 4 && x >= 0 && x < 4) continue;
        EXPECT_FLOAT_EQ(d(p, col), pixel(4 * py + y, 4 * px + x))
            << "patch " << p << " ring " << col;
        ++col;
      }
    EXPECT_EQ(col, 36);
  }
}

TEST(Codebook, VersionOneFileWithoutContextStillLoads) {
  // models/mvot/codebook_v1.msgpack is the plain-patch codebook the interleaved LM's stages 1-4
  // were trained on (file version 1, no context keys).
  const auto v1 = Codebook::load(fs::path(NEAT_SOURCE_DIR) / "models/mvot/codebook_v1.msgpack");
  EXPECT_EQ(v1.size(), 512);
  EXPECT_EQ(v1.context().radius, 0);
  EXPECT_EQ(v1.centres().cols(), 16);
  EXPECT_TRUE(v1.patch_centres() == v1.centres());
  const auto dir = temp_dir("cbv1");
  v1.save(dir / "v2.msgpack");  // rewritten as version 2 with radius 0
  const auto again = Codebook::load(dir / "v2.msgpack");
  EXPECT_TRUE(again.centres() == v1.centres());
  EXPECT_EQ(again.context().radius, 0);
}

TEST(Codebook, FileRoundTripsAndCorruptionIsRejected) {
  const auto dir = temp_dir("cb");
  const auto cb = Codebook::load(kShipped);
  cb.save(dir / "copy.msgpack");
  const auto again = Codebook::load(dir / "copy.msgpack");
  EXPECT_TRUE(again.centres() == cb.centres());
  EXPECT_EQ(again.context().radius, cb.context().radius);
  EXPECT_EQ(again.context().weight, cb.context().weight);
  auto bytes = read_all(dir / "copy.msgpack");
  bytes[bytes.size() / 2] ^= 0x40;
  write_all(dir / "flipped.msgpack", bytes);
  try {
    Codebook::load(dir / "flipped.msgpack");
    FAIL() << "corrupt codebook accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  write_all(dir / "short.msgpack", std::span(bytes).first(100));
  EXPECT_THROW(Codebook::load(dir / "short.msgpack"), std::runtime_error);
  try {
    Codebook::load(dir / "missing.msgpack");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("neat train mvot"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(ImageIo, PngAndPgmRoundTripAndAreaResampling) {
  const auto& images = test_images();
  GrayImage g{28, 28, {images.image(0).begin(), images.image(0).end()}};
  EXPECT_EQ(decode_png(encode_png(g)).pixels, g.pixels);
  EXPECT_EQ(decode_pgm(encode_pgm(g, true)).pixels, g.pixels);
  EXPECT_EQ(decode_pgm(encode_pgm(g, false)).pixels, g.pixels);
  // Doubling each pixel then area-resampling back to 28x28 is exact.
  GrayImage big{56, 56, std::vector<std::uint8_t>(56 * 56)};
  for (int y = 0; y < 56; ++y) {
    for (int x = 0; x < 56; ++x) big.pixels[y * 56 + x] = g.pixels[(y / 2) * 28 + x / 2];
  }
  EXPECT_EQ(resample_area(big, 28, 28).pixels, g.pixels);
  const auto sheet = contact_sheet({g, g, g}, 2, 2);
  EXPECT_EQ(sheet.width, 2 * 28 + 3 * 2);
  EXPECT_EQ(sheet.height, 2 * 28 + 3 * 2);
}

TEST(Modality, DecidesRealTextAndImagesWithHighAccuracy) {
  // Held-out mix: real text documents and real test images written as PNG and PGM here.
  std::vector<fs::path> text_files;
  auto collect = [&](const fs::path& root, std::size_t limit, bool recursive) {
    if (!fs::exists(root)) return;
    std::vector<fs::path> found;
    auto add = [&](const fs::directory_entry& e) {
      if (e.is_regular_file() && e.file_size() > 0 && e.file_size() < 2'000'000 &&
          e.path().extension() != ".dat" && e.path().extension() != ".u8" &&
          e.path().extension() != ".pyc") {
        found.push_back(e.path());
      }
    };
    if (recursive) {
      for (const auto& e :
           fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied))
        add(e);
    } else {
      for (const auto& e : fs::directory_iterator(root)) add(e);
    }
    std::sort(found.begin(), found.end());
    // Every n-th file: a deterministic spread over the tree.
    const std::size_t step = std::max<std::size_t>(1, found.size() / limit);
    for (std::size_t i = 0; i < found.size() && text_files.size() < 1'000'000; i += step) {
      text_files.push_back(found[i]);
    }
  };
  collect("/usr/share/games/fortunes", 60, false);
  collect("/usr/include", 300, true);
  for (const auto& e : fs::directory_iterator("/usr/lib")) {
    const auto name = e.path().filename().string();
    if (name.rfind("python3.", 0) == 0 && fs::exists(e.path() / "os.py")) {
      std::vector<fs::path> py;
      for (const auto& f : fs::directory_iterator(e.path())) {
        if (f.path().extension() == ".py") py.push_back(f.path());
      }
      std::sort(py.begin(), py.end());
      for (std::size_t i = 0; i < py.size(); i += 2) text_files.push_back(py[i]);
      break;
    }
  }
  const auto dir = temp_dir("modality");
  const auto& images = test_images();
  std::vector<fs::path> image_files;
  for (std::size_t i = 0; i < 300; ++i) {
    GrayImage g{28, 28, {images.image(i * 31).begin(), images.image(i * 31).end()}};
    const auto png = dir / ("img" + std::to_string(i) + ".png");
    write_png(png, g);
    image_files.push_back(png);
    const auto pgm = dir / ("img" + std::to_string(i) + ".pgm");
    write_all(pgm, encode_pgm(g, i % 2 == 0));
    image_files.push_back(pgm);
  }
  std::size_t text_ok = 0, image_ok = 0;
  double text_conf = 0.0;
  for (const auto& f : text_files) {
    const auto d = decide_modality(read_all(f));
    if (d.modality == Modality::text) {
      ++text_ok;
    } else {
      std::printf("misclassified text file: %s (%s)\n", f.c_str(), d.reason.c_str());
    }
    text_conf += d.confidence;
  }
  for (const auto& f : image_files) {
    const auto d = decide_modality(read_all(f));
    if (d.modality == Modality::image) ++image_ok;
  }
  const double total = static_cast<double>(text_files.size() + image_files.size());
  const double accuracy = static_cast<double>(text_ok + image_ok) / total;
  std::printf(
      "modality decision: text %zu/%zu, images %zu/%zu (PNG+PGM), accuracy %.4f, mean text "
      "confidence %.4f\n",
      text_ok, text_files.size(), image_ok, image_files.size(), accuracy,
      text_conf / static_cast<double>(text_files.size()));
  EXPECT_GE(text_files.size(), 300u);
  EXPECT_GE(accuracy, 0.995);
  fs::remove_all(dir);
}

TEST(MvotComponent, TokenizesTextAndImageItems) {
  MvotComponent c;
  c.set_codebook(Codebook::load(kShipped));
  std::vector<std::int32_t> tokens;
  const std::string text = "Hello, MVoT.\n";
  std::vector<std::uint8_t> tb(text.begin(), text.end());
  auto m = c.tokenize(0, "hello.txt", tb, tokens);
  EXPECT_EQ(m.modality, "text");
  EXPECT_EQ(tokens_to_bytes(tokens), tb);
  const auto& images = test_images();
  GrayImage g{28, 28, {images.image(5).begin(), images.image(5).end()}};
  m = c.tokenize(1, "x.png", encode_png(g), tokens);
  EXPECT_EQ(m.modality, "image");
  EXPECT_EQ(m.format, "png");
  ASSERT_EQ(tokens.size(), 51u);
  EXPECT_EQ(tokens.front(), kBoi);
  EXPECT_GT(m.psnr_db, 15.0);
  // A PNG signature followed by garbage is not an image and is carried as bytes.
  auto broken = encode_png(g);
  broken.resize(40);
  m = c.tokenize(2, "broken.png", broken, tokens);
  EXPECT_EQ(m.modality, "text");
  EXPECT_EQ(tokens.size(), 40u);
  const auto s = c.current_stats();
  EXPECT_EQ(s.text_items, 2u);
  EXPECT_EQ(s.image_items, 1u);
}
