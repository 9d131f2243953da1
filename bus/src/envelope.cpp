// Envelope codec: header as msgpack, payload and tensors as raw frames (see envelope.hpp).
#include "neat/bus/envelope.hpp"

#include <chrono>
#include <msgpack.hpp>
#include <stdexcept>

namespace neat::bus {
namespace {

constexpr std::string_view kMagic = "neat/1";
constexpr std::size_t kMaxDims = 8;

void free_shared_owner(void* /*data*/, void* hint) {
  delete static_cast<std::shared_ptr<const void>*>(hint);
}

zmq::message_t zero_copy_frame(const void* data, std::size_t size,
                               const std::shared_ptr<const void>& owner) {
  if (size == 0) return zmq::message_t();
  auto* hint = new std::shared_ptr<const void>(owner);
  return zmq::message_t(const_cast<void*>(data), size, &free_shared_owner, hint);
}

}  // namespace

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::u8:
      return 1;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
    case DType::bf16:
      return 2;
  }
  throw std::invalid_argument("dtype_size: unknown dtype");
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::u8:
      return "u8";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::f32:
      return "f32";
    case DType::f64:
      return "f64";
    case DType::bf16:
      return "bf16";
  }
  return "?";
}

std::int64_t TensorDesc::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::size_t TensorDesc::bytes() const {
  return static_cast<std::size_t>(numel()) * dtype_size(dtype);
}

std::string_view reason_name(DecodeReason reason) {
  switch (reason) {
    case DecodeReason::truncated:
      return "truncated";
    case DecodeReason::garbage:
      return "garbage";
    case DecodeReason::unknown_schema:
      return "unknown_schema";
    case DecodeReason::wrong_version:
      return "wrong_version";
    case DecodeReason::oversize:
      return "oversize";
    case DecodeReason::tensor_size_mismatch:
      return "tensor_size_mismatch";
    case DecodeReason::payload_invalid:
      return "payload_invalid";
    case DecodeReason::kCount:
      break;
  }
  return "?";
}

TensorView::TensorView(TensorDesc desc, FrameSet frames, std::size_t frame_index)
    : desc_(std::move(desc)), frames_(std::move(frames)), frame_index_(frame_index) {}

std::span<const std::byte> TensorView::bytes() const {
  const auto& f = (*frames_)[frame_index_];
  return {static_cast<const std::byte*>(f.data()), f.size()};
}

void TensorView::check_view(std::size_t elem_size, std::size_t alignment) const {
  if (elem_size != dtype_size(desc_.dtype)) {
    throw std::invalid_argument("tensor '" + desc_.name + "' has dtype " +
                                std::string(dtype_name(desc_.dtype)) + ", requested element size " +
                                std::to_string(elem_size));
  }
  auto addr = reinterpret_cast<std::uintptr_t>(bytes().data());
  if (alignment > 1 && addr % alignment != 0) {
    throw std::invalid_argument("tensor '" + desc_.name +
                                "' is not aligned for a view; use to_vector()");
  }
}

std::span<const std::byte> Message::payload() const {
  const auto& f = (*frames)[1];
  return {static_cast<const std::byte*>(f.data()) + payload_offset, f.size() - payload_offset};
}

std::vector<TensorView> Message::tensors() const {
  std::vector<TensorView> views;
  views.reserve(header.tensors.size());
  for (std::size_t i = 0; i < header.tensors.size(); ++i) {
    views.emplace_back(header.tensors[i], frames, 2 + i);
  }
  return views;
}

std::size_t Message::wire_bytes() const {
  std::size_t n = 0;
  for (const auto& f : *frames) n += f.size();
  return n;
}

namespace {

// Packs a header into `buf` (cleared first).
void pack_header(const Header& h, msgpack::sbuffer& buf) {
  buf.clear();
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(8);
  pk.pack(kMagic);
  pk.pack(h.schema);
  pk.pack(h.version);
  pk.pack(h.sender);
  pk.pack(h.seq);
  pk.pack(h.timestamp_ns);
  pk.pack(h.flags);
  pk.pack_array(static_cast<std::uint32_t>(h.tensors.size()));
  for (const auto& t : h.tensors) {
    pk.pack_array(3);
    pk.pack(t.name);
    pk.pack(static_cast<std::uint8_t>(t.dtype));
    pk.pack(t.shape);
  }
}

}  // namespace

std::vector<std::byte> encode_header(const Header& h) {
  msgpack::sbuffer buf(256);
  pack_header(h, buf);
  const auto* p = reinterpret_cast<const std::byte*>(buf.data());
  return {p, p + buf.size()};
}

std::vector<zmq::message_t> encode(std::string_view topic, const Header& header,
                                   std::span<const std::byte> payload,
                                   const std::vector<TensorOut>& tensors) {
  std::vector<zmq::message_t> frames;
  frames.reserve(2 + tensors.size());
  frames.emplace_back(topic.data(), topic.size());
  // One reused buffer per thread: no allocation for the header on the hot path.
  thread_local msgpack::sbuffer head(256);
  pack_header(header, head);
  zmq::message_t body(head.size() + payload.size());
  auto* out = static_cast<char*>(body.data());
  std::memcpy(out, head.data(), head.size());
  if (!payload.empty()) std::memcpy(out + head.size(), payload.data(), payload.size());
  frames.push_back(std::move(body));
  for (const auto& t : tensors) {
    frames.push_back(zero_copy_frame(t.data, t.desc.bytes(), t.owner));
  }
  return frames;
}

