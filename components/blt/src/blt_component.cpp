// blt component: decoding items through the entropy model, entropy patching with pooled patch
// latents, the document embedding, bits per byte, calibration and the bus handlers.
#include "neat/blt/blt_component.hpp"
#include "neat/blt/shared_model.hpp"

#include "neat/components/paths.hpp"

#include <algorithm>
#include <cmath>

#include "neat/blt/byte_lm.hpp"
#include "neat/components/messages.hpp"
#include "neat/nn/tensor.hpp"

namespace neat::blt {

namespace {
using Clock = std::chrono::steady_clock;
constexpr std::int64_t kMinDegradedContext = 16;
}  // namespace

config::Schema BltComponent::schema() {
  using config::Schema;
  return Schema::map()
      .optional("model", Schema::string().default_value("models/blt/byte_lm.bf16.ckpt"),
                "byte LM checkpoint (entropy model) written by `neat train blt`")
      .optional("mode",
                Schema::one_of({"global", "monotonic", "combined", "space", "stride"})
                    .default_value("global"),
                "patching rule (BLT §2.2-2.3)")
      .optional("threshold", Schema::number().default_value("1.335442066192627"),
                "theta_g, nats: position k starts a patch iff H_{k-1} > theta_g (global, "
                "combined); exclusive with target_mean_patch_size")
      .optional("relative_threshold", Schema::number().default_value("0.5"),
                "theta_r, nats: k starts iff H_{k-1} - H_{k-2} > theta_r (monotonic, combined)")
      .optional("stride", Schema::integer(1, 1 << 20).default_value("4"),
                "tokens per patch (stride mode)")
      .optional("target_mean_patch_size", Schema::number(1, 1e9),
                "compute budget: the threshold is found by bisection so that the mean patch size "
                "on the calibration sample is this many tokens (entropy modes only)")
      .optional("calibration_documents", Schema::integer(1, 1'000'000).default_value("1"),
                "documents in the calibration sample (the first ones of the stream)")
      .optional("max_patch_length", Schema::integer(0, 1 << 20).default_value("0"),
                "tokens; a patch that reached it ends (0: no limit)")
      .optional("patches_per_message", Schema::integer(1, 1 << 20).default_value("64"),
                "patches per blt.patches message (a document is one or more slices)")
      .optional("doc_embedding_positions", Schema::integer(1, 1 << 30).default_value("256"),
                "N: the document embedding pools the hidden states of the first N positions")
      .optional("context", Schema::integer(0, 1 << 20).default_value("0"),
                "context window, tokens: the context restarts every this many positions (0: the "
                "model's context)")
      .optional("stats_every", Schema::integer(0, 1'000'000'000).default_value("0"),
                "publish statistics every n documents (0: only at end of stream)")
      .optional("input", Schema::string().default_value("tokens"), "topic of neat.Tokens")
      .optional("patches_topic", Schema::string().default_value("blt.patches"),
                "topic for neat.blt.Patches")
      .optional("embedding_topic", Schema::string().default_value("blt.doc_embedding"),
                "topic for neat.blt.DocEmbedding")
      .optional("stats_topic", Schema::string().default_value("blt.stats"),
                "topic for neat.blt.Stats");
}

void BltComponent::configure(const YAML::Node& config, components::Context& ctx) {
  std::string model_file = "models/blt/byte_lm.bf16.ckpt";
  if (config["model"]) model_file = config["model"].as<std::string>();
  if (config["mode"]) patcher_.mode = parse_patch_mode(config["mode"].as<std::string>());
  if (config["threshold"]) patcher_.threshold = config["threshold"].as<double>();
  if (config["relative_threshold"])
    patcher_.relative_threshold = config["relative_threshold"].as<double>();
  if (config["stride"]) patcher_.stride = config["stride"].as<std::size_t>();
  if (config["max_patch_length"])
    patcher_.max_patch_length = config["max_patch_length"].as<std::size_t>();
  if (config["target_mean_patch_size"]) {
    if (config["threshold"]) {
      throw std::invalid_argument("blt: give either threshold or target_mean_patch_size, not both");
    }
    if (patcher_.mode == PatchMode::space || patcher_.mode == PatchMode::stride) {
      throw std::invalid_argument(
          "blt: target_mean_patch_size needs an entropy mode (global, "
          "monotonic or combined), not " +
          std::string(patch_mode_name(patcher_.mode)));
    }
    target_mean_patch_ = config["target_mean_patch_size"].as<double>();
  }
  if (config["calibration_documents"])
    calibration_documents_ = config["calibration_documents"].as<std::uint64_t>();
  if (config["patches_per_message"])
    patches_per_message_ = config["patches_per_message"].as<std::uint64_t>();
  if (config["doc_embedding_positions"])
    embedding_positions_ = config["doc_embedding_positions"].as<std::uint64_t>();
  if (config["stats_every"]) stats_every_ = config["stats_every"].as<std::uint64_t>();
  if (config["input"]) input_ = config["input"].as<std::string>();
  if (config["patches_topic"]) patches_topic_ = config["patches_topic"].as<std::string>();
  if (config["embedding_topic"]) embedding_topic_ = config["embedding_topic"].as<std::string>();
  if (config["stats_topic"]) stats_topic_ = config["stats_topic"].as<std::string>();
  memory_tag_ = ctx.name();
  {
    nn::MemoryTag tag(memory_tag_);
    // One copy per process and precision; bf16: Linear weights in bfloat16 (issue 8).
    model_ = shared_byte_lm(components::resolve_path(model_file),
                            byte_lm_storage(ctx.profile().precision));
    std::int64_t context = 0;
    if (config["context"]) context = config["context"].as<std::int64_t>();
    stream_ = std::make_unique<EntropyStream>(*model_, context);
  }

  auto publish = [this, &ctx](BltOutput&& out) {
    for (auto& e : out.embeddings) {
      const auto dim = static_cast<std::int64_t>(e.embedding.size());
      bus::publish(ctx.node(), embedding_topic_, e.message,
                   {bus::TensorOut::from_vector("embedding", bus::DType::f32, {dim},
                                                std::move(e.embedding))});
    }
    for (auto& s : out.slices) {
      const auto n = static_cast<std::int64_t>(s.patches.starts.size());
      const std::int64_t dim = n > 0 ? static_cast<std::int64_t>(s.latents.size()) / n : 0;
      bus::publish(ctx.node(), patches_topic_, s.patches,
                   {bus::TensorOut::from_vector("latents", bus::DType::f32, {n, dim},
                                                std::move(s.latents))});
    }
    if (out.stats) bus::publish(ctx.node(), stats_topic_, *out.stats);
  };
  bus::subscribe<components::Tokens>(
      ctx.node(), input_,
      [this, &ctx, publish](const components::Tokens& item, const bus::Message& m) {
        const auto tensors = m.tensors();
        if (tensors.size() != 1 || tensors[0].desc().name != "tokens" ||
            tensors[0].desc().dtype != bus::DType::i32 || tensors[0].desc().shape.size() != 1) {
          const auto reason = reject("item " + std::to_string(item.doc_id) + " (" + item.path +
                                     "): expected one i32 tensor 'tokens' of rank 1, got " +
                                     std::to_string(tensors.size()) + " tensor(s)");
          ctx.log().warn("rejected: {}", reason);
          return;
        }
        const auto tokens = tensors[0].to_vector<std::int32_t>();
        BltOutput out;
        try {
          out = process(item, tokens);
        } catch (const std::exception& e) {
          // process() validates its input; anything else is counted, not propagated.
          out = {};
          out.rejected = reject("item " + std::to_string(item.doc_id) + ": " + e.what());
        }
        if (!out.rejected.empty()) ctx.log().warn("rejected: {}", out.rejected);
        publish(std::move(out));
      });
  bus::subscribe<components::EndOfStream>(
      ctx.node(), input_,
      [this, &ctx, publish](const components::EndOfStream& eos, const bus::Message&) {
        publish(end_of_stream());
        bus::publish(ctx.node(), patches_topic_, eos);
        ctx.finish(stats().dump());  // the final statistics go to the run summary
      });
}

std::string BltComponent::reject(const std::string& reason) {
  ++rejected_;
  return reason;
}

BltOutput BltComponent::process(const components::Tokens& item,
                                std::span<const std::int32_t> tokens) {
  BltOutput out;
  if (!model_) throw std::logic_error("blt: process before configure loaded the model");
  const auto where = "item " + std::to_string(item.doc_id) + " (" + item.path + ")";
  if (item.token_count != tokens.size()) {
    out.rejected = reject(where + ": token_count " + std::to_string(item.token_count) +
                          " but the tensor holds " + std::to_string(tokens.size()));
    return out;
  }
  const bool text = item.modality == "text";
  if (!text && item.modality != "image") {
    out.rejected = reject(where + ": unknown modality '" + item.modality + "'");
    return out;
  }
  if (!text && tokens.empty()) {
    out.rejected = reject(where + ": an image item without tokens");
    return out;
  }
  const std::int32_t limit = text ? 256 : static_cast<std::int32_t>(model_->config().vocab_size);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= limit) {
      out.rejected = reject(where + ": token " + std::to_string(tokens[i]) + " at index " +
                            std::to_string(i) + " is outside [0, " + std::to_string(limit) +
                            ") for a " + item.modality + " item of this model");
      return out;
    }
  }
  Document doc;
  doc.item = item;
  // Every item is one document, BOS .. EOS (DESIGN.md): text bytes, or an image's BOI codes
  // EOI, as the interleaved LM was trained and as blt_predict scores it.
  doc.tokens.reserve(tokens.size() + 2);
  doc.tokens.push_back(kBos);
  doc.tokens.insert(doc.tokens.end(), tokens.begin(), tokens.end());
  doc.tokens.push_back(kEos);

