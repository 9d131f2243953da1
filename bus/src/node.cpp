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
                   std::span<const std::byte> payload, const std::vector<TensorOut>& tensors) {
  Header h;
  h.schema = std::string(schema);
  h.version = version;
  h.sender = options_.name;
  auto& seq = next_seq_[std::string(topic)];
  h.seq = ++seq;
  h.timestamp_ns = now_ns();
  const bool lossless = delivery(topic) == Delivery::lossless;
  if (!lossless) h.flags |= kFlagLossy;
  h.tensors.reserve(tensors.size());
  for (const auto& t : tensors) h.tensors.push_back(t.desc);
  auto frames = encode(topic, h, payload, tensors);
  std::size_t bytes = 0;
  for (const auto& f : frames) bytes += f.size();
  if (lossless && options_.retention > 0) {
    auto& kept = retained_[std::string(topic)];
    std::vector<zmq::message_t> copy(frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) copy[i].copy(frames[i]);  // shares buffers
    kept.emplace_back(h.seq, std::move(copy));
    if (kept.size() > options_.retention) {
      kept.pop_front();
      ++stats_.topics[std::string(topic)].retention_evicted;
    }
  }
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
  auto frames = encode(topic, h, {}, {});
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
  frames.reserve(4);
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
    reject(err->header ? err->header->sender : "?", topic, err->reason, err->detail);
    // A rejected message whose header was readable still takes its place in the sequence, so
    // that a lossless stream does not wait for it.
    if (err->header && !(err->header->flags & kFlagProbe)) {
      sequence(err->header->sender, topic, err->header->seq, !(err->header->flags & kFlagLossy),
               std::nullopt);
    }
    expire_holds();
    return true;
  }
  auto& msg = std::get<Message>(decoded);
  if (msg.header.flags & kFlagProbe) {
    ++stats_.probes_received;
    if (probe_handler_) probe_handler_(msg.topic, msg.header.sender);
    return true;
  }
  const auto sender = msg.header.sender;
  const auto seq = msg.header.seq;
  const bool lossless = !(msg.header.flags & kFlagLossy);
  sequence(sender, topic, seq, lossless, std::move(msg));
  expire_holds();
  return true;
}

void Node::sequence(const std::string& sender, const std::string& topic, std::uint64_t seq,
                    bool lossless, std::optional<Message> msg) {
  auto& st = stats_.topics[topic];
  const std::pair<std::string, std::string> key{sender, topic};
  auto& last = last_seq_[key];
  if (last == 0 && !options_.count_initial_gap) last = seq - 1;  // observer: join anywhere
  if (seq <= last) {
    ++st.duplicates;  // already delivered: a replay overlapping what arrived live
    return;
  }
  if (seq > last + 1) {
    if (lossless) {
      auto& held = held_[key];
      if (held.messages.size() < options_.reorder_limit) {
        // A gap on a lossless topic is being replayed: keep order, deliver when it is filled.
        if (held.messages.empty()) held.since = std::chrono::steady_clock::now();
        ++st.held;
        held.messages.emplace(seq, std::move(msg));
        return;
      }
    }
    st.dropped += seq - last - 1;
  }
  last = seq;
  if (msg) deliver(*msg, st);
  release(key, false);
}

void Node::release(const std::pair<std::string, std::string>& key, bool expired) {
  auto it = held_.find(key);
  if (it == held_.end()) return;
  auto& st = stats_.topics[key.second];
  auto& last = last_seq_[key];
  auto& messages = it->second.messages;
  while (!messages.empty()) {
    const auto first = messages.begin()->first;
    if (first <= last) {
      ++st.duplicates;
      messages.erase(messages.begin());
      continue;
    }
    if (first > last + 1) {
      if (!expired) break;
      st.dropped += first - last - 1;  // the gap was never filled
    }
    last = first;
    auto entry = messages.extract(messages.begin());
    if (entry.mapped()) deliver(*entry.mapped(), st);
  }
  if (messages.empty()) held_.erase(it);
}

void Node::expire_holds() {
  if (held_.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, std::string>> expired;
  for (const auto& [key, held] : held_) {
    if (now - held.since > options_.reorder_timeout) expired.push_back(key);
  }
  for (const auto& key : expired) {
    spdlog::warn("[{}] gap on lossless '{}' from '{}' not filled within {} ms: counted as dropped",
                 options_.name, key.second, key.first, options_.reorder_timeout.count());
    release(key, true);
  }
}

void Node::deliver(const Message& msg, TopicStats& st) {
  const auto& h = msg.header;
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
    return;
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
}

SequenceState Node::sequence_state() const {
  SequenceState s;
  s.next_seq = next_seq_;
  for (const auto& [key, seq] : last_seq_) s.last_seq[key.first][key.second] = seq;
  return s;
}

void Node::set_sequence_state(const SequenceState& state) {
  next_seq_ = state.next_seq;
  last_seq_.clear();
  held_.clear();
  for (const auto& [sender, topics] : state.last_seq) {
    for (const auto& [topic, seq] : topics) last_seq_[{sender, topic}] = seq;
  }
}

std::size_t Node::replay(const std::string& topic, std::uint64_t from_seq) {
  auto it = retained_.find(topic);
  if (it == retained_.end()) return 0;
  if (!it->second.empty() && it->second.front().first > from_seq) {
    spdlog::error("[{}] replay of '{}' from {} incomplete: oldest retained is {}", options_.name,
                  topic, from_seq, it->second.front().first);
  }
  std::size_t n = 0;
  for (auto& [seq, frames] : it->second) {
    if (seq < from_seq) continue;
    std::vector<zmq::message_t> copy(frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) copy[i].copy(frames[i]);
    send_frames(pub_lossless_, copy, true);
    ++n;
  }
  stats_.topics[topic].replayed += n;
  return n;
}

void Node::trim(const std::string& topic, std::uint64_t up_to) {
  auto it = retained_.find(topic);
  if (it == retained_.end()) return;
  while (!it->second.empty() && it->second.front().first <= up_to) it->second.pop_front();
}

std::size_t Node::retained() const {
  std::size_t n = 0;
  for (const auto& [topic, kept] : retained_) n += kept.size();
  return n;
}

}  // namespace neat::bus
