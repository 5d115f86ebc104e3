#include "tests/integration/test_client.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "tests/integration/cell.h"

namespace lockd::integration {
namespace {

constexpr char kLeaderAddressKey[] = "lockd-leader-address";
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(10);
constexpr absl::Duration kMaxBackoff = absl::Milliseconds(200);

uint64_t RandomNonce() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

bool IsRetryable(const grpc::Status& status, absl::Time attempt_deadline) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::ABORTED:
      return true;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      // Our own attempt deadline (no answer in time), not a blocking
      // acquire's wait timeout, which the server reports before it.
      return absl::Now() >= attempt_deadline;
    default:
      return false;
  }
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

TestClient::TestClient(ClientOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<TestClient>> TestClient::Connect(
    ClientOptions options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("ClientOptions.endpoints is empty");
  }
  std::unique_ptr<TestClient> client(new TestClient(std::move(options)));
  {
    absl::MutexLock lock(&client->mu_);
    client->address_ = client->options_.endpoints.front();
  }
  v1::CreateSessionRequest request;
  request.set_ttl_ms(client->options_.ttl_ms);
  request.set_client_name(client->options_.client_name);
  request.set_nonce(RandomNonce());
  v1::CreateSessionResponse response;
  absl::Status status = client->Invoke(
      "Sessions.CreateSession",
      [&](Endpoint& endpoint, grpc::ClientContext* context) {
        response.Clear();
        return endpoint.sessions->CreateSession(context, request, &response);
      });
  if (!status.ok()) return status;
  client->session_id_ = response.session_id();
  if (client->options_.keep_alive) {
    TestClient* raw = client.get();
    client->keep_alive_thread_ = std::thread([raw] { raw->KeepAliveLoop(); });
  }
  return client;
}

TestClient::~TestClient() { StopKeepAlive(); }

std::shared_ptr<TestClient::Endpoint> TestClient::endpoint(
    const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Endpoint>& slot = endpoints_[address];
  if (slot == nullptr) {
    slot = std::make_shared<Endpoint>();
    slot->channel = NewChannel(address);
    slot->sessions = v1::Sessions::NewStub(slot->channel);
    slot->nodes = v1::Nodes::NewStub(slot->channel);
    slot->locks = v1::Locks::NewStub(slot->channel);
  }
  return slot;
}

void TestClient::DropIfBroken(const std::string& address,
                              const std::shared_ptr<Endpoint>& broken,
                              const grpc::Status& status) {
  if (!ChannelIsBroken(*broken->channel, status)) return;
  absl::MutexLock lock(&mu_);
  auto it = endpoints_.find(address);
  if (it != endpoints_.end() && it->second == broken) endpoints_.erase(it);
}

std::string TestClient::current_address() const {
  absl::MutexLock lock(&mu_);
  return address_;
}

std::string TestClient::last_answered_by() const {
  absl::MutexLock lock(&mu_);
  return last_answered_by_;
}

void TestClient::Redirect(const std::string& address,
                          const grpc::ClientContext& context,
                          const grpc::Status& status, bool* sleep) {
  *sleep = true;
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return;  // ABORTED and the like: same replica again.
  }
  std::string hint;
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    const auto& trailers = context.GetServerTrailingMetadata();
    auto it = trailers.find(kLeaderAddressKey);
    if (it != trailers.end()) hint.assign(it->second.data(), it->second.size());
  }
  absl::MutexLock lock(&mu_);
  if (address_ != address) {
    // Another call moved on already.
    *sleep = false;
    return;
  }
  if (!hint.empty() && hint != address) {
    address_ = hint;
    *sleep = false;
    return;
  }
  // No usable hint (no leader known, or the replica is down): next endpoint.
  const std::vector<std::string>& all = options_.endpoints;
  auto it = std::find(all.begin(), all.end(), address);
  address_ = (it == all.end() || it + 1 == all.end()) ? all.front() : *(it + 1);
}

absl::Status TestClient::Invoke(const char* method, const Attempt& attempt,
                                absl::Duration server_wait) {
  const absl::Time give_up = absl::Now() + options_.retry_timeout;
  absl::Duration backoff = kFirstBackoff;
  while (true) {
    const std::string address = current_address();
    std::shared_ptr<Endpoint> target = endpoint(address);
    grpc::ClientContext context;
    const absl::Time attempt_deadline =
        absl::Now() + options_.attempt_timeout + server_wait;
    context.set_deadline(absl::ToChronoTime(attempt_deadline));
    const grpc::Status status = attempt(*target, &context);
    if (status.ok()) {
      absl::MutexLock lock(&mu_);
      last_answered_by_ = address;
      return absl::OkStatus();
    }
    DropIfBroken(address, target, status);
    const bool retryable = IsRetryable(status, attempt_deadline);
    if (!retryable || absl::Now() >= give_up) {
      std::string message =
          absl::StrCat(method, " at ", address, ": ", status.error_message());
      if (retryable) {
        message = absl::StrCat("gave up after retrying for ",
                               absl::FormatDuration(options_.retry_timeout),
                               "; last: ", message);
      }
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          message);
    }
    retries_.fetch_add(1);
    bool sleep = true;
    Redirect(address, context, status, &sleep);
    if (sleep) {
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }
}

