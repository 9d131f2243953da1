// `neat train mvot-lm` (interleaved text-image fine-tuning of the byte LM with the token
// discrepancy loss) and `neat generate` (text-to-image sampling, contact sheets, and the 1-NN
// evaluation of generated images): the MVoT sub-commands (Li et al. 2025, arXiv 2501.07542).
#include <iomanip>
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "neat/blt/byte_lm.hpp"
#include "neat/mvot/codebook.hpp"
#include "neat/mvot/image_io.hpp"
#include "neat/mvot/interleaved_lm.hpp"
#include "neat/nn/tensor.hpp"

namespace neat::cli {

namespace {

struct GenerateArgs {
  std::string prompt;
  std::string out;
  std::string sheet;
  std::string model = source_path("models/mvot/interleaved_lm.bf16.ckpt");
  std::string codebook = source_path("models/mvot/codebook.msgpack");
  std::string data = std::string(mvot::kFashionMnistDir);
  mvot::SamplingOptions sampling;
  bool eval = false;
  std::size_t real_test_images = 10000;
  int threads = 2;
};

// PNG path of sample i of n: `out` itself for one sample, else stem-<i>.png beside it.
std::filesystem::path sample_path(const std::filesystem::path& out, int i, int n) {
  if (n == 1) return out;
  auto p = out;
  p.replace_filename(out.stem().string() + "-" + std::to_string(i) + out.extension().string());
  return p;
}

int run_generate(const GenerateArgs& a) {
  nn::set_num_threads(a.threads);
  if (a.eval) {
    mvot::GenerationEvalOptions o;
    o.model = a.model;
    o.codebook = a.codebook;
    o.dataset_dir = a.data;
    o.sampling = a.sampling;
    o.real_test_images = a.real_test_images;
    o.sheet = a.sheet.empty() ? std::filesystem::path(source_path("docs/img/mvot_generated.png"))
                              : std::filesystem::path(a.sheet);
    const auto r = mvot::evaluate_generation(o, std::cerr);
    nlohmann::json j;
    j["model"] = a.model;
    j["samples_per_class"] = r.samples_per_class;
    j["temperature"] = a.sampling.temperature;
    j["top_k"] = a.sampling.top_k;
    j["seed"] = a.sampling.seed;
    j["nn_real_test_images"] = r.real_test_images;
    j["nn_real_test_accuracy"] = r.nn_real_test_accuracy;
    j["correct_per_class"] = r.correct_per_class;
    j["generated_accuracy"] = r.generated_accuracy;
    j["sheet"] = o.sheet.string();
    j["seconds"] = r.seconds;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  if (a.out.empty() && a.sheet.empty())
    throw std::invalid_argument("neat generate: give --out FILE.png, --sheet FILE.png or --eval");
  const auto codebook = mvot::Codebook::load(a.codebook);
  if (!std::filesystem::exists(a.model))
    throw std::runtime_error(a.model + ": no interleaved LM (train one with `neat train mvot-lm`)");
  const auto model = blt::load_byte_lm(a.model);
  if (!a.out.empty()) {
    if (a.prompt.empty()) throw std::invalid_argument("neat generate: --out needs --prompt");
    const auto samples = mvot::generate_image_codes(*model, a.prompt, codebook.size(), a.sampling);
    for (int i = 0; i < static_cast<int>(samples.size()); ++i) {
      const auto path = sample_path(a.out, i, static_cast<int>(samples.size()));
      mvot::write_png(path, {mvot::kImageSide, mvot::kImageSide, codebook.decode(samples[i])});
      std::cout << path.string() << "\n";
    }
  }
  if (!a.sheet.empty()) {
    std::vector<mvot::GrayImage> tiles;
    const auto& names = mvot::fashion_mnist_classes();
    for (std::size_t c = 0; c < names.size(); ++c) {
      auto s = a.sampling;
      s.seed = a.sampling.seed + c;
      for (const auto& codes : mvot::generate_image_codes(*model, names[c], codebook.size(), s))
        tiles.push_back({mvot::kImageSide, mvot::kImageSide, codebook.decode(codes)});
    }
    mvot::write_png(a.sheet, mvot::contact_sheet(tiles, a.sampling.samples));
    std::cout << a.sheet << "\n";
  }
  return 0;
}

}  // namespace

CommandRunner add_mvot_commands(const CommandParents& parents) {
  auto* train = parents.train.add_subcommand(
      "mvot-lm",
      "fine-tune the byte LM on interleaved Fashion-MNIST documents (class name, BOI, 49 codes, "
      "EOI) with CE + lambda * token discrepancy loss (MVoT)");
  auto config = std::make_shared<std::string>((config_dir() / "train/mvot_lm.yaml").string());
  train->add_option("--config", *config, "training YAML")->capture_default_str();

  auto* gen = parents.app.add_subcommand(
      "generate", "draw Fashion-MNIST images from a text prompt with the interleaved MVoT LM");
  auto a = std::make_shared<GenerateArgs>();
  gen->add_option("--prompt", a->prompt, "text before BOI, e.g. \"Ankle boot\"");
  gen->add_option("--out", a->out, "PNG to write (FILE-<i>.png for several samples)");
  gen->add_option("--samples", a->sampling.samples, "images (per class with --sheet/--eval)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  gen->add_option("--seed", a->sampling.seed, "sampling seed")->capture_default_str();
  gen->add_option("--temperature", a->sampling.temperature, "softmax temperature (> 0)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  gen->add_option("--top-k", a->sampling.top_k, "sample among the k likeliest codes (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  gen->add_option("--model", a->model, "interleaved LM checkpoint")->capture_default_str();
  gen->add_option("--codebook", a->codebook, "visual codebook")->capture_default_str();
  gen->add_option("--sheet", a->sheet, "contact sheet PNG, one row of samples per class");
  gen->add_flag("--eval", a->eval,
                "label samples per class with a 1-NN pixel classifier over the train images; "
                "writes the sheet (default docs/img/mvot_generated.png)");
  gen->add_option("--real-test-images", a->real_test_images,
                  "real test images scored by the 1-NN classifier with --eval (0: skip)")
      ->capture_default_str();
  gen->add_option("--data", a->data, "Fashion-MNIST directory")->capture_default_str();
  gen->add_option("--threads", a->threads, "BLAS threads (0: all cores)")->capture_default_str();

  auto* cbe = parents.app.add_subcommand(
      "codebook-eval",
      "measure a visual codebook on the 10,000 Fashion-MNIST test images (or the 60,000 train "
      "images): PSNR, code perplexity, top-code share, all-black patch share and the perplexity "
      "bound it implies");
  auto cb_file = std::make_shared<std::string>(source_path("models/mvot/codebook.msgpack"));
  auto cb_data = std::make_shared<std::string>(std::string(mvot::kFashionMnistDir));
  cbe->add_option("--codebook", *cb_file, "codebook file")->capture_default_str();
  cbe->add_option("--data", *cb_data, "Fashion-MNIST directory")->capture_default_str();
  auto cb_split = std::make_shared<std::string>("test");
  cbe->add_option("--split", *cb_split, "test (t10k) or train")
      ->check(CLI::IsMember({"test", "train"}))
      ->capture_default_str();

  return [train, gen, config, a, cbe, cb_file, cb_data, cb_split]() -> std::optional<int> {
    if (*cbe) {
      const auto codebook = mvot::Codebook::load(*cb_file);
      const auto images = mvot::read_idx_images(
          std::filesystem::path(*cb_data) /
          (*cb_split == "train" ? "train-images-idx3-ubyte.gz" : "t10k-images-idx3-ubyte.gz"));
      const auto r = mvot::evaluate(codebook, images);
      nlohmann::json j;
      j["split"] = *cb_split;
      j["codebook"] = *cb_file;
      j["k"] = codebook.size();
      j["images"] = r.images;
      j["psnr_mean_db"] = r.psnr_mean_db;
      j["psnr_of_mean_mse_db"] = r.psnr_of_mean_mse_db;
      j["code_entropy_nats"] = r.code_entropy_nats;
      j["perplexity"] = r.perplexity;
      j["used_codes"] = r.used_codes;
      j["top_code_share"] = r.top_code_share;
      j["zero_patch_share"] = r.zero_patch_share;
      j["zero_descriptor_share"] = r.zero_descriptor_share;
      j["context_radius"] = codebook.context().radius;
      j["context_weight"] = codebook.context().weight;
      j["perplexity_bound_nearest_code"] = r.perplexity_bound;
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    if (*train) {
      const auto options =
          mvot::InterleavedTrainOptions::load(*config, std::filesystem::path(NEAT_SOURCE_DIR));
      const auto r = mvot::train_interleaved_lm(options, std::cerr);
      nlohmann::json j;
      j["steps"] = r.steps;
      j["seconds"] = r.seconds;
      j["tokens_per_second"] = r.tokens_per_second;
      j["final_loss_nats"] = r.final_loss;
      j["final_discrepancy"] = r.final_discrepancy;
      j["text_val_bits_per_byte_before"] = r.en_bpb_before;
      j["text_val_bits_per_byte_after"] = r.en_bpb_after;
      j["heldout_image_bits_per_token_before"] = r.image_bits_before;
      j["heldout_image_bits_per_token_after"] = r.image_bits_after;
      j["heldout_class_name_bits_per_byte_after"] = r.class_bits_after;
      j["checkpoint"] = options.out.string();
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    if (*gen) return run_generate(*a);
    return std::nullopt;
  };
}

}  // namespace neat::cli
