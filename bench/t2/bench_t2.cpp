// bench_t2: Transformer² costs on the shipped byte LM. (1) Composing the adapted weights
// W' = U diag(σ ⊙ z) Vᵀ of all MLP matrices (one sgemm each), cold and through the cache;
// (2) SVD time per matrix size, neat (LAPACKE dgesdd; randomized SVD) next to NumPy's
// numpy.linalg.svd (Debian python3-numpy, LAPACK gesdd) on the same matrices in the same run;
// (3) the adaptive-precision settings: rank, energy, reconstruction error, time, bytes saved.
// Usage: bench_t2 [threads=1] [repeats=20]
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "neat/blt/byte_lm.hpp"
#include "neat/nn/tensor.hpp"
#include "neat/t2/experts.hpp"
#include "neat/t2/svf.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace neat;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double time_median(int repeats, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  // The same OpenBLAS kernels as the neat binary (and NumPy's child inherits them).
  nn::use_best_blas_kernels(argv);
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 20;
  nn::set_num_threads(threads);
  const fs::path root = NEAT_SOURCE_DIR;
  const auto model = blt::load_byte_lm(root / "models/blt/byte_lm.bf16.ckpt");
  const auto factors = t2::ModelFactors::decompose(*model, {});

  // (1) composition of all MLP matrices.
  std::mt19937_64 rng(1);
  std::normal_distribution<float> jitter(1.0f, 0.05f);
  auto z = t2::identity_expert(factors);
  for (auto& v : z)
    for (auto& x : v) x = jitter(rng);
  t2::ComposedWeights w;
  const double cold = time_median(repeats, [&] { w = t2::compose_all(factors, z); });
  t2::WeightCache cache;
  const std::vector<double> alpha{0.3, 0.7};
  cache.get_or_compose(alpha, [&] { return t2::compose_all(factors, z); });
  const double hit = time_median(
      repeats, [&] { cache.get_or_compose(alpha, [&] { return t2::compose_all(factors, z); }); });
  std::uint64_t flops = 0;
  for (const auto& f : factors.factors) flops += 2ull * f.rows * f.cols * f.rank;
  std::printf("## compose W' for all %zu MLP matrices (%d thread(s), median of %d)\n\n",
              factors.factors.size(), threads, repeats);
  std::printf("| path | time (ms) | GFLOP/s |\n|---|---|---|\n");
  std::printf("| compose (sgemm, rank %lld) | %.3f | %.1f |\n",
              static_cast<long long>(factors.factors[0].rank), cold * 1e3, flops / cold / 1e9);
  std::printf("| cache hit (keyed by alpha) | %.4f | - |\n\n", hit * 1e3);

  // (2) SVD time per size, neat vs NumPy on the same matrices.
  struct Case {
    std::string name;
    std::int64_t rows, cols;
    std::vector<double> w;
  };
  std::vector<Case> cases;
  {
    const auto up = model->blocks[0]->mlp.up.weight.contiguous().to_vector();
    const auto down = model->blocks[0]->mlp.down.weight.contiguous().to_vector();
    cases.push_back({"blocks.0.mlp.up", 1024, 256, {up.begin(), up.end()}});
    cases.push_back({"blocks.0.mlp.down", 256, 1024, {down.begin(), down.end()}});
    std::normal_distribution<double> n(0.0, 1.0);
    for (auto [r, c] :
         {std::pair<std::int64_t, std::int64_t>{512, 512}, {1024, 1024}, {2048, 512}}) {
      Case k{"gaussian", r, c, std::vector<double>(static_cast<std::size_t>(r * c))};
      for (auto& x : k.w) x = n(rng);
      cases.push_back(std::move(k));
    }
  }
  const fs::path tmp = fs::temp_directory_path() / ("bench_t2_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  {
    std::ofstream list(tmp / "list.txt");
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const auto p = tmp / ("m" + std::to_string(i) + ".f64");
      std::ofstream(p, std::ios::binary)
          .write(reinterpret_cast<const char*>(cases[i].w.data()),
                 static_cast<std::streamsize>(cases[i].w.size() * sizeof(double)));
      list << p.string() << ' ' << cases[i].rows << ' ' << cases[i].cols << '\n';
    }
  }
  const int svd_repeats = 3;
  std::vector<double> neat_exact, neat_rand;
  for (const auto& c : cases) {
    std::vector<double> u, s, vt;
    neat_exact.push_back(
        time_median(svd_repeats, [&] { t2::svd_exact(c.w, c.rows, c.cols, u, s, vt); }));
    neat_rand.push_back(time_median(
        svd_repeats, [&] { t2::svd_randomized(c.w, c.rows, c.cols, 64, 10, 2, 1, u, s, vt); }));
  }
  std::vector<std::vector<double>> numpy(cases.size());
  std::string python;
  for (const char* candidate : {"python3", "/usr/bin/python3"}) {
    const std::string probe = std::string(candidate) + " -c 'import numpy' >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) {
      python = candidate;
      break;
    }
  }
  std::string numpy_status = "NumPy: not available (no python3 with numpy)";
  if (!python.empty()) {
    const std::string t = std::to_string(threads);
    const std::string cmd = "OPENBLAS_NUM_THREADS=" + t + " OMP_NUM_THREADS=" + t + " " + python +
                            " " + (root / "bench/t2/numpy_svd.py").string() + " " +
                            (tmp / "list.txt").string() + " " + std::to_string(svd_repeats) +
                            " > " + (tmp / "numpy.txt").string();
    if (std::system(cmd.c_str()) == 0) {
      std::ifstream in(tmp / "numpy.txt");
      for (auto& row : numpy) {
        row.resize(4);
        for (auto& x : row) in >> x;
      }
      numpy_status = "NumPy " + python + " numpy.linalg.svd(full_matrices=False)";
    } else {
      numpy_status = "NumPy: script failed";
    }
  }
  fs::remove_all(tmp);
  std::printf("## SVD time per matrix (double, %d thread(s), median of %d; %s)\n\n", threads,
              svd_repeats, numpy_status.c_str());
  std::printf(
      "| matrix | size | neat dgesdd (ms) | NumPy svd (ms) | neat randomized k=64+10, q=2 (ms) "
      "|\n");
  std::printf("|---|---|---|---|---|\n");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::printf("| %s | %lldx%lld | %.1f | %s | %.1f |\n", cases[i].name.c_str(),
                static_cast<long long>(cases[i].rows), static_cast<long long>(cases[i].cols),
                neat_exact[i] * 1e3,
                numpy[i].empty() ? "n/a" : std::to_string(numpy[i][2] * 1e3).substr(0, 7).c_str(),
                neat_rand[i] * 1e3);
  }

  // (3) adaptive precision on the shipped model's blocks.0.mlp.up (1024 x 256).
  std::printf("\n## decomposition settings on blocks.0.mlp.up.weight (1024x256)\n\n");
  std::printf(
      "| setting | rank | energy kept | rel. error | time (ms) | stored bytes | saved vs f32 W "
      "|\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  const auto up = model->blocks[0]->mlp.up.weight.contiguous().to_vector();
  struct Setting {
    const char* name;
    double p;
    nn::DType storage;
    std::int64_t threshold, rank;
  };
  for (const Setting& s : {Setting{"exact p=1 f32", 1.0, nn::DType::f32, 4096, 0},
                           Setting{"exact p=1 bf16", 1.0, nn::DType::bf16, 4096, 0},
                           Setting{"exact p=0.99 f32", 0.99, nn::DType::f32, 4096, 0},
                           Setting{"exact p=0.9 bf16", 0.9, nn::DType::bf16, 4096, 0},
                           Setting{"randomized k=128 p=1 f32", 1.0, nn::DType::f32, 1, 128},
                           Setting{"randomized k=64 p=0.9 bf16", 0.9, nn::DType::bf16, 1, 64}}) {
    t2::SvdOptions o;
    o.energy_fraction = s.p;
    o.storage = s.storage;
    o.randomized_threshold = s.threshold;
    if (s.rank > 0) o.randomized_rank = s.rank;
    const auto r = t2::report_decomposition(up, 1024, 256, o, s.name);
    std::printf("| %s | %lld | %.4f | %.2e | %.1f | %llu | %lld |\n", r.setting.c_str(),
                static_cast<long long>(r.rank), r.energy_kept, r.relative_error, r.seconds * 1e3,
                static_cast<unsigned long long>(r.stored_bytes),
                static_cast<long long>(r.bytes_saved));
  }
  utsname u{};
  ::uname(&u);
  std::printf("\nmachine: %s %s, %u hardware threads\n", u.sysname, u.machine,
              std::thread::hardware_concurrency());
  return 0;
}
