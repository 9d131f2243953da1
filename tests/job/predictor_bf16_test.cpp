// blt_predict under the profile's `precision: bf16` (issue 8): the byte LM with bfloat16 Linear
// weights and the Transformer² variant's adapted copy that shares them (its own float32 MLP
// matrices only) score a document as the float32 predictor does: the base LM to float rounding,
// the t2 variant within the stated cost of bf16 U and V, with fewer tensor bytes.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "../bus/bus_fixture.hpp"
#include "neat/blt/byte_lm.hpp"
#include "neat/blt/messages.hpp"
#include "neat/bus/typed.hpp"
#include "neat/components/messages.hpp"
#include "neat/job/predictor.hpp"

namespace neat::job {
namespace {

using bus::testing::handshake;
using bus::testing::node_options;

const std::filesystem::path kSource(NEAT_SOURCE_DIR);

// One predictor with the t2 variant on, configured under `precision`.
struct Rig {
  zmq::context_t zctx{1};
  bus::BusEndpoints e = bus::make_endpoints(bus::Transport::inproc, bus::testing::unique_run_id());
  bus::Broker broker{zctx, {{e}, 1000}};
  bus::Node up{zctx, node_options("up", e)};
  bus::Node node{zctx, node_options("predict", e)};
  bus::Node sink{zctx, node_options("sink", e)};
  Predictor predictor;
  components::Context context{"predict", node, std::make_shared<spdlog::logger>("predict-bf16")};
  std::vector<blt::Scores> scores;
  std::int64_t configure_bytes = 0;  ///< tensor bytes the configuration left allocated

  explicit Rig(const std::string& precision) {
    components::ProfileSettings profile;
    profile.precision = precision;
    context.set_profile(profile);
    YAML::Node c;
    c["adaptation"] = "t2.adaptation";
    c["experts"] = (kSource / "models/t2/experts.ckpt").string();
    c["wait_ms"] = 20000;
    const auto before = nn::memory_stats().current_bytes;
    predictor.configure(c, context);
    configure_bytes = nn::memory_stats().current_bytes - before;
    bus::subscribe<blt::Scores>(
        sink, "blt.scores",
        [this](const blt::Scores& s, const bus::Message&) { scores.push_back(s); });
    handshake(up, node, "tokens");
    handshake(up, node, "t2.adaptation");
    handshake(node, sink, "blt.scores");
  }
  void send(std::uint64_t doc, const std::vector<std::int32_t>& item, const std::string& domain) {
    blt::Adaptation a;
    a.doc_id = doc;
    a.domain = domain;
    a.confidence = 1.0;
    a.domains = {domain};
    a.alpha = {1.0};
    bus::publish(up, "t2.adaptation", a);
    components::Tokens t;
    t.doc_id = doc;
    t.path = "doc" + std::to_string(doc);
    t.modality = "text";
    t.item_bytes = item.size();
    t.token_count = item.size();
    bus::publish(up, "tokens", t,
                 {bus::TensorOut::from_vector("tokens", bus::DType::i32,
                                              {static_cast<std::int64_t>(item.size())}, item)});
  }
  bool pump(std::size_t want) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (scores.size() < want && std::chrono::steady_clock::now() < deadline) {
      const bool a = node.dispatch_one();
      const bool b = predictor.step(context);
      const bool c = sink.dispatch_one();
      if (!a && !b && !c) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return scores.size() >= want;
  }
};

double variant_bits(const blt::Scores& s, const std::string& v) {
  for (std::size_t i = 0; i < s.variants.size(); ++i)
    if (s.variants[i] == v) return s.bits[i];
  ADD_FAILURE() << "no variant " << v;
  return 0;
}

TEST(PredictorBf16, Bf16ByteLMAndSharedAdaptedCopyScoreAsFloat32WithFewerBytes) {
  std::ifstream in(kSource / "docs/architecture.md", std::ios::binary);
  std::vector<std::uint8_t> text((std::istreambuf_iterator<char>(in)), {});
  text.resize(700);
  const auto doc = blt::document_tokens(text);  // BOS, bytes, EOS
  const std::vector<std::int32_t> item(doc.begin() + 1, doc.end() - 1);

  Rig f32("float32");
  Rig bf16("bf16");
  f32.send(1, item, "en");
  bf16.send(1, item, "en");
  ASSERT_TRUE(f32.pump(1));
  ASSERT_TRUE(bf16.pump(1));
  const auto bytes = static_cast<double>(f32.scores[0].bytes);
  const double base_f32 = variant_bits(f32.scores[0], "base") / bytes;
  const double base_bf16 = variant_bits(bf16.scores[0], "base") / bytes;
  const double t2_f32 = variant_bits(f32.scores[0], "t2") / bytes;
  const double t2_bf16 = variant_bits(bf16.scores[0], "t2") / bytes;
  std::cout << "bits per byte: base " << base_f32 << " (float32) " << base_bf16 << " (bf16); t2 "
            << t2_f32 << " (float32) " << t2_bf16 << " (bf16)\n"
            << "tensor bytes after configure: float32 " << f32.configure_bytes << ", bf16 "
            << bf16.configure_bytes << "\n";
  EXPECT_NE(t2_f32, base_f32);             // the adaptation was applied
  EXPECT_NEAR(base_bf16, base_f32, 1e-5);  // the shipped weights are bf16 values: rounding only
  EXPECT_NEAR(t2_bf16, t2_f32, 1e-3);      // stated cost: 0.001 bits per byte (bf16 U, V)
  // The bf16 model (half its Linear bytes), bf16 U and V, and an adapted copy of the MLP only.
  EXPECT_LT(bf16.configure_bytes, f32.configure_bytes - 8 * 1024 * 1024);
}

}  // namespace
}  // namespace neat::job
