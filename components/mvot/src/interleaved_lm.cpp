// Interleaved text-image LM of MVoT on the BLT byte LM: mixed documents, the fine-tuning loop
// (CE + lambda L_D), constrained text-to-image sampling, the 1-NN judge of generated images and
// the modality decision from p(BOI).
#include "neat/mvot/interleaved_lm.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <numbers>
#include <ostream>
#include <set>
#include <stdexcept>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "neat/blt/byte_lm.hpp"
#include "neat/config/optimizer_keys.hpp"
#include "neat/data/corpus.hpp"
#include "neat/mvot/discrepancy.hpp"
#include "neat/mvot/image_io.hpp"
#include "neat/mvot/tokens.hpp"
#include "neat/nn/checkpoint.hpp"
#include "neat/nn/ops.hpp"
#include "neat/nn/optim.hpp"

namespace neat::mvot {

using config::Schema;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int32_t kIgnore = -100;

nn::Tensor<float> contiguous(const nn::Tensor<float>& t) {
  return t.is_contiguous() ? t : t.clone();
}

// Softmax restricted to columns [first, first + k) of one logits row, after / temperature.
std::vector<double> image_softmax(const float* row, std::int64_t first, int k, double temperature) {
  std::vector<double> p(static_cast<std::size_t>(k));
  double m = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < k; ++j) m = std::max(m, static_cast<double>(row[first + j]) / temperature);
  double z = 0.0;
  for (int j = 0; j < k; ++j) {
    p[j] = std::exp(static_cast<double>(row[first + j]) / temperature - m);
    z += p[j];
  }
  for (auto& v : p) v /= z;
  return p;
}

// -ln softmax(row)[target] over the whole vocabulary.
double row_nll(const float* row, std::int64_t vocab, std::int32_t target) {
  const float mx = *std::max_element(row, row + vocab);
  double z = 0.0;
  for (std::int64_t v = 0; v < vocab; ++v) z += std::exp(static_cast<double>(row[v] - mx));
  return mx + std::log(z) - row[target];
}

std::filesystem::path resolve(const std::filesystem::path& p, const std::filesystem::path& root) {
  return p.is_absolute() ? p : root / p;
}

void check_vocabulary(const nn::TransformerLM<float>& model, int k, const std::string& what) {
  if (model.config().vocab_size != vocabulary_size(k))
    throw std::invalid_argument(what + ": model vocabulary " +
                                std::to_string(model.config().vocab_size) +
                                " != 261 + K (K = " + std::to_string(k) + ")");
}

}  // namespace

void initialise_image_rows(nn::TransformerLM<float>& model, const Codebook& codebook,
                           std::uint64_t seed) {
  const int k = codebook.size();
  check_vocabulary(model, k, "initialise_image_rows");
  const std::int64_t dim = model.config().dim;
  nn::NoGradGuard no_grad;
  // E = (C - mean C) P^T with a Gaussian P (dim, 16): a random linear map of the centres, so
  // the embedding distances follow the codebook distances; then scaled to std 0.02 (GPT-2 init).
  Eigen::MatrixXd centred = codebook.patch_centres().cast<double>();
  centred.rowwise() -= centred.colwise().mean();
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (nn::Tensor<float>* weight : {&model.tok_emb.weight, &model.lm_head.weight}) {
    Eigen::MatrixXd projection(kPatchDims, dim);
    for (Eigen::Index i = 0; i < projection.size(); ++i) projection.data()[i] = normal(rng);
    Eigen::MatrixXd rows = centred * projection;  // (K, dim)
    const double std_dev = std::sqrt(rows.squaredNorm() / static_cast<double>(rows.size()));
    rows *= 0.02 / std_dev;
    if (!weight->is_contiguous() || weight->size(0) != vocabulary_size(k) || weight->size(1) != dim)
      throw std::invalid_argument("initialise_image_rows: unexpected weight layout");
    float* w = weight->data();
    for (int c = 0; c < k; ++c)
      for (std::int64_t d = 0; d < dim; ++d)
        w[(kFirstImageToken + c) * dim + d] = static_cast<float>(rows(c, d));
  }
}

