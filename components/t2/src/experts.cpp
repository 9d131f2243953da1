// Experts, mixtures, the composed-weight cache and the application of an Adaptation.
#include "neat/t2/experts.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "neat/blt/byte_lm.hpp"
#include "neat/nn/checkpoint.hpp"

namespace neat::t2 {

namespace {

nn::CheckpointTensor f32_tensor(std::string name, const std::vector<float>& values) {
  nn::CheckpointTensor t;
  t.name = std::move(name);
  t.dtype = nn::DType::f32;
  t.shape = {static_cast<std::int64_t>(values.size())};
  t.data.resize(values.size() * 4);
  if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

nn::CheckpointTensor f32_matrix(std::string name, const std::vector<std::vector<float>>& rows) {
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  auto t = f32_tensor(std::move(name), flat);
  t.shape = {static_cast<std::int64_t>(rows.size()),
             static_cast<std::int64_t>(rows.empty() ? 0 : rows.front().size())};
  return t;
}

std::vector<std::vector<float>> f32_rows(const nn::CheckpointTensor& t, const std::string& file) {
  if (t.dtype != nn::DType::f32 || t.shape.size() != 2 || t.shape[0] < 1 || t.shape[1] < 1 ||
      t.data.size() != static_cast<std::size_t>(t.shape[0] * t.shape[1]) * 4) {
    throw std::runtime_error(file + ": tensor '" + t.name + "' must be a non-empty 2-D f32 matrix");
  }
  const auto cols = static_cast<std::size_t>(t.shape[1]);
  std::vector<std::vector<float>> rows(static_cast<std::size_t>(t.shape[0]),
                                       std::vector<float>(cols));
  for (std::size_t r = 0; r < rows.size(); ++r)
    std::memcpy(rows[r].data(), t.data.data() + r * cols * 4, cols * 4);
  return rows;
}

std::vector<float> f32_values(const nn::CheckpointTensor& t, const std::string& file) {
  if (t.dtype != nn::DType::f32 || t.shape.size() != 1) {
    throw std::runtime_error(file + ": tensor '" + t.name + "' must be a 1-D f32 vector");
  }
  std::vector<float> v(t.data.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), t.data.data(), v.size() * 4);
  return v;
}

std::string alpha_key(const std::vector<double>& alpha) {
  std::ostringstream s;
  for (double a : alpha) s << std::llround(a * 1e9) << ',';
  return s.str();
}

constexpr const char* kHeadName = "lm_head.weight";

}  // namespace

MatrixSet parse_matrix_set(const std::string& name) {
  if (name == "mlp") return MatrixSet::kMlp;
  if (name == "all") return MatrixSet::kAll;
  if (name == "all+head") return MatrixSet::kAllHead;
  throw std::invalid_argument("t2: matrices '" + name + "' (expected mlp, all or all+head)");
}

const char* matrix_set_name(MatrixSet set) {
  switch (set) {
    case MatrixSet::kAll:
      return "all";
    case MatrixSet::kAllHead:
      return "all+head";
    case MatrixSet::kMlp:
      break;
  }
  return "mlp";
}

std::vector<std::string> adapted_matrix_names(const nn::TransformerLM<float>& model,
                                              MatrixSet set) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < model.blocks.size(); ++i) {
    const auto block = "blocks." + std::to_string(i);
    if (set != MatrixSet::kMlp) {
      for (const char* p : {"wq", "wk", "wv", "wo"})
        names.push_back(block + ".attn." + p + ".weight");
    }
    names.push_back(block + ".mlp.up.weight");
    names.push_back(block + ".mlp.down.weight");
  }
  if (set == MatrixSet::kAllHead) names.push_back(kHeadName);
  return names;
}

std::vector<std::string> mlp_matrix_names(const nn::TransformerLM<float>& model) {
  return adapted_matrix_names(model, MatrixSet::kMlp);
}

