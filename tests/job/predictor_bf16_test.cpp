// blt_predict under the profile's `precision: bf16` (issue 8): the byte LM with bfloat16 Linear
// weights and the Transformer² variant's adapted copy that shares them (its own float32 MLP
// matrices only) score a document as the float32 predictor does: the base LM to float rounding,
// the t2 variant within the stated cost of bf16 U and V, with fewer tensor bytes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/messages.hpp"
#include "neat/t2/experts.hpp"
#include "predictor_rig.hpp"

namespace neat::job {
namespace {

using testing::variant_bits;

const std::filesystem::path kSource(NEAT_SOURCE_DIR);

// One predictor with the t2 variant on, configured under `precision`.
struct Rig : testing::PredictorRig {
  explicit Rig(const std::string& precision,
               const std::filesystem::path& experts = kSource / "models/t2/experts.ckpt")
      : PredictorRig(config(experts), {"t2.adaptation"}, profile(precision), "predict-bf16") {}
  static YAML::Node config(const std::filesystem::path& experts) {
    YAML::Node c;
    c["adaptation"] = "t2.adaptation";
    c["experts"] = experts.string();
    c["wait_ms"] = 20000;
    return c;
  }
  static components::ProfileSettings profile(const std::string& precision) {
    components::ProfileSettings p;
    p.precision = precision;
    return p;
  }
  // The adaptation of document `doc` to expert `domain`, then its tokens.
  void send(std::uint64_t doc, const std::vector<std::int32_t>& item, const std::string& domain) {
    blt::Adaptation a;
    a.doc_id = doc;
    a.domain = domain;
    a.confidence = 1.0;
    a.domains = {domain};
    a.alpha = {1.0};
    bus::publish(up, "t2.adaptation", a);
    tokens(doc, item);
  }
};

TEST(PredictorBf16, Bf16ByteLMAndSharedAdaptedCopyScoreAsFloat32WithFewerBytes) {
  std::ifstream in(kSource / "docs/architecture.md", std::ios::binary);
  std::vector<std::uint8_t> text((std::istreambuf_iterator<char>(in)), {});
  text.resize(700);
  const auto doc = blt::document_tokens(text);  // BOS, bytes, EOS
  const std::vector<std::int32_t> item(doc.begin() + 1, doc.end() - 1);

  Rig f32("float32");
  Rig bf16("bf16");
  f32.send(1, item, "en");
  bf16.send(1, item, "en");
  ASSERT_TRUE(f32.pump(1));
  ASSERT_TRUE(bf16.pump(1));
  const auto bytes = static_cast<double>(f32.scores[0].bytes);
  const double base_f32 = variant_bits(f32.scores[0], "base") / bytes;
  const double base_bf16 = variant_bits(bf16.scores[0], "base") / bytes;
  const double t2_f32 = variant_bits(f32.scores[0], "t2") / bytes;
  const double t2_bf16 = variant_bits(bf16.scores[0], "t2") / bytes;
  std::cout << "bits per byte: base " << base_f32 << " (float32) " << base_bf16 << " (bf16); t2 "
            << t2_f32 << " (float32) " << t2_bf16 << " (bf16)\n"
            << "tensor bytes after configure: float32 " << f32.configure_bytes << ", bf16 "
            << bf16.configure_bytes << "\n";
  EXPECT_NE(t2_f32, base_f32);             // the adaptation was applied
  EXPECT_NEAR(base_bf16, base_f32, 1e-5);  // the shipped weights are bf16 values: rounding only
  EXPECT_NEAR(t2_bf16, t2_f32, 1e-3);      // stated cost: 0.001 bits per byte (bf16 U, V)
  // The bf16 model (half its Linear bytes), bf16 U and V, and an adapted copy of the MLP only.
  EXPECT_LT(bf16.configure_bytes, f32.configure_bytes - 8 * 1024 * 1024);
}

TEST(PredictorBf16, AdaptedCopyOwnsLmHeadWhenTheExpertsAdaptIt) {
  // Experts over all+head: the shipped ones lifted (z = 1 for lm_head) score as the shipped ones;
  // with en's lm_head singular values scaled by 0.9 the adapted copy's own lm_head changes the
  // t2 bits, while the shared bf16 model (the base variant) stays as it was.
  const auto dir =
      std::filesystem::temp_directory_path() / ("neat-predict-head-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto model = blt::load_byte_lm(kSource / "models/blt/byte_lm.bf16.ckpt");
  const auto factors = t2::ModelFactors::decompose(
      *model, {}, t2::adapted_matrix_names(*model, t2::MatrixSet::kAllHead));
  auto lifted = t2::ExpertSet::load(kSource / "models/t2/experts.ckpt").lifted_to(factors);
  lifted.save(dir / "lifted.ckpt");
  ASSERT_EQ(lifted.matrices.back(), "lm_head.weight");
  for (auto& z : lifted.experts[lifted.domain_index("en")].back()) z = 0.9f;
  lifted.save(dir / "head.ckpt");

  std::ifstream in(kSource / "docs/architecture.md", std::ios::binary);
  std::vector<std::uint8_t> text((std::istreambuf_iterator<char>(in)), {});
  text.resize(500);
  const auto doc = blt::document_tokens(text);
  const std::vector<std::int32_t> item(doc.begin() + 1, doc.end() - 1);
  Rig shipped("bf16"), same("bf16", dir / "lifted.ckpt"), head("bf16", dir / "head.ckpt");
  for (Rig* r : {&shipped, &same, &head}) {
    r->send(1, item, "en");
    ASSERT_TRUE(r->pump(1));
  }
  const auto bits = [](const Rig& r, const char* variant) {
    return variant_bits(r.scores[0], variant) / static_cast<double>(r.scores[0].bytes);
  };
  EXPECT_NEAR(bits(same, "t2"), bits(shipped, "t2"), 1e-4);
  EXPECT_GT(std::abs(bits(head, "t2") - bits(same, "t2")), 1e-3);
  EXPECT_EQ(bits(head, "base"), bits(shipped, "base"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace neat::job
