#include "lockd/replica_node.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "lockd/secrets.h"
#include "paxos/ballot.h"
#include "paxos/membership.h"

namespace lockd {

absl::StatusOr<std::unique_ptr<ReplicaNode>> ReplicaNode::Create(
    const ReplicaNodeOptions& options, paxos::Storage* storage,
    PeerSender* sender) {
  if (options.snapshot_interval == 0) {
    return absl::InvalidArgumentError("snapshot_interval must be positive");
  }
  if (options.checkpoint_ticks <= 0 || options.tick_command_ticks <= 0) {
    return absl::InvalidArgumentError(
        "checkpoint_ticks and tick_command_ticks must be positive");
  }
  for (uint32_t member : options.paxos.members) {
    if (options.addresses.count(member) == 0 &&
        paxos::FindMember(options.paxos.initial_membership, member) ==
            nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("member ", member, " has no address"));
    }
  }
  absl::StatusOr<paxos::DurableState> state = storage->Load();
  if (!state.ok()) return state.status();
  absl::StatusOr<std::unique_ptr<paxos::Replica>> replica =
      paxos::Replica::Create(options.paxos, *std::move(state));
  if (!replica.ok()) return replica.status();
  return std::unique_ptr<ReplicaNode>(
      new ReplicaNode(options, storage, *std::move(replica), sender));
}

ReplicaNode::ReplicaNode(const ReplicaNodeOptions& options,
                         paxos::Storage* storage,
                         std::unique_ptr<paxos::Replica> replica,
                         PeerSender* sender)
    : options_(options),
      storage_(storage),
      replica_(std::move(replica)),
      sender_(sender),
      state_(options.limits) {}

void ReplicaNode::ProcessReady(int64_t now_ms) {
  while (replica_->HasReady()) {
    paxos::Ready ready = replica_->GetReady();
    if (!ready.persist.empty()) {
      const absl::Status saved = storage_->Save(ready.persist);
      CHECK(saved.ok()) << "cannot persist Paxos state: " << saved;
    }
    for (paxospb::Message& message : ready.messages) {
      sender_->Send(std::move(message));
    }
    if (ready.install_snapshot.has_value()) {
      const absl::Status restored =
          state_.Restore(ready.install_snapshot->data());
      CHECK(restored.ok()) << "cannot restore snapshot at index "
                           << ready.install_snapshot->index() << ": "
                           << restored;
      applied_index_ = ready.install_snapshot->index();
      last_snapshot_index_ = applied_index_;
      VLOG(1) << "replica " << replica_->id() << " installed snapshot at "
              << applied_index_;
    }
    for (const paxospb::Entry& entry : ready.committed) {
      ApplyEntry(entry, now_ms);
    }
    if (ready.soft_state.has_value()) OnSoftState(*ready.soft_state);
    replica_->Advance();
  }
  ReportMembership();
  MaybeCompact();
}

void ReplicaNode::ReportMembership() {
  if (!membership_observer_ || !replica_->knows_membership()) return;
  std::string serialized;
  replica_->membership().SerializeToString(&serialized);
  if (serialized == reported_membership_) return;
  reported_membership_ = std::move(serialized);
  membership_observer_(replica_->membership());
}

void ReplicaNode::SetMembershipObserver(
    std::function<void(const paxospb::Membership&)> observer) {
  membership_observer_ = std::move(observer);
  reported_membership_.clear();
  ReportMembership();
}

std::string ReplicaNode::ClientAddress(uint32_t id) const {
  const paxospb::Member* member = paxos::FindMember(replica_->membership(), id);
  if (member != nullptr && !member->client_address().empty()) {
    return member->client_address();
  }
  auto it = options_.addresses.find(id);
  return it == options_.addresses.end() ? std::string() : it->second;
}

