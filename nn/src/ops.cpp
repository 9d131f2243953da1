// Elementwise ops with broadcasting, reductions, shape ops, embedding gather and the matrix
// product. Every op's backward sits right under its forward and is written with ops, so it can
// itself be recorded (create_graph) and differentiated again.
#include "neat/nn/ops.hpp"

#include <cblas.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "internal.hpp"

namespace neat::nn {

using detail::empty;
using detail::Layout4;
using detail::record;

namespace {

template <typename T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

Shape broadcast_shape(const Shape& a, const Shape& b, const char* op) {
  const std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw std::invalid_argument(std::string("neat::nn::") + op + ": shapes " + shape_string(a) +
                                  " and " + shape_string(b) + " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Layout of x read as if broadcast to out_shape (stride 0 on broadcast axes).
template <typename T>
Layout4 broadcast_layout(const Tensor<T>& x, const Shape& out_shape) {
  const std::size_t n = out_shape.size();
  const std::size_t pad = n - x.shape().size();
  Shape shape(n), strides(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    shape[i] = out_shape[i];
    if (i >= pad && x.shape()[i - pad] != 1) strides[i] = x.strides()[i - pad];
  }
  Layout4 l;
  const std::size_t p4 = kMaxDims - n;
  for (std::size_t i = 0; i < n; ++i) {
    l.shape[p4 + i] = shape[i];
    l.strides[p4 + i] = strides[i];
  }
  return l;
}

template <typename T, typename F>
Tensor<T> binary_kernel(const Tensor<T>& a, const Tensor<T>& b, const char* op, F f) {
  const Shape out_shape = broadcast_shape(a.shape(), b.shape(), op);
  Tensor<T> out = empty<T>(out_shape);
  T* o = out.data();
  const T* pa = a.data();
  const T* pb = b.data();
  if (a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous()) {
    const int64_t n = out.numel();
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], pb[i]);
    return out;
  }
  const Layout4 la = broadcast_layout(a, out_shape);
  const Layout4 lb = broadcast_layout(b, out_shape);
  const auto& s = la.shape;
  int64_t idx = 0;
  for (int64_t i0 = 0; i0 < s[0]; ++i0)
    for (int64_t i1 = 0; i1 < s[1]; ++i1)
      for (int64_t i2 = 0; i2 < s[2]; ++i2) {
        const T* ra = pa + i0 * la.strides[0] + i1 * la.strides[1] + i2 * la.strides[2];
        const T* rb = pb + i0 * lb.strides[0] + i1 * lb.strides[1] + i2 * lb.strides[2];
        const int64_t sa = la.strides[3], sb = lb.strides[3];
        for (int64_t i3 = 0; i3 < s[3]; ++i3) o[idx++] = f(ra[i3 * sa], rb[i3 * sb]);
      }
  return out;
}

template <typename T, typename F>
Tensor<T> unary_kernel(const Tensor<T>& x, F f) {
  Tensor<T> out = empty<T>(x.shape());
  T* o = out.data();
  const T* px = x.data();
  if (x.is_contiguous()) {
    const int64_t n = x.numel();
    for (int64_t i = 0; i < n; ++i) o[i] = f(px[i]);
  } else {
    int64_t i = 0;
    detail::for_each_offset(detail::layout4(x.shape(), x.strides()),
                            [&](int64_t off) { o[i++] = f(px[off]); });
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- add, sub, mul, div

template <typename T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = binary_kernel(a, b, "add", [](T x, T y) { return x + y; });
  record<T>(out, "add", {a, b}, [a, b](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{a.requires_grad() ? sum_to(g, a.shape()) : Tensor<T>(),
                                  b.requires_grad() ? sum_to(g, b.shape()) : Tensor<T>()};
  });
  return out;
}

template <typename T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = binary_kernel(a, b, "sub", [](T x, T y) { return x - y; });
  record<T>(out, "sub", {a, b}, [a, b](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{
        a.requires_grad() ? sum_to(g, a.shape()) : Tensor<T>(),
        b.requires_grad() ? sum_to(scale(g, T(-1)), b.shape()) : Tensor<T>()};
  });
  return out;
}

template <typename T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = binary_kernel(a, b, "mul", [](T x, T y) { return x * y; });
  // d(a b) = b da + a db
  record<T>(out, "mul", {a, b}, [a, b](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{a.requires_grad() ? sum_to(mul(g, b), a.shape()) : Tensor<T>(),
                                  b.requires_grad() ? sum_to(mul(g, a), b.shape()) : Tensor<T>()};
  });
  return out;
}

template <typename T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = binary_kernel(a, b, "div", [](T x, T y) { return x / y; });
  // d(a / b) = da / b - a / b^2 db
  record<T>(out, "div", {a, b}, [a, b](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{a.requires_grad() ? sum_to(div(g, b), a.shape()) : Tensor<T>(),
                                  b.requires_grad()
                                      ? sum_to(scale(mul(g, div(a, mul(b, b))), T(-1)), b.shape())
                                      : Tensor<T>()};
  });
  return out;
}

