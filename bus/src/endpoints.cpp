// Endpoint naming for the two bus planes and the control plane.
#include "neat/bus/endpoints.hpp"

#include <stdexcept>

namespace neat::bus {

Transport parse_transport(const std::string& name) {
  if (name == "inproc") return Transport::inproc;
  if (name == "ipc") return Transport::ipc;
  if (name == "tcp") return Transport::tcp;
  throw std::invalid_argument("unknown transport '" + name + "' (expected inproc, ipc or tcp)");
}

BusEndpoints make_endpoints(Transport transport, const std::string& run_id,
                            const std::string& tcp_host, int tcp_base_port,
                            const std::string& ipc_dir) {
  auto named = [&](const std::string& scheme, const std::string& prefix, const char* what) {
    return scheme + prefix + "neat-" + run_id + "-" + what + (scheme == "ipc://" ? ".sock" : "");
  };
  switch (transport) {
    case Transport::inproc:
      return {named("inproc://", "", "lossless-in"), named("inproc://", "", "lossless-out"),
              named("inproc://", "", "lossy-in"), named("inproc://", "", "lossy-out"),
              named("inproc://", "", "control")};
    case Transport::ipc: {
      const std::string dir = ipc_dir + "/";
      return {named("ipc://", dir, "lossless-in"), named("ipc://", dir, "lossless-out"),
              named("ipc://", dir, "lossy-in"), named("ipc://", dir, "lossy-out"),
              named("ipc://", dir, "control")};
    }
    case Transport::tcp: {
      auto at = [&](int k) {
        return "tcp://" + tcp_host + ":" + std::to_string(tcp_base_port + k);
      };
      return {at(0), at(1), at(2), at(3), at(4)};
    }
  }
  throw std::invalid_argument("make_endpoints: unknown transport");
}

}  // namespace neat::bus
