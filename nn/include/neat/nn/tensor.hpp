// Tensor: a row-major, strided, reference-counted view over tracked storage, plus the node that
// records how it was computed (reverse-mode autograd on a tape). Invariants: storage is owned by
// a Storage block whose bytes are counted in memory_stats(); a view (reshape, transpose, slice)
// shares the block and never copies; at most kMaxDims = 4 dimensions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace neat::nn {

inline constexpr int kMaxDims = 4;

using Shape = std::vector<int64_t>;

// Element type of stored tensors. Compute is f32 (f64 for gradient checks); bf16 is a storage
// format for weights in checkpoints, widened to f32 on load.
enum class DType : uint8_t { f32 = 0, f64 = 1, bf16 = 2 };

const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);

// bf16 conversion (round to nearest even; NaN stays NaN).
uint16_t float_to_bf16(float value);
float bf16_to_float(uint16_t value);

// Live tensor storage, in bytes, counted at allocation and release of each Storage block.
struct MemoryStats {
  int64_t current_bytes = 0;  // bytes held by live storage blocks now
  int64_t peak_bytes = 0;     // high-water mark of current_bytes since start or reset_peak
  int64_t allocations = 0;    // storage blocks allocated since start
};
MemoryStats memory_stats();
void reset_peak_memory();

// Per-tag accounting: storage allocated on this thread while a MemoryTag lives is also counted
// under its name (e.g. "titans"), so that the coordinator can budget components separately.
// Tags nest (the innermost wins); at most 63 distinct names (std::length_error beyond).
class MemoryTag {
 public:
  explicit MemoryTag(const std::string& name);
  ~MemoryTag();
  MemoryTag(const MemoryTag&) = delete;
  MemoryTag& operator=(const MemoryTag&) = delete;

 private:
  int previous_;
};
// Stats of the storage allocated under tag; all zero for a tag never used.
MemoryStats memory_stats(const std::string& tag);

// One thread setting for OpenBLAS (openblas_set_num_threads) and Eigen (setNbThreads).
// n <= 0 selects the number of hardware threads.
void set_num_threads(int n);
int num_threads();

// The CPU kernel set OpenBLAS chose when it loaded (openblas_get_corename): "SkylakeX",
// "Haswell", "Prescott", ...
std::string blas_core();
// The kernel set this CPU can run when OpenBLAS fell back to a lesser one (it matches CPUs by
// model number, and VMs that report a generic model, e.g. "Intel Xeon Processor", get the
// SSE3 "Prescott" kernels: 3-4x slower GEMMs than AVX-512): "SkylakeX" with AVX-512 F/BW/VL/DQ,
// "Haswell" with AVX2 and FMA; "" when the loaded choice is already as good. OpenBLAS reads
// the choice from the environment variable OPENBLAS_CORETYPE when it loads, so a process must
// set it and re-execute itself (the `neat` binary does; see cli/main.cpp).
std::string better_blas_core();
// Call first in main(): where OpenBLAS fell back to lesser kernels (better_blas_core() is not
// empty) and OPENBLAS_CORETYPE is unset, sets it (and NEAT_BLAS_FALLBACK to the fallback's
// name) and re-executes /proc/self/exe with argv, once; child processes inherit the choice.
// Returns (doing nothing) when there is nothing better, the variable is already set, or the
// re-execution failed (the process goes on with the fallback).
void use_best_blas_kernels(char** argv);

// While a NoGradGuard lives on this thread, ops record no graph (inference, optimizer steps).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};
// RAII scope that turns recording on (used by the engine for create_graph).
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};
bool grad_enabled();

template <typename T>
struct Storage;
template <typename T>
struct Node;

// A handle; copies share the same node (and so the same data and gradient).
// T is float (training, inference) or double (gradient checks).
template <typename T>
class Tensor {
 public:
  Tensor() = default;

