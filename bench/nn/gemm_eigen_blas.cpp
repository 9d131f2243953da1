// bench_nn_eigen_blas: Eigen's matrix product with EIGEN_USE_BLAS (Eigen forwards to
// OpenBLAS's sgemm_). Its own executable, because linking Eigen's BLAS-specialised product into
// the same binary as Eigen's native one would let the linker keep only one of the two
// (same template, two definitions). bench_nn runs it and reads the GFLOP/s it prints.
// Usage: bench_nn_eigen_blas [M N K threads] (default 4096 1024 256, all hardware threads;
// `make bench` runs it without arguments).
#define EIGEN_USE_BLAS
#include <cblas.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

int main(int argc, char** argv) {
  const bool given = argc >= 5;
  const int m = given ? std::atoi(argv[1]) : 4096, n = given ? std::atoi(argv[2]) : 1024;
  const int k = given ? std::atoi(argv[3]) : 256;
  const int threads =
      given ? std::atoi(argv[4]) : static_cast<int>(std::thread::hardware_concurrency());
  openblas_set_num_threads(threads);
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat a = Mat::Constant(m, k, 0.5f), b = Mat::Constant(k, n, 0.25f), c(m, n);
  c.noalias() = a * b;
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    c.noalias() = a * b;
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double gflops = 2.0 * m * n * k / best / 1e9;
  if (given)
    std::printf("%.3f\n", gflops);
  else
    std::printf("Eigen + EIGEN_USE_BLAS sgemm %dx%dx%d, %d threads: %.1f GFLOP/s\n", m, n, k,
                threads, gflops);
  return 0;
}
