// The broker: two XSUB/XPUB proxies (lossless and lossy planes), each in its own thread.
// Embedded in the coordinator's process, or standalone (`neat broker`).
// Invariant: the lossless plane's XPUB never drops (XPUB_NODROP); back-pressure flows to the
// publisher, which blocks.
#pragma once

#include <thread>
#include <vector>

#include <zmq.hpp>

#include "neat/bus/endpoints.hpp"

namespace neat::bus {

struct BrokerOptions {
  /// Every endpoint set to bind (e.g. inproc for embedded nodes plus ipc or tcp for processes).
  std::vector<BusEndpoints> bind;
  /// High-water mark (messages) of each proxy socket.
  int hwm = 1000;
};

class Broker {
 public:
  /// Binds all endpoints and starts both proxies. Throws zmq::error_t if a bind fails
  /// (address in use, bad endpoint).
  Broker(zmq::context_t& context, BrokerOptions options);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

 private:
  struct Plane {
    zmq::socket_t frontend;  // XSUB
    zmq::socket_t backend;   // XPUB
    zmq::socket_t control_in;
    zmq::socket_t control_out;
    std::thread thread;
  };
  void bind_plane(Plane& plane, bool lossless, const std::vector<std::string>& in,
                  const std::vector<std::string>& out, int index);
  zmq::context_t& context_;
  BrokerOptions options_;
  Plane planes_[2];
};

}  // namespace neat::bus
