// Message types of the pipeline's source, demo and sink stages (schema name + version each).
// Topic names are in docs/architecture.md. Bytes travel as a u8 tensor frame ("bytes"), not
// inside the msgpack payload, so that they are never copied on the way.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "neat/bus/typed.hpp"

namespace neat::components {

/// One chunk of one input item (topic `input.item`), with tensor "bytes" (u8, [n]).
struct InputChunk {
  static constexpr std::string_view kSchema = "neat.InputChunk";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t doc_id = 0;      ///< position of the item in the source's sorted input list
  std::string path;              ///< file it came from
  std::uint64_t offset = 0;      ///< byte offset of this chunk in the item
  std::uint64_t item_bytes = 0;  ///< total size of the item, bytes
  bool last = false;             ///< last chunk of the item
  MSGPACK_DEFINE_MAP(doc_id, path, offset, item_bytes, last);
};

/// End of a stream: no message follows on this topic from this sender.
struct EndOfStream {
  static constexpr std::string_view kSchema = "neat.EndOfStream";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t items = 0;  ///< items the stream carried
  std::uint64_t bytes = 0;  ///< bytes the stream carried
  MSGPACK_DEFINE_MAP(items, bytes);
};

/// Order-0 statistics of one document (topic `byte_stats.doc`).
struct DocByteStats {
  static constexpr std::string_view kSchema = "neat.DocByteStats";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t doc_id = 0;
  std::string path;
  std::uint64_t bytes = 0;
  std::vector<std::uint64_t> histogram;  ///< 256 counts
  double entropy_bits_per_byte = 0.0;    ///< H = -sum p log2 p over the byte histogram
  MSGPACK_DEFINE_MAP(doc_id, path, bytes, histogram, entropy_bits_per_byte);
};

/// Per-document result of online_unigram (topic `unigram.doc`).
struct UnigramDoc {
  static constexpr std::string_view kSchema = "neat.UnigramDoc";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t doc_id = 0;
  std::string path;
  std::uint64_t bytes = 0;
  double bits_per_byte = 0.0;  ///< online code length of the document under the adaptive model
  MSGPACK_DEFINE_MAP(doc_id, path, bytes, bits_per_byte);
};

/// One item as tokens of the unified token space (topic `tokens`, published by mvot), tensor
/// "tokens" (i32, [token_count]): text as byte tokens, an image as BOI codes EOI.
struct Tokens {
  static constexpr std::string_view kSchema = "neat.Tokens";
  static constexpr std::uint32_t kVersion = 1;
  std::uint64_t doc_id = 0;
  std::string path;
  std::string modality;     ///< "text" or "image"
  std::string format;       ///< "none", "idx", "png", "pgm"
  double confidence = 0.0;  ///< modality decision confidence in [0, 1]
  std::uint64_t token_count = 0;
  std::uint64_t item_bytes = 0;
  std::uint64_t images = 0;  ///< 28x28 images in the item (0 for text)
  double psnr_db = 0.0;      ///< mean per-image PSNR of the round trip, dB (peak 1.0); 0 for text
  std::int32_t codebook_size = 0;
  MSGPACK_DEFINE_MAP(doc_id, path, modality, format, confidence, token_count, item_bytes, images,
                     psnr_db, codebook_size);
};

}  // namespace neat::components