template <typename T>
Tensor<T> scale(const Tensor<T>& x, T factor) {
  Tensor<T> out = unary_kernel(x, [factor](T v) { return v * factor; });
  record<T>(out, "scale", {x},
            [factor](const Tensor<T>& g) { return std::vector<Tensor<T>>{scale(g, factor)}; });
  return out;
}

template <typename T>
Tensor<T> add_scalar(const Tensor<T>& x, T value) {
  Tensor<T> out = unary_kernel(x, [value](T v) { return v + value; });
  record<T>(out, "add_scalar", {x}, [](const Tensor<T>& g) { return std::vector<Tensor<T>>{g}; });
  return out;
}

// ---------------------------------------------------------------- broadcast_to, sum_to

template <typename T>
Tensor<T> broadcast_to(const Tensor<T>& x, const Shape& shape) {
  if (broadcast_shape(x.shape(), shape, "broadcast_to") != shape)
    throw std::invalid_argument("neat::nn::broadcast_to: cannot expand " + shape_string(x.shape()) +
                                " to " + shape_string(shape));
  Tensor<T> out = empty<T>(shape);
  T* o = out.data();
  const T* px = x.data();
  int64_t i = 0;
  detail::for_each_offset(broadcast_layout(x, shape), [&](int64_t off) { o[i++] = px[off]; });
  record<T>(out, "broadcast_to", {x},
            [x](const Tensor<T>& g) { return std::vector<Tensor<T>>{sum_to(g, x.shape())}; });
  return out;
}

template <typename T>
Tensor<T> sum_to(const Tensor<T>& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const std::size_t n = x.shape().size();
  if (shape.size() > n)
    throw std::invalid_argument("neat::nn::sum_to: cannot reduce " + shape_string(x.shape()) +
                                " to " + shape_string(shape));
  const std::size_t pad = n - shape.size();
  std::vector<int64_t> axes;
  for (std::size_t i = 0; i < n; ++i) {
    const int64_t target = i < pad ? 1 : shape[i - pad];
    if (target == 1 && x.shape()[i] != 1)
      axes.push_back(static_cast<int64_t>(i));
    else if (target != x.shape()[i])
      throw std::invalid_argument("neat::nn::sum_to: cannot reduce " + shape_string(x.shape()) +
                                  " to " + shape_string(shape));
  }
  Tensor<T> s = axes.empty() ? x : sum(x, axes, true);
  return reshape(s, shape);
}

// ---------------------------------------------------------------- sum, mean

