#ifndef LOCKD_REPLICA_NODE_H_
#define LOCKD_REPLICA_NODE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "paxos/config.h"
#include "paxos/replica.h"
#include "paxos/storage.h"
#include "protos/lockd.pb.h"
#include "protos/paxos.pb.h"
#include "protos/state.pb.h"
#include "sessions/state_machine.h"

namespace lockd {

// The status payload keys under which a refusal names the leader (the front
// end turns them into the `lockd-leader-address`/`-id` trailers).
inline constexpr char kLeaderAddressPayload[] = "lockd-leader-address";
inline constexpr char kLeaderIdPayload[] = "lockd-leader-id";

// Where a node sends Paxos messages for other replicas. Send() must not
// block: a transport queues or drops (Paxos tolerates loss).
class PeerSender {
 public:
  virtual ~PeerSender() = default;
  virtual void Send(paxospb::Message message) = 0;
};

// A KeepAlive stream as the node sees it. Must not block (queue the write).
class SessionListener {
 public:
  virtual ~SessionListener() = default;
  virtual void Send(v1::KeepAliveResponse response) = 0;
  // Ends the stream; no call follows.
  virtual void End(absl::Status status) = 0;
};

// An Observe stream of one election, as the node sees it. Same rules.
class ElectionListener {
 public:
  virtual ~ElectionListener() = default;
  virtual void Send(v1::GetLeaderResponse response) = 0;
  virtual void End(absl::Status status) = 0;
};

struct ReplicaNodeOptions {
  paxos::Config paxos;
  // Address of every member by id (this replica's included).
  std::map<uint32_t, std::string> addresses;
  sessions::Limits limits;
  // Applied entries between two snapshots (the log below is compacted).
  uint64_t snapshot_interval = 10000;
  // Length of a tick in the driver's clock (to compare leases with ticks).
  int64_t tick_ms = 10;
  // The leader checkpoints the keep-alives it answered every this many
  // ticks.
  int checkpoint_ticks = 50;
  // At least this many ticks between two Tick commands.
  int tick_command_ticks = 5;
};

// One replica of a cell without threads, clocks or sockets: the Paxos
// replica, the state machine, and the leader's front-end duties (answering
// submitted commands once applied, keep-alives from memory, StartEpoch,
// keep-alive checkpoints, Tick commands when an expiration is due).
//
// The driver (ReplicaLoop in production, the simulator in tests) calls Tick()
// once per tick of a monotonic clock, passes the wall clock as `now_ms`
// where a command may be stamped, and calls ProcessReady() after any input.
// Callbacks and listeners are called synchronously and must not block.
class ReplicaNode {
 public:
  using ResultCallback = std::function<void(absl::StatusOr<statepb::Result>)>;
  using ReadFunction = std::function<absl::Status(
      const sessions::StateMachine& state, const paxos::Replica& replica)>;

  // Loads the durable state from `storage` (which must outlive the node).
  static absl::StatusOr<std::unique_ptr<ReplicaNode>> Create(
      const ReplicaNodeOptions& options, paxos::Storage* storage,
      PeerSender* sender);

  ReplicaNode(const ReplicaNode&) = delete;
  ReplicaNode& operator=(const ReplicaNode&) = delete;

  void Tick() { replica_->Tick(); }
  void Step(const paxospb::Message& message) { replica_->Step(message); }

  // Persists (one synced Save per Ready), sends, applies, advances, until
  // the replica has nothing more; then compacts if due. A storage error is
  // fatal (fail-stop, see paxos/storage.h).
  void ProcessReady();

  // The leader's periodic duties; call after ProcessReady().
  void Housekeeping(int64_t now_ms);

  // Proposes a client command stamped with this leader's epoch and
  // `now_ms`, and calls `done` with its result once applied, or with
  // UNAVAILABLE (naming the leader) if this replica does not lead or loses
  // leadership first. A command for a request already waiting here is not
  // proposed again; every caller gets the answer. A CreateSession without a
  // nonce gets `nonce`.
  void Submit(statepb::Command command, int64_t now_ms, uint64_t nonce,
              ResultCallback done);

