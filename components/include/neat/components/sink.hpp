// sink: collects per-document results and writes `report.json` in the run's output directory
// when the stream ends; then reports done. The report holds only measured, run-independent
// content (no timestamps), so that runs of the same pipeline in any process shape compare
// byte for byte.
#pragma once

#include <algorithm>
#include <map>
#include <string>

#include "neat/components/component.hpp"

namespace neat::components {

class Sink : public Component {
 public:
  static config::Schema schema();
  void configure(const YAML::Node& config, Context& ctx) override;
  std::vector<std::string> publishes() const override { return {}; }
  nlohmann::json stats() const override;
  std::string snapshot() const override;
  void restore(std::string_view bytes) override;

 private:
  void write_report(Context& ctx, std::uint64_t stream_bytes);
  std::string input_ = "byte_stats.doc";
  std::string report_name_ = "report.json";
  std::map<std::uint64_t, nlohmann::json> documents_;
  std::uint64_t received_ = 0;  ///< results handled: equals the documents when exactly once
  std::string online_input_;
  std::map<std::uint64_t, double> online_;  ///< doc_id -> online bits per byte
  int streams_ended_ = 0;
  std::uint64_t stream_bytes_ = 0;
};

}  // namespace neat::components
