// source: reads files (any paths; directories are listed, sorted, non-recursive unless
// configured) and publishes each as chunks on `input.item`, then an EndOfStream.
// Unreadable paths are reported, counted and skipped; they never end the run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "neat/components/component.hpp"

namespace neat::components {

class Source : public Component {
 public:
  static config::Schema schema();
  void configure(const YAML::Node& config, Context& ctx) override;
  std::vector<std::string> publishes() const override { return {topic_}; }
  bool step(Context& ctx) override;
  nlohmann::json stats() const override;
  std::string snapshot() const override;
  void restore(std::string_view bytes) override;

 private:
  bool open_next(Context& ctx);

  std::string topic_ = "input.item";
  std::size_t chunk_bytes_ = 4096;
  std::vector<std::filesystem::path> files_;
  std::vector<std::string> unreadable_;
  std::size_t next_file_ = 0;  ///< index in files_ of the next item to open
  std::uint64_t items_ = 0, bytes_ = 0;
  bool eos_sent_ = false;
  // the item being sent
  std::ifstream in_;
  std::uint64_t doc_id_ = 0, offset_ = 0, item_bytes_ = 0;
  std::string path_;
  bool in_item_ = false;
};

/// Lists `inputs` (files, or directories listed in name order) into `files`, skipping names
/// with one of `skip_suffixes`; unreadable or missing paths go to `unreadable` with a reason.
void list_inputs(const std::vector<std::string>& inputs, bool recursive,
                 const std::vector<std::string>& skip_suffixes,
                 std::vector<std::filesystem::path>& files, std::vector<std::string>& unreadable);

}  // namespace neat::components
