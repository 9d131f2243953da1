// Tensor storage, memory accounting, thread setting, grad mode and the reverse-mode engine.
#include "neat/nn/tensor.hpp"

#include <unistd.h>

#include <cblas.h>

#include <cctype>

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "bf16_bits.hpp"
#include "internal.hpp"
#include "neat/nn/ops.hpp"

namespace neat::nn {

namespace {
std::atomic<int64_t> g_current_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};
std::atomic<int64_t> g_allocations{0};
std::atomic<int> g_threads{0};
thread_local bool t_grad_enabled = true;

constexpr int kMaxTags = 64;
struct TagCounters {
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> allocations{0};
};
TagCounters g_tags[kMaxTags];
std::mutex g_tag_mutex;
std::vector<std::string> g_tag_names{""};
thread_local int t_tag = 0;

void raise_peak(std::atomic<int64_t>& peak, int64_t now) {
  int64_t seen = peak.load();
  while (now > seen && !peak.compare_exchange_weak(seen, now)) {
  }
}

void count_alloc(int64_t bytes, int tag) {
  raise_peak(g_peak_bytes, g_current_bytes.fetch_add(bytes) + bytes);
  g_allocations.fetch_add(1);
  if (tag > 0) {
    TagCounters& c = g_tags[tag];
    raise_peak(c.peak, c.current.fetch_add(bytes) + bytes);
    c.allocations.fetch_add(1);
  }
}

int tag_index(const std::string& name, bool create) {
  std::lock_guard<std::mutex> lock(g_tag_mutex);
  for (std::size_t i = 1; i < g_tag_names.size(); ++i)
    if (g_tag_names[i] == name) return static_cast<int>(i);
  if (!create) return -1;
  if (g_tag_names.size() >= static_cast<std::size_t>(kMaxTags))
    throw std::length_error("neat::nn::MemoryTag: more than 63 tags");
  g_tag_names.push_back(name);
  return static_cast<int>(g_tag_names.size() - 1);
}
}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "f32";
    case DType::f64:
      return "f64";
    case DType::bf16:
      return "bf16";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
    case DType::bf16:
      return 2;
  }
  return 0;
}

uint16_t float_to_bf16(float value) { return detail::float_to_bf16_bits(value); }

float bf16_to_float(uint16_t value) { return detail::bf16_bits_to_float(value); }

MemoryStats memory_stats() {
  return MemoryStats{g_current_bytes.load(), g_peak_bytes.load(), g_allocations.load()};
}

void reset_peak_memory() { g_peak_bytes.store(g_current_bytes.load()); }

MemoryTag::MemoryTag(const std::string& name) : previous_(t_tag) { t_tag = tag_index(name, true); }
MemoryTag::~MemoryTag() { t_tag = previous_; }

MemoryStats memory_stats(const std::string& tag) {
  const int i = tag_index(tag, false);
  if (i <= 0) return MemoryStats{};
  return MemoryStats{g_tags[i].current.load(), g_tags[i].peak.load(), g_tags[i].allocations.load()};
}

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  openblas_set_num_threads(n);
  Eigen::setNbThreads(n);
  g_threads.store(n);
}

std::string blas_core() {
  const char* name = openblas_get_corename();
  return name ? name : "";
}

std::string better_blas_core() {
  std::string core = blas_core();
  for (auto& c : core) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  for (const char* good : {"skylakex", "cooperlake", "sapphirerapids"}) {
    if (core == good) return "";
  }
  if (avx512) return "SkylakeX";
  for (const char* good : {"haswell", "zen"}) {
    if (core == good) return "";
  }
  return avx2 ? "Haswell" : "";
}

void use_best_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  const auto better = better_blas_core();
  if (better.empty()) return;
  ::setenv("NEAT_BLAS_FALLBACK", blas_core().c_str(), 1);
  ::setenv("OPENBLAS_CORETYPE", better.c_str(), 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure
}

int num_threads() {
  const int n = g_threads.load();
  return n > 0 ? n : openblas_get_num_threads();
}

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }
EnableGradGuard::EnableGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { t_grad_enabled = previous_; }
bool grad_enabled() { return t_grad_enabled; }

