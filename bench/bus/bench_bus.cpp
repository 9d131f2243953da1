// bench_bus: what the neat bus costs over raw ZeroMQ in the same socket topology.
//
// Measures, in one run and for each transport (inproc, ipc, tcp on 127.0.0.1):
//  - throughput (messages/s and payload MB/s, MB = 1e6 bytes) of one publisher streaming N
//    messages of 64 B, 1 KiB, 64 KiB and 1 MiB on a lossless topic to one subscriber, median of
//    several repetitions;
//  - round-trip latency (p50, p99 in microseconds) of a ping-pong between two nodes at 64 B and
//    1 KiB.
// Latency is measured twice: threads unpinned, and every thread pinned to one core (stable on
// a small VM, and isolates the CPU neat adds). Two diagnostics follow: raw ZeroMQ with a third,
// header-sized frame (neat's frame count without its code), and the single-thread CPU cost of
// neat's envelope encode/decode.
// Both sides use the same topology: PUB -> XSUB/XPUB proxy (zmq::proxy_steerable in its own
// thread) -> SUB, the same high-water marks (1000 messages on every socket), XPUB_NODROP on the
// publisher and on the proxy's XPUB (neat's lossless plane), and the same wait idiom (drain
// without blocking, then zmq::poll). neat sends topic + msgpack header + payload frames (at
// 1 MiB: an empty payload frame and one tensor frame, 4 in all); raw sends topic + payload.
// Payloads up to 64 KiB are copied into the message on both sides; the 1 MiB payload is zero copy
// on both sides (neat: a TensorOut over a shared buffer, raw: zmq_msg_init_data over the same kind
// of buffer with a no-op deleter). Invariant: every table row compares neat and raw measured in the
// same process, interleaved repetition by repetition, with the same message count.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "neat/bus/broker.hpp"
#include "neat/bus/endpoints.hpp"
#include "neat/bus/envelope.hpp"
#include "neat/bus/node.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using neat::bus::Transport;

constexpr int kHwm = 1000;                       // messages, every socket on both sides
constexpr std::size_t kZeroCopyFrom = 1u << 20;  // payloads this large are sent zero copy
constexpr std::string_view kStreamTopic = "bench/stream";
constexpr std::string_view kPingTopic = "bench/ping";
constexpr std::string_view kPongTopic = "bench/pong";
constexpr std::string_view kSchema = "neat.BenchBytes";
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);

std::string transport_name(Transport t) {
  switch (t) {
    case Transport::inproc:
      return "inproc";
    case Transport::ipc:
      return "ipc";
    case Transport::tcp:
      return "tcp";
  }
  return "?";
}

std::string size_name(std::size_t bytes) {
  if (bytes >= (1u << 20)) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= (1u << 10)) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

// --- endpoints ------------------------------------------------------------------------------

// True if nothing listens on 127.0.0.1:port (a plain bind succeeds).
bool tcp_port_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// Hands out fresh endpoint names: unique inproc/ipc names per fixture, and blocks of free tcp
// ports from 27000 up, checked beforehand so that no measurement starts with a failed bind.
class EndpointPool {
 public:
  neat::bus::BusEndpoints neat(Transport t) {
    const int base = t == Transport::tcp ? free_ports(5) : 0;
    return neat::bus::make_endpoints(t, run_id(), "127.0.0.1", base, "/tmp");
  }
  // {XSUB side, XPUB side} of a raw proxy.
  std::pair<std::string, std::string> raw(Transport t) {
    const std::string id = run_id();
    switch (t) {
      case Transport::inproc:
        return {"inproc://raw-" + id + "-in", "inproc://raw-" + id + "-out"};
      case Transport::ipc:
        return {"ipc:///tmp/raw-" + id + "-in.sock", "ipc:///tmp/raw-" + id + "-out.sock"};
      case Transport::tcp: {
        const int base = free_ports(2);
        return {"tcp://127.0.0.1:" + std::to_string(base),
                "tcp://127.0.0.1:" + std::to_string(base + 1)};
      }
    }
    throw std::invalid_argument("unknown transport");
  }

 private:
  std::string run_id() {
    return "bench-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++);
  }
  int free_ports(int count) {
    for (; next_port_ + count < 28000; next_port_ += count) {
      bool all = true;
      for (int k = 0; k < count && all; ++k) all = tcp_port_free(next_port_ + k);
      if (all) {
        const int base = next_port_;
        next_port_ += count;
        return base;
      }
    }
    throw std::runtime_error("no block of free tcp ports in 27000..27999");
  }
  int counter_ = 0;
  int next_port_ = 27000;
};

// --- shared helpers -------------------------------------------------------------------------

