#include "paxos/replica.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"

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

absl::Status Config::Validate() const {
  if (id == 0 || id > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("replica id ", id, " must be in [1, 65535]"));
  }
  if (members.empty()) {
    return absl::InvalidArgumentError("members must list every replica");
  }
  std::vector<uint32_t> sorted = members;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "members has a duplicate id: ", absl::StrJoin(members, ",")));
  }
  if (std::find(members.begin(), members.end(), id) == members.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "replica id ", id, " is not in members ", absl::StrJoin(members, ",")));
  }
  for (uint32_t member : members) {
    if (member == 0 || member > 0xffff) {
      return absl::InvalidArgumentError(
          absl::StrCat("member id ", member, " must be in [1, 65535]"));
    }
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

bool Replica::IsMember(uint32_t id) const {
  return std::find(config_.members.begin(), config_.members.end(), id) !=
         config_.members.end();
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
  entries_[entry.slot()] = entry;
  unsaved_entries_[entry.slot()] = entry;
}

void Replica::SetCommit(uint64_t commit) {
  CHECK_GE(commit, commit_) << "the commit point may never move back";
  if (commit == commit_) return;
  commit_ = commit;
  known_leader_commit_ = std::max(known_leader_commit_, commit_);
  hard_state_dirty_ = true;
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
  if (message.to() != config_.id || !IsMember(from)) return;
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
      for (uint32_t member : config_.members) {
        if (member == config_.id || promises_.count(member)) continue;
        paxospb::Message message;
        paxospb::Prepare* prepare = message.mutable_prepare();
        *prepare->mutable_ballot() = ballot_;
        prepare->set_first_unchosen(commit_ + 1);
        Send(member, std::move(message));
      }
    } else {
      for (uint32_t member : config_.members) {
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
  if (ticks_ < elected_tick_ + config_.lease_ticks) return false;
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
  std::vector<uint64_t> acks;
  acks.reserve(config_.members.size());
  for (uint32_t member : config_.members) {
    if (member == config_.id) {
      acks.push_back(ticks_);
      continue;
    }
    auto it = peer_ack_tick_.find(member);
    acks.push_back(it == peer_ack_tick_.end() ? elected_tick_ : it->second);
  }
  std::sort(acks.begin(), acks.end(), std::greater<uint64_t>());
  return acks[Quorum() - 1];
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
  if (!LOCKD_INJECTED_BUG(config_, acceptor_ignores_leader_lease) &&
      candidate != sticky_leader_ && ticks_ < sticky_until_tick_) {
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
    sticky_until_tick_ = ticks_ + config_.lease_ticks;
    election_elapsed_ = 0;
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
  for (uint32_t member : config_.members) {
    if (member == config_.id) continue;
    paxospb::Message message;
    message.mutable_probe()->set_first_unchosen(commit_ + 1);
    Send(member, std::move(message));
  }
  if (probe_grants_.size() >= Quorum()) StartPrepare();
}

void Replica::HandleProbeGrant(uint32_t from) {
  if (role_ != Role::kCandidate || preparing_) return;
  probe_grants_.insert(from);
  if (probe_grants_.size() >= Quorum()) StartPrepare();
}

void Replica::StartPrepare() {
  preparing_ = true;
  resend_elapsed_ = 0;
  promises_.clear();
  ballot_ =
      MakeBallot(std::max(max_round_seen_, promised_.round()) + 1, config_.id);
  ObserveBallot(ballot_);
  for (uint32_t member : config_.members) {
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
  if (promises_.size() >= Quorum() && promises_.count(config_.id)) {
    BecomeLeader();
  }
}

void Replica::BecomeLeader() {
  role_ = Role::kLeader;
  leader_id_ = config_.id;
  leader_ballot_ = ballot_;
  elected_tick_ = ticks_;
  heartbeat_elapsed_ = 0;
  peer_ack_tick_.clear();
  inflight_.clear();
  pending_.clear();

  // Per slot above the commit point: the chosen value if any acceptor knows
  // it, else the value accepted at the highest ballot.
  std::map<uint64_t, paxospb::Entry> merged;
  const bool ignore_values =
      LOCKD_INJECTED_BUG(config_, leader_ignores_promised_values);
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
  promises_.clear();
  probe_grants_.clear();
  inflight_.clear();
  pending_.clear();
  peer_ack_tick_.clear();
}

void Replica::FlushProposals() {
  if (role_ != Role::kLeader) return;
  std::vector<paxospb::Accept> batches(1);
  size_t message_bytes = 0;
  while (!pending_.empty() &&
         inflight_.size() < static_cast<size_t>(config_.max_inflight_slots)) {
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
  if (batches.front().entries_size() == 0) return;
  for (paxospb::Accept& batch : batches) {
    *batch.mutable_ballot() = ballot_;
    batch.set_commit(commit_);
    batch.set_sent_tick(ticks_);
    // Copies for all members but the last, which takes the batch itself.
    for (size_t i = 0; i < config_.members.size(); ++i) {
      paxospb::Message message;
      if (i + 1 < config_.members.size()) {
        *message.mutable_accept() = batch;
      } else {
        *message.mutable_accept() = std::move(batch);
      }
      Send(config_.members[i], std::move(message));
    }
  }
}

void Replica::SendHeartbeats() {
  for (uint32_t member : config_.members) {
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
  }
  for (uint64_t slot : accepted.slots()) {
    auto it = inflight_.find(slot);
    if (it != inflight_.end()) it->second.acks.insert(from);
  }
  AdvanceLeaderCommit();
}

void Replica::AdvanceLeaderCommit() {
  uint64_t commit = commit_;
  while (true) {
    auto it = inflight_.find(commit + 1);
    if (it == inflight_.end()) break;
    // The leader's own acceptance is required: it proves the entry is in
    // this replica's durable log before the commit point covers it.
    if (it->second.acks.size() < Quorum() ||
        !it->second.acks.count(config_.id)) {
      break;
    }
    auto entry = entries_.find(commit + 1);
    CHECK(entry != entries_.end());
    entry->second.set_chosen(true);
    inflight_.erase(it);
    ++commit;
  }
  SetCommit(commit);
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
  snapshot_ = snapshot;
  snapshot_dirty_ = true;
  pending_install_ = snapshot;
  entries_.erase(entries_.begin(), entries_.upper_bound(snapshot.index()));
  unsaved_entries_.erase(unsaved_entries_.begin(),
                         unsaved_entries_.upper_bound(snapshot.index()));
  SetCommit(snapshot.index());
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
