#ifndef LOCKD_SESSIONS_STATE_MACHINE_H_
#define LOCKD_SESSIONS_STATE_MACHINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "protos/lockd.pb.h"
#include "protos/state.pb.h"
#include "sessions/limits.h"

namespace lockd::sessions {

// Identifies one client request for exactly-once execution.
struct RequestKey {
  uint64_t session_id = 0;
  uint64_t request_id = 0;

  bool operator==(const RequestKey& other) const {
    return session_id == other.session_id && request_id == other.request_id;
  }
  template <typename H>
  friend H AbslHashValue(H h, const RequestKey& key) {
    return H::combine(std::move(h), key.session_id, key.request_id);
  }
};

// A client request that got its final answer.
struct Completion {
  // For CreateSession (which has no session yet) session_id is 0 and
  // request_id is the request's nonce.
  RequestKey key;
  statepb::Result result;
};

// What one applied command changed, for the front end to act on.
struct ApplyResult {
  // Final answers: the command's own request (unless it was parked as a
  // waiter, or it is a retry of a request still parked), and any parked
  // acquire/campaign this command completed (granted, wait timeout, session
  // ended). A retry of a completed request repeats the recorded answer.
  std::vector<Completion> completions;
  // Sessions that have new events to deliver.
  std::vector<uint64_t> sessions_with_events;
  // Sessions that ended (closed or expired): their streams end.
  std::vector<uint64_t> ended_sessions;
  // Election names whose leader or value changed.
  std::vector<std::string> changed_elections;
};

// The three rights of Chubby's ACLs (docs/security.md).
enum class Right { kRead, kWrite, kChangeAcl };

// Who makes a request, as the front end authenticated it: the identity of
// the TLS client certificate ("" for none). An admin has every right.
struct Access {
  std::string principal;
  bool admin = false;
};

// ACL nodes live here: the ACL named N is the node /acl/N, whose content
// lists principals separated by spaces, commas or newlines ("*": anyone).
inline constexpr char kAclDir[] = "/acl";

// The replicated state machine of a lockd cell: namespace, sessions, locks,
// waiters, events, elections and the exactly-once table.
//
// Pure and deterministic: no clock, thread, socket or disk. "Now" is the
// maximum time_ms of the commands applied so far. Every replica applies the
// same commands in the same order and reaches byte-identical state
// (Snapshot() bytes are equal).
//
// Rules in brief (docs/sessions.md has them all):
// * Time: each command first advances time to max(now, time_ms), then runs
//   due expirations in deadline order (sessions whose expires_at <= now,
//   waiters whose wait timeout passed, lock-delays that ended and so let
//   waiters in), then executes the command itself. A StartEpoch of a new
//   epoch grants its fresh TTLs (below) before those expirations.
// * Epochs: StartEpoch with an epoch above the current one starts it; a
//   command whose epoch is below the current epoch is refused with ABORTED
//   and nothing is recorded (the client retries with the same number).
// * Sessions: CreateSession sets expires_at = now + ttl. RenewSessions sets
//   last_renewed = now and expires_at = max(expires_at, now + ttl).
//   StartEpoch at time T sets expires_at = max(expires_at,
//   min(T + ttl, last_renewed + 2 * ttl)): a fresh TTL for the new leader,
//   but a client silent since last_renewed expires by last_renewed + 2 * ttl
//   however many leaders follow.
// * Secrets: CreateSession stores the command's secret_digest (a retry by
//   nonce keeps the first); every request of the session must carry the
//   same digest, or it is refused with PERMISSION_DENIED and changes
//   nothing.
// * ACLs: every node has three ACL names (read, write, change-ACL), copied
//   from its parent on creation; "" grants everyone. A command's principal
//   and admin bit decide its rights; a denied request is answered
//   PERMISSION_DENIED (recorded like any answer) and changes nothing else.
// * A session whose expires_at <= now is gone: it is deleted, its requests
//   fail with NOT_FOUND ("session N does not exist (expired or closed)"),
//   its parked requests with FAILED_PRECONDITION, and it is never granted a
//   lock.
class StateMachine {
 public:
  explicit StateMachine(const Limits& limits = Limits());
  ~StateMachine();

  StateMachine(const StateMachine&) = delete;
  StateMachine& operator=(const StateMachine&) = delete;

  // Applies one command chosen in the log. Never fails: a bad request is
  // answered with an error Result and changes nothing.
  ApplyResult Apply(const statepb::Command& command);

