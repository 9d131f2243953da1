// The hardware profile reaching the components (issue 8): apply_profile writes each
// component's settings into its config block, the host takes them out again into the Context.
#include <gtest/gtest.h>

#include "neat/components/pipeline.hpp"

namespace neat::components {
namespace {

hardware::Profile constrained() {
  hardware::Profile p;
  p.name = "test-constrained";
  p.memory_budget_bytes = 384ull << 20;
  p.batch_size = 1;
  p.default_precision = "float32";
  p.component_precision = {{"blt", "bf16"}, {"t2", "bf16"}};
  p.component_priority = {{"blt", 3.0}, {"t2", 0.5}, {"mvot", 0.5}};
  p.malloc_arena_max = 2;
  p.trim_heap = true;
  return p;
}

PipelineSpec main_job_shape() {
  PipelineSpec spec;
  spec.name = "test";
  for (const auto& [name, kind] :
       std::vector<std::pair<std::string, std::string>>{{"source", "corpus_source"},
                                                        {"blt", "blt"},
                                                        {"t2", "t2"},
                                                        {"predict", "blt_predict"},
                                                        {"mvot", "mvot"},
                                                        {"report", "report"}}) {
    ComponentSpec c;
    c.name = name;
    c.kind = kind;
    c.config = YAML::Node(YAML::NodeType::Map);
    if (name == "predict") c.config["max_batch"] = 16;
    spec.components.push_back(c);
  }
  return spec;
}

TEST(ProfileSettings, ApplyProfileReachesEveryComponentAndIsTakenOutAgain) {
  auto spec = main_job_shape();
  const auto profile = constrained();
  apply_profile(spec, profile);
  std::map<std::string, ProfileSettings> seen;
  for (const auto& c : spec.components) {
    // What the coordinator sends: the config block as YAML text.
    YAML::Emitter out;
    out << c.config;
    YAML::Node config = YAML::Load(out.c_str());
    ASSERT_TRUE(config[kProfileConfigKey]) << c.name;
    seen[c.name] = take_profile_settings(config);
    EXPECT_FALSE(config[kProfileConfigKey]) << "the component must not see the reserved key";
    if (c.name == "predict") {
      EXPECT_EQ(config["max_batch"].as<int>(), 16);  // its own keys are kept
    }
  }
  EXPECT_EQ(seen["predict"].precision, "bf16");  // blt_predict belongs to the blt family
  EXPECT_EQ(seen["blt"].precision, "bf16");
  EXPECT_EQ(seen["t2"].precision, "bf16");
  EXPECT_EQ(seen["mvot"].precision, "float32");
  EXPECT_EQ(seen["report"].precision, "float32");  // not a neural component
  EXPECT_EQ(seen["report"].memory_grant_bytes, 0u);
  const auto grants = hardware::memory_grants(
      profile, {{"blt", "blt"}, {"t2", "t2"}, {"predict", "blt"}, {"mvot", "mvot"}});
  EXPECT_EQ(seen["predict"].memory_grant_bytes, grants.at("predict"));
  EXPECT_EQ(seen["t2"].memory_grant_bytes, grants.at("t2"));
  for (const auto& [name, s] : seen) {
    EXPECT_EQ(s.profile, "test-constrained");
    EXPECT_EQ(s.batch_size, 1);
    EXPECT_EQ(s.memory_budget_bytes, 384ull << 20);
    EXPECT_EQ(s.malloc_arena_max, 2);
    EXPECT_TRUE(s.trim_heap);
  }
}

TEST(ProfileSettings, BatchSizeCapsARequestedBatch) {
  ProfileSettings s;
  EXPECT_EQ(s.cap_batch(16), 16);  // no profile: no cap
  s.batch_size = 8;
  EXPECT_EQ(s.cap_batch(16), 8);
  EXPECT_EQ(s.cap_batch(4), 4);
  s.batch_size = 1;
  EXPECT_EQ(s.cap_batch(16), 1);
}

TEST(ProfileSettings, AbsentBlockGivesDefaultsAndMalformedOneIsRejected) {
  YAML::Node plain = YAML::Load("{batch: 2}");
  const auto d = take_profile_settings(plain);
  EXPECT_EQ(d.precision, "float32");
  EXPECT_EQ(d.batch_size, 0);
  EXPECT_EQ(d.profile, "");
  YAML::Node bad = YAML::Load("{profile: 'not json'}");
  EXPECT_THROW(take_profile_settings(bad), std::invalid_argument);
  YAML::Node fp16 = YAML::Load(R"({profile: '{"precision": "fp16"}'})");
  EXPECT_THROW(take_profile_settings(fp16), std::invalid_argument);
  const auto j = ProfileSettings{"p", "bf16", 4, 10, 20, 1, 1 << 17, true}.to_json();
  const auto back = ProfileSettings::from_json(j);
  EXPECT_EQ(back.to_json(), j);
}

}  // namespace
}  // namespace neat::components