nn::Linear<float>& adapted_linear(nn::TransformerLM<float>& model, const std::string& name) {
  const auto& c = static_cast<const nn::TransformerLM<float>&>(model);
  return const_cast<nn::Linear<float>&>(adapted_linear(c, name));
}

const nn::Linear<float>& adapted_linear(const nn::TransformerLM<float>& model,
                                        const std::string& name) {
  if (name == kHeadName) return model.lm_head;
  // blocks.<i>.<attn|mlp>.<layer>.weight
  const std::string prefix = "blocks.";
  const auto bad = [&] {
    return std::invalid_argument("t2: '" + name +
                                 "' is not an adaptable matrix (blocks.<i>.attn.{wq,wk,wv,wo}."
                                 "weight, blocks.<i>.mlp.{up,down}.weight or lm_head.weight)");
  };
  if (name.rfind(prefix, 0) != 0) throw bad();
  const auto dot = name.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) throw bad();
  std::size_t block = 0;
  for (std::size_t i = prefix.size(); i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9') throw bad();
    block = block * 10 + static_cast<std::size_t>(name[i] - '0');
  }
  if (block >= model.blocks.size()) {
    throw std::invalid_argument("t2: '" + name + "': the model has " +
                                std::to_string(model.blocks.size()) + " blocks");
  }
  const auto& b = *model.blocks[block];
  const auto layer = name.substr(dot + 1);
  if (layer == "attn.wq.weight") return b.attn.wq;
  if (layer == "attn.wk.weight") return b.attn.wk;
  if (layer == "attn.wv.weight") return b.attn.wv;
  if (layer == "attn.wo.weight") return b.attn.wo;
  if (layer == "mlp.up.weight") return b.mlp.up;
  if (layer == "mlp.down.weight") return b.mlp.down;
  throw bad();
}

ModelFactors ModelFactors::decompose(const nn::TransformerLM<float>& model,
                                     const SvdOptions& options,
                                     const std::vector<std::string>& names) {
  ModelFactors m;
  m.names = names.empty() ? mlp_matrix_names(model) : names;
  for (const auto& name : m.names) {
    const auto& w = adapted_linear(model, name).weight;
    m.factors.push_back(t2::decompose(w.contiguous().to_vector(), w.size(0), w.size(1), options));
  }
  return m;
}

std::vector<std::int64_t> ModelFactors::ranks() const {
  std::vector<std::int64_t> r;
  for (const auto& f : factors) r.push_back(f.rank);
  return r;
}

ExpertVector identity_expert(const ModelFactors& factors) {
  ExpertVector z;
  for (const auto& f : factors.factors) z.emplace_back(static_cast<std::size_t>(f.rank), 1.0f);
  return z;
}

ExpertVector ExpertSet::mix(const std::vector<double>& alpha) const {
  if (alpha.size() != experts.size() || experts.empty()) {
    throw std::invalid_argument("t2: mixture has " + std::to_string(alpha.size()) +
                                " weights for " + std::to_string(experts.size()) + " experts");
  }
  double identity = 1.0;
  for (double a : alpha) identity -= a;
  ExpertVector z(experts.front().size());
  for (std::size_t m = 0; m < z.size(); ++m) {
    z[m].assign(experts.front()[m].size(), static_cast<float>(identity));
    for (std::size_t k = 0; k < experts.size(); ++k) {
      const auto a = static_cast<float>(alpha[k]);
      for (std::size_t r = 0; r < z[m].size(); ++r) z[m][r] += a * experts[k][m][r];
    }
  }
  return z;
}

bool ExpertSet::has_multi_prototypes() const {
  if (classes.empty() || dispatch_prototypes.size() != classes.size()) return false;
  for (const auto& p : dispatch_prototypes)
    if (p.empty()) return false;
  return true;
}

