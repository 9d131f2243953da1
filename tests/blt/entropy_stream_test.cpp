// The incremental entropy stream (KV cache) against full forward passes: entropies, log-probs of
// the actual next tokens, hidden states, context restarts and document boundaries.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/entropy_stream.hpp"
#include "neat/nn/ops.hpp"

namespace neat::blt {
namespace {

nn::TransformerConfig tiny_config(std::int64_t context) {
  nn::TransformerConfig c;
  c.vocab_size = kFirstImageCode + 16;
  c.dim = 32;
  c.layers = 2;
  c.heads = 4;
  c.mlp_hidden = 64;
  c.max_seq_len = context;
  c.seed = 11;
  return c;
}

std::vector<std::int32_t> text_document(std::size_t bytes) {
  const std::string text = "Entropy patches start where the next byte is hard to guess. ";
  std::vector<std::uint8_t> b;
  for (std::size_t i = 0; i < bytes; ++i) b.push_back(static_cast<std::uint8_t>(text[i % 61]));
  return document_tokens(b);
}

TEST(EntropyStream, ChunkedPushesEqualBatchEntropiesAcrossContextRestarts) {
  nn::TransformerLM<float> model(tiny_config(16));
  const auto tokens = text_document(50);  // 52 tokens: four context windows
  EntropyStream stream(model);
  EntropyStreamOutput out;
  std::size_t at = 0;
  for (std::size_t chunk : {1u, 7u, 3u, 20u, 21u}) {
    const std::size_t n = std::min(chunk, tokens.size() - at);
    stream.push(std::span(tokens).subspan(at, n), out);
    at += n;
  }
  ASSERT_EQ(at, tokens.size());
  const auto batch = next_token_entropies_batch(model, tokens);
  ASSERT_EQ(out.entropies.size(), tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) EXPECT_NEAR(out.entropies[i], batch[i], 1e-4);
  EXPECT_EQ(next_token_entropies(model, tokens).size(), tokens.size());
}

TEST(EntropyStream, LogProbsAndHiddenStatesMatchAFullForwardPass) {
  nn::TransformerLM<float> model(tiny_config(32));
  const auto tokens = text_document(25);
  const auto n = static_cast<std::int64_t>(tokens.size());
  EntropyStream stream(model);
  EntropyStreamOutput out;
  stream.push(tokens, out);
  nn::NoGradGuard no_grad;
  const auto hidden = model.hidden(tokens, 1, n).clone();   // (1, n, C)
  const auto logits = model.forward(tokens, 1, n).clone();  // (1, n, V)
  const std::int64_t C = model.config().dim, V = model.config().vocab_size;
  ASSERT_EQ(out.hidden.size(), static_cast<std::size_t>(n * C));
  for (std::int64_t i = 0; i < n * C; ++i) ASSERT_NEAR(out.hidden[i], hidden.data()[i], 1e-4) << i;
  EXPECT_TRUE(std::isnan(out.log_probs[0])) << "nothing predicts position 0";
  for (std::int64_t k = 1; k < n; ++k) {
    const float* row = logits.data() + (k - 1) * V;
    double z = 0.0;
    for (std::int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]));
    EXPECT_NEAR(out.log_probs[k], row[tokens[k]] - std::log(z), 1e-4) << k;
  }
}

TEST(EntropyStream, ResetStartsADocumentAfreshAndShorterContextRestartsEveryNTokens) {
  nn::TransformerLM<float> model(tiny_config(32));
  const auto tokens = text_document(20);
  EntropyStream stream(model);
  EntropyStreamOutput first, again;
  stream.push(tokens, first);
  stream.reset();
  EXPECT_EQ(stream.position(), 0);
  stream.push(tokens, again);
  EXPECT_EQ(first.entropies, again.entropies);
  EXPECT_TRUE(std::isnan(again.log_probs[0]));

  // Context shortened to 8: window j of the document is decoded as if it stood alone.
  stream.reset();
  stream.set_context(8);
  EXPECT_EQ(stream.context(), 8);
  EntropyStreamOutput shortened;
  stream.push(tokens, shortened);
  for (std::size_t start = 0; start < tokens.size(); start += 8) {
    const std::size_t len = std::min<std::size_t>(8, tokens.size() - start);
    const std::vector<std::int32_t> window(tokens.begin() + start, tokens.begin() + start + len);
    const auto alone = next_token_entropies_batch(model, window);
    for (std::size_t i = 0; i < len; ++i)
      EXPECT_NEAR(shortened.entropies[start + i], alone[i], 1e-4) << start + i;
  }
  EXPECT_THROW(stream.set_context(33), std::invalid_argument);
}

TEST(EntropyStream, RejectsATokenOutsideTheVocabularyWithoutDecoding) {
  nn::TransformerLM<float> model(tiny_config(16));
  EntropyStream stream(model);
  EntropyStreamOutput out;
  const std::vector<std::int32_t> bad = {kBos, 'a',
                                         static_cast<std::int32_t>(kFirstImageCode + 16)};
  EXPECT_THROW(stream.push(bad, out), std::out_of_range);
  EXPECT_TRUE(out.entropies.empty());
  EXPECT_EQ(stream.position(), 0);
}

}  // namespace
}  // namespace neat::blt
