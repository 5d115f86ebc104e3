#include "lockd/lock.h"

#include <utility>

namespace lockd {

Lock::Lock(Session* session, v1::Sequencer sequencer, uint64_t locks_lost)
    : session_(session),
      sequencer_(std::move(sequencer)),
      locks_lost_at_grant_(locks_lost) {}

absl::StatusOr<std::unique_ptr<Lock>> Lock::Acquire(Session* session,
                                                    const std::string& path,
                                                    v1::LockMode mode,
                                                    absl::Duration wait,
                                                    absl::Duration lock_delay) {
  if (wait <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "Lock::Acquire needs a positive wait (TryAcquire tries once)");
  }
  return AcquireImpl(session, path, mode, wait, lock_delay);
}

absl::StatusOr<std::unique_ptr<Lock>> Lock::TryAcquire(
    Session* session, const std::string& path, v1::LockMode mode,
    absl::Duration lock_delay) {
  return AcquireImpl(session, path, mode, absl::ZeroDuration(), lock_delay);
}

absl::StatusOr<std::unique_ptr<Lock>> Lock::AcquireImpl(
    Session* session, const std::string& path, v1::LockMode mode,
    absl::Duration wait, absl::Duration lock_delay) {
  if (session == nullptr) return absl::InvalidArgumentError("session is null");
  v1::AcquireRequest request;
  *request.mutable_header() = session->NewHeader();
  request.set_path(path);
  request.set_mode(mode);
  request.set_wait_timeout_ms(
      wait == absl::InfiniteDuration() ? -1 : absl::ToInt64Milliseconds(wait));
  request.set_lock_delay_ms(absl::ToInt64Milliseconds(lock_delay));
  // LOCK_LOST events before the grant concern an earlier holding.
  const uint64_t lost = session->locks_lost(path);
  v1::AcquireResponse response;
  absl::Status status = session->client()->Invoke(
      "Locks.Acquire",
      [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.locks->Acquire(context, request, &response);
      },
      wait);
  session->Answered(request.header().request_id());
  if (!status.ok()) return status;
  return std::unique_ptr<Lock>(new Lock(session, response.sequencer(), lost));
}

Lock::~Lock() {
  if (!Release().ok()) {
    // Nothing to do: the lock goes with the session at the latest.
  }
}

absl::Status Lock::Release() {
  absl::MutexLock lock(&mu_);
  if (released_) return absl::OkStatus();
  const SessionState state = session_->state();
  if (state == SessionState::kExpired || state == SessionState::kClosed) {
    released_ = true;  // Gone with the session.
    return absl::OkStatus();
  }
  v1::ReleaseRequest request;
  *request.mutable_header() = session_->NewHeader();
  request.set_path(sequencer_.path());
  v1::ReleaseResponse response;
  absl::Status status = session_->client()->Invoke(
      "Locks.Release", [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.locks->Release(context, request, &response);
      });
  session_->Answered(request.header().request_id());
  if (status.ok()) released_ = true;
  return status;
}

bool Lock::IsHeld() const {
  {
    absl::MutexLock lock(&mu_);
    if (released_) return false;
  }
  return session_->StillHolds(sequencer_.path(), locks_lost_at_grant_);
}

}  // namespace lockd
