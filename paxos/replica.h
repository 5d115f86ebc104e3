#ifndef LOCKD_PAXOS_REPLICA_H_
#define LOCKD_PAXOS_REPLICA_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "paxos/ballot.h"
#include "paxos/config.h"
#include "paxos/random.h"
#include "paxos/storage.h"
#include "protos/paxos.pb.h"

namespace lockd::paxos {

enum class Role { kFollower, kCandidate, kLeader };

const char* RoleName(Role role);

// What the layer above may want to know about leadership. Changes are
// reported in Ready::soft_state.
struct SoftState {
  Role role = Role::kFollower;
  // The replica believed to lead (0 if unknown).
  uint32_t leader_id = 0;
  // Identifies one leadership: the leader's packed ballot (see
  // PackBallot()). Strictly greater for every later leadership. 0 if none.
  uint64_t epoch = 0;

  bool operator==(const SoftState& other) const {
    return role == other.role && leader_id == other.leader_id &&
           epoch == other.epoch;
  }
  bool operator!=(const SoftState& other) const { return !(*this == other); }
};

// The outputs of the replica since the last Ready, in the order the driver
// must handle them:
//   1. Save `persist` to Storage (synced) - nothing below may happen before.
//   2. Send `messages`.
//   3. Restore `install_snapshot` into the state machine, then apply
//      `committed` in order.
//   4. Call Replica::Advance().
struct Ready {
  PersistBatch persist;
  std::vector<paxospb::Message> messages;
  std::optional<paxospb::Snapshot> install_snapshot;
  // Chosen entries, consecutive slots in increasing order, each exactly once
  // over the replica's life (a restart replays from the last snapshot).
  std::vector<paxospb::Entry> committed;
  std::optional<SoftState> soft_state;
};

// A Multi-Paxos replica: proposer, acceptor and learner of one cell member.
//
// A pure, deterministic state machine: it performs no I/O and reads no clock.
// The driver feeds it messages (Step), time (Tick) and client commands
// (Propose), and collects its outputs with GetReady()/Advance(). Given the
// same inputs in the same order it produces the same outputs.
//
// Protocol summary (details in docs/paxos.md):
// * Leader election: a follower that hears no leader for its randomized
//   election timeout first probes (pre-vote, nothing persisted), then runs
//   phase 1 with ballot (round, id) for every slot from its first unchosen
//   one. A replica that heard from a live leader within the lease refuses.
// * The new leader re-proposes, per slot, the highest-ballot value reported
//   in the promises (a no-op for holes), then runs phase 2 only: slots are
//   pipelined (max_inflight_slots) and batched (max_batch_commands).
// * A slot is chosen when a majority, the leader included, accepted it. The
//   commit point travels on accepts and heartbeats; followers that miss
//   entries fetch them, or a snapshot when the leader compacted them.
// * Messages to itself are delivered by Advance(), i.e. only after the
//   batch that produced them is durable.
//
// Not thread-safe: the driver serializes all calls.
class Replica {
 public:
  // Builds a replica from its durable state (empty for a new replica).
  // Returns INVALID_ARGUMENT for a bad config, DATA_LOSS if `state` is
  // inconsistent (a slot at or below the commit point is missing).
  static absl::StatusOr<std::unique_ptr<Replica>> Create(const Config& config,
                                                         DurableState state);

  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  // Queues a command for the next batch. Returns UNAVAILABLE if this replica
  // is not the leader (LeaderHint() names the leader if known),
  // INVALID_ARGUMENT if the command is larger than max_batch_bytes and
  // RESOURCE_EXHAUSTED if the proposal queue is full. A queued proposal is
  // either chosen or lost with the leadership (the epoch in soft_state
  // changes); it is never chosen twice by this replica's doing.
  absl::Status Propose(std::string command);

  // Handles one message from a peer. Messages from non-members are ignored.
  void Step(const paxospb::Message& message);

  // Advances logical time by one tick.
  void Tick();

  // True if GetReady() has anything to hand out.
  bool HasReady();

  // Collects the outputs since the last call. REQUIRES: the previous Ready
  // was acknowledged with Advance().
  Ready GetReady();

  // Acknowledges that the last Ready was fully handled (persisted, sent,
  // applied). Delivers the messages this replica addressed to itself.
  void Advance();

  // Leader only: queues a configuration change. `next` must differ from the
  // committed configuration in exactly one member (ValidateChange) and may
  // not remove or demote this replica (hand leadership over first). The
  // change takes a slot of its own; slots after it are proposed only once
  // it is chosen, and it governs them. Returns UNAVAILABLE if not the leader
  // or its takeover is not complete, FAILED_PRECONDITION if a change is
  // already in flight or `next` removes this leader, INVALID_ARGUMENT for a
  // change that is not a single one. Like Propose(), a queued change is
  // chosen or lost with the leadership; it shows up in Ready::committed.
  absl::Status ProposeMembership(const paxospb::Membership& next);