  // Factories. Shapes have 0..4 dimensions, every extent >= 0; throws std::invalid_argument.
  static Tensor zeros(const Shape& shape, bool requires_grad = false);
  static Tensor full(const Shape& shape, T value, bool requires_grad = false);
  static Tensor from_vector(const Shape& shape, const std::vector<T>& values,
                            bool requires_grad = false);
  static Tensor scalar(T value, bool requires_grad = false);
  // Normal(mean, stddev) and Uniform[low, high) from rng.
  static Tensor randn(const Shape& shape, std::mt19937_64& rng, T stddev = 1, T mean = 0,
                      bool requires_grad = false);
  static Tensor uniform(const Shape& shape, std::mt19937_64& rng, T low, T high,
                        bool requires_grad = false);

  bool defined() const { return node_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;  // in elements
  int64_t dim() const;
  int64_t size(int64_t axis) const;  // negative axis counts from the end
  int64_t numel() const;
  bool is_contiguous() const;

  // Pointer to element (0, ..., 0); walk with strides() unless is_contiguous().
  T* data();
  const T* data() const;
  T item() const;                    // the only element of a one-element tensor
  std::vector<T> to_vector() const;  // row-major copy

  bool requires_grad() const;
  // Marks a leaf as a parameter to differentiate (or freezes it with false).
  void set_requires_grad(bool value);
  Tensor grad() const;  // accumulated gradient of a leaf; undefined before any backward
  void set_grad(const Tensor& g);
  void zero_grad();  // drops the gradient

  // Reverse-mode sweep from this scalar (or with seed of this shape). Gradients of leaves are
  // accumulated into grad(); the graph is released afterwards unless retain_graph.
  void backward(bool retain_graph = false) const;
  void backward(const Tensor& seed, bool retain_graph = false) const;

  Tensor detach() const;      // same data, no history
  Tensor clone() const;       // contiguous copy, no history
  Tensor contiguous() const;  // this if contiguous, else a recorded copy

  // Views (no copy when the layout allows; see ops.hpp for the recorded versions).
  Tensor reshape(const Shape& shape) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor slice(int64_t axis, int64_t start, int64_t end) const;

  Node<T>* node() const { return node_.get(); }
  const std::shared_ptr<Node<T>>& node_ptr() const { return node_; }
  explicit Tensor(std::shared_ptr<Node<T>> node) : node_(std::move(node)) {}

 private:
  std::shared_ptr<Node<T>> node_;
};

// Reference-counted block of n elements; its bytes count in memory_stats().
template <typename T>
struct Storage {
  explicit Storage(int64_t n);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  T* ptr = nullptr;
  int64_t size = 0;
  int tag = 0;  // MemoryTag index at allocation (0: untagged)
};

// Backward function of a recorded op: gradient of the output -> gradients of the parents
// (an undefined Tensor for a parent that needs none).
template <typename T>
using BackwardFn = std::function<std::vector<Tensor<T>>(const Tensor<T>& grad_output)>;

template <typename T>
struct Node {
  std::shared_ptr<Storage<T>> storage;
  int64_t offset = 0;
  Shape shape;
  Shape strides;
  bool requires_grad = false;
  std::shared_ptr<Node<T>> grad;  // leaves only
  const char* op = "leaf";
  std::vector<Tensor<T>> parents;
  BackwardFn<T> backward;
};

// Gradients of output (a scalar, or with seed) with respect to inputs, without touching grad().
// create_graph records the backward pass itself, so the result can be differentiated again
// (second order: e.g. Titans' outer loop through an inner gradient step). Inputs that the
// output does not depend on get a zero tensor.
template <typename T>
std::vector<Tensor<T>> grad(const Tensor<T>& output, const std::vector<Tensor<T>>& inputs,
                            bool create_graph = false, const Tensor<T>& seed = Tensor<T>());

// Number of elements of a shape; throws std::invalid_argument for more than kMaxDims or a
// negative extent.
int64_t shape_numel(const Shape& shape);
std::string shape_string(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

using Tensorf = Tensor<float>;
using Tensord = Tensor<double>;

extern template class Tensor<float>;
extern template class Tensor<double>;

}  // namespace neat::nn
