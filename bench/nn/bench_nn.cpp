// bench_nn: the byte-LM shape (d = 256, 4 layers, 4 heads, context 256, batch 16, vocab 512)
// trained with forward + backward + AdamW, and decoded incrementally at batch 1 with the KV
// cache; the same model in PyTorch (bench/torch_reference.py) in the same invocation, same
// thread count; the machine's sgemm rate three ways (cblas_sgemm, Eigen + EIGEN_USE_BLAS via
// the helper bench_nn_eigen_blas, Eigen's own product). Usage: bench_nn [threads] (default: all
// hardware threads).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "neat/nn/modules.hpp"
#include "neat/nn/optim.hpp"

namespace neat::bench {
void eigen_native_sgemm(int m, int n, int k, const float* a, const float* b, float* c);
}  // namespace neat::bench

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// GFLOP/s of an (m x k) @ (k x n) product, best of several runs.
template <typename F>
double gemm_rate(int m, int n, int k, F product) {
  std::vector<float> a(static_cast<std::size_t>(m) * k, 0.5f),
      b(static_cast<std::size_t>(k) * n, 0.25f), c(static_cast<std::size_t>(m) * n);
  product(m, n, k, a.data(), b.data(), c.data());
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = Clock::now();
    product(m, n, k, a.data(), b.data(), c.data());
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * m * n * k / best / 1e9;
}

double json_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return -1;
  return std::atof(json.c_str() + at + key.size() + 3);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace neat::nn;
  const int threads =
      argc > 1 ? std::atoi(argv[1]) : static_cast<int>(std::thread::hardware_concurrency());
  set_num_threads(threads);
  std::printf("bench_nn: %d threads\n", num_threads());

  // --- matrix products: the shape of an MLP up-projection in training (4096 x 256 @ 256 x 1024)
  const int M = 4096, N = 1024, K = 256;
  const double cblas =
      gemm_rate(M, N, K, [](int m, int n, int k, const float* a, const float* b, float* c) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c,
                    n);
      });
  double eigen_blas = -1;
  {
    const std::string cmd = std::string(NEAT_EIGEN_BLAS_BENCH) + " " + std::to_string(M) + " " +
                            std::to_string(N) + " " + std::to_string(K) + " " +
                            std::to_string(num_threads());
    if (FILE* pipe = popen(cmd.c_str(), "r")) {
      char buf[64] = {0};
      if (std::fgets(buf, sizeof buf, pipe)) eigen_blas = std::atof(buf);
      pclose(pipe);
    }
  }
  const double eigen_native = gemm_rate(M, N, K, neat::bench::eigen_native_sgemm);
  std::printf(
      "sgemm %dx%dx%d GFLOP/s: cblas_sgemm %.1f | Eigen+EIGEN_USE_BLAS %.1f | Eigen native %.1f\n",
      M, N, K, cblas, eigen_blas, eigen_native);
  const double sgemm_rate = std::max({cblas, eigen_blas, eigen_native});

  // --- training
  TransformerConfig c;
  c.vocab_size = 512;
  c.dim = 256;
  c.layers = 4;
  c.heads = 4;
  c.mlp_hidden = 1024;
  c.max_seq_len = 256;
  const int64_t B = 16, T = 256;
  const int steps = 3;
  TransformerLM<float> lm(c);
  AdamW<float> adam(lm.trainable_parameters(), AdamWOptions{});
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int32_t> byte(0, static_cast<int32_t>(c.vocab_size - 1));
  std::vector<int32_t> x(B * T), y(B * T);
  for (auto& v : x) v = byte(rng);
  for (auto& v : y) v = byte(rng);
  auto train_step = [&] {
    adam.zero_grad();
    lm.loss(x, y, B, T).backward();
    adam.step();
  };
  train_step();
  reset_peak_memory();
  auto t0 = Clock::now();
  for (int s = 0; s < steps; ++s) train_step();
  const double train_s = seconds_since(t0);
  const double train_tps = steps * B * T / train_s;
  // Matrix-product FLOPs per token (forward 2, backward 4 per weight of the projections and
  // head) plus attention (QK^T and PV, causal half counted in full as computed).
  const double params_matmul = static_cast<double>(
      c.layers * (4 * c.dim * c.dim + 2 * c.dim * c.mlp_hidden) + c.dim * c.vocab_size);
  const double attn_flops = static_cast<double>(c.layers) * 2 * 2 * T * c.dim * 3;  // fwd + 2x bwd
  const double flops_per_token = 6 * params_matmul + attn_flops;
  const double train_gflops = train_tps * flops_per_token / 1e9;
  std::printf(
      "neat training: %.0f tokens/s (%d steps of %ld tokens, %.2f s), %.1f GFLOP/s = %.0f%% of "
      "sgemm, peak tensor memory %.1f MiB\n",
      train_tps, steps, static_cast<long>(B * T), train_s, train_gflops,
      100 * train_gflops / sgemm_rate, memory_stats().peak_bytes / 1048576.0);

  // --- incremental decoding, batch 1, greedy
  const int decode = 255;
  auto cache = lm.make_cache(1);
  int32_t tok = 0;
  lm.forward_cached({tok}, 1, cache);
  t0 = Clock::now();
  for (int i = 0; i < decode; ++i) {
    const Tensorf logits = lm.forward_cached({tok}, 1, cache);
    const float* p = logits.data();
    tok = static_cast<int32_t>(std::max_element(p, p + c.vocab_size) - p);
  }
  const double decode_tps = decode / seconds_since(t0);
  std::printf("neat decoding (batch 1, KV cache): %.0f tokens/s\n", decode_tps);

  // --- PyTorch, same model, same threads
  const std::string cmd = "python3 " + std::string(NEAT_SOURCE_DIR) +
                          "/bench/torch_reference.py --threads " + std::to_string(num_threads()) +
                          " --steps " + std::to_string(steps) + " --decode " +
                          std::to_string(decode) + " 2>/dev/null";
  std::string out;
  if (FILE* pipe = popen(cmd.c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, pipe)) out += buf;
    pclose(pipe);
  }
  const double torch_train = json_number(out, "train_tokens_per_s");
  const double torch_decode = json_number(out, "decode_tokens_per_s");
  if (torch_train <= 0 || torch_decode <= 0) {
    std::printf("PyTorch: not available\n");
    return 0;
  }
  std::printf("PyTorch training: %.0f tokens/s; decoding: %.0f tokens/s\n", torch_train,
              torch_decode);
  std::printf(
      "ratio neat/PyTorch: training %.2fx (target >= 1.0), decoding %.2fx (target >= 2.0)\n",
      train_tps / torch_train, decode_tps / torch_decode);
  return 0;
}
