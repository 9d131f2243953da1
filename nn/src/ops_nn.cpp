// Activations (with their derivatives as ops), softmax, log-softmax, cross-entropy, RMSNorm,
// LayerNorm, fused causal attention and dropout. Each backward sits right under its forward;
// docs/nn.md lists the equations.
#include <cblas.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "internal.hpp"
#include "neat/nn/ops.hpp"

namespace neat::nn {

using detail::empty;
using detail::record;
using detail::record_fused;

namespace {

template <typename T>
using RowMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ConstRowMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// f^(order)(x) for each activation; derivations in docs/nn.md.
template <typename T>
T activation_value(Activation kind, int order, T x) {
  switch (kind) {
    case Activation::exp:
      return std::exp(x);
    case Activation::log:
      switch (order) {
        case 0:
          return std::log(x);
        case 1:
          return T(1) / x;
        case 2:
          return T(-1) / (x * x);
        default:
          return T(2) / (x * x * x);
      }
    case Activation::tanh: {
      const T t = std::tanh(x), p = T(1) - t * t;
      switch (order) {
        case 0:
          return t;
        case 1:
          return p;
        case 2:
          return T(-2) * t * p;
        default:
          return p * (T(6) * t * t - T(2));
      }
    }
    case Activation::sigmoid: {
      const T s = T(1) / (T(1) + std::exp(-x)), a = s * (T(1) - s);
      switch (order) {
        case 0:
          return s;
        case 1:
          return a;
        case 2:
          return a * (T(1) - T(2) * s);
        default:
          return a * (T(1) - T(6) * s + T(6) * s * s);
      }
    }
    case Activation::silu: {
      const T s = T(1) / (T(1) + std::exp(-x)), a = s * (T(1) - s), r = T(1) - T(2) * s;
      switch (order) {
        case 0:
          return x * s;
        case 1:
          return s * (T(1) + x * (T(1) - s));
        case 2:
          return a * (T(2) + x * r);
        default:
          return a * (r * (T(2) + x * r) + r - T(2) * x * a);
      }
    }
    case Activation::gelu: {
      const T c = T(0.7978845608028654), k = T(0.044715);
      const T u = c * (x + k * x * x * x), u1 = c * (T(1) + T(3) * k * x * x);
      const T u2 = T(6) * c * k * x, u3 = T(6) * c * k;
      const T t = std::tanh(u), p = T(1) - t * t;
      switch (order) {
        case 0:
          return T(0.5) * x * (T(1) + t);
        case 1:
          return T(0.5) * (T(1) + t) + T(0.5) * x * p * u1;
        case 2:
          return p * (u1 + T(0.5) * x * (u2 - T(2) * t * u1 * u1));
        default: {
          const T dp = T(-2) * t * p * u1;
          const T q = u1 + T(0.5) * x * u2 - x * t * u1 * u1;
          const T dq = T(1.5) * u2 + T(0.5) * x * u3 - t * u1 * u1 - x * p * u1 * u1 * u1 -
                       T(2) * x * t * u1 * u2;
          return dp * q + p * dq;
        }
      }
    }
  }
  return T(0);
}

// The hot cases of training (f and f' of gelu, tanh, silu, sigmoid, exp) as Eigen array
// expressions, which vectorise tanh and exp; the same formulas as activation_value.
template <typename T>
bool activation_vectorized(Activation kind, int order, const T* px, T* o, int64_t n) {
  if (order > 1) return false;
  ConstRowMap<T> x(px, n);
  RowMap<T> y(o, n);
  switch (kind) {
    case Activation::exp:
      y = x.exp();
      return true;
    case Activation::tanh:
      if (order == 0)
        y = x.tanh();
      else
        y = T(1) - x.tanh().square();
      return true;
    case Activation::sigmoid:
      if (order == 0)
        y = (T(1) + (-x).exp()).inverse();
      else
        y = (T(1) + (-x).exp()).inverse() * (T(1) - (T(1) + (-x).exp()).inverse());
      return true;
    case Activation::silu:
      if (order == 0) {
        y = x * (T(1) + (-x).exp()).inverse();
      } else {
        const Eigen::Array<T, Eigen::Dynamic, 1> sg = (T(1) + (-x).exp()).inverse();
        y = sg * (T(1) + x * (T(1) - sg));
      }
      return true;
    case Activation::gelu: {
      const T c = T(0.7978845608028654), k = T(0.044715);
      const Eigen::Array<T, Eigen::Dynamic, 1> t = (c * (x + k * x.cube())).tanh();
      if (order == 0)
        y = T(0.5) * x * (T(1) + t);
      else
        y = T(0.5) * (T(1) + t) +
            T(0.5) * x * (T(1) - t.square()) * (c * (T(1) + T(3) * k * x.square()));
      return true;
    }
    case Activation::log:
      return false;
  }
  return false;
}

const char* activation_op_name(Activation kind, int order) {
  static const char* names[6][4] = {{"exp", "exp", "exp", "exp"},
                                    {"log", "log_grad", "log_grad2", "log_grad3"},
                                    {"tanh", "tanh_grad", "tanh_grad2", "tanh_grad3"},
                                    {"sigmoid", "sigmoid_grad", "sigmoid_grad2", "sigmoid_grad3"},
                                    {"silu", "silu_grad", "silu_grad2", "silu_grad3"},
                                    {"gelu", "gelu_grad", "gelu_grad2", "gelu_grad3"}};
  return names[static_cast<int>(kind)][order];
}

// Rows of the last axis of a contiguous tensor.
template <typename T>
int64_t row_count(const Tensor<T>& x) {
  return x.numel() / std::max<int64_t>(x.size(-1), 1);
}

}  // namespace

// ---------------------------------------------------------------- activations

template <typename T>
Tensor<T> activation(const Tensor<T>& x_in, Activation kind, int order) {
  if (order < 0 || order > 3)
    throw std::invalid_argument("neat::nn::activation: derivative order " + std::to_string(order) +
                                " outside 0..3");
  const Tensor<T> x = x_in.contiguous();
  Tensor<T> out = empty<T>(x.shape());
  const T* px = x.data();
  T* o = out.data();
  const int64_t n = x.numel();
  if (!activation_vectorized(kind, order, px, o, n))
    for (int64_t i = 0; i < n; ++i) o[i] = activation_value(kind, order, px[i]);
  const char* name = activation_op_name(kind, order);
  // d f^(k)(x) = f^(k+1)(x) dx
  record<T>(out, name, {x}, [x, kind, order, name](const Tensor<T>& g) {
    if (order == 3)
      throw std::logic_error(std::string("neat::nn: ") + name +
                             " is the highest derivative implemented");
    return std::vector<Tensor<T>>{mul(g, activation(x, kind, order + 1))};
  });
  return out;
}

// ---------------------------------------------------------------- softmax, log_softmax

template <typename T>
Tensor<T> softmax(const Tensor<T>& x_in) {
  const Tensor<T> x = x_in.contiguous();
  const int64_t C = x.size(-1), N = row_count(x);
  Tensor<T> y = empty<T>(x.shape());
  for (int64_t r = 0; r < N; ++r) {
    ConstRowMap<T> in(x.data() + r * C, C);
    RowMap<T> out(y.data() + r * C, C);
    out = (in - in.maxCoeff()).exp();
    out /= out.sum();
  }
  // dx = y * (g - sum(g * y))
  const Tensor<T> yd = y.detach();
  record_fused<T>(y, "softmax", {x}, [yd, C, N](const Tensor<T>& g_in) {
    const Tensor<T> g = g_in.contiguous();
    Tensor<T> dx = empty<T>(yd.shape());
    for (int64_t r = 0; r < N; ++r) {
      ConstRowMap<T> yr(yd.data() + r * C, C), gr(g.data() + r * C, C);
      RowMap<T>(dx.data() + r * C, C) = yr * (gr - (gr * yr).sum());
    }
    return std::vector<Tensor<T>>{dx};
  });
  return y;
}

template <typename T>
Tensor<T> log_softmax(const Tensor<T>& x_in) {
  const Tensor<T> x = x_in.contiguous();
  const int64_t C = x.size(-1), N = row_count(x);
  Tensor<T> y = empty<T>(x.shape());
  for (int64_t r = 0; r < N; ++r) {
    ConstRowMap<T> in(x.data() + r * C, C);
    const T m = in.maxCoeff();
    const T lse = m + std::log((in - m).exp().sum());
    RowMap<T>(y.data() + r * C, C) = in - lse;
  }
  // dx = g - softmax(x) * sum(g)
  const Tensor<T> yd = y.detach();
  record_fused<T>(y, "log_softmax", {x}, [yd, C, N](const Tensor<T>& g_in) {
    const Tensor<T> g = g_in.contiguous();
    Tensor<T> dx = empty<T>(yd.shape());
    for (int64_t r = 0; r < N; ++r) {
      ConstRowMap<T> yr(yd.data() + r * C, C), gr(g.data() + r * C, C);
      RowMap<T>(dx.data() + r * C, C) = gr - yr.exp() * gr.sum();
    }
    return std::vector<Tensor<T>>{dx};
  });
  return y;
}

// ---------------------------------------------------------------- cross_entropy

template <typename T>
Tensor<T> cross_entropy(const Tensor<T>& logits_in, const std::vector<int32_t>& targets,
                        const CrossEntropyOptions& options) {
  const Tensor<T> logits = logits_in.contiguous();
  const int64_t V = logits.size(-1), N = row_count(logits);
  if (static_cast<int64_t>(targets.size()) != N)
    throw std::invalid_argument("neat::nn::cross_entropy: " + std::to_string(targets.size()) +
                                " targets for logits " + shape_string(logits.shape()));
  const T eps = T(options.label_smoothing);
  std::vector<T> lse(N);
  T total = 0;
  int64_t count = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (targets[r] == options.ignore_index) continue;
    if (targets[r] < 0 || targets[r] >= V)
      throw std::out_of_range("neat::nn::cross_entropy: target " + std::to_string(targets[r]) +
                              " outside [0, " + std::to_string(V) + ")");
    ConstRowMap<T> x(logits.data() + r * V, V);
    const T m = x.maxCoeff();
    lse[r] = m + std::log((x - m).exp().sum());
    const T nll = lse[r] - x[targets[r]];
    const T smooth = lse[r] - x.mean();  // mean over classes of -log p
    total += (T(1) - eps) * nll + eps * smooth;
    ++count;
  }
  Tensor<T> loss = Tensor<T>::scalar(count > 0 ? total / T(count) : T(0));
  // dlogits = g / count * (softmax - ((1 - e) one_hot + e / V)) on non-ignored rows
  record_fused<T>(loss, "cross_entropy", {logits},
                  [logits, targets, lse, count, eps, V, N, options](const Tensor<T>& g) {
                    Tensor<T> dx = empty<T>(logits.shape(), true);
                    if (count == 0) return std::vector<Tensor<T>>{dx};
                    const T s = g.item() / T(count);
                    for (int64_t r = 0; r < N; ++r) {
                      if (targets[r] == options.ignore_index) continue;
                      ConstRowMap<T> x(logits.data() + r * V, V);
                      RowMap<T> d(dx.data() + r * V, V);
                      d = ((x - lse[r]).exp() - eps / T(V)) * s;
                      d[targets[r]] -= (T(1) - eps) * s;
                    }
                    return std::vector<Tensor<T>>{dx};
                  });
  return loss;
}

