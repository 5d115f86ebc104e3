#include "paxos/replica.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "paxos/membership.h"

namespace lockd::paxos {
namespace {

bool SameValue(const paxospb::Value& a, const paxospb::Value& b) {
  return std::equal(a.commands().begin(), a.commands().end(),
                    b.commands().begin(), b.commands().end());
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "unknown";
}

paxospb::Membership Config::InitialMembership() const {
  if (initial_membership.members_size() > 0) return initial_membership;
  return MembershipOfVoters(members);
}

absl::Status Config::Validate() const {
  if (id == 0 || id > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("replica id ", id, " must be in [1, 65535]"));
  }
  const paxospb::Membership initial = InitialMembership();
  if (initial.members_size() == 0) {
    return absl::InvalidArgumentError("members must list every replica");
  }
  if (absl::Status valid = ValidateMembership(initial); !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("members: ", valid.message()));
  }
  if (!join && FindMember(initial, id) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "replica id ", id, " is not in members ", MembershipString(initial)));
  }
  if (heartbeat_ticks < 1 || election_ticks <= heartbeat_ticks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "need 1 <= heartbeat_ticks < election_ticks; got heartbeat_ticks=",
        heartbeat_ticks, " election_ticks=", election_ticks));
  }
  if (lease_ticks > election_ticks || max_drift_ticks < 1 ||
      max_drift_ticks >= lease_ticks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "need 1 <= max_drift_ticks < lease_ticks <= election_ticks; got "
        "max_drift_ticks=",
        max_drift_ticks, " lease_ticks=", lease_ticks,
        " election_ticks=", election_ticks));
  }
  if (max_message_bytes < 4 * max_batch_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_message_bytes (", max_message_bytes,
        ") must be at least four times max_batch_bytes (", max_batch_bytes,
        ") so that a full slot and its encoding fit in half a message"));
  }
  if (max_inflight_slots < 1 || max_batch_commands < 1 || max_batch_bytes < 1 ||
      max_pending_proposals < 1 || max_entries_per_message < 1 ||
      max_candidate_lag_slots < 1) {
    return absl::InvalidArgumentError(
        "max_inflight_slots, max_batch_commands, max_batch_bytes, "
        "max_pending_proposals, max_entries_per_message and "
        "max_candidate_lag_slots must all be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Replica>> Replica::Create(const Config& config,
                                                         DurableState state) {
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  const uint64_t snapshot_index =
      state.snapshot.has_value() ? state.snapshot->index() : 0;
  if (state.hard_state.commit() < snapshot_index) {
    return absl::DataLossError(
        absl::StrCat("durable commit point ", state.hard_state.commit(),
                     " is below the snapshot index ", snapshot_index));
  }
  for (uint64_t slot = snapshot_index + 1; slot <= state.hard_state.commit();
       ++slot) {
    if (state.entries.find(slot) == state.entries.end()) {
      return absl::DataLossError(absl::StrCat(
          "slot ", slot, " is at or below the durable commit point ",
          state.hard_state.commit(), " but its entry is missing"));
    }
  }
  return std::unique_ptr<Replica>(new Replica(config, std::move(state)));
}

Replica::Replica(const Config& config, DurableState state)
    : config_(config),
      random_(config.random_seed * 0x100000001b3ULL + config.id),
      promised_(state.hard_state.promised()),
      commit_(state.hard_state.commit()),
      entries_(std::move(state.entries)),
      snapshot_(std::move(state.snapshot)) {
  // Entries of the snapshot are gone; drop any left over defensively.
  const uint64_t snapshot_index = this->snapshot_index();
  entries_.erase(entries_.begin(), entries_.upper_bound(snapshot_index));
  for (auto& [slot, entry] : entries_) {
    if (slot <= commit_) entry.set_chosen(true);
  }
  // The configuration: the snapshot's, else the one the cell started with
  // (recorded on disk, else taken from the config for a new cell).
  initial_membership_ = state.hard_state.initial_membership();
  if (snapshot_.has_value() && snapshot_->membership().members_size() > 0) {
    base_membership_ = snapshot_->membership();
  } else if (initial_membership_.members_size() > 0) {
    base_membership_ = initial_membership_;
  } else if (!config.join) {
    initial_membership_ = config.InitialMembership();
    base_membership_ = initial_membership_;
    hard_state_dirty_ = true;
  } else {
    has_base_ = false;
  }
  for (const auto& [slot, entry] : entries_) {
    if (slot <= commit_ && entry.value().has_membership()) {
      changes_[slot] = entry.value().membership();
    }
  }
  RefreshKnownIds();
  // Replay: the state machine restores the snapshot, then applies the rest.
  pending_install_ = snapshot_;
  emitted_ = 0;
  max_round_seen_ = promised_.round();
  known_leader_commit_ = commit_;
  ResetElectionTimer();
}

uint64_t Replica::snapshot_index() const {
  return snapshot_.has_value() ? snapshot_->index() : 0;
}

uint64_t Replica::epoch() const {
  if (role_ == Role::kLeader) return PackBallot(ballot_);
  if (leader_id_ != 0) return PackBallot(leader_ballot_);
  return 0;
}

SoftState Replica::soft_state() const {
  SoftState state;
  state.role = role_;
  state.leader_id = leader_id_;
  state.epoch = epoch();
  return state;
}

const paxospb::Membership& Replica::membership() const {
  return changes_.empty() ? base_membership_ : changes_.rbegin()->second;
}

const paxospb::Membership& Replica::MembershipAfter(uint64_t slot) const {
  auto it = changes_.upper_bound(slot);
  if (it == changes_.begin()) return base_membership_;
  return std::prev(it)->second;
}

void Replica::RefreshKnownIds() {
  known_ids_.clear();
  known_ids_.insert(config_.id);
  if (!knows_membership()) {
    for (uint32_t member : config_.members) known_ids_.insert(member);
    for (const paxospb::Member& member : config_.initial_membership.members()) {
      known_ids_.insert(member.id());
    }
  }
  for (const paxospb::Member& member : membership().members()) {
    known_ids_.insert(member.id());
  }
  for (const auto& [id, slot] : departing_) known_ids_.insert(id);
  for (auto it = entries_.upper_bound(commit_); it != entries_.end(); ++it) {
    for (const paxospb::Member& member :
         it->second.value().membership().members()) {
      known_ids_.insert(member.id());
    }
  }
}

bool Replica::CanCampaign() const {
  return knows_membership() && IsVoter(membership(), config_.id);
}

bool Replica::change_in_flight() const {
  if (pending_membership_.has_value()) return true;
  for (const auto& [slot, inflight] : inflight_) {
    if (inflight.value.has_membership()) return true;
  }
  return false;
}

uint64_t Replica::PeerCommit(uint32_t member) const {
  if (member == config_.id) return commit_;
  auto it = peer_commit_.find(member);
  return it == peer_commit_.end() ? 0 : it->second;
}

std::vector<const paxospb::Membership*> Replica::LeaderConfigs() const {
  std::vector<const paxospb::Membership*> configs = {&membership()};
  for (const auto& [slot, inflight] : inflight_) {
    if (inflight.value.has_membership()) {
      configs.push_back(&inflight.value.membership());
    }
  }
  return configs;
}

std::vector<uint32_t> Replica::LeaderTargets() const {
  std::vector<uint32_t> targets;
  for (const paxospb::Membership* config : LeaderConfigs()) {
    for (const paxospb::Member& member : config->members()) {
      targets.push_back(member.id());
    }
  }
  for (const auto& [id, slot] : departing_) targets.push_back(id);
  std::sort(targets.begin(), targets.end());
  targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
  return targets;
}

void Replica::ResetElectionTimer() {
  election_elapsed_ = 0;
  randomized_election_ticks_ = static_cast<int>(
      random_.Range(config_.election_ticks, 2 * config_.election_ticks - 1));
}

void Replica::ObserveBallot(const paxospb::Ballot& ballot) {
  max_round_seen_ = std::max(max_round_seen_, ballot.round());
}

void Replica::Send(uint32_t to, paxospb::Message message) {
  message.set_from(config_.id);
  message.set_to(to);
  if (knows_membership()) message.set_cell_id(membership().cell_id());
  if (to == config_.id) {
    self_outbox_.push_back(std::move(message));
  } else {
    outbox_.push_back(std::move(message));
  }
}

void Replica::SetPromised(const paxospb::Ballot& ballot) {
  CHECK(!BallotLess(ballot, promised_))
      << "promised ballot may never decrease: " << BallotString(promised_)
      << " -> " << BallotString(ballot);
  if (BallotEqual(ballot, promised_)) return;
  promised_ = ballot;
  ObserveBallot(ballot);
  hard_state_dirty_ = true;
}

void Replica::StoreEntry(const paxospb::Entry& entry) {
  CHECK_GT(entry.slot(), snapshot_index());
  paxospb::Entry& stored = entries_[entry.slot()];
  const bool changes_ids =
      stored.value().has_membership() || entry.value().has_membership();
  stored = entry;
  unsaved_entries_[entry.slot()] = entry;
  if (changes_ids) RefreshKnownIds();
}

void Replica::SetCommit(uint64_t commit) {
  CHECK_GE(commit, commit_) << "the commit point may never move back";
  if (commit == commit_) return;
  bool changed = false;
  for (auto it = entries_.upper_bound(commit_);
       it != entries_.end() && it->first <= commit; ++it) {
    if (it->second.value().has_membership()) {
      const paxospb::Membership& next = it->second.value().membership();
      if (role_ == Role::kLeader) {
        // Removed members still hear of their removal (until they
        // acknowledge it), so that they stop campaigning.
        for (const paxospb::Member& member :
             MembershipAfter(it->first - 1).members()) {
          if (FindMember(next, member.id()) == nullptr) {
            departing_[member.id()] = it->first;
          }
        }
      }
      changes_[it->first] = next;
      changed = true;
    }
  }
  commit_ = commit;
  known_leader_commit_ = std::max(known_leader_commit_, commit_);
  hard_state_dirty_ = true;
  if (changed) {
    RefreshKnownIds();
    LOG(INFO) << "replica " << config_.id << ": configuration is now "
              << MembershipString(membership()) << " (slot " << commit_ << ")";
  }
}

// ---------------------------------------------------------------------------
// Driver interface.

absl::Status Replica::Propose(std::string command) {
  if (role_ != Role::kLeader) {
    if (leader_id_ != 0) {
      return absl::UnavailableError(absl::StrCat(
          "replica ", config_.id, " is not the leader; the leader is replica ",
          leader_id_));
    }
    return absl::UnavailableError(absl::StrCat(
        "replica ", config_.id,
        " is not the leader and knows of no leader; retry shortly"));
  }
  if (command.size() > config_.max_batch_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "command of ", command.size(), " bytes exceeds the limit of ",
        config_.max_batch_bytes, " bytes (max_batch_bytes)"));
  }
  if (pending_.size() >= config_.max_pending_proposals) {
    return absl::ResourceExhaustedError(
        absl::StrCat("proposal queue is full (", config_.max_pending_proposals,
                     " commands); retry after earlier proposals commit"));
  }
  pending_.push_back(std::move(command));
  return absl::OkStatus();
}