void ReplicaNode::ChangeMembership(const MembershipEdit& edit,
                                   ChangeCallback done) {
  if (!Serving()) {
    done(NotServing());
    return;
  }
  if (pending_change_.has_value() || replica_->change_in_flight()) {
    done(absl::FailedPreconditionError(
        "another membership change is in flight; retry when it is done "
        "(lockctl member list shows it)"));
    return;
  }
  absl::StatusOr<paxospb::Membership> next = edit(*replica_);
  if (!next.ok()) {
    done(next.status());
    return;
  }
  // A retry of a change already made (its first answer was lost).
  if (next->SerializeAsString() == replica_->membership().SerializeAsString()) {
    done(AppliedChange{*next, replica_->commit()});
    return;
  }
  if (absl::Status proposed = replica_->ProposeMembership(*next);
      !proposed.ok()) {
    done(proposed);
    return;
  }
  PendingChange change;
  next->SerializeToString(&change.membership);
  change.done = std::move(done);
  pending_change_ = std::move(change);
}

absl::StatusOr<uint32_t> ReplicaNode::HandOver(uint32_t target) {
  if (replica_->role() != paxos::Role::kLeader) return NotServing();
  if (target == 0) {
    uint64_t best = 0;
    for (uint32_t voter : paxos::Voters(replica_->membership())) {
      if (voter == replica_->id()) continue;
      if (target == 0 || replica_->PeerCommit(voter) > best) {
        target = voter;
        best = replica_->PeerCommit(voter);
      }
    }
    if (target == 0) {
      return absl::FailedPreconditionError(
          "there is no other voter to hand leadership to");
    }
  }
  if (absl::Status status = replica_->TransferLeadership(target);
      !status.ok()) {
    return status;
  }
  return target;
}

void ReplicaNode::ApplyEntry(const paxospb::Entry& entry, int64_t now_ms) {
  if (entry.value().has_membership() && pending_change_.has_value()) {
    std::string applied;
    entry.value().membership().SerializeToString(&applied);
    if (applied == pending_change_->membership) {
      ChangeCallback done = std::move(pending_change_->done);
      pending_change_.reset();
      done(AppliedChange{entry.value().membership(), entry.slot()});
    }
  }
  for (const std::string& bytes : entry.value().commands()) {
    statepb::Command command;
    if (!command.ParseFromString(bytes)) {
      // Every replica skips the same bytes, so the states stay identical.
      LOG(ERROR) << "slot " << entry.slot()
                 << " holds a command that does not parse; skipped";
      continue;
    }
    ApplyCommand(command, now_ms);
  }
  applied_index_ = entry.slot();
  ++applied_entries_;
  applied_commands_ += entry.value().commands_size();
}

void ReplicaNode::ApplyCommand(const statepb::Command& command,
                               int64_t now_ms) {
  sessions::ApplyResult result = state_.Apply(command);
  for (sessions::Completion& completion : result.completions) {
    auto waiting =
        waiting_.find({completion.key.session_id, completion.key.request_id});
    if (waiting == waiting_.end()) continue;
    std::vector<Waiter> waiters = std::move(waiting->second.waiters);
    // The secret goes only with the session it was drawn for: a retry by
    // nonce of an existing session gets none.
    if (completion.result.has_create_session() &&
        state_
            .CheckSecret(completion.result.create_session().session_id(),
                         waiting->second.new_secret_digest)
            .ok()) {
      completion.result.mutable_create_session()->set_session_secret(
          std::move(waiting->second.new_secret));
    }
    waiting_.erase(waiting);
    for (Waiter& waiter : waiters) {
      caller_requests_.erase(waiter.caller);
      waiter.done(completion.result);
    }
  }
  for (uint64_t session_id : result.sessions_with_events) {
    for (auto it = session_streams_.lower_bound({session_id, 0});
         it != session_streams_.end() && it->first.first == session_id; ++it) {
      SendEvents(session_id, it->second, now_ms);
    }
  }
  for (uint64_t session_id : result.ended_sessions) {
    renewals_.erase(session_id);
    const absl::Status ended = absl::NotFoundError(
        absl::StrCat("session ", session_id, " ended (closed or expired)"));
    auto it = session_streams_.lower_bound({session_id, 0});
    while (it != session_streams_.end() && it->first.first == session_id) {
      std::shared_ptr<SessionListener> listener = it->second.listener;
      const bool batch = it->second.batch;
      it = session_streams_.erase(it);
      if (!batch) {
        listeners_.erase(listener.get());
        listener->End(ended);
        continue;
      }
      // A batch stream goes on for its other sessions.
      auto info = listeners_.find(listener.get());
      if (info != listeners_.end()) {
        std::vector<uint64_t>& sessions = info->second.sessions;
        sessions.erase(
            std::remove(sessions.begin(), sessions.end(), session_id),
            sessions.end());
      }
      v1::KeepAliveResponse gone;
      gone.set_epoch(replica_->epoch());
      v1::KeepAliveResponse* entry = gone.add_sessions();
      entry->set_session_id(session_id);
      entry->set_code(static_cast<int32_t>(ended.code()));
      entry->set_message(std::string(ended.message()));
      listener->Send(std::move(gone));
    }
  }
  for (const std::string& name : result.changed_elections) {
    NotifyElection(name);
  }
}

