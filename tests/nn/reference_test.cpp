// PyTorch parity: a two-block transformer's logits, loss and every parameter gradient equal
// PyTorch's on identical weights and inputs (relative error < 1e-5 in float32). The reference
// file is made by tests/reference/make_reference.py (`make test-reference`) and committed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "neat/nn/modules.hpp"

namespace neat::nn {
namespace {

struct Record {
  Shape shape;
  std::vector<float> f32;
  std::vector<int32_t> i32;
};

std::map<std::string, Record> read_reference(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  auto u32 = [&] {
    uint32_t v = 0;
    in.read(reinterpret_cast<char*>(&v), 4);
    return v;
  };
  char magic[8];
  in.read(magic, 8);
  if (std::string(magic, 8) != "NEATREF1") throw std::runtime_error(path + ": bad magic");
  std::map<std::string, Record> out;
  const uint32_t count = u32();
  for (uint32_t r = 0; r < count; ++r) {
    std::string name(u32(), '\0');
    in.read(name.data(), static_cast<std::streamsize>(name.size()));
    const uint32_t dtype = u32(), ndim = u32();
    Record rec;
    rec.shape.resize(ndim);
    in.read(reinterpret_cast<char*>(rec.shape.data()), 8 * ndim);
    const int64_t n = shape_numel(rec.shape);
    if (dtype == 0) {
      rec.f32.resize(n);
      in.read(reinterpret_cast<char*>(rec.f32.data()), 4 * n);
    } else {
      rec.i32.resize(n);
      in.read(reinterpret_cast<char*>(rec.i32.data()), 4 * n);
    }
    if (!in) throw std::runtime_error(path + ": truncated at " + name);
    out.emplace(std::move(name), std::move(rec));
  }
  return out;
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

TEST(Reference, TwoBlockTransformerForwardAndBackwardMatchPyTorch) {
  const auto ref =
      read_reference(std::string(NEAT_SOURCE_DIR) + "/tests/reference/transformer2.bin");
  const auto& cfg = ref.at("config").i32;
  TransformerConfig c;
  c.vocab_size = cfg[0];
  c.dim = cfg[1];
  c.layers = cfg[2];
  c.heads = cfg[3];
  c.mlp_hidden = cfg[4];
  c.max_seq_len = cfg[5];
  c.activation = Activation::gelu;
  const int64_t B = cfg[6], T = cfg[7];
  TransformerLM<float> lm(c);
  for (auto& [name, p] : lm.named_parameters()) {
    const Record& r = ref.at("param/" + name);
    ASSERT_EQ(r.shape, p.shape()) << name;
    Tensorf w = p;
    std::memcpy(w.data(), r.f32.data(), r.f32.size() * sizeof(float));
  }
  const Tensorf logits = lm.forward(ref.at("tokens").i32, B, T);
  EXPECT_LT(relative_error(logits.to_vector(), ref.at("logits").f32), 1e-5);
  const Tensorf loss = cross_entropy(logits, ref.at("targets").i32);
  EXPECT_LT(std::abs(loss.item() - ref.at("loss").f32[0]) / ref.at("loss").f32[0], 1e-5);
  loss.backward();
  for (const auto& [name, p] : lm.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_LT(relative_error(p.grad().to_vector(), ref.at("grad/" + name).f32), 1e-5) << name;
  }
}

}  // namespace
}  // namespace neat::nn