  nn::MemoryTag tag(memory_tag_);
  const auto t0 = Clock::now();
  if (target_mean_patch_ && !calibration_) {
    // The calibration sample: decode for entropies now (the embedding goes out at once),
    // patch once the sample is complete.
    run_document(doc, /*embed=*/true, /*patch=*/false, out, &doc.entropies);
    pending_.push_back(std::move(doc));
    if (pending_.size() >= calibration_documents_) calibrate(out);
  } else {
    run_document(doc, /*embed=*/true, /*patch=*/true, out, nullptr);
  }
  busy_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  return out;
}

BltOutput BltComponent::end_of_stream() {
  BltOutput out;
  nn::MemoryTag tag(memory_tag_);
  const auto t0 = Clock::now();
  if (!pending_.empty()) calibrate(out);
  busy_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  BltStats s = current_stats();
  s.final = true;
  out.stats = s;
  return out;
}

void BltComponent::calibrate(BltOutput& out) {
  std::vector<std::vector<double>> sample;
  std::vector<std::vector<std::int32_t>> tokens;
  for (auto& d : pending_) {
    sample.push_back(std::move(d.entropies));
    tokens.push_back(d.tokens);
  }
  calibration_ = calibrate_threshold(sample, tokens, patcher_, *target_mean_patch_);
  (patcher_.mode == PatchMode::monotonic ? patcher_.relative_threshold : patcher_.threshold) =
      calibration_->threshold;
  // The sample's documents are decoded again, now with patching (their embeddings went out).
  for (const auto& d : pending_) run_document(d, /*embed=*/false, /*patch=*/true, out, nullptr);
  pending_.clear();
}

