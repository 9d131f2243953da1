// Test rig for blt_predict over an inproc bus: a broker, an upstream node that publishes
// `tokens` (and whatever the test adds), the predictor's node, and a sink collecting
// `blt.scores`. Shared by the predictor's bus tests (titans readouts, bf16 precision).
#pragma once

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../bus/bus_fixture.hpp"
#include "neat/blt/messages.hpp"
#include "neat/bus/typed.hpp"
#include "neat/components/messages.hpp"
#include "neat/job/predictor.hpp"

namespace neat::job::testing {

struct PredictorRig {
  zmq::context_t zctx{1};
  bus::BusEndpoints e = bus::make_endpoints(bus::Transport::inproc, bus::testing::unique_run_id());
  bus::Broker broker{zctx, {{e}, 1000}};
  bus::Node up{zctx, bus::testing::node_options("up", e)};
  bus::Node node{zctx, bus::testing::node_options("predict", e)};
  bus::Node sink{zctx, bus::testing::node_options("sink", e)};
  Predictor predictor;
  components::Context context;
  std::vector<blt::Scores> scores;
  std::int64_t configure_bytes = 0;  ///< tensor bytes the configuration left allocated

  /// Configures the predictor with `config` under `profile` and completes the subscription
  /// handshakes of `tokens`, of each topic in `inputs` (published by `up`) and of `blt.scores`.
  PredictorRig(const YAML::Node& config, const std::vector<std::string>& inputs,
               const components::ProfileSettings& profile = {},
               const std::string& logger = "predict-test")
      : context{"predict", node, std::make_shared<spdlog::logger>(logger)} {
    context.set_profile(profile);
    const auto before = nn::memory_stats().current_bytes;
    predictor.configure(config, context);
    configure_bytes = nn::memory_stats().current_bytes - before;
    bus::subscribe<blt::Scores>(
        sink, "blt.scores",
        [this](const blt::Scores& s, const bus::Message&) { scores.push_back(s); });
    bus::testing::handshake(up, node, "tokens");
    for (const auto& topic : inputs) bus::testing::handshake(up, node, topic);
    bus::testing::handshake(node, sink, "blt.scores");
  }

  /// Publishes document `doc`'s text tokens (bytes without BOS/EOS) on `tokens`.
  void tokens(std::uint64_t doc, const std::vector<std::int32_t>& item) {
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

  /// Runs the three nodes until `want` scores arrived or 60 s passed; true if they arrived.
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

/// Bits of variant `v` in a score record (a test failure if it is missing).
inline double variant_bits(const blt::Scores& s, const std::string& v) {
  for (std::size_t i = 0; i < s.variants.size(); ++i)
    if (s.variants[i] == v) return s.bits[i];
  ADD_FAILURE() << "no variant " << v;
  return 0;
}

}  // namespace neat::job::testing
