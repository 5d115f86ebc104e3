#ifndef LOCKD_ADMIN_HTTP_H_
#define LOCKD_ADMIN_HTTP_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "lockd/metrics.h"
#include "lockd/replica_loop.h"

class CivetServer;

namespace lockd {

// The replica's HTTP port (--metrics_address), for operators and
// orchestrators rather than clients:
//   /metrics  Prometheus text format (Metrics; gauges sampled per scrape)
//   /healthz  200 while the replica's loop answers within a second
//   /readyz   200 while this replica is part of a cell that has a leader
//             (it leads with its lease, or follows a known leader) and has
//             applied what it knows chosen; 503 with the reason otherwise
//   /         a status page: members, leader, indexes, sessions, locks,
//             recent leaderships (HTML)
// Served by civetweb (Debian's libcivetweb, which prometheus-cpp's own
// exposer is built on) with two threads of its own.
class AdminHttpServer {
 public:
  // Binds `address` (host:port; port 0 picks one). `loop` and `metrics`
  // must outlive the server; `peer_queue_bytes` is asked at each scrape.
  static absl::StatusOr<std::unique_ptr<AdminHttpServer>> Start(
      const std::string& address, ReplicaLoop* loop, Metrics* metrics,
      std::function<size_t()> peer_queue_bytes);
  ~AdminHttpServer();
  AdminHttpServer(const AdminHttpServer&) = delete;
  AdminHttpServer& operator=(const AdminHttpServer&) = delete;

  int port() const { return port_; }

  class Handler;

 private:
  AdminHttpServer() = default;

  std::unique_ptr<CivetServer> server_;
  std::unique_ptr<Handler> handler_;
  int port_ = 0;
};

}  // namespace lockd

#endif  // LOCKD_ADMIN_HTTP_H_
