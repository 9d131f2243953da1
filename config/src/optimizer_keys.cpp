// The optimizer keys shared by the training schemas (see optimizer_keys.hpp).
#include "neat/config/optimizer_keys.hpp"

#include <sstream>

namespace neat::config {
namespace {

template <typename T>
std::string text(T value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

}  // namespace

Schema& add_optimizer_keys(Schema& train, const OptimizerKeys& keys, double lr_max,
                           const std::string& of) {
  return train
      .optional("lr", Schema::number(0, lr_max).default_value(text(keys.lr)),
                "peak learning rate" + of)
      .optional("min_lr", Schema::number(0, lr_max).default_value(text(keys.min_lr)),
                "end of the cosine")
      .optional("warmup", Schema::integer(0, 100000000).default_value(text(keys.warmup)),
                "warm-up steps")
      .optional("weight_decay", Schema::number(0, 1).default_value(text(keys.weight_decay)),
                "AdamW decay" + of)
      .optional("clip", Schema::number(0, 1e6).default_value(text(keys.clip)),
                "global norm clip of the gradient" + of);
}

void read_optimizer_keys(const YAML::Node& train, const OptimizerKeys& keys) {
  if (train["lr"]) keys.lr = train["lr"].as<double>();
  if (train["min_lr"]) keys.min_lr = train["min_lr"].as<double>();
  if (train["warmup"]) keys.warmup = train["warmup"].as<std::int64_t>();
  if (train["weight_decay"]) keys.weight_decay = train["weight_decay"].as<double>();
  if (train["clip"]) keys.clip = train["clip"].as<double>();
}

Schema& add_run_keys(Schema& train, const RunKeys& keys) {
  return train
      .optional("seed", Schema::integer(0, 1ll << 62).default_value(text(keys.seed)), "random seed")
      .optional("threads", Schema::integer(0, 4096).default_value(text(keys.threads)),
                "BLAS threads (0: all usable cores)");
}

void read_run_keys(const YAML::Node& train, const RunKeys& keys) {
  if (train["seed"]) keys.seed = train["seed"].as<std::uint64_t>();
  if (train["threads"]) keys.threads = train["threads"].as<int>();
}

}  // namespace neat::config
