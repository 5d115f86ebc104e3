#ifndef LOCKD_REPLICA_NODE_H_
#define LOCKD_REPLICA_NODE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
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
  // Client address of every member by id (this replica's included), for
  // members the replicated configuration gives no address.
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
  // An idle leader still proposes a Tick this often, so that the cell's
  // time stays close to real time (a new leader continues from it).
  int idle_tick_ticks = 100;
  // The leader's cell clock follows its wall clock but never runs faster or
  // slower than its monotonic clock by more than this (percent); see
  // docs/server.md, "Time".
  int cell_clock_slew_percent = 5;
  // Renewals per RenewSessions command (a checkpoint of many sessions is
  // split so that each command stays far below the Paxos batch limit).
  int max_renewals_per_command = 10000;
};

// One replica of a cell without threads, clocks or sockets: the Paxos
// replica, the state machine, and the leader's front-end duties (answering
// submitted commands once applied, keep-alives from memory, StartEpoch,
// keep-alive checkpoints, Tick commands when an expiration is due).
//
// The driver (ReplicaLoop in production, the simulator in tests) calls Tick()
// once per tick of a monotonic clock, passes the wall clock as `now_ms`
// where time matters, and calls ProcessReady() after any input. Callbacks
// and listeners are called synchronously and must not block.
//
// Time: the leader stamps each command with its cell clock, which starts
// where the replicated state's time stands when it takes over and then
// follows the leader's wall clock, but only at a rate within
// cell_clock_slew_percent of the monotonic tick clock. So a wall-clock step
// or an offset between replicas' clocks never makes cell time jump, and
// leases told to clients shrink by at most that percentage.
// A configuration change once chosen and applied.
struct AppliedChange {
  paxospb::Membership membership;
  uint64_t index = 0;
};

class ReplicaNode {
 public:
  using ResultCallback = std::function<void(absl::StatusOr<statepb::Result>)>;
  using ChangeCallback = std::function<void(absl::StatusOr<AppliedChange>)>;
  // Computes the next configuration from the replica's state.
  using MembershipEdit = std::function<absl::StatusOr<paxospb::Membership>(
      const paxos::Replica& replica)>;
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
  void ProcessReady(int64_t now_ms);

  // The leader's periodic duties; call after ProcessReady().
  void Housekeeping(int64_t now_ms);

  // Proposes a client command stamped with this leader's epoch and
  // `now_ms`, and calls `done` with its result once applied, or with
  // UNAVAILABLE (naming the leader) if this replica does not lead or loses
  // leadership first. A command for a request already waiting here is not
  // proposed again; every caller gets the answer. A CreateSession without a
  // nonce gets `nonce`; a CreateSession's answer carries `new_secret`
  // (drawn by the caller from a cryptographic source), and the log its
  // digest. Other requests must present their session's secret
  // (RequestHeader.session_secret): a wrong one is PERMISSION_DENIED at once,
  // and the log carries its digest instead. `caller` (non-zero, unique per
  // call) identifies the caller for Cancel().
  void Submit(statepb::Command command, int64_t now_ms, uint64_t nonce,
              std::string new_secret, uint64_t caller, ResultCallback done);

  // The caller gave up (its RPC was cancelled): its callback is called with
  // CANCELLED now. The command itself may still take effect (a parked
  // acquire stays queued until its wait timeout); a retry with the same
  // request number learns the outcome. No-op if already answered.
  void Cancel(uint64_t caller);

  // Runs `read` against the applied state if this replica serves (see
  // Serving()), else returns UNAVAILABLE. Call outside ProcessReady() (then
  // the state reflects every entry handed out; Step() hands out nothing).
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

  // Sends the election's leader now and after every change. Ends the stream
  // with INVALID_ARGUMENT for a bad name.
  void Observe(const std::string& name,
               const std::shared_ptr<ElectionListener>& listener);
  void RemoveElectionListener(ElectionListener* listener);

  // Leader only (Serving()): proposes the configuration `edit` returns and
  // calls `done` once it is chosen and applied here, with `edit`'s error,
  // or with UNAVAILABLE if this replica stops leading first.
  void ChangeMembership(const MembershipEdit& edit, ChangeCallback done);
  // Leader only: hands leadership to voter `target`, or with 0 to the
  // voter that acknowledged the most (paxos::Replica::TransferLeadership).
  // Returns the target.
  absl::StatusOr<uint32_t> HandOver(uint32_t target);
  // Called with the configuration when the node is built and after every
  // change it applies (on the driver's thread; must not block).
  void SetMembershipObserver(
      std::function<void(const paxospb::Membership&)> observer);
  // The client address of member `id`, "" if unknown.
  std::string ClientAddress(uint32_t id) const;

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
  // For metrics: log entries and commands applied since start, snapshots
  // taken and the size of the last one.
  uint64_t applied_entries() const { return applied_entries_; }
  uint64_t applied_commands() const { return applied_commands_; }
  uint64_t snapshots_taken() const { return snapshots_taken_; }
  uint64_t last_snapshot_bytes() const { return last_snapshot_bytes_; }

