// Byte ("copy") values of the MAG memory and the per-offset injection: finite differences
// (float64) of the readouts through the inner updates w.r.t. the byte table and W_V, and of the
// injection w.r.t. W_off; the target ids of patches; causality (a readout row never depends on a
// token after its patch's first position); the stream in slices with tokens equals the whole
// document; the model file round trip with byte values; the hook's offsets.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <tuple>

#include "../nn/gradcheck.hpp"
#include "neat/nn/ops.hpp"
#include "neat/titans/mag.hpp"
#include "small_memory.hpp"

using namespace neat;
using nn::Tensord;
using nn::testing::gradient_relative_error;
using nn::testing::random;
using nn::testing::weighted_sum;

namespace {

titans::MemoryConfig small_config() { return titans::testing::small_memory_config(); }

using titans::testing::Doc;
using titans::testing::random_doc;

Tensord readouts(const titans::NeuralMemory<double>& memory,
                 const titans::ByteValues<double>& values, const Tensord& latents, const Doc& d) {
  const auto P = static_cast<std::int64_t>(d.starts.size());
  const Tensord v = values.embed(
      titans::target_byte_ids(d.tokens, d.starts, 0, P, values.offsets, values.vocab), P);
  return titans::mag_readouts(memory, latents, true, nullptr, &v);
}

// A MagInjection (C = 6, d = 4, K = 3 in the tests) over x (2, 3, 6) and r (2, 3, 4) with random
// parameters in named() order, and the relative error of its gradient in every parameter, x and
// r against central finite differences.
struct InjectionCase {
  titans::MagConfig config;
  std::vector<Tensord> params;  // w_o, w_g, b_g, w_off, [r_gain], [w_level]
  Tensord x, r;
  std::vector<std::int32_t> offsets = {0, 1, 2, 5, 0, 1};

  static titans::MagInjection<double> injection(const titans::MagConfig& mc,
                                                const std::vector<Tensord>& p) {
    titans::MagInjection<double> inj;
    inj.config = mc;
    std::size_t i = 0;
    inj.w_o = p[i++], inj.w_g = p[i++], inj.b_g = p[i++], inj.w_off = p[i++];
    if (mc.readout_norm) inj.r_gain = p[i++];
    if (mc.gate_level) inj.w_level = p[i++];
    return inj;
  }

  InjectionCase(const titans::MagConfig& mc, std::uint64_t seed) : config(mc) {
    std::mt19937_64 rng(seed);
    x = random({2, 3, 6}, rng, 1.0);
    r = random({2, 3, 4}, rng, 0.3);
    params = {random({4, 6}, rng, 0.5), random({6, 6}, rng, 0.5), random({6}, rng, 0.5),
              random({4, 18}, rng, 0.5)};
    if (mc.readout_norm) params.push_back(random({4}, rng, 1.0));
    if (mc.gate_level) params.push_back(random({6}, rng, 0.5));
  }

  double gradient_error() const {
    auto inputs = params;
    inputs.push_back(x);
    inputs.push_back(r);
    const std::size_t n = params.size();
    auto f = [&](const std::vector<Tensord>& in) {
      const std::vector<Tensord> p(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(n));
      return weighted_sum(injection(config, p).inject(in[n], in[n + 1], &offsets));
    };
    return gradient_relative_error(f, inputs);
  }
};

}  // namespace

TEST(TitansCopyValues, TargetIdsAreTheBytesEachPatchPredicts) {
  // Patches [0, 1), [1, 4), [4, 6) of tokens 10..15, K = 2, V = 20 (rows of 21 per offset).
  const std::vector<std::int32_t> tokens = {10, 11, 12, 13, 14, 15};
  const auto ids = titans::target_byte_ids(tokens, {0, 1, 4}, 0, 3, 2, 20);
  // Patch 0 predicts token 1 (the next patch's first); patch 1 tokens 2, 3, 4 (K = 2 keeps
  // 2 and 3); the last patch token 5 only.
  const std::vector<std::int32_t> want = {11, 21 + 20, 12, 21 + 13, 15, 21 + 20};
  EXPECT_EQ(ids, want);
  // A slice from patch 1 on, the tokens from position 1.
  const auto tail = titans::target_byte_ids({11, 12, 13, 14, 15}, {1, 4}, 0, 2, 2, 20);
  EXPECT_EQ(tail, std::vector<std::int32_t>(want.begin() + 2, want.end()));
  EXPECT_THROW(titans::target_byte_ids({10, 99}, {0}, 0, 1, 2, 20), std::invalid_argument);
  EXPECT_THROW(titans::target_byte_ids(tokens, {0, 3, 2}, 0, 3, 2, 20), std::invalid_argument);
  EXPECT_THROW(titans::target_byte_ids(tokens, {0, 1}, 1, 2, 2, 20), std::invalid_argument);
  EXPECT_EQ(titans::offsets_in_patch({0, 1, 1, 1, 2, 2}),
            (std::vector<std::int32_t>{0, 0, 1, 2, 0, 1}));
  EXPECT_THROW(titans::offsets_in_patch({0, 2}), std::invalid_argument);
}

