#include "lockd/session.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace lockd {
namespace {

// True if `channel` is still trying to connect at `deadline`; false once
// it is connected or has failed (a failed channel fails calls at once).
bool StillConnectingAt(grpc::Channel& channel, absl::Time deadline) {
  while (true) {
    const grpc_connectivity_state state =
        channel.GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY ||
        state == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        state == GRPC_CHANNEL_SHUTDOWN) {
      return false;
    }
    if (!channel.WaitForStateChange(state, absl::ToChronoTime(deadline))) {
      return true;
    }
  }
}

uint64_t RandomNonce() {
  std::random_device device;
  uint64_t nonce = 0;
  while (nonce == 0) {
    nonce = (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  return nonce;
}

bool IsFinal(SessionState state) {
  return state == SessionState::kExpired || state == SessionState::kClosed;
}

}  // namespace

const char* SessionStateName(SessionState state) {
  switch (state) {
    case SessionState::kHealthy:
      return "healthy";
    case SessionState::kJeopardy:
      return "jeopardy";
    case SessionState::kExpired:
      return "expired";
    case SessionState::kClosed:
      return "closed";
  }
  return "unknown";
}

Session::Session(Client* client, SessionOptions options)
    : client_(client), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Session>> Session::Create(
    Client* client, SessionOptions options) {
  if (client == nullptr) return absl::InvalidArgumentError("client is null");
  if (options.lease_margin < 0.06 || options.lease_margin > 0.9) {
    return absl::InvalidArgumentError(
        "SessionOptions.lease_margin must be in [0.06, 0.9]");
  }
  if (options.max_queued_events == 0) {
    return absl::InvalidArgumentError(
        "SessionOptions.max_queued_events must be at least 1");
  }
  if (options.grace_period < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "SessionOptions.grace_period is negative");
  }
  std::unique_ptr<Session> session(new Session(client, std::move(options)));
  v1::CreateSessionRequest request;
  request.set_ttl_ms(absl::ToInt64Milliseconds(session->options_.ttl));
  request.set_client_name(session->options_.client_name);
  v1::CreateSessionResponse response;
  // Every attempt is sent after this instant, so the lease the answer names
  // started no earlier.
  const Clock::time_point base = Clock::now();
  // An answer without a secret names a session an earlier attempt of this
  // nonce opened, whose answer (and secret) was lost: that session is left
  // to expire and a new nonce opens another.
  for (int tries = 0; tries < 3 && response.session_secret().empty(); ++tries) {
    request.set_nonce(RandomNonce());
    absl::Status status = client->Invoke(
        "Sessions.CreateSession",
        [&](Client::Endpoint& e, grpc::ClientContext* context) {
          response.Clear();
          return e.sessions->CreateSession(context, request, &response);
        });
    if (!status.ok()) return status;
  }
  if (response.session_secret().empty()) {
    return absl::UnavailableError(
        "CreateSession kept answering without a session secret");
  }
  session->id_ = response.session_id();
  session->secret_ = response.session_secret();
  {
    absl::MutexLock lock(&session->mu_);
    session->epoch_ = response.epoch();
    const int64_t remaining_ms = response.lease_remaining_ms() > 0
                                     ? response.lease_remaining_ms()
                                     : response.ttl_ms();
    session->lease_end_ =
        base + std::chrono::milliseconds(static_cast<int64_t>(
                   remaining_ms * (1 - session->options_.lease_margin)));
  }
  Session* raw = session.get();
  session->dispatcher_thread_ = std::thread([raw] { raw->DispatchLoop(); });
  session->keep_alive_thread_ = std::thread([raw] { raw->KeepAliveLoop(); });
  return session;
}

Session::~Session() { StopThreads(); }

void Session::StopThreads() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    cv_.SignalAll();
  }
  if (keep_alive_thread_.joinable()) keep_alive_thread_.join();
  {
    absl::MutexLock lock(&mu_);
    dispatcher_stop_ = true;
    cv_.SignalAll();
  }
  if (dispatcher_thread_.joinable()) dispatcher_thread_.join();
}

SessionState Session::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

bool Session::WaitForState(SessionState state, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (state_ != state) {
    if (cv_.WaitWithDeadline(&mu_, deadline)) return state_ == state;
  }
  return true;
}

absl::Duration Session::LocalLeaseRemaining() const {
  absl::MutexLock lock(&mu_);
  if (state_ != SessionState::kHealthy) return absl::ZeroDuration();
  const Clock::time_point now = Clock::now();
  if (lease_end_ <= now) return absl::ZeroDuration();
  return absl::FromChrono(lease_end_ - now);
}

uint64_t Session::epoch() const {
  absl::MutexLock lock(&mu_);
  return epoch_;
}

