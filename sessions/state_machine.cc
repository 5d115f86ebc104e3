#include "sessions/state_machine.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sessions/checksum.h"
#include "sessions/paths.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {
namespace {

// A successful result carrying `response` in the body field selected by
// `body` (e.g. &statepb::Result::mutable_set_node), or the error.
template <typename Response>
statepb::Result MakeResult(absl::StatusOr<Response> response,
                           Response* (statepb::Result::*body)()) {
  if (!response.ok()) return ErrorResult(response.status());
  statepb::Result result;
  *(result.*body)() = *std::move(response);
  return result;
}

// As MakeResult, for requests that may park (an empty optional).
template <typename Response>
std::optional<statepb::Result> MakeParkableResult(
    absl::StatusOr<std::optional<Response>> response,
    Response* (statepb::Result::*body)()) {
  if (!response.ok()) return ErrorResult(response.status());
  if (!response->has_value()) return std::nullopt;
  return MakeResult<Response>(**std::move(response), body);
}

bool SameLeader(const std::optional<v1::LeaderInfo>& a,
                const std::optional<v1::LeaderInfo>& b) {
  if (!a.has_value() || !b.has_value()) return a.has_value() == b.has_value();
  return a->session_id() == b->session_id() &&
         a->lock_generation() == b->lock_generation() &&
         a->value() == b->value();
}

}  // namespace

StateMachine::Impl::Impl(const Limits& limits) : limits_(limits) {
  Node& root = nodes_["/"];
  root.meta.set_instance(kRootInstance);
  root.meta.set_content_generation(1);
  root.meta.set_acl_generation(1);
  root.meta.set_checksum(Crc32c(""));
}

ApplyResult StateMachine::Impl::Apply(const statepb::Command& command) {
  out_ = ApplyResult();
  access_ = {command.principal(), command.admin()};
  sessions_with_events_.clear();
  elections_before_.clear();
  if (command.epoch() < epoch_) {
    RefuseStale(command);
  } else {
    now_ms_ = std::max(now_ms_, command.time_ms());
    // A new leader's fresh TTLs come before anything may expire.
    if (command.has_start_epoch() && command.epoch() > epoch_) {
      StartEpoch(command.epoch());
    }
    RunDueExpirations();
    Execute(command);
  }
  for (const auto& [name, before] : elections_before_) {
    if (!SameLeader(before, LeaderOf(name))) {
      out_.changed_elections.push_back(name);
    }
  }
  for (uint64_t session_id : sessions_with_events_) {
    if (sessions_.count(session_id) != 0) {
      out_.sessions_with_events.push_back(session_id);
    }
  }
  return std::move(out_);
}

void StateMachine::Impl::RefuseStale(const statepb::Command& command) {
  switch (command.op_case()) {
    case statepb::Command::kStartEpoch:
    case statepb::Command::kRenewSessions:
    case statepb::Command::kTick:
    case statepb::Command::OP_NOT_SET:
      return;
    default:
      break;
  }
  Complete(RequestKeyOf(command),
           ErrorResult(absl::AbortedError(absl::StrCat(
               "overtaken by a leader change (epoch ", command.epoch(), " < ",
               epoch_, "); retry with the same request number"))));
}