void BltComponent::run_document(const Document& doc, bool embed, bool patch, BltOutput& out,
                                std::vector<double>* entropies) {
  const std::int64_t dim = model_->config().dim;
  const std::size_t n = doc.tokens.size();
  const std::size_t pool = std::min<std::size_t>(embedding_positions_, n);
  std::vector<double> embedding(embed ? static_cast<std::size_t>(dim) : 0, 0.0);

  // Patch state: the open patch (latent sum, entropies) and the slice being filled.
  StreamPatcher patcher(patcher_);
  std::vector<double> latent_sum(static_cast<std::size_t>(dim), 0.0);
  double entropy_sum = 0.0;
  std::uint64_t patch_index = 0;  // patches closed so far in this document
  PatchSlice slice;
  auto new_slice = [&] {
    slice = {};
    slice.patches.doc_id = doc.item.doc_id;
    slice.patches.path = doc.item.path;
    slice.patches.modality = doc.item.modality;
    slice.patches.first_patch = patch_index;
  };
  new_slice();
  std::size_t open_start = 0;
  auto close_patch = [&](std::size_t end) {  // the open patch is [open_start, end)
    const auto length = end - open_start;
    slice.patches.starts.push_back(open_start);
    slice.patches.lengths.push_back(static_cast<std::uint32_t>(length));
    slice.patches.mean_entropy.push_back(static_cast<float>(entropy_sum / length));
    for (double v : latent_sum) slice.latents.push_back(static_cast<float>(v / length));
    std::fill(latent_sum.begin(), latent_sum.end(), 0.0);
    entropy_sum = 0.0;
    ++patch_index;
    ++stats_.patches;
  };
  auto emit_slice = [&](bool last) {
    slice.patches.last = last;
    out.slices.push_back(std::move(slice));
    new_slice();
  };

  stream_->reset();
  EntropyStreamOutput step;
  double previous_entropy = 0.0;
  // Chunks end at the embedding boundary, so that the embedding leaves as soon as N positions
  // are decoded.
  const std::size_t chunk = static_cast<std::size_t>(stream_->context());
  std::size_t at = 0;
  while (at < n) {
    std::size_t len = std::min(chunk, n - at);
    if (embed && at < pool) len = std::min(len, pool - at);
    step.clear();
    stream_->push(std::span(doc.tokens).subspan(at, len), step);
    for (std::size_t j = 0; j < len; ++j) {
      const std::size_t k = at + j;
      const std::int32_t token = doc.tokens[k];
      const double h = step.entropies[j];
      const float* row = step.hidden.data() + j * static_cast<std::size_t>(dim);
      if (entropies) entropies->push_back(h);
      if (embed && k < pool) {
        for (std::int64_t c = 0; c < dim; ++c) embedding[c] += row[c];
      }
      if (!patch) continue;
      ++stats_.tokens;
      if (token < 256) {
        ++stats_.bytes;
        if (std::isfinite(step.log_probs[j])) nats_ -= step.log_probs[j];
      }
      if (patcher.next(token, previous_entropy) && k > 0) {
        close_patch(k);
        if (slice.patches.starts.size() >= patches_per_message_) emit_slice(false);
        open_start = k;
      }
      slice.patches.tokens.push_back(token);
      slice.patches.entropies.push_back(static_cast<float>(h));
      entropy_sum += h;
      for (std::int64_t c = 0; c < dim; ++c) latent_sum[c] += row[c];
      previous_entropy = h;
    }
    at += len;
    if (embed && at == pool) {
      DocEmbeddingOut e;
      e.message.doc_id = doc.item.doc_id;
      e.message.path = doc.item.path;
      e.message.modality = doc.item.modality;
      e.message.positions = pool;
      for (double v : embedding) e.embedding.push_back(static_cast<float>(v / pool));
      out.embeddings.push_back(std::move(e));
    }
  }
  if (!patch) return;
  close_patch(n);
  emit_slice(true);
  ++stats_.documents;
  if (stats_every_ > 0 && stats_.documents % stats_every_ == 0) out.stats = current_stats();
}