// Payload bytes shared by every message of a fixture (zero-copy frames point into it).
std::shared_ptr<std::vector<std::byte>> make_payload(std::size_t size) {
  auto buf = std::make_shared<std::vector<std::byte>>(size);
  for (std::size_t i = 0; i < size; ++i) (*buf)[i] = static_cast<std::byte>(i * 131u + 7u);
  return buf;
}

zmq::pollitem_t poll_item(zmq::socket_ref socket) {
  return zmq::pollitem_t{socket.handle(), 0, ZMQ_POLLIN, 0};
}

// Waits until `done()` or throws after kHandshakeTimeout; `attempt()` sends one probe and
// waits a little for an answer.
void handshake(const std::string& what, const std::function<bool()>& done,
               const std::function<void()>& attempt) {
  const auto deadline = Clock::now() + kHandshakeTimeout;
  while (!done()) {
    if (Clock::now() > deadline) throw std::runtime_error(what + ": subscriber never joined");
    attempt();
  }
}

void no_op_free(void* /*data*/, void* /*hint*/) {}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Latency {
  double p50_us = 0;
  double p99_us = 0;
};

Latency percentiles(std::vector<double> rtt_us) {
  std::sort(rtt_us.begin(), rtt_us.end());
  auto at = [&](double q) {
    const auto i = static_cast<std::size_t>(q * static_cast<double>(rtt_us.size() - 1) + 0.5);
    return rtt_us[std::min(i, rtt_us.size() - 1)];
  };
  return {at(0.50), at(0.99)};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void set_common(zmq::socket_t& s) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, kHwm);
  s.set(zmq::sockopt::rcvhwm, kHwm);
}

// --- raw ZeroMQ side --------------------------------------------------------------------------

// XSUB/XPUB proxy in its own thread, configured like one neat broker plane (lossless).
class RawProxy {
 public:
  RawProxy(zmq::context_t& ctx, const std::string& in, const std::string& out)
      : frontend_(ctx, zmq::socket_type::xsub),
        backend_(ctx, zmq::socket_type::xpub),
        control_in_(ctx, zmq::socket_type::pair),
        control_out_(ctx, zmq::socket_type::pair) {
    set_common(frontend_);
    set_common(backend_);
    backend_.set(zmq::sockopt::xpub_nodrop, true);
    frontend_.bind(in);
    backend_.bind(out);
    const std::string control = "inproc://raw-proxy-control-" + std::to_string(next_id_++);
    control_in_.bind(control);
    control_out_.connect(control);
    thread_ = std::thread([this] {
      try {
        zmq::proxy_steerable(frontend_, backend_, zmq::socket_ref(), control_in_);
      } catch (const zmq::error_t&) {
      }
    });
  }
  ~RawProxy() {
    control_out_.send(zmq::str_buffer("TERMINATE"), zmq::send_flags::none);
    thread_.join();
  }
  RawProxy(const RawProxy&) = delete;
  RawProxy& operator=(const RawProxy&) = delete;

 private:
  static inline std::atomic<int> next_id_{0};
  zmq::socket_t frontend_, backend_, control_in_, control_out_;
  std::thread thread_;
};

zmq::socket_t raw_publisher(zmq::context_t& ctx, const std::string& in) {
  zmq::socket_t s(ctx, zmq::socket_type::pub);
  set_common(s);
  s.set(zmq::sockopt::xpub_nodrop, true);
  s.connect(in);
  return s;
}

zmq::socket_t raw_subscriber(zmq::context_t& ctx, const std::string& out, std::string_view topic) {
  zmq::socket_t s(ctx, zmq::socket_type::sub);
  set_common(s);
  s.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(64u << 20));
  s.set(zmq::sockopt::subscribe, topic);
  s.connect(out);
  return s;
}

// Sends [topic, payload]; with `header_bytes` > 0 it mirrors neat's wire format without neat's
// code: [topic, header bytes + copied payload in one frame], or, for payloads of kZeroCopyFrom
// bytes or more (sent without copying, as neat's tensor frames), [topic, header, payload].
// An empty payload is a handshake probe.
void raw_send(zmq::socket_t& pub, std::string_view topic, const std::byte* data, std::size_t size,
              std::size_t header_bytes = 0) {
  static const std::array<std::byte, 256> header{};
  zmq::message_t t(topic.data(), topic.size());
  pub.send(t, zmq::send_flags::sndmore);
  if (header_bytes > 0 && size < kZeroCopyFrom) {
    const std::size_t h = std::min(header_bytes, header.size());
    zmq::message_t combined(h + size);
    std::memcpy(combined.data(), header.data(), h);
    if (size > 0) std::memcpy(static_cast<char*>(combined.data()) + h, data, size);
    pub.send(combined, zmq::send_flags::none);
    return;
  }
  if (header_bytes > 0) {
    zmq::message_t h(header.data(), std::min(header_bytes, header.size()));
    pub.send(h, zmq::send_flags::sndmore);
  }
  zmq::message_t body = size >= kZeroCopyFrom
                            ? zmq::message_t(const_cast<std::byte*>(data), size, &no_op_free)
                            : zmq::message_t(data, size);
  pub.send(body, zmq::send_flags::none);
}

