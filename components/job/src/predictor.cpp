// blt_predict: per-document scoring under the byte LM variants; publishes blt.scores.
#include "neat/job/predictor.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/entropy_stream.hpp"
#include "neat/blt/messages.hpp"
#include "neat/components/messages.hpp"
#include "neat/components/paths.hpp"
#include "neat/mvot/mvot_component.hpp"

namespace neat::job {

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
      .optional("memory", Schema::string().default_value(""),
                "Titans MAG model (`neat train titans`, models/titans/mag.ckpt): enables the "
                "\"titans\" variant, and \"full\" with t2 (\"\": off)");
}

void Predictor::configure(const YAML::Node& config, components::Context& ctx) {
  auto str = [&](const char* key, std::string fallback) {
    return config[key] ? config[key].as<std::string>() : fallback;
  };
  model_ =
      blt::load_byte_lm(components::resolve_path(str("model", "models/blt/byte_lm.bf16.ckpt")));
  output_ = str("output", output_);
  if (config["wait_ms"]) wait_ = std::chrono::milliseconds(config["wait_ms"].as<long>());
  components::AdaptiveBatchOptions b;
  b.initial = config["batch"] ? config["batch"].as<int>() : 1;
  b.max = std::max(b.initial, config["max_batch"] ? config["max_batch"].as<int>() : 16);
  batch_.emplace(b);
  adaptation_topic_ = str("adaptation", "");
  if (!adaptation_topic_.empty()) {
    experts_.emplace(
        t2::ExpertSet::load(components::resolve_path(str("experts", "models/t2/experts.ckpt"))));
    factors_.emplace(t2::ModelFactors::decompose(*model_, t2::SvdOptions{}));
    experts_->check_compatible(*factors_);
    cache_.emplace();
    adapted_ = t2::copy_model(*model_);
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
  if (const auto memory = str("memory", ""); !memory.empty()) {
    mag_.emplace(titans::load_mag_model(components::resolve_path(memory)));
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
    if (mag_) {
      // Titans (MAG): the document's patches by the entropy model, the memory learning
      // "what followed" chunk by chunk at test time, its readout injected through the gate.
      const auto dp = titans::patch_document(*model_, tokens, mag_->patcher);
      const auto readouts = titans::mag_readouts(*mag_->memory, dp.latents, /*update=*/true);
      const auto hook = titans::make_readout_hook(mag_->injection, dp.patch_of_position,
                                                  readouts.contiguous().to_vector());
      const auto titans_lp = blt::target_log_probs(*model_, tokens, batch_->size(), hook);
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
  if (!ready(it->second) && std::chrono::steady_clock::now() < it->second.deadline) {
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
          {"weight_cache", cache_ ? nlohmann::json{{"hits", cache_->stats().hits},
                                                   {"misses", cache_->stats().misses},
                                                   {"hit_rate", cache_->stats().hit_rate()}}
                                  : nlohmann::json()},
          {"bits", bits},
          {"tokens_per_second", busy_seconds_ > 0 ? double(tokens_scored_) / busy_seconds_ : 0.0},
          {"batch", batch_ ? batch_->to_json() : nlohmann::json()}};
}

bool Predictor::ready(const Pending& doc) const {
  // t2 decides text documents only (an image's embedding has no domain prototype to match).
  return !experts_ || doc.modality != "text" || doc.adaptation.has_value();
}

bool Predictor::degrade(const std::string& action) {
  if (action != "smaller_batch" || !batch_) return false;
  batch_->shrink();
  return true;
}

}  // namespace neat::job
