// Incremental next-token entropies with the byte LM's KV cache (BLT §2.3, eq. 2).
#include "neat/blt/entropy_stream.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace neat::blt {

LogitRowStats logit_row_stats(std::span<const float> logits) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double z = 0.0, weighted = 0.0;
  for (const float l : logits) {
    const double shifted = static_cast<double>(l - mx);
    const double e = std::exp(shifted);
    z += e;
    weighted += e * shifted;
  }
  LogitRowStats s;
  s.logsumexp = mx + std::log(z);
  s.entropy = std::log(z) - weighted / z;  // H = log Z - E_p[z - max]
  return s;
}

void EntropyStreamOutput::clear() {
  entropies.clear();
  log_probs.clear();
  hidden.clear();
}

namespace {

std::int64_t checked_context(const nn::TransformerLM<float>& model, std::int64_t context) {
  const std::int64_t max = model.config().max_seq_len;
  if (context == 0) return max;
  if (context < 1 || context > max) {
    throw std::invalid_argument("blt::EntropyStream: context " + std::to_string(context) +
                                " outside [1, " + std::to_string(max) + "]");
  }
  return context;
}

}  // namespace

EntropyStream::EntropyStream(const nn::TransformerLM<float>& model, std::int64_t context)
    : model_(model), context_(checked_context(model, context)) {
  set_context(context_);
}

void EntropyStream::set_context(std::int64_t context) {
  context_ = checked_context(model_, context);
  cache_.clear();
  for (const auto& block : model_.blocks) cache_.push_back(block->attn.make_cache(1, context_));
}

void EntropyStream::reset() {
  for (auto& c : cache_) c.length = 0;
  position_ = 0;
  last_logits_.clear();
}

void EntropyStream::push(std::span<const std::int32_t> tokens, EntropyStreamOutput& out) {
  const std::int64_t vocab = model_.config().vocab_size;
  const std::int64_t dim = model_.config().dim;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      throw std::out_of_range("blt::EntropyStream: token " + std::to_string(tokens[i]) +
                              " at index " + std::to_string(i) + " is outside the vocabulary [0, " +
                              std::to_string(vocab) + ")");
    }
  }
  nn::NoGradGuard no_grad;
  std::size_t done = 0;
  while (done < tokens.size()) {
    if (cache_.front().length >= context_) {
      for (auto& c : cache_) c.length = 0;  // the context restarts; the document goes on
    }
    const std::size_t room = static_cast<std::size_t>(context_ - cache_.front().length);
    const std::size_t n = std::min(room, tokens.size() - done);
    const auto window = tokens.subspan(done, n);
    if (n < kTokenDecoderBelow) {
      if (!decoder_) decoder_ = std::make_unique<nn::TokenDecoder>(model_);
      for (const std::int32_t token : window) {
        decoder_->step(token, cache_);
        record(token, decoder_->hidden(), decoder_->logits(), out);
      }
    } else {
      const std::vector<std::int32_t> ids(window.begin(), window.end());
      nn::Tensor<float> hidden = model_.hidden_cached(ids, 1, cache_);  // (1, n, C)
      if (!hidden.is_contiguous()) hidden = hidden.clone();
      nn::Tensor<float> logits = model_.lm_head.forward(hidden);  // (1, n, V)
      if (!logits.is_contiguous()) logits = logits.clone();
      const auto C = static_cast<std::size_t>(dim), V = static_cast<std::size_t>(vocab);
      for (std::size_t t = 0; t < n; ++t)
        record(window[t], {hidden.data() + t * C, C}, {logits.data() + t * V, V}, out);
    }
    done += n;
    position_ += static_cast<std::int64_t>(n);
  }
}

void EntropyStream::record(std::int32_t token, std::span<const float> hidden,
                           std::span<const float> logits, EntropyStreamOutput& out) {
  out.hidden.insert(out.hidden.end(), hidden.begin(), hidden.end());
  if (last_logits_.empty()) {
    out.log_probs.push_back(std::numeric_limits<double>::quiet_NaN());
  } else {
    out.log_probs.push_back(static_cast<double>(last_logits_[token]) - last_logsumexp_);
  }
  const auto s = nn::softmax_entropy(logits);
  out.entropies.push_back(s.entropy);
  last_logits_.assign(logits.begin(), logits.end());
  last_logsumexp_ = s.log_partition;
}

}  // namespace neat::blt