// Receives one multipart message without waiting; returns the size of its last frame (the
// payload), or nullopt if nothing is queued.
std::optional<std::size_t> raw_recv(zmq::socket_t& sub, zmq::message_t& topic,
                                    zmq::message_t& body) {
  if (!sub.recv(topic, zmq::recv_flags::dontwait)) return std::nullopt;
  if (!topic.more()) return std::size_t{0};
  do {
    (void)sub.recv(body, zmq::recv_flags::none);  // the rest of a multipart message is queued
  } while (body.more());
  return body.size();
}

class RawStream {
 public:
  RawStream(EndpointPool& pool, Transport t, std::size_t size, std::size_t header_bytes = 0)
      : ctx_(1), payload_(make_payload(size)), header_bytes_(header_bytes) {
    auto [in, out] = pool.raw(t);
    proxy_.emplace(ctx_, in, out);
    pub_.emplace(raw_publisher(ctx_, in));
    sub_.emplace(raw_subscriber(ctx_, out, kStreamTopic));
    auto item = poll_item(*sub_);
    bool joined = false;
    handshake(
        "raw stream", [&] { return joined; },
        [&] {
          raw_send(*pub_, kStreamTopic, nullptr, 0);
          zmq::poll(&item, 1, std::chrono::milliseconds(10));
          zmq::message_t topic, body;
          while (raw_recv(*sub_, topic, body)) joined = true;
        });
  }
  ~RawStream() {
    pub_.reset();
    sub_.reset();
    proxy_.reset();
  }

  // Seconds from the first send until the subscriber holds all n messages.
  double run(std::uint64_t n) {
    Clock::time_point end;
    std::thread consumer([&] {
      auto item = poll_item(*sub_);
      zmq::message_t topic, body;
      std::uint64_t received = 0;
      while (received < n) {
        auto got = raw_recv(*sub_, topic, body);
        if (!got) {
          zmq::poll(&item, 1, std::chrono::milliseconds(100));
        } else if (*got > 0) {
          ++received;  // empty bodies are late handshake probes
        }
      }
      end = Clock::now();
    });
    const auto start = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
      raw_send(*pub_, kStreamTopic, payload_->data(), payload_->size(), header_bytes_);
    }
    consumer.join();
    return seconds_between(start, end);
  }

 private:
  zmq::context_t ctx_;
  std::shared_ptr<std::vector<std::byte>> payload_;
  std::optional<RawProxy> proxy_;
  std::optional<zmq::socket_t> pub_, sub_;
  std::size_t header_bytes_;
};

// Two peers on one proxy: A publishes on ping and subscribes to pong, B the reverse and echoes
// each ping's payload back (copied, as a reply would be built).
class RawPingPong {
 public:
  RawPingPong(EndpointPool& pool, Transport t, std::size_t size)
      : ctx_(1), payload_(make_payload(size)) {
    auto [in, out] = pool.raw(t);
    proxy_.emplace(ctx_, in, out);
    a_pub_.emplace(raw_publisher(ctx_, in));
    a_sub_.emplace(raw_subscriber(ctx_, out, kPongTopic));
    b_pub_.emplace(raw_publisher(ctx_, in));
    b_sub_.emplace(raw_subscriber(ctx_, out, kPingTopic));
    echo_ = std::thread([this] {
      auto item = poll_item(*b_sub_);
      zmq::message_t topic, body;
      while (!stop_.load()) {
        if (!raw_recv(*b_sub_, topic, body)) {
          zmq::poll(&item, 1, std::chrono::milliseconds(10));
          continue;
        }
        raw_send(*b_pub_, kPongTopic, static_cast<const std::byte*>(body.data()), body.size());
      }
    });
    auto item = poll_item(*a_sub_);
    bool joined = false;
    handshake(
        "raw ping-pong", [&] { return joined; },
        [&] {
          raw_send(*a_pub_, kPingTopic, nullptr, 0);
          zmq::poll(&item, 1, std::chrono::milliseconds(10));
          zmq::message_t topic, body;
          while (raw_recv(*a_sub_, topic, body)) joined = true;
        });
  }
  ~RawPingPong() {
    stop_ = true;
    echo_.join();
    a_pub_.reset();
    a_sub_.reset();
    b_pub_.reset();
    b_sub_.reset();
    proxy_.reset();
  }