std::vector<std::int32_t> remap_image_rows(nn::TransformerLM<float>& model,
                                           const Codebook& previous, const Codebook& current) {
  const int k = previous.size();
  check_vocabulary(model, k, "remap_image_rows");
  if (current.size() != k)
    throw std::invalid_argument("remap_image_rows: codebooks of " + std::to_string(k) + " and " +
                                std::to_string(current.size()) + " codes");
  std::vector<std::int32_t> source;
  assign_nearest(current.patch_centres(), previous.patch_centres(), source);
  const std::int64_t dim = model.config().dim;
  nn::NoGradGuard no_grad;
  for (nn::Tensor<float>* weight : {&model.tok_emb.weight, &model.lm_head.weight}) {
    if (!weight->is_contiguous() || weight->size(1) != dim)
      throw std::invalid_argument("remap_image_rows: unexpected weight layout");
    float* w = weight->data();
    const std::vector<float> old(w + kFirstImageToken * dim, w + (kFirstImageToken + k) * dim);
    for (int c = 0; c < k; ++c)
      std::copy_n(old.data() + static_cast<std::int64_t>(source[static_cast<std::size_t>(c)]) * dim,
                  dim, w + (kFirstImageToken + c) * dim);
  }
  return source;
}

std::vector<std::int32_t> interleaved_document(std::string_view class_name,
                                               std::span<const std::int32_t> codes, int k) {
  std::vector<std::int32_t> doc;
  doc.reserve(class_name.size() + codes.size() + 4);
  doc.push_back(kBos);
  for (unsigned char c : class_name) doc.push_back(c);
  const auto image = image_codes_to_tokens(codes, k);
  doc.insert(doc.end(), image.begin(), image.end());
  doc.push_back(kEos);
  return doc;
}

Schema InterleavedTrainOptions::schema() {
  auto model =
      Schema::map()
          .optional("init", Schema::string().default_value("models/blt/byte_lm.bf16.ckpt"),
                    "byte LM checkpoint to start from (vocabulary 261 + K)")
          .optional("codebook", Schema::string().default_value("models/mvot/codebook.msgpack"),
                    "visual codebook (neat train mvot)")
          .optional("previous_codebook", Schema::string(),
                    "codebook the init model's image rows were trained with; each image row is "
                    "then copied from the previous code whose patch values are nearest "
                    "(codebook migration); absent: none");
  InterleavedTrainOptions d;  // the documented defaults are the struct's
  auto train = Schema::map()
                   .optional("steps", Schema::integer(1, 100000000).default_value("2000"),
                             "planned optimizer steps")
                   .optional("max_seconds", Schema::number(1, 1e7).default_value("840"),
                             "wall-time budget; the cosine ends at whichever budget runs out first")
                   .optional("batch", Schema::integer(1, 4096).default_value("32"), "rows per step")
                   .optional("sequence", Schema::integer(64, 8192).default_value("64"),
                             "tokens per row (>= one mixed document)")
                   .optional("text_share", Schema::number(0, 1).default_value("0.25"),
                             "fraction of rows that are text windows of the corpus")
                   .optional("lambda_discrepancy", Schema::number(0, 1e6).default_value("0.1"),
                             "weight of the token discrepancy loss L_D on image positions");
  config::add_optimizer_keys(train, {d.lr, d.min_lr, d.warmup, d.weight_decay, d.clip}, 1);
  config::add_run_keys(train, {d.seed, d.threads})
      .optional("codebook_init", Schema::boolean().default_value("true"),
                "set the image-token rows of tok_emb and lm_head to a random projection "
                "of the codebook centres before training");
  auto eval = Schema::map()
                  .optional("text_bytes", Schema::integer(1, 1ll << 40).default_value("65536"),
                            "val bytes of the text domains scored before and after")
                  .optional("images", Schema::integer(1, 10000).default_value("500"),
                            "Fashion-MNIST test documents scored before and after");
  auto data =
      Schema::map()
          .optional("fashion_mnist", Schema::string().default_value(std::string(kFashionMnistDir)),
                    "Fashion-MNIST IDX gzip directory")
          .optional("corpus", Schema::string().default_value("data/corpus"),
                    "prepared corpus (neat data prepare)")
          .optional("text_domains", Schema::list(Schema::string(), 1),
                    "domains whose train split gives the text rows");
  return Schema::map()
      .optional("model", model, "starting point")
      .optional("train", train, "optimisation")
      .optional("eval", eval, "before/after measurements")
      .optional("data", data, "training data")
      .optional("out", Schema::string().default_value("models/mvot/interleaved_lm.bf16.ckpt"),
                "bf16 checkpoint to write")
      .optional("log", Schema::string().default_value("out/train-mvot-lm/train_log.csv"),
                "CSV training log");
}

