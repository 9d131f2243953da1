// `neat train t2` on a tiny synthetic two-domain corpus with the shipped byte LM: experts over
// every matrix (decomposition.matrices: all) trained in two runs over disjoint domains, then
// merged (--merge) into one set with the dispatch, a later stage overriding a domain; the merge's
// refusals (a domain no part has or outside the config, a part trained on another base model); the
// warm start of z from an earlier run (train.init).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "neat/blt/byte_lm.hpp"
#include "neat/data/corpus.hpp"
#include "neat/t2/train.hpp"

using namespace neat;
namespace fs = std::filesystem;

namespace {

class TrainMerge : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("neat-t2-merge-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    // Two domains of about 600-byte files: English-like sentences and C-like lines.
    std::mt19937_64 rng(11);
    const std::vector<std::string> words = {"the", "memory", "reads", "every", "patch", "and"};
    const std::vector<std::string> lines = {"int x = 0;", "return y;", "x += 1;", "if (x) {", "}"};
    data::PrepareOptions p;
    p.sources.clear();
    for (const auto& [domain, vocab, sep] :
         {std::tuple{std::string("en"), words, std::string(" ")},
          std::tuple{std::string("c"), lines, std::string("\n")}}) {
      const auto src = dir_ / ("src-" + domain);
      fs::create_directories(src);
      for (int f = 0; f < 30; ++f) {
        std::ofstream out(src / ("doc" + std::to_string(f) + ".txt"));
        for (std::size_t bytes = 0; bytes < 600;) {
          const auto& w = vocab[rng() % vocab.size()];
          out << w << sep;
          bytes += w.size() + sep.size();
        }
      }
      data::DomainSource s;
      s.domain = domain;
      s.package = "none (synthetic, written by this test)";
      s.roots = {src};
      p.sources.push_back(s);
    }
    p.output_dir = dir_ / "corpus";
    p.max_document_bytes = 4096;
    p.min_document_bytes = 256;
    data::prepare_corpus(p);
  }
  void TearDown() override { fs::remove_all(dir_); }

  t2::T2TrainOptions options(std::vector<std::string> domains, const std::string& out) const {
    t2::T2TrainOptions o;
    o.base_model = std::string(NEAT_SOURCE_DIR) + "/models/blt/byte_lm.bf16.ckpt";
    o.corpus = dir_ / "corpus";
    o.domains = std::move(domains);
    o.matrices = t2::MatrixSet::kAll;
    o.steps = 2;
    o.batch = 2;
    o.seq_len = 16;
    o.warmup = 1;
    o.eval_bytes = 256;
    o.threads = 1;
    o.embedding_positions = 32;
    o.prototype_documents = 4;
    o.prototypes_per_class = {1};
    o.whitening_shrinkage = {};
    o.fewshot_domains = {};
    o.out_dir = dir_ / out;
    return o;
  }

  fs::path dir_;
};

}  // namespace

