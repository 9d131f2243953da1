// shared_byte_lm: the process's one read-only copy of a byte LM checkpoint.
#include "neat/blt/shared_model.hpp"

#include "neat/blt/byte_lm.hpp"
#include "neat/nn/shared.hpp"

namespace neat::blt {

std::shared_ptr<const nn::TransformerLM<float>> shared_byte_lm(
    const std::filesystem::path& checkpoint) {
  std::error_code ec;
  auto canonical = std::filesystem::weakly_canonical(checkpoint, ec);
  if (ec) canonical = checkpoint;
  using Model = const nn::TransformerLM<float>;
  return nn::shared_instance<Model>("byte_lm:" + canonical.string(), [&] {
    std::shared_ptr<nn::TransformerLM<float>> model = load_byte_lm(checkpoint);
    model->set_trainable(false);
    return std::shared_ptr<Model>(std::move(model));
  });
}

}  // namespace neat::blt