  // Deterministic serialization of the whole state.
  std::string Snapshot() const;
  // Replaces the whole state. INVALID_ARGUMENT/DATA_LOSS if `data` is not a
  // snapshot of this format; the state is unchanged then.
  absl::Status Restore(std::string_view data);

  // --- Reads (served by the leader under its lease). Errors as in the API.
  absl::StatusOr<v1::GetNodeResponse> GetNode(std::string_view path) const;
  absl::StatusOr<v1::StatNodeResponse> StatNode(std::string_view path) const;
  absl::StatusOr<v1::ListChildrenResponse> ListChildren(
      std::string_view path) const;
  v1::CheckSequencerResponse CheckSequencer(
      const v1::Sequencer& sequencer) const;
  absl::StatusOr<v1::GetLeaderResponse> GetLeader(std::string_view name) const;

  // OK iff `access` holds `right` on the node at `path` or, if there is
  // none, on its nearest existing ancestor (whose ACL names a node created
  // there inherits). PERMISSION_DENIED naming the right, node, ACL and
  // principal otherwise; INVALID_ARGUMENT for a bad path. The front end
  // checks reads with it.
  absl::Status CheckAccess(std::string_view path, Right right,
                           const Access& access) const;

  // --- Listings for operators (reads as above). Remaining times are
  // measured from now_ms(). An answer holds at most limits.max_list_entries
  // entries of at most limits.max_list_bytes serialized bytes in all;
  // `truncated` is set if entries after the last one listed were left out.
  //
  // Every live session by ascending id: its TTL, lease left, the first
  // limits.max_listed_locks_per_session paths it holds locks on (byte
  // order) and their number, and its number of ephemeral nodes.
  v1::ListSessionsResponse ListSessions() const;
  // The nodes whose lock is held, waited for or in lock-delay, in path byte
  // order, restricted to `prefix` and the nodes below it by whole names
  // ("/a" covers "/a/b", not "/ab"; "" or "/" covers all): holders by
  // session id, waiters in queue order. INVALID_ARGUMENT if `prefix` is not
  // a valid path. Costs time in proportion to the locks in use, not to the
  // namespace.
  absl::StatusOr<v1::ListLocksResponse> ListLocks(
      std::string_view prefix) const;

  // --- For the leader's front end.
  // Cell time: max time_ms applied so far.
  int64_t now_ms() const;
  uint64_t epoch() const;
  // The earliest time at which an expiration is due (session expiry, wait
  // timeout, lock-delay end), if any. The leader proposes a Tick once its
  // clock passes it.
  std::optional<int64_t> NextDeadline() const;
  // NOT_FOUND if the session does not exist (never created, closed or
  // expired).
  absl::StatusOr<int64_t> SessionExpiresAt(uint64_t session_id) const;
  // OK iff the session exists and `secret_digest` is its secret's digest;
  // NOT_FOUND or PERMISSION_DENIED (as WrongSecret) otherwise.
  absl::Status CheckSecret(uint64_t session_id,
                           std::string_view secret_digest) const;
  // Every live session id, ascending.
  std::vector<uint64_t> SessionIds() const;
  size_t session_count() const;
  // Locks in use, for metrics: holders (a shared lock counts each holder),
  // parked waiters, and locks in lock-delay. Costs time in proportion to
  // the sessions.
  struct LockCounts {
    size_t holders = 0;
    size_t waiters = 0;
    size_t in_lock_delay = 0;
  };
  LockCounts lock_counts() const;
  // Events of `session_id` with sequence > after_sequence, oldest first, and
  // how many were dropped because the buffer overflowed.
  std::vector<v1::Event> PendingEvents(uint64_t session_id,
                                       uint64_t after_sequence) const;
  uint64_t EventsLost(uint64_t session_id) const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// The request a command answers: the session and request number of its
// header, {0, nonce} for CreateSession, and {0, 0} for the leader's own
// commands (StartEpoch, RenewSessions, Tick), which answer nobody.
RequestKey RequestKeyOf(const statepb::Command& command);

// The RequestHeader of a client command; nullptr for CreateSession and the
// leader's own commands.
const v1::RequestHeader* HeaderOf(const statepb::Command& command);
v1::RequestHeader* MutableHeaderOf(statepb::Command& command);

// The PERMISSION_DENIED answer to a request that does not present the
// secret of its session.
absl::Status WrongSecret(uint64_t session_id);

// Checks that `path` is an absolute, normalized path within `limits`.
// INVALID_ARGUMENT with a message naming the problem otherwise.
absl::Status ValidatePath(std::string_view path, const Limits& limits);

}  // namespace lockd::sessions

#endif  // LOCKD_SESSIONS_STATE_MACHINE_H_