void ReplicaNode::MaybeCompact() {
  if (applied_index_ - last_snapshot_index_ < options_.snapshot_interval) {
    return;
  }
  std::string snapshot = state_.Snapshot();
  last_snapshot_bytes_ = snapshot.size();
  ++snapshots_taken_;
  const absl::Status compacted =
      replica_->Compact(applied_index_, std::move(snapshot));
  CHECK(compacted.ok()) << compacted;
  last_snapshot_index_ = applied_index_;
  VLOG(1) << "replica " << replica_->id() << " snapshot at " << applied_index_;
}

void ReplicaNode::OnSoftState(const paxos::SoftState& soft) {
  VLOG(1) << "replica " << replica_->id() << " is "
          << paxos::RoleName(soft.role) << ", leader " << soft.leader_id
          << ", epoch " << paxos::EpochString(soft.epoch);
  if (start_epoch_proposed_ != 0 && (soft.role != paxos::Role::kLeader ||
                                     soft.epoch != start_epoch_proposed_)) {
    start_epoch_proposed_ = 0;
    cell_clock_started_ = false;
    FailAll(NotServing());
  }
}

void ReplicaNode::Housekeeping(int64_t now_ms) {
  if (draining_ || replica_->role() != paxos::Role::kLeader) return;
  const uint64_t ticks = replica_->ticks();
  if (start_epoch_proposed_ != replica_->epoch()) {
    // A new leadership: the cell clock restarts from the replicated time.
    cell_clock_started_ = false;
    statepb::Command start;
    start.mutable_start_epoch();
    if (Propose(std::move(start), now_ms).ok()) {
      start_epoch_proposed_ = replica_->epoch();
      last_checkpoint_tick_ = ticks;
      LOG(INFO) << "replica " << replica_->id() << " leads epoch "
                << paxos::EpochString(start_epoch_proposed_)
                << ": proposed StartEpoch";
    }
    return;
  }
  if (!Serving()) return;
  if (ticks - last_checkpoint_tick_ >=
      static_cast<uint64_t>(options_.checkpoint_ticks)) {
    FlushRenewals(now_ms);
  }
  const std::optional<int64_t> deadline = state_.NextDeadline();
  const bool due = deadline.has_value() && *deadline <= CellClock(now_ms) &&
                   ticks - last_tick_command_tick_ >=
                       static_cast<uint64_t>(options_.tick_command_ticks);
  const bool idle = ticks - last_proposal_tick_ >=
                    static_cast<uint64_t>(options_.idle_tick_ticks);
  if (due || idle) {
    statepb::Command tick;
    tick.mutable_tick();
    if (Propose(std::move(tick), now_ms).ok()) last_tick_command_tick_ = ticks;
  }
}

