// bench_mvot: images/s of VQ encoding (4x4 patch descriptors, nearest of K codes) on the 10,000
// Fashion-MNIST test images with the shipped codebook: neat (assign_nearest, fused AVX-512
// kernel) vs NumPy (numpy_encode.py, matrix product + argmin) in the same run, both on one thread
// (NumPy's BLAS pinned with OPENBLAS_NUM_THREADS=1 / OMP_NUM_THREADS=1; on AVX-512 machines NumPy
// runs a second time with OPENBLAS_CORETYPE=SkylakeX). Checks that both give the same codes and
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
#include <vector>

#include "neat/hardware/detect.hpp"
#include "neat/mvot/codebook.hpp"
#include "neat/mvot/idx.hpp"

namespace fs = std::filesystem;
using namespace neat::mvot;

namespace {

// The machine line of the results: the CPU model as hardware detection reads it.
std::string cpu_model() {
  const auto model = neat::hardware::detect_hardware().cpu_model;
  return model.empty() ? "unknown" : model;
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
  std::printf("neat (fused kernel, 1 thread): %.0f images/s (best of %d, %zu images, K=%d)\n",
              neat_ips, repeats, images.count, cb.size());

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
  // NumPy as the environment gives it, and, on AVX-512 machines, with OpenBLAS forced to its
  // SkylakeX kernels: on some VMs OpenBLAS's CPU detection falls back to a slower kernel, so both
  // are reported.
  struct NumpyRun {
    std::string label;
    std::string env;
    double images_per_s = 0.0;
    std::string agreement = "n/a";
  };
  std::vector<NumpyRun> runs;
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  runs.push_back({std::string("NumPy (OpenBLAS, OPENBLAS_NUM_THREADS=1, OPENBLAS_CORETYPE ") +
                      (coretype ? std::string("=") + coretype : std::string("unset")) + ")",
                  ""});
  if (__builtin_cpu_supports("avx512f") &&
      (coretype == nullptr || std::string(coretype) != "SkylakeX")) {
    runs.push_back({"NumPy (OpenBLAS, OPENBLAS_NUM_THREADS=1, OPENBLAS_CORETYPE=SkylakeX)",
                    "OPENBLAS_CORETYPE=SkylakeX "});
  }
  for (auto& run : runs) {
    if (python.empty()) break;
    std::ostringstream cmd;
    cmd << run.env << "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " << python << ' '
        << script << ' ' << (tmp / "images.u8") << ' ' << images.count << ' '
        << (tmp / "codebook.f32") << ' ' << cb.size() << ' ' << (tmp / "codes.i32") << ' '
        << repeats << ' ' << cb.context().radius << ' ' << cb.context().weight << " > "
        << (tmp / "numpy.txt");
    if (std::system(cmd.str().c_str()) != 0) continue;
    std::ifstream in(tmp / "numpy.txt");
    std::string key;
    in >> key >> run.images_per_s;
    std::ifstream cin_(tmp / "codes.i32", std::ios::binary);
    std::vector<std::int32_t> np_codes(codes.size());
    cin_.read(reinterpret_cast<char*>(np_codes.data()),
              static_cast<std::streamsize>(np_codes.size() * sizeof(std::int32_t)));
    std::size_t same = 0;
    for (std::size_t i = 0; i < codes.size(); ++i) same += codes[i] == np_codes[i];
    char buf[128];
    std::snprintf(buf, sizeof buf, "%zu / %zu codes identical", same, codes.size());
    run.agreement = buf;
    std::printf("%s: %.0f images/s, %s, ratio neat / NumPy %.2fx\n", run.label.c_str(),
                run.images_per_s, buf, neat_ips / run.images_per_s);
  }
  if (python.empty()) std::printf("NumPy: not available\n");
  fs::remove_all(tmp);
  double load1 = -1.0;
  std::ifstream("/proc/loadavg") >> load1;

  utsname u{};
  uname(&u);
  // The markdown section for bench/RESULTS.md, on stdout.
  std::ostream& md = std::cout;
  md << "\n### bench_mvot\n\n"
     << "VQ encoding of the 10,000 Fashion-MNIST test images (28x28 -> 49 codes: descriptors of "
        "the 4x4 patches / 255 with a context ring of radius "
     << cb.context().radius << " weighted " << cb.context().weight << " (" << cb.centres().cols()
     << " values), nearest of K codebook entries by -2 x.c + ||c||^2, argmin), shipped codebook "
        "`models/mvot/codebook.msgpack`. neat: `assign_nearest`, the distance products fused with "
        "the argmin in AVX-512 register tiles of 8 patches x 16 codes (no (N, K) distance matrix "
        "is stored); NumPy (`bench/mvot/numpy_encode.py`): matrix product in blocks of 4096 "
        "patches, + ||c||^2, argmin. Best of "
     << repeats << " runs each, same process run, one thread each.\n\n"
     << "| implementation | images/s | neat / this | codes equal to neat's "
        "|\n|---|---:|---:|---|\n";
  char row[256];
  std::snprintf(row, sizeof row, "| neat (fused kernel, -O3 -march=native) | %.0f | | |\n",
                neat_ips);
  md << row;
  for (const auto& run : runs) {
    if (run.images_per_s <= 0) {
      md << "| " << run.label << " | not available | | |\n";
      continue;
    }
    std::snprintf(row, sizeof row, "| %s | %.0f | **%.2fx** | %s |\n", run.label.c_str(),
                  run.images_per_s, neat_ips / run.images_per_s, run.agreement.c_str());
    md << row;
  }
  if (runs.empty() || python.empty()) md << "| NumPy | not available | | |\n";
  std::snprintf(row, sizeof row, "\nLoad average (1 min) at the end: %.2f.\n", load1);
  md << row;
  md << "\nCommand: `cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release "
        "-DNEAT_BUILD_BENCH=ON && cmake --build build-bench --target bench_mvot && "
        "build-bench/bench/mvot/bench_mvot "
     << repeats << "`\n\nMachine: " << cpu_model() << ", " << std::thread::hardware_concurrency()
     << " hardware threads, " << u.sysname << ' ' << u.release << ".\n";
  return 0;
}