  // Round-trip times in microseconds of `rounds` sequential pings.
  std::vector<double> run(int rounds) {
    std::vector<double> rtt;
    rtt.reserve(static_cast<std::size_t>(rounds));
    auto item = poll_item(*a_sub_);
    zmq::message_t topic, body;
    for (int i = 0; i < rounds; ++i) {
      const auto t0 = Clock::now();
      raw_send(*a_pub_, kPingTopic, payload_->data(), payload_->size());
      while (true) {
        auto got = raw_recv(*a_sub_, topic, body);
        if (!got) {
          zmq::poll(&item, 1, std::chrono::milliseconds(1000));
        } else if (*got > 0) {
          break;  // empty bodies are echoes of late handshake probes
        }
      }
      rtt.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    return rtt;
  }

 private:
  zmq::context_t ctx_;
  std::shared_ptr<std::vector<std::byte>> payload_;
  std::optional<RawProxy> proxy_;
  std::optional<zmq::socket_t> a_pub_, a_sub_, b_pub_, b_sub_;
  std::atomic<bool> stop_{false};
  std::thread echo_;
};

// --- neat side --------------------------------------------------------------------------------

neat::bus::NodeOptions node_options(const std::string& name,
                                    const neat::bus::BusEndpoints& endpoints) {
  neat::bus::NodeOptions o;
  o.name = name;
  o.endpoints = endpoints;
  o.sndhwm = kHwm;
  o.rcvhwm = kHwm;
  return o;
}

neat::bus::BrokerOptions broker_options(const neat::bus::BusEndpoints& endpoints) {
  neat::bus::BrokerOptions o;
  o.bind = {endpoints};
  o.hwm = kHwm;
  return o;
}

class NeatStream {
 public:
  NeatStream(EndpointPool& pool, Transport t, std::size_t size)
      : ctx_(1), payload_(make_payload(size)) {
    const auto eps = pool.neat(t);
    broker_.emplace(ctx_, broker_options(eps));
    pub_.emplace(ctx_, node_options("bench-pub", eps));
    sub_.emplace(ctx_, node_options("bench-sub", eps));
    sub_->subscribe(std::string(kStreamTopic), std::string(kSchema), 1,
                    [this](const neat::bus::Message&) { ++received_; });
    bool joined = false;
    sub_->on_probe([&joined](const std::string&, const std::string&) { joined = true; });
    auto item = poll_item(sub_->subscriber_socket());
    handshake(
        "neat stream", [&] { return joined; },
        [&] {
          pub_->probe(kStreamTopic);
          zmq::poll(&item, 1, std::chrono::milliseconds(10));
          while (sub_->dispatch_one()) {
          }
        });
    sub_->on_probe({});
    if (size >= kZeroCopyFrom) {
      neat::bus::TensorOut tensor;
      tensor.desc =
          neat::bus::TensorDesc{"bytes", neat::bus::DType::u8, {static_cast<std::int64_t>(size)}};
      tensor.owner = payload_;
      tensor.data = payload_->data();
      tensors_.push_back(std::move(tensor));
    }
  }
  ~NeatStream() {
    pub_.reset();
    sub_.reset();
    broker_.reset();
  }

  double run(std::uint64_t n) {
    received_ = 0;
    Clock::time_point end;
    std::thread consumer([&] {
      auto item = poll_item(sub_->subscriber_socket());
      while (received_ < n) {
        if (!sub_->dispatch_one()) zmq::poll(&item, 1, std::chrono::milliseconds(100));
      }
      end = Clock::now();
    });
    const auto start = Clock::now();
    const std::span<const std::byte> payload(payload_->data(), payload_->size());
    for (std::uint64_t i = 0; i < n; ++i) {
      if (tensors_.empty()) {
        pub_->publish(kStreamTopic, kSchema, 1, payload);  // payload copied
      } else {
        pub_->publish(kStreamTopic, kSchema, 1, {}, tensors_);  // one zero-copy frame
      }
    }
    consumer.join();
    return seconds_between(start, end);
  }

