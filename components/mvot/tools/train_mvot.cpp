// neat_train_mvot: trains the MVoT visual codebook (k-means on 4x4 patches of the Fashion-MNIST
// train split), reports PSNR and code perplexity on the 10,000 test images, saves the codebook.
// Usage: neat_train_mvot [--k 512] [--iterations 25] [--seed 1] [--init-sample 20000]
//                        [--data DIR] [--out models/mvot/codebook.msgpack]
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "neat/mvot/codebook.hpp"

int main(int argc, char** argv) {
  neat::mvot::TrainOptions o;
  o.output = "models/mvot/codebook.msgpack";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "neat_train_mvot: %s needs a value\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--k")
      o.kmeans.k = std::stoi(v);
    else if (a == "--iterations")
      o.kmeans.iterations = std::stoi(v);
    else if (a == "--seed")
      o.kmeans.seed = std::stoull(v);
    else if (a == "--init-sample")
      o.kmeans.init_sample = std::stoull(v);
    else if (a == "--data")
      o.dataset_dir = v;
    else if (a == "--out")
      o.output = v;
    else {
      std::fprintf(stderr, "neat_train_mvot: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    const auto r = neat::mvot::train_codebook(o);
    for (std::size_t i = 0; i < r.inertia.size(); ++i) {
      std::printf("iteration %zu: train mse per patch (sum of 16 squared errors) %.6f\n", i + 1,
                  r.inertia[i]);
    }
    std::printf("K=%d seed=%llu iterations=%d restarted_codes=%d train_images=%llu\n",
                r.provenance.k, static_cast<unsigned long long>(r.provenance.seed),
                r.provenance.iterations, r.provenance.restarted_codes,
                static_cast<unsigned long long>(r.provenance.train_images));
    std::printf("training wall time %.1f s\n", r.provenance.wall_seconds);
    std::printf("test images %zu: PSNR mean of per-image %.3f dB, PSNR of mean MSE %.3f dB\n",
                r.test.images, r.test.psnr_mean_db, r.test.psnr_of_mean_mse_db);
    std::printf("test code perplexity exp(H) %.2f (H %.4f nats), used codes %d\n",
                r.test.perplexity, r.test.code_entropy_nats, r.test.used_codes);
    if (!o.output.empty()) std::printf("saved %s\n", o.output.string().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "neat_train_mvot: %s\n", e.what());
    return 1;
  }
  return 0;
}
