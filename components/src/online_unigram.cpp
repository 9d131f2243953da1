// online_unigram: adaptive order-0 byte model learning under the coordinator's grants.
#include "neat/components/online_unigram.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "neat/components/messages.hpp"

namespace neat::components {

config::Schema OnlineUnigram::schema() {
  using config::Schema;
  return Schema::map()
      .optional("input", Schema::string().default_value("input.item"), "topic of InputChunk")
      .optional("output", Schema::string().default_value("unigram.doc"),
                "topic for per-document bits per byte")
      .optional("inject",
                Schema::map()
                    .required("kind", Schema::one_of({"nan", "loss_spike"}), "fault to inject")
                    .required("at_step", Schema::integer(1, 1ll << 40), "update step it hits"),
                "fault injection for the stability tests");
}

void OnlineUnigram::configure(const YAML::Node& config, Context& ctx) {
  if (config["input"]) input_ = config["input"].as<std::string>();
  if (config["output"]) output_ = config["output"].as<std::string>();
  if (config["inject"]) {
    inject_kind_ = config["inject"]["kind"].as<std::string>();
    inject_step_ = config["inject"]["at_step"].as<std::uint64_t>();
  }
  bus::subscribe<InputChunk>(ctx.node(), input_,
                             [this, &ctx](const InputChunk& chunk, const bus::Message& m) {
                               auto tensors = m.tensors();
                               if (tensors.size() != 1) {
                                 throw bus::PayloadError("InputChunk without its bytes tensor");
                               }
                               learn(ctx, tensors[0].bytes());
                               if (!chunk.last) return;
                               bus::publish(ctx.node(), output_,
                                            UnigramDoc{chunk.doc_id, chunk.path, doc_bytes_,
                                                       doc_bytes_ ? doc_bits_ / doc_bytes_ : 0.0});
                               doc_bits_ = 0.0;
                               doc_bytes_ = 0;
                             });
  bus::subscribe<EndOfStream>(ctx.node(), input_,
                              [this, &ctx](const EndOfStream& eos, const bus::Message&) {
                                bus::publish(ctx.node(), output_, eos);
                                ctx.finish(stats().dump());
                              });
}

void OnlineUnigram::learn(Context& ctx, std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  ++step_;
  std::vector<std::byte> corrupted;
  if (inject_kind_ == "loss_spike" && step_ == inject_step_) {
    corrupted.assign(bytes.size(), std::byte{0xFF});
    bytes = corrupted;
  }
  // p = softmax(theta), computed stably.
  double max_theta = theta_[0];
  for (double t : theta_) max_theta = std::max(max_theta, t);
  std::array<double, 256> p;
  double z = 0.0;
  for (int v = 0; v < 256; ++v) z += (p[v] = std::exp(theta_[v] - max_theta));
  for (auto& x : p) x /= z;
  std::array<double, 256> counts{};
  double nats = 0.0;
  for (auto b : bytes) {
    const auto v = static_cast<std::uint8_t>(b);
    counts[v] += 1.0;
    nats -= std::log(p[v]);
  }
  const double n = static_cast<double>(bytes.size());
  // Online code length: the bytes were coded before this step's update.
  total_bits_ += nats / std::log(2.0);
  total_bytes_ += bytes.size();
  doc_bits_ += nats / std::log(2.0);
  doc_bytes_ += bytes.size();

  std::array<double, 256> grad;
  double gn = 0.0, pn = 0.0, dot = 0.0, prev = 0.0;
  for (int v = 0; v < 256; ++v) {
    grad[v] = p[v] - counts[v] / n;  // dL/dtheta_v for L = -(1/n) sum ln p(b_i)
    if (inject_kind_ == "nan" && step_ == inject_step_) grad[v] = std::nan("");
    gn += grad[v] * grad[v];
    pn += theta_[v] * theta_[v];
    dot += grad[v] * previous_grad_[v];
    prev += previous_grad_[v] * previous_grad_[v];
  }
  UpdateRequest r;
  r.step = step_;
  r.loss = nats / n;
  if (inject_kind_ == "nan" && step_ == inject_step_) r.loss = std::nan("");
  r.grad_norm = std::sqrt(gn);
  r.direction_norm = r.grad_norm;
  r.param_norm = std::max(std::sqrt(pn), 1.0);  // theta starts at 0: measure against 1
  r.grad_cosine = prev > 0 && gn > 0 ? dot / std::sqrt(gn * prev) : 1.0;
  const Grant g = ctx.request_update(r);
  switch (g.action) {
    case Grant::Action::commit:
      for (int v = 0; v < 256; ++v) theta_[v] -= g.learning_rate * grad[v];
      previous_grad_ = grad;
      ++committed_;
      break;
    case Grant::Action::discard:
      ++discarded_;
      break;
    case Grant::Action::rollback:
      ++rollbacks_;  // the coordinator's restore of the last backup follows
      break;
  }
}

nlohmann::json OnlineUnigram::stats() const {
  bool finite = true;
  for (double t : theta_) finite = finite && std::isfinite(t);
  return {{"steps", step_},
          {"committed", committed_},
          {"discarded", discarded_},
          {"rollbacks", rollbacks_},
          {"bits_per_byte", total_bytes_ ? total_bits_ / total_bytes_ : 0.0},
          {"bytes", total_bytes_},
          {"parameters_finite", finite},
          {"parameter_digest", parameter_digest()},
          {"memory",
           {{"current_bytes", sizeof(theta_) + sizeof(previous_grad_)},
            {"peak_bytes", sizeof(theta_) + sizeof(previous_grad_)}}}};
}

std::string OnlineUnigram::parameter_digest() const {
  // The parameters' exact bits, folded to 16 hex digits by xor of 64-bit words with rotation:
  // equal parameters give equal digests; any changed bit changes it.
  std::uint64_t h = 0;
  for (double t : theta_) {
    std::uint64_t bits;
    std::memcpy(&bits, &t, sizeof bits);
    h = (h << 7 | h >> 57) ^ bits;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string OnlineUnigram::snapshot() const {
  msgpack::sbuffer buf;
  msgpack::pack(buf,
                std::make_tuple(std::vector<double>(theta_.begin(), theta_.end()),
                                std::vector<double>(previous_grad_.begin(), previous_grad_.end())));
  return {buf.data(), buf.size()};
}

void OnlineUnigram::restore(std::string_view bytes) {
  std::tuple<std::vector<double>, std::vector<double>> t;
  try {
    auto h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(t);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("online_unigram: corrupt snapshot: ") + e.what());
  }
  const auto& [theta, grad] = t;
  if (theta.size() != 256 || grad.size() != 256) {
    throw std::runtime_error("online_unigram: snapshot has " + std::to_string(theta.size()) +
                             " parameters, expected 256");
  }
  std::copy(theta.begin(), theta.end(), theta_.begin());
  std::copy(grad.begin(), grad.end(), previous_grad_.begin());
}

}  // namespace neat::components
