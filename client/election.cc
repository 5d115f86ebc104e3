#include "lockd/election.h"

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/call.h"

namespace lockd {
namespace {

// Elections live under this node (sessions/state_machine.cc).
constexpr char kElectionDir[] = "/election/";

bool IsFinal(SessionState state) {
  return state == SessionState::kExpired || state == SessionState::kClosed;
}

bool SameLeader(const v1::LeaderInfo& a, const v1::LeaderInfo& b) {
  return a.name() == b.name() && a.value() == b.value() &&
         a.session_id() == b.session_id() &&
         a.lock_generation() == b.lock_generation();
}

// An Observe stream that ended with one of these is opened again.
bool IsRetryableStreamEnd(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK:  // The server never ends a stream with OK.
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::UNAVAILABLE:
      return true;
    default:
      return false;
  }
}

}  // namespace

// ------------------------------------------------------------------ Election

Election::Election(Session* session, std::string name, v1::LeaderInfo leader,
                   v1::Sequencer sequencer, uint64_t locks_lost)
    : session_(session),
      name_(std::move(name)),
      sequencer_(std::move(sequencer)),
      locks_lost_at_win_(locks_lost),
      leader_(std::move(leader)) {}

absl::StatusOr<std::unique_ptr<Election>> Election::Campaign(
    Session* session, const std::string& name, const std::string& value,
    absl::Duration wait, absl::Duration lock_delay) {
  if (session == nullptr) return absl::InvalidArgumentError("session is null");
  if (wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("Election::Campaign: negative wait");
  }
  v1::CampaignRequest request;
  *request.mutable_header() = session->NewHeader();
  request.set_name(name);
  request.set_value(value);
  request.set_wait_timeout_ms(
      wait == absl::InfiniteDuration() ? -1 : absl::ToInt64Milliseconds(wait));
  request.set_lock_delay_ms(absl::ToInt64Milliseconds(lock_delay));
  // LOCK_LOST events before the win concern an earlier leadership.
  const uint64_t lost = session->locks_lost(absl::StrCat(kElectionDir, name));
  v1::CampaignResponse response;
  absl::Status status = session->client()->Invoke(
      "Elections.Campaign",
      [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.elections->Campaign(context, request, &response);
      },
      wait);
  session->Answered(request.header().request_id());
  if (!status.ok()) return status;
  return std::unique_ptr<Election>(
      new Election(session, name, std::move(*response.mutable_leader()),
                   std::move(*response.mutable_sequencer()), lost));
}

absl::StatusOr<v1::LeaderInfo> Election::Leader(Client* client,
                                                const std::string& name) {
  if (client == nullptr) return absl::InvalidArgumentError("client is null");
  v1::GetLeaderRequest request;
  request.set_name(name);
  absl::StatusOr<v1::GetLeaderResponse> response =
      Call(*client, "Elections.Leader", &Client::Endpoint::elections,
           &v1::Elections::Stub::Leader, request);
  if (!response.ok()) return response.status();
  return std::move(*response->mutable_leader());
}

Election::~Election() {
  if (!Resign().ok()) {
    // Nothing to do: leadership goes with the session at the latest.
  }
}

absl::Status Election::Proclaim(const std::string& value) {
  absl::MutexLock call(&call_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (resigned_ || lost_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Election::Proclaim: this session no longer leads election ", name_,
          resigned_ ? " (resigned)" : ""));
    }
  }
  if (IsFinal(session_->state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("Election::Proclaim: session ", session_->id(), " is ",
                     SessionStateName(session_->state())));
  }
  v1::ProclaimRequest request;
  *request.mutable_header() = session_->NewHeader();
  request.set_name(name_);
  request.set_value(value);
  v1::ProclaimResponse response;
  absl::Status status = session_->client()->Invoke(
      "Elections.Proclaim",
      [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.elections->Proclaim(context, request, &response);
      });
  session_->Answered(request.header().request_id());
  absl::MutexLock lock(&mu_);
  if (status.ok()) {
    leader_ = std::move(*response.mutable_leader());
  } else if (status.code() == absl::StatusCode::kFailedPrecondition ||
             status.code() == absl::StatusCode::kNotFound) {
    lost_ = true;  // Not the leader, or the session is gone on the cell.
  }
  return status;
}

absl::Status Election::Resign() {
  absl::MutexLock call(&call_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (resigned_) return absl::OkStatus();
    if (IsFinal(session_->state()) || lost_) {
      resigned_ = true;  // Gone with the session, or taken already.
      return absl::OkStatus();
    }
  }
  v1::ResignRequest request;
  *request.mutable_header() = session_->NewHeader();
  request.set_name(name_);
  v1::ResignResponse response;
  absl::Status status = session_->client()->Invoke(
      "Elections.Resign",
      [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.elections->Resign(context, request, &response);
      });
  session_->Answered(request.header().request_id());
  absl::MutexLock lock(&mu_);
  if (status.ok() || status.code() == absl::StatusCode::kFailedPrecondition ||
      status.code() == absl::StatusCode::kNotFound) {
    // FAILED_PRECONDITION: the cell says this session does not lead (a retry
    // of this very Resign is answered OK from the exactly-once record);
    // NOT_FOUND: the session is gone on the cell, and its leadership with it.
    resigned_ = true;
    return absl::OkStatus();
  }
  return status;
}

