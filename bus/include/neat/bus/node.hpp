// A bus node: the publishing and subscribing sockets of one component, owned by that
// component's executor thread (ZeroMQ sockets are single-threaded), plus its topic statistics.
//
// Invariants:
//  - every published message carries schema, version, sender and a per (sender, topic)
//    sequence number starting at 1;
//  - on a lossless topic publish() blocks until the bus accepts the message (or the stop flag
//    is raised); on a lossy topic it never blocks and subscribers count the gaps;
//  - a frame set that fails validation never reaches a handler: it is counted under its
//    DecodeReason and logged once per (sender, topic, reason). The node keeps running.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <zmq.hpp>

#include "neat/bus/endpoints.hpp"
#include "neat/bus/envelope.hpp"

namespace neat::bus {

enum class Delivery { lossless, lossy };
std::string_view delivery_name(Delivery d);

/// Delivery policy of every topic whose name starts with `prefix` (longest prefix wins;
/// topics matching no policy are lossless).
struct TopicPolicy {
  std::string prefix;
  Delivery delivery = Delivery::lossless;
};

/// Counters of one topic as seen by one node.
struct TopicStats {
  std::uint64_t published = 0;
  std::uint64_t published_bytes = 0;
  std::uint64_t received = 0;  ///< delivered to a handler
  std::uint64_t received_bytes = 0;
  std::uint64_t dropped = 0;     ///< sequence gaps summed over publishers
  std::uint64_t rejected = 0;    ///< frame sets that failed validation
  std::uint64_t duplicates = 0;  ///< seq already delivered (a replay after recovery): dropped
  std::uint64_t held = 0;        ///< arrived ahead of a gap on a lossless topic, delivered later
  std::uint64_t replayed = 0;    ///< re-sent from the retention buffer on request
  std::uint64_t retention_evicted = 0;  ///< retained messages dropped because the buffer was full
};

struct NodeStats {
  std::map<std::string, TopicStats> topics;
  std::array<std::uint64_t, static_cast<std::size_t>(DecodeReason::kCount)> rejected_by_reason{};
  std::uint64_t handler_errors = 0;  ///< handlers that threw something other than PayloadError
  std::uint64_t probes_received = 0;

  std::uint64_t rejected_total() const;
};

struct NodeOptions {
  std::string name;
  BusEndpoints endpoints;
  std::vector<TopicPolicy> policies;
  /// Largest accepted message in bytes over all frames; also ZMQ_MAXMSGSIZE per frame on the
  /// subscriber socket, so larger frames are cut off by ZeroMQ before reaching memory.
  std::size_t max_message_bytes = 64u << 20;
  int sndhwm = 1000;  ///< messages
  int rcvhwm = 1000;  ///< messages
  /// Count messages missed before the first one received from a publisher (seq > 1) as drops.
  /// True for pipeline members (they subscribed before publishers started); false for
  /// observers that join a running bus (`neat topic echo`).
  bool count_initial_gap = true;
  /// Messages kept per lossless topic after sending, for replay to a restarted subscriber
  /// (crash recovery); trimmed as subscribers checkpoint. 0 disables retention.
  std::size_t retention = 0;
  /// Messages held per (sender, topic) while a lossless gap is being replayed; beyond this the
  /// gap is counted as dropped and delivery goes on.
  std::size_t reorder_limit = 1u << 20;
  /// How long a lossless gap may stay open before the held messages are delivered and the gap
  /// is counted as dropped (a message lost for good must not stall the stream).
  std::chrono::milliseconds reorder_timeout{2000};
};

/// Sequence numbers of a node, saved with a component's snapshot so that a restored component
/// publishes with the same numbers (subscribers drop what they already have) and asks for
/// exactly the messages it has not processed.
struct SequenceState {
  std::map<std::string, std::uint64_t> next_seq;  ///< topic -> last seq published
  std::map<std::string, std::map<std::string, std::uint64_t>>
      last_seq;  ///< sender -> topic -> last delivered
};

/// Thrown by a typed handler when the payload does not decode as its schema; counted as
/// DecodeReason::payload_invalid.
class PayloadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Thrown by publish() on a lossless topic when the stop flag is raised while it waits.
class PublishInterrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using Handler = std::function<void(const Message&)>;
using ProbeHandler = std::function<void(const std::string& topic, const std::string& sender)>;

class Node {
 public:
  /// Creates and connects the sockets. Throws zmq::error_t on a bad endpoint.
  Node(zmq::context_t& context, NodeOptions options);

