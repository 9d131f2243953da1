// Process-shared SVD factors and composed-weight cache, and their sizing by the profile.
#include "neat/t2/shared.hpp"

#include <algorithm>
#include <stdexcept>

#include "neat/blt/shared_model.hpp"
#include "neat/nn/bf16_weights.hpp"
#include "neat/nn/shared.hpp"

namespace neat::t2 {

nn::DType factor_storage(const std::string& precision) {
  if (precision == "float32") return nn::DType::f32;
  if (precision == "bf16") return nn::DType::bf16;
  throw std::invalid_argument("t2: precision '" + precision + "' is neither float32 nor bf16");
}

std::shared_ptr<const ModelFactors> shared_model_factors(const std::filesystem::path& checkpoint,
                                                         nn::DType storage,
                                                         const std::vector<std::string>& names) {
  std::error_code ec;
  auto canonical = std::filesystem::weakly_canonical(checkpoint, ec);
  if (ec) canonical = checkpoint;
  std::string key = "svd:" + canonical.string() + ":" + nn::dtype_name(storage);
  for (const auto& n : names) key += ":" + n;
  return nn::shared_instance<const ModelFactors>(key, [&] {
    // The byte LM in the same precision as the factors (one instance with blt and
    // blt_predict of that precision).
    const auto model = blt::shared_byte_lm(checkpoint, storage);
    SvdOptions options;
    options.storage = storage;
    if (nn::count_bf16_linear_weights(*model) == 0)
      return std::make_shared<const ModelFactors>(ModelFactors::decompose(*model, options, names));
    // bf16-stored weights: each matrix widened back to float32 (the values
    // ModelFactors::decompose reads from a float32 model of a bf16 checkpoint), one at a time.
    ModelFactors m;
    m.names = names.empty() ? mlp_matrix_names(*model) : names;
    for (const auto& name : m.names) {
      const nn::Bf16Matrix& w = adapted_linear(*model, name).weight_bf16;
      m.factors.push_back(decompose(w.to_float().to_vector(), w.rows(), w.cols(), options));
    }
    return std::make_shared<const ModelFactors>(std::move(m));
  });
}

WeightCacheOptions budgeted_cache_options(WeightCacheOptions configured,
                                          std::uint64_t memory_budget_bytes) {
  if (memory_budget_bytes > 0) {
    configured.max_bytes =
        std::min(configured.max_bytes, memory_budget_bytes / kWeightCacheBudgetDivisor);
  }
  return configured;
}

std::shared_ptr<WeightCache> shared_weight_cache(const std::string& key,
                                                 const WeightCacheOptions& options) {
  const auto full_key = "weight_cache:" + key + ":" + std::to_string(options.max_entries) + ":" +
                        std::to_string(options.max_bytes) + ":" +
                        std::to_string(options.ttl_seconds);
  return nn::shared_instance<WeightCache>(full_key,
                                          [&] { return std::make_shared<WeightCache>(options); });
}

}  // namespace neat::t2
