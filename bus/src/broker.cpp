// Broker: XSUB/XPUB proxies, stopped through zmq_proxy_steerable's TERMINATE command.
#include "neat/bus/broker.hpp"

#include <atomic>
#include <string>

namespace neat::bus {

namespace {
std::atomic<int> broker_counter{0};
}

Broker::Broker(zmq::context_t& context, BrokerOptions options)
    : context_(context), options_(std::move(options)) {
  std::vector<std::string> in[2], out[2];
  for (const auto& e : options_.bind) {
    in[0].push_back(e.lossless_in);
    out[0].push_back(e.lossless_out);
    in[1].push_back(e.lossy_in);
    out[1].push_back(e.lossy_out);
  }
  const int id = broker_counter.fetch_add(1);
  // Bind everything before any proxy thread starts: a failed bind then throws from here with
  // nothing running.
  bind_plane(planes_[0], true, in[0], out[0], id * 2);
  bind_plane(planes_[1], false, in[1], out[1], id * 2 + 1);
  for (auto& p : planes_) {
    p.thread = std::thread([&p] {
      try {
        zmq::proxy_steerable(p.frontend, p.backend, zmq::socket_ref(), p.control_in);
      } catch (const zmq::error_t&) {
        // context terminated: the proxy ends with it
      }
    });
  }
}

void Broker::bind_plane(Plane& p, bool lossless, const std::vector<std::string>& in,
                        const std::vector<std::string>& out, int index) {
  p.frontend = zmq::socket_t(context_, zmq::socket_type::xsub);
  p.backend = zmq::socket_t(context_, zmq::socket_type::xpub);
  for (auto* s : {&p.frontend, &p.backend}) {
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, options_.hwm);
    s->set(zmq::sockopt::rcvhwm, options_.hwm);
  }
  if (lossless) p.backend.set(zmq::sockopt::xpub_nodrop, true);
  for (const auto& e : in) p.frontend.bind(e);
  for (const auto& e : out) p.backend.bind(e);
  const std::string control = "inproc://neat-broker-control-" + std::to_string(index);
  p.control_in = zmq::socket_t(context_, zmq::socket_type::pair);
  p.control_in.bind(control);
  p.control_out = zmq::socket_t(context_, zmq::socket_type::pair);
  p.control_out.connect(control);
}

Broker::~Broker() {
  for (auto& p : planes_) {
    if (!p.thread.joinable()) continue;
    try {
      p.control_out.send(zmq::str_buffer("TERMINATE"), zmq::send_flags::none);
    } catch (const zmq::error_t&) {
    }
    p.thread.join();
  }
}

}  // namespace neat::bus
