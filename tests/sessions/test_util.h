// Helpers for driving a StateMachine in tests: command builders and a
// client-like wrapper that numbers requests per session.
#ifndef LOCKD_TESTS_SESSIONS_TEST_UTIL_H_
#define LOCKD_TESTS_SESSIONS_TEST_UTIL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "protos/state.pb.h"
#include "sessions/state_machine.h"

namespace lockd::sessions {

// Result codes as they appear in statepb::Result.code.
constexpr int kOk = 0;
constexpr int kInvalidArgument =
    static_cast<int>(absl::StatusCode::kInvalidArgument);
constexpr int kNotFound = static_cast<int>(absl::StatusCode::kNotFound);
constexpr int kAlreadyExists =
    static_cast<int>(absl::StatusCode::kAlreadyExists);
constexpr int kFailedPrecondition =
    static_cast<int>(absl::StatusCode::kFailedPrecondition);
constexpr int kResourceExhausted =
    static_cast<int>(absl::StatusCode::kResourceExhausted);
constexpr int kDeadlineExceeded =
    static_cast<int>(absl::StatusCode::kDeadlineExceeded);
constexpr int kAborted = static_cast<int>(absl::StatusCode::kAborted);
constexpr int kPermissionDenied =
    static_cast<int>(absl::StatusCode::kPermissionDenied);

// Command builders (the request header is filled by Cell::Run).
statepb::Command CreateNodeCommand(const std::string& path,
                                   const std::string& content = "",
                                   bool ephemeral = false,
                                   bool sequential = false);
statepb::Command SetNodeCommand(const std::string& path,
                                const std::string& content,
                                uint64_t expected_generation = 0);
statepb::Command DeleteNodeCommand(const std::string& path,
                                   uint64_t expected_generation = 0);
statepb::Command WatchCommand(const std::string& path, bool remove = false);
statepb::Command AcquireCommand(const std::string& path, v1::LockMode mode,
                                int64_t wait_timeout_ms = 0,
                                int64_t lock_delay_ms = 0);
statepb::Command ReleaseCommand(const std::string& path);
statepb::Command CampaignCommand(const std::string& name,
                                 const std::string& value,
                                 int64_t wait_timeout_ms = 0,
                                 int64_t lock_delay_ms = 0);
statepb::Command ProclaimCommand(const std::string& name,
                                 const std::string& value);
statepb::Command ResignCommand(const std::string& name);
statepb::Command CloseSessionCommand();
statepb::Command SetAclCommand(const std::string& path,
                               const std::string& read_acl,
                               const std::string& write_acl,
                               const std::string& change_acl,
                               uint64_t expected_acl_generation = 0);

// The request header of a client command (CHECK-fails for others).
v1::RequestHeader* MutableHeader(statepb::Command& command);

// A state machine with a clock and per-session request numbering.
class Cell {
 public:
  explicit Cell(const Limits& limits = Limits());

  StateMachine& sm() { return sm_; }
  int64_t now() const { return now_; }
  uint64_t epoch() const { return epoch_; }
  // The secret digest of a session created here ("" if none).
  const std::string& digest(uint64_t session_id) {
    return digests_[session_id];
  }

  // Requests sent from now on come from `access` (default: an anonymous
  // principal without admin rights).
  void set_access(Access access) { access_ = std::move(access); }

  // Applies `command` stamped with the current epoch and time.
  ApplyResult Apply(statepb::Command command);
  // Moves the clock to now + ms and applies a Tick.
  ApplyResult Advance(int64_t ms);
  // Applies StartEpoch with epoch+1 (becoming the current epoch).
  ApplyResult NewEpoch();
  // Applies RenewSessions for one session.
  ApplyResult Renew(uint64_t session_id, uint64_t acked_event_sequence = 0);

  // Creates a session; CHECK-fails unless OK.
  uint64_t NewSession(int64_t ttl_ms = 10000, uint64_t nonce = 0);
  // Applies CreateSession, with a new secret digest, and returns its
  // completion's result.
  statepb::Result CreateSession(int64_t ttl_ms, uint64_t nonce,
                                const std::string& client_name = "test");

  // Sends `command` as the session's next request; returns the request id
  // through `request_id` if not null.
  std::optional<statepb::Result> Run(uint64_t session_id,
                                     statepb::Command command,
                                     uint64_t* request_id = nullptr,
                                     ApplyResult* apply_result = nullptr);
  // Sends `command` with an explicit request id and first_unanswered,
  // presenting the session's secret digest unless `command` names one.
  std::optional<statepb::Result> RunAs(uint64_t session_id, uint64_t request_id,
                                       statepb::Command command,
                                       uint64_t first_unanswered = 0,
                                       ApplyResult* apply_result = nullptr);

 private:
  StateMachine sm_;
  int64_t now_ = 1'000'000;
  uint64_t epoch_ = 1;
  std::map<uint64_t, uint64_t> next_request_;
  // The secret digest of each session created here.
  std::map<uint64_t, std::string> digests_;
  Access access_;
  uint64_t secrets_drawn_ = 0;
};

// The types of `events`, in order.
std::vector<v1::Event::Type> EventTypes(const std::vector<v1::Event>& events);

// The completion for `key` in `result`, if any.
std::optional<statepb::Result> FindCompletion(const ApplyResult& result,
                                              RequestKey key);

}  // namespace lockd::sessions

#endif  // LOCKD_TESTS_SESSIONS_TEST_UTIL_H_
