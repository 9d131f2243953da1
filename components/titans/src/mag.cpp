// MAG injection of the Titans memory readout into the frozen byte LM (Behrouz et al. 2024,
// §4.2): patching and latents from the byte LM, the causal readouts of "what followed this
// context" (latent or byte "copy" values), the gated residual with per-offset projections, the
// block hook for predictors and the model file.
#include "neat/titans/mag.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <span>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "neat/blt/entropy_stream.hpp"
#include "neat/nn/checkpoint.hpp"
#include "neat/nn/ops.hpp"

namespace neat::titans {

using nn::Tensor;

template <typename T>
MagInjection<T> MagInjection<T>::init(const MagConfig& config, std::uint64_t seed) {
  if (config.model_dim < 1 || config.memory_dim < 1 || config.layer < 0) {
    throw std::invalid_argument("titans mag: model_dim and memory_dim must be >= 1, layer >= 0");
  }
  std::mt19937_64 rng(seed);
  MagInjection<T> m;
  m.config = config;
  m.w_o = Tensor<T>::zeros({config.memory_dim, config.model_dim}, true);
  m.w_g = Tensor<T>::randn({config.model_dim, config.model_dim}, rng,
                           T(1) / std::sqrt(static_cast<T>(config.model_dim)), 0, true);
  m.b_g = Tensor<T>::zeros({config.model_dim}, true);
  if (config.offsets < 0) throw std::invalid_argument("titans mag: offsets must be >= 0");
  if (config.offsets > 0)
    m.w_off = Tensor<T>::zeros({config.memory_dim, config.offsets * config.model_dim}, true);
  if (config.readout_norm) m.r_gain = Tensor<T>::full({config.memory_dim}, T(1), true);
  if (config.gate_level) m.w_level = Tensor<T>::zeros({config.model_dim}, true);
  return m;
}

template <typename T>
std::vector<std::pair<std::string, Tensor<T>>> MagInjection<T>::named() const {
  std::vector<std::pair<std::string, Tensor<T>>> out = {{"w_o", w_o}, {"w_g", w_g}, {"b_g", b_g}};
  if (config.offsets > 0) out.emplace_back("w_off", w_off);
  if (config.readout_norm) out.emplace_back("r_gain", r_gain);
  if (config.gate_level) out.emplace_back("w_level", w_level);
  return out;
}

template <typename T>
Tensor<T> MagInjection<T>::inject(const Tensor<T>& x, const Tensor<T>& readout,
                                  const std::vector<std::int32_t>* offsets) const {
  const std::int64_t C = config.model_dim, d = config.memory_dim;
  if (x.dim() != 3 || x.size(2) != C || readout.dim() != 3 || readout.size(2) != d ||
      readout.size(0) != x.size(0) || readout.size(1) != x.size(1)) {
    throw std::invalid_argument("titans mag: inject needs x (B, L, " + std::to_string(C) +
                                ") and readout (B, L, " + std::to_string(d) + "), got " +
                                nn::shape_string(x.shape()) + " and " +
                                nn::shape_string(readout.shape()));
  }
  const Tensor<T> x2 = nn::reshape(x, {-1, C});
  Tensor<T> r2 = nn::reshape(readout, {-1, d});
  Tensor<T> gate_logits = nn::add(nn::matmul(x2, w_g), b_g);  // (B L, C)
  if (config.gate_level) {
    // ℓ = log(mean(r²) + 1e-8) per row (B L, 1), times w_level (C), broadcast.
    const Tensor<T> level =
        nn::log(nn::add_scalar(nn::mean(nn::mul(r2, r2), {1}, true), static_cast<T>(1e-8)));
    gate_logits = nn::add(gate_logits, nn::mul(level, w_level));
  }
  const Tensor<T> gate = nn::sigmoid(gate_logits);
  if (config.readout_norm) r2 = nn::rms_norm(r2, r_gain, T(1e-5));
  Tensor<T> term = nn::matmul(r2, w_o);  // (B L, C)
  if (config.offsets > 0) {
    const std::int64_t K = config.offsets, rows = x2.size(0);
    if (!offsets || static_cast<std::int64_t>(offsets->size()) != rows) {
      throw std::invalid_argument("titans mag: inject with per-offset projections needs " +
                                  std::to_string(rows) + " offsets, got " +
                                  std::to_string(offsets ? offsets->size() : 0));
    }
    // r W_off for every offset block at once, (B L, K C) = (B L K, C); row i K + o(i) is
    // r_i W_off[o(i)].
    std::vector<std::int32_t> index(static_cast<std::size_t>(rows));
    for (std::int64_t i = 0; i < rows; ++i) {
      const std::int32_t o = (*offsets)[static_cast<std::size_t>(i)];
      if (o < 0) throw std::invalid_argument("titans mag: negative offset in patch");
      index[static_cast<std::size_t>(i)] =
          static_cast<std::int32_t>(i * K + std::min<std::int64_t>(o, K - 1));
    }
    const Tensor<T> all = nn::reshape(nn::matmul(r2, w_off), {rows * K, C});
    term = nn::add(term, nn::gather_rows(all, index, {rows}));
  }
  return nn::reshape(nn::add(x2, nn::mul(gate, term)), x.shape());
}

template <typename T>
ByteValues<T> ByteValues<T>::init(std::int64_t offsets, std::int64_t vocab, std::int64_t input_dim,
                                  std::uint64_t seed) {
  if (offsets < 1 || vocab < 1 || input_dim < 1) {
    throw std::invalid_argument("titans mag: byte values need offsets, vocab and input_dim >= 1");
  }
  std::mt19937_64 rng(seed);
  ByteValues<T> b;
  b.offsets = offsets;
  b.vocab = vocab;
  b.table = Tensor<T>::randn({offsets * (vocab + 1), input_dim}, rng,
                             T(1) / std::sqrt(static_cast<T>(offsets * input_dim)), 0, true);
  return b;
}

template <typename T>
Tensor<T> ByteValues<T>::embed(const std::vector<std::int32_t>& ids, std::int64_t n) const {
  if (!table.defined()) throw std::invalid_argument("titans mag: byte values without a table");
  const std::int64_t rows = table.size(0);
  if (n < 1 || static_cast<std::int64_t>(ids.size()) != n * offsets) {
    throw std::invalid_argument("titans mag: " + std::to_string(ids.size()) + " byte ids for " +
                                std::to_string(n) + " patches of " + std::to_string(offsets) +
                                " offsets");
  }
  for (const auto id : ids) {
    if (id < 0 || id >= rows) {
      throw std::invalid_argument("titans mag: byte id " + std::to_string(id) +
                                  " outside the table of " + std::to_string(rows) + " rows");
    }
  }
  return nn::sum(nn::gather_rows(table, ids, {n, offsets}), {1}, false);  // (n, d_in)
}

std::vector<std::int32_t> target_byte_ids(const std::vector<std::int32_t>& tokens,
                                          const std::vector<std::int64_t>& starts,
                                          std::int64_t first, std::int64_t count,
                                          std::int64_t offsets, std::int64_t vocab) {
  const auto P = static_cast<std::int64_t>(starts.size());
  if (first < 0 || count < 0 || first + count > P || offsets < 1 || vocab < 1) {
    throw std::invalid_argument("titans mag: target ids of patches [" + std::to_string(first) +
                                ", " + std::to_string(first + count) + ") of " + std::to_string(P) +
                                " (K " + std::to_string(offsets) + ")");
  }
  std::vector<std::int32_t> ids;
  ids.reserve(static_cast<std::size_t>(count * offsets));
  if (count == 0) return ids;
  const std::int64_t base = starts[static_cast<std::size_t>(first)];
  const auto n = static_cast<std::int64_t>(tokens.size());
  for (std::int64_t p = first; p < first + count; ++p) {
    const std::int64_t s = starts[static_cast<std::size_t>(p)] - base;
    const std::int64_t end =
        p + 1 < P ? starts[static_cast<std::size_t>(p + 1)] - base : n - 1;  // last target
    if (s < 0 || end < s || end >= n) {
      throw std::invalid_argument("titans mag: patch " + std::to_string(p) + " spans positions " +
                                  std::to_string(s) + ".." + std::to_string(end) + " of " +
                                  std::to_string(n) +
                                  " tokens (starts out of order or tokens "
                                  "missing)");
    }
    for (std::int64_t o = 0; o < offsets; ++o) {
      std::int64_t b = vocab;  // no target at this offset
      if (s + 1 + o <= end) {
        b = tokens[static_cast<std::size_t>(s + 1 + o)];
        if (b < 0 || b >= vocab) {
          throw std::invalid_argument("titans mag: token " + std::to_string(b) + " at position " +
                                      std::to_string(base + s + 1 + o) +
                                      " is outside the vocabulary of " + std::to_string(vocab));
        }
      }
      ids.push_back(static_cast<std::int32_t>(o * (vocab + 1) + b));
    }
  }
  return ids;
}

std::vector<std::int32_t> offsets_in_patch(const std::vector<std::int64_t>& patch_of_position) {
  std::vector<std::int32_t> out(patch_of_position.size());
  std::int64_t current = -1, first = 0;
  for (std::size_t i = 0; i < patch_of_position.size(); ++i) {
    const std::int64_t p = patch_of_position[i];
    if (p != current) {
      if (p != current + 1) {
        throw std::invalid_argument("titans mag: patch " + std::to_string(p) + " at position " +
                                    std::to_string(i) + " after patch " + std::to_string(current) +
                                    " (patches must be 0, 1, 2, ...)");
      }
      current = p;
      first = static_cast<std::int64_t>(i);
    }
    out[i] = static_cast<std::int32_t>(static_cast<std::int64_t>(i) - first);
  }
  return out;
}

DocumentPatches patch_document(const nn::TransformerLM<float>& model,
                               const std::vector<std::int32_t>& tokens,
                               const blt::PatcherOptions& patcher, std::int64_t capture_layer) {
  nn::NoGradGuard no_grad;
  const auto n = static_cast<std::int64_t>(tokens.size());
  const std::int64_t context = model.config().max_seq_len, C = model.config().dim;
  const std::int64_t vocab = model.config().vocab_size;
  if (n < 2) throw std::invalid_argument("titans: patch_document needs BOS and >= 1 token");
  for (std::int64_t i = 0; i < n; ++i) {
    if (tokens[static_cast<std::size_t>(i)] < 0 || tokens[static_cast<std::size_t>(i)] >= vocab) {
      throw std::invalid_argument("titans: token " + std::to_string(tokens[i]) + " at position " +
                                  std::to_string(i) + " is outside the vocabulary");
    }
  }
  if (capture_layer >= 0 && ((n - 1) % context != 0 || capture_layer >= model.config().layers)) {
    throw std::invalid_argument(
        "titans: capturing a layer needs (tokens - 1) a multiple of the context " +
        std::to_string(context) + " and a layer below " + std::to_string(model.config().layers));
  }
  DocumentPatches out;
  out.entropies.assign(static_cast<std::size_t>(n), 0.0);
  std::vector<float> hidden(static_cast<std::size_t>(n * C));
  std::vector<Tensor<float>> captured;
  // Windows [s, s + len): the full windows of target_log_probs, then the last position alone.
  const std::int64_t group_size = 8;
  std::vector<std::int64_t> full;
  for (std::int64_t s = 0; s + context <= n; s += context) full.push_back(s);
  auto run = [&](const std::vector<std::int64_t>& starts, std::int64_t len) {
    std::vector<std::int32_t> in;
    for (auto s : starts) in.insert(in.end(), tokens.begin() + s, tokens.begin() + s + len);
    const auto b = static_cast<std::int64_t>(starts.size());
    nn::TransformerLM<float>::BlockHook hook;
    if (capture_layer >= 0) {
      hook = [&](std::int64_t layer, const Tensor<float>& x) {
        if (layer == capture_layer) captured.push_back(x.contiguous());
        return x;
      };
    }
    const Tensor<float> h = model.hidden(in, b, len, hook).contiguous();
    const Tensor<float> logits = model.lm_head.forward(h).contiguous();
    for (std::int64_t r = 0; r < b; ++r) {
      for (std::int64_t i = 0; i < len; ++i) {
        const std::int64_t pos = starts[static_cast<std::size_t>(r)] + i, row = r * len + i;
        std::memcpy(hidden.data() + pos * C, h.data() + row * C, sizeof(float) * C);
        out.entropies[static_cast<std::size_t>(pos)] =
            blt::logit_row_stats({logits.data() + row * vocab, static_cast<std::size_t>(vocab)})
                .entropy;
      }
    }
  };
  for (std::size_t g = 0; g < full.size(); g += group_size) {
    run(std::vector<std::int64_t>(
            full.begin() + static_cast<std::ptrdiff_t>(g),
            full.begin() + static_cast<std::ptrdiff_t>(std::min(full.size(), g + group_size))),
        context);
  }
  const std::int64_t covered = static_cast<std::int64_t>(full.size()) * context;
  if (covered < n) {
    if (capture_layer >= 0) {  // the lone last position is not part of the training windows
      const auto keep = captured;
      run({covered}, n - covered);
      captured = keep;
    } else {
      run({covered}, n - covered);
    }
  }
  const auto flags = blt::patch_starts(out.entropies, tokens, patcher);
  out.patch_of_position.resize(static_cast<std::size_t>(n));
  std::int64_t p = -1;
  for (std::int64_t i = 0; i < n; ++i) {
    if (flags[static_cast<std::size_t>(i)] || i == 0) {
      ++p;
      out.patch_starts.push_back(i);
    }
    out.patch_of_position[static_cast<std::size_t>(i)] = p;
  }
  const auto P = static_cast<std::int64_t>(out.patch_starts.size());
  std::vector<double> sums(static_cast<std::size_t>(P * C), 0.0);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(P), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t q = out.patch_of_position[static_cast<std::size_t>(i)];
    ++counts[static_cast<std::size_t>(q)];
    for (std::int64_t c = 0; c < C; ++c)
      sums[static_cast<std::size_t>(q * C + c)] += hidden[static_cast<std::size_t>(i * C + c)];
  }
  std::vector<float> latents(static_cast<std::size_t>(P * C));
  for (std::int64_t q = 0; q < P; ++q)
    for (std::int64_t c = 0; c < C; ++c)
      latents[static_cast<std::size_t>(q * C + c)] = static_cast<float>(
          sums[static_cast<std::size_t>(q * C + c)] / counts[static_cast<std::size_t>(q)]);
  out.latents = Tensor<float>::from_vector({P, C}, latents);
  if (capture_layer >= 0) out.captured = nn::concat(captured, 0);
  return out;
}