void Replica::Step(const paxospb::Message& message) {
  const uint32_t from = message.from();
  if (message.to() != config_.id) return;
  // A replica of another cell (say, the cell a backup was taken from).
  if (message.cell_id() != 0 && knows_membership() &&
      membership().cell_id() != 0 &&
      message.cell_id() != membership().cell_id()) {
    return;
  }
  if (!known_ids_.contains(from)) {
    // A replica this one has not heard of: a removed member (ignored), or a
    // member added by a change this replica has not learned yet. Nothing
    // it says is voted on or accepted; a heartbeat that reveals this
    // replica lags makes it fetch, and the fetched chosen entries (or
    // snapshot) teach it the configuration.
    if (message.has_accept() && message.accept().commit() > commit_) {
      known_leader_commit_ =
          std::max(known_leader_commit_, message.accept().commit());
      MaybeFetch(from, /*force=*/false);
    } else if (message.has_fetch_reply()) {
      HandleFetchReply(from, message.fetch_reply());
    }
    return;
  }
  switch (message.body_case()) {
    case paxospb::Message::kProbe:
      HandleProbe(from, message.probe());
      break;
    case paxospb::Message::kProbeGrant:
      HandleProbeGrant(from);
      break;
    case paxospb::Message::kPrepare:
      HandlePrepare(from, message.prepare());
      break;
    case paxospb::Message::kPromise:
      HandlePromise(from, message.promise());
      break;
    case paxospb::Message::kAccept:
      HandleAccept(from, message.accept());
      break;
    case paxospb::Message::kAccepted:
      HandleAccepted(from, message.accepted());
      break;
    case paxospb::Message::kReject:
      HandleReject(from, message.reject());
      break;
    case paxospb::Message::kFetchRequest:
      HandleFetchRequest(from, message.fetch_request());
      break;
    case paxospb::Message::kFetchReply:
      HandleFetchReply(from, message.fetch_reply());
      break;
    case paxospb::Message::BODY_NOT_SET:
      break;
  }
}

