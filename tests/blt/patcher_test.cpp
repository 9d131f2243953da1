// Entropy patching rules, checked against the BLT paper's published reference figures.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "neat/blt/patcher.hpp"

namespace neat::blt {
namespace {

// Reference figures from the BLT paper (Pagnoni et al. 2024, arXiv 2412.09871, Figure 4), as
// published in the facebookresearch/blt test fixture fixtures/tokens_with_entropies.json
// (CC BY-NC 4.0): the text "Daenerys Targaryen is in Game of Thrones, a fantasy epic by George R.R.
// Martin." as BOS, 79 bytes, EOS; entropies[i] is the next-byte entropy (nats) predicted at
// position i; threshold 1.335442066192627; 23 patches.
constexpr double kReferenceThreshold = 1.335442066192627;
const std::vector<double> kReferenceEntropies = {
    3.3949158192, 2.1656451225, 2.3216569424, 2.8214058876, 1.5249242783, 0.0401624143,
    0.0981037766, 0.0544578359, 0.3430138826, 1.0546212196, 0.25252828,   0.1494535804,
    0.0624754503, 0.001355894,  0.0050173439, 0.0052358187, 0.0011725067, 0.0010307421,
    1.0241208076, 3.6867966652, 0.4502205253, 0.0484119244, 2.2572875023, 0.3789347112,
    1.0042934418, 2.9090054035, 1.8933598995, 1.3859074116, 0.3827198744, 0.2646365762,
    1.7742085457, 0.0136727821, 0.0053820172, 0.5485631227, 0.2064044327, 0.0049266233,
    0.0005439016, 0.0007023578, 0.0004170335, 0.0054524317, 1.1938130856, 0.0238215197,
    3.1279797554, 1.3883389235, 3.0503094196, 1.695879817,  1.8551058769, 1.4570231438,
    0.0047810897, 0.026396824,  0.6633765101, 0.3141393065, 2.8411159515, 1.143143177,
    0.0520330966, 0.3398066461, 0.4140175879, 2.5563707352, 1.3370712996, 0.0227173548,
    3.4447185993, 1.8576486111, 0.8189754486, 0.6776530743, 0.0677763447, 0.212713033,
    0.1003480032, 0.1746164262, 0.4123829603, 0.5507118702, 0.1047425047, 0.0194335245,
    0.001482119,  0.0009310447, 0.0002176317, 0.0076908777, 0.0003866984, 0.0008008487,
    1.2395234108, 0.4564163089, 4.61392e-05};
const std::vector<std::uint8_t> kReferenceStarts = {
    1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1,
    1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,
    0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

TEST(EntropyPatcher, GlobalThresholdReproducesReferenceStarts) {
  ASSERT_EQ(kReferenceEntropies.size(), 81u);
  PatcherOptions o;
  o.mode = PatchMode::global;
  o.threshold = kReferenceThreshold;
  const auto starts = patch_starts(kReferenceEntropies, {}, o);
  EXPECT_EQ(starts, kReferenceStarts);
  EXPECT_EQ(patches_from_starts(starts).size(), 23u);
}

TEST(EntropyPatcher, StreamAndBatchGiveTheSameStarts) {
  for (auto mode : {PatchMode::global, PatchMode::monotonic, PatchMode::combined}) {
    PatcherOptions o;
    o.mode = mode;
    o.threshold = kReferenceThreshold;
    o.max_patch_length = 6;
    const auto batch = patch_starts(kReferenceEntropies, {}, o);
    StreamPatcher stream(o);
    for (std::size_t k = 0; k < kReferenceEntropies.size(); ++k) {
      EXPECT_EQ(stream.next(0, k == 0 ? 0.0 : kReferenceEntropies[k - 1]), batch[k] != 0)
          << patch_mode_name(mode) << " at " << k;
    }
  }
}

TEST(EntropyPatcher, PatchLengthsSumToTheInputAndPrefixesGivePrefixes) {
  std::mt19937 rng(7);
  std::exponential_distribution<double> entropy(1.0);
  std::vector<double> h(500);
  for (auto& x : h) x = entropy(rng);
  for (auto mode :
       {PatchMode::global, PatchMode::monotonic, PatchMode::combined, PatchMode::stride}) {
    PatcherOptions o;
    o.mode = mode;
    o.threshold = 1.0;
    const auto whole = patches_from_starts(patch_starts(h, {}, o));
    std::size_t total = 0;
    for (const auto& p : whole) total += p.length;
    EXPECT_EQ(total, h.size());
    for (std::size_t n : {1u, 2u, 37u, 250u}) {
      auto prefix = patches_from_starts(patch_starts(std::span<const double>(h.data(), n), {}, o));
      // every patch of the prefix but the last equals the whole's; the last is cut at n
      for (std::size_t i = 0; i + 1 < prefix.size(); ++i) EXPECT_EQ(prefix[i], whole[i]);
      EXPECT_EQ(prefix.back().start, whole[prefix.size() - 1].start);
    }
  }
}

TEST(EntropyPatcher, MeanPatchSizeGrowsWithTheThreshold) {
  double previous = 0.0;
  for (double theta : {0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0}) {
    PatcherOptions o;
    o.threshold = theta;
    auto patches = patches_from_starts(patch_starts(kReferenceEntropies, {}, o));
    const double mean = 81.0 / static_cast<double>(patches.size());
    EXPECT_GE(mean, previous) << "theta " << theta;
    previous = mean;
  }
}

TEST(EntropyPatcher, MonotonicRuleStartsWhereEntropyRisesByMoreThanTheThreshold) {
  // H: 0.1 0.2 1.5 1.6 0.1 0.9 ; predicting token k uses H_(k-1)
  const std::vector<double> h = {0.1, 0.2, 1.5, 1.6, 0.1, 0.9, 0.0};
  PatcherOptions o;
  o.mode = PatchMode::monotonic;
  o.relative_threshold = 0.5;
  // k=2: 0.2-0.1 no; k=3: 1.5-0.2 yes; k=4: 1.6-1.5 no; k=5: 0.1-1.6 no; k=6: 0.9-0.1 yes
  EXPECT_EQ(patch_starts(h, {}, o), (std::vector<std::uint8_t>{1, 1, 0, 1, 0, 0, 1}));
}

TEST(SpacePatcher, NewPatchAfterEveryByteThatIsNotALetterDigitOrContinuation) {
  const std::string text = "Hi, w\xc3\xb6rld 42!";
  std::vector<std::int32_t> tokens(text.begin(), text.end());
  for (auto& t : tokens) t &= 0xff;
  PatcherOptions o;
  o.mode = PatchMode::space;
  const auto starts = patch_starts(std::vector<double>(tokens.size(), 0.0), tokens, o);
  std::vector<std::string> words;
  for (const auto& p : patches_from_starts(starts)) words.push_back(text.substr(p.start, p.length));
  // A UTF-8 lead byte (0xC3) is neither a letter, a digit nor a continuation byte, so it ends a
  // patch too; its continuation byte (0xB6) continues the next one, as the paper's rule says.
  EXPECT_EQ(words, (std::vector<std::string>{"Hi,", " ", "w\xc3", "\xb6rld ", "42!"}));
}

TEST(StridePatcher, FixedStrideAndMaximumLength) {
  PatcherOptions o;
  o.mode = PatchMode::stride;
  o.stride = 3;
  auto patches = patches_from_starts(patch_starts(std::vector<double>(10, 0.0), {}, o));
  ASSERT_EQ(patches.size(), 4u);
  EXPECT_EQ(patches.back(), (Patch{9, 1}));
  PatcherOptions g;
  g.threshold = 100.0;  // nothing is surprising enough
  g.max_patch_length = 8;
  for (const auto& p : patches_from_starts(patch_starts(kReferenceEntropies, {}, g))) {
    EXPECT_LE(p.length, 8u);
  }
}

TEST(Calibration, BisectionMeetsATargetMeanPatchSize) {
  std::mt19937 rng(11);
  std::gamma_distribution<double> entropy(1.5, 0.8);
  std::vector<std::vector<double>> sample(20, std::vector<double>(400));
  for (auto& doc : sample) {
    for (auto& x : doc) x = entropy(rng);
  }
  for (double target : {2.0, 4.5, 8.0}) {
    auto c = calibrate_threshold(sample, {}, PatcherOptions{}, target);
    EXPECT_NEAR(c.mean_patch_bytes, target, 0.05 * target) << "target " << target;
  }
  EXPECT_THROW(calibrate_threshold(sample, {}, PatcherOptions{PatchMode::space}, 4.0),
               std::invalid_argument);
}

}  // namespace
}  // namespace neat::blt

namespace neat::blt {
namespace {

TEST(BltPatchCommand, PrintsTheReferenceStartsForTheReferenceEntropies) {
  const auto file = std::filesystem::temp_directory_path() /
                    ("neat-entropies-" + std::to_string(::getpid()) + ".json");
  std::ofstream(file) << nlohmann::json(kReferenceEntropies).dump();
  const std::string command = std::string(NEAT_BINARY) + " blt patch --entropies " + file.string() +
                              " --mode global --threshold 1.335442066192627";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  ASSERT_EQ(::pclose(pipe), 0) << out;
  std::filesystem::remove(file);
  const auto j = nlohmann::json::parse(out);
  std::vector<std::size_t> expected;
  for (std::size_t k = 0; k < kReferenceStarts.size(); ++k) {
    if (kReferenceStarts[k]) expected.push_back(k);
  }
  EXPECT_EQ(j["patch_starts"].get<std::vector<std::size_t>>(), expected);
  EXPECT_EQ(j["patches"], 23);
}

}  // namespace
}  // namespace neat::blt
