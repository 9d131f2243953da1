// byte_stats (demo): per-document byte histogram and order-0 entropy in bits per byte,
// H = -sum_b p_b log2 p_b, from the chunks on `input.item`; published on `byte_stats.doc`.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "neat/components/component.hpp"

namespace neat::components {

class ByteStats : public Component {
 public:
  static config::Schema schema();
  void configure(const YAML::Node& config, Context& ctx) override;
  std::vector<std::string> publishes() const override { return {output_}; }
  nlohmann::json stats() const override;
  std::string snapshot() const override;
  void restore(std::string_view bytes) override;

 private:
  std::string input_ = "input.item";
  std::string output_ = "byte_stats.doc";
  std::map<std::uint64_t, std::array<std::uint64_t, 256>> open_;  ///< doc_id -> histogram
  std::uint64_t documents_ = 0, bytes_ = 0;
};

/// Order-0 entropy of a byte histogram, bits per byte; 0 for an empty histogram.
double order0_entropy_bits(const std::array<std::uint64_t, 256>& histogram);

}  // namespace neat::components