InterleavedTrainOptions InterleavedTrainOptions::load(const std::filesystem::path& file,
                                                      const std::filesystem::path& root) {
  const auto y = config::load_file(file, schema());
  InterleavedTrainOptions o;
  if (const auto m = y["model"]) {
    if (m["init"]) o.init_model = m["init"].as<std::string>();
    if (m["codebook"]) o.codebook = m["codebook"].as<std::string>();
    if (m["previous_codebook"]) o.previous_codebook = m["previous_codebook"].as<std::string>();
  }
  if (const auto t = y["train"]) {
    if (t["steps"]) o.steps = t["steps"].as<std::int64_t>();
    if (t["max_seconds"]) o.max_seconds = t["max_seconds"].as<double>();
    if (t["batch"]) o.batch = t["batch"].as<std::int64_t>();
    if (t["sequence"]) o.sequence = t["sequence"].as<std::int64_t>();
    if (t["text_share"]) o.text_share = t["text_share"].as<double>();
    if (t["lambda_discrepancy"]) o.lambda_discrepancy = t["lambda_discrepancy"].as<double>();
    config::read_optimizer_keys(t, {o.lr, o.min_lr, o.warmup, o.weight_decay, o.clip});
    config::read_run_keys(t, {o.seed, o.threads});
    if (t["codebook_init"]) o.codebook_init = t["codebook_init"].as<bool>();
  }
  if (const auto e = y["eval"]) {
    if (e["text_bytes"]) o.eval_bytes = e["text_bytes"].as<std::uint64_t>();
    if (e["images"]) o.eval_images = e["images"].as<std::int64_t>();
  }
  if (const auto d = y["data"]) {
    if (d["fashion_mnist"]) o.dataset_dir = d["fashion_mnist"].as<std::string>();
    if (d["corpus"]) o.corpus = d["corpus"].as<std::string>();
    if (d["text_domains"]) o.text_domains = d["text_domains"].as<std::vector<std::string>>();
  }
  if (y["out"]) o.out = y["out"].as<std::string>();
  if (y["log"]) o.log = y["log"].as<std::string>();
  o.init_model = resolve(o.init_model, root);
  o.codebook = resolve(o.codebook, root);
  if (!o.previous_codebook.empty()) o.previous_codebook = resolve(o.previous_codebook, root);
  o.corpus = resolve(o.corpus, root);
  o.out = resolve(o.out, root);
  o.log = resolve(o.log, root);
  return o;
}

std::pair<double, double> interleaved_cross_entropy(
    const nn::TransformerLM<float>& model,
    const std::vector<std::vector<std::int32_t>>& documents) {
  nn::NoGradGuard no_grad;
  const std::int64_t vocab = model.config().vocab_size;
  double image_nats = 0.0, byte_nats = 0.0;
  std::int64_t images = 0, bytes = 0;
  for (const auto& doc : documents) {
    const auto n = static_cast<std::int64_t>(doc.size());
    if (n < 2) continue;
    if (n - 1 > model.config().max_seq_len)
      throw std::invalid_argument("interleaved_cross_entropy: document of " + std::to_string(n) +
                                  " tokens exceeds the context");
    std::vector<std::int32_t> in(doc.begin(), doc.end() - 1);
    const auto logits = contiguous(model.forward(in, 1, n - 1));
    for (std::int64_t i = 0; i + 1 < n; ++i) {
      const std::int32_t target = doc[static_cast<std::size_t>(i + 1)];
      const double nll = row_nll(logits.data() + i * vocab, vocab, target);
      if (target >= kFirstImageToken) {
        image_nats += nll;
        ++images;
      } else if (target < 256) {
        byte_nats += nll;
        ++bytes;
      }
    }
  }
  return {images ? image_nats / images : 0.0, bytes ? byte_nats / bytes : 0.0};
}