BltStats BltComponent::current_stats() const {
  BltStats s = stats_;
  s.bits_per_byte = s.bytes > 0 ? nats_ / (static_cast<double>(s.bytes) * std::log(2.0)) : 0.0;
  s.bytes_per_second = busy_seconds_ > 0 ? static_cast<double>(s.bytes) / busy_seconds_ : 0.0;
  s.patches_per_second = busy_seconds_ > 0 ? static_cast<double>(s.patches) / busy_seconds_ : 0.0;
  s.mean_patch_size =
      s.patches > 0 ? static_cast<double>(s.tokens) / static_cast<double>(s.patches) : 0.0;
  s.threshold =
      patcher_.mode == PatchMode::monotonic ? patcher_.relative_threshold : patcher_.threshold;
  s.calibration_mean_patch_size = calibration_ ? calibration_->mean_patch_bytes : 0.0;
  s.rejected = rejected_;
  return s;
}

nlohmann::json BltComponent::stats() const {
  const BltStats s = current_stats();
  const auto memory = nn::memory_stats(memory_tag_);
  nlohmann::json j = {
      {"documents", s.documents},
      {"bytes", s.bytes},
      {"tokens", s.tokens},
      {"patches", s.patches},
      {"bits_per_byte", s.bits_per_byte},
      {"bytes_per_second", s.bytes_per_second},
      {"patches_per_second", s.patches_per_second},
      {"mean_patch_size", s.mean_patch_size},
      {"mode", std::string(patch_mode_name(patcher_.mode))},
      {"threshold", s.threshold},
      {"rejected", rejected_},
      {"pending_calibration_documents", pending_.size()},
      {"context", stream_ ? stream_->context() : 0},
      {"degrades", degrades_},
      {"memory", {{"current_bytes", memory.current_bytes}, {"peak_bytes", memory.peak_bytes}}}};
  if (calibration_) {
    j["calibration"] = {{"target_mean_patch_size", *target_mean_patch_},
                        {"achieved_mean_patch_size", calibration_->mean_patch_bytes},
                        {"threshold", calibration_->threshold},
                        {"iterations", calibration_->iterations}};
  }
  return j;
}

bool BltComponent::degrade(const std::string& action) {
  if (action != "shorter_window" || !stream_) return false;
  const std::int64_t shorter = std::max(kMinDegradedContext, stream_->context() / 2);
  if (shorter >= stream_->context()) return false;  // already at the floor
  nn::MemoryTag tag(memory_tag_);
  stream_->set_context(shorter);
  ++degrades_;
  return true;
}

}  // namespace neat::blt

namespace neat::components {

ComponentKind blt_kind() {
  return {"blt",
          "BLT entropy model: next-byte entropies, entropy patches with pooled latents, document "
          "embeddings, bits per byte",
          [] { return std::make_unique<neat::blt::BltComponent>(); },
          [] { return neat::blt::BltComponent::schema(); }};
}

}  // namespace neat::components
