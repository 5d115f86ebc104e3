// Exactly-once: which requests run, and the answers recorded for retries.

#include <functional>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {

void StateMachine::Impl::ApplyRequest(
    const v1::RequestHeader& header, absl::string_view secret_digest,
    const std::function<std::optional<statepb::Result>(Session&)>& execute) {
  Session* session = Admit(header, secret_digest);
  if (session == nullptr) return;
  std::optional<statepb::Result> result = execute(*session);
  if (result.has_value()) {
    Record(*session, header.request_id(), *std::move(result));
  }
}

Session* StateMachine::Impl::Admit(const v1::RequestHeader& header,
                                   absl::string_view secret_digest) {
  const RequestKey key{header.session_id(), header.request_id()};
  auto refuse = [&](const absl::Status& status) {
    Complete(key, ErrorResult(status));
    return nullptr;
  };
  if (header.request_id() == 0) {
    return refuse(absl::InvalidArgumentError(
        "request_id must be positive (requests are numbered from 1)"));
  }
  auto it = sessions_.find(header.session_id());
  if (it == sessions_.end()) {
    return refuse(absl::NotFoundError(
        absl::StrCat("session ", header.session_id(),
                     " does not exist (expired or closed)")));
  }
  Session& session = it->second;
  if (session.secret_digest != secret_digest) {
    return refuse(WrongSecret(session.id));
  }
  if (header.first_unanswered_request_id() > header.request_id()) {
    return refuse(absl::InvalidArgumentError(absl::StrCat(
        "first_unanswered_request_id ", header.first_unanswered_request_id(),
        " is above request_id ", header.request_id())));
  }
  if (header.first_unanswered_request_id() > session.forgotten_below) {
    session.forgotten_below = header.first_unanswered_request_id();
    session.results.erase(session.results.begin(),
                          session.results.lower_bound(session.forgotten_below));
  }
  if (header.request_id() < session.forgotten_below) {
    return refuse(absl::FailedPreconditionError(
        absl::StrCat("request ", header.request_id(),
                     " is too old: results of requests below ",
                     session.forgotten_below, " are no longer retained")));
  }
  auto recorded = session.results.find(header.request_id());
  if (recorded != session.results.end()) {
    Complete(key, recorded->second);
    return nullptr;
  }
  if (session.parked.count(header.request_id()) != 0) return nullptr;
  if (session.results.size() + session.parked.size() >=
      limits_.max_retained_results_per_session) {
    return refuse(absl::ResourceExhaustedError(absl::StrCat(
        "session ", session.id, " has max_retained_results_per_session (",
        limits_.max_retained_results_per_session,
        ") unacknowledged requests; raise first_unanswered_request_id")));
  }
  return &session;
}

void StateMachine::Impl::Record(Session& session, uint64_t request_id,
                                statepb::Result result) {
  session.results[request_id] = result;
  Complete({session.id, request_id}, std::move(result));
}

void StateMachine::Impl::Complete(RequestKey key, statepb::Result result) {
  out_.completions.push_back({key, std::move(result)});
}

}  // namespace lockd::sessions
