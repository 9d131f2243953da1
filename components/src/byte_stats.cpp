// byte_stats: histogram and order-0 entropy per document.
#include "neat/components/byte_stats.hpp"

#include <cmath>

#include "neat/components/messages.hpp"

namespace neat::components {

config::Schema ByteStats::schema() {
  using config::Schema;
  return Schema::map()
      .optional("input", Schema::string().default_value("input.item"),
                "topic of InputChunk messages")
      .optional("output", Schema::string().default_value("byte_stats.doc"),
                "topic for DocByteStats");
}

double order0_entropy_bits(const std::array<std::uint64_t, 256>& h) {
  std::uint64_t n = 0;
  for (auto c : h) n += c;
  if (n == 0) return 0.0;
  double entropy = 0.0;
  for (auto c : h) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / static_cast<double>(n);
    entropy -= p * std::log2(p);
  }
  return entropy;
}

void ByteStats::configure(const YAML::Node& config, Context& ctx) {
  if (config["input"]) input_ = config["input"].as<std::string>();
  if (config["output"]) output_ = config["output"].as<std::string>();
  bus::subscribe<InputChunk>(
      ctx.node(), input_, [this, &ctx](const InputChunk& chunk, const bus::Message& m) {
        auto tensors = m.tensors();
        if (tensors.size() != 1 || tensors[0].desc().dtype != bus::DType::u8) {
          throw bus::PayloadError("InputChunk must carry one u8 tensor 'bytes'");
        }
        auto& hist = open_.try_emplace(chunk.doc_id).first->second;
        auto bytes = tensors[0].bytes();
        for (auto b : bytes) ++hist[static_cast<std::uint8_t>(b)];
        bytes_ += bytes.size();
        if (!chunk.last) return;
        DocByteStats out;
        out.doc_id = chunk.doc_id;
        out.path = chunk.path;
        out.histogram.assign(hist.begin(), hist.end());
        for (auto c : hist) out.bytes += c;
        out.entropy_bits_per_byte = order0_entropy_bits(hist);
        open_.erase(chunk.doc_id);
        ++documents_;
        bus::publish(ctx.node(), output_, out);
      });
  bus::subscribe<EndOfStream>(
      ctx.node(), input_, [this, &ctx](const EndOfStream& eos, const bus::Message&) {
        bus::publish(ctx.node(), output_, EndOfStream{documents_, eos.bytes});
      });
}

nlohmann::json ByteStats::stats() const {
  return {{"documents", documents_}, {"bytes", bytes_}, {"open_documents", open_.size()}};
}

std::string ByteStats::snapshot() const {
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::make_tuple(open_, documents_, bytes_));
  return {buf.data(), buf.size()};
}

void ByteStats::restore(std::string_view bytes) {
  std::tuple<std::map<std::uint64_t, std::array<std::uint64_t, 256>>, std::uint64_t, std::uint64_t>
      t;
  try {
    auto h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(t);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("byte_stats: corrupt snapshot: ") + e.what());
  }
  std::tie(open_, documents_, bytes_) = t;
}

}  // namespace neat::components
