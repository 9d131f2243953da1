// Modality decision for an input item (MVoT interleaves text and image tokens; which one an
// item becomes is decided here from its bytes alone): image if the bytes are a well-formed IDX3
// u8 image file, PNG or PGM (P5/P2) — format signature plus a header consistent with the size —
// otherwise text, with a confidence from byte statistics (fraction of printable ASCII / valid
// UTF-8 bytes). No keyword lists. Invariant: decide_modality never throws; an item whose
// signature claims an image but whose header is inconsistent is text.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "neat/mvot/image_io.hpp"

namespace neat::mvot {

enum class Modality { text, image };
enum class ImageFormat { none, idx, png, pgm };

std::string_view to_string(Modality m);
std::string_view to_string(ImageFormat f);

struct ModalityDecision {
  Modality modality = Modality::text;
  ImageFormat format = ImageFormat::none;
  double confidence = 0.0;     ///< in [0, 1]
  double text_fraction = 0.0;  ///< printable ASCII or valid UTF-8 multibyte bytes / all bytes
  std::string reason;
};

/// Fraction of bytes that are printable ASCII, tab/CR/LF/FF, or part of a valid UTF-8
/// multibyte sequence (RFC 3629). 1.0 for an empty span.
double text_byte_fraction(std::span<const std::uint8_t> bytes);

/// Decides the modality. Image confidence is 1.0 when the header is consistent with the size;
/// text confidence is text_byte_fraction (a binary blob that is no known image is "text" with
/// low confidence: its bytes are still carried losslessly as byte tokens).
ModalityDecision decide_modality(std::span<const std::uint8_t> bytes);

/// The 28x28 grayscale images (784 u8 each, back to back) of an item decided as an image: every
/// image of an IDX file; a PNG or PGM decoded and area-resampled to 28x28 if it has another
/// size. Throws std::runtime_error if the item cannot be decoded.
std::vector<std::uint8_t> item_images_28(std::span<const std::uint8_t> bytes, ImageFormat format,
                                         std::size_t& count);

}  // namespace neat::mvot
