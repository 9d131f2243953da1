// Interleaved text-image modelling of MVoT (Li et al. 2025, arXiv 2501.07542, Sec. 3) on the
// BLT byte LM: mixed documents "BOS <class name bytes> BOI <49 image codes> EOI EOS" built from
// Fashion-MNIST train, fine-tuning with CE + lambda * L_D (token discrepancy loss on image
// positions), text-to-image generation constrained to image tokens, a 1-nearest-neighbour
// pixel classifier that judges the generated images, and the modality decision inside a token
// stream from the LM's own probability of BOI. Invariant: nothing here invents data: images,
// codes and text come from the real datasets and the trained codebook and checkpoints.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "neat/config/schema.hpp"
#include "neat/mvot/codebook.hpp"
#include "neat/mvot/idx.hpp"
#include "neat/mvot/modality.hpp"
#include "neat/nn/modules.hpp"

namespace neat::mvot {

/// One mixed document: BOS, the class name as bytes, BOI, the 49 codes as tokens 261 + c, EOI,
/// EOS (DESIGN.md token space). Length 53 + name size. Throws std::out_of_range on a code
/// outside [0, k).
std::vector<std::int32_t> interleaved_document(std::string_view class_name,
                                               std::span<const std::int32_t> codes, int k);

/// Sets the image-token rows 261 .. 261+K-1 of tok_emb.weight and lm_head.weight to a random
/// linear map (Gaussian, from `seed`) of the mean-centred codebook centres, scaled to std 0.02,
/// so that codes close in the codebook start close in the LM (the shipped byte LM never saw
/// image tokens, so those rows hold only their random init). Throws std::invalid_argument if the
/// vocabulary is not 261 + K.
void initialise_image_rows(nn::TransformerLM<float>& model, const Codebook& codebook,
                           std::uint64_t seed);

/// Carries a model trained on the codes of `previous` over to the codes of `current`: the
/// tok_emb and lm_head row of every image code c of `current` becomes the row of the code of
/// `previous` whose 16 patch values (patch_centres) are nearest to c's (squared Euclidean
/// distance; ties to the lower index), so that what the model learned about a patch shape keeps
/// applying to the codes that look like it. Returns, per current code, the previous code copied.
/// Throws std::invalid_argument if the vocabulary is not 261 + previous.size() or the two
/// codebooks differ in size.
std::vector<std::int32_t> remap_image_rows(nn::TransformerLM<float>& model,
                                           const Codebook& previous, const Codebook& current);

/// Everything `neat train mvot-lm` reads from configs/train/mvot_lm.yaml.
struct InterleavedTrainOptions {
  std::filesystem::path init_model = "models/blt/byte_lm.bf16.ckpt";  ///< byte LM to start from
  std::filesystem::path codebook = "models/mvot/codebook.msgpack";
  /// codebook the init model's image rows were trained with; when set, remap_image_rows
  /// carries them over to `codebook` before training (empty: none)
  std::filesystem::path previous_codebook;
  std::filesystem::path dataset_dir = std::string(kFashionMnistDir);
  std::filesystem::path corpus = "data/corpus";  ///< prepared corpus for text rows and bpb
  std::vector<std::string> text_domains = {"en"};
  std::int64_t steps = 2000;        ///< planned optimizer steps
  double max_seconds = 840;         ///< wall-time budget; the schedule ends at whichever is first
  std::int64_t batch = 32;          ///< rows per step (one document or text window per row)
  std::int64_t sequence = 64;       ///< tokens per row
  double text_share = 0.25;         ///< fraction of rows that are text windows
  double lambda_discrepancy = 0.1;  ///< weight of L_D on image positions
  double lr = 2e-3, min_lr = 2e-4, weight_decay = 0.01, clip = 1.0;
  std::int64_t warmup = 50;
  std::uint64_t eval_bytes = 65536;  ///< English val bytes scored before and after
  std::int64_t eval_images = 500;    ///< Fashion-MNIST test documents scored before and after
  std::uint64_t seed = 1;
  int threads = 2;
  bool codebook_init = true;  ///< initialise_image_rows before training
  std::filesystem::path out = "models/mvot/interleaved_lm.bf16.ckpt";
  std::filesystem::path log = "out/train-mvot-lm/train_log.csv";