TEST(TitansCopyValues, ReadoutsGradientWrtByteTableAndProjectionsMatchesFiniteDifferences) {
  std::mt19937_64 rng(13);
  const titans::MemoryConfig config = small_config();
  const auto init = titans::MemoryParams<double>::init(config);
  const Tensord latents = random({7, 5}, rng, 1.0);  // 6 associations: 3 chunks, 2 writes
  const Doc d = [&] {
    Doc x;
    x.tokens = {1, 0, 2, 2, 1, 0, 1, 2, 0, 1, 2};
    x.starts = {0, 1, 3, 4, 6, 7, 9};
    return x;
  }();
  auto f = [&](const std::vector<Tensord>& in) {
    titans::MemoryParams<double> p = init;
    p.w_k = in[1], p.w_v = in[2], p.w_q = in[3];
    const titans::NeuralMemory<double> memory(config, p);
    titans::ByteValues<double> values;
    values.offsets = 2;
    values.vocab = 3;
    values.table = in[0];
    return weighted_sum(readouts(memory, values, latents, d), 5);
  };
  const std::vector<Tensord> inputs = {random({8, 5}, rng, 0.7), init.w_k.detach(),
                                       init.w_v.detach(), init.w_q.detach()};
  EXPECT_LT(gradient_relative_error(f, inputs), 1e-6);
}

TEST(TitansCopyValues, InjectionWithOffsetsGradientMatchesFiniteDifferences) {
  std::mt19937_64 rng(17);
  const titans::MagConfig mc{0, 6, 4, 3};
  const Tensord x0 = random({2, 3, 6}, rng, 1.0), r0 = random({2, 3, 4}, rng, 1.0);
  const std::vector<std::int32_t> offsets = {0, 1, 2, 5, 0, 1};  // 5 uses block K - 1
  auto f = [&](const std::vector<Tensord>& in) {
    titans::MagInjection<double> inj;
    inj.config = mc;
    inj.w_o = in[0], inj.w_g = in[1], inj.b_g = in[2], inj.w_off = in[3];
    return weighted_sum(inj.inject(in[4], in[5], &offsets));
  };
  const std::vector<Tensord> inputs = {random({4, 6}, rng, 0.5),
                                       random({6, 6}, rng, 0.5),
                                       random({6}, rng, 0.5),
                                       random({4, 18}, rng, 0.5),
                                       x0,
                                       r0};
  EXPECT_LT(gradient_relative_error(f, inputs), 1e-6);
  // The offset selects the block: position with offset 5 equals offset 2.
  titans::MagInjection<double> inj;
  inj.config = mc;
  inj.w_o = inputs[0], inj.w_g = inputs[1], inj.b_g = inputs[2], inj.w_off = inputs[3];
  const std::vector<std::int32_t> clipped = {0, 1, 2, 2, 0, 1};
  EXPECT_EQ(inj.inject(x0, r0, &offsets).to_vector(), inj.inject(x0, r0, &clipped).to_vector());
  EXPECT_THROW(inj.inject(x0, r0), std::invalid_argument);
  const std::vector<std::int32_t> negative = {0, -1, 0, 0, 0, 0};
  EXPECT_THROW(inj.inject(x0, r0, &negative), std::invalid_argument);
}

