// Checkpoint files: msgpack encoding, CRC-32 (zlib) validation, all-or-nothing loading.
#include "neat/nn/checkpoint.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <msgpack.hpp>

namespace neat::nn {

namespace {

constexpr const char* kMagic = "neat.nn.checkpoint";
constexpr uint32_t kVersion = 1;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw CheckpointError("checkpoint " + path + ": " + what);
}

uint32_t crc_of(const char* data, std::size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths; feed large payloads in pieces.
  while (size > 0) {
    const uInt piece = static_cast<uInt>(std::min<std::size_t>(size, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data), piece);
    data += piece;
    size -= piece;
  }
  return static_cast<uint32_t>(crc);
}

// Every msgpack element takes at least one byte, so no container in a buffer of n bytes can
// hold more than n elements: a forged length is rejected before anything is allocated for it.
msgpack::unpack_limit limits_for(std::size_t n) {
  return msgpack::unpack_limit(n, std::min<std::size_t>(n, 16), n, n, 0, 8);
}

DType parse_dtype(const std::string& path, const std::string& name, const std::string& s) {
  if (s == "f32") return DType::f32;
  if (s == "f64") return DType::f64;
  if (s == "bf16") return DType::bf16;
  fail(path, "tensor '" + name + "' has unknown dtype '" + s + "'");
}

}  // namespace

void write_checkpoint(const std::string& path, const Checkpoint& checkpoint) {
  msgpack::sbuffer payload;
  msgpack::packer<msgpack::sbuffer> pk(payload);
  pk.pack_map(2);
  pk.pack(std::string("config"));
  pk.pack(checkpoint.config);
  pk.pack(std::string("tensors"));
  pk.pack_array(static_cast<uint32_t>(checkpoint.tensors.size()));
  for (const auto& t : checkpoint.tensors) {
    if (static_cast<int64_t>(t.data.size()) !=
        shape_numel(t.shape) * static_cast<int64_t>(dtype_size(t.dtype)))
      fail(path, "tensor '" + t.name + "' has " + std::to_string(t.data.size()) +
                     " bytes for shape " + shape_string(t.shape));
    pk.pack_array(4);
    pk.pack(t.name);
    pk.pack(std::string(dtype_name(t.dtype)));
    pk.pack(t.shape);
    pk.pack_bin(static_cast<uint32_t>(t.data.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(t.data.data()),
                     static_cast<uint32_t>(t.data.size()));
  }
  msgpack::sbuffer file;
  msgpack::packer<msgpack::sbuffer> fk(file);
  fk.pack_array(4);
  fk.pack(std::string(kMagic));
  fk.pack(kVersion);
  fk.pack(crc_of(payload.data(), payload.size()));
  fk.pack_bin(static_cast<uint32_t>(payload.size()));
  fk.pack_bin_body(payload.data(), static_cast<uint32_t>(payload.size()));

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, "cannot open " + tmp + " for writing");
    out.write(file.data(), static_cast<std::streamsize>(file.size()));
    if (!out) fail(path, "write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(path, "rename from " + tmp + " failed: " + ec.message());
}

Checkpoint read_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Checkpoint out;
  std::string tensor = "(header)";
  try {
    std::size_t offset = 0;
    msgpack::object_handle outer = msgpack::unpack(bytes.data(), bytes.size(), offset, nullptr,
                                                   nullptr, limits_for(bytes.size()));
    if (offset != bytes.size()) fail(path, "trailing bytes after the checkpoint");
    const msgpack::object& o = outer.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 4 ||
        o.via.array.ptr[0].type != msgpack::type::STR ||
        o.via.array.ptr[0].as<std::string>() != kMagic)
      fail(path, "not a neat checkpoint");
    const auto version = o.via.array.ptr[1].as<uint32_t>();
    if (version != kVersion) fail(path, "unsupported version " + std::to_string(version));
    const auto stored_crc = o.via.array.ptr[2].as<uint32_t>();
    const msgpack::object& body = o.via.array.ptr[3];
    if (body.type != msgpack::type::BIN) fail(path, "payload is not binary");
    const uint32_t crc = crc_of(body.via.bin.ptr, body.via.bin.size);
    if (crc != stored_crc)
      fail(path, "content hash mismatch (crc32 " + std::to_string(crc) + ", stored " +
                     std::to_string(stored_crc) + "): the file is corrupted");
    std::size_t body_offset = 0;
    msgpack::object_handle inner = msgpack::unpack(body.via.bin.ptr, body.via.bin.size, body_offset,
                                                   nullptr, nullptr, limits_for(body.via.bin.size));
    if (body_offset != body.via.bin.size) fail(path, "trailing bytes after the payload");
    const msgpack::object& p = inner.get();
    if (p.type != msgpack::type::MAP) fail(path, "payload is not a map");
    bool have_tensors = false;
    for (uint32_t i = 0; i < p.via.map.size; ++i) {
      const auto key = p.via.map.ptr[i].key.as<std::string>();
      const msgpack::object& val = p.via.map.ptr[i].val;
      if (key == "config") {
        out.config = val.as<std::string>();
      } else if (key == "tensors") {
        have_tensors = true;
        if (val.type != msgpack::type::ARRAY) fail(path, "tensors is not an array");
        for (uint32_t j = 0; j < val.via.array.size; ++j) {
          const msgpack::object& e = val.via.array.ptr[j];
          if (e.type != msgpack::type::ARRAY || e.via.array.size != 4)
            fail(path, "tensor entry " + std::to_string(j) + " is malformed");
          CheckpointTensor t;
          t.name = e.via.array.ptr[0].as<std::string>();
          tensor = t.name;
          t.dtype = parse_dtype(path, t.name, e.via.array.ptr[1].as<std::string>());
          t.shape = e.via.array.ptr[2].as<std::vector<int64_t>>();
          const msgpack::object& d = e.via.array.ptr[3];
          if (d.type != msgpack::type::BIN)
            fail(path, "tensor '" + t.name + "' data is not binary");
          const int64_t expected = shape_numel(t.shape) * static_cast<int64_t>(dtype_size(t.dtype));
          if (static_cast<int64_t>(d.via.bin.size) != expected)
            fail(path, "tensor '" + t.name + "' has " + std::to_string(d.via.bin.size) +
                           " bytes, shape " + shape_string(t.shape) + " needs " +
                           std::to_string(expected));
          t.data.assign(reinterpret_cast<const uint8_t*>(d.via.bin.ptr),
                        reinterpret_cast<const uint8_t*>(d.via.bin.ptr) + d.via.bin.size);
          out.tensors.push_back(std::move(t));
        }
      }
    }
    if (!have_tensors) fail(path, "no tensors entry");
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    fail(path, "malformed at tensor '" + tensor + "': " + e.what());
  }
  return out;
}