int64_t shape_numel(const Shape& shape) {
  if (shape.size() > static_cast<std::size_t>(kMaxDims))
    throw std::invalid_argument("neat::nn: tensor of " + std::to_string(shape.size()) +
                                " dimensions; at most 4 are supported");
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("neat::nn: negative extent in " + shape_string(shape));
    n *= d;
  }
  return n;
}

std::string shape_string(const Shape& shape) {
  std::ostringstream out;
  out << '(';
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ')';
  return out.str();
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

template <typename T>
Storage<T>::Storage(int64_t n) : size(n), tag(t_tag) {
  const std::size_t bytes = std::max<std::size_t>(64, ((n * sizeof(T) + 63) / 64) * 64);
  ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
  if (!ptr) throw std::bad_alloc();
  count_alloc(static_cast<int64_t>(n * sizeof(T)), tag);
}

template <typename T>
Storage<T>::~Storage() {
  std::free(ptr);
  const auto bytes = static_cast<int64_t>(size * sizeof(T));
  g_current_bytes.fetch_sub(bytes);
  if (tag > 0) g_tags[tag].current.fetch_sub(bytes);
}

namespace detail {

template <typename T>
Tensor<T> empty(const Shape& shape, bool zero_fill) {
  const int64_t n = shape_numel(shape);
  auto node = std::make_shared<Node<T>>();
  node->storage = std::make_shared<Storage<T>>(n);
  node->shape = shape;
  node->strides = contiguous_strides(shape);
  if (zero_fill && n > 0) std::memset(node->storage->ptr, 0, n * sizeof(T));
  return Tensor<T>(std::move(node));
}

template <typename T>
Tensor<T> make_view(const Tensor<T>& base, Shape shape, Shape strides, int64_t offset) {
  auto node = std::make_shared<Node<T>>();
  node->storage = base.node()->storage;
  node->shape = std::move(shape);
  node->strides = std::move(strides);
  node->offset = offset;
  return Tensor<T>(std::move(node));
}

template Tensor<float> empty(const Shape&, bool);
template Tensor<double> empty(const Shape&, bool);
template Tensor<float> make_view(const Tensor<float>&, Shape, Shape, int64_t);
template Tensor<double> make_view(const Tensor<double>&, Shape, Shape, int64_t);

}  // namespace detail

// --- Tensor ---

template <typename T>
Tensor<T> Tensor<T>::zeros(const Shape& shape, bool requires_grad) {
  Tensor t = detail::empty<T>(shape, true);
  t.node_->requires_grad = requires_grad;
  return t;
}

template <typename T>
Tensor<T> Tensor<T>::full(const Shape& shape, T value, bool requires_grad) {
  Tensor t = detail::empty<T>(shape);
  std::fill_n(t.data(), t.numel(), value);
  t.node_->requires_grad = requires_grad;
  return t;
}

template <typename T>
Tensor<T> Tensor<T>::from_vector(const Shape& shape, const std::vector<T>& values,
                                 bool requires_grad) {
  if (shape_numel(shape) != static_cast<int64_t>(values.size()))
    throw std::invalid_argument("neat::nn::Tensor::from_vector: " + std::to_string(values.size()) +
                                " values for shape " + shape_string(shape));
  Tensor t = detail::empty<T>(shape);
  std::copy(values.begin(), values.end(), t.data());
  t.node_->requires_grad = requires_grad;
  return t;
}

template <typename T>
Tensor<T> Tensor<T>::scalar(T value, bool requires_grad) {
  return full({}, value, requires_grad);
}

template <typename T>
Tensor<T> Tensor<T>::randn(const Shape& shape, std::mt19937_64& rng, T stddev, T mean,
                           bool requires_grad) {
  Tensor t = detail::empty<T>(shape);
  std::normal_distribution<T> dist(mean, stddev);
  T* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  t.node_->requires_grad = requires_grad;
  return t;
}

template <typename T>
Tensor<T> Tensor<T>::uniform(const Shape& shape, std::mt19937_64& rng, T low, T high,
                             bool requires_grad) {
  Tensor t = detail::empty<T>(shape);
  std::uniform_real_distribution<T> dist(low, high);
  T* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  t.node_->requires_grad = requires_grad;
  return t;
}

template <typename T>
const Shape& Tensor<T>::shape() const {
  if (!node_) throw std::logic_error("neat::nn::Tensor: use of an undefined tensor");
  return node_->shape;
}
template <typename T>
const Shape& Tensor<T>::strides() const {
  return node_->strides;
}
template <typename T>
int64_t Tensor<T>::dim() const {
  return static_cast<int64_t>(node_->shape.size());
}
template <typename T>
int64_t Tensor<T>::size(int64_t axis) const {
  return node_->shape[detail::normalize_axis(axis, dim(), "Tensor::size")];
}
template <typename T>
int64_t Tensor<T>::numel() const {
  int64_t n = 1;
  for (int64_t d : node_->shape) n *= d;
  return n;
}
template <typename T>
bool Tensor<T>::is_contiguous() const {
  int64_t s = 1;
  for (std::size_t i = node_->shape.size(); i-- > 0;) {
    if (node_->shape[i] != 1 && node_->strides[i] != s) return false;
    s *= node_->shape[i];
  }
  return true;
}
template <typename T>
T* Tensor<T>::data() {
  return node_->storage->ptr + node_->offset;
}
template <typename T>
const T* Tensor<T>::data() const {
  return node_->storage->ptr + node_->offset;
}
template <typename T>
T Tensor<T>::item() const {
  if (numel() != 1)
    throw std::invalid_argument("neat::nn::Tensor::item: tensor of shape " + shape_string(shape()) +
                                " is not one element");
  return data()[0];
}
template <typename T>
std::vector<T> Tensor<T>::to_vector() const {
  std::vector<T> out(numel());
  if (is_contiguous()) {
    std::copy_n(data(), out.size(), out.begin());
    return out;
  }
  const T* src = data();
  std::size_t i = 0;
  detail::for_each_offset(detail::layout4(shape(), strides()),
                          [&](int64_t off) { out[i++] = src[off]; });
  return out;
}

template <typename T>
bool Tensor<T>::requires_grad() const {
  return node_->requires_grad;
}
template <typename T>
void Tensor<T>::set_requires_grad(bool value) {
  if (node_->backward)
    throw std::logic_error("neat::nn::Tensor::set_requires_grad: only leaves can be marked");
  node_->requires_grad = value;
}
template <typename T>
Tensor<T> Tensor<T>::grad() const {
  return Tensor(node_->grad);
}
template <typename T>
void Tensor<T>::set_grad(const Tensor& g) {
  node_->grad = g.node_;
}
template <typename T>
void Tensor<T>::zero_grad() {
  node_->grad.reset();
}

template <typename T>
Tensor<T> Tensor<T>::detach() const {
  return detail::make_view(*this, node_->shape, node_->strides, node_->offset);
}
template <typename T>
Tensor<T> Tensor<T>::clone() const {
  Tensor out = detail::empty<T>(shape());
  const std::vector<T> v = to_vector();
  std::copy(v.begin(), v.end(), out.data());
  return out;
}
template <typename T>
Tensor<T> Tensor<T>::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = clone();
  detail::record<T>(out, "contiguous", {*this},
                    [](const Tensor<T>& g) { return std::vector<Tensor<T>>{g}; });
  return out;
}
template <typename T>
Tensor<T> Tensor<T>::reshape(const Shape& s) const {
  return nn::reshape(*this, s);
}
template <typename T>
Tensor<T> Tensor<T>::transpose(int64_t a, int64_t b) const {
  return nn::transpose(*this, a, b);
}
template <typename T>
Tensor<T> Tensor<T>::slice(int64_t axis, int64_t start, int64_t end) const {
  return nn::slice(*this, axis, start, end);
}

