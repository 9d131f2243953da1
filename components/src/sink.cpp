// sink: per-document results to report.json.
#include "neat/components/sink.hpp"

#include <fstream>

#include "neat/components/messages.hpp"

namespace neat::components {

config::Schema Sink::schema() {
  using config::Schema;
  return Schema::map()
      .optional("input", Schema::string().default_value("byte_stats.doc"), "topic of DocByteStats")
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
  bus::subscribe<EndOfStream>(
      ctx.node(), input_,
      [this, &ctx](const EndOfStream& eos, const bus::Message&) { write_report(ctx, eos.bytes); });
}

void Sink::write_report(Context& ctx, std::uint64_t stream_bytes) {
  nlohmann::json docs = nlohmann::json::array();
  std::uint64_t bytes = 0;
  double weighted = 0.0;
  for (const auto& [id, d] : documents_) {
    docs.push_back(d);
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
  msgpack::pack(buf, std::make_tuple(docs, received_));
  return {buf.data(), buf.size()};
}

void Sink::restore(std::string_view bytes) {
  std::tuple<std::map<std::uint64_t, std::string>, std::uint64_t> t;
  auto& docs = std::get<0>(t);
  try {
    auto h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(t);
    received_ = std::get<1>(t);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("sink: corrupt snapshot: ") + e.what());
  }
  documents_.clear();
  for (const auto& [id, text] : docs) documents_[id] = nlohmann::json::parse(text);
}

}  // namespace neat::components
