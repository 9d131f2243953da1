// Compressor baselines over a manifest's splits.
#include "neat/data/baselines.hpp"

#include <cstdio>
#include <span>
#include <sstream>
#include <vector>

#include "neat/data/compressors.hpp"

namespace neat::data {

namespace {

std::string cell(const CompressionResult& r) {
  const auto bpb = r.bits_per_byte();
  if (!bpb) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", *bpb);
  return buf;
}

}  // namespace

std::string compressor_table(const Manifest& manifest, Split split, bool per_document) {
  std::ostringstream out;
  out << "| domain | " << split_name(split) << " bytes |";
  for (auto c : kCompressors) out << ' ' << compressor_name(c) << " |";
  out << "\n|---|---:|";
  for (std::size_t i = 0; i < kCompressors.size(); ++i) out << "---:|";
  out << '\n';
  std::vector<std::string> reasons;
  for (const auto& domain : manifest.domains) {
    const auto docs = load_split(manifest, domain.name, split);
    std::vector<std::uint8_t> stream;
    std::vector<std::span<const std::uint8_t>> spans;
    for (const auto& d : docs) {
      stream.insert(stream.end(), d.bytes.begin(), d.bytes.end());
      spans.emplace_back(d.bytes);
    }
    out << "| " << domain.name << " | " << stream.size() << " |";
    for (auto c : kCompressors) {
      const auto r = per_document ? compress_documents(c, spans) : compress_stream(c, stream);
      if (!r.compressed_bytes) reasons.push_back(r.unavailable_reason);
      out << ' ' << cell(r) << " |";
    }
    out << '\n';
  }
  if (!reasons.empty()) out << "\nn/a: " << reasons.front() << '\n';
  return out.str();
}

}  // namespace neat::data
