// Gradient isolation at the type level: no message type of the pipeline has a field that
// carries gradient or optimizer state; messages carry values only.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "neat/components/messages.hpp"

namespace neat::components {
namespace {

template <class T>
std::vector<std::string> field_names() {
  msgpack::sbuffer buf;
  msgpack::pack(buf, T{});
  auto j = nlohmann::json::from_msgpack(std::string(buf.data(), buf.size()));
  std::vector<std::string> names;
  for (const auto& [k, v] : j.items()) names.push_back(k);
  return names;
}

TEST(Messages, NoMessageTypeCarriesGradientState) {
  const std::vector<std::vector<std::string>> all = {
      field_names<InputChunk>(), field_names<EndOfStream>(), field_names<DocByteStats>(),
      field_names<UnigramDoc>()};
  for (const auto& names : all) {
    ASSERT_FALSE(names.empty());
    for (const auto& n : names) {
      for (const char* banned : {"grad", "momentum", "optimizer", "adam", "delta"}) {
        EXPECT_EQ(n.find(banned), std::string::npos) << "field '" << n << "'";
      }
    }
  }
}

}  // namespace
}  // namespace neat::components
