// `neat train t2` (per-domain singular-value experts, prototypes, CEM few-shot mixtures) and
// `neat t2 eval` (domain identification and bits per byte with the experts on a corpus split):
// the Transformer² sub-commands (Sun et al. 2025, arXiv 2501.06252).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "neat/t2/train.hpp"

namespace neat::cli {

CommandRunner add_t2_commands(const CommandParents& parents) {
  auto config = std::make_shared<std::string>((config_dir() / "train/t2.yaml").string());
  auto command = std::make_shared<std::string>();
  auto* train = parents.train.add_subcommand(
      "t2", "train Transformer² expert vectors z per domain on the byte LM's singular values");
  train->add_option("--config", *config, "training YAML")->capture_default_str();
  auto prototypes_only = std::make_shared<bool>(false);
  train->add_flag("--prototypes-only", *prototypes_only,
                  "recompute the dispatch (prototypes, chosen on val) of out_dir/experts.ckpt, "
                  "keeping z and alpha");
  auto fewshot_only = std::make_shared<bool>(false);
  train->add_flag("--fewshot-only", *fewshot_only,
                  "recompute the CEM mixtures of the few-shot classes of out_dir/experts.ckpt, "
                  "keeping z and the prototypes");

  auto merge = std::make_shared<std::vector<std::string>>();
  train
      ->add_option("--merge", *merge,
                   "combine the experts.ckpt files of runs (parallel processes over disjoint "
                   "domains, or training stages: a later file overrides a domain) into out_dir, "
                   "then search the few-shot mixtures and fit the dispatch")
      ->expected(1, -1);

  auto eval_options = std::make_shared<t2::T2EvalOptions>();
  eval_options->experts = source_path("models/t2/experts.ckpt");
  eval_options->base_model = source_path("models/blt/byte_lm.bf16.ckpt");
  auto* t2cmd = parents.app.add_subcommand("t2", "Transformer² tools");
  auto* eval = t2cmd->add_subcommand(
      "eval", "domain id accuracy and bits per byte (base vs expert, few-shot mixture) per domain");
  auto& e = *eval_options;
  eval->add_option("--corpus", e.corpus, "prepared corpus")->capture_default_str();
  eval->add_option("--split", e.split, "train, val or test")->capture_default_str();
  eval->add_option("--experts", e.experts, "experts file of neat train t2")->capture_default_str();
  eval->add_option("--model", e.base_model, "base byte LM")->capture_default_str();
  eval->add_option("--eval-bytes", e.eval_bytes, "bytes per domain scored (0: the whole split)")
      ->capture_default_str();
  eval->add_option("--positions", e.embedding_positions, "N of the task embedding")
      ->capture_default_str();
  eval->add_option("--temperature", e.temperature, "confidence softmax temperature")
      ->capture_default_str();
  eval->add_option("--center", e.center,
                   "files without multi-prototypes only: centre embedding and prototypes on the "
                   "prototypes' mean (true/false)")
      ->capture_default_str();
  eval->add_flag("--id-only", e.id_only, "domain identification only (no bits per byte)");
  eval->add_option("--threads", e.threads, "BLAS threads")->capture_default_str();

  return [train, t2cmd, eval, config, eval_options, prototypes_only, fewshot_only,
          merge]() -> std::optional<int> {
    if (*train) {
      const auto options = t2::T2TrainOptions::load(*config);
      if (*fewshot_only) {
        const auto prov = t2::refresh_fewshot(options, std::cerr,
                                              "neat train t2 --fewshot-only --config " + *config);
        std::cout << prov["fewshot_refreshes"].back().dump(2) << "\n";
        return 0;
      }
      if (*prototypes_only) {
        const auto prov = t2::refresh_prototypes(
            options, std::cerr, "neat train t2 --prototypes-only --config " + *config);
        auto record = prov["prototype_refreshes"].back();
        record.erase("grid");
        std::cout << record.dump(2) << "\n";
        return 0;
      }
      std::ifstream in(*config);
      std::ostringstream text;
      text << in.rdbuf();
      if (!merge->empty()) {
        std::string command = "neat train t2 --config " + *config + " --merge";
        for (const auto& f : *merge) command += " " + f;
        const std::vector<std::filesystem::path> parts(merge->begin(), merge->end());
        nlohmann::json out = t2::merge_experts(options, parts, std::cerr, command, text.str());
        out.erase("config");
        out.erase("parts");
        std::cout << out.dump(2) << "\n";
        return 0;
      }
      const auto prov =
          t2::train_experts(options, std::cerr, "neat train t2 --config " + *config, text.str());
      nlohmann::json out = prov;
      out.erase("config");
      std::cout << out.dump(2) << "\n";
      return 0;
    }
    if (*t2cmd) {
      if (!*eval) {
        std::cerr << t2cmd->help();
        return 2;
      }
      std::cout << t2::evaluate(*eval_options, std::cerr).dump(2) << "\n";
      return 0;
    }
    return std::nullopt;
  };
}

}  // namespace neat::cli