void Replica::Tick() {
  ++ticks_;
  if (role_ == Role::kLeader) {
    if (++heartbeat_elapsed_ >= config_.heartbeat_ticks) {
      heartbeat_elapsed_ = 0;
      SendHeartbeats();
    }
    // Step down when a majority has been silent for an election timeout:
    // a leader cut off from the cell must not keep accepting proposals.
    if (ticks_ - QuorumAckTick() >=
        static_cast<uint64_t>(config_.election_ticks)) {
      BecomeFollower(0);
    }
    return;
  }
  if (role_ == Role::kCandidate &&
      ++resend_elapsed_ >= config_.heartbeat_ticks) {
    resend_elapsed_ = 0;
    if (preparing_) {
      for (uint32_t member : CampaignVoters()) {
        if (member == config_.id || promises_.count(member)) continue;
        paxospb::Message message;
        paxospb::Prepare* prepare = message.mutable_prepare();
        *prepare->mutable_ballot() = ballot_;
        prepare->set_first_unchosen(commit_ + 1);
        Send(member, std::move(message));
      }
    } else {
      for (uint32_t member : Voters(membership())) {
        if (member == config_.id || probe_grants_.count(member)) continue;
        paxospb::Message message;
        message.mutable_probe()->set_first_unchosen(commit_ + 1);
        Send(member, std::move(message));
      }
    }
  }
  if (fetch_outstanding_ &&
      ticks_ - last_fetch_tick_ >=
          static_cast<uint64_t>(config_.heartbeat_ticks)) {
    fetch_outstanding_ = false;
    MaybeFetch(leader_id_, /*force=*/false);
  }
  if (!CanCampaign()) {
    // Learners, removed members and joiners that have not learned the
    // configuration never campaign.
    election_elapsed_ = 0;
    return;
  }
  if (++election_elapsed_ >= randomized_election_ticks_) {
    StartProbe();
  }
}

bool Replica::HasReady() {
  FlushProposals();
  return hard_state_dirty_ || !unsaved_entries_.empty() || snapshot_dirty_ ||
         pending_install_.has_value() || !outbox_.empty() ||
         !self_outbox_.empty() || emitted_ < commit_ ||
         soft_state() != reported_soft_state_;
}

Ready Replica::GetReady() {
  CHECK(!ready_outstanding_) << "GetReady() called twice without Advance()";
  FlushProposals();
  Ready ready;
  if (hard_state_dirty_) {
    paxospb::HardState hard_state;
    *hard_state.mutable_promised() = promised_;
    hard_state.set_commit(commit_);
    *hard_state.mutable_initial_membership() = initial_membership_;
    ready.persist.hard_state = std::move(hard_state);
    hard_state_dirty_ = false;
  }
  if (snapshot_dirty_) {
    ready.persist.snapshot = snapshot_;
    snapshot_dirty_ = false;
  }
  for (auto& [slot, entry] : unsaved_entries_) {
    if (slot > snapshot_index()) ready.persist.entries.push_back(entry);
  }
  unsaved_entries_.clear();
  ready.messages = std::move(outbox_);
  outbox_.clear();
  self_inflight_ = std::move(self_outbox_);
  self_outbox_.clear();
  if (pending_install_.has_value()) {
    emitted_ = std::max(emitted_, pending_install_->index());
    ready.install_snapshot = std::move(pending_install_);
    pending_install_.reset();
  }
  while (emitted_ < commit_) {
    ++emitted_;
    auto it = entries_.find(emitted_);
    CHECK(it != entries_.end()) << "chosen slot " << emitted_ << " missing";
    ready.committed.push_back(it->second);
  }
  const SoftState current = soft_state();
  if (current != reported_soft_state_) {
    ready.soft_state = current;
    reported_soft_state_ = current;
  }
  ready_outstanding_ = true;
  return ready;
}

void Replica::Advance() {
  CHECK(ready_outstanding_) << "Advance() without GetReady()";
  ready_outstanding_ = false;
  std::vector<paxospb::Message> to_self = std::move(self_inflight_);
  self_inflight_.clear();
  for (const paxospb::Message& message : to_self) Step(message);
}

absl::Status Replica::Compact(uint64_t index, std::string data) {
  if (index > emitted_ || index > commit_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot snapshot at index ", index, ": only ", emitted_,
                     " slots were handed to the state machine"));
  }
  if (index <= snapshot_index()) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot index ", index,
                     " is not above the current snapshot ", snapshot_index()));
  }
  paxospb::Snapshot snapshot;
  snapshot.set_index(index);
  snapshot.set_data(std::move(data));
  *snapshot.mutable_membership() = MembershipAfter(index);
  base_membership_ = snapshot.membership();
  has_base_ = true;
  changes_.erase(changes_.begin(), changes_.upper_bound(index));
  snapshot_ = std::move(snapshot);
  snapshot_dirty_ = true;
  entries_.erase(entries_.begin(), entries_.upper_bound(index));
  unsaved_entries_.erase(unsaved_entries_.begin(),
                         unsaved_entries_.upper_bound(index));
  return absl::OkStatus();
}

