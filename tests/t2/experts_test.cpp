// Experts on the shipped byte LM: SVD of every MLP matrix (z = 1 reproduces it), copying and
// adapting a model through the cache, the experts file round trip and its corruption check,
// and the task embedding.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "neat/blt/byte_lm.hpp"
#include "neat/t2/experts.hpp"

using namespace neat;

namespace {

class ShippedLM : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ =
        blt::load_byte_lm(std::string(NEAT_SOURCE_DIR) + "/models/blt/byte_lm.bf16.ckpt").release();
    factors_ = new t2::ModelFactors(t2::ModelFactors::decompose(*model_, {}));
  }
  static void TearDownTestSuite() {
    delete factors_;
    delete model_;
  }
  static t2::ExpertSet two_experts() {
    t2::ExpertSet s;
    s.matrices = factors_->names;
    s.ranks = factors_->ranks();
    s.domains = {"a", "b"};
    s.experts.push_back(t2::identity_expert(*factors_));
    auto z = t2::identity_expert(*factors_);
    for (auto& v : z)
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = 1.0f + 0.1f * static_cast<float>(i % 3);
    s.experts.push_back(z);
    s.classes.push_back({"a", false, {1.0, 0.0}, std::vector<float>(256, 1.0f)});
    s.classes.push_back({"es", true, {0.25, 0.75}, std::vector<float>(256, -1.0f)});
    s.provenance = {{"command", "test"}};
    return s;
  }
  static nn::TransformerLM<float>* model_;
  static t2::ModelFactors* factors_;
};
nn::TransformerLM<float>* ShippedLM::model_ = nullptr;
t2::ModelFactors* ShippedLM::factors_ = nullptr;

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0.0, n = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    e += std::pow(double(a[i]) - b[i], 2);
    n += double(a[i]) * a[i];
  }
  return std::sqrt(e / n);
}

}  // namespace

TEST_F(ShippedLM, IdentityExpertReproducesEveryMlpMatrix) {
  ASSERT_EQ(factors_->names.size(), 8u);
  EXPECT_EQ(factors_->names[0], "blocks.0.mlp.up.weight");
  EXPECT_EQ(factors_->names[7], "blocks.3.mlp.down.weight");
  const auto w = t2::compose_all(*factors_, t2::identity_expert(*factors_));
  const auto params = model_->named_parameters();
  for (std::size_t m = 0; m < w.matrices.size(); ++m) {
    EXPECT_EQ(factors_->factors[m].rank, 256);
    for (const auto& [name, t] : params) {
      if (name == factors_->names[m]) {
        EXPECT_LT(relative_error(t.contiguous().to_vector(), w.matrices[m]), 1e-6) << name;
      }
    }
  }
}