void ReplicaNode::Submit(statepb::Command command, int64_t now_ms,
                         uint64_t nonce, std::string new_secret,
                         uint64_t caller, ResultCallback done) {
  if (draining_ || replica_->role() != paxos::Role::kLeader ||
      start_epoch_proposed_ != replica_->epoch()) {
    done(NotServing());
    return;
  }
  if (command.has_create_session()) {
    if (command.create_session().nonce() == 0) {
      command.mutable_create_session()->set_nonce(nonce);
    }
    command.set_secret_digest(SecretDigest(new_secret));
  }
  const sessions::RequestKey key = sessions::RequestKeyOf(command);
  const RequestId request{key.session_id, key.request_id};
  if (!command.has_create_session() &&
      (request.first == 0 || request.second == 0)) {
    // Without a request identity the answer could not be matched (or
    // deduplicated); the state machine would refuse it anyway.
    done(absl::InvalidArgumentError(
        "header.session_id and header.request_id are required (request "
        "numbers start at 1)"));
    return;
  }
  if (v1::RequestHeader* header = sessions::MutableHeaderOf(command)) {
    // The log carries the digest, never the secret. A wrong secret is
    // refused here, so that it never joins the callers waiting for the
    // session's real request (the state machine checks it again).
    command.set_secret_digest(SecretDigest(header->session_secret()));
    header->clear_session_secret();
    absl::Status secret =
        state_.CheckSecret(request.first, command.secret_digest());
    if (absl::IsPermissionDenied(secret)) {
      done(std::move(secret));
      return;
    }
  }
  auto waiting = waiting_.find(request);
  if (waiting == waiting_.end()) {
    std::string command_digest = command.secret_digest();
    const absl::Status proposed = Propose(std::move(command), now_ms);
    if (!proposed.ok()) {
      done(proposed);
      return;
    }
    waiting = waiting_.try_emplace(request).first;
    waiting->second.new_secret = std::move(new_secret);
    waiting->second.new_secret_digest = std::move(command_digest);
  }
  waiting->second.waiters.push_back({caller, std::move(done)});
  caller_requests_[caller] = request;
}

void ReplicaNode::Cancel(uint64_t caller) {
  auto request = caller_requests_.find(caller);
  if (request == caller_requests_.end()) return;
  auto waiting = waiting_.find(request->second);
  caller_requests_.erase(request);
  if (waiting == waiting_.end()) return;
  std::vector<Waiter>& waiters = waiting->second.waiters;
  for (auto it = waiters.begin(); it != waiters.end(); ++it) {
    if (it->caller != caller) continue;
    ResultCallback done = std::move(it->done);
    waiters.erase(it);
    // The entry stays (possibly empty) so that the result of the proposal
    // in flight is matched, not proposed again by a retry.
    done(absl::CancelledError("the call was cancelled by the client"));
    return;
  }
}

absl::Status ReplicaNode::Read(const ReadFunction& read) const {
  if (!Serving()) return NotServing();
  return read(state_, *replica_);
}

void ReplicaNode::KeepAlive(const std::shared_ptr<SessionListener>& listener,
                            const v1::KeepAliveRequest& request,
                            int64_t now_ms) {
  auto end = [&](absl::Status status) {
    RemoveSessionListener(listener.get());
    listener->End(std::move(status));
  };
  if (!Serving()) {
    end(NotServing());
    return;
  }
  const bool batch_request =
      request.session_id() == 0 && request.sessions_size() > 0;
  auto [info, inserted] = listeners_.try_emplace(listener.get());
  ListenerStreams& streams = info->second;
  if (inserted) {
    streams.listener = listener;
    streams.stream_id = next_stream_id_++;
    streams.batch = batch_request;
  } else if (streams.batch != batch_request) {
    end(absl::InvalidArgumentError(
        streams.batch
            ? "this KeepAlive stream is in the batch form: leave session_id "
              "at 0 and list the sessions in `sessions`"
            : "this KeepAlive stream is in the single form: name its session "
              "in session_id and leave `sessions` empty (open another stream "
              "for the batch form)"));
    return;
  }
  const int64_t cell_now = CellClock(now_ms);
  bool flush = false;
  if (!streams.batch) {
    absl::StatusOr<v1::KeepAliveResponse> answer =
        RenewOne(listener, streams, request, cell_now, &flush);
    if (!answer.ok()) {
      end(answer.status());
      return;
    }
    if (flush) FlushRenewals(now_ms);
    listener->Send(*std::move(answer));
    return;
  }
  v1::KeepAliveResponse batch;
  batch.set_epoch(replica_->epoch());
  for (const v1::KeepAliveRequest& one : request.sessions()) {
    absl::StatusOr<v1::KeepAliveResponse> answer =
        RenewOne(listener, streams, one, cell_now, &flush);
    if (answer.ok()) {
      *batch.add_sessions() = *std::move(answer);
      continue;
    }
    v1::KeepAliveResponse* failed = batch.add_sessions();
    failed->set_session_id(one.session_id());
    failed->set_code(static_cast<int32_t>(answer.status().code()));
    failed->set_message(std::string(answer.status().message()));
  }
  if (flush) FlushRenewals(now_ms);
  listener->Send(std::move(batch));
}

