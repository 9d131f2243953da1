// Eigen's own matrix product (no BLAS underneath), for bench_nn's product comparison.
#include <Eigen/Core>

namespace neat::bench {

void eigen_native_sgemm(int m, int n, int k, const float* a, const float* b, float* c) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const Mat> A(a, m, k), B(b, k, n);
  Eigen::Map<Mat> C(c, m, n);
  C.noalias() = A * B;
}

}  // namespace neat::bench
