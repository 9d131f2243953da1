// sink: per-document results to report.json.
#include "neat/components/sink.hpp"

#include <fstream>

#include "neat/components/messages.hpp"

namespace neat::components {

config::Schema Sink::schema() {
  using config::Schema;
  return Schema::map()
      .optional("input", Schema::string().default_value("byte_stats.doc"), "topic of DocByteStats")
      .optional("online_input", Schema::string(),
                "topic of UnigramDoc (online_unigram): adds each document's online bits per "
                "byte; the report waits for both streams to end")
      .optional("report", Schema::string().default_value("report.json"),
                "report file name in the output directory");
}

void Sink::configure(const YAML::Node& config, Context& ctx) {
  if (config["input"]) input_ = config["input"].as<std::string>();
  if (config["report"]) report_name_ = config["report"].as<std::string>();
  bus::subscribe<DocByteStats>(
      ctx.node(), input_, [this](const DocByteStats& d, const bus::Message&) {
        ++received_;
        documents_[d.doc_id] = {{"doc_id", d.doc_id},
                                {"path", d.path},
                                {"bytes", d.bytes},
                                {"entropy_bits_per_byte", d.entropy_bits_per_byte},
                                {"histogram", d.histogram}};
      });
  auto on_end = [this, &ctx](const EndOfStream& eos, const bus::Message&) {
    stream_bytes_ = std::max(stream_bytes_, eos.bytes);
    if (++streams_ended_ == (online_input_.empty() ? 1 : 2)) write_report(ctx, stream_bytes_);
  };
  bus::subscribe<EndOfStream>(ctx.node(), input_, on_end);
  if (config["online_input"]) {
    online_input_ = config["online_input"].as<std::string>();
    bus::subscribe<UnigramDoc>(
        ctx.node(), online_input_,
        [this](const UnigramDoc& d, const bus::Message&) { online_[d.doc_id] = d.bits_per_byte; });
    bus::subscribe<EndOfStream>(ctx.node(), online_input_, on_end);
  }
}

void Sink::write_report(Context& ctx, std::uint64_t stream_bytes) {
  nlohmann::json docs = nlohmann::json::array();
  std::uint64_t bytes = 0;
  double weighted = 0.0;
  double online_weighted = 0.0;
  for (const auto& [id, d] : documents_) {
    docs.push_back(d);
    if (auto it = online_.find(id); it != online_.end()) {
      docs.back()["online_bits_per_byte"] = it->second;
      online_weighted += it->second * d["bytes"].get<double>();
    }
    bytes += d["bytes"].get<std::uint64_t>();
    weighted += d["entropy_bits_per_byte"].get<double>() * d["bytes"].get<double>();
  }
  nlohmann::json report = {
      {"documents", docs},
      {"totals",
       {{"documents", documents_.size()},
        {"bytes", bytes},
        {"stream_bytes", stream_bytes},
        {"results_received", received_},
        {"mean_order0_bits_per_byte", bytes > 0 ? weighted / static_cast<double>(bytes) : 0.0}}}};
  if (!online_input_.empty()) {
    report["totals"]["online_bits_per_byte"] =
        bytes > 0 ? online_weighted / static_cast<double>(bytes) : 0.0;
  }
  std::filesystem::create_directories(ctx.out_dir());
  const auto path = ctx.out_dir() / report_name_;
  std::ofstream(path) << report.dump(2) << "\n";
  ctx.log().info("wrote {} ({} documents, {} bytes)", path.string(), documents_.size(), bytes);
  ctx.finish(
      nlohmann::json{{"report", path.string()}, {"documents", documents_.size()}, {"bytes", bytes}}
          .dump());
}

nlohmann::json Sink::stats() const { return {{"documents", documents_.size()}}; }

std::string Sink::snapshot() const {
  std::map<std::uint64_t, std::string> docs;
  for (const auto& [id, d] : documents_) docs[id] = d.dump();
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::make_tuple(docs, received_, online_, streams_ended_, stream_bytes_));
  return {buf.data(), buf.size()};
}

void Sink::restore(std::string_view bytes) {
  std::tuple<std::map<std::uint64_t, std::string>, std::uint64_t, std::map<std::uint64_t, double>,
             int, std::uint64_t>
      t;
  auto& docs = std::get<0>(t);
  try {
    auto h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(t);
    received_ = std::get<1>(t);
    online_ = std::get<2>(t);
    streams_ended_ = std::get<3>(t);
    stream_bytes_ = std::get<4>(t);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("sink: corrupt snapshot: ") + e.what());
  }
  documents_.clear();
  for (const auto& [id, text] : docs) documents_[id] = nlohmann::json::parse(text);
}

}  // namespace neat::components