  const std::string& name() const { return options_.name; }

  /// Publishes one message. `payload` is copied into the header's frame; tensors are never
  /// copied. Blocks on lossless topics under back-pressure; throws
  /// PublishInterrupted if `stop` (see set_stop_flag) becomes true meanwhile.
  void publish(std::string_view topic, std::string_view schema, std::uint32_t version,
               std::span<const std::byte> payload, const std::vector<TensorOut>& tensors = {});

  /// Sends a subscription probe on `topic` (slow-joiner handshake). Takes no sequence number.
  void probe(std::string_view topic);

  /// Delivers messages on topics starting with `topic_prefix` and of schema `schema` to
  /// `handler`. Several schemas may share a prefix. Must be called before dispatching starts.
  void subscribe(const std::string& topic_prefix, const std::string& schema, std::uint32_t version,
                 Handler handler);

  /// Delivers every message on topics starting with `topic_prefix`, whatever its schema
  /// (observers such as `neat topic echo`).
  void subscribe_any(const std::string& topic_prefix, Handler handler) {
    subscribe(topic_prefix, "", 0, std::move(handler));
  }

  /// Called for each probe received on a subscribed topic.
  void on_probe(ProbeHandler handler) { probe_handler_ = std::move(handler); }

  /// Receives and dispatches at most one message without waiting; false if none was queued.
  bool dispatch_one();

  /// The subscriber socket, for zmq::poll.
  zmq::socket_ref subscriber_socket() { return sub_; }

  const NodeStats& stats() const { return stats_; }
  Delivery delivery(std::string_view topic) const;

  /// Lossless publish() gives up (throws PublishInterrupted) once *flag is true.
  void set_stop_flag(const std::atomic<bool>* flag) { stop_ = flag; }

  /// Topic prefixes this node subscribes to.
  std::vector<std::string> subscriptions() const;

  SequenceState sequence_state() const;
  void set_sequence_state(const SequenceState& state);

  /// Re-sends retained messages of `topic` with seq >= from_seq, in order; returns how many.
  std::size_t replay(const std::string& topic, std::uint64_t from_seq);
  /// Forgets retained messages of `topic` with seq <= up_to (every subscriber has them).
  void trim(const std::string& topic, std::uint64_t up_to);
  /// Messages currently retained over all topics.
  std::size_t retained() const;

 private:
  void send_frames(zmq::socket_t& socket, std::vector<zmq::message_t>& frames, bool blocking);
  void reject(const std::string& sender, const std::string& topic, DecodeReason reason,
              const std::string& detail);
  void deliver(const Message& msg, TopicStats& st);
  // Orders a message (or, without one, a rejected message's place) in its (sender, topic)
  // sequence: delivers it, holds it behind a lossless gap, or drops it as a duplicate.
  void sequence(const std::string& sender, const std::string& topic, std::uint64_t seq,
                bool lossless, std::optional<Message> msg);
  void release(const std::pair<std::string, std::string>& key, bool expired);
  void expire_holds();

  struct Subscription {
    std::string prefix;
    std::string schema;
    std::uint32_t version;
    Handler handler;
  };

  NodeOptions options_;
  zmq::socket_t pub_lossless_;
  zmq::socket_t pub_lossy_;
  zmq::socket_t sub_;
  std::vector<Subscription> subscriptions_;
  std::map<std::string, std::uint64_t> next_seq_;                          // topic -> seq
  std::map<std::pair<std::string, std::string>, std::uint64_t> last_seq_;  // (sender, topic)
  struct Held {
    std::map<std::uint64_t, std::optional<Message>> messages;  // nullopt: rejected, in sequence
    std::chrono::steady_clock::time_point since;
  };
  std::map<std::pair<std::string, std::string>, Held> held_;
  std::map<std::string, std::deque<std::pair<std::uint64_t, std::vector<zmq::message_t>>>>
      retained_;
  std::set<std::tuple<std::string, std::string, DecodeReason>> logged_;
  ProbeHandler probe_handler_;
  NodeStats stats_;
  const std::atomic<bool>* stop_ = nullptr;
};

}  // namespace neat::bus
