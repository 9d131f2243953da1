// Issue 8, `precision: bf16` for the byte LM itself: the process registry keeps one instance per
// checkpoint and precision, the bf16 one holds its Linear weights in half the bytes, and on the
// shipped (bf16) checkpoint it is the same model: the same logits bit for bit, the same bits per
// byte and SVD factors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <iterator>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/shared_model.hpp"
#include "neat/nn/bf16_weights.hpp"
#include "neat/nn/shared.hpp"
#include "neat/t2/shared.hpp"

namespace neat::t2 {
namespace {

const std::string kModel = std::string(NEAT_SOURCE_DIR) + "/models/blt/byte_lm.bf16.ckpt";

std::vector<std::uint8_t> readme_bytes(std::size_t n) {
  std::ifstream in(std::string(NEAT_SOURCE_DIR) + "/README.md", std::ios::binary);
  std::vector<std::uint8_t> text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_GE(text.size(), n);
  text.resize(std::min(n, text.size()));
  return text;
}

TEST(SharedByteLMPrecision, OneInstancePerPathAndPrecisionWithHalfTheLinearBytes) {
  EXPECT_EQ(blt::byte_lm_storage("bf16"), nn::DType::bf16);
  EXPECT_EQ(blt::byte_lm_storage("float32"), nn::DType::f32);
  EXPECT_THROW(blt::byte_lm_storage("fp16"), std::invalid_argument);
  EXPECT_THROW(blt::shared_byte_lm(kModel, nn::DType::f64), std::invalid_argument);

  auto before = nn::memory_stats().current_bytes;
  const auto f32 = blt::shared_byte_lm(kModel);
  const auto f32_bytes = nn::memory_stats().current_bytes - before;
  before = nn::memory_stats().current_bytes;
  const auto bf16 = blt::shared_byte_lm(kModel, nn::DType::bf16);
  const auto bf16_bytes = nn::memory_stats().current_bytes - before;
  ASSERT_NE(f32.get(), bf16.get());
  // Another spelling of the same file and precision: the same instance, no new bytes.
  const auto again = blt::shared_byte_lm(
      std::string(NEAT_SOURCE_DIR) + "/models/blt/../blt/byte_lm.bf16.ckpt", nn::DType::bf16);
  EXPECT_EQ(again.get(), bf16.get());
  EXPECT_EQ(nn::memory_stats().current_bytes - before, bf16_bytes);

  const auto& c = f32->config();
  const std::int64_t linears = 6 * c.layers + 1;
  EXPECT_EQ(nn::count_bf16_linear_weights(*bf16), linears);
  EXPECT_EQ(nn::count_bf16_linear_weights(*f32), 0);
  const std::int64_t linear_values =
      c.layers * (4 * c.dim * c.dim + 2 * c.dim * c.mlp_hidden) + c.vocab_size * c.dim;
  EXPECT_EQ(f32_bytes, 4 * f32->parameter_count());
  // bf16: 2 bytes instead of 4 per Linear weight, plus a 4-byte placeholder per matrix.
  EXPECT_EQ(bf16_bytes, f32_bytes - 2 * linear_values + 4 * linears);
  EXPECT_EQ(bf16->parameter_count(), f32->parameter_count());
  EXPECT_TRUE(bf16->trainable_parameters().empty()) << "a shared model must record no graph";
  std::cout << "byte LM tensor bytes: float32 " << f32_bytes << ", bf16 Linear weights "
            << bf16_bytes << "\n";
}

TEST(SharedByteLMPrecision, ShippedModelInBf16GivesTheSameLogitsAndBitsPerByte) {
  const auto f32 = blt::shared_byte_lm(kModel);
  const auto bf16 = blt::shared_byte_lm(kModel, nn::DType::bf16);
  // The shipped checkpoint stores bf16 values: the conversion rounds nothing.
  for (const auto& block : f32->blocks)
    for (const nn::Linear<float>* l : {&block->attn.wq, &block->attn.wk, &block->attn.wv,
                                       &block->attn.wo, &block->mlp.up, &block->mlp.down})
      ASSERT_TRUE(nn::bf16_representable(l->weight));
  ASSERT_TRUE(nn::bf16_representable(f32->lm_head.weight));

  const auto text = readme_bytes(1024);
  std::vector<std::int32_t> tokens{blt::kBos};
  tokens.insert(tokens.end(), text.begin(), text.begin() + 200);
  {
    nn::NoGradGuard no_grad;
    const auto a = f32->forward(tokens, 1, static_cast<std::int64_t>(tokens.size())).to_vector();
    const auto b = bf16->forward(tokens, 1, static_cast<std::int64_t>(tokens.size())).to_vector();
    float diff = 0.0f, scale = 0.0f;
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff = std::max(diff, std::abs(a[i] - b[i]));
      scale = std::max(scale, std::abs(a[i]));
    }
    std::cout << "logits: largest |float32 - bf16| " << diff << " (largest |logit| " << scale
              << ")\n";
    // Each matrix is one panel of bf16_linear: the same GEMMs on the same floats.
    EXPECT_EQ(a, b) << "largest difference " << diff;
  }
  const double bpb_f32 = blt::bits_per_byte(*f32, {text});
  const double bpb_bf16 = blt::bits_per_byte(*bf16, {text});
  std::cout << std::setprecision(10) << "bits per byte on 1 KiB of README.md: float32 " << bpb_f32
            << ", bf16 weights " << bpb_bf16 << "\n";
  EXPECT_NEAR(bpb_bf16, bpb_f32, 1e-9);  // stated tolerance: 1e-9 bits per byte
}

TEST(SharedModelFactorsPrecision, Bf16ModelDecomposesToTheFactorsOfTheFloat32One) {
  const auto bf16_model = blt::shared_byte_lm(kModel, nn::DType::bf16);
  const auto live = nn::shared_instance_count();
  const auto factors = shared_model_factors(kModel, nn::DType::bf16);
  EXPECT_EQ(nn::shared_instance_count(), live + 1) << "the factors reuse the live bf16 model";
  const auto f32_model = blt::load_byte_lm(kModel);
  SvdOptions options;
  options.storage = nn::DType::bf16;
  const auto reference = ModelFactors::decompose(*f32_model, options);
  ASSERT_EQ(factors->names, reference.names);
  ASSERT_EQ(factors->factors.size(), reference.factors.size());
  for (std::size_t i = 0; i < reference.factors.size(); ++i) {
    const auto& a = factors->factors[i];
    const auto& b = reference.factors[i];
    EXPECT_EQ(a.rank, b.rank) << reference.names[i];
    EXPECT_EQ(a.singular_values, b.singular_values) << reference.names[i];
    EXPECT_EQ(a.u_bf16, b.u_bf16) << reference.names[i];
    EXPECT_EQ(a.v_bf16, b.v_bf16) << reference.names[i];
  }
}

}  // namespace
}  // namespace neat::t2
