#ifndef LOCKD_REPLICA_LOOP_H_
#define LOCKD_REPLICA_LOOP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/metrics.h"
#include "lockd/replica_node.h"
#include "paxos/storage.h"
#include "protos/lockd.pb.h"
#include "protos/paxos.pb.h"
#include "protos/state.pb.h"

namespace lockd {

// The I/O loop of one replica: a thread that owns a ReplicaNode and its
// storage and feeds it time, peer messages and client requests.
//
// Each turn it delivers the ticks elapsed on a monotonic clock (missed ticks
// included, and again right before each read or keep-alive so that a loop
// that stalled in an fsync never serves on an expired lease), steps peer
// messages, runs the requests posted since the last turn, and processes the
// resulting Ready: the turn's proposals (group commit: many commands per
// Paxos batch) and acceptances are persisted by one synced write. Every public
// method may be called from any thread; callbacks run on the loop thread and
// must not block.
class ReplicaLoop {
 public:
  using ResultCallback = ReplicaNode::ResultCallback;
  using ReadFunction = ReplicaNode::ReadFunction;
  using StatusCallback = std::function<void(absl::Status)>;

  // Loads the durable state and builds the node; does not start the thread.
  // With `metrics` (may be null; must outlive the loop), synced writes and
  // keep-alives are counted there.
  static absl::StatusOr<std::unique_ptr<ReplicaLoop>> Create(
      const ReplicaNodeOptions& options, absl::Duration tick,
      std::unique_ptr<paxos::Storage> storage, PeerSender* sender,
      Metrics* metrics = nullptr);
  ~ReplicaLoop();

  void Start();
  // Starts shutting down: every waiting caller and stream gets UNAVAILABLE,
  // and so does every later request; Paxos keeps running. Call before
  // shutting the gRPC server down, so that no call stays parked.
  void Drain();
  // Stops the thread. Requests posted afterwards are refused at once with
  // UNAVAILABLE. Idempotent.
  void Stop();

  // A message from a peer.
  void Deliver(paxospb::Message message);

  // A fresh caller id for Submit/Cancel.
  uint64_t NewCaller() { return next_caller_.fetch_add(1); }
  // See ReplicaNode::Submit and Cancel.
  void Submit(statepb::Command command, uint64_t caller, ResultCallback done);
  void Cancel(uint64_t caller);
  // Runs `read` under the leader lease (ReplicaNode::Read).
  void Read(ReadFunction read, StatusCallback done);
  // Runs `read` on any replica (status pages).
  void Inspect(ReadFunction read, StatusCallback done);
  // See ReplicaNode::KeepAlive / Observe.
  void KeepAlive(std::shared_ptr<SessionListener> listener,
                 v1::KeepAliveRequest request);
  void RemoveSessionListener(SessionListener* listener);
  void Observe(std::string name, std::shared_ptr<ElectionListener> listener);
  void RemoveElectionListener(ElectionListener* listener);

  // See ReplicaNode::ChangeMembership and HandOver.
  void ChangeMembership(ReplicaNode::MembershipEdit edit,
                        ReplicaNode::ChangeCallback done);
  void HandOver(uint32_t target,
                std::function<void(absl::StatusOr<uint32_t>)> done);
  // Runs `read` on the loop thread against the node (metrics, status page;
  // like Inspect, whether or not this replica serves).
  void InspectNode(std::function<void(const ReplicaNode&)> read);
  // See ReplicaNode::SetMembershipObserver. Call before Start(); the
  // observer then runs on the loop thread.
  void SetMembershipObserver(
      std::function<void(const paxospb::Membership&)> observer);
  // Called on the loop thread whenever this replica starts or stops serving.
  void SetServingCallback(std::function<void(bool)> callback);

 private:
  struct Inbox {
    std::vector<paxospb::Message> messages;
    std::vector<std::function<void()>> tasks;
    bool stop = false;
  };

  ReplicaLoop(absl::Duration tick, std::unique_ptr<paxos::Storage> storage,
              std::unique_ptr<ReplicaNode> node, Metrics* metrics);

  void Post(std::function<void()> task);
  void Run();
  // One turn of the loop; false once asked to stop.
  bool Turn();
  void DeliverElapsedTicks();
  void UpdateServing();

  const absl::Duration tick_;
  const std::unique_ptr<paxos::Storage> storage_;
  const std::unique_ptr<ReplicaNode> node_;
  Metrics* const metrics_;

  absl::Mutex mu_;
  Inbox inbox_ ABSL_GUARDED_BY(mu_);
  // Set once the thread has exited: Post() then runs tasks at once (under
  // mu_) against the drained node.
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
  std::atomic<uint64_t> next_caller_{1};

  // Touched by the loop thread only.
  absl::BitGen nonce_generator_;
  std::function<void(bool)> serving_callback_;
  bool serving_ = false;
  absl::Time next_tick_;
};

}  // namespace lockd

#endif  // LOCKD_REPLICA_LOOP_H_
