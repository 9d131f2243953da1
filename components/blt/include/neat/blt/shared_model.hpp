// One read-only copy of the byte LM per process (issue 8): blt (entropy model), t2 (task
// embeddings, SVD) and blt_predict (scoring) read the same checkpoint; embedded in one process
// they share one instance instead of loading one each. In the separate-process shape each
// process loads its own (nn::shared_instance keeps only live instances).
#pragma once

#include <filesystem>
#include <memory>

#include "neat/nn/modules.hpp"

namespace neat::blt {

/// The byte LM of `checkpoint` (load_byte_lm), loaded once per process and shared, keyed by the
/// canonical path. Its parameters are frozen (set_trainable(false)): forward passes on it record
/// no graph, so components may run it concurrently. Its tensor bytes are counted under the
/// nn::MemoryTag of the caller that loaded it first. Throws what load_byte_lm throws.
std::shared_ptr<const nn::TransformerLM<float>> shared_byte_lm(
    const std::filesystem::path& checkpoint);

}  // namespace neat::blt