InterleavedTrainReport train_interleaved_lm(const InterleavedTrainOptions& o,
                                            std::ostream& progress) {
  nn::set_num_threads(o.threads);
  const auto t_start = Clock::now();
  const Codebook codebook = Codebook::load(o.codebook);
  const int k = codebook.size();
  const CodeDistances distances = code_distances(codebook);

  // Mixed documents of the train split; a held-out set from the test split.
  const auto train_images = read_idx_images(o.dataset_dir / "train-images-idx3-ubyte.gz");
  const auto train_labels = read_idx_labels(o.dataset_dir / "train-labels-idx1-ubyte.gz");
  const auto test_images = read_idx_images(o.dataset_dir / "t10k-images-idx3-ubyte.gz");
  const auto test_labels = read_idx_labels(o.dataset_dir / "t10k-labels-idx1-ubyte.gz");
  if (train_labels.size() != train_images.count || test_labels.size() != test_images.count)
    throw std::runtime_error("Fashion-MNIST in " + o.dataset_dir.string() +
                             ": image and label counts differ");
  const auto& names = fashion_mnist_classes();
  auto make_docs = [&](const IdxImages& images, const std::vector<std::uint8_t>& labels,
                       std::size_t limit) {
    const std::size_t n = std::min(limit, images.count);
    const auto codes = codebook.encode_batch(
        std::span<const std::uint8_t>(images.pixels.data(), n * kPixelsPerImage), n);
    std::vector<std::vector<std::int32_t>> docs(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (labels[i] >= names.size())
        throw std::runtime_error("Fashion-MNIST label " + std::to_string(labels[i]) + " at index " +
                                 std::to_string(i) + " is not a class");
      docs[i] = interleaved_document(
          names[labels[i]],
          std::span<const std::int32_t>(codes.data() + i * kCodesPerImage, kCodesPerImage), k);
    }
    return docs;
  };
  const auto train_docs = make_docs(train_images, train_labels, train_images.count);
  const auto heldout_docs =
      make_docs(test_images, test_labels, static_cast<std::size_t>(o.eval_images));
  const std::int64_t T = o.sequence;
  for (const auto& d : train_docs)
    if (static_cast<std::int64_t>(d.size()) - 1 > T)
      throw std::runtime_error("train.sequence " + std::to_string(T) +
                               " is shorter than a mixed document of " + std::to_string(d.size()) +
                               " tokens");

  // Text rows: windows of the concatenated BOS bytes EOS documents of the text domains.
  std::vector<std::int32_t> text_stream;
  std::vector<std::vector<std::uint8_t>> text_val;
  if (o.text_share > 0 || o.eval_bytes > 0) {
    const auto manifest = data::load_manifest(o.corpus);
    for (const auto& domain : o.text_domains) {
      for (const auto& d : data::load_split(manifest, domain, data::Split::kTrain)) {
        const auto t = blt::document_tokens(d.bytes);
        text_stream.insert(text_stream.end(), t.begin(), t.end());
      }
      for (auto& d : data::load_split(manifest, domain, data::Split::kVal))
        text_val.push_back(std::move(d.bytes));
    }
    if (o.text_share > 0 && static_cast<std::int64_t>(text_stream.size()) < T + 1)
      throw std::runtime_error("text train stream shorter than one row");
  }

  auto model = blt::load_byte_lm(o.init_model);
  check_vocabulary(*model, k, o.init_model.string());
  if (model->config().max_seq_len < T)
    throw std::runtime_error("train.sequence exceeds the model context");

  // "Before" is the byte LM as shipped, so the text figure is measured before the image rows
  // are re-initialised (which moves probability mass onto image tokens).
  InterleavedTrainReport report;
  report.en_bpb_before =
      text_val.empty() ? 0.0 : blt::bits_per_byte(*model, text_val, o.eval_bytes);
  if (o.codebook_init) initialise_image_rows(*model, codebook, o.seed);
  if (!o.previous_codebook.empty()) {
    const auto source = remap_image_rows(*model, Codebook::load(o.previous_codebook), codebook);
    const std::set<std::int32_t> distinct(source.begin(), source.end());
    progress << "image rows carried over from " << distinct.size() << " codes of "
             << o.previous_codebook.string() << "\n";
  }
  report.image_bits_before =
      interleaved_cross_entropy(*model, heldout_docs).first / std::numbers::ln2;
  progress << std::fixed << std::setprecision(4) << "before: text val bits/byte "
           << report.en_bpb_before << ", held-out image bits/token " << report.image_bits_before
           << "\n"
           << std::flush;

  auto params = model->trainable_parameters();
  nn::AdamW<float> opt(params, {o.lr, 0.9, 0.95, 1e-8, o.weight_decay});
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::size_t> pick_doc(0, train_docs.size() - 1);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::uniform_int_distribution<std::size_t> pick_text(
      0, text_stream.size() > static_cast<std::size_t>(T) + 1 ? text_stream.size() - T - 1 : 0);
  std::filesystem::create_directories(o.log.parent_path());
  std::ofstream log(o.log, std::ios::trunc);
  log << "step,loss_nats,ce_nats,discrepancy,lr,tokens_per_second,elapsed_s\n";

  const auto t0 = Clock::now();
  std::vector<std::int32_t> inputs(static_cast<std::size_t>(o.batch * T)), targets(inputs.size()),
      target_codes(inputs.size());
  std::int64_t step = 0, tokens = 0;
  double last_loss = 0.0, last_d = 0.0;
  for (; step < o.steps; ++step) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    if (elapsed >= o.max_seconds) break;
    const double progress_fraction =
        std::max(static_cast<double>(step) / o.steps, elapsed / o.max_seconds);
    const double lr = step < o.warmup
                          ? o.lr * (step + 1) / o.warmup
                          : o.min_lr + 0.5 * (o.lr - o.min_lr) *
                                           (1 + std::cos(std::numbers::pi * progress_fraction));
    for (std::int64_t b = 0; b < o.batch; ++b) {
      auto* in = inputs.data() + b * T;
      auto* tg = targets.data() + b * T;
      auto* tc = target_codes.data() + b * T;
      if (o.text_share > 0 && coin(rng) < o.text_share) {
        const std::size_t at = pick_text(rng);
        for (std::int64_t i = 0; i < T; ++i) {
          in[i] = text_stream[at + i];
          tg[i] = text_stream[at + i + 1];
          tc[i] = -1;
        }
        continue;
      }
      const auto& doc = train_docs[pick_doc(rng)];
      const auto n = static_cast<std::int64_t>(doc.size());
      for (std::int64_t i = 0; i < T; ++i) {
        if (i + 1 < n) {
          in[i] = doc[i];
          tg[i] = doc[i + 1];
          tc[i] = tg[i] >= kFirstImageToken ? tg[i] - kFirstImageToken : -1;
        } else {
          in[i] = kPad;
          tg[i] = kIgnore;
          tc[i] = -1;
        }
      }
    }
    opt.zero_grad();
    const auto logits = model->forward(inputs, o.batch, T);
    const auto ce = nn::cross_entropy(logits, targets);
    const auto ld = token_discrepancy_loss(logits, target_codes, distances, kFirstImageToken);
    const auto loss = nn::add(ce, nn::scale(ld, static_cast<float>(o.lambda_discrepancy)));
    if (!std::isfinite(loss.item()))
      throw std::runtime_error("train_interleaved_lm: non-finite loss at step " +
                               std::to_string(step + 1) + " (lower train.lr)");
    loss.backward();
    nn::clip_grad_norm(params, o.clip);
    opt.set_lr(lr);
    opt.step();
    last_loss = loss.item();
    last_d = ld.item();
    tokens += o.batch * T;
    if ((step + 1) % 10 == 0) {
      const double now = std::chrono::duration<double>(Clock::now() - t0).count();
      const double tps = tokens / std::max(now, 1e-9);
      progress << "step " << step + 1 << "  loss " << std::setprecision(4) << last_loss << "  ce "
               << ce.item() << "  L_D " << last_d << "  lr " << std::setprecision(6) << lr
               << "  tok/s " << std::setprecision(0) << tps << "  elapsed " << now << " s\n"
               << std::setprecision(4) << std::flush;
      log << step + 1 << "," << last_loss << "," << ce.item() << "," << last_d << "," << lr << ","
          << tps << "," << now << "\n";
      log.flush();
    }
  }
  report.steps = step;
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report.tokens_per_second = tokens / std::max(report.seconds, 1e-9);
  report.final_loss = last_loss;
  report.final_discrepancy = last_d;
  report.en_bpb_after = text_val.empty() ? 0.0 : blt::bits_per_byte(*model, text_val, o.eval_bytes);
  const auto [image_nats, class_nats] = interleaved_cross_entropy(*model, heldout_docs);
  report.image_bits_after = image_nats / std::numbers::ln2;
  report.class_bits_after = class_nats / std::numbers::ln2;
  progress << "after " << step << " steps (" << std::setprecision(1) << report.seconds
           << " s): text val bits/byte " << std::setprecision(4) << report.en_bpb_after
           << ", held-out image bits/token " << report.image_bits_after << "\n"
           << std::flush;

  auto cfg = blt::model_config_json(model->config());
  cfg["trained_by"] = "neat train mvot-lm";
  cfg["steps"] = step;
  cfg["lambda_discrepancy"] = o.lambda_discrepancy;
  cfg["text_share"] = o.text_share;
  cfg["text_val_bits_per_byte"] = report.en_bpb_after;
  cfg["heldout_image_bits_per_token"] = report.image_bits_after;
  cfg["codebook_k"] = k;
  std::filesystem::create_directories(o.out.parent_path());
  nn::save_checkpoint(o.out.string(), *model, cfg.dump(), nn::DType::bf16);
  progress << "wrote " << o.out.string() << " (total wall "
           << std::chrono::duration<double>(Clock::now() - t_start).count() << " s)\n";
  return report;
}