  // Leader only: hands leadership to voter `target`, which must have
  // acknowledged everything this leader committed. This replica stops
  // leading at once (its queued proposals are lost, its lease ends) and
  // tells `target` to campaign; the other acceptors may promise to it
  // although this leader's lease has not run out. Returns UNAVAILABLE if
  // not the leader with a lease, FAILED_PRECONDITION if `target` is not a
  // voter, lags by more than max_inflight_slots or a change is in flight.
  absl::Status TransferLeadership(uint32_t target);

  // Records a snapshot of the state machine at `index` and truncates the log
  // at or below it. REQUIRES: index was handed out in Ready::committed (or
  // with a snapshot). Returns INVALID_ARGUMENT otherwise.
  absl::Status Compact(uint64_t index, std::string data);

  // True iff this replica is the leader and holds a read lease: a majority
  // acknowledged it within lease_ticks - max_drift_ticks, any lease of a
  // previous leader must have expired, and every slot it took over is
  // chosen and emitted (so a state machine that applied every Ready reflects
  // every write any leader acknowledged). Meaningful between Advance() and
  // the next GetReady(): only then has the state machine applied everything
  // handed out.
  bool HasLease() const;

  uint32_t id() const { return config_.id; }
  // The configuration of the chosen log (every change up to commit()).
  const paxospb::Membership& membership() const;
  // False only for a joining replica that has not yet learned the cell's
  // configuration.
  bool knows_membership() const { return has_base_ || !changes_.empty(); }
  // Leader only: a configuration change proposed or queued and not chosen.
  bool change_in_flight() const;
  // Leader only: the commit point `member` last reported (0 if unknown).
  uint64_t PeerCommit(uint32_t member) const;
  Role role() const { return role_; }
  uint32_t LeaderHint() const { return leader_id_; }
  uint64_t epoch() const;
  SoftState soft_state() const;
  // Highest slot such that every slot up to it is known chosen here.
  uint64_t commit() const { return commit_; }
  // Slots handed out to the state machine so far (snapshot included).
  uint64_t emitted() const { return emitted_; }
  uint64_t snapshot_index() const;
  const paxospb::Ballot& promised() const { return promised_; }
  uint64_t ticks() const { return ticks_; }
  // Leader only: slots proposed but not yet chosen, and commands waiting for
  // a slot.
  size_t inflight_slots() const { return inflight_.size(); }
  size_t pending_proposals() const { return pending_.size(); }
  // Leader only: the lowest slot awaiting acceptance and who accepted it.
  std::string DebugInflight() const;

 private:
  // A slot the leader proposed at its current ballot and awaits acceptance
  // of.
  struct InflightSlot {
    paxospb::Value value;
    absl::flat_hash_set<uint32_t> acks;
  };

  Replica(const Config& config, DurableState state);

  // Acceptor.
  void HandleProbe(uint32_t from, const paxospb::Probe& probe);
  void HandlePrepare(uint32_t from, const paxospb::Prepare& prepare);
  void HandleAccept(uint32_t from, const paxospb::Accept& accept);
  void HandleFetchRequest(uint32_t from, const paxospb::FetchRequest& request);
  // Why this acceptor would refuse to promise to `candidate` whose first
  // unchosen slot is `first_unchosen` (restart, a live leader's lease, or a
  // candidate too far behind); REASON_UNSPECIFIED if it would not. Whether
  // the promise itself can be listed is CanListPromiseFrom().
  paxospb::Reject::Reason RefusalReason(uint32_t candidate,
                                        uint64_t first_unchosen) const;
  // True iff a promise can list every entry from `first_unchosen` on: none
  // was compacted into the snapshot and they fit in half a message.
  bool CanListPromiseFrom(uint64_t first_unchosen) const;
  void Refuse(uint32_t to, paxospb::Reject::Reason reason,
              const paxospb::Ballot& refused);

  // Proposer.
  void HandleProbeGrant(uint32_t from);
  void HandlePromise(uint32_t from, const paxospb::Promise& promise);
  void HandleAccepted(uint32_t from, const paxospb::Accepted& accepted);
  void HandleReject(uint32_t from, const paxospb::Reject& reject);
  void StartProbe();
  void StartPrepare();
  void BecomeLeader();
  void BecomeFollower(uint32_t leader_id);
  // Forgets any campaign (probe grants, promises) and leadership (slots in
  // flight, queued proposals, acknowledgements).
  void DropCampaignAndLeadership();
  void FlushProposals();
  // Sends every peer a heartbeat carrying the commit point and the in-flight
  // slots it has not acknowledged.
  void SendHeartbeats();
  void AdvanceLeaderCommit();
  // The newest tick t such that a majority (this replica included) has
  // acknowledged a message sent at or after t in this leadership.
  uint64_t QuorumAckTick() const;

  // Learner.
  void HandleFetchReply(uint32_t from, const paxospb::FetchReply& reply);
  void LearnCommit(const paxospb::Ballot& ballot, uint64_t leader_commit);
  void MaybeFetch(uint32_t from_replica, bool force);
  void InstallSnapshot(const paxospb::Snapshot& snapshot);

  // Durable-state helpers: every change goes through these so that the next
  // Ready persists it.
  void SetPromised(const paxospb::Ballot& ballot);
  void StoreEntry(const paxospb::Entry& entry);
  void SetCommit(uint64_t commit);

