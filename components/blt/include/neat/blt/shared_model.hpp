// One read-only copy of the byte LM per process and weight precision (issue 8): blt (entropy
// model), t2 (task embeddings, SVD) and blt_predict (scoring) read the same checkpoint; embedded
// in one process they share one instance instead of loading one each. In the separate-process
// shape each process loads its own (nn::shared_instance keeps only live instances). Under the
// profile's `precision: bf16` the instance keeps its Linear weights in bfloat16
// (nn::store_linear_weights_bf16): half their bytes, products still computed in float32.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "neat/nn/modules.hpp"

namespace neat::blt {

/// Weight storage of the byte LM for a component's profile precision: "float32" ->
/// nn::DType::f32, "bf16" -> nn::DType::bf16; throws std::invalid_argument naming the value
/// otherwise.
nn::DType byte_lm_storage(const std::string& precision);

/// The byte LM of `checkpoint` (load_byte_lm), loaded once per process and storage and shared,
/// keyed by the canonical path and `weights`. nn::DType::f32: float32 as in the file's loader;
/// nn::DType::bf16: every Linear weight (attention, MLP, lm_head) stored in bfloat16, the
/// embeddings and norms float32 (lossless for the shipped bf16 checkpoint, whose weights are
/// bfloat16 values). Its parameters are frozen (set_trainable(false)): forward passes on it
/// record no graph, so components may run it concurrently. Its tensor bytes are counted under
/// the nn::MemoryTag of the caller that loaded it first. Throws what load_byte_lm throws, and
/// std::invalid_argument for a storage other than f32 and bf16.
std::shared_ptr<const nn::TransformerLM<float>> shared_byte_lm(
    const std::filesystem::path& checkpoint, nn::DType weights = nn::DType::f32);

}  // namespace neat::blt
