// `neat train titans` options: the shipped config loads with its values, `init` (warm start
// from a MAG checkpoint) is read, and a warm start whose shapes do not match the config is
// rejected with an error naming both, before any corpus is read; copy values (`values: bytes`)
// need `offsets`.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "neat/titans/train.hpp"

using namespace neat;
namespace fs = std::filesystem;

namespace {

fs::path write_config(const std::string& name, const std::string& text) {
  const fs::path dir = fs::temp_directory_path() / "neat_titans_train_options";
  fs::create_directories(dir);
  const fs::path file = dir / name;
  std::ofstream(file) << text;
  return file;
}

}  // namespace

TEST(TitansTrainOptions, ShippedConfigLoads) {
  const auto o =
      titans::TitansTrainOptions::load(fs::path(NEAT_SOURCE_DIR) / "configs/train/titans.yaml");
  EXPECT_EQ(o.memory.dim, 128);
  EXPECT_EQ(o.memory.chunk, 8);
  EXPECT_EQ(o.layer, 2);
  EXPECT_GT(o.repeat_probability, 0.0);
  EXPECT_NO_THROW(o.memory.validate());
}

TEST(TitansTrainOptions, WarmStartWithOtherShapesIsRejected) {
  const std::string model = std::string(NEAT_SOURCE_DIR) + "/models/titans/mag.ckpt";
  const auto file = write_config("init.yaml", "base_model: " + std::string(NEAT_SOURCE_DIR) +
                                                  "/models/blt/byte_lm.bf16.ckpt\n"
                                                  "corpus: /nonexistent/corpus\n"
                                                  "init: " +
                                                  model +
                                                  "\n"
                                                  "memory: {dim: 64, chunk: 8}\n"
                                                  "train: {steps: 1, threads: 1}\n");
  const auto o = titans::TitansTrainOptions::load(file);
  EXPECT_EQ(o.init_model, fs::path(model));
  std::ostringstream progress;
  try {
    titans::train_titans(o, progress);
    FAIL() << "a warm start from the shipped model into d = 64 must be rejected";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    const auto shipped = titans::load_mag_model(model);
    EXPECT_NE(what.find("init"), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(shipped.memory_config.dim)), std::string::npos) << what;
    EXPECT_NE(what.find("64"), std::string::npos) << what;
  }
}

TEST(TitansTrainOptions, CopyValuesConfigLoadsAndNeedsOffsets) {
  const auto o = titans::TitansTrainOptions::load(fs::path(NEAT_SOURCE_DIR) /
                                                  "models/titans/finetune_copy.yaml");
  EXPECT_TRUE(o.byte_values);
  EXPECT_EQ(o.offsets, 8);
  const auto plain =
      titans::TitansTrainOptions::load(fs::path(NEAT_SOURCE_DIR) / "configs/train/titans.yaml");
  EXPECT_FALSE(plain.byte_values);
  EXPECT_EQ(plain.offsets, 0);
  EXPECT_THROW(titans::TitansTrainOptions::load(write_config("bytes.yaml", "values: bytes\n")),
               config::ConfigError);
  EXPECT_THROW(titans::TitansTrainOptions::load(write_config("kind.yaml", "values: words\n")),
               config::ConfigError);
}