 private:
  zmq::context_t ctx_;
  std::shared_ptr<std::vector<std::byte>> payload_;
  std::optional<neat::bus::Broker> broker_;
  std::optional<neat::bus::Node> pub_, sub_;
  std::vector<neat::bus::TensorOut> tensors_;
  std::uint64_t received_ = 0;
};

class NeatPingPong {
 public:
  NeatPingPong(EndpointPool& pool, Transport t, std::size_t size)
      : ctx_(1), payload_(make_payload(size)) {
    const auto eps = pool.neat(t);
    broker_.emplace(ctx_, broker_options(eps));
    a_.emplace(ctx_, node_options("bench-ping", eps));
    b_.emplace(ctx_, node_options("bench-pong", eps));
    a_->subscribe(std::string(kPongTopic), std::string(kSchema), 1,
                  [this](const neat::bus::Message&) { answered_ = true; });
    a_->on_probe([this](const std::string&, const std::string&) { joined_ = true; });
    b_->subscribe(
        std::string(kPingTopic), std::string(kSchema), 1,
        [this](const neat::bus::Message& m) { b_->publish(kPongTopic, kSchema, 1, m.payload()); });
    // B answers A's probe on ping with its own probe on pong: when A sees it, both
    // subscriptions have joined.
    b_->on_probe([this](const std::string&, const std::string&) { b_->probe(kPongTopic); });
    echo_ = std::thread([this] {
      auto item = poll_item(b_->subscriber_socket());
      while (!stop_.load()) {
        if (!b_->dispatch_one()) zmq::poll(&item, 1, std::chrono::milliseconds(10));
      }
    });
    auto item = poll_item(a_->subscriber_socket());
    handshake(
        "neat ping-pong", [&] { return joined_; },
        [&] {
          a_->probe(kPingTopic);
          zmq::poll(&item, 1, std::chrono::milliseconds(10));
          while (a_->dispatch_one()) {
          }
        });
  }
  ~NeatPingPong() {
    stop_ = true;
    echo_.join();
    a_.reset();
    b_.reset();
    broker_.reset();
  }

  std::vector<double> run(int rounds) {
    std::vector<double> rtt;
    rtt.reserve(static_cast<std::size_t>(rounds));
    auto item = poll_item(a_->subscriber_socket());
    const std::span<const std::byte> payload(payload_->data(), payload_->size());
    for (int i = 0; i < rounds; ++i) {
      answered_ = false;
      const auto t0 = Clock::now();
      a_->publish(kPingTopic, kSchema, 1, payload);
      while (!answered_) {
        if (!a_->dispatch_one()) zmq::poll(&item, 1, std::chrono::milliseconds(1000));
      }
      rtt.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    return rtt;
  }

 private:
  zmq::context_t ctx_;
  std::shared_ptr<std::vector<std::byte>> payload_;
  std::optional<neat::bus::Broker> broker_;
  std::optional<neat::bus::Node> a_, b_;
  std::atomic<bool> stop_{false};
  std::thread echo_;
  bool answered_ = false;
  bool joined_ = false;
};

// --- driver ---------------------------------------------------------------------------------

struct Options {
  bool quick = false;
  std::vector<Transport> transports{Transport::inproc, Transport::ipc, Transport::tcp};
  int reps = 5;
  double target_s = 0.5;      // per throughput measurement, on the raw side
  int latency_rounds = 5000;  // per side, over all blocks
  int latency_blocks = 20;
  int latency_warmup = 100;  // per block
  bool diagnose = true;      // also run raw with a header-sized third frame
};

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      o.quick = true;
      o.reps = 1;
      o.target_s = 0.1;
      o.latency_rounds = 500;
      o.latency_blocks = 2;
      o.latency_warmup = 50;
    } else if (arg == "--transports" && i + 1 < argc) {
      o.transports.clear();
      std::stringstream list(argv[++i]);
      std::string name;
      while (std::getline(list, name, ',')) {
        if (!name.empty()) o.transports.push_back(neat::bus::parse_transport(name));
      }
    } else if (arg == "--no-diagnose") {
      o.diagnose = false;
    } else if (arg == "--help" || arg == "-h") {
      std::printf("usage: bench_bus [--quick] [--transports inproc,ipc,tcp] [--no-diagnose]\n");
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown argument '" + arg + "' (try --help)");
    }
  }
  if (o.transports.empty()) throw std::invalid_argument("--transports: empty list");
  return o;
}

