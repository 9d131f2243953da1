// The host: runs one Component on the calling thread (its executor), connected to the bus and
// to the coordinator's control plane. The same host runs a component embedded (a thread of
// the neat process, inproc) or as its own process (`neat component NAME`, ipc or tcp).
// Invariants: every callback of the component runs on this thread; heartbeats come from a
// separate thread so that a handler blocked by lossless back-pressure is not taken for dead.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "neat/bus/node.hpp"
#include "neat/components/component.hpp"

namespace neat::components {

struct HostOptions {
  std::string name;
  std::string kind;
  bus::NodeOptions node;
  std::string control_endpoint;
  std::chrono::milliseconds heartbeat_interval{200};
  std::chrono::milliseconds stats_interval{500};
  std::chrono::milliseconds probe_interval{20};
  /// How long a test-time learning step waits for the coordinator's grant.
  std::chrono::milliseconds grant_timeout{2000};
  /// Directory for the component's outputs (reports); the coordinator may override it in the
  /// configure command.
  std::filesystem::path out_dir = ".";
  /// CPU priority: nice increment of the component's executor thread (0: unchanged), from the
  /// profile's priority (hardware::nice_for_priority). Applied when run() starts.
  int nice = 0;
};

/// Raises the calling thread's nice value by `increment` (Linux: setpriority on its thread
/// id; a thread may always lower its own priority). Returns the thread's nice value after the
/// call; throws std::system_error when the kernel refuses.
int set_thread_niceness(int increment);

/// A host snapshot: the component's own state and its node's sequence numbers, msgpack.
std::string encode_snapshot(const std::string& component_state, const bus::SequenceState& seq);
/// Inverse of encode_snapshot; throws std::runtime_error("corrupt snapshot: ...").
std::pair<std::string, bus::SequenceState> decode_snapshot(std::string_view bytes);

class ComponentHost {
 public:
  ComponentHost(zmq::context_t& context, HostOptions options, std::unique_ptr<Component> component);
  /// Registers with the coordinator and serves its commands until `shutdown` arrives or
  /// `stop` becomes true. Returns 0 after an orderly shutdown, 1 after a failure (logged and
  /// reported to the coordinator as `error`).
  int run(const std::atomic<bool>& stop);

 private:
  zmq::context_t& context_;
  HostOptions options_;
  std::unique_ptr<Component> component_;
};

}  // namespace neat::components