v1::RequestHeader TestClient::NewHeader() {
  absl::MutexLock lock(&mu_);
  v1::RequestHeader header;
  header.set_session_id(session_id_);
  header.set_request_id(next_request_id_++);
  unanswered_.insert(header.request_id());
  if (options_.report_answered) {
    header.set_first_unanswered_request_id(*unanswered_.begin());
  }
  return header;
}

void TestClient::Answered(uint64_t request_id) {
  absl::MutexLock lock(&mu_);
  unanswered_.erase(request_id);
}

absl::StatusOr<v1::CreateNodeResponse> TestClient::Send(
    const v1::CreateNodeRequest& request) {
  v1::CreateNodeResponse response;
  absl::Status status =
      Invoke("Nodes.Create", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Create(context, request, &response);
      });
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::SetNodeResponse> TestClient::Send(
    const v1::SetNodeRequest& request) {
  v1::SetNodeResponse response;
  absl::Status status =
      Invoke("Nodes.Set", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Set(context, request, &response);
      });
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::AcquireResponse> TestClient::Send(
    const v1::AcquireRequest& request) {
  v1::AcquireResponse response;
  absl::Status status = Invoke(
      "Locks.Acquire",
      [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.locks->Acquire(context, request, &response);
      },
      absl::Milliseconds(request.wait_timeout_ms()));
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ReleaseResponse> TestClient::Send(
    const v1::ReleaseRequest& request) {
  v1::ReleaseResponse response;
  absl::Status status =
      Invoke("Locks.Release", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.locks->Release(context, request, &response);
      });
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::WatchResponse> TestClient::Send(
    const v1::WatchRequest& request) {
  v1::WatchResponse response;
  absl::Status status =
      Invoke("Nodes.Watch", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Watch(context, request, &response);
      });
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::CreateNodeResponse> TestClient::Create(
    const std::string& path, const std::string& content, bool ephemeral,
    bool sequential) {
  v1::CreateNodeRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_content(content);
  request.set_ephemeral(ephemeral);
  request.set_sequential(sequential);
  return Send(request);
}

absl::StatusOr<v1::SetNodeResponse> TestClient::Set(
    const std::string& path, const std::string& content,
    uint64_t expected_content_generation) {
  v1::SetNodeRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_content(content);
  request.set_expected_content_generation(expected_content_generation);
  return Send(request);
}

absl::Status TestClient::Delete(const std::string& path,
                                uint64_t expected_content_generation) {
  v1::DeleteNodeRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_expected_content_generation(expected_content_generation);
  v1::DeleteNodeResponse response;
  absl::Status status =
      Invoke("Nodes.Delete", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Delete(context, request, &response);
      });
  Answered(request.header().request_id());
  return status;
}

absl::StatusOr<v1::AcquireResponse> TestClient::Acquire(
    const std::string& path, v1::LockMode mode, absl::Duration wait,
    absl::Duration lock_delay) {
  v1::AcquireRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  request.set_mode(mode);
  request.set_wait_timeout_ms(absl::ToInt64Milliseconds(wait));
  request.set_lock_delay_ms(absl::ToInt64Milliseconds(lock_delay));
  return Send(request);
}

absl::Status TestClient::Release(const std::string& path) {
  v1::ReleaseRequest request;
  *request.mutable_header() = NewHeader();
  request.set_path(path);
  return Send(request).status();
}

absl::Status TestClient::CloseSession() {
  v1::CloseSessionRequest request;
  *request.mutable_header() = NewHeader();
  v1::CloseSessionResponse response;
  absl::Status status = Invoke(
      "Sessions.CloseSession", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.sessions->CloseSession(context, request, &response);
      });
  Answered(request.header().request_id());
  if (status.ok()) StopKeepAlive();
  return status;
}

