// blt_predict's scoring: the windows of blt::bits_per_byte, the same numbers at any batch, and
// a window hook that reaches the residual stream.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>

#include "neat/blt/byte_lm.hpp"
#include "neat/job/predictor.hpp"

namespace neat::job {
namespace {

const std::filesystem::path kModel =
    std::filesystem::path(NEAT_SOURCE_DIR) / "models/blt/byte_lm.bf16.ckpt";

std::vector<std::uint8_t> real_text(std::size_t bytes) {
  std::ifstream in(std::filesystem::path(NEAT_SOURCE_DIR) / "docs/architecture.md",
                   std::ios::binary);
  std::vector<std::uint8_t> all((std::istreambuf_iterator<char>(in)), {});
  all.resize(std::min(all.size(), bytes));
  return all;
}

TEST(Predictor, BaseScoresEqualBitsPerByteAtAnyBatch) {
  const auto model = blt::load_byte_lm(kModel);
  const auto bytes = real_text(1500);  // six windows of 256 tokens
  ASSERT_EQ(bytes.size(), 1500u);
  const auto tokens = blt::document_tokens(bytes);
  const auto lp1 = blt::target_log_probs(*model, tokens, 1);
  const auto lp4 = blt::target_log_probs(*model, tokens, 4);
  ASSERT_EQ(lp1.size(), tokens.size() - 1);
  for (std::size_t i = 0; i < lp1.size(); ++i) EXPECT_NEAR(lp1[i], lp4[i], 1e-4);
  const double bpb = blt::byte_bits(tokens, lp1) / double(bytes.size());
  EXPECT_NEAR(bpb, blt::bits_per_byte(*model, {bytes}), 1e-6);
  EXPECT_GT(bpb, 0.5);
  EXPECT_LT(bpb, 6.0);
  EXPECT_THROW(blt::target_log_probs(*model, {blt::kBos, 9999}), std::invalid_argument);
}

TEST(Predictor, WindowHookChangesThePredictionsOnlyWhereItAdds) {
  const auto model = blt::load_byte_lm(kModel);
  const auto tokens = blt::document_tokens(real_text(600));
  const auto base = blt::target_log_probs(*model, tokens, 2);
  std::vector<std::vector<std::int64_t>> seen;
  // Adds a constant vector after block 1 in the second window only.
  const WindowHook hook = [&](const std::vector<std::int64_t>& starts, std::int64_t len) {
    seen.push_back(starts);
    return [starts, len](std::int64_t layer, const nn::Tensorf& x) {
      if (layer != 1) return x;
      std::vector<float> add(static_cast<std::size_t>(x.numel()), 0.0f);
      for (std::size_t r = 0; r < starts.size(); ++r) {
        if (starts[r] != 256) continue;
        for (std::int64_t i = 0; i < len * x.shape()[2]; ++i)
          add[r * static_cast<std::size_t>(len * x.shape()[2]) + static_cast<std::size_t>(i)] =
              0.5f;
      }
      return nn::add(x, nn::Tensorf::from_vector(x.shape(), add));
    };
  };
  const auto hooked = blt::target_log_probs(*model, tokens, 2, hook);
  ASSERT_FALSE(seen.empty());
  for (std::size_t i = 0; i < base.size(); ++i) {
    if (i < 256) {
      EXPECT_NEAR(hooked[i], base[i], 1e-5) << i;  // first window untouched
    }
  }
  double moved = 0;
  for (std::size_t i = 256; i < 512 && i < base.size(); ++i) moved += std::abs(hooked[i] - base[i]);
  EXPECT_GT(moved, 1.0);
}

}  // namespace
}  // namespace neat::job