// ---------------------------------------------------------------- rms_norm, layer_norm

template <typename T>
Tensor<T> rms_norm(const Tensor<T>& x_in, const Tensor<T>& weight_in, T eps) {
  const Tensor<T> x = x_in.contiguous(), w = weight_in.contiguous();
  const int64_t C = x.size(-1), N = row_count(x);
  if (w.dim() != 1 || w.shape()[0] != C)
    throw std::invalid_argument("neat::nn::rms_norm: input " + shape_string(x.shape()) +
                                " with weight " + shape_string(w.shape()));
  Tensor<T> y = empty<T>(x.shape());
  std::vector<T> rstd(N);
  ConstRowMap<T> wr(w.data(), C);
  for (int64_t r = 0; r < N; ++r) {
    ConstRowMap<T> xr(x.data() + r * C, C);
    rstd[r] = T(1) / std::sqrt(xr.square().mean() + eps);
    RowMap<T>(y.data() + r * C, C) = xr * rstd[r] * wr;
  }
  // dx = rstd (g w) - x rstd^3 / C sum(g w x);  dw = sum_rows g x rstd
  record_fused<T>(y, "rms_norm", {x, w}, [x, w, rstd, C, N](const Tensor<T>& g_in) {
    const Tensor<T> g = g_in.contiguous();
    Tensor<T> dx, dw;
    ConstRowMap<T> wr(w.data(), C);
    if (x.requires_grad()) {
      dx = empty<T>(x.shape());
      for (int64_t r = 0; r < N; ++r) {
        ConstRowMap<T> xr(x.data() + r * C, C), gr(g.data() + r * C, C);
        const T dot = (gr * wr * xr).sum();
        RowMap<T>(dx.data() + r * C, C) =
            rstd[r] * gr * wr - xr * (rstd[r] * rstd[r] * rstd[r] / T(C) * dot);
      }
    }
    if (w.requires_grad()) {
      dw = empty<T>(w.shape(), true);
      RowMap<T> dwr(dw.data(), C);
      for (int64_t r = 0; r < N; ++r)
        dwr += ConstRowMap<T>(g.data() + r * C, C) * ConstRowMap<T>(x.data() + r * C, C) * rstd[r];
    }
    return std::vector<Tensor<T>>{dx, dw};
  });
  return y;
}