template <typename T>
void save_checkpoint(const std::string& path, const Module<T>& module, const std::string& config,
                     DType storage) {
  const DType native = sizeof(T) == 8 ? DType::f64 : DType::f32;
  if (storage != native && !(native == DType::f32 && storage == DType::bf16))
    fail(path,
         std::string("cannot store a ") + dtype_name(native) + " module as " + dtype_name(storage));
  Checkpoint ck;
  ck.config = config;
  for (const auto& [name, p] : module.named_parameters()) {
    CheckpointTensor t;
    t.name = name;
    t.dtype = storage;
    t.shape = p.shape();
    const std::vector<T> values = p.to_vector();
    t.data.resize(values.size() * dtype_size(storage));
    if (storage == DType::bf16) {
      for (std::size_t i = 0; i < values.size(); ++i) {
        const uint16_t b = float_to_bf16(static_cast<float>(values[i]));
        std::memcpy(t.data.data() + 2 * i, &b, 2);
      }
    } else {
      std::memcpy(t.data.data(), values.data(), t.data.size());
    }
    ck.tensors.push_back(std::move(t));
  }
  write_checkpoint(path, ck);
}

template <typename T>
std::string load_checkpoint(const std::string& path, Module<T>& module) {
  const Checkpoint ck = read_checkpoint(path);
  const DType native = sizeof(T) == 8 ? DType::f64 : DType::f32;
  std::map<std::string, const CheckpointTensor*> by_name;
  for (const auto& t : ck.tensors)
    if (!by_name.emplace(t.name, &t).second) fail(path, "tensor '" + t.name + "' appears twice");
  const auto params = module.named_parameters();
  std::vector<std::vector<T>> staged;
  staged.reserve(params.size());
  for (const auto& [name, p] : params) {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail(path, "tensor '" + name + "' is missing");
    const CheckpointTensor& t = *it->second;
    if (!p.is_contiguous())
      throw std::logic_error("neat::nn::load_checkpoint: parameter '" + name +
                             "' is a strided view");
    if (t.shape != p.shape())
      fail(path, "tensor '" + name + "' has shape " + shape_string(t.shape) +
                     ", the module expects " + shape_string(p.shape()));
    if (t.dtype != native && !(native == DType::f32 && t.dtype == DType::bf16))
      fail(path, "tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                     ", the module expects " + dtype_name(native));
    std::vector<T> values(p.numel());
    if (t.dtype == DType::bf16) {
      for (std::size_t i = 0; i < values.size(); ++i) {
        uint16_t b;
        std::memcpy(&b, t.data.data() + 2 * i, 2);
        values[i] = static_cast<T>(bf16_to_float(b));
      }
    } else {
      std::memcpy(values.data(), t.data.data(), t.data.size());
    }
    staged.push_back(std::move(values));
    by_name.erase(it);
  }
  if (!by_name.empty())
    fail(path, "tensor '" + by_name.begin()->first + "' is not a parameter of the module");
  // Commit: every check passed.
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor<T> p = params[i].second;
    std::memcpy(p.data(), staged[i].data(), staged[i].size() * sizeof(T));
  }
  return ck.config;
}

template void save_checkpoint(const std::string&, const Module<float>&, const std::string&, DType);
template void save_checkpoint(const std::string&, const Module<double>&, const std::string&, DType);
template std::string load_checkpoint(const std::string&, Module<float>&);
template std::string load_checkpoint(const std::string&, Module<double>&);

}  // namespace neat::nn