template <typename T>
Tensor<T> sum(const Tensor<T>& x, const std::vector<int64_t>& axes_in, bool keepdim) {
  const int64_t nd = x.dim();
  std::vector<bool> reduced(nd, axes_in.empty());
  for (int64_t a : axes_in) reduced[detail::normalize_axis(a, nd, "sum")] = true;
  Shape keep_shape(x.shape()), out_shape;
  for (int64_t i = 0; i < nd; ++i) {
    if (reduced[i]) keep_shape[i] = 1;
    if (!reduced[i] || keepdim) out_shape.push_back(keep_shape[i]);
  }
  Tensor<T> out = empty<T>(keep_shape, true);
  T* o = out.data();
  const T* px = x.data();
  const int64_t last = nd > 0 ? x.shape()[nd - 1] : 1;
  if (nd > 0 && x.is_contiguous() && reduced[nd - 1] &&
      std::count(reduced.begin(), reduced.end(), true) == 1) {
    // Row sums over a dense last axis.
    const int64_t rows = x.numel() / std::max<int64_t>(last, 1);
    Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(px, rows,
                                                                                         last);
    ArrayMap<T>(o, rows) = m.rowwise().sum();
  } else {
    Shape out_strides = contiguous_strides(keep_shape);
    for (int64_t i = 0; i < nd; ++i)
      if (reduced[i]) out_strides[i] = 0;
    const Layout4 lx = detail::layout4(x.shape(), x.strides());
    Layout4 lo = detail::layout4(x.shape(), out_strides);
    for (int64_t i = 0; i < nd; ++i)
      if (reduced[i]) lo.strides[kMaxDims - nd + i] = 0;
    const auto& s = lx.shape;
    for (int64_t i0 = 0; i0 < s[0]; ++i0)
      for (int64_t i1 = 0; i1 < s[1]; ++i1)
        for (int64_t i2 = 0; i2 < s[2]; ++i2) {
          const T* rx = px + i0 * lx.strides[0] + i1 * lx.strides[1] + i2 * lx.strides[2];
          T* ro = o + i0 * lo.strides[0] + i1 * lo.strides[1] + i2 * lo.strides[2];
          for (int64_t i3 = 0; i3 < s[3]; ++i3) ro[i3 * lo.strides[3]] += rx[i3 * lx.strides[3]];
        }
  }
  Tensor<T> result = keepdim ? out : reshape(out, out_shape);
  // d sum / dx = 1 on every reduced element: the gradient is broadcast back.
  record<T>(result, "sum", {x}, [x, keep_shape](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{broadcast_to(reshape(g, keep_shape), x.shape())};
  });
  return result;
}

template <typename T>
Tensor<T> mean(const Tensor<T>& x, const std::vector<int64_t>& axes, bool keepdim) {
  int64_t count = 1;
  if (axes.empty())
    count = x.numel();
  else
    for (int64_t a : axes) count *= x.shape()[detail::normalize_axis(a, x.dim(), "mean")];
  return scale(sum(x, axes, keepdim), T(1) / T(std::max<int64_t>(count, 1)));
}

// ---------------------------------------------------------------- reshape, transpose, slice

template <typename T>
Tensor<T> reshape(const Tensor<T>& x, const Shape& shape_in) {
  Shape shape = shape_in;
  int64_t known = 1, infer = -1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw std::invalid_argument("neat::nn::reshape: more than one -1");
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) shape[infer] = known > 0 ? x.numel() / known : 0;
  if (shape_numel(shape) != x.numel())
    throw std::invalid_argument("neat::nn::reshape: cannot view " + shape_string(x.shape()) +
                                " as " + shape_string(shape_in));
  if (shape == x.shape()) return x;
  const Tensor<T> src = x.contiguous();
  Tensor<T> out = detail::make_view(src, shape, contiguous_strides(shape), src.node()->offset);
  record<T>(out, "reshape", {src},
            [src](const Tensor<T>& g) { return std::vector<Tensor<T>>{reshape(g, src.shape())}; });
  return out;
}

template <typename T>
Tensor<T> transpose(const Tensor<T>& x, int64_t a, int64_t b) {
  a = detail::normalize_axis(a, x.dim(), "transpose");
  b = detail::normalize_axis(b, x.dim(), "transpose");
  Shape shape = x.shape(), strides = x.strides();
  std::swap(shape[a], shape[b]);
  std::swap(strides[a], strides[b]);
  Tensor<T> out = detail::make_view(x, shape, strides, x.node()->offset);
  record<T>(out, "transpose", {x},
            [a, b](const Tensor<T>& g) { return std::vector<Tensor<T>>{transpose(g, a, b)}; });
  return out;
}