template <typename T>
Tensor<T> layer_norm(const Tensor<T>& x_in, const Tensor<T>& weight_in, const Tensor<T>& bias_in,
                     T eps) {
  const Tensor<T> x = x_in.contiguous(), w = weight_in.contiguous(), b = bias_in.contiguous();
  const int64_t C = x.size(-1), N = row_count(x);
  if (w.dim() != 1 || w.shape()[0] != C || b.dim() != 1 || b.shape()[0] != C)
    throw std::invalid_argument("neat::nn::layer_norm: input " + shape_string(x.shape()) +
                                " with weight " + shape_string(w.shape()) + " and bias " +
                                shape_string(b.shape()));
  Tensor<T> y = empty<T>(x.shape());
  Tensor<T> xhat = empty<T>(x.shape());
  std::vector<T> rstd(N);
  ConstRowMap<T> wr(w.data(), C), br(b.data(), C);
  for (int64_t r = 0; r < N; ++r) {
    ConstRowMap<T> xr(x.data() + r * C, C);
    const T mu = xr.mean();
    const T var = (xr - mu).square().mean();
    rstd[r] = T(1) / std::sqrt(var + eps);
    RowMap<T> h(xhat.data() + r * C, C);
    h = (xr - mu) * rstd[r];
    RowMap<T>(y.data() + r * C, C) = h * wr + br;
  }
  // dx = rstd (g w - mean(g w) - xhat mean(g w xhat));  dw = sum g xhat;  db = sum g
  record_fused<T>(y, "layer_norm", {x, w, b}, [x, w, b, xhat, rstd, C, N](const Tensor<T>& g_in) {
    const Tensor<T> g = g_in.contiguous();
    Tensor<T> dx, dw, db;
    ConstRowMap<T> wr(w.data(), C);
    if (x.requires_grad()) {
      dx = empty<T>(x.shape());
      for (int64_t r = 0; r < N; ++r) {
        ConstRowMap<T> h(xhat.data() + r * C, C), gr(g.data() + r * C, C);
        const Eigen::Array<T, Eigen::Dynamic, 1> gw = gr * wr;
        RowMap<T>(dx.data() + r * C, C) = rstd[r] * (gw - gw.mean() - h * (gw * h).mean());
      }
    }
    if (w.requires_grad() || b.requires_grad()) {
      dw = empty<T>(w.shape(), true);
      db = empty<T>(b.shape(), true);
      RowMap<T> dwr(dw.data(), C), dbr(db.data(), C);
      for (int64_t r = 0; r < N; ++r) {
        ConstRowMap<T> gr(g.data() + r * C, C);
        dwr += gr * ConstRowMap<T>(xhat.data() + r * C, C);
        dbr += gr;
      }
      if (!w.requires_grad()) dw = Tensor<T>();
      if (!b.requires_grad()) db = Tensor<T>();
    }
    return std::vector<Tensor<T>>{dx, dw, db};
  });
  return y;
}

