#ifndef LOCKD_TESTS_INTEGRATION_TEST_CLIENT_H_
#define LOCKD_TESTS_INTEGRATION_TEST_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/client.h"
#include "lockd/session.h"
#include "protos/lockd.grpc.pb.h"

namespace lockd::integration {

struct ClientOptions {
  // Replica addresses ("127.0.0.1:7001"); the client starts with the first
  // and follows `lockd-leader-address` redirects.
  std::vector<std::string> endpoints;
  int64_t ttl_ms = 10000;
  std::string client_name = "lockd-integration-test";
  // Deadline of one attempt of a call (a blocking acquire gets its wait on
  // top).
  absl::Duration attempt_timeout = absl::Seconds(3);
  // How long a call keeps retrying UNAVAILABLE and ABORTED (and attempts
  // that ran into attempt_timeout) before it gives up (a blocking acquire
  // gets its wait on top).
  absl::Duration retry_timeout = absl::Seconds(30);
  // Fill RequestHeader.first_unanswered_request_id so the cell may forget
  // old answers. Tests that replay old request numbers turn it off.
  bool report_answered = true;
};

// A lockd client for tests and benchmarks: one session, the cell's answers
// as raw protos.
//
// Built on the client library: a lockd::Client finds the leader and
// retries (every call retries UNAVAILABLE and ABORTED, following the leader
// address a follower names or trying the next endpoint, until
// retry_timeout; any other status is returned as is), and a lockd::Session
// opens the session and keeps it alive. Unlike lockd::Session, TestClient
// numbers the session's requests itself (the Session makes no numbered
// call) and sends them through lockd::Client::Invoke, so that tests can
// replay a request number (NewHeader, Send), keep the cell from forgetting
// answers (report_answered), take and release locks by path without
// lockd::Lock, and stop the keep-alive to let the session expire while
// still sending requests for it.
//
// Thread-safe: calls may come from several threads at once.
class TestClient {
 public:
  // Creates the session (retried with the same nonce, at the leader) and
  // starts its keep-alive.
  static absl::StatusOr<std::unique_ptr<TestClient>> Connect(
      ClientOptions options);

  // Stops the keep-alive; does not close the session.
  ~TestClient();
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;

  uint64_t session_id() const { return session_id_; }
  const std::string& session_secret() const { return session_secret_; }
  const ClientOptions& options() const { return options_; }

  // --- State-changing calls with a fresh request number each.
  absl::StatusOr<v1::CreateNodeResponse> Create(const std::string& path,
                                                const std::string& content = "",
                                                bool ephemeral = false,
                                                bool sequential = false);
  absl::StatusOr<v1::SetNodeResponse> Set(
      const std::string& path, const std::string& content,
      uint64_t expected_content_generation = 0);
  absl::Status Delete(const std::string& path,
                      uint64_t expected_content_generation = 0);
  // wait == 0 tries once.
  absl::StatusOr<v1::AcquireResponse> Acquire(
      const std::string& path, v1::LockMode mode,
      absl::Duration wait = absl::ZeroDuration(),
      absl::Duration lock_delay = absl::ZeroDuration());
  absl::Status Release(const std::string& path);
  // Closes the session and, if that succeeded, stops the keep-alive.
  absl::Status CloseSession();

  // --- Reads (the client library's).
  absl::StatusOr<v1::GetNodeResponse> Get(const std::string& path);
  absl::StatusOr<v1::StatNodeResponse> Stat(const std::string& path);
  absl::StatusOr<v1::ListChildrenResponse> List(const std::string& path);
  absl::StatusOr<v1::CheckSequencerResponse> CheckSequencer(
      const v1::Sequencer& sequencer);

  // --- Requests with a header the caller made (NewHeader), sent and
  // retried as given: to replay a request number in exactly-once tests.
  v1::RequestHeader NewHeader();
  absl::StatusOr<v1::CreateNodeResponse> Send(
      const v1::CreateNodeRequest& request);
  absl::StatusOr<v1::SetNodeResponse> Send(const v1::SetNodeRequest& request);
  absl::StatusOr<v1::AcquireResponse> Send(const v1::AcquireRequest& request);
  absl::StatusOr<v1::ReleaseResponse> Send(const v1::ReleaseRequest& request);
  absl::StatusOr<v1::WatchResponse> Send(const v1::WatchRequest& request);

  // --- Keep-alive (the lockd::Session's). After StopKeepAlive() the
  // figures below stay as they were.
  // Stops sending keep-alives (the lease runs out on its own).
  void StopKeepAlive();
  // True once the session is gone for the library: the cell ended the
  // keep-alive stream with NOT_FOUND or FAILED_PRECONDITION, or the session
  // stayed in jeopardy for its whole grace period (lockd::Session, 45 s).
  bool session_lost() const;
  // Keep-alive answers received so far, and the highest epoch one carried
  // (0 before the first answer).
  uint64_t keep_alive_responses() const;
  uint64_t last_keep_alive_epoch() const;
  // The cell's events for the session, in sequence order (without the
  // library's own SESSION_EXPIRING and LEADER_CHANGED).
  std::vector<v1::Event> events() const;
  // Polls events() until one satisfies `match`.
  bool WaitForEvent(const std::function<bool(const v1::Event&)>& match,
                    absl::Duration timeout) const;

  // The address calls currently go to.
  std::string current_address() const { return client_->current_address(); }
  // The address that answered the last successful state-changing call (of
  // any thread).
  std::string last_answered_by() const;
  // Attempts that were retried (any call), for reports.
  uint64_t retries() const { return client_->retries(); }

 private:
  struct KeepAliveFigures {
    uint64_t answers = 0;
    uint64_t epoch = 0;
    bool lost = false;
  };

  TestClient(ClientOptions options, std::unique_ptr<lockd::Client> client);
  // Sends `request` (its header numbered already) with `rpc` of the stub
  // `stub` of the replica calls go to, through client_->Invoke.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(
      const char* method, std::unique_ptr<Stub> lockd::Client::Endpoint::*stub,
      grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&,
                                Response*),
      const Request& request,
      absl::Duration server_wait = absl::ZeroDuration());
  // The request will never be sent again.
  void Answered(uint64_t request_id);
  // Records an event of the session (on the session's dispatcher thread).
  void OnEvent(const v1::Event& event);
  KeepAliveFigures Figures() const;
  static KeepAliveFigures FiguresOf(const lockd::Session& session);

  const ClientOptions options_;
  const std::unique_ptr<lockd::Client> client_;
  uint64_t session_id_ = 0;
  std::string session_secret_;

  mutable absl::Mutex mu_;
  std::string last_answered_by_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::set<uint64_t> unanswered_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Event> events_ ABSL_GUARDED_BY(mu_);

  // Taken before mu_, never while holding it: destroying the session under
  // it waits for OnEvent, which takes mu_.
  mutable absl::Mutex session_mu_;
  // Null after StopKeepAlive(), which keeps its last figures.
  std::unique_ptr<lockd::Session> session_ ABSL_GUARDED_BY(session_mu_);
  KeepAliveFigures stopped_figures_ ABSL_GUARDED_BY(session_mu_);
};

}  // namespace lockd::integration

#endif  // LOCKD_TESTS_INTEGRATION_TEST_CLIENT_H_
