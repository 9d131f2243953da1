// bench_titans: update + retrieval throughput (patches/s) of the Titans memory at d = 256,
// L_M = 2 (hidden 256), chunk 64: neat's NeuralMemory<float> vs the same equations in PyTorch
// (bench/titans/titans_torch.py), in the same run, one thread each, on the same random
// parameters and latents; checks that both give the same readouts. Prints a markdown section for
// bench/RESULTS.md. Usage: bench_titans [patches=4096] [repeats=3] [theta_max=0.05]
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "neat/hardware/detect.hpp"
#include "neat/nn/ops.hpp"
#include "neat/titans/memory.hpp"

namespace fs = std::filesystem;
using namespace neat;

namespace {

// The machine line of the results: the CPU model as hardware detection reads it.
std::string cpu_model() {
  const auto model = neat::hardware::detect_hardware().cpu_model;
  return model.empty() ? "unknown" : model;
}

void write_f32(const fs::path& file, const nn::Tensorf& t) {
  const auto v = t.to_vector();
  std::ofstream(file, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()),
             static_cast<std::streamsize>(v.size() * sizeof(float)));
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t n = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 3;
  const double theta_max = argc > 3 ? std::atof(argv[3]) : 0.05;
  nn::set_num_threads(1);
  titans::MemoryConfig c;
  c.input_dim = 256;
  c.dim = 256;
  c.depth = 2;
  c.hidden = 256;
  c.chunk = 64;
  c.persistent = 0;  // persistent vectors only change the initial state, not the stream cost
  c.theta_max = theta_max;
  c.eta_max = 0.9;
  c.alpha_max = 0.1;
  c.seed = 3;
  auto params = titans::MemoryParams<float>::init(c);
  std::mt19937_64 rng(4);
  // Data-dependent gates: small random gate maps.
  for (auto* w : {&params.theta_w, &params.eta_w, &params.alpha_w})
    *w = nn::Tensorf::randn({c.input_dim, 1}, rng, 0.05f);
  const titans::NeuralMemory<float> memory(c, params);
  const auto x = nn::Tensorf::randn({n, c.input_dim}, rng);

  nn::NoGradGuard no_grad;
  nn::Tensorf y;
  double best = 1e30;
  for (int r = 0; r <= repeats; ++r) {  // r = 0 warms up
    auto state = memory.initial_state();
    const auto t0 = std::chrono::steady_clock::now();
    y = memory.forward(state, x);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::min(best, s);
  }
  const double neat_pps = static_cast<double>(n) / best;
  std::printf("neat (1 thread): %.0f patches/s (best of %d, %lld patches)\n", neat_pps, repeats,
              static_cast<long long>(n));

  const fs::path root = NEAT_SOURCE_DIR;
  const auto tmp = fs::temp_directory_path() / ("bench_titans_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  write_f32(tmp / "x.f32", x);
  for (const auto& [name, t] : params.named()) {
    std::string file = name;
    for (auto& ch : file)
      if (ch == '.') ch = '_';
    write_f32(tmp / (file + ".f32"), t);
  }
  double torch_pps = 0;
  std::string torch_line = "PyTorch: not available", agreement = "n/a";
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0) {
    std::ostringstream cmd;
    cmd << "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 /usr/bin/python3 "
        << (root / "bench/titans/titans_torch.py") << ' ' << tmp << ' ' << n << ' ' << c.input_dim
        << ' ' << c.dim << ' ' << c.hidden << ' ' << c.chunk << ' ' << c.theta_max << ' '
        << c.eta_max << ' ' << c.alpha_max << ' ' << repeats << " > " << (tmp / "torch.txt");
    if (std::system(cmd.str().c_str()) == 0) {
      std::ifstream in(tmp / "torch.txt");
      std::string key;
      in >> key >> torch_pps;
      std::ifstream rin(tmp / "readout_torch.f32", std::ios::binary);
      const auto mine = y.to_vector();
      std::vector<float> theirs(mine.size());
      rin.read(reinterpret_cast<char*>(theirs.data()),
               static_cast<std::streamsize>(theirs.size() * sizeof(float)));
      double diff = 0, norm = 0;
      for (std::size_t i = 0; i < mine.size(); ++i) {
        diff = std::max(diff, static_cast<double>(std::abs(mine[i] - theirs[i])));
        norm = std::max(norm, static_cast<double>(std::abs(mine[i])));
      }
      char buf[160];
      std::snprintf(buf, sizeof buf, "max |y_neat - y_torch| = %.2e (max |y| = %.2f)", diff, norm);
      agreement = buf;
      std::snprintf(buf, sizeof buf, "PyTorch (1 thread): %.0f patches/s", torch_pps);
      torch_line = buf;
    } else {
      torch_line = "PyTorch: script failed";
    }
  }
  fs::remove_all(tmp);
  std::printf("%s\n%s\n", torch_line.c_str(), agreement.c_str());
  if (torch_pps > 0) std::printf("ratio neat / PyTorch: %.2fx\n", neat_pps / torch_pps);

  utsname u{};
  uname(&u);
  std::ostream& md = std::cout;
  md << "\n### bench_titans\n\n"
     << "Titans memory, update + retrieval over a stream of " << n
     << " random patch latents (d_in = d = 256, L_M = 2 with hidden 256, chunk C = 64, "
        "data-dependent theta/eta/alpha, l2-normalised q and k; every chunk read before it is "
        "written, eq. 16-18 with the three weighted inner gradients per layer). Best of "
     << repeats << " runs each after a warm-up, one thread each, same run.\n\n"
     << "| implementation | patches/s |\n|---|---|\n";
  char row[200];
  std::snprintf(row, sizeof row, "| neat (nn ops on OpenBLAS, -O3 -march=native) | %.0f |\n",
                neat_pps);
  md << row;
  if (torch_pps > 0) {
    std::snprintf(row, sizeof row, "| PyTorch (bench/titans/titans_torch.py, float32) | %.0f |\n",
                  torch_pps);
    md << row;
    std::snprintf(row, sizeof row, "\nRatio neat / PyTorch: **%.2fx** (target >= 1.5x). ",
                  neat_pps / torch_pps);
    md << row << "Readouts: " << agreement << ".\n";
  } else {
    md << "| PyTorch | not available |\n";
  }
  md << "\nCommand: `cmake --build build --target bench_titans && build/bench/titans/bench_titans "
     << n << ' ' << repeats << ' ' << theta_max << "`\n\nMachine: " << cpu_model() << ", "
     << std::thread::hardware_concurrency() << " hardware threads, " << u.sysname << ' '
     << u.release << ".\n";
  return 0;
}