uint64_t Session::keep_alive_answers() const {
  absl::MutexLock lock(&mu_);
  return answers_;
}

uint64_t Session::events_lost() const {
  absl::MutexLock lock(&mu_);
  return cell_events_lost_ + queue_events_lost_;
}

uint64_t Session::locks_lost(const std::string& path) const {
  absl::MutexLock lock(&mu_);
  auto it = locks_lost_.find(path);
  return it == locks_lost_.end() ? 0 : it->second;
}

bool Session::StillHolds(const std::string& path,
                         uint64_t lost_at_grant) const {
  return locks_lost(path) == lost_at_grant &&
         LocalLeaseRemaining() > absl::ZeroDuration();
}

v1::RequestHeader Session::NewHeader() {
  absl::MutexLock lock(&mu_);
  v1::RequestHeader header;
  header.set_session_id(id_);
  header.set_session_secret(secret_);
  header.set_request_id(next_request_id_++);
  unanswered_.insert(header.request_id());
  header.set_first_unanswered_request_id(*unanswered_.begin());
  return header;
}

void Session::Answered(uint64_t request_id) {
  absl::MutexLock lock(&mu_);
  unanswered_.erase(request_id);
}

absl::Time Session::ToDeadline(Clock::time_point t) {
  return absl::Now() + absl::FromChrono(t - Clock::now());
}

void Session::SetStateLocked(SessionState state) {
  if (state_ == state || IsFinal(state_)) return;
  state_ = state;
  cv_.SignalAll();
  if (options_.on_state_change) {
    std::function<void(SessionState)> callback = options_.on_state_change;
    PostLocked([callback, state] { callback(state); });
  }
}

void Session::PostLocked(std::function<void()> callback) {
  callbacks_.push_back({std::move(callback), /*is_event=*/false});
  cv_.SignalAll();
}

void Session::PostEventLocked(v1::Event event) {
  if (!options_.on_event) return;
  if (queued_events_ >= options_.max_queued_events) {
    for (auto it = callbacks_.begin(); it != callbacks_.end(); ++it) {
      if (!it->is_event) continue;
      callbacks_.erase(it);
      --queued_events_;
      ++lost_before_front_;
      ++queue_events_lost_;
      break;
    }
  }
  std::function<void(const v1::Event&)> callback = options_.on_event;
  callbacks_.push_back(
      {[callback, event = std::move(event)] { callback(event); },
       /*is_event=*/true});
  ++queued_events_;
  cv_.SignalAll();
}

void Session::PostEventLocked(v1::Event::Type type) {
  v1::Event event;
  event.set_type(type);
  event.set_time_ms(absl::ToUnixMillis(absl::Now()));
  PostEventLocked(std::move(event));
}

v1::Event Session::LostEvent(uint64_t count) {
  v1::Event event;
  event.set_type(v1::Event::EVENTS_LOST);
  event.set_time_ms(absl::ToUnixMillis(absl::Now()));
  event.set_lost_count(count);
  return event;
}

void Session::CheckLeaseLocked() {
  const Clock::time_point now = Clock::now();
  if (state_ == SessionState::kHealthy && now >= lease_end_) {
    grace_end_ = lease_end_ + absl::ToChronoMilliseconds(options_.grace_period);
    SetStateLocked(SessionState::kJeopardy);
    PostEventLocked(v1::Event::SESSION_EXPIRING);
  }
  if (state_ == SessionState::kJeopardy && now >= grace_end_) {
    SetStateLocked(SessionState::kExpired);
  }
}

void Session::OnAnswer(const v1::KeepAliveResponse& response,
                       Clock::time_point base) {
  CheckLeaseLocked();
  if (IsFinal(state_)) return;
  // An answer of an older leadership than one already heard from is stale.
  if (response.epoch() < epoch_) return;
  if (response.epoch() > epoch_) {
    if (epoch_ != 0) PostEventLocked(v1::Event::LEADER_CHANGED);
    epoch_ = response.epoch();
  }
  ++answers_;
  // The cell dropped its oldest unacknowledged events: the gap comes before
  // the events of this answer.
  if (response.events_lost() > cell_events_lost_) {
    PostEventLocked(LostEvent(response.events_lost() - cell_events_lost_));
    cell_events_lost_ = response.events_lost();
  }
  if (response.lease_remaining_ms() > 0) {
    const Clock::time_point end =
        base +
        std::chrono::milliseconds(static_cast<int64_t>(
            response.lease_remaining_ms() * (1 - options_.lease_margin)));
    lease_end_ = std::max(lease_end_, end);
    if (state_ == SessionState::kJeopardy && lease_end_ > Clock::now()) {
      SetStateLocked(SessionState::kHealthy);
    }
  }
  for (const v1::Event& event : response.events()) {
    if (event.sequence() <= last_event_sequence_) continue;
    last_event_sequence_ = event.sequence();
    if (event.type() == v1::Event::LOCK_LOST) ++locks_lost_[event.path()];
    PostEventLocked(event);
  }
  cv_.SignalAll();
}

