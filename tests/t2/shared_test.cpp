// Issue 8: the byte LM, its SVD factors and the composed-weight cache shared by the
// components of one process; the profile's precision reaching the factors, and its cost.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/shared_model.hpp"
#include "neat/components/pipeline.hpp"
#include "neat/hardware/profile.hpp"
#include "neat/t2/shared.hpp"

namespace neat::t2 {
namespace {

const std::string kModel = std::string(NEAT_SOURCE_DIR) + "/models/blt/byte_lm.bf16.ckpt";
const std::string kExperts = std::string(NEAT_SOURCE_DIR) + "/models/t2/experts.ckpt";

TEST(SharedByteLM, OneFrozenCopyPerProcessCountedOnce) {
  const auto before = nn::memory_stats().current_bytes;
  const auto a = blt::shared_byte_lm(kModel);
  const auto loaded = nn::memory_stats().current_bytes - before;
  EXPECT_GE(loaded, 4 * a->parameter_count());
  // Another spelling of the same file: the same instance, no new tensor bytes.
  const auto b =
      blt::shared_byte_lm(std::string(NEAT_SOURCE_DIR) + "/models/blt/../blt/byte_lm.bf16.ckpt");
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(nn::memory_stats().current_bytes - before, loaded);
  EXPECT_TRUE(a->trainable_parameters().empty()) << "a shared model must record no graph";
}

TEST(ProfilePrecision, Bf16FactorsFromTheProfileHalveTheirBytesAndCostLittleBitsPerByte) {
  // The shipped constrained profile, through the launcher's plumbing to blt_predict.
  const auto profile = hardware::load_profile(std::string(NEAT_SOURCE_DIR) +
                                              "/configs/profiles/cpu-constrained.yaml");
  components::PipelineSpec spec;
  components::ComponentSpec predict;
  predict.name = "predict";
  predict.kind = "blt_predict";
  predict.config = YAML::Node(YAML::NodeType::Map);
  spec.components.push_back(predict);
  components::apply_profile(spec, profile);
  YAML::Node config = YAML::Load(YAML::Dump(spec.components[0].config));
  const auto settings = components::take_profile_settings(config);
  ASSERT_EQ(settings.precision, "bf16");

  const auto experts = ExpertSet::load(kExperts);
  const auto f32 = shared_model_factors(kModel, nn::DType::f32, experts.matrices);
  const auto bf16 =
      shared_model_factors(kModel, factor_storage(settings.precision), experts.matrices);
  ASSERT_NE(f32.get(), bf16.get());
  std::uint64_t bytes_f32 = 0, bytes_bf16 = 0, sigma_bytes = 0;
  for (std::size_t i = 0; i < f32->factors.size(); ++i) {
    bytes_f32 += f32->factors[i].stored_bytes();
    bytes_bf16 += bf16->factors[i].stored_bytes();
    sigma_bytes += 4 * static_cast<std::uint64_t>(f32->factors[i].rank);
    EXPECT_EQ(bf16->factors[i].storage, nn::DType::bf16);
    EXPECT_TRUE(bf16->factors[i].u_f32.empty());
  }
  EXPECT_EQ(2 * (bytes_bf16 - sigma_bytes), bytes_f32 - sigma_bytes);  // U, V: half the bytes

  // Cost: the English expert's weights composed from each, on a short English text.
  experts.check_compatible(*bf16);
  const auto& z = experts.experts[experts.domain_index("en")];
  const auto base = blt::shared_byte_lm(kModel);
  auto model_f32 = copy_model(*base), model_bf16 = copy_model(*base);
  apply_weights(*f32, compose_all(*f32, z), *model_f32);
  apply_weights(*bf16, compose_all(*bf16, z), *model_bf16);
  std::ifstream in(std::string(NEAT_SOURCE_DIR) + "/README.md", std::ios::binary);
  std::vector<std::uint8_t> text((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GE(text.size(), 1024u);
  text.resize(1024);
  const double bpb_f32 = blt::bits_per_byte(*model_f32, {text});
  const double bpb_bf16 = blt::bits_per_byte(*model_bf16, {text});
  std::cout << "bits per byte, English expert: f32 factors " << bpb_f32 << ", bf16 factors "
            << bpb_bf16 << "\n";
  EXPECT_NEAR(bpb_bf16, bpb_f32, 0.01);  // stated tolerance: 0.01 bits per byte
}

TEST(WeightCacheBudget, CacheBoundedByItsShareOfTheBudgetAndSharedPerKey) {
  EXPECT_EQ(budgeted_cache_options({}, 384ull << 20).max_bytes, 12ull << 20);
  EXPECT_EQ(budgeted_cache_options({}, 2ull << 30).max_bytes, 64ull << 20);
  EXPECT_EQ(budgeted_cache_options({}, 0).max_bytes, WeightCacheOptions{}.max_bytes);
  const auto a =
      shared_weight_cache("experts|model|bf16", budgeted_cache_options({}, 384ull << 20));
  const auto b =
      shared_weight_cache("experts|model|bf16", budgeted_cache_options({}, 384ull << 20));
  const auto c = shared_weight_cache("experts|model|bf16", WeightCacheOptions{});
  EXPECT_EQ(a.get(), b.get());
  EXPECT_NE(a.get(), c.get());  // other limits: another cache
}

}  // namespace
}  // namespace neat::t2