Classification ExpertSet::classify(const std::vector<float>& embedding, double temperature,
                                   bool center) const {
  if (classes.empty()) throw std::invalid_argument("t2: classify without dispatch classes");
  if (has_multi_prototypes()) {
    const auto& protos = dispatch_prototypes;
    const auto e = dispatch_transform.apply(embedding);
    if (e.size() != protos.front().front().size()) {
      throw std::invalid_argument("t2: embedding has " + std::to_string(embedding.size()) +
                                  " values, the prototypes have " +
                                  std::to_string(protos.front().front().size()));
    }
    return classify_nearest(e, protos, temperature);
  }
  std::vector<std::vector<float>> protos;
  for (const auto& c : classes) protos.push_back(c.prototype);
  return t2::classify(embedding, protos, temperature, center);
}

std::size_t ExpertSet::domain_index(const std::string& domain) const {
  for (std::size_t i = 0; i < domains.size(); ++i)
    if (domains[i] == domain) return i;
  std::string known;
  for (const auto& d : domains) known += (known.empty() ? "" : ", ") + d;
  throw std::out_of_range("t2: no expert for domain '" + domain + "' (experts: " + known + ")");
}

void ExpertSet::check_compatible(const ModelFactors& factors) const {
  if (factors.names != matrices || factors.ranks() != ranks) {
    throw std::invalid_argument(
        "t2: the experts were trained on other SVD factors (matrix names or ranks differ); "
        "decompose the base model with the experts' settings (energy_fraction 1)");
  }
}

ExpertSet ExpertSet::lifted_to(const ModelFactors& factors) const {
  const auto target_ranks = factors.ranks();
  for (std::size_t m = 0; m < matrices.size(); ++m) {
    const auto it = std::find(factors.names.begin(), factors.names.end(), matrices[m]);
    if (it == factors.names.end()) {
      throw std::invalid_argument("t2: the experts adapt '" + matrices[m] +
                                  "', which the target matrices do not include");
    }
    const auto t = static_cast<std::size_t>(it - factors.names.begin());
    if (target_ranks[t] != ranks[m]) {
      throw std::invalid_argument("t2: '" + matrices[m] + "' has rank " + std::to_string(ranks[m]) +
                                  " in the experts but " + std::to_string(target_ranks[t]) +
                                  " in the target factors");
    }
  }
  ExpertSet out = *this;
  out.matrices = factors.names;
  out.ranks = target_ranks;
  for (std::size_t d = 0; d < experts.size(); ++d) {
    ExpertVector z;
    for (std::size_t t = 0; t < factors.names.size(); ++t) {
      const auto it = std::find(matrices.begin(), matrices.end(), factors.names[t]);
      z.push_back(it == matrices.end()
                      ? std::vector<float>(static_cast<std::size_t>(target_ranks[t]), 1.0f)
                      : experts[d][static_cast<std::size_t>(it - matrices.begin())]);
    }
    out.experts[d] = std::move(z);
  }
  return out;
}

void ExpertSet::save(const std::filesystem::path& file) const {
  nn::Checkpoint c;
  nlohmann::json cfg;
  cfg["format"] = "neat.t2.experts";
  const bool multi = has_multi_prototypes();
  cfg["version"] = multi ? 2 : 1;
  cfg["matrices"] = matrices;
  cfg["ranks"] = ranks;
  cfg["domains"] = domains;
  nlohmann::json cls = nlohmann::json::array();
  for (const auto& k : classes) cls.push_back({{"name", k.name}, {"fewshot", k.fewshot}});
  cfg["classes"] = cls;
  cfg["provenance"] = provenance;
  c.config = cfg.dump(1);
  for (std::size_t d = 0; d < domains.size(); ++d)
    for (std::size_t m = 0; m < matrices.size(); ++m)
      c.tensors.push_back(f32_tensor("z." + domains[d] + "." + matrices[m], experts[d][m]));
  for (std::size_t i = 0; i < classes.size(); ++i) {
    const auto& k = classes[i];
    c.tensors.push_back(f32_tensor("prototype." + k.name, k.prototype));
    c.tensors.push_back(
        f32_tensor("alpha." + k.name, std::vector<float>(k.alpha.begin(), k.alpha.end())));
    if (multi) c.tensors.push_back(f32_matrix("prototypes." + k.name, dispatch_prototypes[i]));
  }
  if (multi && !dispatch_transform.mean.empty())
    c.tensors.push_back(f32_tensor("dispatch.mean", dispatch_transform.mean));
  if (multi && !dispatch_transform.whitening.empty()) {
    auto w = f32_tensor("dispatch.whitening", dispatch_transform.whitening);
    const auto dim = static_cast<std::int64_t>(dispatch_transform.mean.size());
    if (dim * dim != static_cast<std::int64_t>(dispatch_transform.whitening.size()))
      throw std::invalid_argument("t2: whitening matrix does not match the transform's mean");
    w.shape = {dim, dim};
    c.tensors.push_back(std::move(w));
  }
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  nn::write_checkpoint(file.string(), c);
}