std::vector<std::array<std::int32_t, kCodesPerImage>> generate_image_codes(
    const nn::TransformerLM<float>& model, std::string_view prompt, int k,
    const SamplingOptions& options) {
  check_vocabulary(model, k, "generate_image_codes");
  if (!(options.temperature > 0))
    throw std::invalid_argument("generate_image_codes: temperature must be > 0");
  if (options.samples < 1) throw std::invalid_argument("generate_image_codes: samples < 1");
  std::vector<std::int32_t> prefix{kBos};
  for (unsigned char c : prompt) prefix.push_back(c);
  prefix.push_back(kBoi);
  const auto prefix_len = static_cast<std::int64_t>(prefix.size());
  if (prefix_len + kCodesPerImage > model.config().max_seq_len)
    throw std::invalid_argument("generate_image_codes: prompt of " + std::to_string(prompt.size()) +
                                " bytes does not fit the context with 49 image codes");
  nn::NoGradGuard no_grad;
  const std::int64_t B = options.samples;
  const std::int64_t V = model.config().vocab_size;
  std::mt19937_64 rng(options.seed);
  auto cache = model.make_cache(B);
  std::vector<std::int32_t> batch_prefix;
  batch_prefix.reserve(static_cast<std::size_t>(B * prefix_len));
  for (std::int64_t b = 0; b < B; ++b)
    batch_prefix.insert(batch_prefix.end(), prefix.begin(), prefix.end());
  auto logits = contiguous(model.forward_cached(batch_prefix, B, cache));
  std::int64_t last_row = prefix_len - 1, row_len = prefix_len;
  std::vector<std::array<std::int32_t, kCodesPerImage>> out(static_cast<std::size_t>(B));
  std::vector<std::int32_t> next(static_cast<std::size_t>(B));
  for (int pos = 0; pos < kCodesPerImage; ++pos) {
    for (std::int64_t b = 0; b < B; ++b) {
      const float* row = logits.data() + (b * row_len + last_row) * V;
      auto p = image_softmax(row, kFirstImageToken, k, options.temperature);
      if (options.top_k > 0 && options.top_k < k) {
        std::vector<double> sorted = p;
        std::nth_element(sorted.begin(), sorted.begin() + (options.top_k - 1), sorted.end(),
                         std::greater<>());
        const double cut = sorted[static_cast<std::size_t>(options.top_k - 1)];
        for (auto& v : p)
          if (v < cut) v = 0.0;
      }
      std::discrete_distribution<int> draw(p.begin(), p.end());
      const int code = draw(rng);
      out[static_cast<std::size_t>(b)][static_cast<std::size_t>(pos)] = code;
      next[static_cast<std::size_t>(b)] = code_to_token(code, k);
    }
    if (pos + 1 < kCodesPerImage) {
      logits = contiguous(model.forward_cached(next, B, cache));
      last_row = 0;
      row_len = 1;
    }
  }
  return out;
}

