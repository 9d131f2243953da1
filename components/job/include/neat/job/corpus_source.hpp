// corpus_source: the main job's input. Streams the prepared corpus split (`neat data prepare`;
// documents of every domain, interleaved round-robin so that domains alternate) with
// Fashion-MNIST test images spread among them, each image as its own binary PGM item (28x28),
// on `input.item` as InputChunk messages, then EndOfStream — the same contract as `source`, so
// mvot decides each item's modality from its content, not from this component.
//
// Item paths name their origin: `corpus/<domain>/<split>/<k>` (the k-th document of that
// domain's split) and `fashion-mnist/t10k/<index>/<class>.pgm`; the report reads the true
// domain and class from them. Snapshot/restore keeps the exact item and offset (exactly-once
// delivery after a restart, as `source`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "neat/components/component.hpp"

namespace neat::job {

/// One item of the stream, fully in memory (the test split is a few MB).
struct CorpusItem {
  std::string path;
  std::vector<std::uint8_t> bytes;
};

struct CorpusSourceOptions {
  std::string corpus = "data/corpus";  ///< directory holding manifest.json
  std::string split = "test";
  std::vector<std::string> domains;    ///< empty: every domain of the manifest
  std::size_t max_documents = 0;       ///< per domain; 0: all
  std::size_t max_document_bytes = 0;  ///< each document cut to its first N bytes; 0: whole
  std::string images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  std::string labels = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
  std::size_t image_count = 20;  ///< test images taken (evenly spaced over the file); 0: none
};

/// The items in stream order: documents round-robin over domains (first of each domain, then
/// second, ...), with the images spread evenly among them. Throws data::CorpusError when the
/// corpus is missing (its message says to run `neat data prepare`) and std::runtime_error
/// naming the file when the images cannot be read.
std::vector<CorpusItem> corpus_items(const CorpusSourceOptions& options);

class CorpusSource : public components::Component {
 public:
  /// `config:` keys: corpus, split, domains, max_documents, max_document_bytes, images, labels,
  /// image_count, chunk_bytes, topic.
  static config::Schema schema();
  void configure(const YAML::Node& config, components::Context& ctx) override;
  std::vector<std::string> publishes() const override { return {topic_}; }
  bool step(components::Context& ctx) override;
  nlohmann::json stats() const override;
  std::string snapshot() const override;
  void restore(std::string_view bytes) override;

 private:
  std::string topic_ = "input.item";
  std::size_t chunk_bytes_ = 4096;
  std::vector<CorpusItem> items_;
  std::size_t next_ = 0;      ///< item being sent
  std::uint64_t offset_ = 0;  ///< next byte of that item
  std::uint64_t sent_items_ = 0, sent_bytes_ = 0;
  bool eos_sent_ = false;
};

}  // namespace neat::job