absl::StatusOr<v1::GetNodeResponse> TestClient::Get(const std::string& path) {
  v1::GetNodeRequest request;
  request.set_path(path);
  v1::GetNodeResponse response;
  absl::Status status =
      Invoke("Nodes.Get", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Get(context, request, &response);
      });
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::StatNodeResponse> TestClient::Stat(const std::string& path) {
  v1::StatNodeRequest request;
  request.set_path(path);
  v1::StatNodeResponse response;
  absl::Status status =
      Invoke("Nodes.Stat", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->Stat(context, request, &response);
      });
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ListChildrenResponse> TestClient::List(
    const std::string& path) {
  v1::ListChildrenRequest request;
  request.set_path(path);
  v1::ListChildrenResponse response;
  absl::Status status =
      Invoke("Nodes.List", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.nodes->List(context, request, &response);
      });
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::CheckSequencerResponse> TestClient::CheckSequencer(
    const v1::Sequencer& sequencer) {
  v1::CheckSequencerRequest request;
  *request.mutable_sequencer() = sequencer;
  v1::CheckSequencerResponse response;
  absl::Status status = Invoke(
      "Locks.CheckSequencer", [&](Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return e.locks->CheckSequencer(context, request, &response);
      });
  if (!status.ok()) return status;
  return response;
}

void TestClient::StopKeepAlive() {
  {
    absl::MutexLock lock(&keep_alive_mu_);
    stop_keep_alive_ = true;
    keep_alive_cv_.SignalAll();
  }
  if (keep_alive_thread_.joinable()) keep_alive_thread_.join();
}

bool TestClient::session_lost() const {
  absl::MutexLock lock(&keep_alive_mu_);
  return session_lost_;
}

uint64_t TestClient::keep_alive_responses() const {
  absl::MutexLock lock(&keep_alive_mu_);
  return keep_alive_responses_;
}

uint64_t TestClient::last_keep_alive_epoch() const {
  absl::MutexLock lock(&keep_alive_mu_);
  return last_epoch_;
}

std::vector<v1::Event> TestClient::events() const {
  absl::MutexLock lock(&keep_alive_mu_);
  return events_;
}

bool TestClient::WaitForEvent(
    const std::function<bool(const v1::Event&)>& match,
    absl::Duration timeout) const {
  return PollUntil(
      [&] {
        for (const v1::Event& event : events()) {
          if (match(event)) return true;
        }
        return false;
      },
      timeout);
}

void TestClient::KeepAliveLoop() {
  const absl::Duration interval = absl::Milliseconds(options_.ttl_ms / 3);
  absl::Duration backoff = kFirstBackoff;
  while (true) {
    {
      absl::MutexLock lock(&keep_alive_mu_);
      if (stop_keep_alive_) return;
    }
    const std::string address = current_address();
    std::shared_ptr<Endpoint> target = endpoint(address);
    grpc::ClientContext context;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::KeepAliveRequest, v1::KeepAliveResponse>>
        stream = target->sessions->KeepAlive(&context);
    bool reader_done = false;     // Guarded by keep_alive_mu_.
    uint64_t stream_answers = 0;  // Guarded by keep_alive_mu_.
    std::thread reader([&] {
      v1::KeepAliveResponse response;
      while (stream->Read(&response)) {
        absl::MutexLock lock(&keep_alive_mu_);
        ++keep_alive_responses_;
        ++stream_answers;
        last_epoch_ = std::max(last_epoch_, response.epoch());
        for (const v1::Event& event : response.events()) {
          if (events_.empty() || event.sequence() > events_.back().sequence()) {
            events_.push_back(event);
          }
        }
      }
      absl::MutexLock lock(&keep_alive_mu_);
      reader_done = true;
      keep_alive_cv_.SignalAll();
    });

    bool server_ended = false;
    while (true) {
      v1::KeepAliveRequest request;
      request.set_session_id(session_id_);
      {
        absl::MutexLock lock(&keep_alive_mu_);
        if (!events_.empty()) {
          request.set_acked_event_sequence(events_.back().sequence());
        }
      }
      if (!stream->Write(request)) break;
      absl::MutexLock lock(&keep_alive_mu_);
      const absl::Time next = absl::Now() + interval;
      while (!stop_keep_alive_ && !reader_done &&
             !keep_alive_cv_.WaitWithDeadline(&keep_alive_mu_, next)) {
      }
      server_ended = reader_done;
      if (stop_keep_alive_ || server_ended) break;
    }
    if (!server_ended) context.TryCancel();
    reader.join();
    const grpc::Status status = stream->Finish();
    uint64_t answers = 0;
    {
      absl::MutexLock lock(&keep_alive_mu_);
      if (stop_keep_alive_) return;
      answers = stream_answers;
      if (status.error_code() == grpc::StatusCode::NOT_FOUND ||
          status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        session_lost_ = true;
        return;
      }
    }
    if (answers > 0) backoff = kFirstBackoff;
    DropIfBroken(address, target, status);
    bool sleep = true;
    Redirect(address, context, status, &sleep);
    if (sleep) {
      absl::MutexLock lock(&keep_alive_mu_);
      const absl::Time until = absl::Now() + backoff;
      while (!stop_keep_alive_ &&
             !keep_alive_cv_.WaitWithDeadline(&keep_alive_mu_, until)) {
      }
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }
}

}  // namespace lockd::integration