// --- engine ---

namespace {

template <typename T>
std::vector<Tensor<T>> topo_order(const Tensor<T>& root) {
  std::vector<Tensor<T>> order;
  std::unordered_set<Node<T>*> seen;
  std::vector<std::pair<Tensor<T>, std::size_t>> stack;
  stack.emplace_back(root, 0);
  seen.insert(root.node());
  while (!stack.empty()) {
    auto& [t, next] = stack.back();
    Node<T>* n = t.node();
    if (next < n->parents.size()) {
      const Tensor<T> p = n->parents[next++];
      if (p.defined() && p.requires_grad() && seen.insert(p.node()).second)
        stack.emplace_back(p, 0);
    } else {
      order.push_back(t);
      stack.pop_back();
    }
  }
  return order;  // parents before children
}

template <typename T>
Tensor<T> accumulate(const Tensor<T>& existing, const Tensor<T>& g) {
  return existing.defined() ? add(existing, g) : g;
}

// Runs the reverse sweep; returns the gradient of every node in keep (by node pointer).
template <typename T>
std::unordered_map<Node<T>*, Tensor<T>> run_backward(const Tensor<T>& root, const Tensor<T>& seed,
                                                     bool create_graph, bool release,
                                                     const std::unordered_set<Node<T>*>& keep,
                                                     bool keep_leaves) {
  if (!root.requires_grad())
    throw std::logic_error("neat::nn::backward: the output does not require a gradient");
  Tensor<T> s = seed;
  if (!s.defined()) {
    if (root.numel() != 1)
      throw std::invalid_argument("neat::nn::backward: output of shape " +
                                  shape_string(root.shape()) + " needs a seed gradient");
    s = Tensor<T>::full(root.shape(), T(1));
  } else if (s.shape() != root.shape()) {
    throw std::invalid_argument("neat::nn::backward: seed shape " + shape_string(s.shape()) +
                                " differs from output shape " + shape_string(root.shape()));
  }
  std::optional<NoGradGuard> no_grad;
  std::optional<EnableGradGuard> with_grad;
  if (create_graph)
    with_grad.emplace();
  else
    no_grad.emplace();

  const std::vector<Tensor<T>> order = topo_order(root);
  std::unordered_map<Node<T>*, Tensor<T>> grads;
  grads[root.node()] = s;
  std::unordered_map<Node<T>*, Tensor<T>> kept;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node<T>* n = it->node();
    auto found = grads.find(n);
    if (found == grads.end()) continue;
    Tensor<T> g = found->second;
    grads.erase(found);
    if (keep.count(n) || (keep_leaves && !n->backward)) kept[n] = g;
    if (!n->backward) continue;
    std::vector<Tensor<T>> pg = n->backward(g);
    for (std::size_t i = 0; i < n->parents.size() && i < pg.size(); ++i) {
      const Tensor<T>& p = n->parents[i];
      if (!pg[i].defined() || !p.defined() || !p.requires_grad()) continue;
      if (pg[i].shape() != p.shape())
        throw std::logic_error(std::string("neat::nn::backward: op ") + n->op +
                               " returned gradient " + shape_string(pg[i].shape()) + " for input " +
                               shape_string(p.shape()));
      Tensor<T>& slot = grads[p.node()];
      slot = accumulate(slot, pg[i]);
    }
  }
  if (release) {
    for (const auto& t : order) {
      t.node()->backward = nullptr;
      t.node()->parents.clear();
    }
  }
  return kept;
}

}  // namespace

