// report: the main job's sink. Joins what the components publish about each item — mvot's
// `tokens` (modality, bytes, image codes and round-trip PSNR), blt's `blt.patches` (patch
// counts and sizes), `blt.scores` (code length per byte LM variant), `t2.adaptation` (detected
// domain and confidence) — and, when every stream has ended, writes `report.json` with per
// document, per domain (next to xz -9e, bzip2 -9, zstd -19 and zpaq -m5 on the same bytes, run
// here) and per image results, and totals. Like `sink`, the report holds only run-independent
// content (no timings: those are in run.json), so that the embedded and multi-process shapes
// of a pipeline compare field by field.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "neat/components/component.hpp"

namespace neat::job {

/// What the report knows about one item.
struct ItemRecord {
  std::string path;
  std::string modality;  ///< from mvot
  std::uint64_t item_bytes = 0;
  std::vector<std::uint8_t> text;  ///< the text bytes (for the compressors), text items only
  std::uint64_t images = 0, codes = 0;
  std::vector<std::int32_t> image_tokens;  ///< an image item's tokens (BOI codes EOI)
  double psnr_db = 0.0;
  std::uint64_t patches = 0, patch_tokens = 0;
  std::map<std::string, double> bits;  ///< code length per byte LM variant, bits
  std::uint64_t scored_bytes = 0;
  std::uint64_t token_count = 0;  ///< BOS .. EOS, from blt.scores
  /// Code length per variant recomputed here from the logged per-token log-probabilities of
  /// blt.scores (targets that are bytes only): the consistency check of `bits`.
  std::map<std::string, double> logged_bits;
  std::string detected_domain;  ///< from t2
  double confidence = 0.0;
};

/// The true domain encoded in a corpus_source path (`corpus/<domain>/...`), the class of an
/// image item (`fashion-mnist/t10k/<index>/<class>.pgm`), or "" for other paths.
std::string domain_of_path(const std::string& path);
std::string class_of_path(const std::string& path);

/// The report JSON from the records (compressors run on each domain's text bytes as one
/// stream; zpaq appears as unavailable when its binary is missing). Pure apart from the
/// compressors: the same records give the same report.
nlohmann::json build_report(const std::map<std::uint64_t, ItemRecord>& items,
                            const std::map<std::uint64_t, std::uint64_t>& patch_size_histogram,
                            bool run_compressors, std::uint64_t source_items = 0);

/// The report as the table `neat run` prints (markdown): one row per domain and a total row,
/// bits per byte for each byte LM variant present (base, +T2, +Titans, full) next to the
/// compressors, domain identification accuracy; then one line for the images.
std::string report_table(const nlohmann::json& report);

/// The report's plots, drawn with gnuplot when it is installed (data files always):
/// bits_per_byte.png (per domain: every byte LM variant and the compressors, from
/// bits_per_byte.dat), patch_sizes.png (the patch-size histogram, patch_sizes.dat), and
/// images.png (libpng, no gnuplot needed: the first images as streamed, top row, and their
/// codebook reconstructions, bottom row; originals read back from `idx_images` by the index in
/// their path). Returns {"written": [files], "skipped": {file: reason}}.
nlohmann::json write_plots(const nlohmann::json& report,
                           const std::map<std::uint64_t, ItemRecord>& items,
                           const std::filesystem::path& dir, const std::filesystem::path& codebook,
                           const std::filesystem::path& idx_images);

/// Adds the run's own totals from the launcher's run.json to report.json (a "run" block):
/// wall time, throughput (bytes/s, images/s), predictor latency per item (p50, p99),
/// per-component peak memory and budget grant, stability events (learning-rate changes,
/// rollbacks), bus statistics per component (messages, bytes, drops). Kept apart from the
/// measured results so that runs of different shapes still compare field by field. Does
/// nothing when either file is missing or unreadable (a failed run).
void add_run_totals(const std::filesystem::path& report_json,
                    const std::filesystem::path& run_json);

class Report : public components::Component {
 public:
  /// `config:` keys: report (file name), tokens, patches, scores, adaptation (topics; "" turns
  /// one off), end_on (topics whose EndOfStream must all arrive), compressors (bool).
  static config::Schema schema();
  void configure(const YAML::Node& config, components::Context& ctx) override;
  std::vector<std::string> publishes() const override { return {}; }
  nlohmann::json stats() const override;
  /// A run stopped before its end (Ctrl-C) still leaves report.json, marked "partial": true,
  /// with what had arrived.
  void shutdown(components::Context& ctx) override;

 private:
  void maybe_finish(components::Context& ctx);
  void write(components::Context& ctx, bool partial);
  std::string report_name_ = "report.json";
  std::vector<std::string> end_on_;
  std::map<std::string, bool> ended_;
  bool compressors_ = true, written_ = false, plots_ = true;
  std::string codebook_ = "models/mvot/codebook.msgpack";
  std::string idx_images_ = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  std::map<std::uint64_t, ItemRecord> items_;
  std::map<std::uint64_t, std::uint64_t> patch_sizes_;  ///< tokens per patch -> patches
  std::uint64_t rejected_ = 0;
  std::uint64_t source_items_ = 0;  ///< items the token stream's EndOfStream announced
};

}  // namespace neat::job
