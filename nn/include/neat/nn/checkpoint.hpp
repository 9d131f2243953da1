// Checkpoints: a msgpack file of named tensors (dtype, shape, data), a config block and a
// CRC-32 (zlib) of the payload. Loading validates everything before it changes anything: a
// truncated, corrupted or mismatched file is rejected with a CheckpointError naming the file and
// the tensor, and the module keeps its previous values (load into temporaries, then commit).
//
// File layout (msgpack): ["neat.nn.checkpoint", version = 1, crc32(payload), payload (bin)]
// payload (msgpack):     {"config": str, "tensors": [[name, dtype, shape, data (bin)], ...]}
// dtype is "f32", "f64" or "bf16"; data is little-endian, row-major.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "neat/nn/modules.hpp"
#include "neat/nn/tensor.hpp"

namespace neat::nn {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CheckpointTensor {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  std::vector<uint8_t> data;  // numel * dtype_size(dtype) bytes
};

struct Checkpoint {
  std::string config;  // free text chosen by the caller (e.g. the YAML or JSON of the model)
  std::vector<CheckpointTensor> tensors;
};

// Writes to path + ".tmp" then renames, so a crash never leaves a half-written checkpoint at
// path. Throws CheckpointError on I/O failure.
void write_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// Reads and validates structure and CRC-32; throws CheckpointError (message names path and,
// where one is at fault, the tensor).
Checkpoint read_checkpoint(const std::string& path);

// Saves every named parameter of module. storage: f32 or bf16 for a float module (bf16 halves
// the file; loading widens back to f32), f64 for a double module.
template <typename T>
void save_checkpoint(const std::string& path, const Module<T>& module, const std::string& config,
                     DType storage = sizeof(T) == 8 ? DType::f64 : DType::f32);
// Loads into module: every parameter must be present with its exact shape, no other tensor may
// be present, and the dtype must be the module's (bf16 is accepted for a float module).
// Returns the config block. All or nothing: on error, module is unchanged.
template <typename T>
std::string load_checkpoint(const std::string& path, Module<T>& module);

}  // namespace neat::nn