 private:
  // Streams and callers live in ordered maps keyed by arrival, so that the
  // order of callbacks does not depend on addresses or hash seeds (the
  // simulator replays runs exactly).
  using RequestId = std::pair<uint64_t, uint64_t>;  // session, request
  struct SessionStream {
    std::shared_ptr<SessionListener> listener;
    uint64_t last_sent_sequence = 0;
    // The stream is in the batch form (KeepAliveRequest.sessions).
    bool batch = false;
    // The session secret this stream presented and that was checked.
    std::string verified_secret;
  };
  // What a KeepAlive stream carries: one session (the single form) or any
  // number (the batch form), all under the stream's arrival number.
  struct ListenerStreams {
    std::shared_ptr<SessionListener> listener;
    uint64_t stream_id = 0;
    bool batch = false;
    std::vector<uint64_t> sessions;
  };
  // Streams by (session, arrival), so a session's streams are one range.
  using StreamKey = std::pair<uint64_t, uint64_t>;
  struct Waiter {
    uint64_t caller = 0;
    ResultCallback done;
  };
  // The callers of one proposed request.
  struct Waiting {
    std::vector<Waiter> waiters;
    // A CreateSession's secret, for its answer, and its digest (in the log).
    std::string new_secret;
    std::string new_secret_digest;
  };
  struct ElectionStream {
    std::shared_ptr<ElectionListener> listener;
  };

  ReplicaNode(const ReplicaNodeOptions& options, paxos::Storage* storage,
              std::unique_ptr<paxos::Replica> replica, PeerSender* sender);

  void ApplyEntry(const paxospb::Entry& entry, int64_t now_ms);
  // Tells the observer if the configuration changed since last told.
  void ReportMembership();
  void ApplyCommand(const statepb::Command& command, int64_t now_ms);
  void MaybeCompact();
  void OnSoftState(const paxos::SoftState& soft);
  absl::Status Propose(statepb::Command command, int64_t now_ms);
  void FlushRenewals(int64_t now_ms);
  // Reads the leader's cell clock (see the class comment); never decreases
  // within a leadership.
  int64_t CellClock(int64_t now_ms);
  // Renews one session of a KeepAlive stream from memory (`renewal` is a
  // single-form message or a batch entry) once its secret checks,
  // registering the stream for its events; sets *flush if its lease is close to
  // running out. The answer, or why the session cannot be renewed.
  absl::StatusOr<v1::KeepAliveResponse> RenewOne(
      const std::shared_ptr<SessionListener>& listener,
      ListenerStreams& streams, const v1::KeepAliveRequest& renewal,
      int64_t cell_now_ms, bool* flush);
  // Sends `response` (about one session) on `stream`, wrapped for a batch
  // stream.
  static void SendOn(const SessionStream& stream,
                     v1::KeepAliveResponse response);
  void SendEvents(uint64_t session_id, SessionStream& stream, int64_t now_ms);
  // A response with the lease remaining and the session's unsent events.
  v1::KeepAliveResponse SessionResponse(uint64_t session_id,
                                        SessionStream& stream,
                                        int64_t expires_at,
                                        int64_t cell_now_ms) const;
  // Sends the election's leader to one listener.
  void SendLeader(const std::string& name, ElectionListener& listener) const;
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
  // The cell clock: started with a leadership; (ms, tick) of its last
  // reading and of the anchor its rate is measured from.
  bool cell_clock_started_ = false;
  int64_t cell_clock_ms_ = 0;
  uint64_t cell_clock_tick_ = 0;
  int64_t cell_anchor_ms_ = 0;
  uint64_t cell_anchor_tick_ = 0;
  // The epoch whose StartEpoch this leader proposed (0 if none).
  uint64_t start_epoch_proposed_ = 0;
  uint64_t last_checkpoint_tick_ = 0;
  uint64_t last_tick_command_tick_ = 0;
  uint64_t last_proposal_tick_ = 0;
  // Keep-alives answered since the last checkpoint: session -> acked event.
  std::map<uint64_t, uint64_t> renewals_;
  // Callers waiting for a request's result, and which request each caller
  // waits for.
  std::map<RequestId, Waiting> waiting_;
  absl::flat_hash_map<uint64_t, RequestId> caller_requests_;
  uint64_t next_stream_id_ = 1;
  absl::flat_hash_map<SessionListener*, ListenerStreams> listeners_;
  std::map<StreamKey, SessionStream> session_streams_;
  // Election streams by (name, arrival).
  using ElectionKey = std::pair<std::string, uint64_t>;
  absl::flat_hash_map<ElectionListener*, ElectionKey> election_stream_keys_;
  std::map<ElectionKey, ElectionStream> election_streams_;
  // The configuration change this leader proposed, and its caller.
  struct PendingChange {
    std::string membership;
    ChangeCallback done;
  };
  std::optional<PendingChange> pending_change_;
  uint64_t applied_entries_ = 0;
  uint64_t applied_commands_ = 0;
  uint64_t snapshots_taken_ = 0;
  uint64_t last_snapshot_bytes_ = 0;
  std::function<void(const paxospb::Membership&)> membership_observer_;
  std::string reported_membership_;
};

}  // namespace lockd

#endif  // LOCKD_REPLICA_NODE_H_