namespace {

// Reads the header; throws msgpack errors or std::runtime_error on a malformed layout.
Header parse_header(const msgpack::object& o) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 8) {
    throw std::runtime_error("header is not an 8-element array");
  }
  const auto* a = o.via.array.ptr;
  if (a[0].type != msgpack::type::STR ||
      std::string_view(a[0].via.str.ptr, a[0].via.str.size) != kMagic) {
    throw std::runtime_error("missing neat header magic");
  }
  Header h;
  h.schema = a[1].as<std::string>();
  h.version = a[2].as<std::uint32_t>();
  h.sender = a[3].as<std::string>();
  h.seq = a[4].as<std::uint64_t>();
  h.timestamp_ns = a[5].as<std::int64_t>();
  h.flags = a[6].as<std::uint32_t>();
  if (a[7].type != msgpack::type::ARRAY) throw std::runtime_error("tensor list is not an array");
  for (std::uint32_t i = 0; i < a[7].via.array.size; ++i) {
    const auto& t = a[7].via.array.ptr[i];
    if (t.type != msgpack::type::ARRAY || t.via.array.size != 3) {
      throw std::runtime_error("tensor descriptor " + std::to_string(i) + " malformed");
    }
    TensorDesc d;
    d.name = t.via.array.ptr[0].as<std::string>();
    auto code = t.via.array.ptr[1].as<std::uint32_t>();
    if (code > static_cast<std::uint32_t>(DType::bf16)) {
      throw std::runtime_error("tensor '" + d.name + "' has unknown dtype code " +
                               std::to_string(code));
    }
    d.dtype = static_cast<DType>(code);
    d.shape = t.via.array.ptr[2].as<std::vector<std::int64_t>>();
    if (d.shape.size() > kMaxDims) throw std::runtime_error("tensor '" + d.name + "' has > 8 dims");
    for (auto s : d.shape) {
      if (s < 0) throw std::runtime_error("tensor '" + d.name + "' has a negative dimension");
    }
    h.tensors.push_back(std::move(d));
  }
  return h;
}

}  // namespace

std::variant<Message, DecodeError> decode(std::vector<zmq::message_t>&& frames,
                                          std::size_t max_bytes) {
  if (frames.size() < 2) {
    return DecodeError{
        DecodeReason::truncated, "expected >= 2 frames, got " + std::to_string(frames.size()), {}};
  }
  // The header is read even from an oversize message (it is the first, small object of
  // frame 1; ZMQ_MAXMSGSIZE bounds frames on the wire), so that a rejection keeps its place in
  // the sender's sequence.
  Header header;
  std::size_t payload_offset = 0;
  try {
    // One zone per thread, cleared per message: the header is copied out before it is reused.
    thread_local msgpack::zone zone(1024);
    zone.clear();
    auto obj = msgpack::unpack(zone, static_cast<const char*>(frames[1].data()), frames[1].size(),
                               payload_offset);
    header = parse_header(obj);
  } catch (const msgpack::insufficient_bytes& e) {
    return DecodeError{DecodeReason::truncated, std::string("header cut off: ") + e.what(), {}};
  } catch (const std::exception& e) {
    return DecodeError{DecodeReason::garbage, std::string("bad header: ") + e.what(), {}};
  }
  std::size_t total = 0;
  for (const auto& f : frames) total += f.size();
  if (total > max_bytes) {
    return DecodeError{DecodeReason::oversize,
                       std::to_string(total) + " bytes exceeds limit " + std::to_string(max_bytes),
                       header};
  }
  if (frames.size() != 2 + header.tensors.size()) {
    return DecodeError{
        frames.size() < 2 + header.tensors.size() ? DecodeReason::truncated : DecodeReason::garbage,
        "header lists " + std::to_string(header.tensors.size()) + " tensors, message has " +
            std::to_string(frames.size() - 2) + " tensor frames",
        header};
  }
  for (std::size_t i = 0; i < header.tensors.size(); ++i) {
    const auto& d = header.tensors[i];
    if (frames[2 + i].size() != d.bytes()) {
      return DecodeError{DecodeReason::tensor_size_mismatch,
                         "tensor '" + d.name + "' (" + std::string(dtype_name(d.dtype)) +
                             ") expects " + std::to_string(d.bytes()) + " bytes, frame has " +
                             std::to_string(frames[2 + i].size()),
                         header};
    }
  }
  Message m;
  m.topic = frames[0].to_string();
  m.header = std::move(header);
  m.payload_offset = payload_offset;
  m.frames = std::make_shared<std::vector<zmq::message_t>>(std::move(frames));
  return m;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace neat::bus
