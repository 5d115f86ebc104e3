// Locks: grants, the FIFO of waiters, lock-delay, release and sequencers.

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "sessions/paths.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {

bool StateMachine::Impl::IsFree(const Node& node, LockMode mode) {
  if (node.lock_delay_until_ms != 0) return false;
  if (node.holders.empty()) return true;
  return mode == v1::SHARED && node.holders.begin()->second.mode == v1::SHARED;
}

absl::Status StateMachine::Impl::CheckWaitTimeout(
    int64_t wait_timeout_ms) const {
  if (wait_timeout_ms < -1 || wait_timeout_ms > limits_.max_wait_timeout_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "wait_timeout_ms ", wait_timeout_ms, " is outside [0, ",
        limits_.max_wait_timeout_ms, "] (or -1: wait without a deadline)"));
  }
  return absl::OkStatus();
}

absl::Status StateMachine::Impl::CheckLockDelay(int64_t lock_delay_ms) const {
  if (lock_delay_ms < 0 || lock_delay_ms > limits_.max_lock_delay_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("lock_delay_ms ", lock_delay_ms, " is outside [0, ",
                     limits_.max_lock_delay_ms, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<StateMachine::Impl::LockPlan> StateMachine::Impl::PlanLock(
    const Session& session, absl::string_view path, const Node* node,
    LockMode mode, int64_t wait_timeout_ms) const {
  if (node == nullptr) return LockPlan::kGrant;
  auto held = node->holders.find(session.id);
  if (held != node->holders.end()) {
    if (held->second.mode == mode) return LockPlan::kAlreadyHeld;
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session.id, " holds the lock on ", Quote(path),
                     " in ", ModeName(held->second.mode), " mode"));
  }
  for (const Waiter& waiter : node->waiters) {
    if (waiter.session_id == session.id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", session.id, " already waits for the lock on ",
          Quote(path), " (request ", waiter.request_id, ")"));
    }
  }
  if (IsFree(*node, mode) && node->waiters.empty()) return LockPlan::kGrant;
  if (wait_timeout_ms == 0) {
    const bool conflicts =
        !node->holders.empty() &&
        (mode == v1::EXCLUSIVE ||
         node->holders.begin()->second.mode == v1::EXCLUSIVE);
    if (conflicts) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the lock on ", Quote(path), " is held by session ",
          node->holders.begin()->first,
          node->holders.size() > 1
              ? absl::StrCat(" and ", node->holders.size() - 1, " more")
              : ""));
    }
    if (node->lock_delay_until_ms != 0) {
      return WithErrorTime(
          absl::FailedPreconditionError(absl::StrCat(
              "the lock on ", Quote(path), " is in lock-delay until ",
              CellTimeText(node->lock_delay_until_ms, now_ms_))),
          node->lock_delay_until_ms);
    }
    return absl::FailedPreconditionError(
        absl::StrCat("the lock on ", Quote(path), " has ", node->waiters.size(),
                     " earlier waiters (first: session ",
                     node->waiters.front().session_id, ")"));
  }
  if (node->waiters.size() >= limits_.max_waiters_per_lock) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the lock on ", Quote(path), " has max_waiters_per_lock (",
                     limits_.max_waiters_per_lock, ") waiters"));
  }
  return LockPlan::kPark;
}

v1::Sequencer StateMachine::Impl::MakeSequencer(absl::string_view path,
                                                const Node& node,
                                                uint64_t session_id,
                                                LockMode mode) const {
  v1::Sequencer sequencer;
  sequencer.set_path(std::string(path));
  sequencer.set_mode(mode);
  sequencer.set_lock_generation(node.meta.lock_generation());
  sequencer.set_session_id(session_id);
  sequencer.set_instance(node.meta.instance());
  return sequencer;
}

v1::Sequencer StateMachine::Impl::Grant(const std::string& path, Node& node,
                                        Session& session, LockMode mode,
                                        int64_t lock_delay_ms) {
  CHECK(IsFree(node, mode)) << path;
  NoteElection(path);
  if (mode == v1::EXCLUSIVE) {
    node.meta.set_lock_generation(node.meta.lock_generation() + 1);
  }
  node.holders[session.id] = Holder{mode, lock_delay_ms};
  session.held_locks.insert(path);
  return MakeSequencer(path, node, session.id, mode);
}

void StateMachine::Impl::Park(const std::string& path, Node& node,
                              Waiter waiter) {
  for (const auto& [holder_id, holder] : node.holders) {
    v1::Event event = MakeEvent(v1::Event::LOCK_CONFLICT, path);
    *event.mutable_sequencer() =
        MakeSequencer(path, node, holder_id, holder.mode);
    event.set_other_session_id(waiter.session_id);
    Emit(holder_id, std::move(event));
  }
  if (waiter.deadline_ms != kNoDeadline) {
    wait_deadlines_.insert(
        {waiter.deadline_ms, waiter.session_id, waiter.request_id});
  }
  sessions_.at(waiter.session_id).parked[waiter.request_id] = path;
  node.waiters.push_back(std::move(waiter));
}

void StateMachine::Impl::RemoveWaiter(Node& node, uint64_t session_id,
                                      uint64_t request_id) {
  auto it = std::find_if(node.waiters.begin(), node.waiters.end(),
                         [&](const Waiter& waiter) {
                           return waiter.session_id == session_id &&
                                  waiter.request_id == request_id;
                         });
  CHECK(it != node.waiters.end());
  wait_deadlines_.erase({it->deadline_ms, session_id, request_id});
  sessions_.at(session_id).parked.erase(request_id);
  node.waiters.erase(it);
}