void Session::KeepAliveLoop() {
  const Clock::duration interval = absl::ToChronoMilliseconds(options_.ttl / 3);
  // A keep-alive unanswered this long means the replica is paused or cut
  // off: try another one.
  const Clock::duration answer_timeout = absl::ToChronoMilliseconds(
      std::min(options_.ttl / 3, client_->options().attempt_timeout));
  absl::Duration backoff = client_->options().initial_backoff;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      CheckLeaseLocked();
      if (stop_ || IsFinal(state_)) return;
    }
    const std::string address = client_->current_address();
    std::shared_ptr<Client::Endpoint> target = client_->endpoint(address);
    grpc::ClientContext context;
    // Opening a stream waits while the channel connects, which to a replica
    // that drops packets lasts the whole TCP connect timeout (~20 s): give
    // the connection as long as an answer, then try the next replica. (A
    // refused connection fails at once, below, as before.)
    if (StillConnectingAt(*target->channel,
                          absl::Now() + absl::FromChrono(answer_timeout))) {
      bool sleep = true;
      client_->Redirect(
          address, context,
          grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "cannot connect"),
          &sleep);
      if (sleep && !SleepWhileLeaseChecked(client_->Jitter(backoff))) return;
      if (sleep)
        backoff = std::min(backoff * 2, client_->options().max_backoff);
      continue;
    }
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::KeepAliveRequest, v1::KeepAliveResponse>>
        stream = target->sessions->KeepAlive(&context);
    // Shared with the reader, guarded by mu_: send times of keep-alives not
    // answered yet, and the base of the last answer.
    std::deque<Clock::time_point> in_flight;
    Clock::time_point last_base = Clock::time_point::min();
    bool reader_done = false;
    uint64_t stream_answers = 0;
    std::thread reader([&] {
      v1::KeepAliveResponse response;
      while (stream->Read(&response)) {
        absl::MutexLock lock(&mu_);
        // Each keep-alive is answered in order; an answer pushed with new
        // events between them is measured after the previous answer.
        Clock::time_point base = last_base;
        if (!in_flight.empty()) {
          base = in_flight.front();
          in_flight.pop_front();
        }
        last_base = base;
        ++stream_answers;
        if (base != Clock::time_point::min()) OnAnswer(response, base);
      }
      absl::MutexLock lock(&mu_);
      reader_done = true;
      cv_.SignalAll();
    });

    bool server_ended = false;
    bool timed_out = false;
    while (true) {
      v1::KeepAliveRequest request;
      request.set_session_id(id_);
      request.set_session_secret(secret_);
      Clock::time_point sent;
      {
        absl::MutexLock lock(&mu_);
        request.set_acked_event_sequence(last_event_sequence_);
        sent = Clock::now();
        in_flight.push_back(sent);
      }
      if (!stream->Write(request)) break;
      absl::MutexLock lock(&mu_);
      const Clock::time_point next_send = sent + interval;
      bool send_again = false;
      while (true) {
        CheckLeaseLocked();
        if (stop_ || reader_done || IsFinal(state_)) break;
        const Clock::time_point now = Clock::now();
        if (now >= next_send) {
          send_again = true;
          break;
        }
        if (!in_flight.empty() && now - in_flight.front() >= answer_timeout) {
          timed_out = true;
          break;
        }
        Clock::time_point wake = next_send;
        if (!in_flight.empty()) {
          wake = std::min(wake, in_flight.front() + answer_timeout);
        }
        if (state_ == SessionState::kHealthy) {
          wake = std::min(wake, lease_end_);
        } else {
          wake = std::min(wake, grace_end_);
        }
        cv_.WaitWithDeadline(&mu_, ToDeadline(wake));
      }
      server_ended = reader_done;
      if (!send_again) break;
    }
    if (!server_ended) context.TryCancel();
    reader.join();
    const grpc::Status status = stream->Finish();
    {
      absl::MutexLock lock(&mu_);
      if (stop_ || IsFinal(state_)) return;
      if (server_ended &&
          (status.error_code() == grpc::StatusCode::NOT_FOUND ||
           status.error_code() == grpc::StatusCode::FAILED_PRECONDITION)) {
        SetStateLocked(closing_ ? SessionState::kClosed
                                : SessionState::kExpired);
        return;
      }
      if (stream_answers > 0) backoff = client_->options().initial_backoff;
    }
    client_->DropIfBroken(address, target, status);
    bool sleep = true;
    if (timed_out) {
      client_->Redirect(address, context,
                        grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                     "keep-alive unanswered"),
                        &sleep);
    } else {
      client_->Redirect(address, context, status, &sleep);
    }
    if (sleep) {
      if (!SleepWhileLeaseChecked(client_->Jitter(backoff))) return;
      backoff = std::min(backoff * 2, client_->options().max_backoff);
    }
  }
}

