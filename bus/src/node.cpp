// Node: per-component publisher/subscriber sockets, validation, sequence tracking, statistics.
#include "neat/bus/node.hpp"

#include <spdlog/spdlog.h>

#include <zmq_addon.hpp>

namespace neat::bus {

std::string_view delivery_name(Delivery d) {
  return d == Delivery::lossless ? "lossless" : "lossy";
}

std::uint64_t NodeStats::rejected_total() const {
  std::uint64_t n = 0;
  for (auto c : rejected_by_reason) n += c;
  return n;
}

Node::Node(zmq::context_t& context, NodeOptions options)
    : options_(std::move(options)),
      pub_lossless_(context, zmq::socket_type::pub),
      pub_lossy_(context, zmq::socket_type::pub),
      sub_(context, zmq::socket_type::sub) {
  for (auto* s : {&pub_lossless_, &pub_lossy_, &sub_}) {
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, options_.sndhwm);
    s->set(zmq::sockopt::rcvhwm, options_.rcvhwm);
  }
  // Lossless: a full pipe makes send() wait instead of dropping; a short timeout slice lets
  // the wait notice the stop flag.
  pub_lossless_.set(zmq::sockopt::xpub_nodrop, true);
  pub_lossless_.set(zmq::sockopt::sndtimeo, 100);
  pub_lossless_.set(zmq::sockopt::linger, 2000);
  sub_.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(options_.max_message_bytes));
  pub_lossless_.connect(options_.endpoints.lossless_in);
  pub_lossy_.connect(options_.endpoints.lossy_in);
  sub_.connect(options_.endpoints.lossless_out);
  sub_.connect(options_.endpoints.lossy_out);
}

Delivery Node::delivery(std::string_view topic) const {
  Delivery d = Delivery::lossless;
  std::size_t best = 0;
  for (const auto& p : options_.policies) {
    if (topic.starts_with(p.prefix) && p.prefix.size() >= best) {
      best = p.prefix.size();
      d = p.delivery;
    }
  }
  return d;
}

void Node::send_frames(zmq::socket_t& socket, std::vector<zmq::message_t>& frames, bool blocking) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    while (true) {
      auto sent = socket.send(frames[i], blocking ? flags : (flags | zmq::send_flags::dontwait));
      if (sent) break;
      if (!blocking) return;  // lossy: the message is dropped and the gap counted downstream
      if (stop_ != nullptr && stop_->load()) {
        throw PublishInterrupted("publish on '" + frames[0].to_string() +
                                 "' interrupted by shutdown");
      }
    }
  }
}

void Node::publish(std::string_view topic, std::string_view schema, std::uint32_t version,
                   std::span<const std::byte> payload, std::shared_ptr<const void> payload_owner,
                   const std::vector<TensorOut>& tensors) {
  Header h;
  h.schema = std::string(schema);
  h.version = version;
  h.sender = options_.name;
  auto& seq = next_seq_[std::string(topic)];
  h.seq = ++seq;
  h.timestamp_ns = now_ns();
  h.tensors.reserve(tensors.size());
  for (const auto& t : tensors) h.tensors.push_back(t.desc);
  auto frames = encode(topic, h, payload, std::move(payload_owner), tensors);
  std::size_t bytes = 0;
  for (const auto& f : frames) bytes += f.size();
  const bool lossless = delivery(topic) == Delivery::lossless;
  send_frames(lossless ? pub_lossless_ : pub_lossy_, frames, lossless);
  auto& st = stats_.topics[std::string(topic)];
  ++st.published;
  st.published_bytes += bytes;
}

void Node::probe(std::string_view topic) {
  Header h;
  h.schema = "neat.Probe";
  h.sender = options_.name;
  h.timestamp_ns = now_ns();
  h.flags = kFlagProbe;
  auto frames = encode(topic, h, {}, {}, {});
  // Probes never block: one that is dropped is simply sent again by the handshake loop.
  send_frames(delivery(topic) == Delivery::lossless ? pub_lossless_ : pub_lossy_, frames, false);
}

