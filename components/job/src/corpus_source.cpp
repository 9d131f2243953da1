// corpus_source: the prepared split and Fashion-MNIST test images as one stream of items.
#include "neat/job/corpus_source.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <filesystem>
#include <tuple>

#include "neat/components/messages.hpp"
#include "neat/components/paths.hpp"
#include "neat/data/corpus.hpp"
#include "neat/mvot/idx.hpp"
#include "neat/mvot/image_io.hpp"

namespace neat::job {

std::vector<CorpusItem> corpus_items(const CorpusSourceOptions& o) {
  const auto corpus = components::resolve_path(o.corpus);
  if (!std::filesystem::exists(corpus / "manifest.json")) {
    throw data::CorpusError("no prepared corpus in " + o.corpus +
                            " (no manifest.json): run `neat data prepare` first");
  }
  const auto manifest = data::load_manifest(corpus);
  const auto split = data::parse_split(o.split);
  std::vector<std::string> domains = o.domains;
  if (domains.empty()) {
    for (const auto& d : manifest.domains) domains.push_back(d.name);
  }
  std::vector<std::vector<CorpusItem>> per_domain;
  for (const auto& domain : domains) {
    auto docs = data::load_split(manifest, domain, split);
    if (o.max_documents > 0 && docs.size() > o.max_documents) docs.resize(o.max_documents);
    std::vector<CorpusItem> items;
    for (std::size_t k = 0; k < docs.size(); ++k) {
      if (o.max_document_bytes > 0 && docs[k].bytes.size() > o.max_document_bytes) {
        docs[k].bytes.resize(o.max_document_bytes);
      }
      items.push_back(
          {"corpus/" + domain + "/" + o.split + "/" + std::to_string(k), std::move(docs[k].bytes)});
    }
    per_domain.push_back(std::move(items));
  }
  std::vector<CorpusItem> documents;
  for (std::size_t k = 0;; ++k) {
    bool any = false;
    for (auto& items : per_domain) {
      if (k < items.size()) {
        documents.push_back(std::move(items[k]));
        any = true;
      }
    }
    if (!any) break;
  }
  std::vector<CorpusItem> images;
  if (o.image_count > 0) {
    const auto idx = mvot::read_idx_images(o.images);
    const auto labels = mvot::read_idx_labels(o.labels);
    if (labels.size() != idx.count) {
      throw std::runtime_error(o.labels + ": " + std::to_string(labels.size()) + " labels for " +
                               std::to_string(idx.count) + " images in " + o.images);
    }
    const std::size_t n = std::min(o.image_count, idx.count);
    const std::size_t pixels = idx.rows * idx.cols;
    for (std::size_t j = 0; j < n; ++j) {
      const std::size_t index = j * idx.count / n;  // evenly spaced over the test file
      mvot::GrayImage image;
      image.width = static_cast<int>(idx.cols);
      image.height = static_cast<int>(idx.rows);
      image.pixels.assign(idx.pixels.begin() + static_cast<std::ptrdiff_t>(index * pixels),
                          idx.pixels.begin() + static_cast<std::ptrdiff_t>((index + 1) * pixels));
      const std::string name(mvot::fashion_mnist_classes().at(labels[index]));
      images.push_back({"fashion-mnist/t10k/" + std::to_string(index) + "/" + name + ".pgm",
                        mvot::encode_pgm(image)});
    }
  }
  // Spread the images evenly: image j goes after document round((j + 1) * D / (I + 1)).
  std::vector<CorpusItem> out;
  std::size_t next_image = 0;
  const std::size_t d = documents.size(), i = images.size();
  for (std::size_t k = 0; k <= d; ++k) {
    while (next_image < i && (2 * (next_image + 1) * d + i + 1) / (2 * (i + 1)) <= k) {
      out.push_back(std::move(images[next_image++]));
    }
    if (k < d) out.push_back(std::move(documents[k]));
  }
  return out;
}

config::Schema CorpusSource::schema() {
  using config::Schema;
  return Schema::map()
      .optional("corpus", Schema::string().default_value("data/corpus"),
                "prepared corpus directory (`neat data prepare`)")
      .optional("split", Schema::string().default_value("test"), "train, val or test")
      .optional("domains", Schema::list(Schema::string()).default_value("[]"),
                "domains to stream, round-robin (empty: every domain of the manifest)")
      .optional("max_documents", Schema::integer(0, 1 << 30).default_value("0"),
                "documents per domain (0: all)")
      .optional("max_document_bytes", Schema::integer(0, std::int64_t{1} << 40).default_value("0"),
                "each document cut to its first N bytes (0: whole documents)")
      .optional("images",
                Schema::string().default_value(
                    "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
                "IDX image file (Debian dataset-fashion-mnist)")
      .optional("labels",
                Schema::string().default_value(
                    "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
                "IDX label file of the images")
      .optional("image_count", Schema::integer(0, 10000).default_value("20"),
                "test images streamed, evenly spaced over the file, each as a PGM item")
      .optional("chunk_bytes", Schema::integer(1, 64 << 20).default_value("4096"),
                "bytes per published chunk")
      .optional("topic", Schema::string().default_value("input.item"), "output topic");
}

void CorpusSource::configure(const YAML::Node& config, components::Context& ctx) {
  CorpusSourceOptions o;
  if (config["corpus"]) o.corpus = config["corpus"].as<std::string>();
  if (config["split"]) o.split = config["split"].as<std::string>();
  if (config["domains"]) o.domains = config["domains"].as<std::vector<std::string>>();
  if (config["max_documents"]) o.max_documents = config["max_documents"].as<std::size_t>();
  if (config["max_document_bytes"]) {
    o.max_document_bytes = config["max_document_bytes"].as<std::size_t>();
  }
  if (config["images"]) o.images = config["images"].as<std::string>();
  if (config["labels"]) o.labels = config["labels"].as<std::string>();
  if (config["image_count"]) o.image_count = config["image_count"].as<std::size_t>();
  if (config["chunk_bytes"]) chunk_bytes_ = config["chunk_bytes"].as<std::size_t>();
  if (config["topic"]) topic_ = config["topic"].as<std::string>();
  items_ = corpus_items(o);
  ctx.log().info("{} items from {} ({} split) and {}", items_.size(), o.corpus, o.split, o.images);
}

bool CorpusSource::step(components::Context& ctx) {
  if (eos_sent_) return false;
  if (next_ >= items_.size()) {
    bus::publish(ctx.node(), topic_, components::EndOfStream{sent_items_, sent_bytes_});
    eos_sent_ = true;
    ctx.log().info("sent {} items, {} bytes", sent_items_, sent_bytes_);
    ctx.finish(stats().dump());
    return false;
  }
  const auto& item = items_[next_];
  const std::size_t n = std::min<std::size_t>(chunk_bytes_, item.bytes.size() - offset_);
  std::vector<std::uint8_t> chunk(item.bytes.begin() + static_cast<std::ptrdiff_t>(offset_),
                                  item.bytes.begin() + static_cast<std::ptrdiff_t>(offset_ + n));
  const bool last = offset_ + n >= item.bytes.size();
  components::InputChunk msg{next_, item.path, offset_, item.bytes.size(), last};
  bus::publish(ctx.node(), topic_, msg,
               {bus::TensorOut::from_vector("bytes", bus::DType::u8, {static_cast<std::int64_t>(n)},
                                            std::move(chunk))});
  offset_ += n;
  sent_bytes_ += n;
  if (last) {
    ++sent_items_;
    ++next_;
    offset_ = 0;
  }
  return true;
}

nlohmann::json CorpusSource::stats() const {
  return {{"items", items_.size()},
          {"items_sent", sent_items_},
          {"bytes_sent", sent_bytes_},
          {"progress", {{"items_total", items_.size()}}}};
}

std::string CorpusSource::snapshot() const {
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::make_tuple(next_, offset_, sent_items_, sent_bytes_, eos_sent_));
  return {buf.data(), buf.size()};
}

void CorpusSource::restore(std::string_view bytes) {
  std::tuple<std::size_t, std::uint64_t, std::uint64_t, std::uint64_t, bool> t;
  try {
    auto h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(t);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("corpus_source: corrupt snapshot: ") + e.what());
  }
  std::tie(next_, offset_, sent_items_, sent_bytes_, eos_sent_) = t;
  if (next_ > items_.size() || (next_ < items_.size() && offset_ > items_[next_].bytes.size())) {
    throw std::runtime_error("corpus_source: snapshot position " + std::to_string(next_) + "/" +
                             std::to_string(offset_) + " is past the configured items");
  }
}

}  // namespace neat::job