template <typename T>
void Tensor<T>::backward(bool retain_graph) const {
  backward(Tensor(), retain_graph);
}

template <typename T>
void Tensor<T>::backward(const Tensor& seed, bool retain_graph) const {
  auto kept = run_backward<T>(*this, seed, false, !retain_graph, {}, true);
  NoGradGuard no_grad;
  for (auto& [node, g] : kept) {
    if (node->grad) {
      Tensor<T> sum = add(Tensor<T>(node->grad), g);
      node->grad = sum.node_ptr();
    } else {
      // A fresh copy: the same gradient tensor may reach several leaves, and optimizers and
      // clipping update grad() in place.
      node->grad = g.clone().node_ptr();
    }
  }
}

template <typename T>
std::vector<Tensor<T>> grad(const Tensor<T>& output, const std::vector<Tensor<T>>& inputs,
                            bool create_graph, const Tensor<T>& seed) {
  std::unordered_set<Node<T>*> keep;
  for (const auto& in : inputs) keep.insert(in.node());
  auto kept = run_backward<T>(output, seed, create_graph, false, keep, false);
  std::vector<Tensor<T>> out;
  out.reserve(inputs.size());
  for (const auto& in : inputs) {
    auto it = kept.find(in.node());
    out.push_back(it != kept.end() ? it->second : Tensor<T>::zeros(in.shape()));
  }
  return out;
}

template class Tensor<float>;
template class Tensor<double>;
template struct Storage<float>;
template struct Storage<double>;
template std::vector<Tensor<float>> grad(const Tensor<float>&, const std::vector<Tensor<float>>&,
                                         bool, const Tensor<float>&);
template std::vector<Tensor<double>> grad(const Tensor<double>&, const std::vector<Tensor<double>>&,
                                          bool, const Tensor<double>&);

}  // namespace neat::nn