bool Replica::HasLease() const {
  if (role_ != Role::kLeader) return false;
  // Wait out any lease a previous leader may still hold.
  if (!lease_wait_waived_ && ticks_ < elected_tick_ + config_.lease_ticks) {
    return false;
  }
  // Reads must see every write a previous leader acknowledged: those are
  // among the slots this leader took over, so they must be chosen and
  // handed to the state machine first.
  if (!LOCKD_INJECTED_BUG(config_, lease_before_takeover) &&
      (commit_ < takeover_slot_ || emitted_ < takeover_slot_)) {
    return false;
  }
  return QuorumAckTick() + config_.lease_ticks - config_.max_drift_ticks >
         ticks_;
}

uint64_t Replica::QuorumAckTick() const {
  // While a change is in flight, a majority of each configuration must
  // have acknowledged.
  uint64_t quorum_tick = ticks_;
  for (const paxospb::Membership* config : LeaderConfigs()) {
    std::vector<uint64_t> acks;
    for (uint32_t member : Voters(*config)) {
      if (member == config_.id) {
        acks.push_back(ticks_);
        continue;
      }
      auto it = peer_ack_tick_.find(member);
      acks.push_back(it == peer_ack_tick_.end() ? elected_tick_ : it->second);
    }
    if (acks.empty()) continue;
    std::sort(acks.begin(), acks.end(), std::greater<uint64_t>());
    quorum_tick = std::min(quorum_tick, acks[acks.size() / 2]);
  }
  return quorum_tick;
}

std::string Replica::DebugInflight() const {
  if (inflight_.empty()) return "none";
  const auto& [slot, inflight] = *inflight_.begin();
  std::vector<uint32_t> acks(inflight.acks.begin(), inflight.acks.end());
  std::sort(acks.begin(), acks.end());
  return absl::StrCat("slot ", slot, " acked by [", absl::StrJoin(acks, ","),
                      "] of ", inflight_.size(), " inflight");
}

// ---------------------------------------------------------------------------
// Acceptor.

paxospb::Reject::Reason Replica::RefusalReason(uint32_t candidate,
                                               uint64_t first_unchosen) const {
  if (candidate == config_.id) return paxospb::Reject::REASON_UNSPECIFIED;
  // After a restart this replica cannot know whether it acknowledged a
  // leader just before; it waits out one lease before promising anyone.
  if (ticks_ < static_cast<uint64_t>(config_.lease_ticks)) {
    return paxospb::Reject::RECOVERING;
  }
  if (role_ == Role::kLeader) return paxospb::Reject::LEADER_ALIVE;
  // The refusal window is tied to the leader this replica acknowledged and
  // nothing else: no promise, step-down or campaign shortens it. (A stale
  // Prepare from that leader's previous incarnation must not reopen the
  // door to others while its current incarnation holds a lease.)
  // The one exception: the leader itself handed over to `candidate` (it
  // stopped serving before it said so).
  const bool handed_over = candidate == handover_to_ &&
                           BallotEqual(sticky_ballot_, handover_ballot_);
  if (!LOCKD_INJECTED_BUG(config_, acceptor_ignores_leader_lease) &&
      candidate != sticky_leader_ && !handed_over &&
      ticks_ < sticky_until_tick_) {
    return paxospb::Reject::LEADER_ALIVE;
  }
  if (commit_ >= first_unchosen &&
      commit_ - first_unchosen >= config_.max_candidate_lag_slots) {
    return paxospb::Reject::BEHIND;
  }
  return paxospb::Reject::REASON_UNSPECIFIED;
}

bool Replica::CanListPromiseFrom(uint64_t first_unchosen) const {
  if (snapshot_index() >= first_unchosen) return false;
  size_t bytes = 0;
  for (auto it = entries_.lower_bound(first_unchosen); it != entries_.end();
       ++it) {
    bytes += it->second.ByteSizeLong();
    if (bytes > config_.max_message_bytes / 2) return false;
  }
  return true;
}

void Replica::Refuse(uint32_t to, paxospb::Reject::Reason reason,
                     const paxospb::Ballot& refused) {
  paxospb::Message message;
  paxospb::Reject* reject = message.mutable_reject();
  reject->set_reason(reason);
  *reject->mutable_promised() = promised_;
  reject->set_commit(commit_);
  *reject->mutable_refused() = refused;
  Send(to, std::move(message));
}

void Replica::HandleProbe(uint32_t from, const paxospb::Probe& probe) {
  paxospb::Reject::Reason reason = RefusalReason(from, probe.first_unchosen());
  if (reason == paxospb::Reject::REASON_UNSPECIFIED &&
      !CanListPromiseFrom(probe.first_unchosen())) {
    reason = paxospb::Reject::BEHIND;
  }
  if (reason != paxospb::Reject::REASON_UNSPECIFIED) {
    Refuse(from, reason, paxospb::Ballot());
    return;
  }
  paxospb::Message message;
  message.mutable_probe_grant();
  Send(from, std::move(message));
}

void Replica::HandlePrepare(uint32_t from, const paxospb::Prepare& prepare) {
  const paxospb::Ballot& ballot = prepare.ballot();
  ObserveBallot(ballot);
  if (ballot.replica_id() != from) return;
  // A Prepare to itself queued before this replica gave up its candidacy
  // (it heard from a leader in between) must not raise its promise.
  if (from == config_.id && !(role_ == Role::kCandidate && preparing_ &&
                              BallotEqual(ballot, ballot_))) {
    return;
  }
  if (BallotLess(ballot, promised_)) {
    Refuse(from, paxospb::Reject::HIGHER_BALLOT, ballot);
    return;
  }
  // A promise must list every entry from first_unchosen on. Once some of
  // them were compacted into a snapshot it cannot, not even when repeating a
  // promise already made at this ballot: an incomplete promise would let the
  // candidate take a chosen slot for a hole. Nor may it outgrow a message:
  // then this replica refuses too, and leads itself when its timer fires
  // (its promise to itself never crosses the network).
  if (from != config_.id && !CanListPromiseFrom(prepare.first_unchosen())) {
    Refuse(from, paxospb::Reject::BEHIND, ballot);
    return;
  }
  if (!BallotEqual(ballot, promised_)) {
    const paxospb::Reject::Reason reason =
        RefusalReason(from, prepare.first_unchosen());
    if (reason != paxospb::Reject::REASON_UNSPECIFIED) {
      Refuse(from, reason, ballot);
      return;
    }
    SetPromised(ballot);
    if (from != config_.id) BecomeFollower(0);
  }
  paxospb::Message message;
  paxospb::Promise* promise = message.mutable_promise();
  *promise->mutable_ballot() = ballot;
  for (auto it = entries_.lower_bound(prepare.first_unchosen());
       it != entries_.end(); ++it) {
    *promise->add_entries() = it->second;
  }
  Send(from, std::move(message));
}