ExpertSet ExpertSet::load(const std::filesystem::path& file) {
  const auto c = nn::read_checkpoint(file.string());
  const auto name = file.string();
  const auto cfg = nlohmann::json::parse(c.config, nullptr, false);
  if (cfg.is_discarded() || cfg.value("format", "") != "neat.t2.experts") {
    throw std::runtime_error(name + ": not a neat.t2.experts file (config block)");
  }
  std::map<std::string, const nn::CheckpointTensor*> by_name;
  for (const auto& t : c.tensors) by_name[t.name] = &t;
  auto get = [&](const std::string& key) -> const nn::CheckpointTensor& {
    const auto it = by_name.find(key);
    if (it == by_name.end()) throw std::runtime_error(name + ": missing tensor '" + key + "'");
    return *it->second;
  };
  ExpertSet s;
  try {
    s.matrices = cfg.at("matrices").get<std::vector<std::string>>();
    s.ranks = cfg.at("ranks").get<std::vector<std::int64_t>>();
    s.domains = cfg.at("domains").get<std::vector<std::string>>();
    s.provenance = cfg.value("provenance", nlohmann::json::object());
    if (s.ranks.size() != s.matrices.size()) throw std::runtime_error("ranks and matrices differ");
    for (const auto& d : s.domains) {
      ExpertVector z;
      for (std::size_t m = 0; m < s.matrices.size(); ++m) {
        z.push_back(f32_values(get("z." + d + "." + s.matrices[m]), name));
        if (static_cast<std::int64_t>(z.back().size()) != s.ranks[m]) {
          throw std::runtime_error("z." + d + "." + s.matrices[m] + " has the wrong length");
        }
      }
      s.experts.push_back(std::move(z));
    }
    for (const auto& k : cfg.at("classes")) {
      DispatchClass dc;
      dc.name = k.at("name").get<std::string>();
      dc.fewshot = k.at("fewshot").get<bool>();
      dc.prototype = f32_values(get("prototype." + dc.name), name);
      const auto a = f32_values(get("alpha." + dc.name), name);
      dc.alpha.assign(a.begin(), a.end());
      if (dc.alpha.size() != s.domains.size()) {
        throw std::runtime_error("alpha." + dc.name + " has the wrong length");
      }
      if (by_name.count("prototypes." + dc.name)) {
        auto rows = f32_rows(get("prototypes." + dc.name), name);
        if (s.dispatch_prototypes.size() != s.classes.size() ||
            (!s.dispatch_prototypes.empty() &&
             rows.front().size() != s.dispatch_prototypes.front().front().size())) {
          throw std::runtime_error("prototypes." + dc.name +
                                   " has the wrong width, or an earlier class has none");
        }
        s.dispatch_prototypes.push_back(std::move(rows));
      }
      s.classes.push_back(std::move(dc));
    }
    if (!s.dispatch_prototypes.empty() && s.dispatch_prototypes.size() != s.classes.size())
      throw std::runtime_error("only some classes have a 'prototypes.<class>' tensor");
    // Multi-prototypes live in the transformed space: their transform must be there too.
    if (!s.dispatch_prototypes.empty() || by_name.count("dispatch.mean"))
      s.dispatch_transform.mean = f32_values(get("dispatch.mean"), name);
    if (by_name.count("dispatch.whitening")) {
      const auto& w = get("dispatch.whitening");
      const auto dim = static_cast<std::int64_t>(s.dispatch_transform.mean.size());
      if (w.dtype != nn::DType::f32 || w.shape != std::vector<std::int64_t>{dim, dim} ||
          w.data.size() != static_cast<std::size_t>(dim * dim) * 4) {
        throw std::runtime_error("dispatch.whitening must be f32 [" + std::to_string(dim) + ", " +
                                 std::to_string(dim) + "] (dim of dispatch.mean)");
      }
      s.dispatch_transform.whitening.resize(static_cast<std::size_t>(dim * dim));
      std::memcpy(s.dispatch_transform.whitening.data(), w.data.data(), w.data.size());
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(name + ": bad config block: " + e.what());
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    if (what.rfind(name, 0) == 0) throw;
    throw std::runtime_error(name + ": " + what);
  }
  return s;
}

std::uint64_t ComposedWeights::bytes() const {
  std::uint64_t b = 0;
  for (const auto& m : matrices) b += m.size() * sizeof(float);
  return b;
}

ComposedWeights compose_all(const ModelFactors& factors, const ExpertVector& z,
                            const ComposeOptions& options, std::vector<DeltaComposeInfo>* info) {
  if (z.size() != factors.factors.size()) {
    throw std::invalid_argument("t2: expert has " + std::to_string(z.size()) + " z vectors for " +
                                std::to_string(factors.factors.size()) + " matrices");
  }
  ComposedWeights w;
  w.matrices.resize(z.size());
  if (info != nullptr) info->assign(z.size(), {});
  for (std::size_t m = 0; m < z.size(); ++m) {
    compose_delta(factors.factors[m], z[m], options.delta_energy, w.matrices[m],
                  info != nullptr ? &(*info)[m] : nullptr);
  }
  return w;
}

ExpertBasis::ExpertBasis(const ModelFactors& factors, const ExpertSet& experts) {
  experts.check_compatible(factors);
  for (const auto& z : experts.experts) {
    std::vector<std::vector<float>> d(z.size());
    for (std::size_t m = 0; m < z.size(); ++m) {
      const auto& f = factors.factors[m];
      std::vector<float> w;
      f.copy_base(w);
      compose_delta(f, z[m], 1.0, d[m]);
      for (std::size_t i = 0; i < d[m].size(); ++i) d[m][i] -= w[i];
    }
    deltas_.push_back(std::move(d));
  }
}

std::uint64_t ExpertBasis::bytes() const {
  std::uint64_t b = 0;
  for (const auto& e : deltas_)
    for (const auto& m : e) b += m.size() * sizeof(float);
  return b;
}

ComposedWeights ExpertBasis::compose(const ModelFactors& factors,
                                     const std::vector<double>& alpha) const {
  if (alpha.size() != deltas_.size()) {
    throw std::invalid_argument("t2: ExpertBasis::compose: " + std::to_string(alpha.size()) +
                                " weights for " + std::to_string(deltas_.size()) + " experts");
  }
  for (std::size_t k = 0; k < alpha.size(); ++k) {
    if (!std::isfinite(alpha[k])) {
      throw std::invalid_argument("t2: ExpertBasis::compose: alpha[" + std::to_string(k) +
                                  "] is not finite");
    }
  }
  const std::size_t matrices = factors.factors.size();
  for (std::size_t m = 0; m < matrices; ++m) {
    const auto& f = factors.factors[m];
    const auto n = static_cast<std::size_t>(f.rows * f.cols);
    for (const auto& e : deltas_) {
      if (e.size() != matrices || e[m].size() != n) {
        throw std::invalid_argument("t2: ExpertBasis::compose: " + factors.names.at(m) +
                                    " has another shape than the basis was built on");
      }
    }
    if (f.base.size() != n && f.base_bf16.size() != n) {
      throw std::invalid_argument("t2: ExpertBasis::compose: the factors of " +
                                  factors.names.at(m) + " do not hold W");
    }
  }
  ComposedWeights w;
  w.matrices.resize(matrices);
  const auto one_matrix = [&](std::size_t m) {
    const auto& f = factors.factors[m];
    const auto n = static_cast<std::size_t>(f.rows * f.cols);
    auto& out = w.matrices[m];
    f.copy_base(out);
    // Blocks of 16 Ki floats (64 KiB) stay in cache while every expert's change is added, so
    // each ΔW_k is streamed from memory once and W' is not re-read per expert.
    constexpr std::size_t kBlock = 16384;
    for (std::size_t at = 0; at < n; at += kBlock) {
      const std::size_t len = std::min(kBlock, n - at);
      float* dst = out.data() + at;
      for (std::size_t k = 0; k < deltas_.size(); ++k) {
        if (alpha[k] == 0.0) continue;
        const auto a = static_cast<float>(alpha[k]);
        const float* src = deltas_[k][m].data() + at;
        for (std::size_t i = 0; i < len; ++i) dst[i] += a * src[i];
      }
    }
  };
  // The matrices are independent: nn::num_threads() threads take them in turn.
  const auto threads =
      static_cast<std::size_t>(std::clamp<int>(nn::num_threads(), 1, static_cast<int>(matrices)));
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (std::size_t m = t; m < matrices; m += threads) one_matrix(m);
    });
  }
  for (std::size_t m = 0; m < matrices; m += threads) one_matrix(m);
  for (auto& th : pool) th.join();
  return w;
}