namespace {
// Gradient of slice: g placed at [start, start + len) of a zero tensor of full_shape.
template <typename T>
Tensor<T> slice_backward(const Tensor<T>& g, const Shape& full_shape, int64_t axis, int64_t start) {
  Tensor<T> out = empty<T>(full_shape, true);
  const int64_t len = g.shape()[axis];
  Tensor<T> region = detail::make_view(out, g.shape(), out.strides(),
                                       out.node()->offset + start * out.strides()[axis]);
  T* o = region.data();
  const T* pg = g.data();
  std::vector<int64_t> offs;
  offs.reserve(g.numel());
  detail::for_each_offset(detail::layout4(g.shape(), region.strides()),
                          [&](int64_t off) { offs.push_back(off); });
  std::size_t i = 0;
  detail::for_each_offset(detail::layout4(g.shape(), g.strides()),
                          [&](int64_t off) { o[offs[i++]] = pg[off]; });
  record<T>(out, "slice_backward", {g}, [axis, start, len](const Tensor<T>& gg) {
    return std::vector<Tensor<T>>{slice(gg, axis, start, start + len)};
  });
  return out;
}
}  // namespace

template <typename T>
Tensor<T> slice(const Tensor<T>& x, int64_t axis, int64_t start, int64_t end) {
  axis = detail::normalize_axis(axis, x.dim(), "slice");
  const int64_t n = x.shape()[axis];
  if (start < 0 || end > n || start > end)
    throw std::invalid_argument("neat::nn::slice: [" + std::to_string(start) + ", " +
                                std::to_string(end) + ") outside axis " + std::to_string(axis) +
                                " of " + shape_string(x.shape()));
  Shape shape = x.shape();
  shape[axis] = end - start;
  Tensor<T> out =
      detail::make_view(x, shape, x.strides(), x.node()->offset + start * x.strides()[axis]);
  const Shape full = x.shape();
  record<T>(out, "slice", {x}, [full, axis, start](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{slice_backward(g, full, axis, start)};
  });
  return out;
}

template <typename T>
Tensor<T> concat(const std::vector<Tensor<T>>& xs, int64_t axis) {
  if (xs.empty()) throw std::invalid_argument("neat::nn::concat: no tensors");
  axis = detail::normalize_axis(axis, xs[0].dim(), "concat");
  Shape shape = xs[0].shape();
  shape[axis] = 0;
  for (const auto& x : xs) {
    Shape s = x.shape();
    s[axis] = 0;
    Shape ref = xs[0].shape();
    ref[axis] = 0;
    if (s != ref)
      throw std::invalid_argument("neat::nn::concat: shape " + shape_string(x.shape()) +
                                  " does not match " + shape_string(xs[0].shape()));
    shape[axis] += x.shape()[axis];
  }
  Tensor<T> out = empty<T>(shape);
  std::vector<int64_t> starts;
  int64_t at = 0;
  for (const auto& x : xs) {
    starts.push_back(at);
    Tensor<T> region = detail::make_view(out, x.shape(), out.strides(), at * out.strides()[axis]);
    std::vector<T> v = x.to_vector();
    T* o = region.data();
    std::size_t i = 0;
    detail::for_each_offset(detail::layout4(x.shape(), region.strides()),
                            [&](int64_t off) { o[off] = v[i++]; });
    at += x.shape()[axis];
  }
  record<T>(out, "concat", xs, [xs, starts, axis](const Tensor<T>& g) {
    std::vector<Tensor<T>> grads;
    for (std::size_t i = 0; i < xs.size(); ++i)
      grads.push_back(xs[i].requires_grad()
                          ? slice(g, axis, starts[i], starts[i] + xs[i].shape()[axis])
                          : Tensor<T>());
    return grads;
  });
  return out;
}

// ---------------------------------------------------------------- gather_rows (embedding)

template <typename T>
Tensor<T> gather_rows(const Tensor<T>& weight_in, const std::vector<int32_t>& indices,
                      const Shape& index_shape) {
  if (weight_in.dim() != 2)
    throw std::invalid_argument("neat::nn::gather_rows: weight must be (V, C), got " +
                                shape_string(weight_in.shape()));
  if (shape_numel(index_shape) != static_cast<int64_t>(indices.size()))
    throw std::invalid_argument("neat::nn::gather_rows: " + std::to_string(indices.size()) +
                                " indices for index shape " + shape_string(index_shape));
  const Tensor<T> weight = weight_in.contiguous();
  const int64_t V = weight.shape()[0], C = weight.shape()[1];
  Shape shape = index_shape;
  shape.push_back(C);
  Tensor<T> out = empty<T>(shape);
  const T* w = weight.data();
  T* o = out.data();
  for (std::size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] < 0 || indices[i] >= V)
      throw std::out_of_range("neat::nn::gather_rows: index " + std::to_string(indices[i]) +
                              " outside [0, " + std::to_string(V) + ")");
    std::memcpy(o + i * C, w + indices[i] * C, C * sizeof(T));
  }
  record<T>(out, "gather_rows", {weight}, [indices, V, C](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{
        scatter_add_rows(reshape(g, {static_cast<int64_t>(indices.size()), C}), indices, V)};
  });
  return out;
}