void Node::subscribe(const std::string& topic_prefix, const std::string& schema,
                     std::uint32_t version, Handler handler) {
  bool prefix_known = false;
  for (const auto& s : subscriptions_) prefix_known |= s.prefix == topic_prefix;
  if (!prefix_known) sub_.set(zmq::sockopt::subscribe, topic_prefix);
  subscriptions_.push_back({topic_prefix, schema, version, std::move(handler)});
}

std::vector<std::string> Node::subscriptions() const {
  std::set<std::string> prefixes;
  for (const auto& s : subscriptions_) prefixes.insert(s.prefix);
  return {prefixes.begin(), prefixes.end()};
}

void Node::reject(const std::string& sender, const std::string& topic, DecodeReason reason,
                  const std::string& detail) {
  ++stats_.rejected_by_reason[static_cast<std::size_t>(reason)];
  ++stats_.topics[topic].rejected;
  if (logged_.emplace(sender, topic, reason).second) {
    spdlog::warn("[{}] rejected message on '{}' from '{}': {}: {} (further ones counted only)",
                 options_.name, topic, sender, reason_name(reason), detail);
  }
}

bool Node::dispatch_one() {
  std::vector<zmq::message_t> frames;
  zmq::recv_result_t got;
  try {
    got = zmq::recv_multipart(sub_, std::back_inserter(frames), zmq::recv_flags::dontwait);
  } catch (const zmq::error_t& e) {
    if (e.num() == EMSGSIZE) {
      reject("?", "?", DecodeReason::oversize, "frame larger than ZMQ_MAXMSGSIZE");
      return true;
    }
    throw;
  }
  if (!got) return false;
  const std::string topic = frames.empty() ? std::string("?") : frames[0].to_string();
  auto decoded = decode(std::move(frames), options_.max_message_bytes);
  if (auto* err = std::get_if<DecodeError>(&decoded)) {
    reject("?", topic, err->reason, err->detail);
    return true;
  }
  auto& msg = std::get<Message>(decoded);
  const auto& h = msg.header;
  if (h.flags & kFlagProbe) {
    ++stats_.probes_received;
    if (probe_handler_) probe_handler_(msg.topic, h.sender);
    return true;
  }
  auto& st = stats_.topics[msg.topic];
  auto& last = last_seq_[{h.sender, msg.topic}];
  if (h.seq > last + 1 && last != 0) st.dropped += h.seq - last - 1;
  if (last == 0 && h.seq > 1 && options_.count_initial_gap) st.dropped += h.seq - 1;
  if (h.seq <= last) ++st.publisher_restarts;
  last = h.seq;

  const Subscription* match = nullptr;
  bool schema_seen = false;
  std::uint32_t known_version = 0;
  for (const auto& s : subscriptions_) {
    if (!msg.topic.starts_with(s.prefix)) continue;
    if (s.schema.empty()) {  // subscribe_any
      match = &s;
      break;
    }
    if (s.schema != h.schema) continue;
    schema_seen = true;
    known_version = s.version;
    if (s.version == h.version) {
      match = &s;
      break;
    }
  }
  if (match == nullptr) {
    if (schema_seen) {
      reject(h.sender, msg.topic, DecodeReason::wrong_version,
             "schema '" + h.schema + "' version " + std::to_string(h.version) + ", expected " +
                 std::to_string(known_version));
    } else {
      reject(h.sender, msg.topic, DecodeReason::unknown_schema,
             "no handler for schema '" + h.schema + "'");
    }
    return true;
  }
  try {
    match->handler(msg);
    ++st.received;
    st.received_bytes += msg.wire_bytes();
  } catch (const PayloadError& e) {
    reject(h.sender, msg.topic, DecodeReason::payload_invalid, e.what());
  } catch (const PublishInterrupted&) {
    throw;
  } catch (const std::exception& e) {
    ++stats_.handler_errors;
    spdlog::error("[{}] handler for '{}' ({}) failed: {}", options_.name, msg.topic, h.schema,
                  e.what());
  }
  return true;
}

}  // namespace neat::bus