// ---------------------------------------------------------------- causal_attention

namespace {

inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                 int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}

// A (B, T, C) operand whose last axis is dense: batch stride and row stride.
template <typename T>
Tensor<T> dense_rows(const Tensor<T>& x) {
  if (x.dim() == 3 && (x.strides()[2] == 1 || x.shape()[2] == 1)) return x;
  return x.contiguous();
}

}  // namespace

template <typename T>
Tensor<T> causal_attention(const Tensor<T>& q_in, const Tensor<T>& k_in, const Tensor<T>& v_in,
                           int64_t heads, int64_t window) {
  if (q_in.dim() != 3 || k_in.dim() != 3 || v_in.dim() != 3 || k_in.shape() != v_in.shape() ||
      q_in.shape()[0] != k_in.shape()[0] || q_in.shape()[2] != k_in.shape()[2] || heads <= 0 ||
      q_in.shape()[2] % heads != 0 || q_in.shape()[1] > k_in.shape()[1] || window < 0)
    throw std::invalid_argument("neat::nn::causal_attention: q " + shape_string(q_in.shape()) +
                                ", k " + shape_string(k_in.shape()) + ", v " +
                                shape_string(v_in.shape()) + " with " + std::to_string(heads) +
                                " heads");
  const Tensor<T> q = dense_rows(q_in), k = dense_rows(k_in), v = dense_rows(v_in);
  const int64_t B = q.shape()[0], Tq = q.shape()[1], Tk = k.shape()[1], C = q.shape()[2];
  const int64_t H = heads, D = C / H;
  const T scale = T(1) / std::sqrt(T(D));
  const int64_t sbq = q.strides()[0], stq = q.strides()[1];
  const int64_t sbk = k.strides()[0], stk = k.strides()[1];
  const int64_t sbv = v.strides()[0], stv = v.strides()[1];
  Tensor<T> out = empty<T>({B, Tq, C});
  Tensor<T> probs = empty<T>({B, H, Tq, Tk});  // P = softmax(mask(Q K^T / sqrt(D)))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const T* Q = q.data() + b * sbq + h * D;
      const T* K = k.data() + b * sbk + h * D;
      const T* Vp = v.data() + b * sbv + h * D;
      T* P = probs.data() + (b * H + h) * Tq * Tk;
      gemm(false, true, Tq, Tk, D, scale, Q, stq, K, stk, T(0), P, Tk);
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t pos = Tk - Tq + i;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
        T* row = P + i * Tk;
        RowMap<T> live(row + lo, pos - lo + 1);
        live = (live - live.maxCoeff()).exp();
        live /= live.sum();
        std::fill(row, row + lo, T(0));
        std::fill(row + pos + 1, row + Tk, T(0));
      }
      gemm(false, false, Tq, D, Tk, T(1), P, Tk, Vp, stv, T(0), out.data() + b * Tq * C + h * D, C);
    }
  // dP = dO V^T;  dS = P (dP - rowsum(P dP)) / sqrt(D);  dQ = dS K;  dK = dS^T Q;  dV = P^T dO
  record_fused<T>(out, "causal_attention", {q, k, v},
                  [q, k, v, probs, B, Tq, Tk, C, H, D, scale](const Tensor<T>& g_in) {
                    const Tensor<T> g = g_in.contiguous();
                    Tensor<T> dq = empty<T>(q.shape()), dk = empty<T>(k.shape()),
                              dv = empty<T>(v.shape());
                    std::vector<T> ds(Tq * Tk);
                    const int64_t sbq = q.strides()[0], stq = q.strides()[1];
                    const int64_t sbk = k.strides()[0], stk = k.strides()[1];
                    const int64_t sbv = v.strides()[0], stv = v.strides()[1];
                    for (int64_t b = 0; b < B; ++b)
                      for (int64_t h = 0; h < H; ++h) {
                        const T* Q = q.data() + b * sbq + h * D;
                        const T* K = k.data() + b * sbk + h * D;
                        const T* Vp = v.data() + b * sbv + h * D;
                        const T* P = probs.data() + (b * H + h) * Tq * Tk;
                        const T* dO = g.data() + b * Tq * C + h * D;
                        gemm(false, true, Tq, Tk, D, T(1), dO, C, Vp, stv, T(0), ds.data(), Tk);
                        for (int64_t i = 0; i < Tq; ++i) {
                          ConstRowMap<T> pr(P + i * Tk, Tk);
                          RowMap<T> dr(ds.data() + i * Tk, Tk);
                          const T dot = (pr * dr).sum();
                          dr = pr * (dr - dot) * scale;
                        }
                        gemm(false, false, Tq, D, Tk, T(1), ds.data(), Tk, K, stk, T(0),
                             dq.data() + b * Tq * C + h * D, C);
                        gemm(true, false, Tk, D, Tq, T(1), ds.data(), Tk, Q, stq, T(0),
                             dk.data() + b * Tk * C + h * D, C);
                        gemm(true, false, Tk, D, Tq, T(1), P, Tk, dO, C, T(0),
                             dv.data() + b * Tk * C + h * D, C);
                      }
                    return std::vector<Tensor<T>>{dq, dk, dv};
                  });
  return out;
}