absl::StatusOr<v1::KeepAliveResponse> ReplicaNode::RenewOne(
    const std::shared_ptr<SessionListener>& listener, ListenerStreams& streams,
    const v1::KeepAliveRequest& renewal, int64_t cell_now_ms, bool* flush) {
  const uint64_t session_id = renewal.session_id();
  const uint64_t acked = renewal.acked_event_sequence();
  const absl::StatusOr<int64_t> expires_at =
      state_.SessionExpiresAt(session_id);
  if (!expires_at.ok()) return expires_at.status();
  if (!streams.batch && !streams.sessions.empty() &&
      streams.sessions.front() != session_id) {
    return absl::InvalidArgumentError(absl::StrCat(
        "this KeepAlive stream belongs to session ", streams.sessions.front(),
        "; open a new stream for session ", session_id,
        " (or use the batch form for many sessions)"));
  }
  auto [it, inserted] =
      session_streams_.try_emplace(StreamKey{session_id, streams.stream_id});
  SessionStream& stream = it->second;
  // The secret is hashed once per stream, not on every keep-alive.
  if (inserted || stream.verified_secret != renewal.session_secret()) {
    absl::Status secret =
        state_.CheckSecret(session_id, SecretDigest(renewal.session_secret()));
    if (!secret.ok()) {
      if (inserted) session_streams_.erase(it);
      return secret;
    }
    stream.verified_secret = renewal.session_secret();
  }
  if (inserted) {
    stream.listener = listener;
    stream.last_sent_sequence = acked;
    stream.batch = streams.batch;
    streams.sessions.push_back(session_id);
  }
  uint64_t& renewed = renewals_[session_id];
  renewed = std::max(renewed, acked);
  // A lease about to run out is checkpointed now rather than at the next
  // interval.
  const int64_t checkpoint_ms = options_.checkpoint_ticks * options_.tick_ms;
  if (*expires_at - cell_now_ms < 2 * checkpoint_ms) *flush = true;
  return SessionResponse(session_id, stream, *expires_at, cell_now_ms);
}

void ReplicaNode::RemoveSessionListener(SessionListener* listener) {
  auto info = listeners_.find(listener);
  if (info == listeners_.end()) return;
  for (uint64_t session_id : info->second.sessions) {
    session_streams_.erase({session_id, info->second.stream_id});
  }
  listeners_.erase(info);
}

void ReplicaNode::Observe(const std::string& name,
                          const std::shared_ptr<ElectionListener>& listener) {
  if (!Serving()) {
    listener->End(NotServing());
    return;
  }
  const absl::StatusOr<v1::GetLeaderResponse> leader = state_.GetLeader(name);
  if (!leader.ok() && leader.status().code() != absl::StatusCode::kNotFound) {
    listener->End(leader.status());
    return;
  }
  const ElectionKey key{name, next_stream_id_++};
  election_stream_keys_[listener.get()] = key;
  election_streams_[key] = {listener};
  SendLeader(name, *listener);
}

void ReplicaNode::RemoveElectionListener(ElectionListener* listener) {
  auto key = election_stream_keys_.find(listener);
  if (key == election_stream_keys_.end()) return;
  election_streams_.erase(key->second);
  election_stream_keys_.erase(key);
}

