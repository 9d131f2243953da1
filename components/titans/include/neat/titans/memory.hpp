// Titans neural long-term memory (Behrouz et al. 2024, arXiv 2501.00663, §3): an MLP memory M
// whose weights are written at test time by gradient descent on the associative loss
// l(M; x) = ||M(k) - v||^2 with momentum (surprise S) and a forgetting gate, in the chunked form
// of eq. 16-18, plus the learned parts trained by the outer loop (W_K, W_V, W_Q, the gate maps,
// the persistent memory and the initial weights M_0).
//
// Conventions: rows are patches. x (n, d_in) are patch latents; k = x W_K, v = x W_V,
// q = x W_Q (n, d). The memory maps rows: M(k) = k W_1 for L_M = 1, and
// M(k) = silu(... silu(k W_1) ...) W_L for L_M >= 2 (no biases); W_1 (d, h), W_L (h, d).
// Everything is written with differentiable nn ops (the inner gradient too), so the outer loss
// backpropagates through the memory updates (second order: nn::grad with create_graph).
// Invariant: the readout of a patch reads the memory as it was at the start of the patch's
// chunk, i.e. written by earlier chunks only. When no graph is recorded (run time) the same
// numbers come from fused kernels (one product for the weighted gradients of a layer, one pass
// for M and S), and the thread flushes subnormal floats to zero while the memory computes.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "neat/nn/tensor.hpp"

namespace neat::titans {

/// Shape and gate maxima of a neural memory (YAML keys of the `titans` component and of
/// configs/train/titans.yaml use the same names).
struct MemoryConfig {
  std::int64_t input_dim = 256;  ///< d_in, width of the patch latents x
  std::int64_t dim = 256;        ///< d, width of keys, values, queries and the readout
  std::int64_t depth = 2;        ///< L_M in {1, 2, 3}; 1 is a linear memory
  std::int64_t hidden = 256;     ///< hidden width h of the MLP memory (depth >= 2)
  std::int64_t chunk = 64;       ///< C, patches per chunk (eq. 16-18)
  std::int64_t persistent = 4;   ///< N_p persistent memory vectors (eq. 19)
  bool l2_norm = true;           ///< l2-normalise q and k
  double theta_max = 0.05;       ///< theta_t = theta_max * sigmoid(x_t w_theta + b_theta)
  double eta_max = 0.9;          ///< eta = eta_max * sigmoid(mean_chunk(x) w_eta + b_eta)
  double alpha_max = 0.1;        ///< alpha = alpha_max * sigmoid(mean_chunk(x) w_alpha + b_alpha)
  std::uint64_t seed = 1;        ///< initialisation of the learned parameters
  /// Throws std::invalid_argument naming the first field out of range.
  void validate() const;
};

/// The outer-loop parameters. Shapes: w_k, w_v, w_q (d_in, d); theta_w, eta_w, alpha_w
/// (d_in, 1); theta_b, eta_b, alpha_b (1); m0 = initial memory weights W_1..W_L;
/// persistent (N_p, d_in) (undefined for N_p = 0).
template <typename T>
struct MemoryParams {
  nn::Tensor<T> w_k, w_v, w_q;
  nn::Tensor<T> theta_w, theta_b, eta_w, eta_b, alpha_w, alpha_b;
  std::vector<nn::Tensor<T>> m0;
  nn::Tensor<T> persistent;

