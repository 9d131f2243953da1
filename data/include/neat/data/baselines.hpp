// Reference compressors on a prepared corpus: bits per byte of each domain's split under
// xz -9e, bzip2 -9, zstd -19 and zpaq -m5, as a markdown table (`neat data baselines`).
#pragma once

#include <string>

#include "neat/data/corpus.hpp"

namespace neat::data {

/// Markdown table, a row per domain and a column per compressor, of bits per byte
/// (8 x compressed bytes / raw bytes) on `split`: the split's documents as one stream, or with
/// `per_document` each document compressed on its own (sizes summed). A compressor that is not
/// installed shows "n/a" and the reason follows the table.
std::string compressor_table(const Manifest& manifest, Split split, bool per_document);

}  // namespace neat::data