void StateMachine::Impl::Execute(const statepb::Command& command) {
  switch (command.op_case()) {
    case statepb::Command::kStartEpoch:
    case statepb::Command::kTick:
    case statepb::Command::OP_NOT_SET:
      return;
    case statepb::Command::kRenewSessions:
      RenewSessions(command.renew_sessions());
      return;
    case statepb::Command::kCreateSession:
      Complete(
          {0, command.create_session().nonce()},
          CreateSession(command.create_session(), command.secret_digest()));
      return;
    case statepb::Command::kCloseSession:
      CloseSession(command.close_session(), command.secret_digest());
      return;
    case statepb::Command::kCreateNode: {
      const auto& request = command.create_node();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(CreateNode(session, request),
                                       &statepb::Result::mutable_create_node);
                   });
      return;
    }
    case statepb::Command::kSetNode: {
      const auto& request = command.set_node();
      ApplyRequest(request.header(), command.secret_digest(), [&](Session&) {
        return MakeResult(SetNode(request), &statepb::Result::mutable_set_node);
      });
      return;
    }
    case statepb::Command::kDeleteNode: {
      const auto& request = command.delete_node();
      ApplyRequest(request.header(), command.secret_digest(), [&](Session&) {
        return MakeResult(DeleteNode(request),
                          &statepb::Result::mutable_delete_node);
      });
      return;
    }
    case statepb::Command::kWatch: {
      const auto& request = command.watch();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(Watch(session, request),
                                       &statepb::Result::mutable_watch);
                   });
      return;
    }
    case statepb::Command::kAcquire: {
      const auto& request = command.acquire();
      ApplyRequest(
          request.header(), command.secret_digest(), [&](Session& session) {
            return MakeParkableResult(
                Acquire(session, request.header().request_id(), request),
                &statepb::Result::mutable_acquire);
          });
      return;
    }
    case statepb::Command::kRelease: {
      const auto& request = command.release();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(Release(session, request),
                                       &statepb::Result::mutable_release);
                   });
      return;
    }
    case statepb::Command::kCampaign: {
      const auto& request = command.campaign();
      ApplyRequest(
          request.header(), command.secret_digest(), [&](Session& session) {
            return MakeParkableResult(
                Campaign(session, request.header().request_id(), request),
                &statepb::Result::mutable_campaign);
          });
      return;
    }
    case statepb::Command::kProclaim: {
      const auto& request = command.proclaim();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(Proclaim(session, request),
                                       &statepb::Result::mutable_proclaim);
                   });
      return;
    }
    case statepb::Command::kSetAcl: {
      const auto& request = command.set_acl();
      ApplyRequest(request.header(), command.secret_digest(), [&](Session&) {
        return MakeResult(SetAcl(request), &statepb::Result::mutable_set_acl);
      });
      return;
    }
    case statepb::Command::kResign: {
      const auto& request = command.resign();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(Resign(session, request),
                                       &statepb::Result::mutable_resign);
                   });
      return;
    }
  }
}

StateMachine::StateMachine(const Limits& limits)
    : impl_(std::make_unique<Impl>(limits)) {}

StateMachine::~StateMachine() = default;

ApplyResult StateMachine::Apply(const statepb::Command& command) {
  return impl_->Apply(command);
}

absl::StatusOr<v1::GetNodeResponse> StateMachine::GetNode(
    std::string_view path) const {
  return impl_->GetNode(ToAbsl(path));
}

absl::StatusOr<v1::StatNodeResponse> StateMachine::StatNode(
    std::string_view path) const {
  return impl_->StatNode(ToAbsl(path));
}

absl::StatusOr<v1::ListChildrenResponse> StateMachine::ListChildren(
    std::string_view path) const {
  return impl_->ListChildren(ToAbsl(path));
}

v1::CheckSequencerResponse StateMachine::CheckSequencer(
    const v1::Sequencer& sequencer) const {
  return impl_->CheckSequencer(sequencer);
}

absl::StatusOr<v1::GetLeaderResponse> StateMachine::GetLeader(
    std::string_view name) const {
  return impl_->GetLeader(ToAbsl(name));
}

v1::ListSessionsResponse StateMachine::ListSessions() const {
  return impl_->ListSessions();
}

absl::StatusOr<v1::ListLocksResponse> StateMachine::ListLocks(
    std::string_view prefix) const {
  return impl_->ListLocks(ToAbsl(prefix));
}

int64_t StateMachine::now_ms() const { return impl_->now_ms(); }

uint64_t StateMachine::epoch() const { return impl_->epoch(); }

std::optional<int64_t> StateMachine::NextDeadline() const {
  return impl_->NextDeadline();
}

absl::StatusOr<int64_t> StateMachine::SessionExpiresAt(
    uint64_t session_id) const {
  return impl_->SessionExpiresAt(session_id);
}

absl::Status StateMachine::CheckAccess(std::string_view path, Right right,
                                       const Access& access) const {
  return impl_->CheckAccess(ToAbsl(path), right, access);
}