TEST_F(ShippedLM, AllMatricesAddTheAttentionProjectionsAndZOfOneChangesOnlyItsMatrix) {
  const auto names = t2::adapted_matrix_names(*model_, t2::MatrixSet::kAll);
  ASSERT_EQ(names.size(), 24u);  // 4 blocks x (wq, wk, wv, wo, up, down)
  EXPECT_EQ(names[0], "blocks.0.attn.wq.weight");
  EXPECT_EQ(names[3], "blocks.0.attn.wo.weight");
  EXPECT_EQ(names[5], "blocks.0.mlp.down.weight");
  EXPECT_EQ(names[23], "blocks.3.mlp.down.weight");
  EXPECT_EQ(t2::adapted_matrix_names(*model_, t2::MatrixSet::kMlp), t2::mlp_matrix_names(*model_));
  EXPECT_EQ(&t2::adapted_linear(*model_, "blocks.2.attn.wk.weight"), &model_->blocks[2]->attn.wk);
  EXPECT_EQ(&t2::adapted_linear(*model_, "blocks.1.mlp.up.weight"), &model_->blocks[1]->mlp.up);
  for (const char* bad :
       {"lm_head.bias", "tok_emb.weight", "blocks.4.mlp.up.weight", "blocks.x.attn.wq.weight",
        "blocks.0.attn.wq.bias", "blocks..mlp.up.weight"}) {
    EXPECT_THROW(t2::adapted_linear(*model_, bad), std::invalid_argument) << bad;
  }
  EXPECT_EQ(t2::parse_matrix_set("all"), t2::MatrixSet::kAll);
  EXPECT_THROW(t2::parse_matrix_set("attention"), std::invalid_argument);
  // all+head: the same 24 and the output projection last.
  const auto with_head = t2::adapted_matrix_names(*model_, t2::MatrixSet::kAllHead);
  ASSERT_EQ(with_head.size(), 25u);
  EXPECT_TRUE(std::equal(names.begin(), names.end(), with_head.begin()));
  EXPECT_EQ(with_head.back(), "lm_head.weight");
  EXPECT_EQ(&t2::adapted_linear(*model_, "lm_head.weight"), &model_->lm_head);
  EXPECT_EQ(t2::parse_matrix_set("all+head"), t2::MatrixSet::kAllHead);
  EXPECT_STREQ(t2::matrix_set_name(t2::MatrixSet::kAllHead), "all+head");

  const auto all = t2::ModelFactors::decompose(*model_, {}, names);
  ASSERT_EQ(all.names, names);
  // z = 1 reproduces every matrix, the attention projections included.
  const auto w = t2::compose_all(all, t2::identity_expert(all));
  for (std::size_t m = 0; m < names.size(); ++m) {
    EXPECT_LT(relative_error(t2::adapted_linear(*model_, names[m]).weight.contiguous().to_vector(),
                             w.matrices[m]),
              1e-6)
        << names[m];
  }
  // Scaling the singular values of blocks.1.attn.wv alone writes only that matrix of the copy.
  auto z = t2::identity_expert(all);
  for (auto& v : z[8]) v = 0.5f;  // names[8] = blocks.1.attn.wv.weight
  ASSERT_EQ(names[8], "blocks.1.attn.wv.weight");
  auto copy = t2::copy_model(*model_);
  t2::apply_weights(all, t2::compose_all(all, z), *copy);
  for (std::size_t m = 0; m < names.size(); ++m) {
    const auto before = t2::adapted_linear(*model_, names[m]).weight.contiguous().to_vector();
    const auto after = t2::adapted_linear(*copy, names[m]).weight.contiguous().to_vector();
    if (m == 8) {
      EXPECT_NEAR(relative_error(before, after), 0.5, 1e-5);  // W' = U diag(0.5 sigma) V^T
    } else {
      EXPECT_LT(relative_error(before, after), 1e-6) << names[m];
    }
  }
}

TEST_F(ShippedLM, LiftedExpertsKeepTheirZAndGetOneForTheAddedMatrices) {
  // Experts over the MLP matrices lifted to all+head compose the same weights: z = 1 for the
  // attention projections and lm_head, their own z elsewhere.
  const auto experts = two_experts();
  const auto target = t2::ModelFactors::decompose(
      *model_, {}, t2::adapted_matrix_names(*model_, t2::MatrixSet::kAllHead));
  const auto lifted = experts.lifted_to(target);
  lifted.check_compatible(target);
  ASSERT_EQ(lifted.experts.size(), experts.experts.size());
  EXPECT_EQ(lifted.domains, experts.domains);
  for (std::size_t d = 0; d < experts.experts.size(); ++d) {
    for (std::size_t t = 0; t < target.names.size(); ++t) {
      const auto it = std::find(experts.matrices.begin(), experts.matrices.end(), target.names[t]);
      if (it == experts.matrices.end()) {
        EXPECT_EQ(lifted.experts[d][t],
                  std::vector<float>(static_cast<std::size_t>(target.ranks()[t]), 1.0f))
            << target.names[t];
      } else {
        EXPECT_EQ(lifted.experts[d][t], experts.experts[d][it - experts.matrices.begin()]);
      }
    }
  }
  auto copy = t2::copy_model(*model_);
  t2::apply_weights(target, t2::compose_all(target, lifted.experts[1]), *copy);
  auto reference = t2::copy_model(*model_);
  t2::apply_weights(*factors_, t2::compose_all(*factors_, experts.experts[1]), *reference);
  for (const auto& name : target.names) {
    EXPECT_LT(relative_error(t2::adapted_linear(*reference, name).weight.contiguous().to_vector(),
                             t2::adapted_linear(*copy, name).weight.contiguous().to_vector()),
              1e-6)
        << name;
  }
  // Lifting to fewer matrices, or to factors of another rank, is refused by name.
  const auto attention_only = t2::ModelFactors::decompose(*model_, {}, {"blocks.0.attn.wq.weight"});
  try {
    experts.lifted_to(attention_only);
    FAIL() << "lifted to factors without the experts' matrices";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("adapt 'blocks.0.mlp.up.weight'"), std::string::npos)
        << e.what();
  }
  t2::SvdOptions truncated_options;
  truncated_options.energy_fraction = 0.5;
  const auto truncated = t2::ModelFactors::decompose(*model_, truncated_options, experts.matrices);
  EXPECT_THROW(experts.lifted_to(truncated), std::invalid_argument);
}

