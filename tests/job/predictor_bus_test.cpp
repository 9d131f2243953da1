// blt_predict over the bus with the titans node's readouts: the "titans" variant scores a
// document with the readout rows injected at the positions of their patches (equal to
// blt::target_log_probs with titans::make_readout_hook), and a malformed readout slice is
// rejected, counted, and leaves that variant at the base LM's figures without losing the
// document.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/messages.hpp"
#include "neat/nn/ops.hpp"
#include "neat/titans/mag.hpp"
#include "predictor_rig.hpp"

namespace neat::job {
namespace {

using testing::variant_bits;

const std::filesystem::path kSource(NEAT_SOURCE_DIR);

// The predictor with the titans variant on, fed readouts on `titans.readout`.
struct Rig : testing::PredictorRig {
  Rig() : PredictorRig(config(), {"titans.readout"}) {}
  static YAML::Node config() {
    YAML::Node c;
    c["readout"] = "titans.readout";
    c["injection"] = (kSource / "models/titans/mag.ckpt").string();
    c["wait_ms"] = 20000;
    return c;
  }
  void readout(std::uint64_t doc, std::uint64_t first, std::vector<std::uint64_t> starts,
               std::vector<float> rows, std::int64_t dim, bool last) {
    const auto n = static_cast<std::int64_t>(starts.size());
    blt::Readout r{doc, first, static_cast<std::uint64_t>(n), last, std::move(starts)};
    bus::publish(up, "titans.readout", r,
                 {bus::TensorOut::from_vector("readout", bus::DType::f32, {n, dim}, rows)});
  }
};

TEST(PredictorBus, TitansVariantUsesTheNodesReadoutsAndSurvivesABrokenSlice) {
  std::ifstream in(kSource / "docs/architecture.md", std::ios::binary);
  std::vector<std::uint8_t> text((std::istreambuf_iterator<char>(in)), {});
  text.resize(700);
  const auto doc = blt::document_tokens(text);  // BOS, bytes, EOS
  const std::vector<std::int32_t> item(doc.begin() + 1, doc.end() - 1);
  const auto model = blt::load_byte_lm(kSource / "models/blt/byte_lm.bf16.ckpt");
  const auto mag = titans::load_mag_model(kSource / "models/titans/mag.ckpt");
  const auto patches = titans::patch_document(*model, doc, mag.patcher);
  std::vector<float> rows;
  {
    nn::NoGradGuard no_grad;
    rows = titans::model_readouts(mag, patches.latents, doc, patches.patch_starts, true)
               .contiguous()
               .to_vector();
  }
  const auto d = mag.injection.config.memory_dim;
  const auto P = patches.patch_starts.size();
  std::vector<std::uint64_t> starts(patches.patch_starts.begin(), patches.patch_starts.end());
  const auto half = P / 2;

  Rig rig;
  // Document 1: its readouts in two slices, the second before its tokens arrive.
  rig.readout(1, 0, {starts.begin(), starts.begin() + half},
              {rows.begin(), rows.begin() + half * d}, d, false);
  rig.readout(1, half, {starts.begin() + half, starts.end()}, {rows.begin() + half * d, rows.end()},
              d, true);
  rig.tokens(1, item);
  // Document 2: a slice with the wrong width, then the rest.
  rig.readout(2, 0, {starts.begin(), starts.begin() + half}, std::vector<float>(half * 3, 1.0f), 3,
              false);
  rig.readout(2, half, {starts.begin() + half, starts.end()}, {rows.begin() + half * d, rows.end()},
              d, true);
  rig.tokens(2, item);
  ASSERT_TRUE(rig.pump(2));

  nn::NoGradGuard no_grad;
  const auto hook = titans::make_readout_hook(mag.injection, patches.patch_of_position, rows);
  const double want = blt::byte_bits(doc, blt::target_log_probs(*model, doc, 1, hook));
  const double base = blt::byte_bits(doc, blt::target_log_probs(*model, doc, 1));
  ASSERT_EQ(rig.scores.size(), 2u);
  EXPECT_NEAR(variant_bits(rig.scores[0], "titans"), want, 1e-3 * want);
  EXPECT_NEAR(variant_bits(rig.scores[0], "base"), base, 1e-3 * base);
  EXPECT_GT(std::abs(want - base), 1e-3);  // the readouts changed the predictions
  // The broken document: scored, titans = base, the slice and the miss counted.
  EXPECT_EQ(variant_bits(rig.scores[1], "titans"), variant_bits(rig.scores[1], "base"));
  const auto stats = rig.predictor.stats();
  EXPECT_EQ(stats["rejected"].get<int>(), 1);
  EXPECT_EQ(stats["missed_readouts"].get<int>(), 1);
}

}  // namespace
}  // namespace neat::job
