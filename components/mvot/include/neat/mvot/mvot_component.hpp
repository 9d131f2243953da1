// The `mvot` pipeline component (MVoT, Li et al. 2025, arXiv 2501.07542): assembles each item
// from `input.item` chunks, decides its modality, maps it into the unified token space (text:
// one byte token per byte; image: BOI codes EOI per 28x28 image, codes of the shipped VQ
// codebook) and publishes neat.Tokens on `tokens` with an i32 tensor frame "tokens"; image
// items also carry the PSNR of their codebook round trip. Statistics go to `mvot.stats` every
// `stats_every` items and at the end of the stream; EndOfStream is forwarded on `tokens`.
// Invariant: bad input (an undecodable image) never throws out of a handler: the item is sent as
// byte tokens and counted in decode_failures.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "neat/bus/typed.hpp"
#include "neat/components/component.hpp"
#include "neat/components/messages.hpp"
#include "neat/components/registry.hpp"
#include "neat/mvot/codebook.hpp"

namespace neat::mvot {

/// One item as tokens (topic `tokens`): the pipeline message, defined with the others in
/// neat/components/messages.hpp so that its consumers need not link mvot.
using Tokens = components::Tokens;

/// Running statistics (topic `mvot.stats`).
struct MvotStats {
  static constexpr std::string_view kSchema = "neat.MvotStats";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t text_items = 0;
  std::uint64_t image_items = 0;
  std::uint64_t images = 0;       ///< 28x28 images encoded
  std::uint64_t image_codes = 0;  ///< codes emitted (49 per image)
  std::uint64_t text_tokens = 0;
  std::uint64_t decode_failures = 0;  ///< image signature but undecodable: sent as text
  double mean_psnr_db = 0.0;          ///< mean over images of per-image PSNR, dB
  double mean_confidence = 0.0;       ///< mean decision confidence over items
  bool final = false;                 ///< true for the end-of-stream report
  MSGPACK_DEFINE_MAP(text_items, image_items, images, image_codes, text_tokens, decode_failures,
                     mean_psnr_db, mean_confidence, final);
};

class MvotComponent : public components::Component {
 public:
  /// `config:` keys: codebook (path, default models/mvot/codebook.msgpack), input, output,
  /// stats_topic, stats_every (items; 0 = only at end of stream).
  static config::Schema schema();
  /// Loads the codebook (throws std::runtime_error if it is missing or corrupt) and subscribes.
  void configure(const YAML::Node& config, components::Context& ctx) override;
  std::vector<std::string> publishes() const override { return {output_, stats_topic_}; }
  nlohmann::json stats() const override;

  /// Maps one whole item to tokens (also used by tests without a bus). Updates the statistics.
  /// Returns the message and fills `tokens`.
  Tokens tokenize(std::uint64_t doc_id, const std::string& path, std::span<const std::uint8_t> item,
                  std::vector<std::int32_t>& tokens);
  /// Loads a codebook directly (tests); configure() does this from the config.
  void set_codebook(Codebook codebook) { codebook_.emplace(std::move(codebook)); }
  MvotStats current_stats() const;

 private:
  std::string input_ = "input.item";
  std::string output_ = "tokens";
  std::string stats_topic_ = "mvot.stats";
  std::uint64_t stats_every_ = 0;
  std::optional<Codebook> codebook_;
  std::map<std::uint64_t, std::vector<std::uint8_t>> open_;  ///< doc_id -> bytes so far
  MvotStats stats_;
  double psnr_sum_ = 0.0, confidence_sum_ = 0.0;
};

}  // namespace neat::mvot

namespace neat::components {
/// Registration of the `mvot` kind: `registry.add(mvot_kind());`.
ComponentKind mvot_kind();
}  // namespace neat::components
