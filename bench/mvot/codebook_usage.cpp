// bench_mvot_usage: does training the visual codebook on DISTINCT patches raise its code usage?
// The shipped codebook (k-means on all 2.94 M train patches) has a test perplexity of 72.6; the
// all-black patch is 30.5 % of the test patches and bounds any nearest-code quantiser at K = 512
// to 140.8 (max_perplexity_with_atom). This trains a K = 512 codebook with the same k-means
// settings (k-means++ on a 20,000-row subsample, seed 1, 40 Lloyd iterations) on the distinct
// patch vectors of the train split (each once: the 904,000 black patches and every other
// repeat count once), then reports test PSNR and perplexity of both codebooks.
// Usage: bench_mvot_usage [out.msgpack]  (writes the variant codebook if a path is given)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <numeric>
#include <vector>

#include "neat/mvot/codebook.hpp"
#include "neat/mvot/idx.hpp"

namespace {

using neat::mvot::RowMatrix;

// Rows of x with duplicates removed (exact float equality; the values are u8 / 255).
RowMatrix distinct_rows(const RowMatrix& x) {
  std::vector<Eigen::Index> order(static_cast<std::size_t>(x.rows()));
  std::iota(order.begin(), order.end(), Eigen::Index{0});
  const auto bytes = static_cast<std::size_t>(x.cols()) * sizeof(float);
  auto less = [&](Eigen::Index a, Eigen::Index b) {
    return std::memcmp(x.row(a).data(), x.row(b).data(), bytes) < 0;
  };
  auto same = [&](Eigen::Index a, Eigen::Index b) {
    return std::memcmp(x.row(a).data(), x.row(b).data(), bytes) == 0;
  };
  std::sort(order.begin(), order.end(), less);
  order.erase(std::unique(order.begin(), order.end(), same), order.end());
  // Back to data order so that the k-means++ subsample is drawn from an unsorted set.
  std::sort(order.begin(), order.end());
  RowMatrix out(static_cast<Eigen::Index>(order.size()), x.cols());
  for (std::size_t i = 0; i < order.size(); ++i)
    out.row(static_cast<Eigen::Index>(i)) = x.row(order[i]);
  return out;
}

void print(const char* name, const neat::mvot::EvalReport& r) {
  std::printf(
      "%-28s PSNR %.2f dB (of mean MSE %.2f), perplexity %.1f, codes used %d, top code share "
      "%.4f, all-black share %.4f, bound %.1f\n",
      name, r.psnr_mean_db, r.psnr_of_mean_mse_db, r.perplexity, r.used_codes, r.top_code_share,
      r.zero_patch_share, r.perplexity_bound);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace neat::mvot;
  try {
    const std::filesystem::path data = std::string(kFashionMnistDir);
    const auto train = read_idx_images(data / "train-images-idx3-ubyte.gz");
    const auto test = read_idx_images(data / "t10k-images-idx3-ubyte.gz");
    const auto t0 = std::chrono::steady_clock::now();
    const RowMatrix all = image_patches(train.pixels, train.count);
    const RowMatrix x = distinct_rows(all);
    std::printf("train patches %lld, distinct %lld\n", static_cast<long long>(all.rows()),
                static_cast<long long>(x.rows()));
    KMeansOptions o;
    o.k = 512;
    o.iterations = 40;
    o.seed = 1;
    o.init_sample = 20000;
    auto km = kmeans(x, o);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("k-means on distinct patches: %d iterations, %d restarts, %.1f s\n", km.iterations,
                km.restarted_codes, seconds);
    const Codebook variant(std::move(km.centres));
    print("shipped (all patches)", evaluate(Codebook::load(std::filesystem::path(NEAT_SOURCE_DIR) /
                                                           "models/mvot/codebook.msgpack"),
                                            test));
    print("distinct patches", evaluate(variant, test));
    if (argc > 1) variant.save(argv[1]);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_mvot_usage: %s\n", e.what());
    return 1;
  }
}