TEST_F(ShippedLM, ApplyAdaptationComposesThroughTheCacheIntoACopy) {
  const auto experts = two_experts();
  auto copy = t2::copy_model(*model_);
  const auto before = copy->blocks[1]->mlp.up.weight.to_vector();
  EXPECT_EQ(before, model_->blocks[1]->mlp.up.weight.to_vector());
  t2::WeightCache cache;
  blt::Adaptation a{7, "b", 0.9, {"b", "a"}, {1.0, 0.0}};
  const auto w = t2::apply_adaptation(a, experts, *factors_, cache, *copy);
  EXPECT_NE(copy->blocks[1]->mlp.up.weight.to_vector(), before);
  EXPECT_EQ(copy->blocks[1]->mlp.up.weight.to_vector(), w->matrices[2]);
  // The same α again (in another domain order): a cache hit, the same weights.
  blt::Adaptation again{8, "b", 0.9, {"a", "b"}, {0.0, 1.0}};
  const auto w2 = t2::apply_adaptation(again, experts, *factors_, cache, *copy);
  EXPECT_EQ(w.get(), w2.get());
  EXPECT_EQ(cache.stats().hits, 1u);
  // The base model itself is untouched.
  EXPECT_EQ(model_->blocks[1]->mlp.up.weight.to_vector(), before);
  blt::Adaptation unknown{9, "x", 0.5, {"x"}, {1.0}};
  EXPECT_THROW(t2::apply_adaptation(unknown, experts, *factors_, cache, *copy), std::out_of_range);
  blt::Adaptation nan{10, "a", 0.5, {"a", "b"}, {NAN, 0.0}};
  EXPECT_THROW(t2::apply_adaptation(nan, experts, *factors_, cache, *copy), std::invalid_argument);
}

TEST_F(ShippedLM, ExpertsFileRoundTripsAndRejectsCorruption) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("t2-experts-" + std::to_string(::getpid()));
  const auto file = dir / "experts.ckpt";
  const auto s = two_experts();
  s.save(file);
  const auto l = t2::ExpertSet::load(file);
  EXPECT_EQ(l.domains, s.domains);
  EXPECT_EQ(l.experts, s.experts);
  ASSERT_EQ(l.classes.size(), 2u);
  EXPECT_TRUE(l.classes[1].fewshot);
  EXPECT_EQ(l.classes[1].alpha, s.classes[1].alpha);
  EXPECT_EQ(l.classes[1].prototype, s.classes[1].prototype);
  EXPECT_EQ(l.provenance["command"], "test");
  l.check_compatible(*factors_);
  const auto mixed = l.mix({0.25, 0.75});
  EXPECT_NEAR(mixed[0][1], 0.25f * 1.0f + 0.75f * 1.1f, 1e-6);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x5a');
  }
  EXPECT_THROW(t2::ExpertSet::load(file), std::runtime_error);
  std::filesystem::remove_all(dir);
  t2::ModelFactors truncated = *factors_;
  truncated.factors[0].rank = 100;
  EXPECT_THROW(l.check_compatible(truncated), std::invalid_argument);
}

TEST_F(ShippedLM, TaskEmbeddingIsTheMeanFinalHiddenStateOverTheFirstPositions) {
  const std::string text = "int main(void) { return 0; }\n";
  const std::vector<std::uint8_t> bytes(text.begin(), text.end());
  const auto e = t2::task_embedding(*model_, bytes, 8);
  ASSERT_EQ(e.size(), 256u);
  std::vector<std::int32_t> tokens{blt::kBos};
  for (int i = 0; i < 7; ++i) tokens.push_back(bytes[i]);
  const auto h = model_->hidden(tokens, 1, 8).contiguous().to_vector();
  for (int j = 0; j < 256; j += 51) {
    double m = 0.0;
    for (int i = 0; i < 8; ++i) m += h[i * 256 + j];
    EXPECT_NEAR(e[j], m / 8, 1e-5);
  }
  EXPECT_THROW(t2::task_embedding(*model_, bytes, 257), std::invalid_argument);
}
