// Optimizer steps, gradient clipping and learning-rate schedules.
#include "neat/nn/optim.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace neat::nn {

namespace {
template <typename T>
using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

template <typename T>
bool has_gradient(const Tensor<T>& p) {
  return p.requires_grad() && p.grad().defined();
}

template <typename T>
void require_contiguous(const Tensor<T>& p) {
  if (!p.is_contiguous())
    throw std::invalid_argument("neat::nn::Optimizer: parameter of shape " +
                                shape_string(p.shape()) + " is a strided view");
}
}  // namespace

template <typename T>
Optimizer<T>::Optimizer(std::vector<Tensor<T>> parameters, double lr)
    : parameters_(std::move(parameters)), lr_(lr) {
  for (const auto& p : parameters_) require_contiguous(p);
}

template <typename T>
void Optimizer<T>::zero_grad() {
  for (auto& p : parameters_) p.zero_grad();
}

template <typename T>
SGD<T>::SGD(std::vector<Tensor<T>> parameters, const SgdOptions& options)
    : Optimizer<T>(std::move(parameters), options.lr), options_(options) {
  for (const auto& p : this->parameters_) velocity_.emplace_back(p.numel(), T(0));
}

template <typename T>
void SGD<T>::step() {
  const T lr = static_cast<T>(this->lr_), mu = static_cast<T>(options_.momentum);
  const T wd = static_cast<T>(options_.weight_decay);
  for (std::size_t i = 0; i < this->parameters_.size(); ++i) {
    Tensor<T>& p = this->parameters_[i];
    if (!has_gradient(p)) continue;
    const Tensor<T> g_t = p.grad().contiguous();
    Vec<T> w(p.data(), p.numel());
    Eigen::Array<T, Eigen::Dynamic, 1> g =
        Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(g_t.data(), p.numel());
    if (wd != 0) g += wd * w;
    if (mu != 0) {
      Vec<T> v(velocity_[i].data(), p.numel());
      v = mu * v + g;
      if (options_.nesterov)
        g += mu * v;
      else
        g = v;
    }
    w -= lr * g;
  }
  ++this->steps_;
}

template <typename T>
AdamW<T>::AdamW(std::vector<Tensor<T>> parameters, const AdamWOptions& options)
    : Optimizer<T>(std::move(parameters), options.lr), options_(options) {
  for (const auto& p : this->parameters_) {
    m_.emplace_back(p.numel(), T(0));
    v_.emplace_back(p.numel(), T(0));
  }
}

template <typename T>
void AdamW<T>::step() {
  ++this->steps_;
  const double t = static_cast<double>(this->steps_);
  const T lr = static_cast<T>(this->lr_);
  const T b1 = static_cast<T>(options_.beta1), b2 = static_cast<T>(options_.beta2);
  const T bc1 = static_cast<T>(1 - std::pow(options_.beta1, t));
  const T bc2_sqrt = static_cast<T>(std::sqrt(1 - std::pow(options_.beta2, t)));
  const T eps = static_cast<T>(options_.eps);
  const T decay = static_cast<T>(1 - this->lr_ * options_.weight_decay);
  for (std::size_t i = 0; i < this->parameters_.size(); ++i) {
    Tensor<T>& p = this->parameters_[i];
    if (!has_gradient(p)) continue;
    const Tensor<T> g_t = p.grad().contiguous();
    const int64_t n = p.numel();
    Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> g(g_t.data(), n);
    Vec<T> w(p.data(), n), m(m_[i].data(), n), v(v_[i].data(), n);
    w *= decay;
    m = b1 * m + (T(1) - b1) * g;
    v = b2 * v + (T(1) - b2) * g.square();
    // p -= lr * (m / bc1) / (sqrt(v) / sqrt(bc2) + eps), as torch.optim.AdamW
    w -= (lr / bc1) * m / (v.sqrt() / bc2_sqrt + eps);
  }
}

template <typename T>
AdamWState<T> AdamW<T>::state() const {
  return {this->steps_, m_, v_};
}

template <typename T>
void AdamW<T>::load_state(AdamWState<T> state) {
  const std::size_t n = this->parameters_.size();
  if (state.m.size() != n || state.v.size() != n || state.step < 0)
    throw std::invalid_argument("neat::nn::AdamW::load_state: " + std::to_string(state.m.size()) +
                                " moment vectors for " + std::to_string(n) + " parameters");
  for (std::size_t i = 0; i < n; ++i) {
    const auto numel = static_cast<std::size_t>(this->parameters_[i].numel());
    if (state.m[i].size() != numel || state.v[i].size() != numel)
      throw std::invalid_argument("neat::nn::AdamW::load_state: moments of parameter " +
                                  std::to_string(i) + " have the wrong size");
  }
  this->steps_ = state.step;
  m_ = std::move(state.m);
  v_ = std::move(state.v);
}

template <typename T>
double clip_grad_norm(const std::vector<Tensor<T>>& parameters, double max_norm) {
  double total = 0;
  for (const auto& p : parameters) {
    if (!has_gradient(p)) continue;
    const Tensor<T> g = p.grad();
    for (T x : g.to_vector()) total += static_cast<double>(x) * static_cast<double>(x);
  }
  const double norm = std::sqrt(total);
  if (norm > max_norm && norm > 0) {
    const T factor = static_cast<T>(max_norm / (norm + 1e-6));
    for (const auto& p : parameters) {
      if (!has_gradient(p)) continue;
      Tensor<T> g = p.grad();
      if (!g.is_contiguous()) {
        g = g.clone();
        Tensor<T> holder = p;
        holder.set_grad(g);
      }
      Vec<T>(g.data(), g.numel()) *= factor;
    }
  }
  return norm;
}

WarmupCosineLr::WarmupCosineLr(double peak, int64_t warmup, int64_t total, double min_lr)
    : peak_(peak), warmup_(warmup), total_(total), min_lr_(min_lr) {
  if (warmup < 0 || total < warmup)
    throw std::invalid_argument("neat::nn::WarmupCosineLr: need 0 <= warmup <= total");
}

double WarmupCosineLr::base_at(int64_t step) const {
  if (step < warmup_) return peak_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (step >= total_) return min_lr_;
  const double progress = static_cast<double>(step - warmup_) /
                          static_cast<double>(std::max<int64_t>(total_ - warmup_, 1));
  return min_lr_ + 0.5 * (peak_ - min_lr_) * (1 + std::cos(std::numbers::pi * progress));
}

InverseSqrtLr::InverseSqrtLr(double peak, int64_t warmup) : peak_(peak), warmup_(warmup) {
  if (warmup <= 0) throw std::invalid_argument("neat::nn::InverseSqrtLr: warmup must be > 0");
}

double InverseSqrtLr::base_at(int64_t step) const {
  const double s = static_cast<double>(step + 1), w = static_cast<double>(warmup_);
  return s < w ? peak_ * s / w : peak_ * std::sqrt(w / s);
}

template class Optimizer<float>;
template class Optimizer<double>;
template class SGD<float>;
template class SGD<double>;
template class AdamW<float>;
template class AdamW<double>;
template double clip_grad_norm(const std::vector<Tensor<float>>&, double);
template double clip_grad_norm(const std::vector<Tensor<double>>&, double);

}  // namespace neat::nn
