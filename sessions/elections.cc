// Elections: Campaign, Proclaim and Resign on the lock of /election/NAME.

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "sessions/paths.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {

std::optional<v1::LeaderInfo> StateMachine::Impl::LeaderOf(
    absl::string_view name) const {
  const Node* node = FindNode(ChildPath(kElectionDir, name));
  if (node == nullptr || node->holders.empty() ||
      node->holders.begin()->second.mode != v1::EXCLUSIVE) {
    return std::nullopt;
  }
  v1::LeaderInfo leader;
  leader.set_name(std::string(name));
  leader.set_value(node->content);
  leader.set_session_id(node->holders.begin()->first);
  leader.set_lock_generation(node->meta.lock_generation());
  return leader;
}

v1::CampaignResponse StateMachine::Impl::CampaignResponseFor(
    absl::string_view name, const v1::Sequencer& sequencer) const {
  v1::CampaignResponse response;
  *response.mutable_leader() = *LeaderOf(name);
  *response.mutable_sequencer() = sequencer;
  return response;
}

void StateMachine::Impl::NoteElection(absl::string_view path) {
  std::optional<absl::string_view> name = ElectionName(path);
  if (!name.has_value() || elections_before_.count(*name) != 0) return;
  elections_before_.emplace(std::string(*name), LeaderOf(*name));
}

absl::StatusOr<std::optional<v1::CampaignResponse>>
StateMachine::Impl::Campaign(Session& session, uint64_t request_id,
                             const v1::CampaignRequest& request) {
  if (absl::Status status =
          ValidateName(request.name(), "election name", limits_);
      !status.ok()) {
    return status;
  }
  const std::string path = ChildPath(kElectionDir, request.name());
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckAccess(path, Right::kWrite, access_);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckContentSize(request.value()); !status.ok()) {
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
  const bool dir_missing = FindNode(kElectionDir) == nullptr;
  Node* node = FindNode(path);
  if (dir_missing) {
    if (absl::Status status =
            CheckCreate(kElectionDir, nullptr, /*extra_nodes=*/1);
        !status.ok()) {
      return status;
    }
  } else if (node == nullptr) {
    if (absl::Status status = CheckCreate(path, nullptr, 0); !status.ok()) {
      return status;
    }
  }
  absl::StatusOr<LockPlan> plan =
      PlanLock(session, path, node, v1::EXCLUSIVE, request.wait_timeout_ms());
  if (!plan.ok()) return plan.status();
  if (dir_missing) AddNode(std::string(kElectionDir), "", 0);
  if (node == nullptr) node = &AddNode(path, "", 0);
  switch (*plan) {
    case LockPlan::kAlreadyHeld:
      return CampaignResponseFor(
          request.name(),
          MakeSequencer(path, *node, session.id, v1::EXCLUSIVE));
    case LockPlan::kGrant: {
      const v1::Sequencer sequencer =
          Grant(path, *node, session, v1::EXCLUSIVE, request.lock_delay_ms());
      SetContent(path, *node, request.value());
      return CampaignResponseFor(request.name(), sequencer);
    }
    case LockPlan::kPark:
      Park(path, *node,
           Waiter{session.id, request_id, v1::EXCLUSIVE,
                  WaitDeadline(request.wait_timeout_ms()),
                  request.lock_delay_ms(),
                  /*campaign=*/true, request.value()});
      return std::nullopt;
  }
  LOG(FATAL) << "unreachable";
}

absl::StatusOr<v1::ProclaimResponse> StateMachine::Impl::Proclaim(
    Session& session, const v1::ProclaimRequest& request) {
  if (absl::Status status =
          ValidateName(request.name(), "election name", limits_);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckAccess(ChildPath(kElectionDir, request.name()),
                                        Right::kWrite, access_);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckContentSize(request.value()); !status.ok()) {
    return status;
  }
  const std::optional<v1::LeaderInfo> leader = LeaderOf(request.name());
  if (!leader.has_value() || leader->session_id() != session.id) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session.id, " does not lead election ",
                     Quote(request.name())));
  }
  const std::string path = ChildPath(kElectionDir, request.name());
  SetContent(path, NodeAt(path), request.value());
  v1::ProclaimResponse response;
  *response.mutable_leader() = *LeaderOf(request.name());
  return response;
}

absl::StatusOr<v1::ResignResponse> StateMachine::Impl::Resign(
    Session& session, const v1::ResignRequest& request) {
  if (absl::Status status =
          ValidateName(request.name(), "election name", limits_);
      !status.ok()) {
    return status;
  }
  const std::optional<v1::LeaderInfo> leader = LeaderOf(request.name());
  if (!leader.has_value() || leader->session_id() != session.id) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session.id, " does not lead election ",
                     Quote(request.name())));
  }
  ReleaseLock(ChildPath(kElectionDir, request.name()), session,
              /*expired=*/false);
  return v1::ResignResponse();
}

absl::StatusOr<v1::GetLeaderResponse> StateMachine::Impl::GetLeader(
    absl::string_view name) const {
  if (absl::Status status = ValidateName(name, "election name", limits_);
      !status.ok()) {
    return status;
  }
  std::optional<v1::LeaderInfo> leader = LeaderOf(name);
  if (!leader.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("election ", Quote(name), " has no leader"));
  }
  v1::GetLeaderResponse response;
  *response.mutable_leader() = *std::move(leader);
  return response;
}

}  // namespace lockd::sessions
