// shared_byte_lm: the process's one read-only copy of a byte LM checkpoint per weight storage.
#include "neat/blt/shared_model.hpp"

#include <stdexcept>

#include "neat/blt/byte_lm.hpp"
#include "neat/nn/bf16_weights.hpp"
#include "neat/nn/shared.hpp"

namespace neat::blt {

nn::DType byte_lm_storage(const std::string& precision) {
  if (precision == "float32") return nn::DType::f32;
  if (precision == "bf16") return nn::DType::bf16;
  throw std::invalid_argument("blt: precision '" + precision + "' is neither float32 nor bf16");
}

std::shared_ptr<const nn::TransformerLM<float>> shared_byte_lm(
    const std::filesystem::path& checkpoint, nn::DType weights) {
  if (weights != nn::DType::f32 && weights != nn::DType::bf16)
    throw std::invalid_argument(std::string("blt::shared_byte_lm: weights in ") +
                                nn::dtype_name(weights) + "; the byte LM is kept in f32 or bf16");
  std::error_code ec;
  auto canonical = std::filesystem::weakly_canonical(checkpoint, ec);
  if (ec) canonical = checkpoint;
  using Model = const nn::TransformerLM<float>;
  const std::string key = weights == nn::DType::f32 ? "byte_lm:" + canonical.string()
                                                    : "byte_lm:" + canonical.string() + ":bf16";
  return nn::shared_instance<Model>(key, [&] {
    std::shared_ptr<nn::TransformerLM<float>> model = load_byte_lm(checkpoint);
    model->set_trainable(false);
    if (weights == nn::DType::bf16) nn::store_linear_weights_bf16(*model);
    return std::shared_ptr<Model>(std::move(model));
  });
}

}  // namespace neat::blt
