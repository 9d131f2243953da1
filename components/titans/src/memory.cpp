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

#define NEAT_TITANS_INSTANTIATE(T)                                                       \
  template struct MemoryParams<T>;                                                       \
  template struct MemoryState<T>;                                                        \
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