bool Session::SleepWhileLeaseChecked(absl::Duration duration) {
  const Clock::time_point until =
      Clock::now() + absl::ToChronoMilliseconds(duration);
  absl::MutexLock lock(&mu_);
  while (true) {
    CheckLeaseLocked();
    if (stop_ || IsFinal(state_)) return false;
    if (Clock::now() >= until) return true;
    Clock::time_point wake = until;
    if (state_ == SessionState::kHealthy) {
      wake = std::min(wake, lease_end_);
    } else {
      wake = std::min(wake, grace_end_);
    }
    cv_.WaitWithDeadline(&mu_, ToDeadline(wake));
  }
}

void Session::DispatchLoop() {
  while (true) {
    std::function<void()> callback;
    {
      absl::MutexLock lock(&mu_);
      while (callbacks_.empty() && lost_before_front_ == 0 &&
             !dispatcher_stop_) {
        cv_.Wait(&mu_);
      }
      if (lost_before_front_ > 0) {
        // Reported where the dropped events were, before what follows.
        std::function<void(const v1::Event&)> on_event = options_.on_event;
        callback = [on_event, lost = LostEvent(lost_before_front_)] {
          on_event(lost);
        };
        lost_before_front_ = 0;
      } else if (callbacks_.empty()) {
        return;
      } else {
        if (callbacks_.front().is_event) --queued_events_;
        callback = std::move(callbacks_.front().run);
        callbacks_.pop_front();
      }
    }
    callback();
  }
}

absl::Status Session::Close() {
  {
    absl::MutexLock lock(&mu_);
    // Nothing is left to end (and an expired session's cell may be gone).
    if (state_ == SessionState::kExpired || state_ == SessionState::kClosed) {
      return absl::OkStatus();
    }
    closing_ = true;
  }
  v1::CloseSessionRequest request;
  *request.mutable_header() = NewHeader();
  v1::CloseSessionResponse response;
  absl::Status status = client_->Invoke(
      "Sessions.CloseSession",
      [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.sessions->CloseSession(context, request, &response);
      });
  Answered(request.header().request_id());
  absl::MutexLock lock(&mu_);
  closing_ = false;
  if (status.ok()) SetStateLocked(SessionState::kClosed);
  return status;
}

absl::StatusOr<v1::CreateNodeResponse> Session::CreateNode(
    const std::string& path, const std::string& content, bool ephemeral,
    bool sequential) {
  v1::CreateNodeRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_content(content);
  request.set_ephemeral(ephemeral);
  request.set_sequential(sequential);
  v1::CreateNodeResponse response;
  absl::Status status = client_->Invoke(
      "Nodes.Create", [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Create(context, request, &response);
      });
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::NodeMeta> Session::SetNode(
    const std::string& path, const std::string& content,
    uint64_t expected_content_generation) {
  v1::SetNodeRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_content(content);
  request.set_expected_content_generation(expected_content_generation);
  v1::SetNodeResponse response;
  absl::Status status = client_->Invoke(
      "Nodes.Set", [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Set(context, request, &response);
      });
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  return response.meta();
}

absl::StatusOr<v1::NodeMeta> Session::SetAcl(const std::string& path,
                                             const Acl& acl,
                                             uint64_t expected_acl_generation) {
  v1::SetAclRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_read_acl(acl.read);
  request.set_write_acl(acl.write);
  request.set_change_acl(acl.change);
  request.set_expected_acl_generation(expected_acl_generation);
  v1::SetAclResponse response;
  absl::Status status = client_->Invoke(
      "Nodes.SetAcl", [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->SetAcl(context, request, &response);
      });
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  return response.meta();
}

absl::Status Session::DeleteNode(const std::string& path,
                                 uint64_t expected_content_generation) {
  v1::DeleteNodeRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_expected_content_generation(expected_content_generation);
  v1::DeleteNodeResponse response;
  absl::Status status = client_->Invoke(
      "Nodes.Delete", [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Delete(context, request, &response);
      });
  Answered(request.header().request_id());
  return status;
}

absl::Status Session::Watch(const std::string& path, bool remove) {
  v1::WatchRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_remove(remove);
  v1::WatchResponse response;
  absl::Status status = client_->Invoke(
      "Nodes.Watch", [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Watch(context, request, &response);
      });
  Answered(request.header().request_id());
  return status;
}

}  // namespace lockd