  void Send(uint32_t to, paxospb::Message message);
  void ObserveBallot(const paxospb::Ballot& ballot);
  void ResetElectionTimer();
  // Configuration.
  // The configuration in effect after `slot` (chosen changes only).
  const paxospb::Membership& MembershipAfter(uint64_t slot) const;
  // Recomputes known_ids_: members of the committed configuration and of
  // any change stored above the commit point.
  void RefreshKnownIds();
  bool CanCampaign() const;
  // Candidate: the entries to re-propose, per slot above the commit point
  // (the chosen value if any promise knows it, else the highest-ballot
  // one).
  std::map<uint64_t, paxospb::Entry> MergePromises() const;
  // The configurations a candidate needs a majority of: the committed one
  // and every change among `merged`, in slot order.
  std::vector<const paxospb::Membership*> CampaignConfigs(
      const std::map<uint64_t, paxospb::Entry>& merged) const;
  // Voters of every configuration the campaign needs.
  std::vector<uint32_t> CampaignVoters() const;
  bool CampaignWon() const;
  void StartCampaign();
  // Leader: the committed configuration and every change in flight, in
  // slot order, and every member of them (learners included).
  std::vector<const paxospb::Membership*> LeaderConfigs() const;
  std::vector<uint32_t> LeaderTargets() const;

  const Config config_;
  Random random_;

  // Durable state (mirrors what Storage holds once the pending batch is
  // saved).
  paxospb::Ballot promised_;
  uint64_t commit_ = 0;
  std::map<uint64_t, paxospb::Entry> entries_;
  std::optional<paxospb::Snapshot> snapshot_;

  // Changes not yet handed out in a Ready.
  bool hard_state_dirty_ = false;
  std::map<uint64_t, paxospb::Entry> unsaved_entries_;
  bool snapshot_dirty_ = false;
  std::optional<paxospb::Snapshot> pending_install_;
  std::vector<paxospb::Message> outbox_;
  std::vector<paxospb::Message> self_outbox_;
  // Messages to self from the Ready in flight, delivered by Advance().
  std::vector<paxospb::Message> self_inflight_;
  bool ready_outstanding_ = false;
  uint64_t emitted_ = 0;
  SoftState reported_soft_state_;

  // Configuration (durable through the hard state, snapshot and entries).
  paxospb::Membership initial_membership_;
  // The configuration governing the first slot above the snapshot; unknown
  // (has_base_ false) to a joiner until it installs a snapshot or fetches
  // from slot 1.
  paxospb::Membership base_membership_;
  bool has_base_ = true;
  // Chosen configuration changes above the snapshot, by slot.
  std::map<uint64_t, paxospb::Membership> changes_;
  // Replicas whose messages are handled.
  absl::flat_hash_set<uint32_t> known_ids_;

  // Volatile state.
  uint64_t ticks_ = 0;
  Role role_ = Role::kFollower;
  uint32_t leader_id_ = 0;
  paxospb::Ballot leader_ballot_;
  // Acceptor stickiness: the leader last acknowledged, and until when every
  // other candidate is refused.
  uint32_t sticky_leader_ = 0;
  paxospb::Ballot sticky_ballot_;
  uint64_t sticky_until_tick_ = 0;
  // The leader at handover_ballot_ handed leadership to handover_to_: while
  // this acceptor is sticky to that leadership, handover_to_ is not refused.
  uint32_t handover_to_ = 0;
  paxospb::Ballot handover_ballot_;
  int election_elapsed_ = 0;
  int randomized_election_ticks_ = 0;
  uint64_t max_round_seen_ = 0;
  uint64_t known_leader_commit_ = 0;
  uint64_t last_fetch_tick_ = 0;
  bool fetch_outstanding_ = false;

  // Candidate.
  // This campaign was started by the leader's handover, at handover_tick_.
  bool handover_campaign_ = false;
  uint64_t handover_tick_ = 0;
  bool preparing_ = false;
  paxospb::Ballot ballot_;
  absl::flat_hash_set<uint32_t> probe_grants_;
  std::map<uint32_t, std::vector<paxospb::Entry>> promises_;
  int resend_elapsed_ = 0;

  // Leader.
  uint64_t elected_tick_ = 0;
  // Elected by a handover from a leader that had stopped serving: no
  // previous lease to wait out.
  bool lease_wait_waived_ = false;
  std::optional<paxospb::Membership> pending_membership_;
  absl::flat_hash_map<uint32_t, uint64_t> peer_commit_;
  // Members the leader removed, by the slot of their removal: they still
  // receive heartbeats until they acknowledge it.
  std::map<uint32_t, uint64_t> departing_;
  // The last slot re-proposed when this leadership began; no lease until it
  // is chosen and emitted.
  uint64_t takeover_slot_ = 0;
  uint64_t next_slot_ = 1;
  std::map<uint64_t, InflightSlot> inflight_;
  std::deque<std::string> pending_;
  absl::flat_hash_map<uint32_t, uint64_t> peer_ack_tick_;
  int heartbeat_elapsed_ = 0;
};

}  // namespace lockd::paxos

#endif  // LOCKD_PAXOS_REPLICA_H_
