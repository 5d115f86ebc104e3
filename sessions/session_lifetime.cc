// Sessions and time: CreateSession, RenewSessions, StartEpoch, CloseSession and
// the expirations (sessions, wait timeouts, lock-delays) that cell time runs.

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sessions/paths.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {

void StateMachine::Impl::StartEpoch(uint64_t epoch) {
  epoch_ = epoch;
  for (auto& [id, session] : sessions_) {
    SetExpiry(session,
              std::max(session.expires_at_ms,
                       std::min(now_ms_ + session.ttl_ms,
                                session.last_renewed_ms + 2 * session.ttl_ms)));
  }
}

void StateMachine::Impl::RenewSessions(const statepb::RenewSessions& renew) {
  for (const auto& renewal : renew.renewals()) {
    auto it = sessions_.find(renewal.session_id());
    if (it == sessions_.end()) continue;
    Session& session = it->second;
    session.last_renewed_ms = now_ms_;
    SetExpiry(session,
              std::max(session.expires_at_ms, now_ms_ + session.ttl_ms));
    while (!session.events.empty() && session.events.front().sequence() <=
                                          renewal.acked_event_sequence()) {
      session.events.pop_front();
    }
  }
}

statepb::Result StateMachine::Impl::CreateSession(
    const v1::CreateSessionRequest& request, absl::string_view secret_digest) {
  auto respond = [this](const Session& session) {
    statepb::Result result;
    v1::CreateSessionResponse* response = result.mutable_create_session();
    response->set_session_id(session.id);
    response->set_ttl_ms(session.ttl_ms);
    response->set_lease_remaining_ms(session.expires_at_ms - now_ms_);
    response->set_epoch(epoch_);
    return result;
  };
  if (request.nonce() != 0) {
    auto it = session_by_nonce_.find(request.nonce());
    if (it != session_by_nonce_.end()) {
      // The same session, and its secret stays: a late duplicate of the
      // request must not disturb the client that got the first answer. (The
      // front end sends this answer without a secret.)
      return respond(sessions_.at(it->second));
    }
  }
  const int64_t ttl_ms =
      request.ttl_ms() == 0 ? limits_.default_ttl_ms : request.ttl_ms();
  if (ttl_ms < limits_.min_ttl_ms || ttl_ms > limits_.max_ttl_ms) {
    return ErrorResult(absl::InvalidArgumentError(
        absl::StrCat("ttl_ms ", ttl_ms, " is outside [", limits_.min_ttl_ms,
                     ", ", limits_.max_ttl_ms, "]")));
  }
  if (request.client_name().size() > limits_.max_client_name_bytes) {
    return ErrorResult(absl::InvalidArgumentError(
        absl::StrCat("client_name has ", request.client_name().size(),
                     " bytes, above max_client_name_bytes (",
                     limits_.max_client_name_bytes, ")")));
  }
  if (!IsValidUtf8(request.client_name())) {
    return ErrorResult(
        absl::InvalidArgumentError("client_name is not valid UTF-8"));
  }
  if (sessions_.size() >= limits_.max_sessions) {
    return ErrorResult(absl::ResourceExhaustedError(absl::StrCat(
        "max_sessions (", limits_.max_sessions, ") sessions are open")));
  }
  const uint64_t id = next_session_id_++;
  Session& session = sessions_[id];
  session.id = id;
  session.ttl_ms = ttl_ms;
  session.client_name = request.client_name();
  session.nonce = request.nonce();
  session.secret_digest = std::string(secret_digest);
  session.last_renewed_ms = now_ms_;
  SetExpiry(session, now_ms_ + ttl_ms);
  if (session.nonce != 0) session_by_nonce_[session.nonce] = id;
  return respond(session);
}

void StateMachine::Impl::CloseSession(const v1::CloseSessionRequest& request,
                                      absl::string_view secret_digest) {
  Session* session = Admit(request.header(), secret_digest);
  if (session == nullptr) return;
  EndSession(session->id, /*expired=*/false);
  statepb::Result result;
  result.mutable_close_session();
  Complete({request.header().session_id(), request.header().request_id()},
           std::move(result));
}

void StateMachine::Impl::SetExpiry(Session& session, int64_t expires_at_ms) {
  session_expiries_.erase({session.expires_at_ms, session.id});
  session.expires_at_ms = expires_at_ms;
  session_expiries_.insert({expires_at_ms, session.id});
}

void StateMachine::Impl::EndSession(uint64_t session_id, bool expired) {
  Session& session = sessions_.at(session_id);
  const std::string why =
      absl::StrCat(expired ? "session expired" : "session closed", " (session ",
                   session_id, ")");
  // Parked requests first, so none of them is granted below.
  const std::map<uint64_t, std::string> parked = session.parked;
  for (const auto& [request_id, path] : parked) {
    RemoveWaiter(NodeAt(path), session_id, request_id);
    Complete({session_id, request_id},
             ErrorResult(absl::FailedPreconditionError(why)));
  }
  const std::set<std::string> held = session.held_locks;
  for (const std::string& path : held) ReleaseLock(path, session, expired);
  // A removed waiter may have been the head that blocked others.
  for (const auto& [request_id, path] : parked) {
    if (FindNode(path) != nullptr) GrantWaiters(path);
  }
  for (const std::string& path : session.watches) {
    NodeAt(path).watchers.erase(session_id);
  }
  session.watches.clear();
  const std::set<std::string> ephemeral = session.ephemeral_nodes;
  for (const std::string& path : ephemeral) ForceDeleteNode(path);
  if (session.nonce != 0) session_by_nonce_.erase(session.nonce);
  session_expiries_.erase({session.expires_at_ms, session_id});
  sessions_.erase(session_id);
  out_.ended_sessions.push_back(session_id);
}

void StateMachine::Impl::RunDueExpirations() {
  // Earliest first; at equal times sessions expire first, then lock-delays
  // end, then waits time out (so a lock freed at the instant a waiter would
  // give up goes to the waiter).
  while (true) {
    enum { kNone, kSession, kLockDelay, kWait } kind = kNone;
    int64_t at = now_ms_;
    if (!session_expiries_.empty() && session_expiries_.begin()->first <= at) {
      kind = kSession;
      at = session_expiries_.begin()->first;
    }
    if (!lock_delay_ends_.empty() && lock_delay_ends_.begin()->first <= at &&
        (kind == kNone || lock_delay_ends_.begin()->first < at)) {
      kind = kLockDelay;
      at = lock_delay_ends_.begin()->first;
    }
    if (!wait_deadlines_.empty() &&
        std::get<0>(*wait_deadlines_.begin()) <= at &&
        (kind == kNone || std::get<0>(*wait_deadlines_.begin()) < at)) {
      kind = kWait;
    }
    switch (kind) {
      case kNone:
        return;
      case kSession:
        EndSession(session_expiries_.begin()->second, /*expired=*/true);
        break;
      case kLockDelay:
        EndLockDelay();
        break;
      case kWait:
        TimeOutWaiter();
        break;
    }
  }
}

void StateMachine::Impl::TimeOutWaiter() {
  const auto [deadline_ms, session_id, request_id] = *wait_deadlines_.begin();
  Session& session = sessions_.at(session_id);
  const std::string path = session.parked.at(request_id);
  RemoveWaiter(NodeAt(path), session_id, request_id);
  Record(
      session, request_id,
      ErrorResult(WithErrorTime(absl::DeadlineExceededError(absl::StrCat(
                                    "the lock on ", Quote(path),
                                    " was not granted by its wait deadline (",
                                    CellTimeText(deadline_ms, now_ms_), ")")),
                                deadline_ms)));
  GrantWaiters(path);
}

void StateMachine::Impl::EndLockDelay() {
  const std::string path = lock_delay_ends_.begin()->second;
  lock_delay_ends_.erase(lock_delay_ends_.begin());
  NodeAt(path).lock_delay_until_ms = 0;
  GrantWaiters(path);
}

std::optional<int64_t> StateMachine::Impl::NextDeadline() const {
  std::optional<int64_t> next;
  auto consider = [&next](int64_t at) {
    if (!next.has_value() || at < *next) next = at;
  };
  if (!session_expiries_.empty()) consider(session_expiries_.begin()->first);
  if (!lock_delay_ends_.empty()) consider(lock_delay_ends_.begin()->first);
  if (!wait_deadlines_.empty()) consider(std::get<0>(*wait_deadlines_.begin()));
  return next;
}

}  // namespace lockd::sessions
