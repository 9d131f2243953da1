// `neat topic list | echo | hz`: live introspection of a running bus. An observer node joins
// the run's broker over its inter-process endpoints (ipc or tcp) and reports what it sees:
// per topic the message rate, bytes/s and sequence-gap drops; `echo` prints each message's
// header and msgpack payload as JSON.
#pragma once

#include <atomic>
#include <chrono>
#include <iosfwd>
#include <optional>
#include <string>

#include "neat/bus/endpoints.hpp"

namespace neat::cli {

struct TopicToolOptions {
  bus::BusEndpoints endpoints;
  std::string prefix;  ///< topic prefix ("" = all)
  std::chrono::milliseconds window{1000};
  std::optional<std::size_t> count;  ///< stop after this many messages (echo) or windows (hz)
};

/// Prints each message as one JSON line: topic, header fields, tensors (dtype, shape), payload.
int topic_echo(const TopicToolOptions& options, std::ostream& out, const std::atomic<bool>& stop);
/// Prints, once per window, rate (msg/s), bandwidth (bytes/s) and drops per topic.
int topic_hz(const TopicToolOptions& options, std::ostream& out, const std::atomic<bool>& stop);
/// Listens for one window and prints the topics seen with their rates and drops.
int topic_list(const TopicToolOptions& options, std::ostream& out, const std::atomic<bool>& stop);

}  // namespace neat::cli