struct PixelNearestNeighbour::Impl {
  RowMatrix reference;    // (N, 784) pixels / 255
  Eigen::VectorXf norms;  // (N) squared norms
  std::vector<std::uint8_t> labels;
};

PixelNearestNeighbour::PixelNearestNeighbour(const IdxImages& images,
                                             std::vector<std::uint8_t> labels)
    : impl_(new Impl) {
  if (images.rows * images.cols != static_cast<std::size_t>(kPixelsPerImage) ||
      labels.size() != images.count || images.count == 0) {
    delete impl_;
    throw std::invalid_argument("PixelNearestNeighbour: need N 28x28 images with N labels");
  }
  const auto n = static_cast<Eigen::Index>(images.count);
  impl_->reference.resize(n, kPixelsPerImage);
  for (Eigen::Index i = 0; i < n; ++i)
    for (int j = 0; j < kPixelsPerImage; ++j)
      impl_->reference(i, j) =
          images.pixels[static_cast<std::size_t>(i) * kPixelsPerImage + j] / 255.0f;
  impl_->norms = impl_->reference.rowwise().squaredNorm();
  impl_->labels = std::move(labels);
}

PixelNearestNeighbour::~PixelNearestNeighbour() { delete impl_; }

std::vector<std::uint8_t> PixelNearestNeighbour::classify(std::span<const std::uint8_t> pixels,
                                                          std::size_t count) const {
  if (pixels.size() != count * kPixelsPerImage)
    throw std::invalid_argument(
        "PixelNearestNeighbour::classify: " + std::to_string(pixels.size()) + " pixels for " +
        std::to_string(count) + " images");
  std::vector<std::uint8_t> out(count);
  constexpr std::size_t kBlock = 256;
  RowMatrix query;
  Eigen::MatrixXf dots;
  for (std::size_t start = 0; start < count; start += kBlock) {
    const std::size_t m = std::min(kBlock, count - start);
    query.resize(static_cast<Eigen::Index>(m), kPixelsPerImage);
    for (std::size_t i = 0; i < m; ++i)
      for (int j = 0; j < kPixelsPerImage; ++j)
        query(static_cast<Eigen::Index>(i), j) = pixels[(start + i) * kPixelsPerImage + j] / 255.0f;
    // ||q - r||^2 = ||q||^2 - 2 q.r + ||r||^2; ||q||^2 does not change the argmin.
    dots.noalias() = impl_->reference * query.transpose();  // (N, m)
    for (std::size_t i = 0; i < m; ++i) {
      Eigen::Index best = 0;
      (impl_->norms - 2.0f * dots.col(static_cast<Eigen::Index>(i))).minCoeff(&best);
      out[start + i] = impl_->labels[static_cast<std::size_t>(best)];
    }
  }
  return out;
}