WeightCache::WeightCache(WeightCacheOptions options, std::function<Clock::time_point()> now)
    : options_(options), now_(std::move(now)) {}

void WeightCache::evict_locked() {
  while (!lru_.empty() &&
         (lru_.size() > options_.max_entries || stats_.bytes > options_.max_bytes)) {
    stats_.bytes -= lru_.back().weights->bytes();
    index_.erase(lru_.back().key);
    lru_.pop_back();
    ++stats_.evictions;
  }
  stats_.entries = lru_.size();
}

std::shared_ptr<const ComposedWeights> WeightCache::get_or_compose(
    const std::vector<double>& alpha, const std::function<ComposedWeights()>& compose) {
  const std::string key = alpha_key(alpha);
  {
    std::lock_guard lock(mutex_);
    const auto it = index_.find(key);
    if (it != index_.end()) {
      const double age = std::chrono::duration<double>(now_() - it->second->inserted).count();
      if (age <= options_.ttl_seconds) {
        ++stats_.hits;
        lru_.splice(lru_.begin(), lru_, it->second);
        return lru_.front().weights;
      }
      stats_.bytes -= it->second->weights->bytes();
      lru_.erase(it->second);
      index_.erase(it);
      ++stats_.expirations;
      stats_.entries = lru_.size();
    }
    ++stats_.misses;
  }
  auto weights = std::make_shared<const ComposedWeights>(compose());  // outside the lock
  std::lock_guard lock(mutex_);
  if (weights->bytes() > options_.max_bytes || options_.max_entries == 0) return weights;
  if (const auto it = index_.find(key); it != index_.end()) {  // composed meanwhile
    stats_.bytes -= it->second->weights->bytes();
    lru_.erase(it->second);
    index_.erase(it);
  }
  lru_.push_front({key, weights, now_()});
  index_[key] = lru_.begin();
  stats_.bytes += weights->bytes();
  evict_locked();
  return weights;
}

