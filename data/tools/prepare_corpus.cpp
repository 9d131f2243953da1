// neat_prepare_corpus: builds the corpora (neat::data::prepare_corpus) and, with --measure,
// prints the reference compressors' bits per byte on each domain's test split as Markdown.
// Stand-in for `neat data prepare` until the CLI wires neat::data in.
//
// Usage: neat_prepare_corpus [--output DIR] [--code-budget BYTES] [--max-document BYTES]
//                            [--measure] [--measure-only]
//   --measure-only measures an existing DIR/manifest.json without preparing again.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "neat/data/compressors.hpp"
#include "neat/data/corpus.hpp"

namespace {

namespace nd = neat::data;

std::string cell(const nd::CompressionResult& r) {
  const auto bpb = r.bits_per_byte();
  if (!bpb) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", *bpb);
  return buf;
}

// One Markdown table: a row per domain, a column per compressor, on the test split either as
// one stream (the .bin file) or document by document.
void print_table(const nd::Manifest& manifest, bool per_document) {
  std::cout << "\n| domain | test bytes |";
  for (auto c : nd::kCompressors) std::cout << ' ' << nd::compressor_name(c) << " |";
  std::cout << "\n|---|---:|";
  for (std::size_t i = 0; i < nd::kCompressors.size(); ++i) std::cout << "---:|";
  std::cout << '\n';
  std::vector<std::string> reasons;
  for (const auto& domain : manifest.domains) {
    const auto docs = nd::load_split(manifest, domain.name, nd::Split::kTest);
    std::vector<std::uint8_t> stream;
    std::vector<std::span<const std::uint8_t>> spans;
    for (const auto& d : docs) {
      stream.insert(stream.end(), d.bytes.begin(), d.bytes.end());
      spans.emplace_back(d.bytes);
    }
    std::cout << "| " << domain.name << " | " << stream.size() << " |";
    for (auto c : nd::kCompressors) {
      const auto r =
          per_document ? nd::compress_documents(c, spans) : nd::compress_stream(c, stream);
      if (!r.compressed_bytes) reasons.push_back(r.unavailable_reason);
      std::cout << ' ' << cell(r) << " |";
    }
    std::cout << '\n' << std::flush;
  }
  if (!reasons.empty()) std::cout << "\nn/a: " << reasons.front() << '\n';
}

std::uint64_t parse_u64(std::string_view flag, const char* value) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(value, &end, 10);
  if (end == value || *end != '\0') {
    throw nd::CorpusError(std::string(flag) + " needs a byte count, got '" + value + "'");
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    nd::PrepareOptions options;
    std::uint64_t code_budget = nd::kDefaultCodeBudgetBytes;
    bool measure = false, prepare = true;
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      auto value = [&]() -> const char* {
        if (i + 1 >= argc) throw nd::CorpusError(std::string(arg) + " needs a value");
        return argv[++i];
      };
      if (arg == "--output") {
        options.output_dir = value();
      } else if (arg == "--code-budget") {
        code_budget = parse_u64(arg, value());
      } else if (arg == "--max-document") {
        options.max_document_bytes = parse_u64(arg, value());
      } else if (arg == "--measure") {
        measure = true;
      } else if (arg == "--measure-only") {
        measure = true;
        prepare = false;
      } else {
        std::cerr << "usage: neat_prepare_corpus [--output DIR] [--code-budget BYTES] "
                     "[--max-document BYTES] [--measure] [--measure-only]\n";
        return 2;
      }
    }
    options.sources = nd::default_sources("/var/lib/dpkg/info", code_budget);
    const nd::Manifest manifest =
        prepare ? nd::prepare_corpus(options) : nd::load_manifest(options.output_dir);
    std::cout << nd::summary(manifest).dump(2) << '\n';
    if (measure) {
      std::cout << "\nTest split as one stream (bits per byte):\n";
      print_table(manifest, false);
      std::cout << "\nTest split, each document compressed on its own (bits per byte):\n";
      print_table(manifest, true);
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "neat_prepare_corpus: " << e.what() << '\n';
    return 1;
  }
}