  /// Random initialisation from config.seed: projections N(0, 1/d_in), memory layers
  /// N(0, 1/fan_in), gate weights 0 and biases 0 (every gate at half its maximum), persistent
  /// vectors N(0, 1). Every tensor is a leaf with requires_grad = true.
  static MemoryParams init(const MemoryConfig& config);
  /// Every parameter with its name ("w_k", "m0.0", "persistent", ...), in a fixed order.
  std::vector<std::pair<std::string, nn::Tensor<T>>> named() const;
  std::vector<nn::Tensor<T>> all() const;
};

/// Scratch buffers of the run-time path (nothing recorded): the projections, activations,
/// deltas and weighted gradients of a chunk, reused from chunk to chunk so that a warm stream
/// allocates only its readouts. They are nn tensors (counted under the MemoryTag active when
/// they were first needed). Contents never carry meaning between calls; a copy starts empty, so
/// a copied state (snapshot) never shares scratch with the original.
template <typename T>
struct MemoryWorkspace {
  MemoryWorkspace() = default;
  MemoryWorkspace(const MemoryWorkspace&) {}
  MemoryWorkspace& operator=(const MemoryWorkspace&) {
    buffers.clear();
    return *this;
  }
  MemoryWorkspace(MemoryWorkspace&&) noexcept = default;
  MemoryWorkspace& operator=(MemoryWorkspace&&) noexcept = default;
  ~MemoryWorkspace() = default;
  std::vector<nn::Tensor<T>> buffers;
  /// Bytes held by the buffers.
  std::int64_t bytes() const;
};

/// Memory state carried along a stream: M (weights), S (momentum, "surprise"), the patch
/// latents of the open (not yet written) chunk, the update step and the document.
/// At run time (no graph) NeuralMemory overwrites M, S and previous_gradient in place when the
/// state is their only owner (no copy of the state or of a tensor shares their storage), and
/// writes new tensors otherwise (copy on write): a copy of the state taken earlier never
/// changes.
template <typename T>
struct MemoryState {
  std::vector<nn::Tensor<T>> weights;   ///< M_t, one tensor per layer
  std::vector<nn::Tensor<T>> momentum;  ///< S_t, same shapes
  nn::Tensor<T> pending;                ///< (p, d_in), p < C; undefined when empty
  std::int64_t step = 0;                ///< chunk updates applied
  std::uint64_t document = 0;
  std::vector<nn::Tensor<T>> previous_gradient;  ///< last chunk's mean gradient (for cosines)
  MemoryWorkspace<T> workspace;                  ///< run-time scratch (not part of the state)
  std::int64_t pending_rows() const { return pending.defined() ? pending.size(0) : 0; }
  /// Bytes of M, S, the previous chunk's gradient and the pending latents (the workspace is
  /// working memory, counted by chunk_working_bytes, not state).
  std::int64_t bytes() const;
};

/// Data-dependent gates of one chunk of n patches: theta (n, 1) learning rates, eta (1, 1)
/// momentum decay, alpha (1, 1) forgetting.
template <typename T>
struct ChunkGates {
  nn::Tensor<T> theta, eta, alpha;
};

/// M(k): k (n, d) -> (n, d) with the layer convention of the file comment.
template <typename T>
nn::Tensor<T> memory_apply(const std::vector<nn::Tensor<T>>& weights, const nn::Tensor<T>& k);

/// Associative loss per patch l_t = ||M(k_t) - v_t||^2 (eq. 12), shape (n, 1).
template <typename T>
nn::Tensor<T> associative_loss(const std::vector<nn::Tensor<T>>& weights, const nn::Tensor<T>& k,
                               const nn::Tensor<T>& v);

/// Weighted inner gradients: for each coefficient column c (n, 1), the per-layer sums
/// sum_t c_t dl_t/dW_l at the given weights, written with differentiable ops (a hand-written
/// backward of the MLP: delta_L = 2 (M(k) - v), G_l = a_{l-1}^T (c * delta_l),
/// delta_{l-1} = (delta_l W_l^T) * silu'(z_{l-1})). Result [coefficient][layer]. If loss is
/// non-null it receives l_t (n, 1). Throws std::invalid_argument on shape mismatch.
template <typename T>
std::vector<std::vector<nn::Tensor<T>>> inner_gradients(
    const std::vector<nn::Tensor<T>>& weights, const nn::Tensor<T>& k, const nn::Tensor<T>& v,
    const std::vector<nn::Tensor<T>>& coefficients, nn::Tensor<T>* loss = nullptr);

/// Result of one chunk update.
template <typename T>
struct ChunkUpdate {
  std::vector<nn::Tensor<T>> weights;   ///< M at the end of the chunk
  std::vector<nn::Tensor<T>> momentum;  ///< S at the end of the chunk
  double loss = 0;                      ///< mean l_t over the chunk at chunk-start weights
  double surprise = 0;        ///< ||grad of mean_t l_t at the chunk-start weights||_F (all layers)
  double update_norm = 0;     ///< ||M_end - M_start||_F (all layers)
  double direction_norm = 0;  ///< ||sum_s theta_s h_{n-s} u_s||_F, the part theta scales
  std::vector<nn::Tensor<T>> mean_gradient;  ///< grad of mean_t l_t per layer (own copies)
};

/// Momentary surprise and loss of a chunk before any update: the gradient norm used for
/// prioritisation (no graph is recorded).
template <typename T>
std::pair<double, double> chunk_surprise(const std::vector<nn::Tensor<T>>& weights,
                                         const nn::Tensor<T>& k, const nn::Tensor<T>& v);

/// One chunk of n patches, eq. 16-18 with the gradients u_t = dl_t/dM taken at the chunk-start
/// weights M_0 (of the chunk) and the recurrences applied patch by patch in closed form:
///   S_t = eta S_{t-1} - theta_t u_t,   M_t = (1 - alpha) M_{t-1} + S_t   (t = 1..n), i.e.
///   S_n = eta^n S_0 - sum_s theta_s eta^{n-s} u_s,
///   M_n = (1-alpha)^n M_0 + (sum_t (1-alpha)^{n-t} eta^t) S_0 - sum_s theta_s h_{n-s} u_s,
///   h_m = sum_{j=0..m} eta^j (1-alpha)^{m-j}.
/// Each weighted sum of u_s is one inner_gradients() product per layer (no per-patch
/// gradient is materialised). Differentiable in weights, momentum, k, v and the gates.
template <typename T>
ChunkUpdate<T> chunk_update(const std::vector<nn::Tensor<T>>& weights,
                            const std::vector<nn::Tensor<T>>& momentum, const nn::Tensor<T>& k,
                            const nn::Tensor<T>& v, const ChunkGates<T>& gates);

/// What a caller sees of a chunk before it is written (see NeuralMemory::write_policy).
struct ChunkReport {
  std::int64_t step = 0;      ///< index of this update in the stream (state.step)
  std::int64_t patches = 0;   ///< n
  double loss = 0;            ///< mean l_t at the chunk-start weights
  double surprise = 0;        ///< as ChunkUpdate::surprise
  double direction_norm = 0;  ///< as ChunkUpdate::direction_norm
  double param_norm = 0;      ///< ||M||_F before the write
  double grad_cosine = 1;     ///< cos(mean gradient, previous chunk's); 1 for the first chunk
};

/// Decides a chunk update before it is applied: returns the factor theta is scaled by
/// (the coordinator's granted learning rate), or 0 to skip the update (memory and momentum
/// unchanged). An empty policy writes every chunk with factor 1.
using WritePolicy = std::function<double(const ChunkReport&)>;

/// Per-chunk record of a forward pass (for stats and logs).
struct ChunkRecord {
  ChunkReport report;
  double theta_scale = 1;  ///< the policy's answer (0: skipped)
  double update_norm = 0;
};

/// The memory module: projections, gates and the stream loop over chunks.
template <typename T>
class NeuralMemory {
 public:
  /// Initialises parameters with MemoryParams::init. Throws std::invalid_argument (validate()).
  explicit NeuralMemory(const MemoryConfig& config);
  /// Uses given parameters (shapes checked; std::invalid_argument naming the tensor).
  NeuralMemory(const MemoryConfig& config, MemoryParams<T> params);

