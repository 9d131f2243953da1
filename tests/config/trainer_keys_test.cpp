// The keys every trainer's `train:` block shares (config/optimizer_keys.hpp): declared once with
// the trainer's own defaults, read back into its option fields, validated like any key.
#include <gtest/gtest.h>

#include <cstdint>

#include "neat/config/optimizer_keys.hpp"
#include "neat/config/schema.hpp"

namespace neat::config {
namespace {

struct Options {
  double lr = 3e-3, min_lr = 1e-4, weight_decay = 0.01, clip = 1.0;
  std::int64_t warmup = 20;
  std::uint64_t seed = 7;
  int threads = 2;
};

Schema train_schema(Options& d) {
  Schema train = Schema::map();
  add_optimizer_keys(train, {d.lr, d.min_lr, d.warmup, d.weight_decay, d.clip}, 1);
  add_run_keys(train, {d.seed, d.threads});
  return Schema::map().optional("train", train, "optimisation");
}

TEST(TrainerKeys, ReadIntoTheOptionsAndKeepDefaultsForAbsentKeys) {
  Options d;
  const Schema schema = train_schema(d);
  const auto y = load_string("train: {lr: 0.001, seed: 42, threads: 0}\n", schema, "test.yaml");
  Options o;
  read_optimizer_keys(y["train"], {o.lr, o.min_lr, o.warmup, o.weight_decay, o.clip});
  read_run_keys(y["train"], {o.seed, o.threads});
  EXPECT_EQ(o.lr, 0.001);
  EXPECT_EQ(o.seed, 42u);
  EXPECT_EQ(o.threads, 0);
  EXPECT_EQ(o.min_lr, 1e-4);  // absent: the default stays
  EXPECT_EQ(o.warmup, 20);
  EXPECT_EQ(o.clip, 1.0);
}

TEST(TrainerKeys, RejectOutOfRangeValuesNamingTheKey) {
  Options d;
  const Schema schema = train_schema(d);
  for (const char* text : {"train: {threads: -1}\n", "train: {seed: -3}\n", "train: {lr: 5}\n"}) {
    try {
      load_string(text, schema, "bad.yaml");
      FAIL() << "accepted " << text;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("train."), std::string::npos) << e.what();
    }
  }
}

TEST(TrainerKeys, DeclaringTheRunKeysTwiceIsALogicError) {
  Options d;
  Schema train = Schema::map();
  add_run_keys(train, {d.seed, d.threads});
  EXPECT_THROW(add_run_keys(train, {d.seed, d.threads}), std::logic_error);
}

}  // namespace
}  // namespace neat::config
