// bench_mvot: images/s of VQ encoding (4x4 patches, nearest of K codes as a GEMM) on the 10,000
// Fashion-MNIST test images with the shipped codebook: neat (Eigen) vs NumPy (numpy_encode.py)
// in the same run, both on one thread (Eigen is built without OpenMP; NumPy's BLAS is pinned
// with OPENBLAS_NUM_THREADS=1 / OMP_NUM_THREADS=1). Checks that both give the same codes and
// prints a markdown section for bench/RESULTS.md. Usage: bench_mvot [repeats=5]
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "neat/mvot/codebook.hpp"
#include "neat/mvot/idx.hpp"

namespace fs = std::filesystem;
using namespace neat::mvot;

namespace {

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 5;
  const fs::path root = NEAT_SOURCE_DIR;
  const auto cb = Codebook::load(root / "models/mvot/codebook.msgpack");
  const auto images =
      read_idx_images(fs::path(std::string(kFashionMnistDir)) / "t10k-images-idx3-ubyte.gz");
  std::vector<std::int32_t> codes;
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    codes = cb.encode_batch(images.pixels, images.count);
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double neat_ips = static_cast<double>(images.count) / best;
  std::printf("neat (Eigen, 1 thread): %.0f images/s (best of %d, %zu images, K=%d)\n", neat_ips,
              repeats, images.count, cb.size());

  const auto tmp = fs::temp_directory_path() / ("bench_mvot_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  {
    std::ofstream(tmp / "images.u8", std::ios::binary)
        .write(reinterpret_cast<const char*>(images.pixels.data()),
               static_cast<std::streamsize>(images.pixels.size()));
    std::ofstream(tmp / "codebook.f32", std::ios::binary)
        .write(reinterpret_cast<const char*>(cb.centres().data()),
               static_cast<std::streamsize>(cb.centres().size() * sizeof(float)));
  }
  const std::string script = (root / "bench/mvot/numpy_encode.py").string();
  std::string numpy_line = "NumPy: not available";
  double numpy_ips = 0.0;
  std::string agreement = "n/a";
  // The first interpreter on PATH may be a private one without NumPy (pyenv); Debian's
  // python3-numpy belongs to /usr/bin/python3.
  std::string python;
  for (const char* candidate : {"python3", "/usr/bin/python3"}) {
    const std::string probe = std::string(candidate) + " -c 'import numpy' >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) {
      python = candidate;
      break;
    }
  }
  if (!python.empty()) {
    std::ostringstream cmd;
    cmd << "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " << python << ' ' << script
        << ' ' << (tmp / "images.u8") << ' ' << images.count << ' ' << (tmp / "codebook.f32") << ' '
        << cb.size() << ' ' << (tmp / "codes.i32") << ' ' << repeats << " > "
        << (tmp / "numpy.txt");
    if (std::system(cmd.str().c_str()) == 0) {
      std::ifstream in(tmp / "numpy.txt");
      std::string key;
      in >> key >> numpy_ips;
      std::ifstream cin_(tmp / "codes.i32", std::ios::binary);
      std::vector<std::int32_t> np_codes(codes.size());
      cin_.read(reinterpret_cast<char*>(np_codes.data()),
                static_cast<std::streamsize>(np_codes.size() * sizeof(std::int32_t)));
      std::size_t same = 0;
      for (std::size_t i = 0; i < codes.size(); ++i) same += codes[i] == np_codes[i];
      char buf[128];
      std::snprintf(buf, sizeof buf, "%zu / %zu codes identical", same, codes.size());
      agreement = buf;
      std::snprintf(buf, sizeof buf, "NumPy (1 thread): %.0f images/s", numpy_ips);
      numpy_line = buf;
    } else {
      numpy_line = "NumPy: script failed";
    }
  }
  std::printf("%s\n", numpy_line.c_str());
  std::printf("codes: %s\n", agreement.c_str());
  if (numpy_ips > 0) std::printf("ratio neat / NumPy: %.2fx\n", neat_ips / numpy_ips);
  fs::remove_all(tmp);

  utsname u{};
  uname(&u);
  // The markdown section for bench/RESULTS.md, on stdout.
  std::ostream& md = std::cout;
  md << "\n### bench_mvot\n\n"
     << "VQ encoding of the 10,000 Fashion-MNIST test images (28x28 -> 49 codes: 4x4 patches / "
        "255, nearest of K codebook entries by -2 x.c + ||c||^2 as a matrix product, argmin; "
        "neat in blocks of 256 patches so a (256, K) distance block stays in L2, NumPy in blocks "
        "of 4096 to amortise interpreter overhead), shipped codebook "
        "`models/mvot/codebook.msgpack`. Best of "
     << repeats
     << " runs each, same process run, one thread each. The machine is shared (other builds run "
        "beside it), so the ratio varies by about +-0.1 between runs.\n\n"
     << "| implementation | images/s |\n|---|---|\n";
  char row[160];
  std::snprintf(row, sizeof row, "| neat (Eigen, -O3 -march=native) | %.0f |\n", neat_ips);
  md << row;
  if (numpy_ips > 0) {
    std::snprintf(row, sizeof row, "| NumPy (OpenBLAS, OPENBLAS_NUM_THREADS=1) | %.0f |\n",
                  numpy_ips);
    md << row;
    std::snprintf(row, sizeof row, "\nRatio neat / NumPy: **%.2fx**. Codes: %s.\n",
                  neat_ips / numpy_ips, agreement.c_str());
    md << row;
  } else {
    md << "| NumPy | not available |\n";
  }
  md << "\nCommand: `cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release "
        "-DNEAT_BUILD_BENCH=ON && cmake --build build-bench --target bench_mvot && "
        "build-bench/bench/mvot/bench_mvot "
     << repeats << "`\n\nMachine: " << cpu_model() << ", " << std::thread::hardware_concurrency()
     << " hardware threads, " << u.sysname << ' ' << u.release << ".\n";
  return 0;
}