template <typename T>
Tensor<T> scatter_add_rows(const Tensor<T>& grad_in, const std::vector<int32_t>& indices,
                           int64_t num_rows) {
  const Tensor<T> g = grad_in.contiguous();
  if (g.dim() != 2 || g.shape()[0] != static_cast<int64_t>(indices.size()))
    throw std::invalid_argument("neat::nn::scatter_add_rows: grad " + shape_string(g.shape()) +
                                " for " + std::to_string(indices.size()) + " indices");
  const int64_t C = g.shape()[1];
  Tensor<T> out = empty<T>({num_rows, C}, true);
  T* o = out.data();
  const T* pg = g.data();
  for (std::size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] < 0 || indices[i] >= num_rows)
      throw std::out_of_range("neat::nn::scatter_add_rows: index out of range");
    ArrayMap<T>(o + indices[i] * C, C) += ConstArrayMap<T>(pg + i * C, C);
  }
  const Shape index_shape{static_cast<int64_t>(indices.size())};
  record<T>(out, "scatter_add_rows", {g}, [indices, index_shape](const Tensor<T>& gg) {
    return std::vector<Tensor<T>>{gather_rows(gg, indices, index_shape)};
  });
  return out;
}

// ---------------------------------------------------------------- matmul

namespace {

inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), 1.0f, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), 0.0f, C, static_cast<int>(ldc));
}
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
                 const double* B, int64_t ldb, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), 1.0, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), 0.0, C, static_cast<int>(ldc));
}

// A matrix operand as BLAS sees it: base pointer, transpose flag, leading dimension and the
// offset of every batch matrix.
template <typename T>
struct MatOperand {
  Tensor<T> keep;
  bool trans = false;
  int64_t ld = 0;
  std::vector<int64_t> batch_offsets;
};

template <typename T>
MatOperand<T> mat_operand(const Tensor<T>& x) {
  MatOperand<T> m;
  const int64_t nd = x.dim();
  const int64_t rows = x.shape()[nd - 2], cols = x.shape()[nd - 1];
  const int64_t rs = x.strides()[nd - 2], cs = x.strides()[nd - 1];
  if ((cs == 1 || cols == 1) && (rs >= std::max<int64_t>(cols, 1) || rows == 1)) {
    m.keep = x;
    m.ld = rows == 1 ? std::max<int64_t>(cols, 1) : rs;
  } else if ((rs == 1 || rows == 1) && (cs >= std::max<int64_t>(rows, 1) || cols == 1)) {
    m.keep = x;
    m.trans = true;
    m.ld = cols == 1 ? std::max<int64_t>(rows, 1) : cs;
  } else {
    m.keep = x.contiguous();
    m.ld = std::max<int64_t>(cols, 1);
  }
  Shape bshape(m.keep.shape().begin(), m.keep.shape().end() - 2);
  Shape bstrides(m.keep.strides().begin(), m.keep.strides().end() - 2);
  detail::for_each_offset(detail::layout4(bshape, bstrides),
                          [&](int64_t off) { m.batch_offsets.push_back(off); });
  return m;
}

}  // namespace