TEST(TitansCopyValues, InjectionWithReadoutNormGradientMatchesFiniteDifferences) {
  // r̂ = r / sqrt(mean(r^2) + 1e-5) * gamma before the projections (Titans §4.2).
  titans::MagConfig mc{0, 6, 4, 3};
  mc.readout_norm = true;
  const InjectionCase c(mc, 18);
  EXPECT_LT(c.gradient_error(), 1e-6);
  const auto& [x0, r0, offsets, inputs] = std::tie(c.x, c.r, c.offsets, c.params);
  // A readout scaled by 10 injects the same term (up to the epsilon); gamma = 0 injects nothing.
  titans::MagInjection<double> inj = titans::MagInjection<double>::init(mc, 2);
  inj.w_o = inputs[0], inj.w_off = inputs[3];
  const auto a = inj.inject(x0, r0, &offsets).to_vector();
  const auto b = inj.inject(x0, nn::scale(r0, 10.0), &offsets).to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-3);
  inj.r_gain = Tensord::zeros({4});
  EXPECT_EQ(inj.inject(x0, r0, &offsets).to_vector(), x0.to_vector());
  ASSERT_EQ(inj.named().size(), 5u);
  EXPECT_EQ(inj.named().back().first, "r_gain");
}

TEST(TitansCopyValues, GateLevelInputGradientMatchesFiniteDifferences) {
  // g = sigmoid(x W_g + b_g + l w_level), l = log(mean(r^2) + 1e-8) of the raw readout row.
  titans::MagConfig mc{0, 6, 4, 3};
  mc.readout_norm = true;
  mc.gate_level = true;
  const InjectionCase c(mc, 21);
  EXPECT_LT(c.gradient_error(), 1e-6);
  const auto& [x0, r0, offsets, inputs] = std::tie(c.x, c.r, c.offsets, c.params);
  // w_level = 0 (its start) is the gate without the input; a readout scaled by 10 then moves the
  // gate by log(100) w_level, while the normalised term stays the same.
  titans::MagInjection<double> with = titans::MagInjection<double>::init(mc, 2);
  auto without_config = mc;
  without_config.gate_level = false;
  titans::MagInjection<double> without = titans::MagInjection<double>::init(without_config, 2);
  for (auto* inj : {&with, &without}) inj->w_o = inputs[0], inj->w_off = inputs[3];
  ASSERT_EQ(with.named().back().first, "w_level");
  EXPECT_EQ(with.w_level.to_vector(), std::vector<double>(6, 0.0));
  EXPECT_EQ(with.inject(x0, r0, &offsets).to_vector(),
            without.inject(x0, r0, &offsets).to_vector());
  with.w_level = Tensord::full({6}, 1.0);
  const auto quiet = with.inject(x0, r0, &offsets).to_vector();
  const auto loud = with.inject(x0, nn::scale(r0, 10.0), &offsets).to_vector();
  const auto base = x0.to_vector();
  double moved_quiet = 0, moved_loud = 0;
  for (std::size_t i = 0; i < base.size(); ++i) {
    moved_quiet += std::abs(quiet[i] - base[i]);
    moved_loud += std::abs(loud[i] - base[i]);
  }
  EXPECT_GT(moved_loud, moved_quiet);  // a louder readout opens the gate (w_level > 0)
}

TEST(TitansCopyValues, ReadoutNeverDependsOnATokenAfterItsPatchStart) {
  // Row p may use tokens up to start(p) (the targets of patch p - 1 end there) and nothing
  // later: position start(p) is the first that receives row p and it has seen token start(p).
  std::mt19937_64 rng(19);
  titans::NeuralMemory<double> memory(small_config());
  const auto values = titans::ByteValues<double>::init(3, 7, 5, 4);
  nn::NoGradGuard no_grad;
  const Doc d = random_doc(30, 7, rng);
  const auto P = static_cast<std::int64_t>(d.starts.size());
  const Tensord latents = random({P, 5}, rng, 1.0);
  const bool some_changed = titans::testing::rows_before_each_token_unchanged(
      d, 7, 4, [&](const Doc& doc) { return readouts(memory, values, latents, doc).to_vector(); });
  EXPECT_TRUE(some_changed);  // the bytes do reach later readouts
}