void Replica::HandleAccept(uint32_t from, const paxospb::Accept& accept) {
  const paxospb::Ballot& ballot = accept.ballot();
  ObserveBallot(ballot);
  if (ballot.replica_id() != from) return;
  if (BallotLess(ballot, promised_) &&
      !LOCKD_INJECTED_BUG(config_, accept_ignores_ballot)) {
    Refuse(from, paxospb::Reject::HIGHER_BALLOT, ballot);
    return;
  }
  if (BallotLess(promised_, ballot)) SetPromised(ballot);
  if (from != config_.id) {
    if (role_ != Role::kFollower || leader_id_ != from ||
        !BallotEqual(leader_ballot_, ballot)) {
      BecomeFollower(from);
      leader_ballot_ = ballot;
    }
    sticky_leader_ = from;
    sticky_ballot_ = ballot;
    sticky_until_tick_ = ticks_ + config_.lease_ticks;
    election_elapsed_ = 0;
    if (accept.handover_to() != 0) {
      handover_to_ = accept.handover_to();
      handover_ballot_ = ballot;
    }
  }
  paxospb::Message reply;
  paxospb::Accepted* accepted = reply.mutable_accepted();
  *accepted->mutable_ballot() = ballot;
  accepted->set_sent_tick(accept.sent_tick());
  for (const paxospb::Entry& proposed : accept.entries()) {
    const uint64_t slot = proposed.slot();
    if (slot == 0) continue;
    // A slot known chosen keeps its chosen value: any proposal at a higher
    // ballot carries that same value, so acknowledging it is truthful. A
    // different value there means the proposer lost a chosen value; never
    // acknowledge that.
    if (slot <= commit_) {
      auto known = entries_.find(slot);
      if (known != entries_.end() &&
          !SameValue(known->second.value(), proposed.value())) {
        LOG(ERROR) << "replica " << config_.id
                   << " refuses to acknowledge slot " << slot << " from ballot "
                   << BallotString(ballot)
                   << ": it differs from the chosen value";
        continue;
      }
    } else {
      paxospb::Entry entry;
      entry.set_slot(slot);
      *entry.mutable_ballot() = ballot;
      *entry.mutable_value() = proposed.value();
      StoreEntry(entry);
    }
    accepted->add_slots(slot);
  }
  if (from != config_.id) LearnCommit(ballot, accept.commit());
  accepted->set_commit(commit_);
  Send(from, std::move(reply));
  if (from != config_.id && accept.handover_to() == config_.id &&
      CanCampaign()) {
    LOG(INFO) << "replica " << config_.id << " takes over from replica " << from
              << ", which handed leadership over";
    StartCampaign();
    handover_campaign_ = true;
    handover_tick_ = ticks_;
  }
}

void Replica::HandleFetchRequest(uint32_t from,
                                 const paxospb::FetchRequest& request) {
  paxospb::Message message;
  paxospb::FetchReply* reply = message.mutable_fetch_reply();
  reply->set_commit(commit_);
  uint64_t slot = std::max<uint64_t>(request.from_slot(), 1);
  if (snapshot_.has_value() && slot <= snapshot_->index()) {
    *reply->mutable_snapshot() = *snapshot_;
    slot = snapshot_->index() + 1;
  } else if (slot == 1 && has_base_) {
    *reply->mutable_initial_membership() = initial_membership_;
  }
  // A snapshot travels alone when it leaves no room for entries.
  size_t bytes = reply->has_snapshot() ? reply->snapshot().ByteSizeLong() : 0;
  for (int count = 0;
       slot <= commit_ && count < config_.max_entries_per_message;
       ++slot, ++count) {
    const paxospb::Entry& entry = entries_.at(slot);
    bytes += entry.ByteSizeLong();
    if ((count > 0 || reply->has_snapshot()) &&
        bytes > config_.max_message_bytes / 2) {
      break;
    }
    *reply->add_entries() = entry;
  }
  Send(from, std::move(message));
}

// ---------------------------------------------------------------------------
// Proposer.

void Replica::StartProbe() {
  ResetElectionTimer();
  DropCampaignAndLeadership();
  role_ = Role::kCandidate;
  leader_id_ = 0;
  resend_elapsed_ = 0;
  probe_grants_.insert(config_.id);
  for (uint32_t member : Voters(membership())) {
    if (member == config_.id) continue;
    paxospb::Message message;
    message.mutable_probe()->set_first_unchosen(commit_ + 1);
    Send(member, std::move(message));
  }
  if (IsQuorum(membership(), probe_grants_)) StartPrepare();
}

void Replica::StartCampaign() {
  ResetElectionTimer();
  DropCampaignAndLeadership();
  role_ = Role::kCandidate;
  leader_id_ = 0;
  StartPrepare();
}

void Replica::HandleProbeGrant(uint32_t from) {
  if (role_ != Role::kCandidate || preparing_) return;
  probe_grants_.insert(from);
  if (IsQuorum(membership(), probe_grants_)) StartPrepare();
}

void Replica::StartPrepare() {
  preparing_ = true;
  resend_elapsed_ = 0;
  promises_.clear();
  ballot_ =
      MakeBallot(std::max(max_round_seen_, promised_.round()) + 1, config_.id);
  ObserveBallot(ballot_);
  for (uint32_t member : Voters(membership())) {
    paxospb::Message message;
    paxospb::Prepare* prepare = message.mutable_prepare();
    *prepare->mutable_ballot() = ballot_;
    prepare->set_first_unchosen(commit_ + 1);
    Send(member, std::move(message));
  }
}

