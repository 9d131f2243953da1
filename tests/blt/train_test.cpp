// train_byte_lm on a tiny synthetic corpus prepared in the test: the resumed run continues
// exactly (weights, AdamW moments, schedule, batches), the CSV log and progress lines, and the
// loss-curve PNG when gnuplot is installed.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "neat/blt/byte_lm.hpp"
#include "neat/data/corpus.hpp"
#include "neat/nn/checkpoint.hpp"

namespace neat::blt {
namespace {

namespace fs = std::filesystem;

class ByteLMTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("neat-blt-train-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    // Synthetic sentences from a small vocabulary, 40 files of about 600 bytes.
    const std::vector<std::string> words = {"the",   "byte",  "patch", "entropy", "model",
                                            "reads", "every", "next",  "token",   "and",
                                            "cuts",  "where", "it",    "is",      "hard"};
    std::mt19937_64 rng(5);
    fs::create_directories(dir_ / "src");
    for (int f = 0; f < 40; ++f) {
      std::ofstream out(dir_ / "src" / ("doc" + std::to_string(f) + ".txt"));
      std::size_t bytes = 0;
      while (bytes < 600) {
        std::string sentence;
        for (int w = 0; w < 8; ++w) sentence += words[rng() % words.size()] + (w < 7 ? " " : ".\n");
        out << sentence;
        bytes += sentence.size();
      }
    }
    data::PrepareOptions p;
    data::DomainSource s;
    s.domain = "en";
    s.package = "none (synthetic, written by this test)";
    s.roots = {dir_ / "src"};
    p.sources = {s};
    p.output_dir = dir_ / "corpus";
    p.max_document_bytes = 4096;
    p.min_document_bytes = 256;
    data::prepare_corpus(p);
  }
  void TearDown() override { fs::remove_all(dir_); }

  ByteLMTrainOptions options(const std::string& out) const {
    ByteLMTrainOptions o;
    o.model.vocab_size = kFirstImageCode + 8;
    o.model.dim = 16;
    o.model.layers = 1;
    o.model.heads = 2;
    o.model.mlp_hidden = 32;
    o.model.max_seq_len = 16;
    o.model.seed = 3;
    o.steps = 12;
    o.batch = 2;
    o.warmup = 2;
    o.eval_every = 4;
    o.eval_bytes = 512;
    o.threads = 1;
    o.corpus = dir_ / "corpus";
    o.domains = {"en"};
    o.out_dir = dir_ / out;
    return o;
  }

  fs::path dir_;
};

std::vector<float> weights(const fs::path& ckpt) {
  std::vector<float> all;
  for (const auto& [name, p] : load_byte_lm(ckpt)->named_parameters()) {
    const auto v = p.to_vector();
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

std::vector<std::string> lines(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST_F(ByteLMTraining, ResumingHalfwayContinuesExactlyAsOneRun) {
  std::ostringstream one_progress;
  const auto one = train_byte_lm(options("one"), one_progress);
  EXPECT_EQ(one.steps, 12);

  // Two sessions of 6 steps (a stop between validations at step 6, not a multiple of 4).
  auto first = options("two");
  first.stop_after = 6;
  std::ostringstream p1, p2;
  EXPECT_EQ(train_byte_lm(first, p1).steps, 6);
  ASSERT_TRUE(fs::exists(dir_ / "two" / "optimizer.ckpt"));
  const auto second = train_byte_lm(options("two"), p2, /*resume=*/true);
  EXPECT_NE(p2.str().find("resumed from"), std::string::npos);
  EXPECT_NE(p2.str().find("optimizer.ckpt at step 6"), std::string::npos) << p2.str();

  EXPECT_EQ(weights(dir_ / "one" / "byte_lm.ckpt"), weights(dir_ / "two" / "byte_lm.ckpt"))
      << "weights after 12 steps differ between one run and 6 + 6 resumed";
  EXPECT_EQ(one.final_train_loss, second.final_train_loss);
  EXPECT_EQ(one.val_bits_per_byte, second.val_bits_per_byte);
  // The optimizer state is the same too.
  const auto a = nn::read_checkpoint((dir_ / "one" / "optimizer.ckpt").string());
  const auto b = nn::read_checkpoint((dir_ / "two" / "optimizer.ckpt").string());
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (std::size_t i = 0; i < a.tensors.size(); ++i)
    EXPECT_EQ(a.tensors[i].data, b.tensors[i].data);
  EXPECT_EQ(a.config, b.config);
  // And the log: the same step column (rows of 10 and 12 and the validations 4, 8, 12; the
  // stop at 6 adds its own row in the two-session log).
  auto column = [](const std::vector<std::string>& rows) {
    std::vector<std::string> steps;
    for (const auto& r : rows) steps.push_back(r.substr(0, r.find(',')));
    return steps;
  };
  const auto log_one = column(lines(dir_ / "one" / "train_log.csv"));
  EXPECT_EQ(log_one, (std::vector<std::string>{"step", "4", "8", "10", "12"}));
  EXPECT_EQ(column(lines(dir_ / "two" / "train_log.csv")),
            (std::vector<std::string>{"step", "4", "6", "8", "10", "12"}));
}

TEST_F(ByteLMTraining, ProgressLinesAndTheLossCurve) {
  std::ostringstream progress;
  train_byte_lm(options("plot"), progress);
  // Not a terminal: plain lines with step/total, loss, bits, tokens/s and ETA.
  const auto text = progress.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_NE(text.find("step 12/12  loss "), std::string::npos) << text;
  EXPECT_NE(text.find("tok/s "), std::string::npos);
  EXPECT_NE(text.find("ETA 0:00"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir_ / "plot" / "train_log.csv"));
  if (::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    EXPECT_NE(text.find("loss_curve.png skipped: gnuplot is not on PATH"), std::string::npos);
    GTEST_SKIP() << "gnuplot is not installed (Debian package gnuplot-nox): no PNG to check";
  }
  const auto png = dir_ / "plot" / "loss_curve.png";
  ASSERT_TRUE(fs::exists(png)) << text;
  std::ifstream in(png, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  EXPECT_GT(fs::file_size(png), 1000u);
}

}  // namespace
}  // namespace neat::blt
