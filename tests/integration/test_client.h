#ifndef LOCKD_TESTS_INTEGRATION_TEST_CLIENT_H_
#define LOCKD_TESTS_INTEGRATION_TEST_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
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
  // that ran into attempt_timeout) before it gives up.
  absl::Duration retry_timeout = absl::Seconds(30);
  // Fill RequestHeader.first_unanswered_request_id so the cell may forget
  // old answers. Tests that replay old request numbers turn it off.
  bool report_answered = true;
  // Run the keep-alive stream (a background thread).
  bool keep_alive = true;
};

// A minimal lockd client for tests and benchmarks: one session, its
// keep-alive stream, numbered requests, leader following and retries.
//
// Every state-changing call takes the next request number and retries
// UNAVAILABLE and ABORTED with the same number (following the leader
// address a follower names, otherwise trying the next endpoint) until
// retry_timeout; any other status is returned as is. Reads are retried the
// same way.
//
// Thread-safe: calls may come from several threads at once.
class TestClient {
 public:
  // Finds the leader, creates a session (retried with the same nonce) and
  // starts the keep-alive stream.
  static absl::StatusOr<std::unique_ptr<TestClient>> Connect(
      ClientOptions options);

  // Stops the keep-alive stream; does not close the session.
  ~TestClient();
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;

  uint64_t session_id() const { return session_id_; }
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
  absl::Status CloseSession();

  // --- Reads.
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

  // --- Keep-alive.
  // Stops sending keep-alives (the lease runs out on its own).
  void StopKeepAlive();
  // True once the cell ended the keep-alive stream with NOT_FOUND or
  // FAILED_PRECONDITION (session gone).
  bool session_lost() const;
  // Keep-alive responses received so far, and the epoch of the last one.
  uint64_t keep_alive_responses() const;
  uint64_t last_keep_alive_epoch() const;
  // Events received on the keep-alive stream, in sequence order.
  std::vector<v1::Event> events() const;
  // Polls events() until one satisfies `match`.
  bool WaitForEvent(const std::function<bool(const v1::Event&)>& match,
                    absl::Duration timeout) const;

  // The address calls currently go to.
  std::string current_address() const;
  // The address that answered the last successful call (of any thread).
  std::string last_answered_by() const;
  // Attempts that were retried (any call), for reports.
  uint64_t retries() const { return retries_.load(); }

 private:
  struct Endpoint {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Sessions::Stub> sessions;
    std::unique_ptr<v1::Nodes::Stub> nodes;
    std::unique_ptr<v1::Locks::Stub> locks;
  };
  using Attempt = std::function<grpc::Status(Endpoint&, grpc::ClientContext*)>;

  explicit TestClient(ClientOptions options);
  std::shared_ptr<Endpoint> endpoint(const std::string& address);
  // Drops `broken` if a call on it failed because it cannot connect (see
  // ChannelIsBroken), so the next call connects afresh.
  void DropIfBroken(const std::string& address,
                    const std::shared_ptr<Endpoint>& broken,
                    const grpc::Status& status);
  // Runs `attempt` until it succeeds or fails with a status that is not
  // retried, or retry_timeout passes. `server_wait` extends each attempt's
  // deadline (for blocking acquires).
  absl::Status Invoke(const char* method, const Attempt& attempt,
                      absl::Duration server_wait = absl::ZeroDuration());
  // After a retryable failure at `address`: where to go next.
  void Redirect(const std::string& address, const grpc::ClientContext& context,
                const grpc::Status& status, bool* sleep);
  void Answered(uint64_t request_id);
  void KeepAliveLoop();

  const ClientOptions options_;
  uint64_t session_id_ = 0;
  std::atomic<uint64_t> retries_{0};

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Endpoint>> endpoints_
      ABSL_GUARDED_BY(mu_);
  std::string address_ ABSL_GUARDED_BY(mu_);
  std::string last_answered_by_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::set<uint64_t> unanswered_ ABSL_GUARDED_BY(mu_);

  mutable absl::Mutex keep_alive_mu_;
  // Signalled on StopKeepAlive() and when a stream's reader finishes.
  absl::CondVar keep_alive_cv_;
  bool stop_keep_alive_ ABSL_GUARDED_BY(keep_alive_mu_) = false;
  bool session_lost_ ABSL_GUARDED_BY(keep_alive_mu_) = false;
  uint64_t keep_alive_responses_ ABSL_GUARDED_BY(keep_alive_mu_) = 0;
  uint64_t last_epoch_ ABSL_GUARDED_BY(keep_alive_mu_) = 0;
  std::vector<v1::Event> events_ ABSL_GUARDED_BY(keep_alive_mu_);
  std::thread keep_alive_thread_;
};

// A gRPC status as an absl::Status (same code and message).
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace lockd::integration

#endif  // LOCKD_TESTS_INTEGRATION_TEST_CLIENT_H_