  const MemoryConfig& config() const { return config_; }
  MemoryParams<T>& params() { return params_; }
  const MemoryParams<T>& params() const { return params_; }

  /// Fresh state for a document: M = M_0, S = 0, then the N_p persistent vectors written as
  /// one chunk (eq. 19: the sequence is [p_1 .. p_Np] || x), ungated by any policy.
  MemoryState<T> initial_state(std::uint64_t document = 0) const;

  /// k, v, q (n, d) of latents x (n, d_in), with the optional l2 norm of k and q (q left
  /// undefined when with_query is false: a write needs only k and v).
  struct Projection {
    nn::Tensor<T> k, v, q;
  };
  Projection project(const nn::Tensor<T>& x, bool with_query = true) const;
  /// Gates of a chunk x (n, d_in): theta per patch, eta and alpha from the chunk mean.
  ChunkGates<T> gates(const nn::Tensor<T>& x) const;

  /// Streams patches x (n, d_in) through the memory: each patch's readout y = M*(q) (no
  /// update) uses the weights at the start of its chunk; whenever C patches are pending they
  /// are written with chunk_update (theta scaled by the policy's factor, or skipped). Returns
  /// the readout (n, d). Appends one record per chunk to records when non-null. When nothing
  /// is recorded (NoGradGuard, or nothing requires a gradient) the same numbers come from the
  /// run-time path (Eigen kernels over state.workspace, M and S updated in place when the
  /// state owns them); otherwise every step is a recorded nn op.
  nn::Tensor<T> forward(MemoryState<T>& state, const nn::Tensor<T>& x,
                        const WritePolicy& policy = {},
                        std::vector<ChunkRecord>* records = nullptr) const;
  /// Changes the chunk size C (degrade: shrink_chunks); pending patches beyond the new size
  /// are written at the next forward(). Throws std::invalid_argument for chunk < 1.
  void set_chunk(std::int64_t chunk);
  /// Readout y = M*(q) of latents x (n, d_in) at the state's current weights, no update
  /// (q = x W_Q, l2-normalised when configured). Returns (n, d).
  nn::Tensor<T> read(const MemoryState<T>& state, const nn::Tensor<T>& x) const;
  /// Writes one chunk of n associations whose keys come from key_latents (n, d_in) and whose
  /// values come from value_latents (n, d_in): k_t = key_t W_K, v_t = value_t W_V, theta, eta
  /// and alpha from the key latents (eq. 12-18 with x_t split into a key and a value side, the
  /// MAG use in mag.hpp: key = latent of patch p, value = latent of patch p + 1). The pending
  /// latents of the state are not touched. Throws std::invalid_argument on shape mismatch.
  void write_pairs(MemoryState<T>& state, const nn::Tensor<T>& key_latents,
                   const nn::Tensor<T>& value_latents, const WritePolicy& policy = {},
                   std::vector<ChunkRecord>* records = nullptr) const;
  /// Writes the pending (partial) chunk, if any (end of a document).
  void flush(MemoryState<T>& state, const WritePolicy& policy = {},
             std::vector<ChunkRecord>* records = nullptr) const;