void Replica::HandlePromise(uint32_t from, const paxospb::Promise& promise) {
  if (role_ != Role::kCandidate || !preparing_ ||
      !BallotEqual(promise.ballot(), ballot_)) {
    return;
  }
  // Merge rather than replace: a repeated promise must not hide an entry an
  // earlier one reported.
  std::vector<paxospb::Entry>& entries = promises_[from];
  entries.insert(entries.end(), promise.entries().begin(),
                 promise.entries().end());
  if (CampaignWon()) BecomeLeader();
}

std::map<uint64_t, paxospb::Entry> Replica::MergePromises() const {
  std::map<uint64_t, paxospb::Entry> merged;
  for (const auto& [acceptor, entries] : promises_) {
    for (const paxospb::Entry& entry : entries) {
      if (entry.slot() <= commit_) continue;
      auto [it, inserted] = merged.emplace(entry.slot(), entry);
      if (inserted || it->second.chosen()) continue;
      if (entry.chosen() || BallotLess(it->second.ballot(), entry.ballot())) {
        it->second = entry;
      }
    }
  }
  return merged;
}

std::vector<const paxospb::Membership*> Replica::CampaignConfigs(
    const std::map<uint64_t, paxospb::Entry>& merged) const {
  std::vector<const paxospb::Membership*> configs = {&membership()};
  if (LOCKD_INJECTED_BUG(config_, membership_without_joint_quorums)) {
    return configs;
  }
  // A change the new leader will re-propose governs the slots after it, so
  // those values are safe only with a majority of it too (its majorities
  // may differ from the committed configuration's by one voter).
  for (const auto& [slot, entry] : merged) {
    if (entry.value().has_membership()) {
      configs.push_back(&entry.value().membership());
    }
  }
  return configs;
}

std::vector<uint32_t> Replica::CampaignVoters() const {
  std::vector<uint32_t> voters;
  const std::map<uint64_t, paxospb::Entry> merged = MergePromises();
  for (const paxospb::Membership* config : CampaignConfigs(merged)) {
    for (uint32_t voter : Voters(*config)) voters.push_back(voter);
  }
  std::sort(voters.begin(), voters.end());
  voters.erase(std::unique(voters.begin(), voters.end()), voters.end());
  return voters;
}

bool Replica::CampaignWon() const {
  if (promises_.count(config_.id) == 0) return false;
  const std::map<uint64_t, paxospb::Entry> merged = MergePromises();
  for (const paxospb::Membership* config : CampaignConfigs(merged)) {
    if (!IsQuorum(*config, promises_)) return false;
  }
  return true;
}

void Replica::BecomeLeader() {
  role_ = Role::kLeader;
  leader_id_ = config_.id;
  leader_ballot_ = ballot_;
  elected_tick_ = ticks_;
  // After a handover the previous leader stopped serving before it handed
  // over, and it held a lease then (so every earlier lease had run out);
  // any other leader would hold a majority sticky to it, which could not
  // have promised. The waiver lasts only while that lease could have.
  lease_wait_waived_ =
      handover_campaign_ && ticks_ - handover_tick_ + config_.max_drift_ticks <
                                static_cast<uint64_t>(config_.lease_ticks);
  handover_campaign_ = false;
  heartbeat_elapsed_ = 0;
  peer_ack_tick_.clear();
  peer_commit_.clear();
  inflight_.clear();
  pending_.clear();
  pending_membership_.reset();

  // Per slot above the commit point: the chosen value if any acceptor knows
  // it, else the value accepted at the highest ballot.
  const std::map<uint64_t, paxospb::Entry> merged = MergePromises();
  const bool ignore_values =
      LOCKD_INJECTED_BUG(config_, leader_ignores_promised_values);
  promises_.clear();
  const uint64_t last_slot = merged.empty() ? commit_ : merged.rbegin()->first;
  next_slot_ = last_slot + 1;
  takeover_slot_ = last_slot;
  for (uint64_t slot = commit_ + 1; slot <= last_slot; ++slot) {
    InflightSlot& inflight = inflight_[slot];
    auto it = merged.find(slot);
    if (it != merged.end() && !ignore_values)
      inflight.value = it->second.value();
  }
  LOG(INFO) << "replica " << config_.id << " leads with ballot "
            << BallotString(ballot_) << " from slot " << commit_ + 1 << "; "
            << (last_slot > commit_ ? absl::StrCat("re-proposing slots ",
                                                   commit_ + 1, "..", last_slot)
                                    : std::string("nothing to re-propose"));
  SendHeartbeats();
  // The leader accepts its own proposals through the same path (delivered
  // after the batch is durable).
  paxospb::Message self;
  paxospb::Accept* accept = self.mutable_accept();
  *accept->mutable_ballot() = ballot_;
  accept->set_commit(commit_);
  accept->set_sent_tick(ticks_);
  for (const auto& [slot, inflight] : inflight_) {
    paxospb::Entry* entry = accept->add_entries();
    entry->set_slot(slot);
    *entry->mutable_value() = inflight.value;
  }
  Send(config_.id, std::move(self));
}

void Replica::BecomeFollower(uint32_t leader_id) {
  if (role_ == Role::kLeader && leader_id != config_.id) {
    LOG(INFO) << "replica " << config_.id << " steps down from ballot "
              << BallotString(ballot_);
  }
  DropCampaignAndLeadership();
  role_ = Role::kFollower;
  leader_id_ = leader_id;
  ResetElectionTimer();
}

void Replica::DropCampaignAndLeadership() {
  preparing_ = false;
  handover_campaign_ = false;
  promises_.clear();
  probe_grants_.clear();
  inflight_.clear();
  pending_.clear();
  pending_membership_.reset();
  peer_ack_tick_.clear();
  peer_commit_.clear();
  if (!departing_.empty()) {
    departing_.clear();
    RefreshKnownIds();
  }
}

