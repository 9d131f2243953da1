// `neat train titans` (Titans memory + MAG injection on the frozen byte LM, Behrouz et al.
// 2024) and `neat titans eval` (bits per byte with test-time memory vs memory frozen at M_0).
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "neat/titans/train.hpp"

namespace neat::cli {

CommandRunner add_titans_commands(const CommandParents& parents) {
  auto config = std::make_shared<std::string>((config_dir() / "train/titans.yaml").string());
  auto* train = parents.train.add_subcommand(
      "titans", "train the Titans memory and its MAG injection on the frozen byte LM");
  train->add_option("--config", *config, "training YAML")->capture_default_str();

  auto e = std::make_shared<titans::TitansEvalOptions>();
  e->model = source_path("models/titans/mag_ngram.ckpt");
  e->base_model = source_path("models/blt/byte_lm.bf16.ckpt");
  auto* cmd = parents.app.add_subcommand("titans", "Titans memory tools");
  auto* eval = cmd->add_subcommand(
      "eval", "bits per byte with test-time memory vs memory frozen at M_0 (long documents)");
  eval->add_option("--model", e->model, "MAG model of neat train titans")->capture_default_str();
  eval->add_option("--base-model", e->base_model, "frozen byte LM")->capture_default_str();
  eval->add_option("--corpus", e->corpus, "prepared corpus")->capture_default_str();
  eval->add_option("--split", e->split, "train, val or test")->capture_default_str();
  eval->add_option("--domains", e->domains, "domains")->capture_default_str();
  eval->add_option("--min-bytes", e->min_document_bytes, "only documents at least this long")
      ->capture_default_str();
  eval->add_option("--max-documents", e->max_documents, "per domain; 0: all")
      ->capture_default_str();
  eval->add_flag("--repeat", e->repeat, "also a document repeated twice in one stream");
  eval->add_flag("--repeat-only", e->repeat_only,
                 "only the repeated-document test (implies --repeat; no per-domain documents)");
  eval->add_option("--repeat-bytes", e->repeat_bytes, "length of the repeated copy")
      ->capture_default_str();
  eval->add_option("--threads", e->threads, "BLAS threads")->capture_default_str();

  return [train, cmd, eval, config, e]() -> std::optional<int> {
    if (*train) {
      const auto options = titans::TitansTrainOptions::load(*config);
      std::cout << titans::train_titans(options, std::cerr).dump(2) << "\n";
      return 0;
    }
    if (*cmd) {
      if (!*eval) {
        std::cerr << cmd->help();
        return 2;
      }
      std::cout << titans::evaluate_titans(*e, std::cerr).dump(2) << "\n";
      return 0;
    }
    return std::nullopt;
  };
}

}  // namespace neat::cli