 private:
  // Values from *x_value when given, else from x (keys, values and gates from one latent).
  void write_chunk(MemoryState<T>& state, const nn::Tensor<T>& x, const nn::Tensor<T>* x_value,
                   const WritePolicy& policy, std::vector<ChunkRecord>* records) const;
  // True when nothing of a computation on the state, the parameters and x would be recorded.
  bool run_time(const MemoryState<T>& state, const nn::Tensor<T>& x) const;
  // Run-time forms (memory.cpp): the same numbers from Eigen kernels over the state's
  // workspace. Latents are contiguous row-major (n, d_in); xv null: values from xk; xq non-null:
  // the readouts y (n, d) of queries xq are computed in the same products as the keys (both
  // read the chunk-start weights).
  nn::Tensor<T> forward_run_time(MemoryState<T>& state, const nn::Tensor<T>& x,
                                 const WritePolicy& policy,
                                 std::vector<ChunkRecord>* records) const;
  void write_chunk_run_time(MemoryState<T>& state, const T* xk, const T* xv, std::int64_t n,
                            const T* xq, T* y, const WritePolicy& policy,
                            std::vector<ChunkRecord>* records) const;
  void read_run_time(MemoryState<T>& state, const T* xq, std::int64_t n, T* y) const;
  MemoryConfig config_;
  MemoryParams<T> params_;
};

/// Bytes of one tensor list's storage (elements x sizeof(T)).
template <typename T>
std::int64_t tensor_bytes(const std::vector<nn::Tensor<T>>& tensors);

extern template struct MemoryParams<float>;
extern template struct MemoryParams<double>;
extern template class NeuralMemory<float>;
extern template class NeuralMemory<double>;

}  // namespace neat::titans
