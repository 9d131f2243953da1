// Test helpers: a broker on unique inproc endpoints, and the subscription handshake.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "neat/bus/broker.hpp"
#include "neat/bus/node.hpp"

namespace neat::bus::testing {

inline std::string unique_run_id() {
  static std::atomic<int> n{0};
  return "t" + std::to_string(::getpid()) + "-" + std::to_string(n.fetch_add(1));
}

inline NodeOptions node_options(const std::string& name, const BusEndpoints& e, int hwm = 1000) {
  NodeOptions o;
  o.name = name;
  o.endpoints = e;
  o.sndhwm = hwm;
  o.rcvhwm = hwm;
  return o;
}

/// Probes `topic` from `pub` until `sub` has seen a probe (subscription live end to end).
inline void handshake(Node& pub, Node& sub, const std::string& topic) {
  const auto before = sub.stats().probes_received;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (sub.stats().probes_received == before) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "subscription never confirmed";
    pub.probe(topic);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    while (sub.dispatch_one()) {
    }
  }
}

/// Dispatches on `node` until `done()` or the timeout.
template <class Pred>
bool pump_until(Node& node, Pred done,
                std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    if (!node.dispatch_one()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

}  // namespace neat::bus::testing