// ---------------------------------------------------------------- dropout

template <typename T>
Tensor<T> dropout(const Tensor<T>& x, double p, std::mt19937_64& rng) {
  if (p < 0 || p >= 1)
    throw std::invalid_argument("neat::nn::dropout: p = " + std::to_string(p) + " outside [0, 1)");
  if (p == 0) return x;
  Tensor<T> mask = empty<T>(x.shape());
  std::bernoulli_distribution keep(1 - p);
  const T kept = T(1) / T(1 - p);
  T* m = mask.data();
  for (int64_t i = 0; i < mask.numel(); ++i) m[i] = keep(rng) ? kept : T(0);
  return mul(x, mask);  // backward: g * mask (recorded by mul)
}

#define NEAT_NN_INSTANTIATE(T)                                                              \
  template Tensor<T> activation(const Tensor<T>&, Activation, int);                         \
  template Tensor<T> softmax(const Tensor<T>&);                                             \
  template Tensor<T> log_softmax(const Tensor<T>&);                                         \
  template Tensor<T> cross_entropy(const Tensor<T>&, const std::vector<int32_t>&,           \
                                   const CrossEntropyOptions&);                             \
  template Tensor<T> rms_norm(const Tensor<T>&, const Tensor<T>&, T);                       \
  template Tensor<T> layer_norm(const Tensor<T>&, const Tensor<T>&, const Tensor<T>&, T);   \
  template Tensor<T> causal_attention(const Tensor<T>&, const Tensor<T>&, const Tensor<T>&, \
                                      int64_t, int64_t);                                    \
  template Tensor<T> dropout(const Tensor<T>&, double, std::mt19937_64&);

NEAT_NN_INSTANTIATE(float)
NEAT_NN_INSTANTIATE(double)

}  // namespace neat::nn