void Replica::FlushProposals() {
  if (role_ != Role::kLeader) return;
  std::vector<paxospb::Accept> batches(1);
  size_t message_bytes = 0;
  const auto has_room = [this] {
    return inflight_.size() < static_cast<size_t>(config_.max_inflight_slots);
  };
  // Nothing is proposed after a configuration change until it is chosen:
  // which configuration governs a slot must never be in doubt at its leader.
  bool change_pending = false;
  for (const auto& [slot, inflight] : inflight_) {
    change_pending = change_pending || inflight.value.has_membership();
  }
  const bool drain =
      !LOCKD_INJECTED_BUG(config_, membership_without_joint_quorums);
  while (!(drain && change_pending) && !pending_.empty() && has_room()) {
    const uint64_t slot = next_slot_++;
    InflightSlot& inflight = inflight_[slot];
    size_t bytes = 0;
    while (!pending_.empty() &&
           inflight.value.commands_size() < config_.max_batch_commands &&
           bytes + pending_.front().size() <= config_.max_batch_bytes) {
      bytes += pending_.front().size();
      inflight.value.add_commands(std::move(pending_.front()));
      pending_.pop_front();
    }
    const size_t serialized = inflight.value.ByteSizeLong();
    if (message_bytes > 0 &&
        message_bytes + serialized > config_.max_message_bytes / 2) {
      batches.emplace_back();
      message_bytes = 0;
    }
    message_bytes += serialized;
    paxospb::Entry* entry = batches.back().add_entries();
    entry->set_slot(slot);
    *entry->mutable_value() = inflight.value;
  }
  if (!(drain && change_pending) && pending_membership_.has_value() &&
      has_room()) {
    const uint64_t slot = next_slot_++;
    InflightSlot& inflight = inflight_[slot];
    *inflight.value.mutable_membership() = std::move(*pending_membership_);
    pending_membership_.reset();
    LOG(INFO) << "replica " << config_.id << " proposes configuration "
              << MembershipString(inflight.value.membership()) << " at slot "
              << slot;
    paxospb::Entry* entry = batches.back().add_entries();
    entry->set_slot(slot);
    *entry->mutable_value() = inflight.value;
  }
  if (batches.front().entries_size() == 0) return;
  const std::vector<uint32_t> targets = LeaderTargets();
  for (paxospb::Accept& batch : batches) {
    *batch.mutable_ballot() = ballot_;
    batch.set_commit(commit_);
    batch.set_sent_tick(ticks_);
    // Copies for all targets but the last, which takes the batch itself.
    for (size_t i = 0; i < targets.size(); ++i) {
      paxospb::Message message;
      if (i + 1 < targets.size()) {
        *message.mutable_accept() = batch;
      } else {
        *message.mutable_accept() = std::move(batch);
      }
      Send(targets[i], std::move(message));
    }
  }
}

absl::Status Replica::ProposeMembership(const paxospb::Membership& next) {
  if (role_ != Role::kLeader || commit_ < takeover_slot_) {
    return absl::UnavailableError(absl::StrCat(
        "replica ", config_.id,
        " cannot change the configuration: it is not the leader, or its "
        "takeover is not complete; retry at the leader"));
  }
  if (change_in_flight()) {
    return absl::FailedPreconditionError(
        "another configuration change is in flight; retry when it is done");
  }
  if (!LOCKD_INJECTED_BUG(config_, membership_without_joint_quorums)) {
    if (absl::Status valid = ValidateChange(membership(), next); !valid.ok()) {
      return valid;
    }
  } else if (absl::Status valid = ValidateMembership(next); !valid.ok()) {
    return valid;
  }
  if (!IsVoter(next, config_.id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "replica ", config_.id,
        " leads and cannot remove or demote itself; hand leadership over "
        "first"));
  }
  pending_membership_ = next;
  return absl::OkStatus();
}

absl::Status Replica::TransferLeadership(uint32_t target) {
  if (!HasLease()) {
    return absl::UnavailableError(absl::StrCat(
        "replica ", config_.id,
        " can hand leadership over only as a leader holding its lease"));
  }
  if (target == config_.id || !IsVoter(membership(), target)) {
    return absl::FailedPreconditionError(
        absl::StrCat("replica ", target, " is not another voter of ",
                     MembershipString(membership())));
  }
  // Slots in flight are not lost: the target finds them in its phase 1.
  // It only must not be so far behind that it has to fetch first.
  if (PeerCommit(target) + config_.max_inflight_slots < commit_ ||
      change_in_flight()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "replica ", target, " has acknowledged slot ", PeerCommit(target),
        " of ", commit_,
        " (or a configuration change is in flight); retry when it has "
        "caught up"));
  }
  const paxospb::Ballot ballot = ballot_;
  LOG(INFO) << "replica " << config_.id << " hands leadership at ballot "
            << BallotString(ballot) << " to replica " << target;
  BecomeFollower(target);
  // One last heartbeat tells every member; the target campaigns on it.
  for (uint32_t member : Voters(membership())) {
    if (member == config_.id) continue;
    paxospb::Message message;
    paxospb::Accept* accept = message.mutable_accept();
    *accept->mutable_ballot() = ballot;
    accept->set_commit(commit_);
    accept->set_sent_tick(ticks_);
    accept->set_handover_to(target);
    Send(member, std::move(message));
  }
  return absl::OkStatus();
}

void Replica::SendHeartbeats() {
  for (uint32_t member : LeaderTargets()) {
    if (member == config_.id) continue;
    paxospb::Message message;
    paxospb::Accept* accept = message.mutable_accept();
    *accept->mutable_ballot() = ballot_;
    accept->set_commit(commit_);
    accept->set_sent_tick(ticks_);
    // Retransmit in-flight slots this member has not acknowledged.
    size_t bytes = 0;
    for (const auto& [slot, inflight] : inflight_) {
      if (accept->entries_size() >= config_.max_entries_per_message) break;
      if (inflight.acks.count(member)) continue;
      bytes += inflight.value.ByteSizeLong();
      if (accept->entries_size() > 0 && bytes > config_.max_message_bytes / 2) {
        break;
      }
      paxospb::Entry* entry = accept->add_entries();
      entry->set_slot(slot);
      *entry->mutable_value() = inflight.value;
    }
    Send(member, std::move(message));
  }
}

