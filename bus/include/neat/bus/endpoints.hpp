// Where the broker binds and nodes connect. A bus has two planes, each an XSUB/XPUB proxy:
// the lossless plane (publishers block under backpressure, XPUB_NODROP) and the lossy plane
// (ZeroMQ drops at the high-water mark; subscribers count the gaps). Keeping them apart means a
// slow lossy subscriber can never stall lossless traffic, and vice versa.
#pragma once

#include <string>

namespace neat::bus {

enum class Transport { inproc, ipc, tcp };

/// Parses "inproc" | "ipc" | "tcp"; throws std::invalid_argument otherwise.
Transport parse_transport(const std::string& name);

struct BusEndpoints {
  std::string lossless_in;   ///< XSUB side of the lossless plane: publishers connect here
  std::string lossless_out;  ///< XPUB side of the lossless plane: subscribers connect here
  std::string lossy_in;
  std::string lossy_out;
  std::string control;  ///< coordinator ROUTER: components' DEALERs connect here
};

/// Endpoints for a run. inproc and ipc names include `run_id` so that concurrent runs never
/// collide; tcp uses ports tcp_base_port .. tcp_base_port+4 on `tcp_host` (loopback by default).
BusEndpoints make_endpoints(Transport transport, const std::string& run_id,
                            const std::string& tcp_host = "127.0.0.1", int tcp_base_port = 5555,
                            const std::string& ipc_dir = "/tmp");

}  // namespace neat::bus