void StateMachine::Impl::ReleaseLock(std::string path, Session& session,
                                     bool expired) {
  Node& node = NodeAt(path);
  NoteElection(path);
  auto it = node.holders.find(session.id);
  CHECK(it != node.holders.end());
  const Holder holder = it->second;
  node.holders.erase(it);
  session.held_locks.erase(path);
  if (expired && holder.mode == v1::EXCLUSIVE && holder.lock_delay_ms > 0) {
    CHECK(node.holders.empty() && node.lock_delay_until_ms == 0) << path;
    node.lock_delay_until_ms = now_ms_ + holder.lock_delay_ms;
    lock_delay_ends_.insert({node.lock_delay_until_ms, path});
  }
  GrantWaiters(path);
}

void StateMachine::Impl::GrantWaiters(const std::string& path) {
  Node& node = NodeAt(path);
  while (!node.waiters.empty() && IsFree(node, node.waiters.front().mode)) {
    const Waiter waiter = node.waiters.front();
    RemoveWaiter(node, waiter.session_id, waiter.request_id);
    Session& session = sessions_.at(waiter.session_id);
    const v1::Sequencer sequencer =
        Grant(path, node, session, waiter.mode, waiter.lock_delay_ms);
    statepb::Result result;
    if (waiter.campaign) {
      SetContent(path, node, waiter.campaign_value);
      *result.mutable_campaign() =
          CampaignResponseFor(*ElectionName(path), sequencer);
    } else {
      *result.mutable_acquire()->mutable_sequencer() = sequencer;
    }
    v1::Event event = MakeEvent(v1::Event::LOCK_ACQUIRED, path);
    *event.mutable_sequencer() = sequencer;
    Emit(session.id, std::move(event));
    Record(session, waiter.request_id, std::move(result));
  }
}

absl::StatusOr<std::optional<v1::AcquireResponse>> StateMachine::Impl::Acquire(
    Session& session, uint64_t request_id, const v1::AcquireRequest& request) {
  const std::string& path = request.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  if (request.mode() != v1::EXCLUSIVE && request.mode() != v1::SHARED) {
    return absl::InvalidArgumentError("mode must be EXCLUSIVE or SHARED");
  }
  if (absl::Status status = CheckNotElection(path, "Locks.Acquire");
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckAccess(path, Right::kWrite, access_);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckWaitTimeout(request.wait_timeout_ms());
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckLockDelay(request.lock_delay_ms());
      !status.ok()) {
    return status;
  }
  Node* node = FindNode(path);
  if (node == nullptr) {
    if (absl::Status status = CheckCreate(path, nullptr, 0); !status.ok()) {
      return status;
    }
  }
  absl::StatusOr<LockPlan> plan =
      PlanLock(session, path, node, request.mode(), request.wait_timeout_ms());
  if (!plan.ok()) return plan.status();
  if (node == nullptr) node = &AddNode(path, "", 0);
  v1::AcquireResponse response;
  switch (*plan) {
    case LockPlan::kAlreadyHeld:
      *response.mutable_sequencer() =
          MakeSequencer(path, *node, session.id, request.mode());
      return response;
    case LockPlan::kGrant:
      *response.mutable_sequencer() =
          Grant(path, *node, session, request.mode(), request.lock_delay_ms());
      return response;
    case LockPlan::kPark:
      Park(path, *node,
           Waiter{session.id, request_id, request.mode(),
                  WaitDeadline(request.wait_timeout_ms()),
                  request.lock_delay_ms(),
                  /*campaign=*/false, /*campaign_value=*/""});
      return std::nullopt;
  }
  LOG(FATAL) << "unreachable";
}

absl::StatusOr<v1::ReleaseResponse> StateMachine::Impl::Release(
    Session& session, const v1::ReleaseRequest& request) {
  const std::string& path = request.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  if (session.held_locks.count(path) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", session.id, " does not hold the lock on ", Quote(path)));
  }
  ReleaseLock(path, session, /*expired=*/false);
  return v1::ReleaseResponse();
}

v1::CheckSequencerResponse StateMachine::Impl::CheckSequencer(
    const v1::Sequencer& sequencer) const {
  v1::CheckSequencerResponse response;
  auto invalid = [&response](std::string reason) {
    response.set_reason(std::move(reason));
    return response;
  };
  const std::string& path = sequencer.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return invalid(std::string(status.message()));
  }
  const Node* node = FindNode(path);
  if (node == nullptr) {
    return invalid(absl::StrCat("node ", Quote(path), " does not exist"));
  }
  if (node->meta.instance() != sequencer.instance()) {
    return invalid(absl::StrCat("node ", Quote(path), " is instance ",
                                node->meta.instance(), ", not ",
                                sequencer.instance(), " (it was recreated)"));
  }
  if (node->meta.lock_generation() != sequencer.lock_generation()) {
    return invalid(absl::StrCat(
        "the lock on ", Quote(path), " is at generation ",
        node->meta.lock_generation(), ", not ", sequencer.lock_generation()));
  }
  auto holder = node->holders.find(sequencer.session_id());
  if (holder == node->holders.end() ||
      holder->second.mode != sequencer.mode()) {
    return invalid(absl::StrCat(
        "session ", sequencer.session_id(), " does not hold the lock on ",
        Quote(path), " in ", v1::LockMode_Name(sequencer.mode()), " mode"));
  }
  response.set_valid(true);
  return response;
}

}  // namespace lockd::sessions
