// n-gram keys of the MAG memory (NgramKeys, key_inputs): the hashed features match exactly when
// the context matches and are nearly orthogonal otherwise; the memory input is [unit latent ; h];
// causality (a readout row never depends on a token after its patch's first position); the
// stream in slices, restored from its own snapshot before every slice (history and position
// travel), equals the whole document; recall of a repeated text through identity-initialised
// keys; the model file round trip (f32 and bf16, with the readout normalisation's gain) and a
// file with invalid keys rejected.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "../nn/gradcheck.hpp"
#include "neat/nn/checkpoint.hpp"
#include "neat/nn/ops.hpp"
#include "neat/titans/mag.hpp"
#include "small_memory.hpp"

using namespace neat;
using nn::Tensord;
using nn::testing::random;

namespace {

titans::NgramKeys keys_of(std::vector<std::int64_t> sizes, std::int64_t dim) {
  titans::NgramKeys k;
  k.sizes = std::move(sizes);
  k.dim = dim;
  return k;
}

std::vector<float> features(const titans::NgramKeys& k, const std::vector<std::int32_t>& tokens,
                            std::int64_t end) {
  std::vector<float> h(static_cast<std::size_t>(k.dim));
  k.features(tokens, 0, end, h.data());
  return h;
}

double dot(const std::vector<float>& a, const std::vector<float>& b, std::size_t from = 0,
           std::size_t to = 0) {
  double s = 0;
  for (std::size_t i = from; i < (to ? to : a.size()); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

using titans::testing::Doc;
using titans::testing::random_doc;

// A small memory reading [unit latent (3) ; h (4)]: input_dim 7.
titans::MemoryConfig keyed_config() {
  titans::MemoryConfig c = titans::testing::small_memory_config();
  c.input_dim = 3 + 4;
  return c;
}

Tensord keyed_readouts(const titans::NeuralMemory<double>& memory, const titans::NgramKeys& keys,
                       const titans::ByteValues<double>* values, const Tensord& latents,
                       const Doc& d) {
  const auto P = static_cast<std::int64_t>(d.starts.size());
  const Tensord x = titans::key_inputs(keys, latents, d.tokens, d.starts);
  if (!values) return titans::mag_readouts(memory, x, true);
  const Tensord v = values->embed(
      titans::target_byte_ids(d.tokens, d.starts, 0, P, values->offsets, values->vocab), P);
  return titans::mag_readouts(memory, x, true, nullptr, &v);
}

}  // namespace

TEST(TitansNgramKeys, FeaturesMatchExactlyWhenTheContextMatchesAndAreNearlyOrthogonalOtherwise) {
  const auto k = keys_of({3, 6, 12, 24}, 512);
  k.validate();
  EXPECT_EQ(k.longest(), 24);
  std::mt19937_64 rng(5);
  std::vector<std::int32_t> text;
  for (int i = 0; i < 400; ++i) text.push_back(static_cast<std::int32_t>(rng() % 256));
  // The same 30 tokens at positions 100.. and 300..: every block matches at their ends.
  std::copy(text.begin() + 100, text.begin() + 130, text.begin() + 300);
  const auto a = features(k, text, 129), b = features(k, text, 329);
  EXPECT_EQ(a, b);
  EXPECT_NEAR(dot(a, a), 1.0, 1e-6);  // entries +-1/sqrt(dim): unit norm
  for (float v : a) EXPECT_FLOAT_EQ(std::abs(v), 1.0f / std::sqrt(512.0f));
  // Sharing the last 12 tokens but not the 24-gram: blocks 3, 6, 12 equal, block 24 not.
  auto other = text;
  other[329 - 15] = (other[329 - 15] + 1) % 256;
  const auto c = features(k, other, 329);
  EXPECT_EQ(std::vector<float>(a.begin(), a.begin() + 384),
            std::vector<float>(c.begin(), c.begin() + 384));
  EXPECT_LT(std::abs(dot(a, c, 384, 512)), 0.1);  // block of 128: |cos| ~ 1/sqrt(128) / 4
  EXPECT_NEAR(dot(a, c), 0.75, 0.1);
  // Distinct contexts: nearly orthogonal (|cos| ~ 1/sqrt(512)); over many pairs at most 0.2.
  double worst = 0;
  for (int e = 30; e < 90; ++e) worst = std::max(worst, std::abs(dot(a, features(k, text, e))));
  EXPECT_LT(worst, 0.2);
  // The document start truncates the n-grams; the features stay deterministic.
  EXPECT_EQ(features(k, text, 1), features(k, text, 1));
  EXPECT_NE(features(k, text, 1), features(k, text, 2));
  // Positions outside the given tokens, and a 24-gram needing tokens before them.
  std::vector<float> h(512);
  EXPECT_THROW(k.features(text, 0, 400, h.data()), std::invalid_argument);
  EXPECT_THROW(k.features(text, 10, 30, h.data()), std::invalid_argument);
  EXPECT_NO_THROW(
      k.features(std::vector<std::int32_t>(text.begin() + 10, text.end()), 10, 40, h.data()));
  EXPECT_EQ(h, features(k, text, 40));
  EXPECT_THROW(keys_of({3, 6}, 5).validate(), std::invalid_argument);  // dim not a multiple
  EXPECT_THROW(keys_of({0}, 4).validate(), std::invalid_argument);
  EXPECT_THROW(keys_of({}, 4).validate(), std::invalid_argument);
}

TEST(TitansNgramKeys, MemoryInputIsTheUnitLatentNextToTheFeaturesOfThePatchEnd) {
  std::mt19937_64 rng(7);
  const auto k = keys_of({2, 3}, 4);
  const Doc d = random_doc(20, 9, rng);
  const auto P = static_cast<std::int64_t>(d.starts.size());
  const Tensord latents = random({P, 3}, rng, 3.0);
  const Tensord x = titans::key_inputs(k, latents, d.tokens, d.starts);
  ASSERT_EQ(x.shape(), (std::vector<std::int64_t>{P, 7}));
  const auto xv = x.to_vector();
  const auto unit = titans::unit_rows(latents).to_vector();
  for (std::int64_t p = 0; p < P; ++p) {
    for (int j = 0; j < 3; ++j) EXPECT_DOUBLE_EQ(xv[p * 7 + j], unit[p * 3 + j]);
    const std::int64_t end = p + 1 < P ? d.starts[static_cast<std::size_t>(p + 1)] - 1 : 19;
    const auto h = features(k, d.tokens, end);
    for (int j = 0; j < 4; ++j) EXPECT_DOUBLE_EQ(xv[p * 7 + 3 + j], h[j]) << p;
  }
  // Without keys the latents pass unchanged; a mismatch of patches and rows is rejected.
  EXPECT_EQ(titans::key_inputs(titans::NgramKeys{}, latents, d.tokens, d.starts).to_vector(),
            latents.to_vector());
  EXPECT_THROW(titans::key_inputs(k, nn::slice(latents, 0, 0, P - 1), d.tokens, d.starts),
               std::invalid_argument);
}

TEST(TitansNgramKeys, ReadoutNeverDependsOnATokenAfterItsPatchStart) {
  std::mt19937_64 rng(19);
  const auto k = keys_of({2, 3}, 4);
  const titans::NeuralMemory<double> memory(keyed_config());
  const auto values = titans::ByteValues<double>::init(3, 7, 7, 4);
  nn::NoGradGuard no_grad;
  const Doc d = random_doc(30, 7, rng);
  const auto P = static_cast<std::int64_t>(d.starts.size());
  const Tensord latents = random({P, 3}, rng, 1.0);
  for (const titans::ByteValues<double>* v :
       {&values, (const titans::ByteValues<double>*)nullptr}) {
    const bool some_changed = titans::testing::rows_before_each_token_unchanged(
        d, 7, 4,
        [&](const Doc& doc) { return keyed_readouts(memory, k, v, latents, doc).to_vector(); });
    EXPECT_TRUE(some_changed);  // the n-grams do reach later readouts
  }
}

TEST(TitansNgramKeys, StreamInSlicesRestoredFromItsSnapshotsEqualsTheWholeDocument) {
  std::mt19937_64 rng(23);
  titans::MemoryConfig c = keyed_config();
  c.chunk = 3;
  const auto k = keys_of({2, 5}, 4);
  const titans::NeuralMemory<double> memory(c);
  const auto values = titans::ByteValues<double>::init(2, 9, 7, 8);
  nn::NoGradGuard no_grad;
  const Doc d = random_doc(45, 9, rng);
  const auto P = static_cast<std::int64_t>(d.starts.size());
  const Tensord latents = random({P, 3}, rng, 2.0);
  for (const titans::ByteValues<double>* v :
       {&values, (const titans::ByteValues<double>*)nullptr}) {
    const auto whole = keyed_readouts(memory, k, v, latents, d).to_vector();
    for (const std::vector<std::int64_t>& slices :
         {std::vector<std::int64_t>{P}, {1, P - 1}, {4, 3, 9, P - 16}, {2, 1, 1, 5, P - 9}}) {
      titans::MagStream<double> stream(memory, v, &k);
      stream.start_document(5);
      std::vector<double> rows;
      std::int64_t at = 0;
      for (const auto n : slices) {
        const auto slice = titans::testing::slice_of(d, 45, at, n);
        titans::MagStream<double> copy(memory, v, &k);
        copy.restore(stream.state(), stream.patches(), stream.written(), stream.unwritten(),
                     stream.unwritten_tokens(), stream.history(), stream.position());
        const auto y =
            copy.push(nn::slice(latents, 0, at, at + n), slice.lengths, slice.tokens).to_vector();
        stream = copy;
        rows.insert(rows.end(), y.begin(), y.end());
        at += n;
        EXPECT_LE(static_cast<std::int64_t>(stream.history().size()), 4);
      }
      ASSERT_EQ(rows.size(), whole.size());
      for (std::size_t i = 0; i < rows.size(); ++i) EXPECT_NEAR(rows[i], whole[i], 1e-12) << i;
      EXPECT_EQ(stream.position(), 45);
    }
  }
  titans::MagStream<double> stream(memory, nullptr, &k);
  stream.start_document(1);
  EXPECT_THROW(stream.push(latents), std::invalid_argument);  // n-gram keys need the tokens
  EXPECT_THROW(stream.push(random({2, 7}, rng, 1.0), {1, 1}, {1, 2}),
               std::invalid_argument);  // latents of the memory's full width, not C
  EXPECT_THROW(stream.push(nn::slice(latents, 0, 0, 2), {1, 1}, {1, -2}), std::invalid_argument);
  EXPECT_EQ(stream.patches(), 0);  // rejected slices change nothing
  EXPECT_EQ(stream.position(), 0);
  // A snapshot whose history is longer than the n-grams need, or shorter than the position
  // implies, is refused.
  EXPECT_THROW(stream.restore(stream.state(), 0, 0, Tensord(), {}, {1, 2, 3, 4, 5}, 9),
               std::invalid_argument);
  EXPECT_THROW(stream.restore(stream.state(), 0, 0, Tensord(), {}, {1}, 9), std::invalid_argument);
}

TEST(TitansNgramKeys, IdentityInitialisedKeysRecallTheAssociationsOfAnEarlierCopy) {
  // Keys and queries = the n-gram features (W_K = W_Q = [0 ; I]), an empty linear memory of width
  // 256, theta = 0.1, no momentum or forgetting: after one copy of a random text (about 300
  // associations), the second copy reads back the value written after the same context.
  std::mt19937_64 rng(31);
  const std::int64_t C = 8, D = 256, n = 600;
  titans::MemoryConfig c;
  c.input_dim = C + D;
  c.dim = D;
  c.depth = 1;
  c.hidden = D;
  c.chunk = 8;
  c.persistent = 0;
  c.theta_max = 0.2;  // sigmoid(0) = 1/2: theta = 0.1
  c.eta_max = 0;
  c.alpha_max = 0;
  c.seed = 4;
  auto params = titans::MemoryParams<double>::init(c);
  std::vector<double> w(static_cast<std::size_t>(c.input_dim * D), 0.0);
  for (std::int64_t i = 0; i < D; ++i) w[static_cast<std::size_t>((C + i) * D + i)] = 1;
  params.w_k = Tensord::from_vector({c.input_dim, D}, w);
  params.w_q = Tensord::from_vector({c.input_dim, D}, w);
  params.m0[0] = Tensord::zeros({D, D});  // an empty memory: M_0 = 0
  const titans::NeuralMemory<double> memory(c, params);
  const auto k = keys_of({4, 8}, D);
  nn::NoGradGuard no_grad;
  Doc one = random_doc(n, 256, rng);
  Doc d = one;
  for (std::int64_t i = 0; i < n; ++i) d.tokens.push_back(one.tokens[static_cast<std::size_t>(i)]);
  for (const auto s : one.starts) d.starts.push_back(s + n);
  const auto P1 = static_cast<std::int64_t>(one.starts.size());
  const auto P = 2 * P1;
  const Tensord latents = random({P, C}, rng, 1.0);
  const Tensord x = titans::key_inputs(k, latents, d.tokens, d.starts);
  const Tensord values = nn::matmul(titans::unit_rows(x), params.w_v);  // v_j = x_j W_V
  const auto r = titans::mag_readouts(memory, x, true).to_vector();
  const auto frozen = titans::mag_readouts(memory, x, false).to_vector();
  const auto vv = values.to_vector();
  auto cosine = [&](const std::vector<double>& a, std::int64_t p, std::int64_t j) {
    double ab = 0, aa = 0, bb = 0;
    for (std::int64_t i = 0; i < D; ++i) {
      const double x1 = a[static_cast<std::size_t>(p * D + i)];
      const double x2 = vv[static_cast<std::size_t>(j * D + i)];
      ab += x1 * x2;
      aa += x1 * x1;
      bb += x2 * x2;
    }
    return ab / std::sqrt(aa * bb + 1e-300);
  };
  // Row p of copy 2 (p - 1 - P1 >= 8: its 8-gram lies inside copy 2) reads association
  // p - 1 - P1 of copy 1, whose value is x_{p - P1}.
  double recalled = 0, other = 0, base = 0;
  std::int64_t count = 0;
  for (std::int64_t p = P1 + 9; p < P; ++p) {
    recalled += cosine(r, p, p - P1);
    other += std::abs(cosine(r, p, (p - P1 + 37) % P1));
    base += std::abs(cosine(frozen, p, p - P1));
    ++count;
  }
  recalled /= static_cast<double>(count);
  other /= static_cast<double>(count);
  base /= static_cast<double>(count);
  EXPECT_GT(recalled, 0.5) << "other " << other << " frozen " << base;
  EXPECT_GT(recalled, 3 * other);  // the value of that association, not any value
  EXPECT_LT(base, 0.25);
}

TEST(TitansNgramKeys, ModelFileWithKeysRoundTripsInF32AndBf16AndInvalidKeysAreRejected) {
  titans::MemoryConfig c = keyed_config();
  titans::MagModel m;
  m.memory_config = c;
  m.memory = std::make_unique<titans::NeuralMemory<float>>(c);
  m.injection = titans::MagInjection<float>::init({1, 3, 4, 0, true, true}, 3);
  std::mt19937_64 rng(4);
  m.injection.r_gain = nn::Tensorf::randn({4}, rng, 1.0f, 1.0f, true);
  m.injection.w_level = nn::Tensorf::randn({3}, rng, 0.0f, 1.0f, true);
  m.keys = keys_of({2, 3}, 4);
  EXPECT_EQ(m.latent_dim(), 3);
  const auto dir = std::filesystem::temp_directory_path() / "neat_titans_ngram_test";
  std::filesystem::create_directories(dir);
  const auto file = dir / "mag.ckpt";
  titans::save_mag_model(file, m);
  auto back = titans::load_mag_model(file);
  EXPECT_EQ(back.keys.sizes, m.keys.sizes);
  EXPECT_EQ(back.keys.dim, 4);
  EXPECT_EQ(back.memory->params().w_k.to_vector(), m.memory->params().w_k.to_vector());
  EXPECT_TRUE(back.injection.config.readout_norm);
  EXPECT_EQ(back.injection.r_gain.to_vector(), m.injection.r_gain.to_vector());
  EXPECT_TRUE(back.injection.config.gate_level);
  EXPECT_EQ(back.injection.w_level.to_vector(), m.injection.w_level.to_vector());
  titans::save_mag_model(file, m, nn::DType::bf16);
  back = titans::load_mag_model(file);
  const auto a = m.memory->params().w_k.to_vector(), b = back.memory->params().w_k.to_vector();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i], nn::bf16_to_float(nn::float_to_bf16(a[i])));
    EXPECT_NEAR(b[i], a[i], std::abs(a[i]) * 0.004 + 1e-30);
  }
  EXPECT_THROW(titans::save_mag_model(file, m, nn::DType::f64), std::invalid_argument);
  m.keys = keys_of({2, 3}, 5);  // not a multiple of the two sizes: the loader refuses it
  titans::save_mag_model(file, m);
  EXPECT_THROW(titans::load_mag_model(file), std::runtime_error);
  m.keys = keys_of({2}, 7);  // as wide as the whole input: no latent left
  titans::save_mag_model(file, m);
  EXPECT_THROW(titans::load_mag_model(file), std::runtime_error);
  std::filesystem::remove_all(dir);
}