TEST_F(TrainMerge, ExpertsOfTwoRunsMergeIntoOneSetWithTheDispatch) {
  std::ostringstream progress;
  t2::train_experts(options({"en"}, "a"), progress, "test a", "");
  t2::train_experts(options({"c"}, "b"), progress, "test b", "");
  const auto a = t2::ExpertSet::load(dir_ / "a" / "experts.ckpt");
  const auto b = t2::ExpertSet::load(dir_ / "b" / "experts.ckpt");
  ASSERT_EQ(a.matrices.size(), 24u);
  EXPECT_EQ(a.matrices.front(), "blocks.0.attn.wq.weight");
  // Two AdamW steps moved z away from 1.
  double moved = 0.0;
  for (const auto& v : a.experts.at(0))
    for (float x : v) moved = std::max(moved, std::abs(double(x) - 1.0));
  EXPECT_GT(moved, 1e-4);

  const auto prov = t2::merge_experts(options({"en", "c"}, "m"),
                                      {dir_ / "a" / "experts.ckpt", dir_ / "b" / "experts.ckpt"},
                                      progress, "test merge", "");
  const auto m = t2::ExpertSet::load(dir_ / "m" / "experts.ckpt");
  EXPECT_EQ(m.domains, (std::vector<std::string>{"en", "c"}));
  EXPECT_EQ(m.matrices, a.matrices);
  EXPECT_EQ(m.experts.at(0), a.experts.at(0));
  EXPECT_EQ(m.experts.at(1), b.experts.at(0));
  ASSERT_EQ(m.classes.size(), 2u);
  EXPECT_EQ(m.classes[0].alpha, (std::vector<double>{1.0, 0.0}));
  EXPECT_EQ(m.classes[1].alpha, (std::vector<double>{0.0, 1.0}));
  EXPECT_TRUE(m.has_multi_prototypes());
  ASSERT_EQ(prov["parts"].size(), 2u);
  EXPECT_EQ(prov["parts"][1]["command"], "test b");
  EXPECT_TRUE(prov["scores"].contains("en") && prov["scores"].contains("c"));
  EXPECT_EQ(prov["matrices"], "all");

  // A later part overrides an earlier one's domain (training stages); a domain no part has, a
  // part's domain outside the config's, and a part trained on another base model are refused.
  auto later = a;
  for (auto& v : later.experts[0])
    for (auto& x : v) x += 0.25f;
  later.save(dir_ / "later.ckpt");
  const auto staged = t2::merge_experts(
      options({"en", "c"}, "staged"),
      {dir_ / "a" / "experts.ckpt", dir_ / "b" / "experts.ckpt", dir_ / "later.ckpt"}, progress,
      "test stages", "");
  const auto s = t2::ExpertSet::load(dir_ / "staged" / "experts.ckpt");
  EXPECT_EQ(s.experts.at(0), later.experts.at(0));
  EXPECT_EQ(s.experts.at(1), b.experts.at(0));
  EXPECT_EQ(staged["domain_sources"]["en"], (dir_ / "later.ckpt").string());

  // Expert strengths: each domain's alpha = s e_k, s the strength with the lowest validation
  // bits per byte of z' = 1 + s (z_k - 1) among those tried (s = 0 is the base LM).
  auto scaled_options = options({"en", "c"}, "scaled");
  scaled_options.expert_scales = {0.0, 1.0, 1.5};
  const auto scaled =
      t2::merge_experts(scaled_options, {dir_ / "a" / "experts.ckpt", dir_ / "b" / "experts.ckpt"},
                        progress, "test scales", "");
  const auto sc = t2::ExpertSet::load(dir_ / "scaled" / "experts.ckpt");
  for (std::size_t d = 0; d < 2; ++d) {
    const auto& record = scaled["expert_scales"][sc.domains[d]];
    const double chosen = record["scale"];
    EXPECT_EQ(sc.classes[d].alpha[d], chosen);
    EXPECT_EQ(sc.classes[d].alpha[1 - d], 0.0);
    double best = 1e9;
    for (const auto& [s_text, bpb] : record["val_bits_per_byte"].items())
      best = std::min(best, bpb.get<double>());
    EXPECT_EQ(record["val_bits_per_byte"][std::to_string(chosen)].get<double>(), best);
    EXPECT_EQ(record["val_bits_per_byte"].size(), 3u);
  }
  // dispatch.refine: each listed domain's alpha from a CEM over real weights started at e_k,
  // kept only below the start's validation bits per byte; a domain without an expert is refused.
  auto refine_options = options({"en", "c"}, "refined");
  refine_options.refine_domains = {"c"};
  refine_options.refine_cem.population = 4;
  refine_options.refine_cem.iterations = 2;
  const auto refined =
      t2::merge_experts(refine_options, {dir_ / "a" / "experts.ckpt", dir_ / "b" / "experts.ckpt"},
                        progress, "test refine", "");
  const auto rf = t2::ExpertSet::load(dir_ / "refined" / "experts.ckpt");
  const auto& rec = refined["refine"]["c"];
  EXPECT_EQ(rec["start_alpha"], (std::vector<double>{0.0, 1.0}));
  EXPECT_EQ(rec["cem_evaluations"], 8);
  EXPECT_LE(rec["val_bits_per_byte"].get<double>(), rec["val_bits_per_byte_start"].get<double>());
  const auto rec_alpha = rec["alpha"].get<std::vector<double>>();  // the file keeps f32
  ASSERT_EQ(rf.classes[1].alpha.size(), 2u);
  for (std::size_t k = 0; k < 2; ++k) EXPECT_NEAR(rf.classes[1].alpha[k], rec_alpha[k], 1e-6);
  if (rec["val_bits_per_byte"].get<double>() == rec["val_bits_per_byte_start"].get<double>())
    EXPECT_EQ(rf.classes[1].alpha, (std::vector<double>{0.0, 1.0}));
  else
    EXPECT_NE(rf.classes[1].alpha, (std::vector<double>{0.0, 1.0}));
  EXPECT_EQ(rf.classes[0].alpha, (std::vector<double>{1.0, 0.0}));  // en not listed
  EXPECT_FALSE(refined["refine"].contains("en"));
  auto refine_unknown = options({"en", "c"}, "refined-bad");
  refine_unknown.refine_domains = {"es"};
  try {
    t2::merge_experts(refine_unknown, {dir_ / "a" / "experts.ckpt", dir_ / "b" / "experts.ckpt"},
                      progress, "", "");
    FAIL() << "a domain without an expert was refined";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("refine: 'es' is not an expert domain"), std::string::npos)
        << e.what();
  }
  try {
    t2::merge_experts(options({"en", "c"}, "missing"), {dir_ / "a" / "experts.ckpt"}, progress, "",
                      "");
    FAIL() << "a domain without an expert was merged";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no part has an expert for 'c'"), std::string::npos)
        << e.what();
  }
  try {
    t2::merge_experts(options({"en"}, "extra"),
                      {dir_ / "a" / "experts.ckpt", dir_ / "b" / "experts.ckpt"}, progress, "", "");
    FAIL() << "a domain outside the config was merged";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("domain 'c' is not in the config's domains"),
              std::string::npos)
        << e.what();
  }
  auto other = b;
  other.provenance["base_model_sha256"] = "0123";
  other.save(dir_ / "other.ckpt");
  try {
    t2::merge_experts(options({"en", "c"}, "bad"),
                      {dir_ / "a" / "experts.ckpt", dir_ / "other.ckpt"}, progress, "", "");
    FAIL() << "a part of another base model was merged";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("other.ckpt: trained on base model sha256 '0123'"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(TrainMerge, ExpertsOverAllMatricesContinueAndMergeOverAllPlusHead) {
  // A domain continued with lm_head adapted as well (init from an "all" run: its z, and 1 for
  // lm_head), then merged with an "all" part into an all+head file: the "all" expert gets z = 1
  // for lm_head and keeps its other z exactly.
  std::ostringstream progress;
  t2::train_experts(options({"en"}, "a"), progress, "test a", "");
  t2::train_experts(options({"c"}, "b"), progress, "test b", "");
  auto o = options({"c"}, "b-head");
  o.matrices = t2::MatrixSet::kAllHead;
  o.init = dir_ / "b" / "experts.ckpt";
  t2::train_experts(o, progress, "test b head", "");
  const auto a = t2::ExpertSet::load(dir_ / "a" / "experts.ckpt");
  const auto bh = t2::ExpertSet::load(dir_ / "b-head" / "experts.ckpt");
  ASSERT_EQ(bh.matrices.size(), 25u);
  EXPECT_EQ(bh.matrices.back(), "lm_head.weight");
  double head_moved = 0.0;
  for (float x : bh.experts.at(0).back()) head_moved = std::max(head_moved, std::abs(x - 1.0));
  EXPECT_GT(head_moved, 1e-4);  // the two steps trained lm_head's singular values too

  auto merge = options({"en", "c"}, "m-head");
  merge.matrices = t2::MatrixSet::kAllHead;
  t2::merge_experts(merge, {dir_ / "a" / "experts.ckpt", dir_ / "b-head" / "experts.ckpt"},
                    progress, "test merge head", "");
  const auto m = t2::ExpertSet::load(dir_ / "m-head" / "experts.ckpt");
  EXPECT_EQ(m.matrices, bh.matrices);
  ASSERT_EQ(m.experts.size(), 2u);
  for (std::size_t k = 0; k < 24; ++k) EXPECT_EQ(m.experts[0][k], a.experts[0][k]);
  EXPECT_EQ(m.experts[0][24], std::vector<float>(m.experts[0][24].size(), 1.0f));
  EXPECT_EQ(m.experts[1], bh.experts[0]);

  // An all+head part does not fit a merge over "all": refused, naming the file and the matrix.
  try {
    t2::merge_experts(options({"en", "c"}, "m-bad"),
                      {dir_ / "a" / "experts.ckpt", dir_ / "b-head" / "experts.ckpt"}, progress, "",
                      "");
    FAIL() << "an all+head part was merged over all";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("b-head/experts.ckpt"), std::string::npos) << what;
    EXPECT_NE(what.find("'lm_head.weight'"), std::string::npos) << what;
  }
}

TEST_F(TrainMerge, AverageLastMakesTheExpertTheMeanOfTheLastIterates) {
  // A constant learning rate: a 1-step run stops at the 2-step run's first iterate z_1 (same
  // seed, same windows); averaging the last 2 of 2 steps gives (z_1 + z_2) / 2.
  std::ostringstream progress;
  auto o = options({"en"}, "one");
  o.lr = o.min_lr = 0.01;
  o.warmup = 0;
  o.steps = 1;
  t2::train_experts(o, progress, "test one", "");
  o.steps = 2;
  o.out_dir = dir_ / "two";
  t2::train_experts(o, progress, "test two", "");
  o.average_last = 1.0;
  o.out_dir = dir_ / "mean";
  t2::train_experts(o, progress, "test mean", "");
  const auto z1 = t2::ExpertSet::load(dir_ / "one" / "experts.ckpt").experts.at(0);
  const auto z2 = t2::ExpertSet::load(dir_ / "two" / "experts.ckpt").experts.at(0);
  const auto mean = t2::ExpertSet::load(dir_ / "mean" / "experts.ckpt").experts.at(0);
  ASSERT_EQ(mean.size(), z1.size());
  double step_apart = 0.0;
  for (std::size_t m = 0; m < z1.size(); ++m) {
    for (std::size_t r = 0; r < z1[m].size(); ++r) {
      ASSERT_NEAR(mean[m][r], 0.5 * (double(z1[m][r]) + double(z2[m][r])), 1e-6) << m << "," << r;
      step_apart = std::max(step_apart, std::abs(double(z2[m][r]) - double(z1[m][r])));
    }
  }
  EXPECT_GT(step_apart, 1e-4);  // the two iterates differ: the mean is neither of them
  EXPECT_NE(progress.str().find("mean z of the last 2 steps"), std::string::npos);
}

TEST_F(TrainMerge, EvaluateScoresTheWholeSplitAndJudgesIdentificationOverAllDocuments) {
  // `neat t2 eval` on the merged experts: by default every byte of the split; the overall
  // identification accuracy is the target, each class's accuracy is reported beside it.
  std::ostringstream progress;
  t2::train_experts(options({"en"}, "a"), progress, "test a", "");
  t2::train_experts(options({"c"}, "b"), progress, "test b", "");
  t2::merge_experts(options({"en", "c"}, "m"),
                    {dir_ / "a" / "experts.ckpt", dir_ / "b" / "experts.ckpt"}, progress, "", "");
  t2::T2EvalOptions e;
  e.experts = dir_ / "m" / "experts.ckpt";
  e.base_model = std::string(NEAT_SOURCE_DIR) + "/models/blt/byte_lm.bf16.ckpt";
  e.corpus = dir_ / "corpus";
  e.split = "val";
  e.embedding_positions = 32;
  ASSERT_EQ(e.eval_bytes, 0u);  // the whole split by default
  const auto whole = t2::evaluate(e, progress);
  const auto manifest = data::load_manifest(dir_ / "corpus");
  const auto base = blt::load_byte_lm(e.base_model);
  bool every_bpb = true;
  for (const std::string domain : {"en", "c"}) {
    std::vector<std::vector<std::uint8_t>> docs;
    for (auto& d : data::load_split(manifest, domain, data::Split::kVal))
      docs.push_back(std::move(d.bytes));
    const auto& r = whole["domains"][domain];
    EXPECT_EQ(r["documents"], docs.size());
    EXPECT_DOUBLE_EQ(r["bits_per_byte_base"].get<double>(), blt::bits_per_byte(*base, docs, 0));
    EXPECT_EQ(r["target_bits_per_byte_met"], r["bits_per_byte_expert"].get<double>() <=
                                                 0.98 * r["bits_per_byte_base"].get<double>());
    EXPECT_EQ(r["id_accuracy_at_least_0_95"], r["id_accuracy"].get<double>() >= 0.95);
    every_bpb = every_bpb && r["target_bits_per_byte_met"].get<bool>();
  }
  const double id = whole["id_accuracy_overall"];
  EXPECT_EQ(whole["target_id_met"], id >= 0.95);
  EXPECT_EQ(whole["all_targets_met"], every_bpb && id >= 0.95);
  // A prefix of 256 bytes per domain scores other bytes.
  e.eval_bytes = 256;
  const auto prefix = t2::evaluate(e, progress);
  EXPECT_EQ(prefix["eval_bytes_per_domain"], 256u);
  EXPECT_NE(prefix["domains"]["en"]["bits_per_byte_base"].get<double>(),
            whole["domains"]["en"]["bits_per_byte_base"].get<double>());
}

TEST_F(TrainMerge, InitStartsEachDomainFromTheZOfAnEarlierRun) {
  std::ostringstream progress;
  t2::train_experts(options({"en"}, "a"), progress, "test a", "");
  const auto a = t2::ExpertSet::load(dir_ / "a" / "experts.ckpt");
  // A vanishing learning rate: the warm-started z stays where the earlier run left it.
  auto o = options({"en"}, "warm");
  o.init = dir_ / "a" / "experts.ckpt";
  o.lr = 1e-12;
  o.min_lr = 1e-12;
  t2::train_experts(o, progress, "test warm", "");
  const auto warm = t2::ExpertSet::load(dir_ / "warm" / "experts.ckpt");
  ASSERT_EQ(warm.experts.at(0).size(), a.experts.at(0).size());
  double moved_from_one = 0.0;
  for (std::size_t m = 0; m < a.experts[0].size(); ++m) {
    for (std::size_t r = 0; r < a.experts[0][m].size(); ++r) {
      ASSERT_NEAR(warm.experts[0][m][r], a.experts[0][m][r], 1e-6) << m << "," << r;
      moved_from_one = std::max(moved_from_one, std::abs(double(a.experts[0][m][r]) - 1.0));
    }
  }
  EXPECT_GT(moved_from_one, 1e-4);
  EXPECT_NE(progress.str().find("z starts from"), std::string::npos);
  // A domain the init file has no expert for is refused by name.
  auto c = options({"c"}, "warm-c");
  c.init = dir_ / "a" / "experts.ckpt";
  try {
    t2::train_experts(c, progress, "test warm c", "");
    FAIL() << "warm start from a file without the domain";
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string(e.what()).find("no expert for domain 'c'"), std::string::npos)
        << e.what();
  }
}
