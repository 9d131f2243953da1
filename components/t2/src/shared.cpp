// Process-shared SVD factors and composed-weight cache, and their sizing by the profile.
#include "neat/t2/shared.hpp"

#include <algorithm>
#include <stdexcept>

#include "neat/blt/shared_model.hpp"
#include "neat/nn/shared.hpp"

namespace neat::t2 {

nn::DType factor_storage(const std::string& precision) {
  if (precision == "float32") return nn::DType::f32;
  if (precision == "bf16") return nn::DType::bf16;
  throw std::invalid_argument("t2: precision '" + precision + "' is neither float32 nor bf16");
}

std::shared_ptr<const ModelFactors> shared_model_factors(const std::filesystem::path& checkpoint,
                                                         nn::DType storage) {
  std::error_code ec;
  auto canonical = std::filesystem::weakly_canonical(checkpoint, ec);
  if (ec) canonical = checkpoint;
  return nn::shared_instance<const ModelFactors>(
      "svd:" + canonical.string() + ":" + nn::dtype_name(storage), [&] {
        const auto model = blt::shared_byte_lm(checkpoint);
        SvdOptions options;
        options.storage = storage;
        return std::make_shared<const ModelFactors>(ModelFactors::decompose(*model, options));
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
