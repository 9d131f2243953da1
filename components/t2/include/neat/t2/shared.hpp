// Transformer² state shared by the components of one process and sized by the hardware
// profile (issue 8): the SVD factors of the byte LM (t2 and blt_predict decompose the same
// matrices) and the composed-weight cache (t2 composes a decision's weights in pass 1,
// blt_predict applies them in pass 2). In the separate-process shape each process has its own.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "neat/nn/tensor.hpp"
#include "neat/t2/experts.hpp"

namespace neat::t2 {

/// Storage of U and V for a component's profile precision: "bf16" -> nn::DType::bf16,
/// "float32" -> nn::DType::f32; throws std::invalid_argument otherwise.
nn::DType factor_storage(const std::string& precision);

/// ModelFactors::decompose of the matrices `names` (default: every MLP matrix; an expert set
/// passes its ExpertSet::matrices) of the byte LM in `checkpoint` (blt::shared_byte_lm in the
/// same `storage`: bf16 keeps the shared model's Linear weights in bfloat16 too, and each
/// matrix is widened to float32 for its SVD) with U and V stored in `storage` (SvdOptions
/// defaults otherwise), computed once per process and shared, keyed by the canonical path, the
/// storage and the names. For a bf16 checkpoint both storages decompose the same float values.
/// Throws what load_byte_lm, adapted_linear and decompose throw.
std::shared_ptr<const ModelFactors> shared_model_factors(
    const std::filesystem::path& checkpoint, nn::DType storage,
    const std::vector<std::string>& names = {});

/// Share of the run's memory budget the composed-weight cache may hold: 1/32 (a 2 GiB budget
/// keeps 64 MiB, five composed sets of the shipped experts' 24 matrices, 12 MiB each; 256 MiB keeps
/// 8 MiB).
inline constexpr std::uint64_t kWeightCacheBudgetDivisor = 32;

/// `configured` with max_bytes lowered to memory_budget_bytes / kWeightCacheBudgetDivisor
/// (unchanged when memory_budget_bytes is 0: no profile).
WeightCacheOptions budgeted_cache_options(WeightCacheOptions configured,
                                          std::uint64_t memory_budget_bytes);

/// The process's composed-weight cache for `key` (the expert set and model it composes for)
/// and `options` (part of the key: caches with other limits are distinct). Thread-safe.
std::shared_ptr<WeightCache> shared_weight_cache(const std::string& key,
                                                 const WeightCacheOptions& options);

}  // namespace neat::t2
