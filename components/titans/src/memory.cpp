// Titans memory core (Behrouz et al. 2024, §3): MLP memory, its hand-written (differentiable)
// inner gradient, the chunked momentum/forgetting update of eq. 16-18 and the stream loop.
// Instantiated for float (run time, training) and double (gradient checks).
#include "neat/titans/memory.hpp"

#include <cmath>
#include <initializer_list>
#include <stdexcept>

#include <Eigen/Core>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "neat/nn/ops.hpp"

namespace neat::titans {

using nn::Shape;
using nn::Tensor;

void MemoryConfig::validate() const {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("titans memory config: " + what);
  };
  if (input_dim < 1) fail("input_dim must be >= 1");
  if (dim < 1) fail("dim must be >= 1");
  if (depth < 1 || depth > 3) fail("depth (L_M) must be 1, 2 or 3, got " + std::to_string(depth));
  if (depth > 1 && hidden < 1) fail("hidden must be >= 1");
  if (chunk < 1) fail("chunk must be >= 1");
  if (persistent < 0) fail("persistent must be >= 0");
  if (!(theta_max >= 0) || !std::isfinite(theta_max)) fail("theta_max must be finite and >= 0");
  if (!(eta_max >= 0 && eta_max <= 1)) fail("eta_max must be in [0, 1]");
  if (!(alpha_max >= 0 && alpha_max <= 1)) fail("alpha_max must be in [0, 1]");
}

