#include "tests/integration/test_client.h"

#include <utility>

#include "tests/integration/cell.h"

namespace lockd::integration {
namespace {

// Retry backoff: faster than the library's default (20 ms to 1 s), since
// the cells under test fail over in well under a second.
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(10);
constexpr absl::Duration kMaxBackoff = absl::Milliseconds(200);

}  // namespace

TestClient::TestClient(ClientOptions options,
                       std::unique_ptr<lockd::Client> client)
    : options_(std::move(options)), client_(std::move(client)) {}

absl::StatusOr<std::unique_ptr<TestClient>> TestClient::Connect(
    ClientOptions options) {
  lockd::ClientOptions library_options;
  library_options.endpoints = options.endpoints;
  library_options.call_timeout = options.retry_timeout;
  library_options.attempt_timeout = options.attempt_timeout;
  library_options.initial_backoff = kFirstBackoff;
  library_options.max_backoff = kMaxBackoff;
  absl::StatusOr<std::unique_ptr<lockd::Client>> client =
      lockd::Client::Create(std::move(library_options));
  if (!client.ok()) return client.status();
  std::unique_ptr<TestClient> test_client(
      new TestClient(std::move(options), *std::move(client)));

  lockd::SessionOptions session_options;
  session_options.ttl = absl::Milliseconds(test_client->options_.ttl_ms);
  session_options.client_name = test_client->options_.client_name;
  TestClient* raw = test_client.get();
  session_options.on_event = [raw](const v1::Event& event) {
    raw->OnEvent(event);
  };
  absl::StatusOr<std::unique_ptr<lockd::Session>> session =
      lockd::Session::Create(test_client->client_.get(),
                             std::move(session_options));
  if (!session.ok()) return session.status();
  test_client->session_id_ = (*session)->id();
  test_client->session_secret_ = (*session)->secret();
  absl::MutexLock lock(&test_client->session_mu_);
  test_client->session_ = *std::move(session);
  return test_client;
}

TestClient::~TestClient() { StopKeepAlive(); }

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> TestClient::Call(
    const char* method, std::unique_ptr<Stub> lockd::Client::Endpoint::*stub,
    grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
    const Request& request, absl::Duration server_wait) {
  Response response;
  std::string answered_by;
  absl::Status status = client_->Invoke(
      method,
      [&](lockd::Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        Stub& replica = *(e.*stub);
        grpc::Status answer = (replica.*rpc)(context, request, &response);
        if (answer.ok()) answered_by = e.address;
        return answer;
      },
      server_wait);
  Answered(request.header().request_id());
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  last_answered_by_ = answered_by;
  return response;
}

v1::RequestHeader TestClient::NewHeader() {
  absl::MutexLock lock(&mu_);
  v1::RequestHeader header;
  header.set_session_id(session_id_);
  header.set_session_secret(session_secret_);
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

std::string TestClient::last_answered_by() const {
  absl::MutexLock lock(&mu_);
  return last_answered_by_;
}

absl::StatusOr<v1::CreateNodeResponse> TestClient::Send(
    const v1::CreateNodeRequest& request) {
  return Call("Nodes.Create", &lockd::Client::Endpoint::nodes,
              &v1::Nodes::Stub::Create, request);
}

absl::StatusOr<v1::SetNodeResponse> TestClient::Send(
    const v1::SetNodeRequest& request) {
  return Call("Nodes.Set", &lockd::Client::Endpoint::nodes,
              &v1::Nodes::Stub::Set, request);
}

absl::StatusOr<v1::AcquireResponse> TestClient::Send(
    const v1::AcquireRequest& request) {
  return Call("Locks.Acquire", &lockd::Client::Endpoint::locks,
              &v1::Locks::Stub::Acquire, request,
              absl::Milliseconds(request.wait_timeout_ms()));
}

absl::StatusOr<v1::ReleaseResponse> TestClient::Send(
    const v1::ReleaseRequest& request) {
  return Call("Locks.Release", &lockd::Client::Endpoint::locks,
              &v1::Locks::Stub::Release, request);
}

absl::StatusOr<v1::WatchResponse> TestClient::Send(
    const v1::WatchRequest& request) {
  return Call("Nodes.Watch", &lockd::Client::Endpoint::nodes,
              &v1::Nodes::Stub::Watch, request);
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
  return Call("Nodes.Delete", &lockd::Client::Endpoint::nodes,
              &v1::Nodes::Stub::Delete, request)
      .status();
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
  absl::Status status =
      Call("Sessions.CloseSession", &lockd::Client::Endpoint::sessions,
           &v1::Sessions::Stub::CloseSession, request)
          .status();
  if (status.ok()) StopKeepAlive();
  return status;
}

absl::StatusOr<v1::GetNodeResponse> TestClient::Get(const std::string& path) {
  return client_->Get(path);
}

absl::StatusOr<v1::StatNodeResponse> TestClient::Stat(const std::string& path) {
  return client_->Stat(path);
}

absl::StatusOr<v1::ListChildrenResponse> TestClient::List(
    const std::string& path) {
  absl::StatusOr<std::vector<std::string>> names = client_->List(path);
  if (!names.ok()) return names.status();
  v1::ListChildrenResponse response;
  for (std::string& name : *names) response.add_names(std::move(name));
  return response;
}

absl::StatusOr<v1::CheckSequencerResponse> TestClient::CheckSequencer(
    const v1::Sequencer& sequencer) {
  return client_->CheckSequencer(sequencer);
}

void TestClient::OnEvent(const v1::Event& event) {
  // The library's own reports, not events of the cell.
  if (event.type() == v1::Event::SESSION_EXPIRING ||
      event.type() == v1::Event::LEADER_CHANGED) {
    return;
  }
  absl::MutexLock lock(&mu_);
  events_.push_back(event);
}

void TestClient::StopKeepAlive() {
  absl::MutexLock lock(&session_mu_);
  if (session_ == nullptr) return;
  stopped_figures_ = FiguresOf(*session_);
  session_.reset();  // Joins its keep-alive and dispatcher threads.
}

TestClient::KeepAliveFigures TestClient::FiguresOf(
    const lockd::Session& session) {
  KeepAliveFigures figures;
  figures.answers = session.keep_alive_answers();
  // The session's epoch starts at its creation's; report only answers'.
  figures.epoch = figures.answers > 0 ? session.epoch() : 0;
  figures.lost = session.state() == lockd::SessionState::kExpired;
  return figures;
}

TestClient::KeepAliveFigures TestClient::Figures() const {
  absl::MutexLock lock(&session_mu_);
  return session_ == nullptr ? stopped_figures_ : FiguresOf(*session_);
}

bool TestClient::session_lost() const { return Figures().lost; }

uint64_t TestClient::keep_alive_responses() const { return Figures().answers; }

uint64_t TestClient::last_keep_alive_epoch() const { return Figures().epoch; }

std::vector<v1::Event> TestClient::events() const {
  absl::MutexLock lock(&mu_);
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

}  // namespace lockd::integration
