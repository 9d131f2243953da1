// online_unigram: the smallest real test-time learner, an adaptive order-0 byte model.
// Parameters: 256 logits theta (float64); p = softmax(theta). For each chunk of bytes b_1..b_n
// it first codes the chunk under the current model (code length -sum log2 p(b_i) bits: the
// online, predict-then-update bits per byte of the stream), then proposes one gradient step
// on its own loss L = -(1/n) sum ln p(b_i):  dL/dtheta = p - h/n (h: the chunk's byte counts),
// and applies theta -= lr * dL/dtheta only if the coordinator grants it. Nothing but scalar
// metrics leaves the component (gradient isolation).
// `inject` (for the stability tests) corrupts one step: `nan` makes its gradient NaN;
// `loss_spike` replaces the chunk by 0xFF bytes, which the model finds improbable.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "neat/components/component.hpp"
#include "neat/components/messages.hpp"

namespace neat::components {

class OnlineUnigram : public Component {
 public:
  static config::Schema schema();
  void configure(const YAML::Node& config, Context& ctx) override;
  std::vector<std::string> publishes() const override { return {output_}; }
  nlohmann::json stats() const override;
  std::string snapshot() const override;
  void restore(std::string_view bytes) override;

  /// Fingerprint of the exact bits of theta, 16 hex digits (for the isolation tests).
  std::string parameter_digest() const;

 private:
  void learn(Context& ctx, std::span<const std::byte> chunk);

  std::string input_ = "input.item", output_ = "unigram.doc";
  std::array<double, 256> theta_{};
  std::array<double, 256> previous_grad_{};
  std::uint64_t step_ = 0, committed_ = 0, discarded_ = 0, rollbacks_ = 0;
  double total_bits_ = 0.0;
  std::uint64_t total_bytes_ = 0;
  // current document
  double doc_bits_ = 0.0;
  std::uint64_t doc_bytes_ = 0;
  // fault injection (tests)
  std::string inject_kind_;
  std::uint64_t inject_step_ = 0;
};

}  // namespace neat::components
