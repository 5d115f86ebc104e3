#ifndef LOCKD_PEER_TRANSPORT_H_
#define LOCKD_PEER_TRANSPORT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "lockd/replica_node.h"
#include "protos/paxos.pb.h"
#include "protos/peer.grpc.pb.h"

namespace lockd {

// Carries Paxos messages to the other replicas: one gRPC client stream and
// one sender thread per peer. Delivery is best effort, as Paxos allows: a
// message queued for a peer that is down or slow is dropped once the queue
// is full, and a broken stream is reopened with capped backoff.
class PeerTransport : public PeerSender {
 public:
  // `addresses` lists every member; messages for `self` are never sent.
  // The transport carries messages of up to `max_message_bytes`.
  PeerTransport(uint32_t self, const std::map<uint32_t, std::string>& addresses,
                size_t max_message_bytes);
  ~PeerTransport() override;

  PeerTransport(const PeerTransport&) = delete;
  PeerTransport& operator=(const PeerTransport&) = delete;

  void Send(paxospb::Message message) override;
  // Stops every sender thread; later messages are dropped. Idempotent.
  void Stop();

  // Messages queued per peer before the oldest is dropped; the queue also
  // holds at most 2 * max_message_bytes.
  static constexpr size_t kMaxQueuedMessages = 10000;

 private:
  class Link;
  std::map<uint32_t, std::unique_ptr<Link>> links_;
};

// The receiving side: the lockd.peerpb.Peer service. Accepts messages
// addressed to `self` from other members and hands them to `deliver`.
class PeerService : public peerpb::Peer::CallbackService {
 public:
  PeerService(uint32_t self, std::set<uint32_t> members,
              std::function<void(paxospb::Message)> deliver);

  grpc::ServerReadReactor<paxospb::Message>* Send(
      grpc::CallbackServerContext* context,
      peerpb::SendResponse* response) override;

  // Ends every open incoming stream and refuses new ones (before a server
  // shutdown, which would otherwise wait for the peers to hang up).
  void Close();

 private:
  class Reader;
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::set<Reader*> readers_ ABSL_GUARDED_BY(mu_);
  const uint32_t self_;
  const std::set<uint32_t> members_;
  const std::function<void(paxospb::Message)> deliver_;
};

}  // namespace lockd

#endif  // LOCKD_PEER_TRANSPORT_H_
