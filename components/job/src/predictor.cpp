// blt_predict: per-document scoring under the byte LM variants; publishes blt.scores.
#include "neat/job/predictor.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/entropy_stream.hpp"
#include "neat/blt/messages.hpp"
#include "neat/blt/shared_model.hpp"
#include "neat/components/messages.hpp"
#include "neat/components/paths.hpp"
#include "neat/mvot/mvot_component.hpp"
#include "neat/nn/bf16_weights.hpp"
#include "neat/t2/shared.hpp"

namespace neat::job {

namespace {

// The model t2's adapted weights (the matrices `adapted`, t2::ExpertSet::matrices) are written
// into (t2::apply_weights). From a float32 model: a full float32 copy (t2::copy_model). From a
// model with bfloat16 Linear weights: the adapted matrices are the copy's own float32 matrices
// (the composed weights U diag(sigma * z) V^T are not bfloat16 values, and rounding them would
// cost bits per byte), and every other tensor (embeddings, norms, biases, the bfloat16 weights
// not adapted, lm_head unless adapted) is shared with the read-only model, never written: with MLP
// experts the copy holds only the 2 L MLP matrices, 8 MiB for the shipped byte LM instead of 13.8
// MiB.
std::unique_ptr<nn::TransformerLM<float>> adapted_copy(const nn::TransformerLM<float>& model,
                                                       const std::vector<std::string>& adapted) {
  if (nn::count_bf16_linear_weights(model) == 0) return t2::copy_model(model);
  auto copy = std::make_unique<nn::TransformerLM<float>>(model.config());
  auto share = [](nn::Linear<float>& to, const nn::Linear<float>& from) {
    to.weight = from.weight;
    to.weight_bf16 = from.weight_bf16;
    to.bias = from.bias;
  };
  auto own_float = [](nn::Linear<float>& to, const nn::Linear<float>& from) {
    to.weight = from.weight_is_bf16() ? from.weight_bf16.to_float() : from.weight.clone();
    to.weight.set_requires_grad(false);
    to.weight_bf16 = nn::Bf16Matrix();  // the float32 weight is the one the forward reads
    to.bias = from.bias;
  };
  copy->tok_emb.weight = model.tok_emb.weight;
  copy->pos_emb.weight = model.pos_emb.weight;
  for (std::size_t i = 0; i < model.blocks.size(); ++i) {
    auto& to = *copy->blocks[i];
    const auto& from = *model.blocks[i];
    to.norm1.weight = from.norm1.weight;
    to.norm2.weight = from.norm2.weight;
    share(to.attn.wq, from.attn.wq);
    share(to.attn.wk, from.attn.wk);
    share(to.attn.wv, from.attn.wv);
    share(to.attn.wo, from.attn.wo);
    share(to.mlp.up, from.mlp.up);
    share(to.mlp.down, from.mlp.down);
  }
  copy->norm_f.weight = model.norm_f.weight;
  share(copy->lm_head, model.lm_head);
  // Last: an adapted matrix (lm_head too, with all+head experts) gets its own float32 weight.
  for (const auto& name : adapted)
    own_float(t2::adapted_linear(*copy, name), t2::adapted_linear(model, name));
  return copy;
}

}  // namespace

config::Schema Predictor::schema() {
  using config::Schema;
  return Schema::map()
      .optional("model", Schema::string().default_value("models/blt/byte_lm.bf16.ckpt"),
                "byte LM checkpoint (relative paths: from the working directory, then the "
                "source tree)")
      .optional("tokens", Schema::string().default_value("tokens"), "mvot's token topic")
      .optional("output", Schema::string().default_value("blt.scores"), "scores topic")
      .optional("wait_ms", Schema::integer(0, 3600000).default_value("60000"),
                "how long a document waits for its adaptation and readouts, ms")
      .optional("batch", Schema::integer(1, 1024).default_value("1"),
                "context windows per forward pass at the start (then adaptive)")
      .optional("max_batch", Schema::integer(1, 1024).default_value("16"),
                "largest batch the adaptive batch size may reach")
      .optional("adaptation", Schema::string().default_value(""),
                "Transformer² decisions (t2.adaptation): enables the \"t2\" variant (\"\": off)")
      .optional("experts", Schema::string().default_value("models/t2/experts.ckpt"),
                "Transformer² expert set (`neat train t2`)")
      .optional("readout", Schema::string().default_value(""),
                "the titans node's MAG readouts (titans.readout): enables the \"titans\" "
                "variant, and \"full\" with t2 (\"\": off)")
      .optional("injection", Schema::string().default_value("models/titans/mag_ngram.ckpt"),
                "MAG model (`neat train titans`) whose gate and projection add the readouts; "
                "the titans node must run the same file");
}

void Predictor::configure(const YAML::Node& config, components::Context& ctx) {
  auto str = [&](const char* key, std::string fallback) {
    return config[key] ? config[key].as<std::string>() : fallback;
  };
  const auto model_file = components::resolve_path(str("model", "models/blt/byte_lm.bf16.ckpt"));
  // One read-only copy per process and precision (issue 8); bf16: Linear weights in bfloat16.
  const auto& precision = ctx.profile().precision;
  model_ = blt::shared_byte_lm(model_file, blt::byte_lm_storage(precision));
  output_ = str("output", output_);
  if (config["wait_ms"]) wait_ = std::chrono::milliseconds(config["wait_ms"].as<long>());
  components::AdaptiveBatchOptions b;
  b.initial = config["batch"] ? config["batch"].as<int>() : 1;
  b.max = std::max(b.initial, config["max_batch"] ? config["max_batch"].as<int>() : 16);
  b.max = ctx.profile().cap_batch(b.max);  // the profile's batch_size (issue 8)
  b.initial = std::min(b.initial, b.max);
  batch_.emplace(b);
  adaptation_topic_ = str("adaptation", "");
  if (!adaptation_topic_.empty()) {
    experts_.emplace(
        t2::ExpertSet::load(components::resolve_path(str("experts", "models/t2/experts.ckpt"))));
    // U, V in the profile's precision; shared with t2 (issue 8).
    factors_ =
        t2::shared_model_factors(model_file, t2::factor_storage(precision), experts_->matrices);
    experts_->check_compatible(*factors_);
    cache_ = t2::shared_weight_cache(
        components::resolve_path(str("experts", "models/t2/experts.ckpt")).string() + "|" +
            model_file.string() + "|" + precision,
        t2::budgeted_cache_options({}, ctx.profile().memory_budget_bytes));
    adapted_ = adapted_copy(*model_, factors_->names);
    bus::subscribe<blt::Adaptation>(ctx.node(), adaptation_topic_,
                                    [this](const blt::Adaptation& a, const bus::Message&) {
                                      auto it = pending_.find(a.doc_id);
                                      if (it != pending_.end()) {
                                        it->second.adaptation = a;
                                      } else {
                                        early_adaptations_[a.doc_id] = a;
                                      }
                                    });
  }
  readout_topic_ = str("readout", "");
  if (!readout_topic_.empty()) {
    titans::MagModel mag = titans::load_mag_model(
        components::resolve_path(str("injection", "models/titans/mag_ngram.ckpt")));
    for (auto& [name, t] : mag.injection.named()) t.set_requires_grad(false);
    injection_.emplace(std::move(mag.injection));
    const auto d = injection_->config.memory_dim;
    bus::subscribe<blt::Readout>(
        ctx.node(), readout_topic_, [this, &ctx, d](const blt::Readout& r, const bus::Message& m) {
          Readouts& doc = readouts_[r.doc_id];
          if (doc.broken) {  // the rest of a document with a rejected slice is not used
            doc.last = doc.last || r.last;
            return;
          }
          const bus::TensorView* rows = nullptr;
          const auto tensors = m.tensors();
          for (const auto& t : tensors)
            if (t.desc().name == "readout") rows = &t;
          const auto n = static_cast<std::int64_t>(r.patch_count);
          const bool in_order = r.first_patch == doc.starts.size() && !doc.last;
          if (!rows || rows->desc().dtype != bus::DType::f32 ||
              rows->desc().shape != std::vector<std::int64_t>{n, d} ||
              r.starts.size() != r.patch_count || !in_order) {
            doc.broken = true;
            doc.last = doc.last || r.last;
            ++rejected_;
            ctx.log().error(
                "doc {}: titans.readout slice at patch {} rejected (needs tensor \"readout\" "
                "f32 [{}, {}], {} starts, in order after {} patches); its titans variant is "
                "scored as the base LM",
                r.doc_id, r.first_patch, n, d, r.patch_count, doc.starts.size());
            return;
          }
          const auto v = rows->to_vector<float>();
          doc.rows.insert(doc.rows.end(), v.begin(), v.end());
          for (auto s : r.starts) doc.starts.push_back(static_cast<std::int64_t>(s));
          doc.last = r.last;
        });
    // The titans node forwards the end of the stream; the predictor ends on `tokens`'.
    bus::subscribe<components::EndOfStream>(
        ctx.node(), readout_topic_, [](const components::EndOfStream&, const bus::Message&) {});
  }
  const auto tokens = str("tokens", "tokens");
  bus::subscribe<mvot::Tokens>(
      ctx.node(), tokens, [this, &ctx](const mvot::Tokens& t, const bus::Message& m) {
        Pending doc;
        doc.path = t.path;
        doc.modality = t.modality;
        doc.item_bytes = t.item_bytes;
        for (const auto& v : m.tensors()) {
          if (v.desc().name == "tokens" && v.desc().dtype == bus::DType::i32) {
            doc.tokens = v.to_vector<std::int32_t>();
          }
        }
        if (doc.tokens.size() != t.token_count) {
          ++rejected_;
          ctx.log().error("item {} ({}): tokens tensor missing or {} tokens for token_count {}",
                          t.doc_id, t.path, doc.tokens.size(), t.token_count);
          return;
        }
        doc.arrived = std::chrono::steady_clock::now();
        doc.deadline = doc.arrived + wait_;
        if (auto early = early_adaptations_.find(t.doc_id); early != early_adaptations_.end()) {
          doc.adaptation = early->second;
          early_adaptations_.erase(early);
        }
        pending_[t.doc_id] = std::move(doc);
      });
  bus::subscribe<components::EndOfStream>(
      ctx.node(), tokens, [this](const components::EndOfStream& eos, const bus::Message&) {
        eos_seen_ = true;
        eos_items_ = eos.items;
        eos_bytes_ = eos.bytes;
      });
}

void Predictor::score(components::Context& ctx, std::uint64_t doc_id, Pending& doc) {
  const auto t0 = std::chrono::steady_clock::now();
  // A document is BOS, its tokens, EOS (mvot sends the item's tokens; text as bytes).
  std::vector<std::int32_t> tokens;
  tokens.reserve(doc.tokens.size() + 2);
  tokens.push_back(blt::kBos);
  tokens.insert(tokens.end(), doc.tokens.begin(), doc.tokens.end());
  tokens.push_back(blt::kEos);
  blt::Scores s;
  s.doc_id = doc_id;
  s.path = doc.path;
  s.modality = doc.modality;
  s.token_count = tokens.size();
  for (std::size_t t = 1; t < tokens.size(); ++t) s.bytes += tokens[t] < 256 ? 1 : 0;
  std::vector<float> logprob;
  nn::NoGradGuard no_grad;  // scoring only: no graph (the MAG memory's parameters are leaves)
  try {
    const auto lp = blt::target_log_probs(*model_, tokens, batch_->size());
    s.variants.push_back("base");
    s.bits.push_back(blt::byte_bits(tokens, lp));
    logprob.assign(lp.begin(), lp.end());
    if (experts_) {
      // Pass 2 of Transformer²: the document's expert mixture composed into the MLP weights
      // of the model copy. A document without a decision (t2 missed the deadline, or an image)
      // is scored by the base weights, counted as a miss.
      std::vector<double> t2_lp = lp;
      if (doc.adaptation && doc.modality == "text") {
        t2::apply_adaptation(*doc.adaptation, *experts_, *factors_, *cache_, *adapted_);
        t2_lp = blt::target_log_probs(*adapted_, tokens, batch_->size());
      } else if (doc.modality == "text") {
        ++missed_adaptations_;
      }
      s.variants.push_back("t2");
      s.bits.push_back(blt::byte_bits(tokens, t2_lp));
      logprob.insert(logprob.end(), t2_lp.begin(), t2_lp.end());
    }
    if (injection_) {
      // Titans (MAG): the document's patches by the entropy model, the memory learning
      // "what followed" chunk by chunk at test time, its readout injected through the gate.
      // Titans (MAG): the titans node's readouts (memory learning at test time from the
      // document's earlier patches) injected through the gate; without them (missed deadline,
      // a broken slice) the variant is the base LM, counted.
      WindowHook hook;
      const auto node = readouts_.find(doc_id);
      if (node != readouts_.end()) {
        const auto patch_of = patch_of_position(node->second, tokens.size());
        if (!patch_of.empty())
          hook = titans::make_readout_hook(*injection_, patch_of, node->second.rows);
        readouts_.erase(node);
      }
      if (!hook) ++missed_readouts_;
      const auto titans_lp =
          hook ? blt::target_log_probs(*model_, tokens, batch_->size(), hook) : lp;
      s.variants.push_back("titans");
      s.bits.push_back(blt::byte_bits(tokens, titans_lp));
      logprob.insert(logprob.end(), titans_lp.begin(), titans_lp.end());
      if (experts_) {  // both: the adapted weights (written above) with the memory readout
        const auto& full_model = doc.adaptation && doc.modality == "text" ? *adapted_ : *model_;
        const auto full_lp = blt::target_log_probs(full_model, tokens, batch_->size(), hook);
        s.variants.push_back("full");
        s.bits.push_back(blt::byte_bits(tokens, full_lp));
        logprob.insert(logprob.end(), full_lp.begin(), full_lp.end());
      }
    }
  } catch (const std::invalid_argument& e) {
    ++rejected_;
    ctx.log().error("item {} ({}): {}", doc_id, doc.path, e.what());
    return;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  busy_seconds_ += seconds;
  tokens_scored_ += tokens.size();
  if (seconds > 0) batch_->observe(double(tokens.size()) / seconds);
  ++items_done_;
  bytes_ += s.bytes;
  for (std::size_t v = 0; v < s.variants.size(); ++v) bits_[s.variants[v]] += s.bits[v];
  latency_ms_.push_back(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - doc.arrived)
          .count());
  const auto n = static_cast<std::int64_t>(logprob.size());
  bus::publish(ctx.node(), output_, s,
               {bus::TensorOut::from_vector("logprob", bus::DType::f32,
                                            {static_cast<std::int64_t>(s.variants.size()),
                                             n / static_cast<std::int64_t>(s.variants.size())},
                                            std::move(logprob))});
}

bool Predictor::step(components::Context& ctx) {
  if (pending_.empty()) {
    if (eos_seen_ && !eos_sent_) {
      bus::publish(ctx.node(), output_, components::EndOfStream{eos_items_, eos_bytes_});
      eos_sent_ = true;
    }
    return false;
  }
  // Documents in id order; each is scored once its inputs are in, or at its deadline.
  auto it = pending_.begin();
  if (!ready(it->first, it->second) && std::chrono::steady_clock::now() < it->second.deadline) {
    return false;  // waiting for t2 (the host calls step again after its poll interval)
  }
  score(ctx, it->first, it->second);
  pending_.erase(it);
  return true;
}

nlohmann::json Predictor::stats() const {
  auto quantile = [this](double q) {
    if (latency_ms_.empty()) return 0.0;
    auto v = latency_ms_;
    const auto k = static_cast<std::size_t>(q * double(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
  };
  nlohmann::json bits = nlohmann::json::object();
  for (const auto& [v, b] : bits_) bits[v] = b;
  return {{"progress",
           {{"items_done", items_done_},
            {"bytes", bytes_},
            {"bits", bits_.count("base") ? bits_.at("base") : 0.0}}},
          {"pending", pending_.size()},
          {"rejected", rejected_},
          {"latency_ms",
           {{"p50", quantile(0.5)}, {"p99", quantile(0.99)}, {"items", latency_ms_.size()}}},
          {"missed_adaptations", missed_adaptations_},
          {"missed_readouts", missed_readouts_},
          {"weight_cache", cache_ ? nlohmann::json{{"hits", cache_->stats().hits},
                                                   {"misses", cache_->stats().misses},
                                                   {"hit_rate", cache_->stats().hit_rate()}}
                                  : nlohmann::json()},
          {"bits", bits},
          {"tokens_per_second", busy_seconds_ > 0 ? double(tokens_scored_) / busy_seconds_ : 0.0},
          {"batch", batch_ ? batch_->to_json() : nlohmann::json()}};
}

bool Predictor::ready(std::uint64_t doc_id, const Pending& doc) const {
  // t2 decides text documents only (an image's embedding has no domain prototype to match);
  // the titans node reads every item's patches.
  const bool adapted = !experts_ || doc.modality != "text" || doc.adaptation.has_value();
  if (!injection_) return adapted;
  const auto r = readouts_.find(doc_id);
  return adapted && r != readouts_.end() && r->second.last;
}

std::vector<std::int64_t> Predictor::patch_of_position(const Readouts& r,
                                                       std::size_t positions) const {
  const auto d = static_cast<std::size_t>(injection_->config.memory_dim);
  if (r.broken || !r.last || r.starts.empty() || r.starts.front() != 0 ||
      r.rows.size() != r.starts.size() * d) {
    return {};
  }
  for (std::size_t p = 1; p < r.starts.size(); ++p)
    if (r.starts[p] <= r.starts[p - 1]) return {};                        // starts must increase
  if (static_cast<std::size_t>(r.starts.back()) >= positions) return {};  // inside the document
  std::vector<std::int64_t> patch_of(positions);
  std::size_t p = 0;
  for (std::size_t i = 0; i < positions; ++i) {
    while (p + 1 < r.starts.size() && static_cast<std::size_t>(r.starts[p + 1]) <= i) ++p;
    patch_of[i] = static_cast<std::int64_t>(p);
  }
  return patch_of;
}

bool Predictor::degrade(const std::string& action) {
  if (action != "smaller_batch" || !batch_) return false;
  batch_->shrink();
  return true;
}

}  // namespace neat::job
