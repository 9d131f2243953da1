// bench_titans: update + retrieval throughput (patches/s) of the Titans memory at d = 256,
// L_M = 2 (hidden 256), chunk 64: neat's NeuralMemory<float> (its run-time path: nothing is
// recorded, so forward() uses the Eigen kernels over the state's workspace) vs the same equations
// in PyTorch (bench/titans/titans_torch.py), in the same run, one thread each, on the same random
// parameters and latents; checks that both give the same readouts. Rounds alternate neat and
// PyTorch so that a change of load hits both; each side reports the median of its repeats per
// round, and the ratio is the median over rounds. Prints a markdown section for
// bench/RESULTS.md. Usage: bench_titans [patches=4096] [repeats=5] [rounds=5] [theta_max=0.05]
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
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
#include <tuple>
#include <utility>
#include <vector>

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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// The 1-minute load average (/proc/loadavg), or -1 where unreadable.
double load_average() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  in >> load;
  return load;
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
  const int repeats = argc > 2 ? std::max(1, std::atoi(argv[2])) : 5;
  const int rounds = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
  const double theta_max = argc > 4 ? std::atof(argv[4]) : 0.05;
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
  const bool have_torch = std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;

  nn::NoGradGuard no_grad;
  nn::Tensorf y;
  // Median patches/s of `repeats` streams: wall clock, and per second of this thread's CPU time
  // (less sensitive to the other processes of a shared machine).
  auto neat_round = [&]() -> std::pair<double, double> {
    std::vector<double> times, cpu_times;
    for (int r = 0; r < repeats; ++r) {
      auto state = memory.initial_state();
      const double c0 = thread_cpu_seconds();
      const auto t0 = std::chrono::steady_clock::now();
      y = memory.forward(state, x);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      cpu_times.push_back(thread_cpu_seconds() - c0);
    }
    return {static_cast<double>(n) / median(times), static_cast<double>(n) / median(cpu_times)};
  };
  // The child's median patches/s (wall, CPU), zeros on failure.
  auto torch_round = [&]() -> std::pair<double, double> {
    std::ostringstream cmd;
    cmd << "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 /usr/bin/python3 "
        << (root / "bench/titans/titans_torch.py") << ' ' << tmp << ' ' << n << ' ' << c.input_dim
        << ' ' << c.dim << ' ' << c.hidden << ' ' << c.chunk << ' ' << c.theta_max << ' '
        << c.eta_max << ' ' << c.alpha_max << ' ' << repeats << " > " << (tmp / "torch.txt");
    if (std::system(cmd.str().c_str()) != 0) return {0, 0};
    std::ifstream in(tmp / "torch.txt");
    std::string key, cpu_key;
    double pps = 0, cpu_pps = 0;
    in >> key >> pps >> cpu_key >> cpu_pps;
    return {pps, cpu_pps};
  };

  {
    auto state = memory.initial_state();  // warm-up
    y = memory.forward(state, x);
  }
  struct Round {
    double load, neat, torch, neat_cpu, torch_cpu;
  };
  std::vector<Round> table;
  for (int r = 0; r < rounds; ++r) {
    Round row{};
    row.load = load_average();
    std::tie(row.neat, row.neat_cpu) = neat_round();
    if (have_torch) std::tie(row.torch, row.torch_cpu) = torch_round();
    std::printf("round %d: load %.2f, neat %.0f patches/s, PyTorch %.0f patches/s", r + 1, row.load,
                row.neat, row.torch);
    if (row.torch > 0)
      std::printf(", ratio %.2fx (per CPU second: %.0f vs %.0f, %.2fx)", row.neat / row.torch,
                  row.neat_cpu, row.torch_cpu, row.neat_cpu / row.torch_cpu);
    std::printf("\n");
    std::fflush(stdout);
    table.push_back(row);
  }
  const double load_end = load_average();

  std::string agreement = "n/a";
  if (have_torch && table.back().torch > 0) {
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
  }
  fs::remove_all(tmp);
  std::vector<double> neat_pps, torch_pps, ratios, cpu_ratios;
  for (const auto& row : table) {
    neat_pps.push_back(row.neat);
    if (row.torch > 0) {
      torch_pps.push_back(row.torch);
      ratios.push_back(row.neat / row.torch);
      cpu_ratios.push_back(row.neat_cpu / row.torch_cpu);
    }
  }
  std::printf("neat (1 thread): median %.0f patches/s\n", median(neat_pps));
  if (!ratios.empty()) {
    std::printf(
        "PyTorch (1 thread): median %.0f patches/s\nratio neat / PyTorch: median %.2fx "
        "(min %.2fx, max %.2fx)\n%s\n",
        median(torch_pps), median(ratios), *std::min_element(ratios.begin(), ratios.end()),
        *std::max_element(ratios.begin(), ratios.end()), agreement.c_str());
  } else {
    std::printf("PyTorch: %s\n", have_torch ? "script failed" : "not available");
  }

  utsname u{};
  uname(&u);
  std::ostream& md = std::cout;
  md << "\n### bench_titans\n\n"
     << "Titans memory, update + retrieval over a stream of " << n
     << " random patch latents (d_in = d = 256, L_M = 2 with hidden 256, chunk C = 64, "
        "data-dependent theta/eta/alpha, l2-normalised q and k; every chunk read before it is "
        "written, eq. 16-18 with the three weighted inner gradients per layer). "
     << rounds << " rounds alternating neat and PyTorch; per round each side's median of "
     << repeats << " streams after a warm-up; one thread each. OpenBLAS kernels (PyTorch's "
     << "sgemm): " << nn::blas_core() << ".\n\n"
     << "| round | load (1 min) | neat patches/s | PyTorch patches/s | neat / PyTorch | "
        "per CPU second: neat | PyTorch | ratio |\n"
     << "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  char row[240];
  for (std::size_t r = 0; r < table.size(); ++r) {
    const auto& t = table[r];
    char ratio[32] = "-", cpu_ratio[32] = "-";
    if (t.torch > 0) {
      std::snprintf(ratio, sizeof ratio, "%.2fx", t.neat / t.torch);
      std::snprintf(cpu_ratio, sizeof cpu_ratio, "%.2fx", t.neat_cpu / t.torch_cpu);
    }
    std::snprintf(row, sizeof row, "| %zu | %.2f | %.0f | %.0f | %s | %.0f | %.0f | %s |\n", r + 1,
                  t.load, t.neat, t.torch, ratio, t.neat_cpu, t.torch_cpu, cpu_ratio);
    md << row;
  }
  if (!ratios.empty()) {
    std::snprintf(row, sizeof row, "| median | | %.0f | %.0f | **%.2fx** | | | %.2fx |\n",
                  median(neat_pps), median(torch_pps), median(ratios), median(cpu_ratios));
    md << row;
  }
  std::snprintf(row, sizeof row,
                "\nLoad average at the end: %.2f. Target >= 1.5x. Readouts: ", load_end);
  md << row << agreement << ".\n";
  md << "\nCommand: `build-titans/bench/titans/bench_titans " << n << ' ' << repeats << ' '
     << rounds << ' ' << theta_max << "`\n\nMachine: " << cpu_model() << ", "
     << std::thread::hardware_concurrency() << " hardware threads, " << u.sysname << ' '
     << u.release << ".\n";
  return 0;
}