namespace {

template <typename T>
Shape layer_shape(const MemoryConfig& c, std::size_t l) {
  const auto L = static_cast<std::size_t>(c.depth);
  const std::int64_t in = l == 0 ? c.dim : c.hidden;
  const std::int64_t out = l + 1 == L ? c.dim : c.hidden;
  return {in, out};
}

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMatMap = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using MatMap = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;

// A 2-D tensor with a dense last axis (contiguous, or a column block of a wider matrix) as an
// Eigen matrix view, no copy.
template <typename T>
bool is_matrix_view(const Tensor<T>& t) {
  return t.dim() == 2 && (t.size(1) <= 1 || t.strides()[1] == 1);
}
template <typename T>
ConstMatMap<T> as_matrix(const Tensor<T>& t) {
  return ConstMatMap<T>(t.data(), t.size(0), t.size(1),
                        Eigen::OuterStride<>(t.size(0) > 1 ? t.strides()[0] : t.size(1)));
}

// Sum of a[i] * b[i] over two tensors of one shape, without copies for matrix views (the norms
// and cosines of the hot path; Eigen's vectorised reduction).
template <typename T>
double dot(const Tensor<T>& a, const Tensor<T>& b) {
  if (is_matrix_view(a) && is_matrix_view(b) && a.strides()[1] == 1 && b.strides()[1] == 1) {
    return static_cast<double>(as_matrix(a).cwiseProduct(as_matrix(b)).sum());
  }
  const auto x = a.to_vector(), y = b.to_vector();
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  const auto n = static_cast<Eigen::Index>(x.size());
  return static_cast<double>(
      Eigen::Map<const Vec>(x.data(), n).dot(Eigen::Map<const Vec>(y.data(), n)));
}

template <typename T>
double frobenius2(const Tensor<T>& t) {
  return dot(t, t);
}

// ||a - b||^2 without a temporary.
template <typename T>
double distance2(const Tensor<T>& a, const Tensor<T>& b) {
  if (is_matrix_view(a) && is_matrix_view(b)) {
    return static_cast<double>((as_matrix(a) - as_matrix(b)).squaredNorm());
  }
  nn::NoGradGuard no_grad;
  return frobenius2(nn::sub(a.detach(), b.detach()));
}

// True when no op of a computation on these tensors would be recorded (run time): then the
// fused kernels below may replace the op-by-op form.
template <typename T>
bool unrecorded(std::initializer_list<const std::vector<Tensor<T>>*> lists) {
  if (!nn::grad_enabled()) return true;
  for (const auto* list : lists)
    for (const auto& t : *list)
      if (t.defined() && t.requires_grad()) return false;
  return true;
}

// Flush-to-zero and denormals-are-zero on this thread while the memory computes (restored
// after). Products of the small momentum powers (eta^m) with small activations are subnormal
// floats, on which the BLAS kernels run about 15x slower (measured at d = 256, C = 64: 78 ms ->
// 5 ms per chunk); flushing changes values below 1.2e-38 only. (PyTorch's equivalent is
// torch.set_flush_denormal(True).)
class DenormalGuard {
 public:
#if defined(__SSE__)
  DenormalGuard() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ | DAZ
  ~DenormalGuard() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

// s * w for a (1, 1) gate s: a recorded product when the outer loop differentiates through s,
// else a plain contiguous scaling (the run-time path).
template <typename T>
Tensor<T> gate_scale(const Tensor<T>& s, const Tensor<T>& w) {
  if (nn::grad_enabled() && (s.requires_grad() || w.requires_grad())) return nn::mul(s, w);
  return nn::scale(w, s.item());
}

// x / sqrt(sum(x^2, last) + eps), row-wise, with ops (differentiable twice).
template <typename T>
Tensor<T> l2_normalize(const Tensor<T>& x) {
  const Tensor<T> sq = nn::sum(nn::mul(x, x), {-1}, true);
  return nn::mul(x, nn::exp(nn::scale(nn::log(nn::add_scalar(sq, T(1e-6))), T(-0.5))));
}

// ---- Run-time path (nothing recorded): Eigen kernels over preallocated scratch ----

template <typename T>
using CMap = Eigen::Map<const RowMat<T>>;  // contiguous row-major (rows, cols)
template <typename T>
using MMap = Eigen::Map<RowMat<T>>;

// Scratch slots of MemoryWorkspace::buffers. Activations and derivatives have one slot per
// hidden layer (L_M <= 3: at most 2), gradients one per layer.
enum Slot : std::size_t {
  kQueryKey,  // (R, d): queries (first n rows, when reading) and keys (last n rows)
  kValue,     // (n, d): values, then err = M(k) - v, then delta_L = 2 err
  kOut,       // (R, d): M(q), M(k)
  kAct0,      // (R, h) per hidden layer: silu(z_l)
  kAct1,
  kDer0,  // (n, h) per hidden layer: silu'(z_l) of the key rows
  kDer1,
  kDeltaA,  // (n, h): delta of a hidden layer (two, used alternately)
  kDeltaB,
  kScaled,  // (n, 3 out): [c_m * delta | c_s * delta | delta / n]
  kGrad0,   // (in, 3 out) per layer: the three weighted gradients side by side
  kGrad1,
  kGrad2,
  kRow,   // (1, max width): one row (new weights, the chunk mean of the latents)
  kCoef,  // (n, 3): theta, c_m, c_s
  kSlotCount
};

// Slot i of the workspace with room for at least size elements (allocated once, then reused).
template <typename T>
T* scratch(MemoryWorkspace<T>& ws, std::size_t i, std::int64_t size) {
  if (ws.buffers.size() < kSlotCount) ws.buffers.resize(kSlotCount);
  auto& b = ws.buffers[i];
  if (!b.defined() || b.numel() < size) b = Tensor<T>::zeros({std::max<std::int64_t>(size, 1)});
  return b.data();
}

// A tensor whose storage may be overwritten in place: no other handle, view or copy of a state
// shares it, no graph needs it, and its elements are dense.
template <typename T>
bool sole_owner(const Tensor<T>& t) {
  return t.defined() && !t.requires_grad() && t.is_contiguous() && t.node_ptr().use_count() == 1 &&
         t.node()->storage.use_count() == 1;
}

// A contiguous row-major view of a parameter or weight (a copy only for a strided one, which
// no caller of this file produces).
template <typename T>
Tensor<T> dense(const Tensor<T>& t) {
  return t.is_contiguous() ? t : t.detach().clone();
}

template <typename T>
CMap<T> cmap(const Tensor<T>& t) {
  return CMap<T>(t.data(), t.size(0), t.dim() > 1 ? t.size(1) : 1);
}

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Row-wise x / sqrt(||x||^2 + 1e-6) in place (l2_normalize's numbers).
template <typename T>
void l2_normalize_rows(MMap<T> x) {
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    x.row(r) *= T(1) / std::sqrt(x.row(r).squaredNorm() + T(1e-6));
}

// The memory MLP over rows R of `in` (R, d) with weights W: every layer's output in the slots
// kAct0.. (hidden, after silu) and kOut (last); for the last `keys` rows of each hidden layer
// silu'(z) goes to kDer0... Returns the kOut map.
template <typename T>
MMap<T> mlp_forward(MemoryWorkspace<T>& ws, const std::vector<Tensor<T>>& weights, const T* in,
                    std::int64_t rows, std::int64_t keys) {
  const std::size_t L = weights.size();
  std::int64_t width = weights[0].size(0);
  for (std::size_t l = 0; l < L; ++l) {
    const auto W = cmap(weights[l]);
    const std::int64_t out_w = W.cols();
    T* o = scratch(ws, l + 1 == L ? kOut : kAct0 + l, rows * out_w);
    MMap<T> O(o, rows, out_w);
    O.noalias() = CMap<T>(in, rows, width) * W;
    if (l + 1 < L) {
      auto z = O.array();
      if (keys > 0) {
        // Key rows: silu(z) = z s and silu'(z) = s (1 + z (1 - s)) = s + silu(z) (1 - s) from
        // one sigmoid s, without a temporary.
        MMap<T> D(scratch(ws, kDer0 + l, keys * out_w), keys, out_w);
        auto zk = z.bottomRows(keys);
        auto d = D.array();
        d = (T(1) + (-zk).exp()).inverse();
        zk = zk * d;
        d = d + zk * (T(1) - d);
      }
      if (rows > keys) {
        auto zq = z.topRows(rows - keys);
        zq = zq * (T(1) + (-zq).exp()).inverse();
      }
    }
    in = o;
    width = out_w;
  }
  return MMap<T>(scratch(ws, kOut, rows * width), rows, width);
}

void check_same(const Shape& a, const Shape& b, const char* what) {
  if (a != b) {
    throw std::invalid_argument(std::string("titans: ") + what + " has shape " +
                                nn::shape_string(a) + ", expected " + nn::shape_string(b));
  }
}

}  // namespace

template <typename T>
MemoryParams<T> MemoryParams<T>::init(const MemoryConfig& c) {
  c.validate();
  std::mt19937_64 rng(c.seed);
  MemoryParams<T> p;
  const T proj_std = T(1) / std::sqrt(static_cast<T>(c.input_dim));
  p.w_k = Tensor<T>::randn({c.input_dim, c.dim}, rng, proj_std, 0, true);
  p.w_v = Tensor<T>::randn({c.input_dim, c.dim}, rng, proj_std, 0, true);
  p.w_q = Tensor<T>::randn({c.input_dim, c.dim}, rng, proj_std, 0, true);
  p.theta_w = Tensor<T>::zeros({c.input_dim, 1}, true);
  p.theta_b = Tensor<T>::zeros({1}, true);
  p.eta_w = Tensor<T>::zeros({c.input_dim, 1}, true);
  p.eta_b = Tensor<T>::zeros({1}, true);
  p.alpha_w = Tensor<T>::zeros({c.input_dim, 1}, true);
  p.alpha_b = Tensor<T>::zeros({1}, true);
  for (std::size_t l = 0; l < static_cast<std::size_t>(c.depth); ++l) {
    const Shape s = layer_shape<T>(c, l);
    p.m0.push_back(Tensor<T>::randn(s, rng, T(1) / std::sqrt(static_cast<T>(s[0])), 0, true));
  }
  if (c.persistent > 0)
    p.persistent = Tensor<T>::randn({c.persistent, c.input_dim}, rng, 1, 0, true);
  return p;
}

template <typename T>
std::vector<std::pair<std::string, Tensor<T>>> MemoryParams<T>::named() const {
  std::vector<std::pair<std::string, Tensor<T>>> out = {
      {"w_k", w_k},         {"w_v", w_v},         {"w_q", w_q},
      {"theta_w", theta_w}, {"theta_b", theta_b}, {"eta_w", eta_w},
      {"eta_b", eta_b},     {"alpha_w", alpha_w}, {"alpha_b", alpha_b}};
  for (std::size_t l = 0; l < m0.size(); ++l) out.emplace_back("m0." + std::to_string(l), m0[l]);
  if (persistent.defined()) out.emplace_back("persistent", persistent);
  return out;
}

template <typename T>
std::vector<Tensor<T>> MemoryParams<T>::all() const {
  std::vector<Tensor<T>> out;
  for (auto& [name, t] : named()) out.push_back(t);
  return out;
}

template <typename T>
std::int64_t tensor_bytes(const std::vector<Tensor<T>>& tensors) {
  std::int64_t n = 0;
  for (const auto& t : tensors) n += t.defined() ? t.numel() : 0;
  return n * static_cast<std::int64_t>(sizeof(T));
}

template <typename T>
std::int64_t MemoryState<T>::bytes() const {
  return tensor_bytes(weights) + tensor_bytes(momentum) + tensor_bytes(previous_gradient) +
         (pending.defined() ? pending.numel() * static_cast<std::int64_t>(sizeof(T)) : 0);
}

template <typename T>
Tensor<T> memory_apply(const std::vector<Tensor<T>>& weights, const Tensor<T>& k) {
  if (weights.empty()) throw std::invalid_argument("titans: memory without layers");
  Tensor<T> a = k;
  for (std::size_t l = 0; l < weights.size(); ++l) {
    a = nn::matmul(a, weights[l]);  // (n, in) @ (in, out)
    if (l + 1 < weights.size()) a = nn::silu(a);
  }
  return a;
}

template <typename T>
Tensor<T> associative_loss(const std::vector<Tensor<T>>& weights, const Tensor<T>& k,
                           const Tensor<T>& v) {
  const Tensor<T> err = nn::sub(memory_apply(weights, k), v);
  return nn::sum(nn::mul(err, err), {-1}, true);  // (n, 1)
}

template <typename T>
std::vector<std::vector<Tensor<T>>> inner_gradients(const std::vector<Tensor<T>>& weights,
                                                    const Tensor<T>& k, const Tensor<T>& v,
                                                    const std::vector<Tensor<T>>& coefficients,
                                                    Tensor<T>* loss) {
  if (weights.empty()) throw std::invalid_argument("titans: memory without layers");
  if (k.dim() != 2 || v.dim() != 2 || k.size(0) != v.size(0)) {
    throw std::invalid_argument("titans: inner_gradients needs k (n, d) and v (n, d), got " +
                                nn::shape_string(k.shape()) + " and " +
                                nn::shape_string(v.shape()));
  }
  const std::int64_t n = k.size(0);
  for (const auto& c : coefficients) check_same(c.shape(), {n, 1}, "a gradient coefficient");
  const std::size_t L = weights.size();
  // Forward, keeping the layer inputs a_l (n, in_l) and pre-activations z_l.
  std::vector<Tensor<T>> a = {k}, z;
  Tensor<T> out;
  for (std::size_t l = 0; l < L; ++l) {
    Tensor<T> zl = nn::matmul(a[l], weights[l]);
    if (l + 1 < L) {
      z.push_back(zl);
      a.push_back(nn::silu(zl));
    } else {
      out = zl;
    }
  }
  const Tensor<T> err = nn::sub(out, v);  // (n, d)
  if (loss) *loss = nn::sum(nn::mul(err, err), {-1}, true);
  Tensor<T> delta = nn::scale(err, T(2));  // dl_t/d out_t
  std::vector<std::vector<Tensor<T>>> grads(coefficients.size(), std::vector<Tensor<T>>(L));
  const std::vector<Tensor<T>> inputs = {k, v};
  const bool fused = coefficients.size() > 1 && unrecorded<T>({&weights, &inputs, &coefficients});
  for (std::size_t l = L; l-- > 0;) {
    const Tensor<T> a_t = nn::transpose(a[l], 0, 1);  // (in, n)
    if (fused) {
      // Run time: one product a^T [c_1 * delta | c_2 * delta | ...] (in, J * out) instead of J,
      // so a^T is packed once; the gradients are column blocks (views) of it.
      const std::int64_t out = delta.size(1), J = static_cast<std::int64_t>(coefficients.size());
      Tensor<T> scaled = Tensor<T>::zeros({n, J * out});
      MatMap<T> dst(scaled.data(), n, J * out, Eigen::OuterStride<>(J * out));
      const Tensor<T> delta_c = delta.contiguous();  // owners of the mapped data
      const auto d = as_matrix(delta_c);
      for (std::int64_t j = 0; j < J; ++j) {
        const Tensor<T> c_j = coefficients[static_cast<std::size_t>(j)].contiguous();
        const auto c = as_matrix(c_j);
        dst.middleCols(j * out, out) = c.col(0).asDiagonal() * d;
      }
      const Tensor<T> g = nn::matmul(a_t, scaled);  // (in, J * out)
      for (std::int64_t j = 0; j < J; ++j)
        grads[static_cast<std::size_t>(j)][l] = nn::slice(g, 1, j * out, (j + 1) * out);
    } else {
      for (std::size_t j = 0; j < coefficients.size(); ++j) {
        grads[j][l] = nn::matmul(a_t, nn::mul(delta, coefficients[j]));  // (in, out)
      }
    }
    if (l > 0) {
      delta = nn::mul(nn::matmul(delta, nn::transpose(weights[l], 0, 1)), nn::silu_grad(z[l - 1]));
    }
  }
  return grads;
}

template <typename T>
std::pair<double, double> chunk_surprise(const std::vector<Tensor<T>>& weights, const Tensor<T>& k,
                                         const Tensor<T>& v) {
  nn::NoGradGuard no_grad;
  std::vector<Tensor<T>> w;
  for (const auto& t : weights) w.push_back(t.detach());
  const std::int64_t n = k.size(0);
  Tensor<T> loss;
  const auto g = inner_gradients(w, k.detach(), v.detach(),
                                 {Tensor<T>::full({n, 1}, T(1) / static_cast<T>(n))}, &loss);
  double s = 0;
  for (const auto& t : g[0]) s += frobenius2(t);
  double l = 0;
  for (T x : loss.to_vector()) l += static_cast<double>(x);
  return {std::sqrt(s), l / static_cast<double>(n)};
}

namespace {

// The closed form of the chunk recurrences with a decision hook between the gradients and the
// write: decide(partial result: loss, surprise, gradients) returns the factor theta is scaled by
// (0: no write).
template <typename T>
ChunkUpdate<T> chunk_update_impl(const std::vector<Tensor<T>>& weights,
                                 const std::vector<Tensor<T>>& momentum, const Tensor<T>& k,
                                 const Tensor<T>& v, const ChunkGates<T>& gates,
                                 const std::function<double(const ChunkUpdate<T>&)>& decide) {
  if (momentum.size() != weights.size()) {
    throw std::invalid_argument("titans: momentum has " + std::to_string(momentum.size()) +
                                " layers, memory " + std::to_string(weights.size()));
  }
  const std::int64_t n = k.size(0);
  check_same(gates.theta.shape(), {n, 1}, "theta");
  check_same(gates.eta.shape(), {1, 1}, "eta");
  check_same(gates.alpha.shape(), {1, 1}, "alpha");
  // Powers p_m = eta^m, b_m = beta^m (beta = 1 - alpha) and h_m = beta h_{m-1} + p_m, m = 0..n.
  // When the outer loop differentiates through the gates they are (1, 1) tensors, so that the
  // outer loss reaches the gate maps; at run time plain numbers (same recurrences).
  std::vector<Tensor<T>> p, b, h;
  Tensor<T> c_m, c_s;
  const bool recorded =
      nn::grad_enabled() && (gates.eta.requires_grad() || gates.alpha.requires_grad());
  if (recorded) {
    const Tensor<T> beta = nn::add_scalar(nn::scale(gates.alpha, T(-1)), T(1));
    p = b = h = {Tensor<T>::full({1, 1}, T(1))};
    for (std::int64_t m = 1; m <= n; ++m) {
      p.push_back(nn::mul(p.back(), gates.eta));
      b.push_back(nn::mul(b.back(), beta));
      h.push_back(nn::add(nn::mul(beta, h.back()), p.back()));
    }
    std::vector<Tensor<T>> h_rev, p_rev;  // row s (0-based) holds index n - 1 - s
    for (std::int64_t s = 0; s < n; ++s) {
      h_rev.push_back(h[static_cast<std::size_t>(n - 1 - s)]);
      p_rev.push_back(p[static_cast<std::size_t>(n - 1 - s)]);
    }
    c_m = nn::mul(gates.theta, nn::concat(h_rev, 0));  // (n, 1)
    c_s = nn::mul(gates.theta, nn::concat(p_rev, 0));  // (n, 1)
  } else {
    const T eta = gates.eta.item(), beta = T(1) - gates.alpha.item();
    std::vector<T> pv = {T(1)}, bv = {T(1)}, hv = {T(1)};
    for (std::int64_t m = 1; m <= n; ++m) {
      pv.push_back(pv.back() * eta);
      bv.push_back(bv.back() * beta);
      hv.push_back(beta * hv.back() + pv.back());
    }
    for (std::size_t m = 0; m < pv.size(); ++m) {
      p.push_back(Tensor<T>::full({1, 1}, pv[m]));
      b.push_back(Tensor<T>::full({1, 1}, bv[m]));
      h.push_back(Tensor<T>::full({1, 1}, hv[m]));
    }
    std::vector<T> h_rev(static_cast<std::size_t>(n)), p_rev(static_cast<std::size_t>(n));
    for (std::int64_t s = 0; s < n; ++s) {
      h_rev[static_cast<std::size_t>(s)] = hv[static_cast<std::size_t>(n - 1 - s)];
      p_rev[static_cast<std::size_t>(s)] = pv[static_cast<std::size_t>(n - 1 - s)];
    }
    c_m = nn::mul(gates.theta, Tensor<T>::from_vector({n, 1}, h_rev));
    c_s = nn::mul(gates.theta, Tensor<T>::from_vector({n, 1}, p_rev));
  }
  const Tensor<T> mean_c = Tensor<T>::full({n, 1}, T(1) / static_cast<T>(n));
  Tensor<T> loss;
  const auto g = inner_gradients(weights, k, v, {c_m, c_s, mean_c}, &loss);

  ChunkUpdate<T> r;
  double s2 = 0;
  for (const auto& t : g[2]) s2 += frobenius2(t);
  r.surprise = std::sqrt(s2);
  double l = 0;
  for (T x : loss.to_vector()) l += static_cast<double>(x);
  r.loss = l / static_cast<double>(n);
  double d2 = 0;
  for (const auto& t : g[0]) d2 += frobenius2(t);
  r.direction_norm = std::sqrt(d2);
  // Own copies: at run time the gradients are views of one wider product.
  for (const auto& t : g[2]) r.mean_gradient.push_back(t.detach().contiguous());
  const double factor = decide ? decide(r) : 1.0;
  if (factor == 0.0) {
    r.weights = weights;
    r.momentum = momentum;
    return r;
  }
  const auto nn_ = static_cast<std::size_t>(n);
  const Tensor<T> carry = nn::sub(h[nn_], b[nn_]);  // sum_t beta^{n-t} eta^t
  double u2 = 0;
  const std::vector<Tensor<T>> gate_list = {gates.theta, gates.eta, gates.alpha};
  if (unrecorded<T>({&weights, &momentum, &gate_list}) && !g[0][0].requires_grad()) {
    // Run time: M_n = b_n M_0 + carry S_0 - f G_M and S_n = p_n S_0 - f G_S in one pass each.
    const T bn = b[nn_].item(), cn = carry.item(), pn = p[nn_].item();
    const auto f = static_cast<T>(factor);
    for (std::size_t l2 = 0; l2 < weights.size(); ++l2) {
      const auto& w = weights[l2];
      Tensor<T> m_new = Tensor<T>::zeros(w.shape()), s_new = Tensor<T>::zeros(w.shape());
      const Tensor<T> w_c = w.contiguous(), s_c = momentum[l2].contiguous();  // owners
      const auto W = as_matrix(w_c), S = as_matrix(s_c);
      MatMap<T> M1(m_new.data(), w.size(0), w.size(1), Eigen::OuterStride<>(w.size(1)));
      MatMap<T> S1(s_new.data(), w.size(0), w.size(1), Eigen::OuterStride<>(w.size(1)));
      M1 = bn * W + cn * S - f * as_matrix(g[0][l2]);
      S1 = pn * S - f * as_matrix(g[1][l2]);
      u2 += static_cast<double>((M1 - W).squaredNorm());
      r.weights.push_back(m_new);
      r.momentum.push_back(s_new);
    }
    r.update_norm = std::sqrt(u2);
    return r;
  }
  for (std::size_t l2 = 0; l2 < weights.size(); ++l2) {
    Tensor<T> gm = g[0][l2], gs = g[1][l2];
    if (factor != 1.0) {
      gm = nn::scale(gm, static_cast<T>(factor));
      gs = nn::scale(gs, static_cast<T>(factor));
    }
    Tensor<T> m_new = nn::add(gate_scale(b[nn_], weights[l2]), gate_scale(carry, momentum[l2]));
    m_new = nn::sub(m_new, gm);
    r.momentum.push_back(nn::sub(gate_scale(p[nn_], momentum[l2]), gs));
    u2 += distance2(m_new, weights[l2]);
    r.weights.push_back(m_new);
  }
  r.update_norm = std::sqrt(u2);
  return r;
}

}  // namespace

template <typename T>
ChunkUpdate<T> chunk_update(const std::vector<Tensor<T>>& weights,
                            const std::vector<Tensor<T>>& momentum, const Tensor<T>& k,
                            const Tensor<T>& v, const ChunkGates<T>& gates) {
  return chunk_update_impl(weights, momentum, k, v, gates, {});
}

template <typename T>
NeuralMemory<T>::NeuralMemory(const MemoryConfig& config)
    : NeuralMemory(config, MemoryParams<T>::init(config)) {}

template <typename T>
NeuralMemory<T>::NeuralMemory(const MemoryConfig& config, MemoryParams<T> params)
    : config_(config), params_(std::move(params)) {
  config_.validate();
  const auto& c = config_;
  const auto& p = params_;
  check_same(p.w_k.shape(), {c.input_dim, c.dim}, "w_k");
  check_same(p.w_v.shape(), {c.input_dim, c.dim}, "w_v");
  check_same(p.w_q.shape(), {c.input_dim, c.dim}, "w_q");
  for (const auto* w : {&p.theta_w, &p.eta_w, &p.alpha_w})
    check_same(w->shape(), {c.input_dim, 1}, "a gate map");
  for (const auto* b : {&p.theta_b, &p.eta_b, &p.alpha_b})
    check_same(b->shape(), {1}, "a gate bias");
  if (p.m0.size() != static_cast<std::size_t>(c.depth)) {
    throw std::invalid_argument("titans: m0 has " + std::to_string(p.m0.size()) +
                                " layers, depth is " + std::to_string(c.depth));
  }
  for (std::size_t l = 0; l < p.m0.size(); ++l)
    check_same(p.m0[l].shape(), layer_shape<T>(c, l), "an m0 layer");
  if (c.persistent > 0) {
    if (!p.persistent.defined()) throw std::invalid_argument("titans: persistent memory missing");
    check_same(p.persistent.shape(), {c.persistent, c.input_dim}, "persistent");
  }
}

template <typename T>
typename NeuralMemory<T>::Projection NeuralMemory<T>::project(const Tensor<T>& x,
                                                              bool with_query) const {
  check_same({x.dim() == 2 ? x.size(1) : -1}, {config_.input_dim}, "the latents' last axis");
  Projection r{nn::matmul(x, params_.w_k), nn::matmul(x, params_.w_v),
               with_query ? nn::matmul(x, params_.w_q) : Tensor<T>()};
  if (config_.l2_norm) {
    r.k = l2_normalize(r.k);
    if (with_query) r.q = l2_normalize(r.q);
  }
  return r;
}

template <typename T>
ChunkGates<T> NeuralMemory<T>::gates(const Tensor<T>& x) const {
  const auto& p = params_;
  const Tensor<T> xm = nn::mean(x, {0}, true);  // (1, d_in)
  ChunkGates<T> g;
  g.theta = nn::scale(nn::sigmoid(nn::add(nn::matmul(x, p.theta_w), p.theta_b)),
                      static_cast<T>(config_.theta_max));
  g.eta = nn::scale(nn::sigmoid(nn::add(nn::matmul(xm, p.eta_w), p.eta_b)),
                    static_cast<T>(config_.eta_max));
  g.alpha = nn::scale(nn::sigmoid(nn::add(nn::matmul(xm, p.alpha_w), p.alpha_b)),
                      static_cast<T>(config_.alpha_max));
  return g;
}

template <typename T>
MemoryState<T> NeuralMemory<T>::initial_state(std::uint64_t document) const {
  MemoryState<T> s;
  s.document = document;
  s.weights = params_.m0;
  for (const auto& w : params_.m0) s.momentum.push_back(Tensor<T>::zeros(w.shape()));
  if (config_.persistent > 0) {
    const DenormalGuard denormals;
    write_chunk(s, params_.persistent, nullptr, {}, nullptr);
    s.step = 0;
    s.previous_gradient.clear();
  }
  return s;
}

template <typename T>
void NeuralMemory<T>::write_chunk(MemoryState<T>& state, const Tensor<T>& x,
                                  const Tensor<T>* x_value, const WritePolicy& policy,
                                  std::vector<ChunkRecord>* records) const {
  if (run_time(state, x) && (!x_value || !x_value->requires_grad())) {
    check_same({x.dim() == 2 ? x.size(1) : -1}, {config_.input_dim}, "the latents' last axis");
    const Tensor<T> xk = dense(x), xv = x_value ? dense(*x_value) : Tensor<T>();
    write_chunk_run_time(state, xk.data(), x_value ? xv.data() : nullptr, x.size(0), nullptr,
                         nullptr, policy, records);
    return;
  }
  Projection pr = project(x, /*with_query=*/false);
  if (x_value) pr.v = nn::matmul(*x_value, params_.w_v);
  ChunkRecord rec;
  rec.report.step = state.step;
  rec.report.patches = x.size(0);
  double m2 = 0;
  for (const auto& t : state.weights) m2 += frobenius2(t);
  rec.report.param_norm = std::sqrt(m2);
  auto decide = [&](const ChunkUpdate<T>& partial) {
    rec.report.loss = partial.loss;
    rec.report.surprise = partial.surprise;
    rec.report.direction_norm = partial.direction_norm;
    if (state.previous_gradient.size() == partial.mean_gradient.size()) {
      double ab = 0, a2 = 0, b2 = 0;
      for (std::size_t l = 0; l < partial.mean_gradient.size(); ++l) {
        ab += dot(partial.mean_gradient[l], state.previous_gradient[l]);
        a2 += frobenius2(partial.mean_gradient[l]);
        b2 += frobenius2(state.previous_gradient[l]);
      }
      rec.report.grad_cosine = a2 > 0 && b2 > 0 ? ab / std::sqrt(a2 * b2) : 1.0;
    }
    rec.theta_scale = policy ? policy(rec.report) : 1.0;
    if (!std::isfinite(rec.theta_scale) || rec.theta_scale < 0) {
      throw std::invalid_argument("titans: write policy returned " +
                                  std::to_string(rec.theta_scale) + ", expected a factor >= 0");
    }
    return rec.theta_scale;
  };
  ChunkUpdate<T> u =
      chunk_update_impl<T>(state.weights, state.momentum, pr.k, pr.v, gates(x), decide);
  rec.update_norm = u.update_norm;
  state.previous_gradient = u.mean_gradient;
  if (rec.theta_scale != 0.0) {
    state.weights = std::move(u.weights);
    state.momentum = std::move(u.momentum);
    ++state.step;
  }
  if (records) records->push_back(rec);
}

template <typename T>
Tensor<T> NeuralMemory<T>::forward(MemoryState<T>& state, const Tensor<T>& x,
                                   const WritePolicy& policy,
                                   std::vector<ChunkRecord>* records) const {
  if (x.dim() != 2 || x.size(1) != config_.input_dim) {
    throw std::invalid_argument("titans: latents have shape " + nn::shape_string(x.shape()) +
                                ", expected (n, " + std::to_string(config_.input_dim) + ")");
  }
  const DenormalGuard denormals;
  if (run_time(state, x)) return forward_run_time(state, x, policy, records);
  const std::int64_t n = x.size(0);
  if (state.pending_rows() >= config_.chunk) flush(state, policy, records);  // after set_chunk
  std::vector<Tensor<T>> outputs;
  for (std::int64_t i = 0; i < n;) {
    const std::int64_t take = std::min(config_.chunk - state.pending_rows(), n - i);
    const Tensor<T> xs = nn::slice(x, 0, i, i + take);
    Tensor<T> q = nn::matmul(xs, params_.w_q);
    if (config_.l2_norm) q = l2_normalize(q);
    outputs.push_back(memory_apply(state.weights, q));  // weights at the chunk start
    state.pending = state.pending.defined() ? nn::concat<T>({state.pending, xs}, 0) : xs;
    if (state.pending_rows() == config_.chunk) flush(state, policy, records);
    i += take;
  }
  if (outputs.empty()) return Tensor<T>::zeros({0, config_.dim});
  return outputs.size() == 1 ? outputs[0] : nn::concat(outputs, 0);
}

template <typename T>
void NeuralMemory<T>::set_chunk(std::int64_t chunk) {
  if (chunk < 1) throw std::invalid_argument("titans: chunk must be >= 1");
  config_.chunk = chunk;
}

template <typename T>
void NeuralMemory<T>::flush(MemoryState<T>& state, const WritePolicy& policy,
                            std::vector<ChunkRecord>* records) const {
  if (state.pending_rows() == 0) return;
  const DenormalGuard denormals;
  const Tensor<T> x = state.pending;
  state.pending = Tensor<T>();
  write_chunk(state, x, nullptr, policy, records);
}

template <typename T>
Tensor<T> NeuralMemory<T>::read(const MemoryState<T>& state, const Tensor<T>& x) const {
  if (x.dim() != 2 || x.size(1) != config_.input_dim) {
    throw std::invalid_argument("titans: query latents have shape " + nn::shape_string(x.shape()) +
                                ", expected (n, " + std::to_string(config_.input_dim) + ")");
  }
  const DenormalGuard denormals;
  Tensor<T> q = nn::matmul(x, params_.w_q);
  if (config_.l2_norm) q = l2_normalize(q);
  return memory_apply(state.weights, q);
}

template <typename T>
void NeuralMemory<T>::write_pairs(MemoryState<T>& state, const Tensor<T>& key_latents,
                                  const Tensor<T>& value_latents, const WritePolicy& policy,
                                  std::vector<ChunkRecord>* records) const {
  if (key_latents.dim() != 2 || key_latents.size(1) != config_.input_dim ||
      value_latents.shape() != key_latents.shape() || key_latents.size(0) < 1) {
    throw std::invalid_argument(
        "titans: write_pairs needs key and value latents of one shape (n, " +
        std::to_string(config_.input_dim) + "), n >= 1, got " +
        nn::shape_string(key_latents.shape()) + " and " + nn::shape_string(value_latents.shape()));
  }
  const DenormalGuard denormals;
  write_chunk(state, key_latents, &value_latents, policy, records);
}

template <typename T>
std::int64_t MemoryWorkspace<T>::bytes() const {
  return tensor_bytes(buffers);
}

template <typename T>
bool NeuralMemory<T>::run_time(const MemoryState<T>& state, const Tensor<T>& x) const {
  if (!nn::grad_enabled()) return true;
  if (x.defined() && x.requires_grad()) return false;
  const std::vector<Tensor<T>> params = params_.all();
  return unrecorded<T>({&params, &state.weights, &state.momentum});
}

// The run-time chunk write: the numbers of chunk_update_impl (and, with xq, of the readouts
// memory_apply(M, q)) from Eigen products over the state's workspace, M and S updated in place
// when the state owns them. Per layer l the three weighted gradients are one product
// a_{l-1}^T [c_m delta_l | c_s delta_l | delta_l / n].
template <typename T>
void NeuralMemory<T>::write_chunk_run_time(MemoryState<T>& state, const T* xk, const T* xv,
                                           std::int64_t n, const T* xq, T* y,
                                           const WritePolicy& policy,
                                           std::vector<ChunkRecord>* records) const {
  const auto& c = config_;
  const auto& p = params_;
  const std::int64_t din = c.input_dim, d = c.dim;
  const std::size_t L = state.weights.size();
  if (L == 0 || state.momentum.size() != L) {
    throw std::invalid_argument("titans: state has " + std::to_string(L) + " memory layers and " +
                                std::to_string(state.momentum.size()) + " momentum layers");
  }
  for (std::size_t l = 0; l < L; ++l) {
    check_same(state.weights[l].shape(), layer_shape<T>(c, l), "a memory layer of the state");
    check_same(state.momentum[l].shape(), layer_shape<T>(c, l), "a momentum layer of the state");
    if (!state.weights[l].is_contiguous()) state.weights[l] = dense(state.weights[l]);
    if (!state.momentum[l].is_contiguous()) state.momentum[l] = dense(state.momentum[l]);
  }
  auto& ws = state.workspace;
  const std::int64_t reads = xq ? n : 0, rows = reads + n;
  ChunkRecord rec;
  rec.report.step = state.step;
  rec.report.patches = n;
  double m2 = 0;
  for (const auto& w : state.weights) m2 += static_cast<double>(cmap(w).squaredNorm());
  rec.report.param_norm = std::sqrt(m2);

  // Projections: queries (first `reads` rows) and keys (last n rows) in one buffer, so that
  // retrieval and the write's forward pass share each layer's product.
  const Tensor<T> w_k = dense(p.w_k), w_v = dense(p.w_v), w_q = dense(p.w_q);
  MMap<T> QK(scratch(ws, kQueryKey, rows * d), rows, d);
  const CMap<T> Xk(xk, n, din);
  if (xq) QK.topRows(reads).noalias() = CMap<T>(xq, n, din) * cmap(w_q);
  QK.bottomRows(n).noalias() = Xk * cmap(w_k);
  if (c.l2_norm) l2_normalize_rows<T>(QK);
  MMap<T> E(scratch(ws, kValue, n * d), n, d);
  E.noalias() = CMap<T>(xv ? xv : xk, n, din) * cmap(w_v);

  const MMap<T> out = mlp_forward(ws, state.weights, QK.data(), rows, n);
  if (y) MMap<T>(y, reads, d) = out.topRows(reads);
  // err = M(k) - v, l_t = ||err_t||^2 (eq. 12), delta_L = 2 err.
  E = out.bottomRows(n) - E;
  double loss = 0;
  for (std::int64_t t = 0; t < n; ++t) loss += static_cast<double>(E.row(t).squaredNorm());
  E *= T(2);

  // Gates (theta per patch, eta and alpha from the chunk mean) and the coefficient columns.
  MMap<T> coef(scratch(ws, kCoef, n * 3), n, 3);
  const Tensor<T> theta_w = dense(p.theta_w), eta_w = dense(p.eta_w), alpha_w = dense(p.alpha_w);
  coef.col(0).noalias() = Xk * cmap(theta_w).col(0);
  const T theta_b = p.theta_b.item(), tmax = static_cast<T>(c.theta_max);
  for (std::int64_t t = 0; t < n; ++t) coef(t, 0) = tmax * sigmoid(coef(t, 0) + theta_b);
  T xm_eta = 0, xm_alpha = 0;
  {
    // Chunk mean of the latents (row sums, vectorised), then its two gate logits.
    Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> xm(scratch(ws, kRow, din), din);
    xm = Xk.colwise().sum() * (T(1) / static_cast<T>(n));
    xm_eta = xm.dot(cmap(eta_w).col(0).transpose());
    xm_alpha = xm.dot(cmap(alpha_w).col(0).transpose());
  }
  const T eta = static_cast<T>(c.eta_max) * sigmoid(xm_eta + p.eta_b.item());
  const T beta = T(1) - static_cast<T>(c.alpha_max) * sigmoid(xm_alpha + p.alpha_b.item());
  // p_m = eta^m, b_m = beta^m, h_m = beta h_{m-1} + p_m; row s weighs index n - 1 - s.
  T pn = 1, bn = 1, hn = 1;
  {
    std::vector<T> pv(static_cast<std::size_t>(n) + 1), hv(pv.size());
    pv[0] = hv[0] = 1;
    for (std::int64_t m = 1; m <= n; ++m) {
      const auto i = static_cast<std::size_t>(m);
      pv[i] = pv[i - 1] * eta;
      bn *= beta;
      hv[i] = beta * hv[i - 1] + pv[i];
    }
    pn = pv.back();
    hn = hv.back();
    for (std::int64_t t = 0; t < n; ++t) {
      const auto i = static_cast<std::size_t>(n - 1 - t);
      coef(t, 1) = coef(t, 0) * pv[i];  // c_s
      coef(t, 0) = coef(t, 0) * hv[i];  // c_m
    }
  }
  const T mean_c = T(1) / static_cast<T>(n);

  // Backward through the layers: G_l = a_{l-1}^T [c_m delta | c_s delta | delta / n].
  // Layer l's gradients: slot kGrad0 + l, (rows of W_l, 3 x its columns).
  auto grad_map = [&](std::size_t l) {
    const auto& w = state.weights[l];
    return MMap<T>(ws.buffers[kGrad0 + l].data(), w.size(0), 3 * w.size(1));
  };
  const T* delta = E.data();
  std::int64_t dw = d;
  for (std::size_t l = L; l-- > 0;) {
    const auto W = cmap(state.weights[l]);
    const std::int64_t in_w = W.rows();
    const CMap<T> D(delta, n, dw);
    MMap<T> S3(scratch(ws, kScaled, n * 3 * dw), n, 3 * dw);
    S3.leftCols(dw).noalias() = coef.col(0).asDiagonal() * D;
    S3.middleCols(dw, dw).noalias() = coef.col(1).asDiagonal() * D;
    S3.rightCols(dw) = mean_c * D;
    const T* a_in =
        l == 0 ? QK.data() + reads * d : ws.buffers[kAct0 + l - 1].data() + reads * in_w;
    MMap<T>(scratch(ws, kGrad0 + l, in_w * 3 * dw), in_w, 3 * dw).noalias() =
        CMap<T>(a_in, n, in_w).transpose() * S3;
    if (l > 0) {
      T* next = scratch(ws, (L - l) % 2 == 1 ? kDeltaA : kDeltaB, n * in_w);
      MMap<T> Dn(next, n, in_w);
      Dn.noalias() = D * W.transpose();
      Dn.array() *= CMap<T>(ws.buffers[kDer0 + l - 1].data(), n, in_w).array();
      delta = next;
      dw = in_w;
    }
  }
  // One pass over each layer's gradients: the norms of the write (direction) and of the mean
  // gradient (surprise), the cosine with the previous chunk's mean gradient, and this chunk's
  // mean gradient stored as the previous one (in place when the state owns it).
  bool same_layers = state.previous_gradient.size() == L;
  for (std::size_t l = 0; same_layers && l < L; ++l) {
    same_layers = state.previous_gradient[l].defined() &&
                  state.previous_gradient[l].shape() == state.weights[l].shape();
  }
  if (!same_layers) state.previous_gradient.assign(L, Tensor<T>());
  double s2 = 0, d2 = 0, ab = 0, b2 = 0;
  for (std::size_t l = 0; l < L; ++l) {
    const auto g = grad_map(l);
    const std::int64_t r = g.rows(), ow = g.cols() / 3;
    auto& prev = state.previous_gradient[l];
    if (same_layers && !prev.is_contiguous()) prev = dense(prev);
    // The previous gradient's data stays alive through `keep` when prev is replaced.
    Tensor<T> keep;
    const T* old = same_layers ? prev.data() : nullptr;
    if (!same_layers || !sole_owner(prev)) {
      keep = prev;
      prev = Tensor<T>::zeros(state.weights[l].shape());
    }
    MMap<T> dst(prev.data(), r, ow);
    for (std::int64_t i = 0; i < r; ++i) {
      const auto gm = g.row(i).head(ow);
      const auto mean = g.row(i).tail(ow);
      d2 += static_cast<double>(gm.squaredNorm());
      s2 += static_cast<double>(mean.squaredNorm());
      if (same_layers) {
        const auto before =
            CMap<T>(old, r, ow).row(i);  // read before dst (maybe the same) is written
        ab += static_cast<double>(mean.dot(before));
        b2 += static_cast<double>(before.squaredNorm());
      }
      dst.row(i) = mean;
    }
  }
  rec.report.loss = loss / static_cast<double>(n);
  rec.report.surprise = std::sqrt(s2);
  rec.report.direction_norm = std::sqrt(d2);
  if (same_layers) rec.report.grad_cosine = s2 > 0 && b2 > 0 ? ab / std::sqrt(s2 * b2) : 1.0;
  rec.theta_scale = policy ? policy(rec.report) : 1.0;
  if (!std::isfinite(rec.theta_scale) || rec.theta_scale < 0) {
    throw std::invalid_argument("titans: write policy returned " + std::to_string(rec.theta_scale) +
                                ", expected a factor >= 0");
  }
  if (rec.theta_scale != 0.0) {
    // M_n = b_n M_0 + (h_n - b_n) S_0 - f G_M and S_n = p_n S_0 - f G_S, row by row, in place
    // when the state owns M and S.
    const T carry = hn - bn, f = static_cast<T>(rec.theta_scale);
    double u2 = 0;
    for (std::size_t l = 0; l < L; ++l) {
      Tensor<T>& w = state.weights[l];
      Tensor<T>& mom = state.momentum[l];
      const std::int64_t r = w.size(0), cw = w.size(1);
      Tensor<T> w_new = sole_owner(w) ? w : Tensor<T>::zeros(w.shape());
      Tensor<T> s_new = sole_owner(mom) ? mom : Tensor<T>::zeros(mom.shape());
      const CMap<T> W0(w.data(), r, cw), S0(mom.data(), r, cw);
      MMap<T> W1(w_new.data(), r, cw), S1(s_new.data(), r, cw);
      const auto g = grad_map(l);
      const auto GM = g.leftCols(cw), GS = g.middleCols(cw, cw);
      Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> row(scratch(ws, kRow, cw), cw);
      for (std::int64_t i = 0; i < r; ++i) {
        row = bn * W0.row(i) + carry * S0.row(i) - f * GM.row(i);
        u2 += static_cast<double>((row - W0.row(i)).squaredNorm());
        W1.row(i) = row;
        S1.row(i) = pn * S0.row(i) - f * GS.row(i);
      }
      w = w_new;
      mom = s_new;
    }
    rec.update_norm = std::sqrt(u2);
    ++state.step;
  }
  if (records) records->push_back(rec);
}

template <typename T>
void NeuralMemory<T>::read_run_time(MemoryState<T>& state, const T* xq, std::int64_t n,
                                    T* y) const {
  auto& ws = state.workspace;
  const std::int64_t d = config_.dim;
  for (std::size_t l = 0; l < state.weights.size(); ++l)
    if (!state.weights[l].is_contiguous()) state.weights[l] = dense(state.weights[l]);
  const Tensor<T> w_q = dense(params_.w_q);
  MMap<T> Q(scratch(ws, kQueryKey, n * d), n, d);
  Q.noalias() = CMap<T>(xq, n, config_.input_dim) * cmap(w_q);
  if (config_.l2_norm) l2_normalize_rows<T>(Q);
  MMap<T>(y, n, d) = mlp_forward(ws, state.weights, Q.data(), n, 0);
}

template <typename T>
Tensor<T> NeuralMemory<T>::forward_run_time(MemoryState<T>& state, const Tensor<T>& x_in,
                                            const WritePolicy& policy,
                                            std::vector<ChunkRecord>* records) const {
  const Tensor<T> x = dense(x_in);
  const std::int64_t n = x.size(0), din = config_.input_dim, d = config_.dim;
  Tensor<T> y = Tensor<T>::zeros({n, d});
  if (state.pending_rows() >= config_.chunk) flush(state, policy, records);  // after set_chunk
  for (std::int64_t i = 0; i < n;) {
    const std::int64_t take = std::min(config_.chunk - state.pending_rows(), n - i);
    const T* xs = x.data() + i * din;
    if (state.pending_rows() == 0 && take == config_.chunk) {
      // A whole chunk of this call: read and written from the same products, nothing pending.
      write_chunk_run_time(state, xs, nullptr, take, xs, y.data() + i * d, policy, records);
    } else {
      read_run_time(state, xs, take, y.data() + i * d);  // weights at the chunk start
      const Tensor<T> piece = nn::slice(x, 0, i, i + take);
      state.pending = state.pending.defined() ? nn::concat<T>({state.pending, piece}, 0) : piece;
      if (state.pending_rows() == config_.chunk) flush(state, policy, records);
    }
    i += take;
  }
  return y;
}

#define NEAT_TITANS_INSTANTIATE(T)                                                       \
  template struct MemoryParams<T>;                                                       \
  template struct MemoryState<T>;                                                        \
  template struct MemoryWorkspace<T>;                                                    \
  template class NeuralMemory<T>;                                                        \
  template Tensor<T> memory_apply(const std::vector<Tensor<T>>&, const Tensor<T>&);      \
  template Tensor<T> associative_loss(const std::vector<Tensor<T>>&, const Tensor<T>&,   \
                                      const Tensor<T>&);                                 \
  template std::vector<std::vector<Tensor<T>>> inner_gradients(                          \
      const std::vector<Tensor<T>>&, const Tensor<T>&, const Tensor<T>&,                 \
      const std::vector<Tensor<T>>&, Tensor<T>*);                                        \
  template std::pair<double, double> chunk_surprise(const std::vector<Tensor<T>>&,       \
                                                    const Tensor<T>&, const Tensor<T>&); \
  template ChunkUpdate<T> chunk_update(const std::vector<Tensor<T>>&,                    \
                                       const std::vector<Tensor<T>>&, const Tensor<T>&,  \
                                       const Tensor<T>&, const ChunkGates<T>&);          \
  template std::int64_t tensor_bytes(const std::vector<Tensor<T>>&);

NEAT_TITANS_INSTANTIATE(float)
NEAT_TITANS_INSTANTIATE(double)

}  // namespace neat::titans