absl::Status StateMachine::CheckSecret(uint64_t session_id,
                                       std::string_view secret_digest) const {
  return impl_->CheckSecret(session_id, ToAbsl(secret_digest));
}

std::vector<uint64_t> StateMachine::SessionIds() const {
  return impl_->SessionIds();
}

size_t StateMachine::session_count() const { return impl_->session_count(); }

StateMachine::LockCounts StateMachine::lock_counts() const {
  return impl_->lock_counts();
}

std::vector<v1::Event> StateMachine::PendingEvents(
    uint64_t session_id, uint64_t after_sequence) const {
  return impl_->PendingEvents(session_id, after_sequence);
}

uint64_t StateMachine::EventsLost(uint64_t session_id) const {
  return impl_->EventsLost(session_id);
}

const v1::RequestHeader* HeaderOf(const statepb::Command& command) {
  const v1::RequestHeader* header = nullptr;
  switch (command.op_case()) {
    case statepb::Command::kCreateSession:
    case statepb::Command::kCloseSession:
      header = &command.close_session().header();
      break;
    case statepb::Command::kCreateNode:
      header = &command.create_node().header();
      break;
    case statepb::Command::kSetNode:
      header = &command.set_node().header();
      break;
    case statepb::Command::kDeleteNode:
      header = &command.delete_node().header();
      break;
    case statepb::Command::kWatch:
      header = &command.watch().header();
      break;
    case statepb::Command::kAcquire:
      header = &command.acquire().header();
      break;
    case statepb::Command::kRelease:
      header = &command.release().header();
      break;
    case statepb::Command::kCampaign:
      header = &command.campaign().header();
      break;
    case statepb::Command::kProclaim:
      header = &command.proclaim().header();
      break;
    case statepb::Command::kResign:
      header = &command.resign().header();
      break;
    case statepb::Command::kSetAcl:
      header = &command.set_acl().header();
      break;
    case statepb::Command::kStartEpoch:
    case statepb::Command::kRenewSessions:
    case statepb::Command::kTick:
    case statepb::Command::OP_NOT_SET:
      break;
  }
  return header;
}

v1::RequestHeader* MutableHeaderOf(statepb::Command& command) {
  // Not HeaderOf() cast: the const accessors of an unset header return the
  // shared default instance.
  switch (command.op_case()) {
    case statepb::Command::kCloseSession:
      return command.mutable_close_session()->mutable_header();
    case statepb::Command::kCreateNode:
      return command.mutable_create_node()->mutable_header();
    case statepb::Command::kSetNode:
      return command.mutable_set_node()->mutable_header();
    case statepb::Command::kDeleteNode:
      return command.mutable_delete_node()->mutable_header();
    case statepb::Command::kWatch:
      return command.mutable_watch()->mutable_header();
    case statepb::Command::kAcquire:
      return command.mutable_acquire()->mutable_header();
    case statepb::Command::kRelease:
      return command.mutable_release()->mutable_header();
    case statepb::Command::kCampaign:
      return command.mutable_campaign()->mutable_header();
    case statepb::Command::kProclaim:
      return command.mutable_proclaim()->mutable_header();
    case statepb::Command::kResign:
      return command.mutable_resign()->mutable_header();
    case statepb::Command::kSetAcl:
      return command.mutable_set_acl()->mutable_header();
    case statepb::Command::kCreateSession:
    case statepb::Command::kStartEpoch:
    case statepb::Command::kRenewSessions:
    case statepb::Command::kTick:
    case statepb::Command::OP_NOT_SET:
      break;
  }
  return nullptr;
}

RequestKey RequestKeyOf(const statepb::Command& command) {
  if (command.has_create_session()) {
    return {0, command.create_session().nonce()};
  }
  const v1::RequestHeader* header = HeaderOf(command);
  if (header == nullptr) return {};
  return {header->session_id(), header->request_id()};
}

absl::Status WrongSecret(uint64_t session_id) {
  return absl::PermissionDeniedError(absl::StrCat(
      "wrong or missing secret for session ", session_id,
      ": a request must carry the session_secret its CreateSession returned"));
}

}  // namespace lockd::sessions
