// The wire format of every neat bus message, and its validating decoder.
//
// A message is a ZeroMQ multipart message:
//   frame 0  topic (UTF-8, matched by prefix by subscribers)
//   frame 1  header, then payload: the header is a msgpack array [magic, schema, version,
//            sender, seq, timestamp_ns, flags, [[tensor name, dtype, [shape...]], ...]], which
//            is self-delimiting; the bytes after it are the payload (may be empty). One frame
//            instead of two costs ZeroMQ one message part less per message.
//   frame 2+ one raw frame per tensor, dtype x shape bytes, sent without copying.
// Invariant: decode() accepts exactly what encode() produces; anything else is rejected with a
// DecodeReason and a human-readable detail, never an exception or a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <zmq.hpp>

namespace neat::bus {

/// Element types a tensor frame may carry.
enum class DType : std::uint8_t { u8 = 0, i32 = 1, i64 = 2, f32 = 3, f64 = 4, bf16 = 5 };

/// Size of one element in bytes.
std::size_t dtype_size(DType dtype);
/// "u8", "i32", "i64", "f32", "f64", "bf16".
std::string_view dtype_name(DType dtype);

/// Name, element type and shape of one tensor frame. Shape has 0..8 dimensions, each >= 0.
struct TensorDesc {
  std::string name;
  DType dtype = DType::u8;
  std::vector<std::int64_t> shape;

  /// Number of elements (product of shape; 1 for a scalar).
  std::int64_t numel() const;
  /// numel() x dtype_size(dtype).
  std::size_t bytes() const;
};

/// Header flags.
enum HeaderFlags : std::uint32_t {
  kFlagNone = 0,
  /// Subscription probe (slow-joiner handshake): never delivered to handlers, takes no sequence
  /// number.
  kFlagProbe = 1u << 0,
  /// Published on a lossy topic: a sequence gap is a drop, never something to wait for.
  kFlagLossy = 1u << 1,
};

/// Per-message metadata carried in frame 1.
struct Header {
  std::string schema;             ///< message type name, e.g. "neat.InputChunk"
  std::uint32_t version = 1;      ///< schema version
  std::string sender;             ///< publishing node's name
  std::uint64_t seq = 0;          ///< per (sender, topic) sequence number, first message is 1
  std::int64_t timestamp_ns = 0;  ///< CLOCK_REALTIME at publish, nanoseconds
  std::uint32_t flags = kFlagNone;
  std::vector<TensorDesc> tensors;
};

/// A tensor to send. `data` must stay valid while `owner` is alive; the bus keeps `owner` alive
/// until ZeroMQ has sent the frame (zero copy through zmq_msg_init_data with a deleter).
struct TensorOut {
  TensorDesc desc;
  std::shared_ptr<const void> owner;
  const void* data = nullptr;

  /// Wraps a vector without copying: the vector is moved into shared ownership.
  template <class T>
  static TensorOut from_vector(std::string name, DType dtype, std::vector<std::int64_t> shape,
                               std::vector<T> values) {
    auto held = std::make_shared<std::vector<T>>(std::move(values));
    TensorOut out;
    out.desc = TensorDesc{std::move(name), dtype, std::move(shape)};
    out.data = held->data();
    out.owner = std::move(held);
    return out;
  }
};

/// Received frames, shared by every view into them.
using FrameSet = std::shared_ptr<std::vector<zmq::message_t>>;

/// A received tensor: a view into its frame that keeps the whole message alive.
class TensorView {
 public:
  TensorView(TensorDesc desc, FrameSet frames, std::size_t frame_index);
  const TensorDesc& desc() const { return desc_; }
  std::span<const std::byte> bytes() const;
  /// Typed view; throws std::invalid_argument if sizeof(T) != dtype size or data is misaligned.
  template <class T>
  std::span<const T> as() const {
    check_view(sizeof(T), alignof(T));
    auto b = bytes();
    return {reinterpret_cast<const T*>(b.data()), b.size() / sizeof(T)};
  }
  /// Copy into a vector (works whatever the alignment).
  template <class T>
  std::vector<T> to_vector() const {
    check_view(sizeof(T), 1);
    auto b = bytes();
    std::vector<T> out(b.size() / sizeof(T));
    if (!b.empty()) std::memcpy(out.data(), b.data(), b.size());
    return out;
  }

 private:
  void check_view(std::size_t elem_size, std::size_t alignment) const;
  TensorDesc desc_;
  FrameSet frames_;
  std::size_t frame_index_;
};

/// A decoded message: topic, header, payload bytes and tensor views, all sharing the frames.
struct Message {
  std::string topic;
  Header header;
  FrameSet frames;
  std::size_t payload_offset = 0;  ///< where the payload starts in frame 1
  std::span<const std::byte> payload() const;
  std::vector<TensorView> tensors() const;
  /// Bytes on the wire over all frames.
  std::size_t wire_bytes() const;
};

/// Why a frame set was rejected.
enum class DecodeReason : std::uint8_t {
  truncated = 0,         ///< fewer frames than the header promises, or a cut-off header
  garbage,               ///< header frame is not a neat header at all
  unknown_schema,        ///< no handler on this topic accepts the schema name
  wrong_version,         ///< schema known, version not
  oversize,              ///< over the configured message size limit
  tensor_size_mismatch,  ///< tensor frame bytes != dtype x shape
  payload_invalid,       ///< payload does not decode as the schema's type
  kCount
};
std::string_view reason_name(DecodeReason reason);

struct DecodeError {
  DecodeReason reason;
  std::string detail;
  /// The header, when it could be read (oversize, tensor size mismatch).
  std::optional<Header> header;
};

/// Serialises a header into msgpack bytes (the start of frame 1).
std::vector<std::byte> encode_header(const Header& header);

/// Builds the frames of one message: the header and a copy of the payload share frame 1;
/// tensor frames are never copied.
std::vector<zmq::message_t> encode(std::string_view topic, const Header& header,
                                   std::span<const std::byte> payload,
                                   const std::vector<TensorOut>& tensors);

/// Validates and decodes a received frame set. Checks, in order: at least 2 frames, a
/// well-formed neat header at the start of frame 1, total size <= max_bytes, frame count ==
/// 2 + number of tensors, and each tensor frame's size == dtype x shape. Schema and version are
/// checked by the subscriber (it knows which schemas it accepts).
std::variant<Message, DecodeError> decode(std::vector<zmq::message_t>&& frames,
                                          std::size_t max_bytes);

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME).
std::int64_t now_ns();

}  // namespace neat::bus