bool WeightCache::contains(const std::vector<double>& alpha) const {
  std::lock_guard lock(mutex_);
  return index_.count(alpha_key(alpha)) > 0;
}

WeightCacheStats WeightCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

std::unique_ptr<nn::TransformerLM<float>> copy_model(const nn::TransformerLM<float>& model) {
  auto copy = std::make_unique<nn::TransformerLM<float>>(model.config());
  const auto src = model.named_parameters();
  auto dst = copy->named_parameters();
  for (std::size_t i = 0; i < src.size(); ++i) {
    const auto values = src[i].second.contiguous().to_vector();
    std::memcpy(dst[i].second.data(), values.data(), values.size() * sizeof(float));
  }
  return copy;
}

void apply_weights(const ModelFactors& factors, const ComposedWeights& weights,
                   nn::TransformerLM<float>& target) {
  if (weights.matrices.size() != factors.factors.size() ||
      factors.names.size() != factors.factors.size()) {
    throw std::invalid_argument("t2: composed weights do not match the target model");
  }
  for (std::size_t m = 0; m < weights.matrices.size(); ++m) {
    auto& w = adapted_linear(target, factors.names[m]).weight;
    if (!w.is_contiguous() || w.numel() != static_cast<std::int64_t>(weights.matrices[m].size())) {
      throw std::invalid_argument("t2: " + factors.names[m] + " has another shape in the target");
    }
    std::memcpy(w.data(), weights.matrices[m].data(), weights.matrices[m].size() * sizeof(float));
  }
}

