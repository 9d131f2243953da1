// bench_t2: Transformer² costs on the shipped byte LM. (1) Composing the adapted weights of all
// MLP matrices: the full product U diag(σ ⊙ z) Vᵀ (one sgemm each); the base plus the change,
// W + U_r diag(σ ⊙ (z − 1))_r V_rᵀ, exact (p = 1) and at adaptive precisions p, with the
// components kept and the measured error next to its bound; the expert basis (a mixture composed
// as W + Σ α_k ΔW_k); the bits-per-byte effect of these settings on the validation split (when
// data/corpus is prepared); a cache hit. (2) SVD time per matrix size, neat (LAPACKE dgesdd;
// randomized SVD) next to NumPy's numpy.linalg.svd (Debian python3-numpy, LAPACK gesdd) on the
// same matrices in the same run. (3) The adaptive-precision decomposition settings: rank,
// energy, reconstruction error, time, bytes saved.
// Usage: bench_t2 [threads=1] [repeats=20] [eval_bytes=16384 per class; 0: skip]
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "neat/blt/byte_lm.hpp"
#include "neat/data/corpus.hpp"
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
  const std::uint64_t eval_bytes = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 16384;
  nn::set_num_threads(threads);
  const fs::path root = NEAT_SOURCE_DIR;
  const auto model = blt::load_byte_lm(root / "models/blt/byte_lm.bf16.ckpt");
  // The matrices of the shipped experts (decomposition.matrices of their training: the MLP
  // matrices, or every Linear of the blocks), the MLP matrices without an experts file.
  const fs::path experts_file = root / "models/t2/experts.ckpt";
  std::optional<t2::ExpertSet> experts;
  if (fs::exists(experts_file)) experts.emplace(t2::ExpertSet::load(experts_file));
  const auto factors = t2::ModelFactors::decompose(
      *model, {}, experts ? experts->matrices : std::vector<std::string>{});
  std::size_t mlp_matrices = 0;
  for (const auto& n : factors.names) mlp_matrices += n.find(".mlp.") != std::string::npos ? 1 : 0;

  // (1) composition of all adapted matrices: the full product U diag(σ ⊙ z) Vᵀ (compose) and the
  // base plus the change, W + U_r diag(σ ⊙ (z − 1))_r V_rᵀ (compose_all / compose_delta), exact
  // (p = 1) and at the default adaptive precision, for a jittered z and for the shipped experts.
  std::mt19937_64 rng(1);
  std::normal_distribution<float> jitter(1.0f, 0.05f);
  struct ZCase {
    std::string name;
    t2::ExpertVector z;
  };
  std::vector<ZCase> zcases;
  {
    auto z = t2::identity_expert(factors);
    for (auto& v : z)
      for (auto& x : v) x = jitter(rng);
    zcases.push_back({"z ~ N(1, 0.05²)", std::move(z)});
  }
  if (experts) {
    experts->check_compatible(factors);
    for (const auto& c : experts->classes)
      zcases.push_back({(c.fewshot ? "mixture " : "expert ") + c.name, experts->mix(c.alpha)});
  }
  std::vector<std::vector<float>> bases(factors.factors.size());
  for (std::size_t m = 0; m < bases.size(); ++m) factors.factors[m].copy_base(bases[m]);
  std::uint64_t flops = 0, dense_bytes = 0;
  for (const auto& f : factors.factors) {
    flops += 2ull * f.rows * f.cols * f.rank;
    dense_bytes += 4ull * f.rows * f.cols;
  }
  std::printf(
      "## compose W' for all %zu adapted matrices (%zu MLP, %zu attention; %d thread(s), median "
      "of %d)\n\n",
      factors.factors.size(), mlp_matrices, factors.factors.size() - mlp_matrices, threads,
      repeats);
  {
    t2::ComposedWeights w;
    const auto& z = zcases.front().z;
    const double full = time_median(repeats, [&] {
      w.matrices.resize(z.size());
      for (std::size_t m = 0; m < z.size(); ++m)
        t2::compose(factors.factors[m], z[m], w.matrices[m]);
    });
    std::printf(
        "full product U diag(σ ⊙ z) Vᵀ (compose, one sgemm of inner dimension %lld per "
        "matrix, %.2f GFLOP), %s: %.3f ms (%.1f GFLOP/s)\n\n",
        static_cast<long long>(factors.factors[0].rank), flops / 1e9, zcases.front().name.c_str(),
        full * 1e3, flops / full / 1e9);
    const double copy = time_median(repeats, [&] {
      for (std::size_t m = 0; m < z.size(); ++m) factors.factors[m].copy_base(w.matrices[m]);
    });
    std::printf("copy of W alone (SvfFactors::copy_base, %.1f MiB): %.3f ms\n\n",
                dense_bytes / 1048576.0, copy * 1e3);
  }
  std::printf(
      "W' = W + U_r diag(σ ⊙ (z − 1))_r V_rᵀ (compose_all); components: kept of %lld; error: "
      "max over the matrices of ‖W'_p − W'_exact‖_F / ‖ΔW‖_F (measured; bound √(1 − p))\n\n",
      static_cast<long long>(
          std::accumulate(factors.factors.begin(), factors.factors.end(), std::int64_t{0},
                          [](std::int64_t a, const t2::SvfFactors& f) { return a + f.rank; })));
  std::printf("| z | p | time (ms) | components | ‖ΔW‖_F / ‖W‖_F | rel. error of ΔW | bound |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  std::vector<std::pair<std::string, double>> settings{
      {"1 (exact)", 1.0},
      {"default 1 − 1e-6", t2::kDefaultDeltaEnergy},
      {"1 − 1e-4", 1.0 - 1e-4},
      {"0.999", 0.999},
      {"0.99", 0.99}};
  for (const auto& zc : zcases) {
    const auto exact = t2::compose_all(factors, zc.z, {1.0});
    for (const auto& [label, p] : settings) {
      std::vector<t2::DeltaComposeInfo> info;
      t2::ComposedWeights w;
      const double t =
          time_median(repeats, [&] { w = t2::compose_all(factors, zc.z, {p}, &info); });
      std::int64_t kept = 0;
      double err = 0.0, bound = 0.0, delta_ratio = 0.0;
      for (std::size_t m = 0; m < w.matrices.size(); ++m) {
        kept += info[m].components;
        bound = std::max(bound, info[m].error_bound);
        double e2 = 0.0, w2 = 0.0;
        for (std::size_t i = 0; i < w.matrices[m].size(); ++i) {
          const double d = double(w.matrices[m][i]) - exact.matrices[m][i];
          e2 += d * d;
          w2 += double(bases[m][i]) * bases[m][i];
        }
        if (info[m].delta_norm > 0) err = std::max(err, std::sqrt(e2) / info[m].delta_norm);
        delta_ratio = std::max(delta_ratio, info[m].delta_norm / std::sqrt(w2));
      }
      std::printf("| %s | %s | %.3f | %lld | %.4f | %.2e | %.2e |\n", zc.name.c_str(),
                  label.c_str(), t * 1e3, static_cast<long long>(kept), delta_ratio, err, bound);
    }
  }
  // The expert basis: every expert's change composed once, a mixture is W + Σ α_k ΔW_k.
  if (experts) {
    const auto t0 = Clock::now();
    const t2::ExpertBasis basis(factors, *experts);
    const double build = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf(
        "\nExpert basis (ExpertBasis: ΔW_k composed once for the %zu experts, %.1f MiB, built in "
        "%.1f ms); W' = W + Σ_k α_k ΔW_k: a copy of W and one saxpy per non-zero α_k. Error: max "
        "over the matrices of ‖W'_basis − W'_exact‖_F / ‖ΔW‖_F, W'_exact = compose_all(p = 1)\n\n",
        basis.experts(), basis.bytes() / 1048576.0, build * 1e3);
    // The MLP matrices alone (the compose target names them): the same experts
    // restricted to those matrices, their own basis.
    const bool has_attention = mlp_matrices < factors.factors.size();
    t2::ModelFactors mlp_factors;
    t2::ExpertSet mlp_experts;
    mlp_experts.domains = experts->domains;
    mlp_experts.experts.resize(experts->experts.size());
    for (std::size_t m = 0; m < factors.names.size(); ++m) {
      if (factors.names[m].find(".mlp.") == std::string::npos) continue;
      mlp_factors.names.push_back(factors.names[m]);
      mlp_factors.factors.push_back(factors.factors[m]);
      mlp_experts.matrices.push_back(factors.names[m]);
      mlp_experts.ranks.push_back(factors.factors[m].rank);
      for (std::size_t k = 0; k < experts->experts.size(); ++k)
        mlp_experts.experts[k].push_back(experts->experts[k][m]);
    }
    std::optional<t2::ExpertBasis> mlp_basis;
    if (has_attention) mlp_basis.emplace(mlp_factors, mlp_experts);
    std::printf("| α | non-zero α_k | time (ms) | rel. error of ΔW |%s\n|---|---|---|---|%s\n",
                has_attention ? " MLP matrices only (ms) |" : "", has_attention ? "---|" : "");
    std::vector<std::pair<std::string, std::vector<double>>> mixtures;
    for (const auto& c : experts->classes)
      mixtures.push_back({(c.fewshot ? "mixture " : "expert ") + c.name, c.alpha});
    const std::size_t k = experts->domains.size();
    mixtures.push_back({"all experts, α_k = 1/K", std::vector<double>(k, 1.0 / double(k))});
    {
      std::vector<double> a(k);
      std::uniform_real_distribution<double> u(0.0, 1.0);
      double sum = 0.0;
      for (auto& x : a) sum += (x = u(rng));
      for (auto& x : a) x *= 0.8 / sum;  // identity 0.2
      mixtures.push_back({"random α, Σ α = 0.8", a});
    }
    for (const auto& [name, alpha] : mixtures) {
      const auto exact = t2::compose_all(factors, experts->mix(alpha), {1.0});
      t2::ComposedWeights w;
      const double t = time_median(repeats, [&] { w = basis.compose(factors, alpha); });
      double err = 0.0;
      for (std::size_t m = 0; m < w.matrices.size(); ++m) {
        double e2 = 0.0, d2 = 0.0;
        for (std::size_t i = 0; i < w.matrices[m].size(); ++i) {
          e2 += std::pow(double(w.matrices[m][i]) - exact.matrices[m][i], 2);
          d2 += std::pow(double(exact.matrices[m][i]) - bases[m][i], 2);
        }
        if (d2 > 0) err = std::max(err, std::sqrt(e2 / d2));
      }
      const auto nonzero =
          std::count_if(alpha.begin(), alpha.end(), [](double a) { return a != 0; });
      std::printf("| %s | %lld | %.3f | %.2e |", name.c_str(), static_cast<long long>(nonzero),
                  t * 1e3, err);
      if (mlp_basis) {
        t2::ComposedWeights wm;
        const double tm =
            time_median(repeats, [&] { wm = mlp_basis->compose(mlp_factors, alpha); });
        std::printf(" %.3f |", tm * 1e3);
      }
      std::printf("\n");
    }
  }
  // The effect on the model: validation bits per byte of each class with W' exact (p = 1), at
  // the default p and from the expert basis.
  const fs::path corpus = root / "data/corpus";
  if (experts && eval_bytes > 0 && fs::exists(corpus / "manifest.json")) {
    const auto manifest = data::load_manifest(corpus);
    const t2::ExpertBasis basis(factors, *experts);
    auto adapted = t2::copy_model(*model);
    std::printf(
        "\nbits per byte on the validation split (first %llu bytes of each class), W' exact vs "
        "default p = 1 − 1e-6 vs the expert basis\n\n",
        static_cast<unsigned long long>(eval_bytes));
    std::printf(
        "| class | exact | default p | Δ (default − exact) | basis | Δ (basis − exact) |\n"
        "|---|---|---|---|---|---|\n");
    for (const auto& c : experts->classes) {
      std::vector<std::vector<std::uint8_t>> docs;
      for (auto& d : data::load_split(manifest, c.name, data::Split::kVal))
        docs.push_back(std::move(d.bytes));
      const auto z = experts->mix(c.alpha);
      t2::apply_weights(factors, t2::compose_all(factors, z, {1.0}), *adapted);
      const double exact = blt::bits_per_byte(*adapted, docs, eval_bytes);
      t2::apply_weights(factors, t2::compose_all(factors, z, {t2::kDefaultDeltaEnergy}), *adapted);
      const double approx = blt::bits_per_byte(*adapted, docs, eval_bytes);
      t2::apply_weights(factors, basis.compose(factors, c.alpha), *adapted);
      const double via_basis = blt::bits_per_byte(*adapted, docs, eval_bytes);
      std::printf("| %s | %.6f | %.6f | %+.2e | %.6f | %+.2e |\n", c.name.c_str(), exact, approx,
                  approx - exact, via_basis, via_basis - exact);
    }
  } else {
    std::printf("\n(bits per byte effect skipped: %s)\n",
                eval_bytes == 0 ? "eval bytes 0" : "no data/corpus/manifest.json or experts");
  }
  {
    t2::WeightCache cache;
    const std::vector<double> alpha{0.3, 0.7};
    const auto& z = zcases.front().z;
    cache.get_or_compose(alpha, [&] { return t2::compose_all(factors, z); });
    const double hit = time_median(
        repeats, [&] { cache.get_or_compose(alpha, [&] { return t2::compose_all(factors, z); }); });
    std::printf("\ncache hit (keyed by alpha): %.4f ms\n\n", hit * 1e3);
  }

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