void ReplicaNode::Drain() {
  draining_ = true;
  FailAll(NotServing());
}

bool ReplicaNode::Serving() const {
  return !draining_ && replica_->role() == paxos::Role::kLeader &&
         start_epoch_proposed_ == replica_->epoch() &&
         state_.epoch() == replica_->epoch() && replica_->HasLease();
}

absl::Status ReplicaNode::NotServing() const {
  const uint32_t leader = replica_->LeaderHint();
  const uint32_t self = replica_->id();
  if (draining_) {
    return absl::UnavailableError(absl::StrCat(
        "replica ", self, " is shutting down; retry at another replica"));
  }
  if (leader == 0) {
    return absl::UnavailableError(
        absl::StrCat("replica ", self, " knows no leader yet; retry shortly"));
  }
  if (leader == self) {
    if (replica_->role() == paxos::Role::kLeader &&
        state_.epoch() == replica_->epoch()) {
      return absl::UnavailableError(absl::StrCat(
          "replica ", self,
          " leads but has not heard from a majority within its lease; "
          "retry shortly"));
    }
    return absl::UnavailableError(absl::StrCat(
        "replica ", self,
        " was just elected and waits out the previous leader's lease; "
        "retry shortly"));
  }
  const std::string address = ClientAddress(leader);
  absl::Status status = absl::UnavailableError(
      absl::StrCat("replica ", self, " is not the leader; the leader is ",
                   "replica ", leader, " at ", address));
  status.SetPayload(kLeaderAddressPayload, absl::Cord(address));
  status.SetPayload(kLeaderIdPayload, absl::Cord(absl::StrCat(leader)));
  return status;
}

int64_t ReplicaNode::CellClock(int64_t now_ms) {
  const uint64_t ticks = replica_->ticks();
  // A new leadership starts from the replicated time, and catches up with it
  // again when the entries it took over are applied: a clock behind the
  // replicated time would overstate every lease it measures, and would stand
  // still (stamps are never below the replicated time) until it caught up.
  if (!cell_clock_started_ || cell_clock_ms_ < state_.now_ms()) {
    cell_clock_started_ = true;
    // A new cell has no time yet: it starts from the wall clock.
    cell_clock_ms_ = state_.now_ms() > 0 ? state_.now_ms() : now_ms;
    cell_clock_tick_ = ticks;
    cell_anchor_ms_ = cell_clock_ms_;
    cell_anchor_tick_ = ticks;
  }
  // The rate is measured over at least a second, so that the slew allowance
  // is not lost to rounding at tick granularity.
  if ((cell_clock_tick_ - cell_anchor_tick_) * options_.tick_ms >= 1000) {
    cell_anchor_ms_ = cell_clock_ms_;
    cell_anchor_tick_ = cell_clock_tick_;
  }
  const int64_t elapsed =
      static_cast<int64_t>(ticks - cell_anchor_tick_) * options_.tick_ms;
  const int64_t slew = elapsed * options_.cell_clock_slew_percent / 100;
  const int64_t reading = std::clamp(now_ms, cell_anchor_ms_ + elapsed - slew,
                                     cell_anchor_ms_ + elapsed + slew);
  cell_clock_ms_ = std::max(cell_clock_ms_, reading);
  cell_clock_tick_ = ticks;
  return cell_clock_ms_;
}

absl::Status ReplicaNode::Propose(statepb::Command command, int64_t now_ms) {
  command.set_epoch(replica_->epoch());
  command.set_time_ms(std::max(CellClock(now_ms), state_.now_ms()));
  const absl::Status proposed = replica_->Propose(command.SerializeAsString());
  if (proposed.ok()) last_proposal_tick_ = replica_->ticks();
  return proposed;
}