std::shared_ptr<const ComposedWeights> apply_adaptation(
    const blt::Adaptation& adaptation, const ExpertSet& experts, const ModelFactors& factors,
    WeightCache& cache, nn::TransformerLM<float>& target, const ComposeOptions& compose,
    const ExpertBasis* basis) {
  if (adaptation.alpha.size() != adaptation.domains.size()) {
    throw std::invalid_argument("t2: adaptation of document " + std::to_string(adaptation.doc_id) +
                                " has " + std::to_string(adaptation.alpha.size()) +
                                " weights for " + std::to_string(adaptation.domains.size()) +
                                " domains");
  }
  std::vector<double> alpha(experts.domains.size(), 0.0);
  for (std::size_t i = 0; i < adaptation.domains.size(); ++i) {
    if (!std::isfinite(adaptation.alpha[i])) {
      throw std::invalid_argument("t2: adaptation of document " +
                                  std::to_string(adaptation.doc_id) + ": alpha[" +
                                  std::to_string(i) + "] is not finite");
    }
    alpha.at(experts.domain_index(adaptation.domains[i])) += adaptation.alpha[i];
  }
  auto weights = cache.get_or_compose(alpha, [&] {
    return basis != nullptr ? basis->compose(factors, alpha)
                            : compose_all(factors, experts.mix(alpha), compose);
  });
  apply_weights(factors, *weights, target);
  return weights;
}

std::vector<float> task_embedding(const nn::TransformerLM<float>& model,
                                  const std::vector<std::uint8_t>& bytes, std::int64_t positions) {
  if (positions <= 0 || positions > model.config().max_seq_len) {
    throw std::invalid_argument("t2: task embedding over " + std::to_string(positions) +
                                " positions; the model's context is " +
                                std::to_string(model.config().max_seq_len));
  }
  nn::NoGradGuard no_grad;
  std::vector<std::int32_t> tokens{blt::kBos};
  for (std::size_t i = 0; i < bytes.size() && static_cast<std::int64_t>(tokens.size()) < positions;
       ++i)
    tokens.push_back(bytes[i]);
  const auto t = static_cast<std::int64_t>(tokens.size());
  const auto h = model.hidden(tokens, 1, t).contiguous();  // (1, T, C)
  const std::int64_t c = h.size(2);
  std::vector<double> sum(static_cast<std::size_t>(c), 0.0);
  const float* p = h.data();
  for (std::int64_t i = 0; i < t; ++i)
    for (std::int64_t j = 0; j < c; ++j) sum[j] += p[i * c + j];
  std::vector<float> out(static_cast<std::size_t>(c));
  for (std::int64_t j = 0; j < c; ++j) out[j] = static_cast<float>(sum[j] / static_cast<double>(t));
  return out;
}

}  // namespace neat::t2