std::string cpu_model() {
  std::string model = "unknown";
  if (FILE* p = ::popen("lscpu 2>/dev/null", "r")) {
    char line[512];
    while (std::fgets(line, sizeof(line), p) != nullptr) {
      std::string s(line);
      if (s.rfind("Model name:", 0) == 0) {
        auto start = s.find_first_not_of(" \t", 11);
        model = s.substr(start, s.find_last_not_of(" \t\n") + 1 - start);
      }
    }
    ::pclose(p);
  }
  return model;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

struct ThroughputRow {
  Transport transport;
  std::size_t size;
  std::uint64_t n;
  double neat_msgs, raw_msgs;  // medians, messages/s
  double raw3_msgs;            // raw with a third, header-sized frame (diagnostic), messages/s
};

struct LatencyRow {
  bool pinned;  // every thread of both fixtures on one core
  Transport transport;
  std::size_t size;
  Latency neat, raw;
};

// Size of neat's header frame for the stream topic's schema and sender.
std::size_t neat_header_bytes() {
  neat::bus::Header h;
  h.schema = std::string(kSchema);
  h.sender = "bench-pub";
  h.seq = 123456;
  h.timestamp_ns = neat::bus::now_ns();
  return neat::bus::encode_header(h).size();
}

double load_average() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

struct EnvelopeCost {
  double neat_encode_ns;  // Header + encode(): the frames of one message
  double neat_decode_ns;  // decode() of those frames into a Message
  double raw_frames_ns;   // the two zmq::message_t a raw publisher builds
};

// Single-threaded CPU cost per message of neat's envelope, without sockets, at `size` bytes of
// copied payload.
EnvelopeCost measure_envelope(std::size_t size, int iterations) {
  const auto payload = make_payload(size);
  const std::span<const std::byte> bytes(payload->data(), payload->size());
  auto make_frames = [&](int i) {
    neat::bus::Header h;
    h.schema = std::string(kSchema);
    h.version = 1;
    h.sender = "bench-pub";
    h.seq = static_cast<std::uint64_t>(i) + 1;
    h.timestamp_ns = neat::bus::now_ns();
    return neat::bus::encode(kStreamTopic, h, bytes, {});
  };
  std::size_t sink = 0;
  auto t0 = Clock::now();
  for (int i = 0; i < iterations; ++i) sink += make_frames(i).size();
  const double encode_s = seconds_between(t0, Clock::now());
  t0 = Clock::now();
  for (int i = 0; i < iterations; ++i) {
    auto decoded = neat::bus::decode(make_frames(i), 64u << 20);
    sink += decoded.index();
  }
  const double both_s = seconds_between(t0, Clock::now());
  t0 = Clock::now();
  for (int i = 0; i < iterations; ++i) {
    zmq::message_t topic(kStreamTopic.data(), kStreamTopic.size());
    zmq::message_t body(payload->data(), payload->size());
    sink += topic.size() + body.size();
  }
  const double raw_s = seconds_between(t0, Clock::now());
  if (sink == 0) std::fprintf(stderr, "(empty)\n");  // keeps the loops observable
  const double per = 1e9 / iterations;
  return {encode_s * per, (both_s - encode_s) * per, raw_s * per};
}

// Fresh fixtures (sockets, proxy and I/O threads) for every repetition, neat and raw in
// alternating order: on two cores the scheduler's placement of those threads decides much of
// the result, and it stays put for the life of a fixture, so every repetition re-draws it.
ThroughputRow measure_throughput(EndpointPool& pool, const Options& opt, Transport t,
                                 std::size_t size) {
  std::uint64_t n = 0;
  {
    // Count calibrated on raw so that one raw measurement takes about target_s.
    RawStream raw(pool, t, size);
    const std::uint64_t n0 = std::clamp<std::uint64_t>((8u << 20) / size, 64, 100000);
    (void)raw.run(n0);
    const double rate = static_cast<double>(n0) / raw.run(n0);
    n = std::clamp<std::uint64_t>(static_cast<std::uint64_t>(rate * opt.target_s), 100, 3000000);
  }
  std::vector<double> neat_rates, raw_rates, raw3_rates;
  auto raw3_once = [&] {
    RawStream raw3(pool, t, size, neat_header_bytes());
    raw3_rates.push_back(static_cast<double>(n) / raw3.run(n));
  };
  auto neat_once = [&] {
    NeatStream neat(pool, t, size);
    neat_rates.push_back(static_cast<double>(n) / neat.run(n));
  };
  auto raw_once = [&] {
    RawStream raw(pool, t, size);
    raw_rates.push_back(static_cast<double>(n) / raw.run(n));
  };
  for (int r = 0; r < opt.reps; ++r) {
    if (r % 2 == 0) {
      neat_once();
      raw_once();
    } else {
      raw_once();
      neat_once();
    }
    if (opt.diagnose) raw3_once();
  }
  return {
      t, size, n, median(neat_rates), median(raw_rates), opt.diagnose ? median(raw3_rates) : 0.0};
}

// Round trips in blocks, each on fresh fixtures (see measure_throughput), neat and raw
// alternating; percentiles over all round trips of one side.
LatencyRow measure_latency(EndpointPool& pool, const Options& opt, Transport t, std::size_t size,
                           bool pinned) {
  std::vector<double> neat_rtt, raw_rtt;
  const int per_block = std::max(1, opt.latency_rounds / opt.latency_blocks);
  auto neat_block = [&] {
    NeatPingPong neat(pool, t, size);
    (void)neat.run(opt.latency_warmup);
    auto v = neat.run(per_block);
    neat_rtt.insert(neat_rtt.end(), v.begin(), v.end());
  };
  auto raw_block = [&] {
    RawPingPong raw(pool, t, size);
    (void)raw.run(opt.latency_warmup);
    auto v = raw.run(per_block);
    raw_rtt.insert(raw_rtt.end(), v.begin(), v.end());
  };
  for (int b = 0; b < opt.latency_blocks; ++b) {
    if (b % 2 == 0) {
      neat_block();
      raw_block();
    } else {
      raw_block();
      neat_block();
    }
  }
  return {pinned, t, size, percentiles(neat_rtt), percentiles(raw_rtt)};
}

int run(int argc, char** argv) {
  const Options opt = parse_args(argc, argv);
  std::string command = argv[0];
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  int zmq_major = 0, zmq_minor = 0, zmq_patch = 0;
  zmq_version(&zmq_major, &zmq_minor, &zmq_patch);

  std::printf("# bench_bus: neat bus vs raw ZeroMQ (PUB -> XSUB/XPUB proxy -> SUB)\n\n");
  std::printf("- command: `%s`\n", command.c_str());
  std::printf("- machine: %s, %u hardware threads\n", cpu_model().c_str(),
              std::thread::hardware_concurrency());
  std::printf("- date: %s\n", utc_now().c_str());
  std::printf("- libzmq %d.%d.%d, HWM %d on every socket, XPUB_NODROP on publishers and proxy\n",
              zmq_major, zmq_minor, zmq_patch, kHwm);
  std::printf(
      "- throughput: median of %d repetitions on fresh fixtures, N calibrated to ~%.1f s "
      "of raw time\n",
      opt.reps, opt.target_s);
  std::printf(
      "- latency: %d round trips per side in %d blocks on fresh fixtures, %d warm-up "
      "round trips per block\n",
      opt.latency_rounds, opt.latency_blocks, opt.latency_warmup);
  std::printf(
      "- neat header frame: %zu bytes (msgpack); payloads < 1 MiB copied on both "
      "sides, 1 MiB zero copy on both sides\n\n",
      neat_header_bytes());
  std::printf("- load average (1 min) at start: %.2f\n\n", load_average());
  std::fflush(stdout);

  EndpointPool pool;
  const std::vector<std::size_t> sizes{64, 1u << 10, 64u << 10, 1u << 20};
  std::vector<ThroughputRow> tput;
  for (auto t : opt.transports) {
    for (auto size : sizes) {
      const auto start = Clock::now();
      tput.push_back(measure_throughput(pool, opt, t, size));
      std::fprintf(stderr, "throughput %s %s: N=%llu, %.1f s\n", transport_name(t).c_str(),
                   size_name(size).c_str(), static_cast<unsigned long long>(tput.back().n),
                   seconds_between(start, Clock::now()));
    }
  }
  // Latency twice: threads free to float over the cores (what a deployment sees, but on a
  // small VM bimodal: a wake-up on the other, idle vCPU costs tens of microseconds), then every
  // thread on one core (only CPU work and same-core context switches: neat's added cost).
  // Threads inherit the creating thread's affinity, and fixtures are created after pinning.
  cpu_set_t original;
  CPU_ZERO(&original);
  if (::sched_getaffinity(0, sizeof(original), &original) != 0) {
    throw std::runtime_error("sched_getaffinity failed");
  }
  std::vector<LatencyRow> lat;
  for (bool pinned : {false, true}) {
    if (pinned) {
      cpu_set_t one;
      CPU_ZERO(&one);
      for (int c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &original)) {
          CPU_SET(c, &one);
          break;
        }
      }
      if (::sched_setaffinity(0, sizeof(one), &one) != 0) {
        throw std::runtime_error("sched_setaffinity failed");
      }
    }
    for (auto t : opt.transports) {
      for (std::size_t size : {std::size_t{64}, std::size_t{1} << 10}) {
        const auto start = Clock::now();
        lat.push_back(measure_latency(pool, opt, t, size, pinned));
        std::fprintf(stderr, "latency %s %s%s: %.1f s\n", transport_name(t).c_str(),
                     size_name(size).c_str(), pinned ? " pinned" : "",
                     seconds_between(start, Clock::now()));
      }
    }
  }
  if (::sched_setaffinity(0, sizeof(original), &original) != 0) {
    throw std::runtime_error("sched_setaffinity failed");
  }

  std::printf("## Throughput (lossless topic, one publisher, one subscriber)\n\n");
  std::printf(
      "| transport | size | N | neat msg/s | raw msg/s | ratio | neat MB/s | raw MB/s | "
      "ratio |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : tput) {
    const double mb = static_cast<double>(r.size) / 1e6;
    std::printf("| %s | %s | %llu | %.0f | %.0f | %.2f | %.1f | %.1f | %.2f |\n",
                transport_name(r.transport).c_str(), size_name(r.size).c_str(),
                static_cast<unsigned long long>(r.n), r.neat_msgs, r.raw_msgs,
                r.neat_msgs / r.raw_msgs, r.neat_msgs * mb, r.raw_msgs * mb,
                r.neat_msgs / r.raw_msgs);
  }
  for (bool pinned : {false, true}) {
    std::printf("\n## Round-trip latency, %s (ping-pong through one broker plane)\n\n",
                pinned ? "all threads pinned to one core" : "threads unpinned");
    std::printf(
        "| transport | size | neat p50 µs | raw p50 µs | ratio | neat p99 µs | raw p99 µs | "
        "ratio |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& r : lat) {
      if (r.pinned != pinned) continue;
      std::printf("| %s | %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |\n",
                  transport_name(r.transport).c_str(), size_name(r.size).c_str(), r.neat.p50_us,
                  r.raw.p50_us, r.neat.p50_us / r.raw.p50_us, r.neat.p99_us, r.raw.p99_us,
                  r.neat.p99_us / r.raw.p99_us);
    }
  }

  if (opt.diagnose) {
    std::printf(
        "\n## Diagnostic: how much of the gap is the header\n\n"
        "raw+hdr = raw ZeroMQ sending neat's frames without neat's code: [topic, %zu header "
        "bytes + copied payload] (1 MiB: [topic, header, zero-copy payload]), i.e. neat's frame "
        "count and wire bytes without its encoding, decoding and bookkeeping.\n\n",
        neat_header_bytes());
    std::printf(
        "| transport | size | raw msg/s | raw+hdr msg/s | raw+hdr / raw | neat / raw+hdr |\n");
    std::printf("|---|---|---:|---:|---:|---:|\n");
    for (const auto& r : tput) {
      std::printf("| %s | %s | %.0f | %.0f | %.2f | %.2f |\n", transport_name(r.transport).c_str(),
                  size_name(r.size).c_str(), r.raw_msgs, r.raw3_msgs, r.raw3_msgs / r.raw_msgs,
                  r.neat_msgs / r.raw3_msgs);
    }
    const int iterations = opt.quick ? 50000 : 300000;
    std::printf("\n## Diagnostic: CPU per message, one thread, no sockets (%d messages)\n\n",
                iterations);
    std::printf("| payload | neat encode ns | neat decode ns | raw 2 frames ns |\n");
    std::printf("|---|---:|---:|---:|\n");
    for (std::size_t size : {std::size_t{64}, std::size_t{1} << 10}) {
      const auto c = measure_envelope(size, iterations);
      std::printf("| %s | %.0f | %.0f | %.0f |\n", size_name(size).c_str(), c.neat_encode_ns,
                  c.neat_decode_ns, c.raw_frames_ns);
    }
  }
  std::printf("\n- load average (1 min) at end: %.2f\n", load_average());

  std::printf("\n## Targets\n\n");
  auto verdict = [](bool met) { return met ? "met" : "MISSED"; };
  for (const auto& r : tput) {
    const double ratio = r.neat_msgs / r.raw_msgs;
    if (r.size == (1u << 10) && r.transport == Transport::ipc) {
      std::printf("- msg/s at 1 KiB over ipc >= 0.8 x raw: %.2f, %s\n", ratio,
                  verdict(ratio >= 0.8));
    }
    if (r.size == (1u << 20)) {
      std::printf("- MB/s at 1 MiB over %s >= 0.9 x raw: %.2f, %s\n",
                  transport_name(r.transport).c_str(), ratio, verdict(ratio >= 0.9));
    }
  }
  for (const auto& r : lat) {
    const double ratio = r.neat.p50_us / r.raw.p50_us;
    std::printf("- p50 latency at %s over %s (%s) <= 1.25 x raw: %.2f, %s\n",
                size_name(r.size).c_str(), transport_name(r.transport).c_str(),
                r.pinned ? "pinned" : "unpinned", ratio, verdict(ratio <= 1.25));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_bus: %s\n", e.what());
    return 1;
  }
}