void Replica::HandleAccepted(uint32_t from, const paxospb::Accepted& accepted) {
  if (role_ != Role::kLeader || !BallotEqual(accepted.ballot(), ballot_)) {
    return;
  }
  if (from != config_.id) {
    uint64_t& ack_tick = peer_ack_tick_[from];
    const uint64_t acknowledged_tick =
        LOCKD_INJECTED_BUG(config_, lease_from_ack_receipt)
            ? ticks_
            : accepted.sent_tick();
    ack_tick = std::max(ack_tick, acknowledged_tick);
    uint64_t& peer_commit = peer_commit_[from];
    peer_commit = std::max(peer_commit, accepted.commit());
    auto departing = departing_.find(from);
    if (departing != departing_.end() && peer_commit >= departing->second) {
      departing_.erase(departing);
      RefreshKnownIds();
    }
  }
  for (uint64_t slot : accepted.slots()) {
    auto it = inflight_.find(slot);
    if (it != inflight_.end()) it->second.acks.insert(from);
  }
  AdvanceLeaderCommit();
}

void Replica::AdvanceLeaderCommit() {
  while (true) {
    auto it = inflight_.find(commit_ + 1);
    if (it == inflight_.end()) break;
    // A majority of the configuration governing the slot (the committed
    // one: a change governs only the slots after it). The leader's own
    // acceptance is required: it proves the entry is in this replica's
    // durable log before the commit point covers it.
    const paxospb::Membership* governing = &membership();
    if (LOCKD_INJECTED_BUG(config_, membership_without_joint_quorums)) {
      // The newest change proposed governs at once, chosen or not.
      for (const auto& [slot, inflight] : inflight_) {
        if (inflight.value.has_membership()) {
          governing = &inflight.value.membership();
        }
      }
    }
    if (!IsQuorum(*governing, it->second.acks) ||
        !it->second.acks.count(config_.id)) {
      break;
    }
    auto entry = entries_.find(commit_ + 1);
    CHECK(entry != entries_.end());
    entry->second.set_chosen(true);
    inflight_.erase(it);
    SetCommit(commit_ + 1);
  }
  if (!IsVoter(membership(), config_.id)) {
    LOG(INFO) << "replica " << config_.id
              << " is no longer a voter and stops leading";
    BecomeFollower(0);
  }
}

void Replica::HandleReject(uint32_t from, const paxospb::Reject& reject) {
  ObserveBallot(reject.promised());
  switch (reject.reason()) {
    case paxospb::Reject::HIGHER_BALLOT:
      if ((role_ == Role::kLeader ||
           (role_ == Role::kCandidate && preparing_)) &&
          BallotEqual(reject.refused(), ballot_) &&
          BallotLess(ballot_, reject.promised())) {
        BecomeFollower(0);
      }
      break;
    case paxospb::Reject::BEHIND:
    case paxospb::Reject::LEADER_ALIVE:
      // Refused by a replica that knows more: catch up from it (this is
      // also how a replica that missed a change learns of members it does
      // not know, whose messages it would not take).
      if (reject.commit() > commit_) {
        known_leader_commit_ = std::max(known_leader_commit_, reject.commit());
        MaybeFetch(from, /*force=*/true);
      }
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------
// Learner.

void Replica::LearnCommit(const paxospb::Ballot& ballot,
                          uint64_t leader_commit) {
  known_leader_commit_ = std::max(known_leader_commit_, leader_commit);
  const bool any_ballot = LOCKD_INJECTED_BUG(config_, learner_ignores_ballot);
  uint64_t commit = commit_;
  while (commit < leader_commit) {
    auto it = entries_.find(commit + 1);
    // An entry accepted at the leader's own ballot holds the value that
    // leader proposed, which is the chosen one. Anything else (a hole, or a
    // value from an older ballot) must be fetched.
    if (it == entries_.end() ||
        !(it->second.chosen() || BallotEqual(it->second.ballot(), ballot) ||
          any_ballot)) {
      break;
    }
    it->second.set_chosen(true);
    ++commit;
  }
  SetCommit(commit);
  if (commit_ < known_leader_commit_) MaybeFetch(leader_id_, /*force=*/false);
}

void Replica::MaybeFetch(uint32_t from_replica, bool force) {
  if (from_replica == 0 || from_replica == config_.id) return;
  if (fetch_outstanding_ && !force) return;
  fetch_outstanding_ = true;
  last_fetch_tick_ = ticks_;
  paxospb::Message message;
  message.mutable_fetch_request()->set_from_slot(commit_ + 1);
  Send(from_replica, std::move(message));
}

void Replica::InstallSnapshot(const paxospb::Snapshot& snapshot) {
  if (snapshot.membership().members_size() > 0) {
    base_membership_ = snapshot.membership();
    has_base_ = true;
  }
  changes_.clear();
  snapshot_ = snapshot;
  snapshot_dirty_ = true;
  pending_install_ = snapshot;
  entries_.erase(entries_.begin(), entries_.upper_bound(snapshot.index()));
  unsaved_entries_.erase(unsaved_entries_.begin(),
                         unsaved_entries_.upper_bound(snapshot.index()));
  SetCommit(snapshot.index());
  RefreshKnownIds();
}

void Replica::HandleFetchReply(uint32_t from,
                               const paxospb::FetchReply& reply) {
  fetch_outstanding_ = false;
  // A leader learns every slot from its own phase 1 and re-proposes it; a
  // late reply to a fetch it sent as a candidate must not move its commit
  // point under its in-flight slots.
  if (role_ == Role::kLeader) return;
  known_leader_commit_ = std::max(known_leader_commit_, reply.commit());
  if (reply.has_snapshot() && reply.snapshot().index() > commit_) {
    InstallSnapshot(reply.snapshot());
  }
  if (!knows_membership()) {
    // A joining replica learns the configuration the log starts from; until
    // then it cannot follow the changes in it.
    if (reply.initial_membership().members_size() == 0) return;
    initial_membership_ = reply.initial_membership();
    base_membership_ = initial_membership_;
    has_base_ = true;
    hard_state_dirty_ = true;
    RefreshKnownIds();
  }
  uint64_t commit = commit_;
  for (const paxospb::Entry& fetched : reply.entries()) {
    if (fetched.slot() != commit + 1) continue;
    paxospb::Entry entry = fetched;
    entry.set_chosen(true);
    StoreEntry(entry);
    ++commit;
  }
  SetCommit(commit);
  if (commit_ < known_leader_commit_ && !reply.entries().empty()) {
    MaybeFetch(from, /*force=*/true);
  }
}

}  // namespace lockd::paxos