  // Runs `read` against the applied state if this replica serves (see
  // Serving()), else returns UNAVAILABLE. Call only after ProcessReady()
  // (the state must reflect every entry handed out).
  absl::Status Read(const ReadFunction& read) const;
  // Runs `read` whether or not this replica serves.
  absl::Status Inspect(const ReadFunction& read) const {
    return read(state_, *replica_);
  }

  // Renews the session from memory and answers on `listener`, registering
  // it for the session's events. Ends it with NOT_FOUND if the session is
  // gone and UNAVAILABLE if this replica does not serve.
  void KeepAlive(const std::shared_ptr<SessionListener>& listener,
                 const v1::KeepAliveRequest& request, int64_t now_ms);
  void RemoveSessionListener(SessionListener* listener);

  // Sends the election's leader now and after every change.
  void Observe(const std::string& name,
               const std::shared_ptr<ElectionListener>& listener);
  void RemoveElectionListener(ElectionListener* listener);

  // Refuses everything from now on and fails every waiting caller and
  // stream with UNAVAILABLE (before a shutdown).
  void Drain();

  // True iff this replica answers clients: it leads, holds its read lease,
  // and its StartEpoch was applied.
  bool Serving() const;
  // The UNAVAILABLE status for a refused request, naming the leader if
  // known.
  absl::Status NotServing() const;

  const sessions::StateMachine& state() const { return state_; }
  const paxos::Replica& replica() const { return *replica_; }
  uint64_t applied_index() const { return applied_index_; }

 private:
  // Streams and callers live in ordered maps keyed by arrival, so that the
  // order of callbacks does not depend on addresses or hash seeds (the
  // simulator replays runs exactly).
  using RequestId = std::pair<uint64_t, uint64_t>;  // session, request
  struct SessionStream {
    std::shared_ptr<SessionListener> listener;
    uint64_t session_id = 0;
    uint64_t last_sent_sequence = 0;
  };

  ReplicaNode(const ReplicaNodeOptions& options, paxos::Storage* storage,
              std::unique_ptr<paxos::Replica> replica, PeerSender* sender);

  void ApplyEntry(const paxospb::Entry& entry);
  void ApplyCommand(const statepb::Command& command);
  void MaybeCompact();
  void OnSoftState(const paxos::SoftState& soft);
  absl::Status Propose(statepb::Command command, int64_t now_ms);
  void FlushRenewals(int64_t now_ms);
  void SendEvents(SessionStream& stream);
  // The time a lease is measured against: the latest of the local clock,
  // this leader's stamps and the state machine's time, so that a lease is
  // never overstated when an earlier leader's clock ran ahead.
  int64_t CellNowMs(int64_t now_ms) const;
  // A response with the lease remaining and the session's unsent events.
  v1::KeepAliveResponse SessionResponse(SessionStream& stream,
                                        int64_t expires_at,
                                        int64_t cell_now_ms) const;
  void NotifyElection(const std::string& name);
  void FailAll(const absl::Status& status);

  const ReplicaNodeOptions options_;
  paxos::Storage* const storage_;
  const std::unique_ptr<paxos::Replica> replica_;
  PeerSender* const sender_;
  sessions::StateMachine state_;

  bool draining_ = false;
  uint64_t applied_index_ = 0;
  uint64_t last_snapshot_index_ = 0;
  int64_t last_stamp_ms_ = 0;
  // The epoch whose StartEpoch this leader proposed (0 if none).
  uint64_t start_epoch_proposed_ = 0;
  uint64_t last_checkpoint_tick_ = 0;
  uint64_t last_tick_command_tick_ = 0;
  // Keep-alives answered since the last checkpoint: session -> acked event.
  std::map<uint64_t, uint64_t> renewals_;
  // Callers waiting for a request's result.
  std::map<RequestId, std::vector<ResultCallback>> waiting_;
  uint64_t next_stream_id_ = 1;
  absl::flat_hash_map<SessionListener*, uint64_t> session_stream_ids_;
  std::map<uint64_t, SessionStream> session_streams_;
  struct ElectionStream {
    std::string name;
    std::shared_ptr<ElectionListener> listener;
  };
  absl::flat_hash_map<ElectionListener*, uint64_t> election_stream_ids_;
  std::map<uint64_t, ElectionStream> election_streams_;
};

}  // namespace lockd

#endif  // LOCKD_REPLICA_NODE_H_