template <typename T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
  if (a.dim() < 2 || b.dim() < 2)
    throw std::invalid_argument("neat::nn::matmul: operands must be at least 2-D, got " +
                                shape_string(a.shape()) + " @ " + shape_string(b.shape()));
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const bool shared_b = b.dim() == 2;
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2);
  const Shape b_batch(b.shape().begin(), b.shape().end() - 2);
  if (b.size(-2) != K || (!shared_b && a_batch != b_batch))
    throw std::invalid_argument("neat::nn::matmul: shapes " + shape_string(a.shape()) + " @ " +
                                shape_string(b.shape()) + " do not match");
  Shape shape = a_batch;
  shape.push_back(M);
  shape.push_back(N);
  Tensor<T> out = empty<T>(shape);
  if (out.numel() > 0) {
    if (K == 0) {
      std::fill_n(out.data(), out.numel(), T(0));
    } else {
      const MatOperand<T> A = mat_operand(a);
      const MatOperand<T> B = mat_operand(b);
      const T* pa = A.keep.data();
      const T* pb = B.keep.data();
      T* o = out.data();
      const int64_t batches = static_cast<int64_t>(A.batch_offsets.size());
      if (shared_b && !A.trans && A.keep.is_contiguous()) {
        // One product: (batches * M, K) @ (K, N).
        gemm(false, B.trans, batches * M, N, K, pa, A.ld, pb, B.ld, o, N);
      } else {
        for (int64_t i = 0; i < batches; ++i)
          gemm(A.trans, B.trans, M, N, K, pa + A.batch_offsets[i], A.ld,
               pb + (shared_b ? 0 : B.batch_offsets[i]), B.ld, o + i * M * N, N);
      }
    }
  }
  // dA = dC B^T, dB = A^T dC (summed over batches when B is shared).
  record<T>(out, "matmul", {a, b}, [a, b, shared_b, K, N](const Tensor<T>& g) {
    Tensor<T> ga, gb;
    if (a.requires_grad()) ga = matmul(g, transpose(b, -2, -1));
    if (b.requires_grad()) {
      if (shared_b && a.dim() > 2)
        gb = matmul(transpose(reshape(a, {-1, K}), 0, 1), reshape(g, {-1, N}));
      else
        gb = matmul(transpose(a, -2, -1), g);
    }
    return std::vector<Tensor<T>>{ga, gb};
  });
  return out;
}

template <typename T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias) {
  if (weight.dim() != 2 || x.size(-1) != weight.shape()[1])
    throw std::invalid_argument("neat::nn::linear: input " + shape_string(x.shape()) +
                                " with weight " + shape_string(weight.shape()));
  Tensor<T> y = matmul(x, transpose(weight, 0, 1));
  return bias.defined() ? add(y, bias) : y;
}

#define NEAT_NN_INSTANTIATE(T)                                                                 \
  template Tensor<T> add(const Tensor<T>&, const Tensor<T>&);                                  \
  template Tensor<T> sub(const Tensor<T>&, const Tensor<T>&);                                  \
  template Tensor<T> mul(const Tensor<T>&, const Tensor<T>&);                                  \
  template Tensor<T> div(const Tensor<T>&, const Tensor<T>&);                                  \
  template Tensor<T> scale(const Tensor<T>&, T);                                               \
  template Tensor<T> add_scalar(const Tensor<T>&, T);                                          \
  template Tensor<T> broadcast_to(const Tensor<T>&, const Shape&);                             \
  template Tensor<T> sum_to(const Tensor<T>&, const Shape&);                                   \
  template Tensor<T> sum(const Tensor<T>&, const std::vector<int64_t>&, bool);                 \
  template Tensor<T> mean(const Tensor<T>&, const std::vector<int64_t>&, bool);                \
  template Tensor<T> reshape(const Tensor<T>&, const Shape&);                                  \
  template Tensor<T> transpose(const Tensor<T>&, int64_t, int64_t);                            \
  template Tensor<T> slice(const Tensor<T>&, int64_t, int64_t, int64_t);                       \
  template Tensor<T> concat(const std::vector<Tensor<T>>&, int64_t);                           \
  template Tensor<T> gather_rows(const Tensor<T>&, const std::vector<int32_t>&, const Shape&); \
  template Tensor<T> scatter_add_rows(const Tensor<T>&, const std::vector<int32_t>&, int64_t); \
  template Tensor<T> matmul(const Tensor<T>&, const Tensor<T>&);                               \
  template Tensor<T> linear(const Tensor<T>&, const Tensor<T>&, const Tensor<T>&);

NEAT_NN_INSTANTIATE(float)
NEAT_NN_INSTANTIATE(double)

}  // namespace neat::nn