GenerationEvalReport evaluate_generation(const GenerationEvalOptions& o, std::ostream& progress) {
  const auto t0 = Clock::now();
  const Codebook codebook = Codebook::load(o.codebook);
  if (!std::filesystem::exists(o.model))
    throw std::runtime_error(o.model.string() +
                             ": no interleaved LM (train one with `neat train mvot-lm`)");
  auto model = blt::load_byte_lm(o.model);
  const auto train_images = read_idx_images(o.dataset_dir / "train-images-idx3-ubyte.gz");
  const auto train_labels = read_idx_labels(o.dataset_dir / "train-labels-idx1-ubyte.gz");
  const PixelNearestNeighbour judge(train_images, train_labels);
  GenerationEvalReport r;
  if (o.real_test_images > 0) {
    const auto test_images = read_idx_images(o.dataset_dir / "t10k-images-idx3-ubyte.gz");
    const auto test_labels = read_idx_labels(o.dataset_dir / "t10k-labels-idx1-ubyte.gz");
    const std::size_t n = std::min(o.real_test_images, test_images.count);
    const auto predicted = judge.classify(
        std::span<const std::uint8_t>(test_images.pixels.data(), n * kPixelsPerImage), n);
    std::size_t correct = 0;
    for (std::size_t i = 0; i < n; ++i) correct += predicted[i] == test_labels[i];
    r.real_test_images = n;
    r.nn_real_test_accuracy = static_cast<double>(correct) / static_cast<double>(n);
    progress << "1-NN on " << n << " real test images: accuracy " << std::setprecision(4)
             << r.nn_real_test_accuracy << "\n"
             << std::flush;
  }
  const auto& names = fashion_mnist_classes();
  r.samples_per_class = o.sampling.samples;
  std::vector<GrayImage> tiles;
  int total_correct = 0;
  for (std::size_t c = 0; c < names.size(); ++c) {
    SamplingOptions s = o.sampling;
    s.seed = o.sampling.seed + c;
    const auto samples = generate_image_codes(*model, names[c], codebook.size(), s);
    std::vector<std::uint8_t> pixels;
    for (const auto& codes : samples) {
      auto img = codebook.decode(codes);
      pixels.insert(pixels.end(), img.begin(), img.end());
      tiles.push_back({kImageSide, kImageSide, std::move(img)});
    }
    const auto labels = judge.classify(pixels, samples.size());
    const int correct =
        static_cast<int>(std::count(labels.begin(), labels.end(), static_cast<std::uint8_t>(c)));
    r.correct_per_class[c] = correct;
    total_correct += correct;
    progress << names[c] << ": " << correct << "/" << samples.size()
             << " labelled as the prompted class\n"
             << std::flush;
  }
  r.generated_accuracy =
      static_cast<double>(total_correct) / (static_cast<double>(names.size()) * o.sampling.samples);
  if (!o.sheet.empty()) {
    if (o.sheet.has_parent_path()) std::filesystem::create_directories(o.sheet.parent_path());
    write_png(o.sheet, contact_sheet(tiles, o.sampling.samples));
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

std::vector<double> boi_probabilities(const nn::TransformerLM<float>& model,
                                      const std::vector<std::int32_t>& tokens) {
  if (tokens.empty()) throw std::invalid_argument("boi_probabilities: empty token stream");
  nn::NoGradGuard no_grad;
  const std::int64_t context = model.config().max_seq_len;
  const std::int64_t V = model.config().vocab_size;
  if (V <= kBoi) throw std::invalid_argument("boi_probabilities: vocabulary has no BOI token");
  std::vector<double> out;
  out.reserve(tokens.size());
  const auto n = static_cast<std::int64_t>(tokens.size());
  for (std::int64_t start = 0; start < n; start += context) {
    const std::int64_t len = std::min(context, n - start);
    std::vector<std::int32_t> in(tokens.begin() + start, tokens.begin() + start + len);
    const auto logits = contiguous(model.forward(in, 1, len));
    for (std::int64_t i = 0; i < len; ++i)
      out.push_back(std::exp(-row_nll(logits.data() + i * V, V, kBoi)));
  }
  return out;
}

ModalityDecision decide_next_modality(const nn::TransformerLM<float>& model,
                                      const std::vector<std::int32_t>& tokens, double threshold) {
  const double p = boi_probabilities(model, tokens).back();
  ModalityDecision d;
  d.modality = p >= threshold ? Modality::image : Modality::text;
  d.confidence = p >= threshold ? p : 1.0 - p;
  d.reason = "LM p(BOI) = " + std::to_string(p) + " against threshold " + std::to_string(threshold);
  return d;
}

}  // namespace neat::mvot
