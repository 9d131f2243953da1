// The t2 component over the bus (inproc): DocEmbedding messages in, t2.adaptation and t2.stats
// out; classification against the prototypes of an experts file built on the shipped byte LM;
// a malformed embedding is rejected and counted without losing the next document.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "../bus/bus_fixture.hpp"
#include "neat/blt/byte_lm.hpp"
#include "neat/bus/typed.hpp"
#include "neat/t2/t2_component.hpp"

using namespace neat;
using bus::testing::handshake;
using bus::testing::node_options;

namespace {

std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

const std::string kCode =
    "#include <stdio.h>\n\nstatic int count_lines(const char *path) {\n  FILE *f = fopen(path, "
    "\"r\");\n  int c, n = 0;\n  while ((c = fgetc(f)) != EOF) if (c == '\\n') ++n;\n  "
    "fclose(f);\n  return n;\n}\n";
const std::string kProse =
    "A man who carries a cat by the tail learns something he can learn in no other way.\n"
    "\t\t-- Mark Twain\n%\nNever put off till tomorrow what you can do the day after.\n";

}  // namespace

TEST(T2ComponentBus, PublishesAdaptationsAndStatsForDocEmbeddings) {
  const std::string root = NEAT_SOURCE_DIR;
  const auto model = blt::load_byte_lm(root + "/models/blt/byte_lm.bf16.ckpt");
  const auto factors = t2::ModelFactors::decompose(*model, {});
  // Two experts (c, en) whose prototypes are the task embeddings of one document each, and a
  // few-shot class; the z vectors differ so that the composed weights differ.
  t2::ExpertSet experts;
  experts.matrices = factors.names;
  experts.ranks = factors.ranks();
  experts.domains = {"c", "en"};
  experts.experts = {t2::identity_expert(factors), t2::identity_expert(factors)};
  for (auto& v : experts.experts[1]) v[0] = 1.05f;
  experts.classes.push_back({"c", false, {1.0, 0.0}, t2::task_embedding(*model, bytes_of(kCode))});
  experts.classes.push_back(
      {"en", false, {0.0, 1.0}, t2::task_embedding(*model, bytes_of(kProse))});
  const auto dir =
      std::filesystem::temp_directory_path() / ("t2-bus-" + std::to_string(::getpid()));
  experts.save(dir / "experts.ckpt");

  zmq::context_t ctx(1);
  const auto e = bus::make_endpoints(bus::Transport::inproc, bus::testing::unique_run_id());
  bus::Broker broker(ctx, {{e}, 1000});
  bus::Node source(ctx, node_options("blt", e));
  bus::Node node(ctx, node_options("t2", e));
  bus::Node sink(ctx, node_options("sink", e));
  t2::T2Component t2c;
  components::Context context("t2", node, std::make_shared<spdlog::logger>("t2-test"));
  YAML::Node config;
  config["experts"] = (dir / "experts.ckpt").string();
  config["base_model"] = root + "/models/blt/byte_lm.bf16.ckpt";
  config["stats_every"] = 1;
  config["cache"]["max_entries"] = 4;
  t2c.configure(config, context);

  std::vector<blt::Adaptation> got;
  std::vector<t2::T2Stats> stats;
  bus::subscribe<blt::Adaptation>(
      sink, "t2.adaptation",
      [&](const blt::Adaptation& a, const bus::Message&) { got.push_back(a); });
  bus::subscribe<t2::T2Stats>(
      sink, "t2.stats", [&](const t2::T2Stats& s, const bus::Message&) { stats.push_back(s); });
  handshake(source, node, "blt.doc_embedding");
  handshake(node, sink, "t2.adaptation");
  handshake(node, sink, "t2.stats");

  auto send = [&](std::uint64_t doc, std::vector<float> embedding) {
    const auto n = static_cast<std::int64_t>(embedding.size());
    bus::publish(
        source, "blt.doc_embedding",
        blt::DocEmbedding{doc, "doc" + std::to_string(doc), "text", 256},
        {bus::TensorOut::from_vector("embedding", bus::DType::f32, {n}, std::move(embedding))});
  };
  // Other code and prose than the prototypes' documents.
  send(1, t2::task_embedding(*model,
                             bytes_of("#include <stdlib.h>\n\nint main(int argc, char **argv) {\n"
                                      "  if (argc < 2) return 1;\n  return atoi(argv[1]);\n}\n")));
  send(2, std::vector<float>(17, 0.5f));  // wrong dimension: rejected
  send(3, t2::task_embedding(*model, bytes_of("The early bird gets the worm, but the second mouse "
                                              "gets the cheese.\n\t\t-- Steven Wright\n")));
  send(4, t2::task_embedding(*model, bytes_of("struct node { struct node *next; int value; };\n")));

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (got.size() < 3 && std::chrono::steady_clock::now() < deadline) {
    const bool a = node.dispatch_one();
    const bool b = sink.dispatch_one();
    if (!a && !b) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  t2c.deactivate(context);
  bus::testing::pump_until(sink, [&] { return !stats.empty() && stats.back().final; });
  std::filesystem::remove_all(dir);

  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].doc_id, 1u);
  EXPECT_EQ(got[0].domain, "c");
  EXPECT_EQ(got[1].doc_id, 3u);
  EXPECT_EQ(got[1].domain, "en");
  EXPECT_EQ(got[2].domain, "c");
  EXPECT_EQ(got[1].domains, (std::vector<std::string>{"c", "en"}));
  EXPECT_EQ(got[1].alpha, (std::vector<double>{0.0, 1.0}));
  for (const auto& a : got) {
    EXPECT_GT(a.confidence, 0.5);
    EXPECT_LE(a.confidence, 1.0);
  }
  EXPECT_EQ(
      node.stats().rejected_by_reason[static_cast<std::size_t>(bus::DecodeReason::payload_invalid)],
      1u);
  EXPECT_EQ(node.stats().handler_errors, 0u);
  ASSERT_FALSE(stats.empty());
  const auto& s = stats.back();
  EXPECT_TRUE(s.final);
  EXPECT_EQ(s.documents, 3u);
  EXPECT_EQ(s.rejected, 1u);
  EXPECT_EQ(s.per_domain.at("c"), 2u);
  EXPECT_EQ(s.per_domain.at("en"), 1u);
  EXPECT_EQ(s.cache_misses, 2u);  // one composition per distinct α
  EXPECT_EQ(s.cache_hits, 1u);
  EXPECT_NEAR(s.cache_hit_rate, 1.0 / 3.0, 1e-12);
  EXPECT_GT(s.mean_confidence, 0.5);
}