namespace {

// splitmix64 (Steele, Lea & Flood 2014): the hash of an n-gram and the stream of its signs.
std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

std::int64_t NgramKeys::longest() const {
  std::int64_t n = 0;
  for (const auto v : sizes) n = std::max(n, v);
  return n;
}

void NgramKeys::validate() const {
  if (sizes.empty()) throw std::invalid_argument("titans n-gram keys: ngrams is empty");
  for (const auto n : sizes) {
    if (n < 1 || n > 64)
      throw std::invalid_argument("titans n-gram keys: n-gram size " + std::to_string(n) +
                                  " outside [1, 64]");
  }
  if (dim < 1 || dim % static_cast<std::int64_t>(sizes.size()) != 0) {
    throw std::invalid_argument("titans n-gram keys: dim " + std::to_string(dim) +
                                " is not a positive multiple of the " +
                                std::to_string(sizes.size()) + " n-gram sizes");
  }
}

void NgramKeys::features(const std::vector<std::int32_t>& tokens, std::int64_t offset,
                         std::int64_t end, float* out) const {
  const auto have = static_cast<std::int64_t>(tokens.size());
  const auto m = static_cast<std::int64_t>(sizes.size());
  const std::int64_t block = dim / m;
  const float amplitude = 1.0f / std::sqrt(static_cast<float>(dim));
  if (end < offset || end >= offset + have) {
    throw std::invalid_argument("titans n-gram keys: position " + std::to_string(end) +
                                " outside the given tokens [" + std::to_string(offset) + ", " +
                                std::to_string(offset + have) + ")");
  }
  for (std::int64_t b = 0; b < m; ++b) {
    const std::int64_t n = sizes[static_cast<std::size_t>(b)];
    const std::int64_t from = std::max<std::int64_t>(0, end - n + 1);
    if (from < offset) {
      throw std::invalid_argument("titans n-gram keys: the " + std::to_string(n) +
                                  "-gram ending at position " + std::to_string(end) +
                                  " needs position " + std::to_string(from) + ", tokens start at " +
                                  std::to_string(offset));
    }
    std::uint64_t h = splitmix64(0x6E6772616D6B6579ULL ^ static_cast<std::uint64_t>(n));
    for (std::int64_t i = from; i <= end; ++i)
      h = splitmix64(h ^ static_cast<std::uint64_t>(static_cast<std::uint32_t>(
                             tokens[static_cast<std::size_t>(i - offset)])));
    h = splitmix64(h ^ static_cast<std::uint64_t>(end - from + 1));  // truncated at the start
    float* o = out + b * block;
    std::uint64_t bits = 0;
    for (std::int64_t i = 0; i < block; ++i) {
      if (i % 64 == 0) bits = splitmix64(h + static_cast<std::uint64_t>(i / 64));
      o[i] = ((bits >> (i % 64)) & 1U) ? amplitude : -amplitude;
    }
  }
}

namespace {

// [unit_rows(latents) ; h(end_p)] for the patch ends `ends` (absolute positions), the tokens
// given from position `offset` on: the memory input of n-gram keys (key_inputs, MagStream).
template <typename T>
Tensor<T> with_ngram_features(const NgramKeys& keys, const Tensor<T>& latents,
                              const std::vector<std::int32_t>& tokens, std::int64_t offset,
                              const std::vector<std::int64_t>& ends) {
  const auto n = static_cast<std::int64_t>(ends.size());
  std::vector<T> h(static_cast<std::size_t>(n * keys.dim));
  std::vector<float> row(static_cast<std::size_t>(keys.dim));
  for (std::int64_t p = 0; p < n; ++p) {
    keys.features(tokens, offset, ends[static_cast<std::size_t>(p)], row.data());
    std::copy(row.begin(), row.end(), h.begin() + p * keys.dim);
  }
  return nn::concat(
      std::vector<Tensor<T>>{unit_rows(latents), Tensor<T>::from_vector({n, keys.dim}, h)}, 1);
}

}  // namespace

template <typename T>
Tensor<T> key_inputs(const NgramKeys& keys, const Tensor<T>& latents,
                     const std::vector<std::int32_t>& tokens,
                     const std::vector<std::int64_t>& patch_starts) {
  if (!keys.defined()) return latents;
  const auto P = static_cast<std::int64_t>(patch_starts.size());
  if (latents.dim() != 2 || latents.size(0) != P || P < 1) {
    throw std::invalid_argument("titans mag: " + std::to_string(P) + " patch starts for latents " +
                                nn::shape_string(latents.shape()));
  }
  std::vector<std::int64_t> ends(static_cast<std::size_t>(P));
  for (std::int64_t p = 0; p < P; ++p) {
    ends[static_cast<std::size_t>(p)] = p + 1 < P
                                            ? patch_starts[static_cast<std::size_t>(p + 1)] - 1
                                            : static_cast<std::int64_t>(tokens.size()) - 1;
  }
  return with_ngram_features(keys, latents, tokens, 0, ends);
}

template <typename T>
Tensor<T> unit_rows(const Tensor<T>& x) {
  // Unit-norm latents: the byte LM's pooled hidden states have norms of about 25, which makes
  // the values v = x W_V (and with them the inner gradients) so large that the chunked updates
  // diverge; q and k are l2-normalised by the memory anyway.
  return nn::mul(
      x, nn::exp(nn::scale(nn::log(nn::add_scalar(nn::sum(nn::mul(x, x), {-1}, true), T(1e-12))),
                           T(-0.5))));
}

template <typename T>
void MagStream<T>::start_document(std::uint64_t document, bool keep_memory) {
  if (!keep_memory || !started_) state_ = memory_->initial_state(document);
  state_.document = document;
  window_ = Tensor<T>();
  tokens_.clear();
  history_.clear();  // n-grams never reach across a document boundary
  position_ = 0;
  received_ = written_ = 0;
  started_ = true;
}

template <typename T>
Tensor<T> MagStream<T>::push(const Tensor<T>& latents, const WritePolicy& policy,
                             std::vector<ChunkRecord>* records) {
  if (values_ || keys_) {
    throw std::invalid_argument(std::string("titans mag stream: this MAG model ") +
                                (values_ ? "writes byte values" : "keys its memory by n-grams") +
                                "; push the slice's patch lengths and tokens with its latents");
  }
  return push_impl(latents, {}, policy, records);
}

template <typename T>
Tensor<T> MagStream<T>::push(const Tensor<T>& latents, const std::vector<std::uint32_t>& lengths,
                             const std::vector<std::int32_t>& tokens, const WritePolicy& policy,
                             std::vector<ChunkRecord>* records) {
  if (!values_ && !keys_) return push_impl(latents, {}, policy, records);
  const std::int64_t n = latents.dim() == 2 ? latents.size(0) : -1;
  const std::int64_t width = memory_->config().input_dim - (keys_ ? keys_->dim : 0);
  if (n < 1 || latents.size(1) != width) {
    throw std::invalid_argument("titans mag stream: latents have shape " +
                                nn::shape_string(latents.shape()) + ", expected (n >= 1, " +
                                std::to_string(width) + ")");
  }
  if (static_cast<std::int64_t>(lengths.size()) != n) {
    throw std::invalid_argument("titans mag stream: " + std::to_string(lengths.size()) +
                                " patch lengths for " + std::to_string(n) + " latent rows");
  }
  std::vector<std::vector<std::int32_t>> per_patch;
  per_patch.reserve(lengths.size());
  std::size_t at = 0;
  for (const auto len : lengths) {
    if (len < 1 || at + len > tokens.size()) {
      throw std::invalid_argument("titans mag stream: patch lengths (one of " +
                                  std::to_string(len) + ") do not match the slice's " +
                                  std::to_string(tokens.size()) + " tokens");
    }
    per_patch.emplace_back(tokens.begin() + static_cast<std::ptrdiff_t>(at),
                           tokens.begin() + static_cast<std::ptrdiff_t>(at + len));
    at += len;
  }
  if (at != tokens.size()) {
    throw std::invalid_argument("titans mag stream: patch lengths sum to " + std::to_string(at) +
                                ", the slice has " + std::to_string(tokens.size()) + " tokens");
  }
  for (const auto& pt : per_patch) {
    for (const auto t : pt) {
      if (t < 0 || (values_ && t >= values_->vocab)) {
        throw std::invalid_argument(
            "titans mag stream: token " + std::to_string(t) + " outside the vocabulary" +
            (values_ ? " of " + std::to_string(values_->vocab) : std::string()));
      }
    }
  }
  if (!keys_) return push_impl(latents, std::move(per_patch), policy, records);
  // n-gram keys: the history and the slice are the document's tokens from position_ -
  // history_.size() on; patch p of the slice ends at position_ + (sum of lengths through p) - 1.
  std::vector<std::int32_t> buffer = history_;
  buffer.insert(buffer.end(), tokens.begin(), tokens.end());
  const std::int64_t offset = position_ - static_cast<std::int64_t>(history_.size());
  std::vector<std::int64_t> ends(static_cast<std::size_t>(n));
  std::int64_t end = position_ - 1;
  for (std::int64_t p = 0; p < n; ++p)
    ends[static_cast<std::size_t>(p)] = end += lengths[static_cast<std::size_t>(p)];
  const Tensor<T> inputs = with_ngram_features(*keys_, latents, buffer, offset, ends);
  Tensor<T> out =
      push_impl(inputs, values_ ? std::move(per_patch) : std::vector<std::vector<std::int32_t>>{},
                policy, records);
  const auto keep = static_cast<std::size_t>(keys_->longest() - 1);
  if (buffer.size() > keep)
    buffer.erase(buffer.begin(), buffer.end() - static_cast<std::ptrdiff_t>(keep));
  history_ = std::move(buffer);
  position_ += static_cast<std::int64_t>(tokens.size());
  return out;
}

template <typename T>
Tensor<T> MagStream<T>::values_of(std::int64_t n) const {
  if (!values_) return nn::slice(window_, 0, 1, n + 1);
  // Targets of patches written_ + 1 .. written_ + n: their tokens and, when it has arrived, the
  // first token of patch written_ + n + 1.
  const auto avail = static_cast<std::int64_t>(tokens_.size());
  const std::int64_t last = std::min(n + 1, avail - 1);  // local index of the last patch used
  std::vector<std::int32_t> flat;
  std::vector<std::int64_t> starts;
  for (std::int64_t a = 1; a <= last; ++a) {
    starts.push_back(static_cast<std::int64_t>(flat.size()));
    const auto& pt = tokens_[static_cast<std::size_t>(a)];
    flat.insert(flat.end(), pt.begin(), pt.end());
  }
  return values_->embed(target_byte_ids(flat, starts, 0, n, values_->offsets, values_->vocab), n);
}

template <typename T>
void MagStream<T>::drop_written(std::int64_t n) {
  window_ = nn::slice(window_, 0, n, window_.size(0));
  if (values_) tokens_.erase(tokens_.begin(), tokens_.begin() + static_cast<std::ptrdiff_t>(n));
  written_ += n;
}

template <typename T>
Tensor<T> MagStream<T>::push_impl(const Tensor<T>& latents,
                                  std::vector<std::vector<std::int32_t>> patch_tokens,
                                  const WritePolicy& policy, std::vector<ChunkRecord>* records) {
  const auto& c = memory_->config();
  if (latents.dim() != 2 || latents.size(1) != c.input_dim || latents.size(0) < 1) {
    throw std::invalid_argument("titans mag stream: latents have shape " +
                                nn::shape_string(latents.shape()) + ", expected (n >= 1, " +
                                std::to_string(c.input_dim) + ")");
  }
  if (!started_) start_document(0);
  const std::int64_t first = received_;
  window_ = window_.defined() ? nn::concat(std::vector<Tensor<T>>{window_, unit_rows(latents)}, 0)
                              : unit_rows(latents);
  for (auto& pt : patch_tokens) tokens_.push_back(std::move(pt));
  received_ += latents.size(0);
  std::vector<Tensor<T>> rows;
  std::int64_t p = first;
  if (p == 0) {  // patch 0 has no earlier patch: it receives nothing
    rows.push_back(Tensor<T>::zeros({1, c.dim}));
    p = 1;
  }
  while (p < received_) {
    const std::int64_t j = p - 1;  // key: the latent of the previous patch
    const std::int64_t C = c.chunk;
    const std::int64_t s = (j / C) * C;
    // Every chunk of associations before key j's chunk is written first; its values reach
    // x_{written + C} <= x_s, latents of patches before p (byte values: tokens up to the first
    // of patch written + C + 1 <= s + 1 <= p).
    while (written_ + C <= s) {
      memory_->write_pairs(state_, nn::slice(window_, 0, 0, C), values_of(C), policy, records);
      drop_written(C);
    }
    const std::int64_t end = std::min(s + C, received_ - 1);  // keys [j, end): rows p .. end
    rows.push_back(memory_->read(state_, nn::slice(window_, 0, j - written_, end - written_)));
    p = end + 1;
  }
  return rows.size() == 1 ? rows[0] : nn::concat(rows, 0);
}

template <typename T>
void MagStream<T>::finish(const WritePolicy& policy, std::vector<ChunkRecord>* records) {
  const std::int64_t n = received_ - written_;
  if (n >= 2) {
    memory_->write_pairs(state_, nn::slice(window_, 0, 0, n - 1), values_of(n - 1), policy,
                         records);
  }
  if (n >= 1) drop_written(n - 1);
}

template <typename T>
void MagStream<T>::restore(MemoryState<T> state, std::int64_t patches, std::int64_t written,
                           Tensor<T> unwritten, std::vector<std::vector<std::int32_t>> tokens,
                           std::vector<std::int32_t> history, std::int64_t position) {
  const std::int64_t rows = unwritten.defined() ? unwritten.size(0) : 0;
  if (patches < 0 || written < 0 || written > patches || rows != patches - written ||
      (values_ && static_cast<std::int64_t>(tokens.size()) != rows)) {
    throw std::invalid_argument("titans mag stream: restore with " + std::to_string(rows) +
                                " unwritten rows and " + std::to_string(tokens.size()) +
                                " token lists for patches " + std::to_string(patches) +
                                ", written " + std::to_string(written));
  }
  const auto hist = static_cast<std::int64_t>(history.size());
  if (keys_ && (hist > keys_->longest() - 1 || hist > position || position < patches ||
                (position > 0 && hist < std::min(position, keys_->longest() - 1)))) {
    throw std::invalid_argument("titans mag stream: restore with " + std::to_string(hist) +
                                " history tokens at position " + std::to_string(position) +
                                " for n-grams up to " + std::to_string(keys_->longest()));
  }
  state_ = std::move(state);
  received_ = patches;
  written_ = written;
  window_ = std::move(unwritten);
  tokens_ = values_ ? std::move(tokens) : std::vector<std::vector<std::int32_t>>{};
  history_ = keys_ ? std::move(history) : std::vector<std::int32_t>{};
  position_ = keys_ ? position : 0;
  started_ = true;
}

template <typename T>
Tensor<T> mag_readouts(const NeuralMemory<T>& memory, const Tensor<T>& latents, bool update,
                       std::vector<ChunkRecord>* records, const Tensor<T>* values) {
  const auto& c = memory.config();
  if (latents.dim() != 2 || latents.size(1) != c.input_dim || latents.size(0) < 1) {
    throw std::invalid_argument("titans mag: latents have shape " +
                                nn::shape_string(latents.shape()) + ", expected (P >= 1, " +
                                std::to_string(c.input_dim) + ")");
  }
  const std::int64_t P = latents.size(0);
  const Tensor<T> x = unit_rows(latents);
  if (values && (values->dim() != 2 || values->size(0) != P || values->size(1) != c.input_dim)) {
    throw std::invalid_argument("titans mag: values have shape " +
                                nn::shape_string(values->shape()) + ", expected " +
                                nn::shape_string(latents.shape()));
  }
  const Tensor<T>& value_side = values ? *values : x;
  MemoryState<T> state = memory.initial_state();
  std::vector<Tensor<T>> rows = {Tensor<T>::zeros({1, c.dim})};  // patch 0 receives nothing
  for (std::int64_t s = 0; s + 1 < P; s += c.chunk) {
    const std::int64_t e = std::min(s + c.chunk, P - 1);
    const Tensor<T> keys = nn::slice(x, 0, s, e);  // x_j, j in [s, e)
    rows.push_back(memory.read(state, keys));      // r_{j+1}: earlier chunks only
    if (update && e < P - 1)
      memory.write_pairs(state, keys, nn::slice(value_side, 0, s + 1, e + 1), {}, records);
  }
  return rows.size() == 1 ? rows[0] : nn::concat(rows, 0);
}

blt::WindowHook make_readout_hook(const MagInjection<float>& injection,
                                  const std::vector<std::int64_t>& patch_of_position,
                                  const std::vector<float>& readouts) {
  const std::int64_t d = injection.config.memory_dim;
  if (readouts.empty() || readouts.size() % static_cast<std::size_t>(d) != 0) {
    throw std::invalid_argument("titans mag: readouts hold " + std::to_string(readouts.size()) +
                                " values, not a non-empty multiple of d = " + std::to_string(d));
  }
  const auto P = static_cast<std::int64_t>(readouts.size()) / d;
  const Tensor<float> table = Tensor<float>::from_vector({P, d}, readouts);
  const std::vector<std::int32_t> offsets = injection.config.offsets > 0
                                                ? offsets_in_patch(patch_of_position)
                                                : std::vector<std::int32_t>{};
  return [injection, patch_of_position, table, P, offsets](
             const std::vector<std::int64_t>& starts,
             std::int64_t len) -> nn::TransformerLM<float>::BlockHook {
    std::vector<std::int32_t> index, offset;
    index.reserve(starts.size() * static_cast<std::size_t>(len));
    for (auto s : starts) {
      for (std::int64_t i = 0; i < len; ++i) {
        const auto pos = static_cast<std::size_t>(s + i);
        if (pos >= patch_of_position.size()) {
          throw std::out_of_range("titans mag: position " + std::to_string(pos) +
                                  " has no patch (" + std::to_string(patch_of_position.size()) +
                                  " positions)");
        }
        const std::int64_t p = patch_of_position[pos];
        if (p < 0 || p >= P) {
          throw std::out_of_range("titans mag: patch " + std::to_string(p) + " of position " +
                                  std::to_string(pos) + " has no readout row (" +
                                  std::to_string(P) + ")");
        }
        index.push_back(static_cast<std::int32_t>(p));
        if (!offsets.empty()) offset.push_back(offsets[pos]);
      }
    }
    const Tensor<float> r =
        nn::gather_rows(table, index, {static_cast<std::int64_t>(starts.size()), len});
    return [injection, r, offset](std::int64_t layer, const Tensor<float>& x) {
      return layer == injection.config.layer ? injection.inject(x, r, &offset) : x;
    };
  };
}

Tensor<float> model_readouts(const MagModel& model, const Tensor<float>& latents,
                             const std::vector<std::int32_t>& tokens,
                             const std::vector<std::int64_t>& patch_starts, bool update,
                             std::vector<ChunkRecord>* records) {
  if (!model.memory) throw std::invalid_argument("titans mag: model_readouts without a memory");
  const auto P = static_cast<std::int64_t>(patch_starts.size());
  if (model.keys.defined() &&
      (latents.dim() != 2 || latents.size(0) != P || latents.size(1) != model.latent_dim())) {
    throw std::invalid_argument("titans mag: latents " + nn::shape_string(latents.shape()) +
                                " for " + std::to_string(P) + " patches of width " +
                                std::to_string(model.latent_dim()));
  }
  const Tensor<float> inputs = key_inputs(model.keys, latents, tokens, patch_starts);
  if (!model.values.defined()) return mag_readouts(*model.memory, inputs, update, records);
  if (latents.dim() != 2 || latents.size(0) != P) {
    throw std::invalid_argument("titans mag: " + std::to_string(P) + " patch starts for latents " +
                                nn::shape_string(latents.shape()));
  }
  const Tensor<float> values = model.values.embed(
      target_byte_ids(tokens, patch_starts, 0, P, model.values.offsets, model.values.vocab), P);
  return mag_readouts(*model.memory, inputs, update, records, &values);
}

namespace {

nn::CheckpointTensor to_checkpoint(const std::string& name, const Tensor<float>& t,
                                   nn::DType storage) {
  nn::CheckpointTensor c;
  c.name = name;
  c.dtype = storage;
  c.shape = t.shape();
  const auto v = t.to_vector();
  if (storage == nn::DType::bf16) {
    std::vector<std::uint16_t> b(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) b[i] = nn::float_to_bf16(v[i]);
    c.data.resize(b.size() * sizeof(std::uint16_t));
    std::memcpy(c.data.data(), b.data(), c.data.size());
  } else {
    c.data.resize(v.size() * sizeof(float));
    std::memcpy(c.data.data(), v.data(), c.data.size());
  }
  return c;
}

}  // namespace

void save_mag_model(const std::filesystem::path& path, const MagModel& model, nn::DType storage) {
  if (!model.memory) throw std::invalid_argument("titans mag: save_mag_model without a memory");
  if (storage != nn::DType::f32 && storage != nn::DType::bf16)
    throw std::invalid_argument("titans mag: save_mag_model stores f32 or bf16 only");
  const auto& m = model.memory_config;
  const nlohmann::json config = {{"format", "neat.titans.mag"},
                                 {"memory",
                                  {{"input_dim", m.input_dim},
                                   {"dim", m.dim},
                                   {"depth", m.depth},
                                   {"hidden", m.hidden},
                                   {"chunk", m.chunk},
                                   {"persistent", m.persistent},
                                   {"l2_norm", m.l2_norm},
                                   {"theta_max", m.theta_max},
                                   {"eta_max", m.eta_max},
                                   {"alpha_max", m.alpha_max}}},
                                 {"mag",
                                  {{"layer", model.injection.config.layer},
                                   {"model_dim", model.injection.config.model_dim},
                                   {"memory_dim", model.injection.config.memory_dim}}},
                                 {"patch_threshold", model.patcher.threshold}};
  nlohmann::json cfg = config;
  if (model.injection.config.offsets > 0) cfg["mag"]["offsets"] = model.injection.config.offsets;
  if (model.injection.config.readout_norm) cfg["mag"]["readout_norm"] = true;
  if (model.injection.config.gate_level) cfg["mag"]["gate_level"] = true;
  if (model.values.defined()) {
    cfg["values"] = {
        {"kind", "bytes"}, {"offsets", model.values.offsets}, {"vocab", model.values.vocab}};
  }
  if (model.keys.defined()) cfg["keys"] = {{"ngrams", model.keys.sizes}, {"dim", model.keys.dim}};
  nn::Checkpoint c;
  c.config = cfg.dump();
  for (const auto& [name, t] : model.memory->params().named())
    c.tensors.push_back(to_checkpoint("memory." + name, t.detach(), storage));
  for (const auto& [name, t] : model.injection.named())
    c.tensors.push_back(to_checkpoint("mag." + name, t.detach(), storage));
  if (model.values.defined())
    c.tensors.push_back(to_checkpoint("values.table", model.values.table.detach(), storage));
  nn::write_checkpoint(path.string(), c);
}

MagModel load_mag_model(const std::filesystem::path& path) {
  const nn::Checkpoint c = nn::read_checkpoint(path.string());
  const std::string where = "titans mag model " + path.string() + ": ";
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(c.config);
    MagModel model;
    auto& m = model.memory_config;
    const auto& mj = config.at("memory");
    m.input_dim = mj.at("input_dim");
    m.dim = mj.at("dim");
    m.depth = mj.at("depth");
    m.hidden = mj.at("hidden");
    m.chunk = mj.at("chunk");
    m.persistent = mj.at("persistent");
    m.l2_norm = mj.at("l2_norm");
    m.theta_max = mj.at("theta_max");
    m.eta_max = mj.at("eta_max");
    m.alpha_max = mj.at("alpha_max");
    MagConfig mag;
    mag.layer = config.at("mag").at("layer");
    mag.model_dim = config.at("mag").at("model_dim");
    mag.memory_dim = config.at("mag").at("memory_dim");
    mag.offsets = config.at("mag").value("offsets", std::int64_t{0});
    mag.readout_norm = config.at("mag").value("readout_norm", false);
    mag.gate_level = config.at("mag").value("gate_level", false);
    model.patcher.mode = blt::PatchMode::global;
    model.patcher.threshold = config.at("patch_threshold");
    if (config.contains("keys")) {
      model.keys.sizes = config.at("keys").at("ngrams").get<std::vector<std::int64_t>>();
      model.keys.dim = config.at("keys").at("dim");
      model.keys.validate();
      if (model.keys.dim >= m.input_dim) {
        throw std::runtime_error(where + "n-gram keys of width " + std::to_string(model.keys.dim) +
                                 " leave no latent in input_dim " + std::to_string(m.input_dim));
      }
    }
    std::map<std::string, const nn::CheckpointTensor*> by_name;
    for (const auto& t : c.tensors) by_name[t.name] = &t;
    auto fill = [&](const std::string& name, Tensor<float>& t) {
      const auto it = by_name.find(name);
      if (it == by_name.end()) throw std::runtime_error(where + "tensor " + name + " is missing");
      const auto& ct = *it->second;
      const bool bf16 = ct.dtype == nn::DType::bf16;
      if ((ct.dtype != nn::DType::f32 && !bf16) || ct.shape != t.shape() ||
          ct.data.size() != static_cast<std::size_t>(t.numel()) * (bf16 ? 2 : 4)) {
        throw std::runtime_error(where + "tensor " + name + " has shape " +
                                 nn::shape_string(ct.shape) + ", expected f32 or bf16 " +
                                 nn::shape_string(t.shape()));
      }
      std::vector<float> v(static_cast<std::size_t>(t.numel()));
      if (bf16) {
        std::vector<std::uint16_t> b(v.size());
        std::memcpy(b.data(), ct.data.data(), b.size() * sizeof(std::uint16_t));
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = nn::bf16_to_float(b[i]);
      } else {
        std::memcpy(v.data(), ct.data.data(), v.size() * sizeof(float));
      }
      t = Tensor<float>::from_vector(t.shape(), v, true);
      by_name.erase(it);
    };
    MemoryParams<float> params = MemoryParams<float>::init(m);
    fill("memory.w_k", params.w_k);
    fill("memory.w_v", params.w_v);
    fill("memory.w_q", params.w_q);
    fill("memory.theta_w", params.theta_w);
    fill("memory.theta_b", params.theta_b);
    fill("memory.eta_w", params.eta_w);
    fill("memory.eta_b", params.eta_b);
    fill("memory.alpha_w", params.alpha_w);
    fill("memory.alpha_b", params.alpha_b);
    for (std::size_t l = 0; l < params.m0.size(); ++l)
      fill("memory.m0." + std::to_string(l), params.m0[l]);
    if (m.persistent > 0) fill("memory.persistent", params.persistent);
    model.injection = MagInjection<float>::init(mag, 0);
    fill("mag.w_o", model.injection.w_o);
    fill("mag.w_g", model.injection.w_g);
    fill("mag.b_g", model.injection.b_g);
    if (mag.offsets > 0) fill("mag.w_off", model.injection.w_off);
    if (mag.readout_norm) fill("mag.r_gain", model.injection.r_gain);
    if (mag.gate_level) fill("mag.w_level", model.injection.w_level);
    if (config.contains("values")) {
      const auto& vj = config.at("values");
      if (vj.at("kind") != "bytes") {
        throw std::runtime_error(where + "values kind " + vj.at("kind").dump() +
                                 " is not \"bytes\"");
      }
      model.values = ByteValues<float>::init(vj.at("offsets"), vj.at("vocab"), m.input_dim, 0);
      fill("values.table", model.values.table);
    }
    if (!by_name.empty())
      throw std::runtime_error(where + "unexpected tensor " + by_name.begin()->first);
    model.memory = std::make_unique<NeuralMemory<float>>(m, std::move(params));
    return model;
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(where + "config block: " + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(where + e.what());
  }
}

template class MagStream<float>;
template class MagStream<double>;
template Tensor<float> unit_rows(const Tensor<float>&);
template Tensor<float> key_inputs(const NgramKeys&, const Tensor<float>&,
                                  const std::vector<std::int32_t>&,
                                  const std::vector<std::int64_t>&);
template Tensor<double> key_inputs(const NgramKeys&, const Tensor<double>&,
                                   const std::vector<std::int32_t>&,
                                   const std::vector<std::int64_t>&);
template Tensor<double> unit_rows(const Tensor<double>&);
template struct MagInjection<float>;
template struct MagInjection<double>;
template struct ByteValues<float>;
template struct ByteValues<double>;
template Tensor<float> mag_readouts(const NeuralMemory<float>&, const Tensor<float>&, bool,
                                    std::vector<ChunkRecord>*, const Tensor<float>*);
template Tensor<double> mag_readouts(const NeuralMemory<double>&, const Tensor<double>&, bool,
                                     std::vector<ChunkRecord>*, const Tensor<double>*);

}  // namespace neat::titans
