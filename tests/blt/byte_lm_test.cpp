// The byte LM's entropies: uniform model, stream (KV cache) vs batch, batch independence,
// bits per byte.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/patcher.hpp"
#include "neat/nn/checkpoint.hpp"
#include "neat/nn/ops.hpp"

namespace neat::blt {
namespace {

nn::TransformerConfig small_config(std::int64_t context = 16) {
  nn::TransformerConfig c;
  c.vocab_size = kFirstImageCode + 16;
  c.dim = 32;
  c.layers = 2;
  c.heads = 4;
  c.mlp_hidden = 64;
  c.max_seq_len = context;
  c.seed = 7;
  return c;
}

std::vector<std::int32_t> some_tokens(std::size_t n) {
  std::vector<std::uint8_t> bytes;
  const std::string text = "The quick brown fox jumps over the lazy dog; 0123456789.";
  for (std::size_t i = 0; bytes.size() + 2 < n; ++i)
    bytes.push_back(static_cast<std::uint8_t>(text[i % text.size()]));
  return document_tokens(bytes);
}

TEST(ByteLM, UniformNextTokenDistributionHasEntropyLnV) {
  nn::TransformerLM<float> model(small_config());
  std::fill_n(model.lm_head.weight.data(), model.lm_head.weight.numel(), 0.0f);
  if (model.lm_head.bias.defined())
    std::fill_n(model.lm_head.bias.data(), model.lm_head.bias.numel(), 0.0f);
  const auto h = next_token_entropies(model, some_tokens(20));
  const double ln_v = std::log(static_cast<double>(model.config().vocab_size));
  for (double x : h) EXPECT_NEAR(x, ln_v, 1e-5);
  // and a uniform model codes every byte in log2(V) bits
  EXPECT_NEAR(bits_per_byte(model, {{'a', 'b', 'c'}}), std::log2(double(model.config().vocab_size)),
              1e-5);
}

TEST(ByteLM, StreamWithKvCacheEqualsBatchEntropies) {
  nn::TransformerLM<float> model(small_config(16));
  const auto tokens = some_tokens(45);  // crosses two context restarts
  const auto stream = next_token_entropies(model, tokens);
  const auto batch = next_token_entropies_batch(model, tokens);
  ASSERT_EQ(stream.size(), tokens.size());
  ASSERT_EQ(batch.size(), tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) EXPECT_NEAR(stream[i], batch[i], 1e-4) << i;
}

TEST(ByteLM, PatchingASequenceAloneEqualsPatchingItInsideABatch) {
  nn::TransformerLM<float> model(small_config(32));
  const auto tokens = some_tokens(30);
  const auto n = static_cast<std::int64_t>(tokens.size());
  nn::NoGradGuard no_grad;
  auto one = model.forward(tokens, 1, n).clone();
  std::vector<std::int32_t> three;
  for (int i = 0; i < 3; ++i) three.insert(three.end(), tokens.begin(), tokens.end());
  auto batch = model.forward(three, 3, n).clone();
  const auto per = one.numel();
  for (int b = 0; b < 3; ++b) {
    for (std::int64_t i = 0; i < per; ++i) {
      ASSERT_NEAR(batch.data()[b * per + i], one.data()[i], 1e-4) << "batch " << b;
    }
  }
  // and so are its patches
  PatcherOptions o;
  o.threshold = 3.0;
  const auto h = next_token_entropies_batch(model, tokens);
  EXPECT_EQ(patch_starts(h, {}, o), patch_starts(next_token_entropies(model, tokens), {}, o));
}

}  // namespace
}  // namespace neat::blt

namespace neat::blt {
namespace {

std::string run_neat(const std::string& args) {
  FILE* pipe = ::popen((std::string(NEAT_BINARY) + " " + args + " 2>/dev/null").c_str(), "r");
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  EXPECT_EQ(::pclose(pipe), 0) << args;
  return out;
}

TEST(ByteLMCheckpoint, EvalAndPatchCommandsUseASavedModel) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("neat-blt-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto ckpt = (dir / "byte_lm.ckpt").string();
  auto c = small_config(32);
  nn::TransformerLM<float> model(c);
  nn::save_checkpoint(ckpt, model, model_config_json(c).dump());
  auto loaded = load_byte_lm(ckpt);
  const auto tokens = some_tokens(50);
  EXPECT_EQ(next_token_entropies(*loaded, tokens), next_token_entropies(model, tokens));

  const auto file = dir / "text.txt";
  std::ofstream(file) << "Entropy patching cuts bytes where the next one is hard to predict.";
  const auto size = std::filesystem::file_size(file);
  auto patch = nlohmann::json::parse(run_neat("blt patch --model " + ckpt + " " + file.string()));
  std::size_t total = 0;
  for (const auto& s : patch["spans"]) total += s["length"].get<std::size_t>();
  EXPECT_EQ(total, size + 2) << "BOS, the bytes and EOS are all in some patch";
  EXPECT_EQ(patch["entropies"].size(), size + 2);

  const auto table = run_neat("eval --base-only --model " + ckpt + " " + file.string());
  EXPECT_NE(table.find("| byte LM | xz -9e | bzip2 -9 | zstd -19 |"), std::string::npos);
  EXPECT_NE(table.find(file.string()), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace neat::blt
