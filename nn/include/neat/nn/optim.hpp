// Optimizers (SGD with momentum, AdamW), clipping by global norm, and learning-rate schedules
// whose state the coordinator can drive at run time (set_lr, scale). Optimizers update
// parameters in place and skip frozen parameters and parameters without a gradient.
#pragma once

#include <cstdint>
#include <vector>

#include "neat/nn/tensor.hpp"

namespace neat::nn {

template <typename T>
class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor<T>> parameters, double lr);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad();
  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  int64_t steps() const { return steps_; }
  const std::vector<Tensor<T>>& parameters() const { return parameters_; }

 protected:
  std::vector<Tensor<T>> parameters_;
  double lr_;
  int64_t steps_ = 0;
};

struct SgdOptions {
  double lr = 0.01;
  double momentum = 0;      // velocity = momentum * velocity + grad
  double weight_decay = 0;  // L2, added to the gradient (PyTorch SGD semantics)
  bool nesterov = false;
};

// PyTorch torch.optim.SGD: v = mu v + g; p -= lr (nesterov ? g + mu v : v).
template <typename T>
class SGD : public Optimizer<T> {
 public:
  SGD(std::vector<Tensor<T>> parameters, const SgdOptions& options);
  void step() override;

 private:
  SgdOptions options_;
  std::vector<std::vector<T>> velocity_;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // decoupled: p -= lr * wd * p
};

// What AdamW needs to continue exactly where it stopped (checkpoints, --resume): the step
// count t (bias correction) and the first and second moments m, v, one vector per parameter
// in the optimizer's parameter order, each of the parameter's numel.
template <typename T>
struct AdamWState {
  int64_t step = 0;
  std::vector<std::vector<T>> m, v;
};

// AdamW (Loshchilov & Hutter 2019, Algorithm 2), bias-corrected as torch.optim.AdamW.
template <typename T>
class AdamW : public Optimizer<T> {
 public:
  AdamW(std::vector<Tensor<T>> parameters, const AdamWOptions& options);
  void step() override;
  // The current t, m and v (a copy), for a checkpoint.
  AdamWState<T> state() const;
  // Replaces t, m and v. Throws std::invalid_argument (nothing changed) when the number of
  // moment vectors or any vector's size does not match the parameters.
  void load_state(AdamWState<T> state);

 private:
  AdamWOptions options_;
  std::vector<std::vector<T>> m_, v_;
};

// Scales all gradients so that their joint L2 norm is at most max_norm. Returns the norm
// before clipping (the coordinator watches it for stability).
template <typename T>
double clip_grad_norm(const std::vector<Tensor<T>>& parameters, double max_norm);

// Learning rate as a function of the step, times a run-time scale factor.
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  // Learning rate at the current step; advance() moves to the next step.
  double lr() const { return base_at(step_) * scale_; }
  void advance() { ++step_; }
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }
  // Run-time control: set_lr changes the peak (base) rate; scale multiplies every rate.
  virtual void set_lr(double peak) = 0;
  void scale(double factor) { scale_ *= factor; }
  double scale_factor() const { return scale_; }

 protected:
  virtual double base_at(int64_t step) const = 0;

 private:
  int64_t step_ = 0;
  double scale_ = 1;
};

class ConstantLr : public LrSchedule {
 public:
  explicit ConstantLr(double lr) : lr_(lr) {}
  void set_lr(double peak) override { lr_ = peak; }

 protected:
  double base_at(int64_t) const override { return lr_; }

 private:
  double lr_;
};

// Linear warmup from 0 to peak over warmup steps, then cosine decay to min_lr at total steps
// (min_lr after).
class WarmupCosineLr : public LrSchedule {
 public:
  WarmupCosineLr(double peak, int64_t warmup, int64_t total, double min_lr = 0);
  void set_lr(double peak) override { peak_ = peak; }

 protected:
  double base_at(int64_t step) const override;

 private:
  double peak_;
  int64_t warmup_, total_;
  double min_lr_;
};

// Vaswani et al. 2017 eq. 3 shape: linear warmup, then peak * sqrt(warmup / step).
class InverseSqrtLr : public LrSchedule {
 public:
  InverseSqrtLr(double peak, int64_t warmup);
  void set_lr(double peak) override { peak_ = peak; }

 protected:
  double base_at(int64_t step) const override;

 private:
  double peak_;
  int64_t warmup_;
};

extern template class SGD<float>;
extern template class AdamW<float>;

}  // namespace neat::nn