void ReplicaNode::FlushRenewals(int64_t now_ms) {
  last_checkpoint_tick_ = replica_->ticks();
  while (!renewals_.empty()) {
    statepb::Command command;
    auto it = renewals_.begin();
    for (int n = 0;
         it != renewals_.end() && n < options_.max_renewals_per_command;
         ++it, ++n) {
      statepb::RenewSessions::Renewal* renewal =
          command.mutable_renew_sessions()->add_renewals();
      renewal->set_session_id(it->first);
      renewal->set_acked_event_sequence(it->second);
    }
    const absl::Status proposed = Propose(std::move(command), now_ms);
    if (!proposed.ok()) {
      LOG_EVERY_N(WARNING, 100)
          << "cannot propose a keep-alive checkpoint: " << proposed;
      return;
    }
    renewals_.erase(renewals_.begin(), it);
  }
}

v1::KeepAliveResponse ReplicaNode::SessionResponse(uint64_t session_id,
                                                   SessionStream& stream,
                                                   int64_t expires_at,
                                                   int64_t cell_now_ms) const {
  v1::KeepAliveResponse response;
  response.set_session_id(session_id);
  response.set_lease_remaining_ms(
      std::max<int64_t>(0, expires_at - cell_now_ms));
  response.set_epoch(replica_->epoch());
  for (v1::Event& event :
       state_.PendingEvents(session_id, stream.last_sent_sequence)) {
    stream.last_sent_sequence = event.sequence();
    *response.add_events() = std::move(event);
  }
  response.set_events_lost(state_.EventsLost(session_id));
  return response;
}

void ReplicaNode::SendEvents(uint64_t session_id, SessionStream& stream,
                             int64_t now_ms) {
  const absl::StatusOr<int64_t> expires_at =
      state_.SessionExpiresAt(session_id);
  if (!expires_at.ok() || !cell_clock_started_) return;
  v1::KeepAliveResponse response =
      SessionResponse(session_id, stream, *expires_at, CellClock(now_ms));
  if (response.events().empty()) return;
  SendOn(stream, std::move(response));
}

void ReplicaNode::SendOn(const SessionStream& stream,
                         v1::KeepAliveResponse response) {
  if (!stream.batch) {
    stream.listener->Send(std::move(response));
    return;
  }
  v1::KeepAliveResponse batch;
  batch.set_epoch(response.epoch());
  *batch.add_sessions() = std::move(response);
  stream.listener->Send(std::move(batch));
}

void ReplicaNode::SendLeader(const std::string& name,
                             ElectionListener& listener) const {
  absl::StatusOr<v1::GetLeaderResponse> leader = state_.GetLeader(name);
  if (leader.ok()) {
    listener.Send(*std::move(leader));
    return;
  }
  v1::GetLeaderResponse nobody;
  nobody.mutable_leader()->set_name(name);
  listener.Send(std::move(nobody));
}

void ReplicaNode::NotifyElection(const std::string& name) {
  for (auto it = election_streams_.lower_bound({name, 0});
       it != election_streams_.end() && it->first.first == name; ++it) {
    SendLeader(name, *it->second.listener);
  }
}

void ReplicaNode::FailAll(const absl::Status& status) {
  if (pending_change_.has_value()) {
    ChangeCallback done = std::move(pending_change_->done);
    pending_change_.reset();
    done(status);
  }
  auto waiting = std::move(waiting_);
  waiting_.clear();
  caller_requests_.clear();
  for (auto& [request, callers] : waiting) {
    for (Waiter& waiter : callers.waiters) waiter.done(status);
  }
  auto sessions = std::move(session_streams_);
  session_streams_.clear();
  auto listeners = std::move(listeners_);
  listeners_.clear();
  // A batch stream is registered once per session: end it once.
  for (auto& [key, stream] : sessions) {
    if (listeners.erase(stream.listener.get()) > 0) {
      stream.listener->End(status);
    }
  }
  // Batch streams none of whose sessions could be renewed.
  for (auto& [listener, streams] : listeners) streams.listener->End(status);
  auto elections = std::move(election_streams_);
  election_streams_.clear();
  election_stream_keys_.clear();
  for (auto& [key, stream] : elections) stream.listener->End(status);
  renewals_.clear();
}

}  // namespace lockd