TEST(TitansCopyValues, StreamInSlicesWithTokensEqualsTheWholeDocument) {
  std::mt19937_64 rng(23);
  titans::MemoryConfig c = small_config();
  c.chunk = 3;
  const titans::NeuralMemory<double> memory(c);
  const auto values = titans::ByteValues<double>::init(2, 9, 5, 8);
  nn::NoGradGuard no_grad;
  const Doc d = random_doc(45, 9, rng);
  const auto P = static_cast<std::int64_t>(d.starts.size());
  const Tensord latents = random({P, c.input_dim}, rng, 2.0);
  const auto whole = readouts(memory, values, latents, d).to_vector();
  for (const std::vector<std::int64_t>& slices :
       {std::vector<std::int64_t>{P}, {1, P - 1}, {4, 3, 9, P - 16}, {2, 5, P - 7}}) {
    titans::MagStream<double> stream(memory, &values);
    stream.start_document(5);
    std::vector<double> rows;
    std::int64_t at = 0;
    for (const auto n : slices) {
      const auto slice = titans::testing::slice_of(d, 45, at, n);
      const auto& lengths = slice.lengths;
      const auto& tokens = slice.tokens;
      // Restore from a snapshot of the stream before each slice: the tokens travel with it.
      titans::MagStream<double> copy(memory, &values);
      copy.restore(stream.state(), stream.patches(), stream.written(), stream.unwritten(),
                   stream.unwritten_tokens());
      const auto y = copy.push(nn::slice(latents, 0, at, at + n), lengths, tokens).to_vector();
      stream = copy;
      rows.insert(rows.end(), y.begin(), y.end());
      at += n;
    }
    ASSERT_EQ(rows.size(), whole.size());
    for (std::size_t i = 0; i < rows.size(); ++i) EXPECT_NEAR(rows[i], whole[i], 1e-12) << i;
    EXPECT_EQ(static_cast<std::int64_t>(stream.unwritten_tokens().size()),
              stream.patches() - stream.written());
    stream.finish();  // the last association takes the last patch's targets
    EXPECT_EQ(stream.written(), P - 1);
  }
  titans::MagStream<double> stream(memory, &values);
  EXPECT_THROW(stream.push(latents), std::invalid_argument);  // byte values need tokens
  EXPECT_THROW(stream.push(nn::slice(latents, 0, 0, 2), {1, 1}, {1}), std::invalid_argument);
  EXPECT_THROW(stream.push(nn::slice(latents, 0, 0, 2), {1, 1}, {1, 9}), std::invalid_argument);
  EXPECT_EQ(stream.patches(), 0);  // rejected slices change nothing
}

TEST(TitansCopyValues, ModelFileWithByteValuesRoundTripsAndHookUsesOffsets) {
  titans::MemoryConfig c = small_config();
  titans::MagModel m;
  m.memory_config = c;
  m.memory = std::make_unique<titans::NeuralMemory<float>>(c);
  m.injection = titans::MagInjection<float>::init({1, 6, 4, 3}, 3);
  std::mt19937_64 rng(2);
  m.injection.w_off = nn::Tensorf::randn({4, 18}, rng, 0.5f, 0, true);
  m.values = titans::ByteValues<float>::init(3, 11, 5, 9);
  const auto dir = std::filesystem::temp_directory_path() / "neat_titans_copy_test";
  std::filesystem::create_directories(dir);
  const auto file = dir / "mag.ckpt";
  titans::save_mag_model(file, m);
  const auto back = titans::load_mag_model(file);
  EXPECT_EQ(back.injection.config.offsets, 3);
  EXPECT_EQ(back.values.offsets, 3);
  EXPECT_EQ(back.values.vocab, 11);
  EXPECT_EQ(back.values.table.to_vector(), m.values.table.to_vector());
  EXPECT_EQ(back.injection.w_off.to_vector(), m.injection.w_off.to_vector());
  std::filesystem::remove_all(dir);

  // The hook gives position i the block of its offset in its patch.
  nn::NoGradGuard no_grad;
  const std::vector<std::int64_t> patch_of = {0, 0, 0, 1, 1};
  const std::vector<float> rows = {0.5f, -1.f, 2.f, 0.f, 1.f, 1.f, -0.5f, 0.25f};
  const auto x = nn::Tensorf::randn({1, 5, 6}, rng, 1.0f);
  const auto hooked = titans::make_readout_hook(m.injection, patch_of, rows)({0}, 5)(1, x);
  const auto r = nn::gather_rows(nn::Tensorf::from_vector({2, 4}, rows), {0, 0, 0, 1, 1}, {1, 5});
  const std::vector<std::int32_t> offsets = {0, 1, 2, 0, 1};
  EXPECT_EQ(hooked.to_vector(), m.injection.inject(x, r, &offsets).to_vector());
}