  /// Schema of configs/train/mvot_lm.yaml (every key documented in docs/configuration.md).
  static config::Schema schema();
  /// Loads and validates a config; relative paths are resolved against `root`.
  /// Throws config::ConfigError.
  static InterleavedTrainOptions load(const std::filesystem::path& file,
                                      const std::filesystem::path& root);
};

struct InterleavedTrainReport {
  std::int64_t steps = 0;
  double seconds = 0.0;
  double tokens_per_second = 0.0;
  double final_loss = 0.0;         ///< CE + lambda L_D of the last step, nats
  double final_discrepancy = 0.0;  ///< L_D of the last step (units of mean distance)
  double en_bpb_before = 0.0, en_bpb_after = 0.0;  ///< English val bits per byte
  /// Mean CE of image-code targets of Fashion-MNIST test documents, bits per image token.
  double image_bits_before = 0.0, image_bits_after = 0.0;
  double class_bits_after = 0.0;  ///< mean CE of the class-name byte targets, bits per byte
};

/// Fine-tunes the byte LM on mixed documents (MVoT Sec. 3): loss = CE over every target +
/// lambda * L_D over image-code targets. AdamW, linear warm-up then cosine to min_lr over the
/// fraction max(step / steps, elapsed / max_seconds). Saves the bf16 checkpoint (config JSON of
/// the byte LM plus training fields) to options.out and a CSV log. Throws std::runtime_error
/// when the codebook, dataset, corpus or model is missing or mismatched (vocab != 261 + K), or
/// when the loss turns non-finite (naming the step).
InterleavedTrainReport train_interleaved_lm(const InterleavedTrainOptions& options,
                                            std::ostream& progress);

/// Scores `documents` (token sequences, each <= context): mean CE in nats of image-code targets
/// and of byte targets (first, second). No gradient.
std::pair<double, double> interleaved_cross_entropy(
    const nn::TransformerLM<float>& model, const std::vector<std::vector<std::int32_t>>& documents);

/// Default sampling temperature of `neat generate`, chosen on validation seeds only (1000..1019,
/// 1,000 samples per setting, 1-NN judge; grid and scores in models/mvot/PROVENANCE.md) for the
/// shipped models/mvot/interleaved_lm.bf16.ckpt (stage 5, context-ring codebook).
inline constexpr double kDefaultTemperature = 0.4;

struct SamplingOptions {
  int samples = 1;                           ///< images to draw
  double temperature = kDefaultTemperature;  ///< logits / temperature (> 0)
  int top_k = 0;                             ///< keep the k most likely image codes (0: all K)
  std::uint64_t seed = 1;
};

/// Text-to-image generation: feeds BOS, the prompt bytes and BOI, then draws 49 codes one at a
/// time with the KV cache, sampling only among the K image tokens (the other columns are
/// masked); EOI closes the item. Returns (samples) arrays of 49 codes. Throws
/// std::invalid_argument if the model's vocabulary is not 261 + k, the prompt does not fit the
/// context with the image, or temperature <= 0.
std::vector<std::array<std::int32_t, kCodesPerImage>> generate_image_codes(
    const nn::TransformerLM<float>& model, std::string_view prompt, int k,
    const SamplingOptions& options);

/// 1-nearest-neighbour classifier in pixel space (squared Euclidean on pixels / 255) over a
/// labelled image set, computed as blocked GEMMs. Throws std::invalid_argument on a count or
/// size mismatch.
class PixelNearestNeighbour {
 public:
  PixelNearestNeighbour(const IdxImages& images, std::vector<std::uint8_t> labels);
  ~PixelNearestNeighbour();
  PixelNearestNeighbour(const PixelNearestNeighbour&) = delete;
  PixelNearestNeighbour& operator=(const PixelNearestNeighbour&) = delete;
  /// Label of the nearest reference image for each of `count` 28x28 images (count * 784 u8).
  std::vector<std::uint8_t> classify(std::span<const std::uint8_t> pixels, std::size_t count) const;

 private:
  struct Impl;
  Impl* impl_;
};

struct GenerationEvalOptions {
  std::filesystem::path model = "models/mvot/interleaved_lm.bf16.ckpt";
  std::filesystem::path codebook = "models/mvot/codebook.msgpack";
  std::filesystem::path dataset_dir = std::string(kFashionMnistDir);
  SamplingOptions sampling{10, kDefaultTemperature, 0, 1};  ///< samples = per class
  std::size_t real_test_images = 10000;  ///< real test images for the 1-NN accuracy (0: skip)
  std::filesystem::path sheet;           ///< contact sheet PNG (rows = classes); empty: none
};

struct GenerationEvalReport {
  double nn_real_test_accuracy = 0.0;  ///< 1-NN accuracy on real test images
  std::size_t real_test_images = 0;
  std::array<int, 10> correct_per_class{};  ///< generated samples labelled as the prompt
  int samples_per_class = 0;
  double generated_accuracy = 0.0;  ///< fraction of all generated samples labelled as prompted
  double seconds = 0.0;
};

/// Generates `samples` images per Fashion-MNIST class from its name, labels them with the 1-NN
/// classifier over the 60,000 train images, and writes the contact sheet (one row per class).
/// Throws std::runtime_error on missing data, model or codebook.
GenerationEvalReport evaluate_generation(const GenerationEvalOptions& options,
                                         std::ostream& progress);

/// p(BOI | tokens[0..i]) for every prefix of `tokens`: the LM's own probability that an image
/// item starts next (MVoT's modality decision inside a token stream). (n) -> (n). Scored in
/// context windows of the model. Throws std::invalid_argument on an empty stream.
std::vector<double> boi_probabilities(const nn::TransformerLM<float>& model,
                                      const std::vector<std::int32_t>& tokens);

/// Modality of the next item after `tokens`: image if p(BOI | tokens) >= threshold, else text.
/// Returns the decision with p(BOI) as confidence for image, 1 - p(BOI) for text.
ModalityDecision decide_next_modality(const nn::TransformerLM<float>& model,
                                      const std::vector<std::int32_t>& tokens,
                                      double threshold = 0.5);

}  // namespace neat::mvot
