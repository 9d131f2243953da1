// Checkpoints: bit-exact round trip, bf16 storage, and rejection of every corruption kind with
// the module left unchanged.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "neat/nn/checkpoint.hpp"

namespace neat::nn {
namespace {

TransformerConfig small_config(uint64_t seed) {
  TransformerConfig c;
  c.vocab_size = 13;
  c.dim = 8;
  c.layers = 2;
  c.heads = 2;
  c.mlp_hidden = 16;
  c.max_seq_len = 8;
  c.seed = seed;
  return c;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("neat-nn-ckpt-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  static std::string read_bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  static void write_bytes(const std::string& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  static std::vector<std::vector<float>> snapshot(const Module<float>& m) {
    std::vector<std::vector<float>> out;
    for (const auto& [name, p] : m.named_parameters()) out.push_back(p.to_vector());
    return out;
  }
  // Expects load to throw a CheckpointError whose message contains every fragment, and the
  // module to keep its values.
  static void expect_rejected(const std::string& file, const std::vector<std::string>& fragments) {
    TransformerLM<float> target(small_config(99));
    const auto before = snapshot(target);
    try {
      load_checkpoint(file, target);
      ADD_FAILURE() << "loading " << file << " did not throw";
    } catch (const CheckpointError& e) {
      for (const auto& f : fragments)
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    }
    EXPECT_EQ(snapshot(target), before);
  }

  std::filesystem::path dir_;
};

TEST_F(CheckpointTest, RoundTripIsBitExactAndReturnsConfig) {
  TransformerLM<float> source(small_config(1));
  save_checkpoint(path("a.ckpt"), source, "dim: 8\nlayers: 2\n");
  TransformerLM<float> target(small_config(2));
  ASSERT_NE(snapshot(source), snapshot(target));
  EXPECT_EQ(load_checkpoint(path("a.ckpt"), target), "dim: 8\nlayers: 2\n");
  const auto a = snapshot(source), b = snapshot(target);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)), 0);
  EXPECT_FALSE(std::filesystem::exists(path("a.ckpt.tmp")));
}

TEST_F(CheckpointTest, Bf16StorageLoadsWidenedToFloat) {
  TransformerLM<float> source(small_config(1));
  save_checkpoint(path("b.ckpt"), source, "", DType::bf16);
  TransformerLM<float> target(small_config(2));
  load_checkpoint(path("b.ckpt"), target);
  const auto a = snapshot(source), b = snapshot(target);
  for (std::size_t i = 0; i < a.size(); ++i)
    for (std::size_t j = 0; j < a[i].size(); ++j) {
      EXPECT_EQ(b[i][j], bf16_to_float(float_to_bf16(a[i][j])));
      EXPECT_NEAR(b[i][j], a[i][j], std::abs(a[i][j]) / 128 + 1e-30);
    }
  EXPECT_LT(std::filesystem::file_size(path("b.ckpt")),
            static_cast<std::uintmax_t>(source.parameter_count() * 3));
}

TEST_F(CheckpointTest, TruncatedFileIsRejected) {
  TransformerLM<float> source(small_config(1));
  save_checkpoint(path("t.ckpt"), source, "");
  const std::string bytes = read_bytes(path("t.ckpt"));
  write_bytes(path("t.ckpt"), bytes.substr(0, bytes.size() / 2));
  expect_rejected(path("t.ckpt"), {path("t.ckpt")});
}

TEST_F(CheckpointTest, FlippedByteIsRejectedByContentHash) {
  TransformerLM<float> source(small_config(1));
  save_checkpoint(path("f.ckpt"), source, "");
  std::string bytes = read_bytes(path("f.ckpt"));
  bytes[bytes.size() - 100] ^= 0x20;
  write_bytes(path("f.ckpt"), bytes);
  expect_rejected(path("f.ckpt"), {path("f.ckpt"), "hash mismatch"});
}

TEST_F(CheckpointTest, WrongShapeIsRejectedNamingTheTensor) {
  TransformerConfig c = small_config(1);
  c.mlp_hidden = 24;
  TransformerLM<float> source(c);
  save_checkpoint(path("s.ckpt"), source, "");
  expect_rejected(path("s.ckpt"), {path("s.ckpt"), "blocks.0.mlp.up.weight", "(24, 8)"});
}

TEST_F(CheckpointTest, MissingTensorIsRejectedNamingTheTensor) {
  TransformerLM<float> source(small_config(1));
  Checkpoint ck;
  for (const auto& [name, p] : source.named_parameters()) {
    if (name == "norm_f.weight") continue;
    CheckpointTensor t;
    t.name = name;
    t.shape = p.shape();
    const auto v = p.to_vector();
    t.data.resize(v.size() * 4);
    std::memcpy(t.data.data(), v.data(), t.data.size());
    ck.tensors.push_back(std::move(t));
  }
  write_checkpoint(path("m.ckpt"), ck);
  expect_rejected(path("m.ckpt"), {path("m.ckpt"), "norm_f.weight", "missing"});
}

TEST_F(CheckpointTest, WrongDtypeIsRejectedNamingTheTensor) {
  TransformerLM<double> source(small_config(1));
  save_checkpoint(path("d.ckpt"), source, "");
  expect_rejected(path("d.ckpt"), {path("d.ckpt"), "tok_emb.weight", "f64"});
}

TEST_F(CheckpointTest, GarbageFileIsRejected) {
  write_bytes(path("g.ckpt"), "this is not a checkpoint at all, just some text\n");
  expect_rejected(path("g.ckpt"), {path("g.ckpt")});
  expect_rejected(path("absent.ckpt"), {path("absent.ckpt"), "cannot open"});
  // An array header claiming 4 billion elements in a 5-byte file.
  write_bytes(path("huge.ckpt"), std::string("\xdd\xff\xff\xff\xff", 5));
  expect_rejected(path("huge.ckpt"), {path("huge.ckpt")});
}

}  // namespace
}  // namespace neat::nn
