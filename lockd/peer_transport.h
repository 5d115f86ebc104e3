#ifndef LOCKD_PEER_TRANSPORT_H_
#define LOCKD_PEER_TRANSPORT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "lockd/replica_node.h"
#include "lockd/tls.h"
#include "protos/paxos.pb.h"
#include "protos/peer.grpc.pb.h"

namespace lockd {

// Carries Paxos messages to the other replicas: one gRPC client stream and
// one sender thread per peer. Delivery is best effort, as Paxos allows: a
// message queued for a peer that is down or slow is dropped once the queue
// is full, and a broken stream is reopened with capped backoff.
class PeerTransport : public PeerSender {
 public:
  // `addresses` lists every member's peer address; messages for `self` are
  // never sent.
  // The transport carries messages of up to `max_message_bytes`. With
  // `tls` (null: plaintext), every link is mutual TLS and the peer's
  // certificate must name the member dialled (PeerName).
  PeerTransport(uint32_t self, const std::map<uint32_t, std::string>& addresses,
                size_t max_message_bytes, const TlsConfig* tls = nullptr);
  ~PeerTransport() override;

  PeerTransport(const PeerTransport&) = delete;
  PeerTransport& operator=(const PeerTransport&) = delete;

  void Send(paxospb::Message message) override;
  // Follows a configuration change: links to new members (or new
  // addresses) are opened, links to removed members closed. `addresses`
  // lists every member's peer address.
  void SetMembers(const std::map<uint32_t, std::string>& addresses);
  // Bytes queued for all peers, not yet sent.
  size_t QueuedBytes();
  // Stops every sender thread; later messages are dropped. Idempotent.
  void Stop();

  // Messages queued per peer before the oldest is dropped; the queue also
  // holds at most 2 * max_message_bytes.
  static constexpr size_t kMaxQueuedMessages = 10000;

 private:
  class Link;
  const uint32_t self_;
  const size_t max_message_bytes_;
  const TlsConfig* const tls_;
  absl::Mutex mu_;
  std::map<uint32_t, std::unique_ptr<Link>> links_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

// The receiving side: the lockd.peerpb.Peer service on the peer listener,
// a gRPC server of its own. It uses the completion-queue API with one thread
// of its own, not gRPC's callback threads, which the public services share
// with every client connection: a Paxos message never waits behind client
// calls. Accepts messages addressed to `self` from other members and hands
// them to `deliver` (on that thread; it must not block).
class PeerServer {
 public:
  struct Options {
    // host:port to listen on.
    std::string listen;
    uint32_t self = 0;
    std::set<uint32_t> members;
    // Largest message accepted (the peer limit, separate from the public
    // request limit).
    size_t max_message_bytes = 64 << 20;
    // With TLS, a stream is accepted only with a certificate signed by the
    // cell CA, and a message only if that certificate names the member it
    // claims to come from (PeerName).
    std::optional<TlsConfig> tls;
  };

  // Binds and starts serving. UNAVAILABLE if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<PeerServer>> Start(
      Options options, std::function<void(paxospb::Message)> deliver);
  // Shuts down (see Shutdown).
  ~PeerServer();
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  // The port bound (useful with port 0).
  int port() const { return port_; }
  // Follows a configuration change: messages are taken from `members`.
  void SetMembers(std::set<uint32_t> members);
  // Messages refused: not addressed to this replica, not from a member, or
  // (with TLS) from a member the stream's certificate does not name.
  uint64_t refused() const { return refused_.load(); }

  // Ends every incoming stream at once and stops the thread. Idempotent.
  void Shutdown();

 private:
  class Call;
  PeerServer(Options options, std::function<void(paxospb::Message)> deliver);
  void Run();
  // Called by a Call for each message it read.
  void Received(paxospb::Message& message,
                const std::set<uint32_t>& certified_ids);

  const Options options_;
  absl::Mutex members_mu_;
  std::set<uint32_t> members_ ABSL_GUARDED_BY(members_mu_);
  const std::function<void(paxospb::Message)> deliver_;
  peerpb::Peer::AsyncService service_;
  std::unique_ptr<grpc::ServerCompletionQueue> queue_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<uint64_t> refused_{0};
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Calls start operations under ops_mu_ only while accepting_.
  absl::Mutex ops_mu_;
  bool accepting_ ABSL_GUARDED_BY(ops_mu_) = true;
};

}  // namespace lockd

#endif  // LOCKD_PEER_TRANSPORT_H_
