// titans component: bus handling, grants, prioritisation, snapshot/restore and statistics around
// the memory core of memory.cpp.
#include "neat/titans/titans_component.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "neat/blt/messages.hpp"
#include "neat/components/messages.hpp"
#include "neat/components/paths.hpp"
#include "neat/nn/ops.hpp"

namespace neat::titans {

config::Schema TitansComponent::schema() {
  using config::Schema;
  return Schema::map()
      .optional("input", Schema::string().default_value("blt.patches"),
                "topic of neat.blt.Patches (tensor \"latents\" f32 [n, input_dim])")
      .optional("output", Schema::string().default_value("titans.readout"),
                "topic for neat.titans.Readout (tensor \"readout\" f32 [n, dim])")
      .optional("stats_topic", Schema::string().default_value("titans.stats"),
                "topic for neat.titans.Stats")
      .optional("memory_scope", Schema::one_of({"document", "stream"}).default_value("document"),
                "document: the memory restarts from M_0 at every document; stream: it carries over")
      .optional(
          "budget_bytes", Schema::integer(0, 1ll << 50).default_value("0"),
          "bytes per chunk the memory may use (state + retrieval + writes); below the need "
          "of writing every chunk, only the most surprising chunks are written (0: no budget)")
      .optional("lr_reference", Schema::number(1e-12, 1e12).default_value("1"),
                "granted learning rate at which theta is used as trained (theta x lr / this)")
      .optional("prioritization_window", Schema::integer(1, 1 << 20).default_value("64"),
                "recent chunks whose surprise defines the skip threshold")
      .optional("model", Schema::string().default_value(""),
                "trained MAG model (`neat train titans`, models/titans/mag_ngram.ckpt or "
                "mag.ckpt): memory "
                "parameters and shape from the file (the shape keys below are then unused), "
                "readout of the previous patch's latent for blt_predict's injection (\"\": a "
                "memory initialised from `seed`, readout of each patch's own query)")
      .optional("input_dim", Schema::integer(1, 1 << 16).default_value("256"),
                "width of the patch latents")
      .optional("dim", Schema::integer(1, 1 << 16).default_value("256"),
                "width of keys, values, queries and the readout")
      .optional("depth", Schema::integer(1, 3).default_value("2"), "L_M, layers of the memory MLP")
      .optional("hidden", Schema::integer(1, 1 << 16).default_value("256"),
                "hidden width of the memory MLP (depth >= 2)")
      .optional("chunk", Schema::integer(1, 1 << 16).default_value("64"),
                "C, patches per chunk update (eq. 16-18)")
      .optional("persistent", Schema::integer(0, 1 << 16).default_value("4"),
                "N_p persistent memory vectors (eq. 19)")
      .optional("l2_norm", Schema::boolean().default_value("true"), "l2-normalise q and k")
      .optional("theta_max", Schema::number(0, 1e6).default_value("0.05"),
                "maximum of the per-patch learning rate theta_t")
      .optional("eta_max", Schema::number(0, 1).default_value("0.9"),
                "maximum of the momentum decay eta_t")
      .optional("alpha_max", Schema::number(0, 1).default_value("0.1"),
                "maximum of the forgetting gate alpha_t")
      .optional("seed", Schema::integer(0, 1ll << 62).default_value("1"),
                "initialisation of W_K, W_V, W_Q, M_0 and the persistent memory");
}

void TitansComponent::configure(const YAML::Node& config, components::Context& ctx) {
  MemoryConfig mc;
  auto get = [&](const char* key, auto& field) {
    using F = std::remove_reference_t<decltype(field)>;
    if (config[key]) field = config[key].as<F>();
  };
  get("input", input_);
  get("output", output_);
  get("stats_topic", stats_topic_);
  std::string scope = "document";
  get("memory_scope", scope);
  stream_scope_ = scope == "stream";
  get("budget_bytes", budget_bytes_);
  get("lr_reference", lr_reference_);
  std::int64_t window = 64;
  get("prioritization_window", window);
  get("input_dim", mc.input_dim);
  get("dim", mc.dim);
  get("depth", mc.depth);
  get("hidden", mc.hidden);
  get("chunk", mc.chunk);
  get("persistent", mc.persistent);
  get("l2_norm", mc.l2_norm);
  get("theta_max", mc.theta_max);
  get("eta_max", mc.eta_max);
  get("alpha_max", mc.alpha_max);
  get("seed", mc.seed);
  name_ = ctx.name();
  std::string model;
  get("model", model);
  {
    nn::MemoryTag tag(name_);
    nn::NoGradGuard no_grad;
    if (model.empty()) {
      memory_.emplace(mc);  // std::invalid_argument on a bad shape
    } else {
      MagModel m = load_mag_model(components::resolve_path(model));
      memory_.emplace(m.memory_config, m.memory->params());
      values_ = m.values;
      if (values_.defined()) values_.table.set_requires_grad(false);
      keys_ = m.keys;
      mag_.emplace(*memory_, &values_, &keys_);
      ctx.log().info("titans: MAG memory from {} (d_in {}, d {}, L_M {}, C {})", model,
                     m.memory_config.input_dim, m.memory_config.dim, m.memory_config.depth,
                     m.memory_config.chunk);
    }
    for (auto& t : memory_->params().all()) t.set_requires_grad(false);
  }
  prioritizer_ = std::make_unique<SurprisePrioritizer>(static_cast<std::size_t>(window));

  bus::subscribe<blt::Patches>(
      ctx.node(), input_, [this, &ctx](const blt::Patches& p, const bus::Message& m) {
        const auto n = static_cast<std::int64_t>(p.starts.size());
        const bus::TensorView* latents = nullptr;
        const auto tensors = m.tensors();
        for (const auto& t : tensors)
          if (t.desc().name == "latents") latents = &t;
        const std::int64_t width = latent_width();
        if (!latents || latents->desc().dtype != bus::DType::f32 ||
            latents->desc().shape != std::vector<std::int64_t>{n, width}) {
          ++totals_.rejected;
          throw bus::PayloadError("titans: blt.patches slice of doc " + std::to_string(p.doc_id) +
                                  " needs tensor \"latents\" f32 [" + std::to_string(n) + ", " +
                                  std::to_string(width) + "]");
        }
        std::vector<float> y =
            process(ctx, p.doc_id, p.last, latents->to_vector<float>(), n, p.lengths, p.tokens);
        blt::Readout r{p.doc_id, p.first_patch, static_cast<std::uint64_t>(n), p.last, p.starts};
        bus::publish(ctx.node(), output_, r,
                     {bus::TensorOut::from_vector("readout", bus::DType::f32,
                                                  {n, memory_->config().dim}, std::move(y))});
        if (p.last) bus::publish(ctx.node(), stats_topic_, current_stats());
      });
  bus::subscribe<components::EndOfStream>(
      ctx.node(), input_, [this, &ctx](const components::EndOfStream& eos, const bus::Message&) {
        TitansStats s = current_stats();
        s.final = true;
        bus::publish(ctx.node(), stats_topic_, s);
        bus::publish(ctx.node(), output_, eos);
      });
}

double TitansComponent::decide(components::Context& ctx, const ChunkReport& report) {
  const ChunkBytes bytes = chunk_working_bytes(memory_->config(), report.patches, sizeof(float));
  // The chunk's latents count with the state (they were moved out of state_.pending to be
  // written).
  const std::int64_t state_bytes = state().bytes() + report.patches * memory_->config().input_dim *
                                                         static_cast<std::int64_t>(sizeof(float));
  const double keep =
      std::min(degrade_keep_, keep_fraction_for_budget(budget_bytes_, state_bytes, bytes));
  prioritizer_->set_keep_fraction(keep);
  totals_.keep_fraction = keep;
  ++totals_.chunks;
  ++window_chunks_;
  sum_loss_ += report.loss;
  sum_surprise_ += report.surprise;
  if (!prioritizer_->admit(report.surprise)) {
    ++totals_.skipped;
    return 0.0;
  }
  components::UpdateRequest r;
  r.step = ++request_step_;
  r.loss = report.loss;
  r.grad_norm = report.surprise;
  r.direction_norm = report.direction_norm;
  r.param_norm = std::max(report.param_norm, 1e-12);
  r.grad_cosine = report.grad_cosine;
  const components::Grant g = ctx.request_update(r);
  if (g.action != components::Grant::Action::commit) {
    ++totals_.discarded;
    return 0.0;
  }
  const double factor = g.learning_rate / lr_reference_;
  if (!(factor > 0) || !std::isfinite(factor)) {
    ++totals_.discarded;
    return 0.0;
  }
  ++totals_.updates;
  ++window_updates_;
  return factor;
}

std::vector<float> TitansComponent::process(components::Context& ctx, std::uint64_t doc_id,
                                            bool last, const std::vector<float>& latents,
                                            std::int64_t n,
                                            const std::vector<std::uint32_t>& lengths,
                                            const std::vector<std::int32_t>& tokens) {
  const std::int64_t width = latent_width();
  if (static_cast<std::int64_t>(latents.size()) != n * width) {
    ++totals_.rejected;
    throw bus::PayloadError("titans: " + std::to_string(latents.size()) + " latent values for " +
                            std::to_string(n) + " patches of width " + std::to_string(width));
  }
  for (std::size_t i = 0; i < latents.size(); ++i) {
    if (!std::isfinite(latents[i])) {
      ++totals_.rejected;
      throw bus::PayloadError("titans: non-finite latent in doc " + std::to_string(doc_id) +
                              " at patch " + std::to_string(i / width) + ", column " +
                              std::to_string(i % width));
    }
  }
  nn::MemoryTag tag(name_);
  nn::NoGradGuard no_grad;
  const auto x = nn::Tensorf::from_vector({n, width}, latents);
  std::vector<ChunkRecord> records;
  const WritePolicy policy = [this, &ctx](const ChunkReport& r) { return decide(ctx, r); };
  auto account = [&] {
    for (const auto& r : records)
      if (r.theta_scale > 0) sum_update_ += r.update_norm;
    totals_.patches += static_cast<std::uint64_t>(n);
  };
  if (mag_) {
    if (!mag_->started() || doc_id != mag_->state().document) {
      mag_->start_document(doc_id, stream_scope_);
      ++totals_.documents;
    }
    nn::Tensorf y;
    if (values_.defined() || keys_.defined()) {
      try {
        y = mag_->push(x, lengths, tokens, policy, &records);
      } catch (const std::invalid_argument& e) {  // lengths / tokens of the slice malformed
        ++totals_.rejected;
        throw bus::PayloadError("titans: blt.patches slice of doc " + std::to_string(doc_id) +
                                ": " + e.what());
      }
    } else {
      y = mag_->push(x, policy, &records);
    }
    if (last && stream_scope_) mag_->finish(policy, &records);
    account();
    return y.to_vector();
  }
  if (!started_ || (!stream_scope_ && doc_id != state_.document)) {
    state_ = memory_->initial_state(doc_id);
    started_ = true;
    ++totals_.documents;
  }
  state_.document = doc_id;
  const nn::Tensorf y = memory_->forward(state_, x, policy, &records);
  if (last && stream_scope_) memory_->flush(state_, policy, &records);
  account();
  return y.to_vector();
}

TitansStats TitansComponent::current_stats() const {
  TitansStats s = totals_;
  s.loss = window_chunks_ ? sum_loss_ / static_cast<double>(window_chunks_) : 0.0;
  s.surprise = window_chunks_ ? sum_surprise_ / static_cast<double>(window_chunks_) : 0.0;
  s.update_norm = window_updates_ ? sum_update_ / static_cast<double>(window_updates_) : 0.0;
  s.skip_rate = s.chunks ? static_cast<double>(s.skipped) / static_cast<double>(s.chunks) : 0.0;
  const auto m = nn::memory_stats(name_);
  s.memory_bytes = m.current_bytes;
  s.peak_memory_bytes = m.peak_bytes;
  s.state_bytes = state().bytes();
  return s;
}

nlohmann::json TitansComponent::stats() const {
  const TitansStats s = current_stats();
  return {{"documents", s.documents},
          {"patches", s.patches},
          {"chunks", s.chunks},
          {"updates", s.updates},
          {"skipped", s.skipped},
          {"discarded", s.discarded},
          {"skip_rate", s.skip_rate},
          {"keep_fraction", s.keep_fraction},
          {"loss", s.loss},
          {"surprise", s.surprise},
          {"update_norm", s.update_norm},
          {"state_bytes", s.state_bytes},
          {"rejected", s.rejected},
          {"step", state().step},
          {"form", mag_ ? "mag" : "direct"},
          {"chunk", memory_ ? memory_->config().chunk : 0}};
}

namespace {

struct Snapshot {
  std::vector<std::vector<float>> weights, momentum;
  std::vector<float> pending;
  std::int64_t pending_rows = 0, step = 0, chunk = 0;
  std::uint64_t document = 0;
  bool started = false;
  std::int64_t patches = 0, written = 0;  ///< MAG form: the document's stream position
  /// MAG form with byte values: tokens of the unwritten patches, one list per patch.
  std::vector<std::vector<std::int32_t>> pending_tokens;
  /// MAG form with n-gram keys: the document's last tokens and its position (tokens so far).
  std::vector<std::int32_t> history;
  std::int64_t position = 0;
  MSGPACK_DEFINE_MAP(weights, momentum, pending, pending_rows, step, chunk, document, started,
                     patches, written, pending_tokens, history, position);
};

}  // namespace

std::string TitansComponent::snapshot() const {
  Snapshot s;
  const MemoryState<float>& st = state();
  for (const auto& t : st.weights) s.weights.push_back(t.to_vector());
  for (const auto& t : st.momentum) s.momentum.push_back(t.to_vector());
  if (mag_) {  // the unwritten latents of the MAG stream travel as the pending rows
    if (mag_->unwritten().defined()) s.pending = mag_->unwritten().to_vector();
    s.pending_rows = mag_->patches() - mag_->written();
    s.patches = mag_->patches();
    s.written = mag_->written();
    s.started = mag_->started();
    s.pending_tokens = mag_->unwritten_tokens();
    s.history = mag_->history();
    s.position = mag_->position();
  } else {
    if (st.pending.defined()) s.pending = st.pending.to_vector();
    s.pending_rows = st.pending_rows();
    s.started = started_;
  }
  s.step = st.step;
  s.chunk = memory_ ? memory_->config().chunk : 0;
  s.document = st.document;
  msgpack::sbuffer buf;
  msgpack::pack(buf, s);
  return {buf.data(), buf.size()};
}

void TitansComponent::restore(std::string_view bytes) {
  if (!memory_) throw std::runtime_error("titans: restore before configure");
  Snapshot s;
  try {
    auto h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(s);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("titans: corrupt snapshot: ") + e.what());
  }
  const auto& c = memory_->config();
  const auto& m0 = memory_->params().m0;
  if (s.weights.size() != m0.size() || s.momentum.size() != m0.size()) {
    throw std::runtime_error("titans: snapshot has " + std::to_string(s.weights.size()) +
                             " memory layers, expected " + std::to_string(m0.size()));
  }
  for (std::size_t l = 0; l < m0.size(); ++l) {
    const auto n = static_cast<std::size_t>(m0[l].numel());
    if (s.weights[l].size() != n || s.momentum[l].size() != n) {
      throw std::runtime_error("titans: snapshot layer " + std::to_string(l) + " has " +
                               std::to_string(s.weights[l].size()) + " values, expected " +
                               std::to_string(n));
    }
  }
  if (s.pending_rows < 0 ||
      s.pending.size() != static_cast<std::size_t>(s.pending_rows * c.input_dim)) {
    throw std::runtime_error("titans: snapshot pending latents do not match " +
                             std::to_string(s.pending_rows) + " rows");
  }
  nn::MemoryTag tag(name_);
  MemoryState<float> st;
  for (std::size_t l = 0; l < m0.size(); ++l) {
    st.weights.push_back(nn::Tensorf::from_vector(m0[l].shape(), s.weights[l]));
    st.momentum.push_back(nn::Tensorf::from_vector(m0[l].shape(), s.momentum[l]));
  }
  nn::Tensorf pending;
  if (s.pending_rows > 0)
    pending = nn::Tensorf::from_vector({s.pending_rows, c.input_dim}, s.pending);
  st.step = s.step;
  st.document = s.document;
  if (s.chunk > 0) memory_->set_chunk(s.chunk);
  if (mag_) {
    if (!s.started) return;  // nothing streamed yet: the next document starts fresh
    try {
      mag_->restore(std::move(st), s.patches, s.written, std::move(pending),
                    std::move(s.pending_tokens), std::move(s.history), s.position);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(std::string("titans: snapshot: ") + e.what());
    }
    return;
  }
  st.pending = std::move(pending);
  state_ = std::move(st);
  started_ = s.started;
}

std::int64_t TitansComponent::latent_width() const {
  return memory_->config().input_dim - (keys_.defined() ? keys_.dim : 0);
}

bool TitansComponent::degrade(const std::string& action) {
  if (action == "skip_low_surprise") {
    degrade_keep_ = std::max(degrade_keep_ / 2, 1.0 / 16);
    return true;
  }
  if (action == "shrink_chunks") {
    memory_->set_chunk(std::max<std::int64_t>(1, memory_->config().chunk / 2));
    return true;
  }
  return false;
}

}  // namespace neat::titans

namespace neat::components {
ComponentKind titans_kind() {
  return {"titans",
          "Titans neural long-term memory over patch latents, written at test time under grants",
          [] { return std::make_unique<neat::titans::TitansComponent>(); },
          [] { return neat::titans::TitansComponent::schema(); }};
}
}  // namespace neat::components