bool Election::IsLeader() const {
  {
    absl::MutexLock lock(&mu_);
    if (resigned_ || lost_) return false;
  }
  return session_->StillHolds(sequencer_.path(), locks_lost_at_win_);
}

v1::LeaderInfo Election::leader() const {
  absl::MutexLock lock(&mu_);
  return leader_;
}

// ---------------------------------------------------------- ElectionObserver

// Two threads: the reader opens the Observe stream, reads it and reopens it
// when it breaks; the prober checks the replica of a silent stream.
class ElectionObserver::Impl {
 public:
  Impl(Client* client, std::string name, size_t max_queued)
      : client_(client), name_(std::move(name)), max_queued_(max_queued) {}

  ~Impl() {
    Cancel();
    if (reader_.joinable()) reader_.join();
    if (prober_.joinable()) prober_.join();
  }

  void StartThreads() {
    reader_ = std::thread([this] { ReadLoop(); });
    prober_ = std::thread([this] { ProbeLoop(); });
  }

  absl::StatusOr<v1::LeaderInfo> Next(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return cancelled_ || !queue_.empty() || !error_.ok();
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (cancelled_) {
      return absl::CancelledError("ElectionObserver was cancelled");
    }
    if (lost_before_front_ > 0) {
      const uint64_t lost = lost_before_front_;
      lost_before_front_ = 0;
      return absl::DataLossError(absl::StrCat(
          lost, " changes of election ", name_,
          " were dropped because Next() fell behind by more than ", max_queued_,
          "; the next call returns the oldest change kept"));
    }
    if (!queue_.empty()) {
      v1::LeaderInfo next = std::move(queue_.front());
      queue_.pop_front();
      return next;
    }
    if (!error_.ok()) return error_;
    return absl::DeadlineExceededError(
        absl::StrCat("no change of election ", name_, " within ",
                     absl::FormatDuration(timeout)));
  }

  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (context_ != nullptr) context_->TryCancel();
    if (probe_context_ != nullptr) probe_context_->TryCancel();
  }

  uint64_t reconnects() const {
    absl::MutexLock lock(&mu_);
    return reconnects_;
  }

  uint64_t changes_lost() const {
    absl::MutexLock lock(&mu_);
    return changes_lost_;
  }

 private:
  // Queues `leader` unless it is the first message of a reopened stream and
  // repeats the last one queued.
  void Deliver(v1::LeaderInfo leader, bool first_of_stream)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (first_of_stream) {
      if (delivered_any_) ++reconnects_;
      if (delivered_any_ && SameLeader(leader, last_)) return;
    }
    delivered_any_ = true;
    last_ = leader;
    if (queue_.size() >= max_queued_) {
      queue_.pop_front();
      ++lost_before_front_;
      ++changes_lost_;
    }
    queue_.push_back(std::move(leader));
  }

  // Sleeps `duration` unless cancelled first; returns false if cancelled.
  bool SleepUnlessCancelled(absl::Duration duration) {
    absl::MutexLock lock(&mu_);
    return !mu_.AwaitWithTimeout(absl::Condition(&cancelled_), duration);
  }

  void ReadLoop() {
    v1::ObserveRequest request;
    request.set_name(name_);
    absl::Duration backoff = client_->options().initial_backoff;
    while (true) {
      const std::string address = client_->current_address();
      std::shared_ptr<Client::Endpoint> target = client_->endpoint(address);
      grpc::ClientContext context;
      {
        absl::MutexLock lock(&mu_);
        if (cancelled_) return;
        context_ = &context;
        stream_address_ = address;
        ++stream_number_;
        stream_open_ = true;
        stream_activity_ = absl::Now();
        probe_failed_ = false;
      }
      std::unique_ptr<grpc::ClientReader<v1::GetLeaderResponse>> stream =
          target->elections->Observe(&context, request);
      v1::GetLeaderResponse response;
      bool first = true;
      while (stream->Read(&response)) {
        absl::MutexLock lock(&mu_);
        stream_activity_ = absl::Now();
        Deliver(std::move(*response.mutable_leader()), first);
        first = false;
      }
      const grpc::Status status = stream->Finish();
      bool probe_failed = false;
      {
        absl::MutexLock lock(&mu_);
        context_ = nullptr;
        stream_open_ = false;
        probe_failed = probe_failed_;
        if (cancelled_) return;
        if (!probe_failed && !IsRetryableStreamEnd(status)) {
          error_ =
              absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                           absl::StrCat("Elections.Observe at ", address, ": ",
                                        status.error_message()));
          return;
        }
      }
      if (!first) backoff = client_->options().initial_backoff;
      client_->DropIfBroken(address, target, status);
      bool sleep = true;
      if (probe_failed) {
        // The replica is silent or no longer leads: try the next one.
        client_->Redirect(address, context,
                          grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                       "observed replica does not lead"),
                          &sleep);
      } else {
        client_->Redirect(address, context, status, &sleep);
      }
      if (sleep) {
        if (!SleepUnlessCancelled(client_->Jitter(backoff))) return;
        backoff = std::min(backoff * 2, client_->options().max_backoff);
      }
    }
  }

  void ProbeLoop() {
    const absl::Duration silence = client_->options().attempt_timeout;
    while (true) {
      std::string address;
      uint64_t stream_number = 0;
      {
        absl::MutexLock lock(&mu_);
        auto due = [this, silence]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return cancelled_ ||
                 (stream_open_ && absl::Now() >= stream_activity_ + silence);
        };
        while (!due()) {
          // Wakes when the stream changes or, at the latest, when the
          // current one would have been silent long enough.
          const absl::Time wake = stream_open_ ? stream_activity_ + silence
                                               : absl::InfiniteFuture();
          mu_.AwaitWithDeadline(absl::Condition(&due), wake);
        }
        if (cancelled_) return;
        address = stream_address_;
        stream_number = stream_number_;
      }
      std::shared_ptr<Client::Endpoint> target = client_->endpoint(address);
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + silence));
      {
        absl::MutexLock lock(&mu_);
        if (cancelled_) return;
        probe_context_ = &context;
      }
      v1::StatusResponse status_response;
      const grpc::Status status = target->cluster->Status(
          &context, v1::StatusRequest(), &status_response);
      const bool leads = status.ok() && status_response.role() == "leader";
      absl::MutexLock lock(&mu_);
      probe_context_ = nullptr;
      if (cancelled_) return;
      if (stream_number != stream_number_ || !stream_open_) continue;
      if (leads) {
        stream_activity_ = absl::Now();
      } else if (!probe_failed_) {
        probe_failed_ = true;
        if (context_ != nullptr) context_->TryCancel();
      }
    }
  }

  Client* const client_;
  const std::string name_;

  mutable absl::Mutex mu_;
  const size_t max_queued_;
  std::deque<v1::LeaderInfo> queue_ ABSL_GUARDED_BY(mu_);
  // Changes dropped before queue_.front(), not yet reported by Next(); and
  // all dropped so far.
  uint64_t lost_before_front_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t changes_lost_ ABSL_GUARDED_BY(mu_) = 0;
  // The last LeaderInfo queued (valid if delivered_any_).
  v1::LeaderInfo last_ ABSL_GUARDED_BY(mu_);
  bool delivered_any_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t reconnects_ ABSL_GUARDED_BY(mu_) = 0;
  // A status the cell ended the observation with; final.
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // The stream being read (context_ is null between streams).
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string stream_address_ ABSL_GUARDED_BY(mu_);
  uint64_t stream_number_ ABSL_GUARDED_BY(mu_) = 0;
  bool stream_open_ ABSL_GUARDED_BY(mu_) = false;
  // When the stream opened, last delivered something, or its replica last
  // answered a probe as leader.
  absl::Time stream_activity_ ABSL_GUARDED_BY(mu_);
  // The prober cancelled the stream.
  bool probe_failed_ ABSL_GUARDED_BY(mu_) = false;
  // The prober's Cluster.Status call in flight, if any.
  grpc::ClientContext* probe_context_ ABSL_GUARDED_BY(mu_) = nullptr;

  std::thread reader_;
  std::thread prober_;
};

ElectionObserver::ElectionObserver(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

ElectionObserver::~ElectionObserver() = default;

absl::StatusOr<std::unique_ptr<ElectionObserver>> ElectionObserver::Start(
    Client* client, const std::string& name, size_t max_queued) {
  if (client == nullptr) return absl::InvalidArgumentError("client is null");
  if (max_queued == 0) {
    return absl::InvalidArgumentError("max_queued must be at least 1");
  }
  auto impl = std::make_unique<Impl>(client, name, max_queued);
  impl->StartThreads();
  return std::unique_ptr<ElectionObserver>(
      new ElectionObserver(std::move(impl)));
}

absl::StatusOr<v1::LeaderInfo> ElectionObserver::Next(absl::Duration timeout) {
  return impl_->Next(timeout);
}

void ElectionObserver::Cancel() { impl_->Cancel(); }

uint64_t ElectionObserver::reconnects() const { return impl_->reconnects(); }

uint64_t ElectionObserver::changes_lost() const {
  return impl_->changes_lost();
}

}  // namespace lockd
