// Private to sessions/: the state machine's in-memory records, the
// declaration of StateMachine::Impl and the helpers its files share. The
// Impl is defined across one file per concern:
//   state_machine.cc    Apply (time, epochs, dispatch) and the public class
//   session_lifetime.cc sessions and time: create, renew, close, expiry
//   exactly_once.cc     admission of requests and their recorded answers
//   nodes.cc            the namespace
//   locks.cc            locks, waiters, lock-delay and sequencers
//   elections.cc        elections on top of locks
//   acls.cc             rights: ACL names on nodes and the ACL nodes
//   events.cc           per-session event buffers and watches
//   reads.cc            reads and operator listings
//   snapshot.cc         the snapshot format
//
// Thread-safety: none; StateMachine's owner serializes all calls.
#ifndef LOCKD_SESSIONS_STATE_MACHINE_IMPL_H_
#define LOCKD_SESSIONS_STATE_MACHINE_IMPL_H_

#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "protos/lockd.pb.h"
#include "protos/state.pb.h"
#include "sessions/limits.h"
#include "sessions/state_machine.h"

namespace lockd::sessions {

using v1::LockMode;

// Elections live under this node: election N is the lock on /election/N.
inline constexpr absl::string_view kElectionDir = "/election";

// The payload of an absl::Status that names a time (Result.error_time_ms).
inline constexpr char kErrorTimePayload[] = "lockd-error-time-ms";

inline statepb::Result ErrorResult(const absl::Status& status) {
  statepb::Result result;
  result.set_code(static_cast<int32_t>(status.code()));
  result.set_message(std::string(status.message()));
  int64_t time_ms = 0;
  if (absl::optional<absl::Cord> time = status.GetPayload(kErrorTimePayload);
      time.has_value() && absl::SimpleAtoi(std::string(*time), &time_ms)) {
    result.set_error_time_ms(time_ms);
  }
  return result;
}

// `at_ms` (cell time) as people read it: RFC 3339 in UTC and how far from
// `now_ms`, e.g. "2026-12-03T15:05:07.123Z, 1.5s from now".
inline std::string CellTimeText(int64_t at_ms, int64_t now_ms) {
  const std::string when = absl::FormatTime(
      "%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(at_ms), absl::UTCTimeZone());
  if (at_ms == now_ms) return absl::StrCat(when, ", now");
  const absl::Duration apart = absl::Milliseconds(std::abs(at_ms - now_ms));
  return absl::StrCat(when, ", ", absl::FormatDuration(apart),
                      at_ms > now_ms ? " from now" : " ago");
}

// `status` carrying `at_ms` for programs (see kErrorTimePayload).
inline absl::Status WithErrorTime(absl::Status status, int64_t at_ms) {
  status.SetPayload(kErrorTimePayload, absl::Cord(absl::StrCat(at_ms)));
  return status;
}

inline absl::string_view ModeName(LockMode mode) {
  return mode == v1::EXCLUSIVE ? "EXCLUSIVE" : "SHARED";
}

inline v1::Event MakeEvent(v1::Event::Type type, absl::string_view path) {
  v1::Event event;
  event.set_type(type);
  event.set_path(std::string(path));
  return event;
}

// The election name if `path` is /election/<name>.
inline std::optional<absl::string_view> ElectionName(absl::string_view path) {
  if (path.size() <= kElectionDir.size() + 1 ||
      path.substr(0, kElectionDir.size()) != kElectionDir ||
      path[kElectionDir.size()] != '/') {
    return std::nullopt;
  }
  absl::string_view name = path.substr(kElectionDir.size() + 1);
  if (name.find('/') != absl::string_view::npos) return std::nullopt;
  return name;
}

// INVALID_ARGUMENT if `path` lies below kElectionDir: election nodes change
// only through Campaign, Proclaim and Resign (`what` names the request).
inline absl::Status CheckNotElection(absl::string_view path,
                                     absl::string_view what) {
  if (path.size() > kElectionDir.size() + 1 &&
      path.substr(0, kElectionDir.size()) == kElectionDir &&
      path[kElectionDir.size()] == '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", path, "\" is reserved for elections: ", what,
        " cannot change it; use the Elections API (Campaign, Proclaim, "
        "Resign; lockctl elect)"));
  }
  return absl::OkStatus();
}

// Waiter::deadline_ms of a wait without a deadline (wait_timeout_ms -1).
inline constexpr int64_t kNoDeadline = 0;

// The root node's instance number; created nodes count up from 2.
inline constexpr uint64_t kRootInstance = 1;

// One grant of a node's lock.
struct Holder {
  v1::LockMode mode = v1::LOCK_MODE_UNSPECIFIED;
  // Applied if the holder's session expires while holding (exclusive only).
  int64_t lock_delay_ms = 0;
};

// A parked Acquire or Campaign.
struct Waiter {
  uint64_t session_id = 0;
  uint64_t request_id = 0;
  v1::LockMode mode = v1::LOCK_MODE_UNSPECIFIED;
  // Cell time at which the wait times out; kNoDeadline for none.
  int64_t deadline_ms = 0;
  int64_t lock_delay_ms = 0;
  bool campaign = false;
  std::string campaign_value;
};

struct Node {
  std::string content;
  // num_children is filled in by MetaOf(); `children` is the truth.
  v1::NodeMeta meta;
  uint64_t next_sequence = 0;
  // Names of the children, in byte order.
  std::set<std::string> children;
  // By session id. Either one EXCLUSIVE holder or any number of SHARED ones.
  std::map<uint64_t, Holder> holders;
  // FIFO, head first.
  std::deque<Waiter> waiters;
  // The lock is ungrantable until this cell time; 0 if no lock-delay.
  int64_t lock_delay_until_ms = 0;
  std::set<uint64_t> watchers;
};

struct Session {
  uint64_t id = 0;
  int64_t ttl_ms = 0;
  std::string client_name;
  uint64_t nonce = 0;
  // SHA-256 of the session secret; requests must present the same digest.
  std::string secret_digest;
  int64_t expires_at_ms = 0;
  int64_t last_renewed_ms = 0;
  // Exactly-once table: results of requests below forgotten_below are gone.
  uint64_t forgotten_below = 0;
  std::map<uint64_t, statepb::Result> results;
  // Parked requests: request id -> path of the lock waited for.
  std::map<uint64_t, std::string> parked;
  // Unacknowledged events, oldest first.
  std::deque<v1::Event> events;
  uint64_t next_event_sequence = 1;
  uint64_t events_lost = 0;
  // Paths, derived from the nodes.
  std::set<std::string> held_locks;
  std::set<std::string> ephemeral_nodes;
  std::set<std::string> watches;
};

// The state behind StateMachine: replicated fields, indexes derived from
// them (rebuilt on restore, never serialized), and per-Apply scratch.
// Methods that take a Session& or Node& require it to be live in the maps.
class StateMachine::Impl {
 public:
  explicit Impl(const Limits& limits);

  ApplyResult Apply(const statepb::Command& command);

  statepb::StateSnapshot ToSnapshot() const;
  // DATA_LOSS if `snapshot` is inconsistent, INVALID_ARGUMENT if it is of
  // another format.
  static absl::StatusOr<std::unique_ptr<Impl>> FromSnapshot(
      const Limits& limits, const statepb::StateSnapshot& snapshot);

  absl::StatusOr<v1::GetNodeResponse> GetNode(absl::string_view path) const;
  absl::StatusOr<v1::StatNodeResponse> StatNode(absl::string_view path) const;
  absl::StatusOr<v1::ListChildrenResponse> ListChildren(
      absl::string_view path) const;
  v1::CheckSequencerResponse CheckSequencer(
      const v1::Sequencer& sequencer) const;
  absl::StatusOr<v1::GetLeaderResponse> GetLeader(absl::string_view name) const;
  absl::Status CheckAccess(absl::string_view path, Right right,
                           const Access& access) const;
  v1::ListSessionsResponse ListSessions() const;
  absl::StatusOr<v1::ListLocksResponse> ListLocks(
      absl::string_view prefix) const;

  const Limits& limits() const { return limits_; }
  int64_t now_ms() const { return now_ms_; }
  uint64_t epoch() const { return epoch_; }
  std::optional<int64_t> NextDeadline() const;
  absl::StatusOr<int64_t> SessionExpiresAt(uint64_t session_id) const;
  absl::Status CheckSecret(uint64_t session_id,
                           absl::string_view secret_digest) const;
  std::vector<uint64_t> SessionIds() const;
  size_t session_count() const { return sessions_.size(); }
  StateMachine::LockCounts lock_counts() const {
    StateMachine::LockCounts counts;
    for (const auto& [id, session] : sessions_) {
      counts.holders += session.held_locks.size();
      counts.waiters += session.parked.size();
    }
    counts.in_lock_delay = lock_delay_ends_.size();
    return counts;
  }
  std::vector<v1::Event> PendingEvents(uint64_t session_id,
                                       uint64_t after_sequence) const;
  uint64_t EventsLost(uint64_t session_id) const;

 private:
  using NodeMap = std::map<std::string, Node, std::less<>>;
  // Outcome of a lock request that passed validation.
  enum class LockPlan { kAlreadyHeld, kGrant, kPark };

  // --- Commands.
  void Execute(const statepb::Command& command);
  void RefuseStale(const statepb::Command& command);
  void StartEpoch(uint64_t epoch);
  void RenewSessions(const statepb::RenewSessions& renew);
  statepb::Result CreateSession(const v1::CreateSessionRequest& request,
                                absl::string_view secret_digest);
  void CloseSession(const v1::CloseSessionRequest& request,
                    absl::string_view secret_digest);
  absl::StatusOr<v1::CreateNodeResponse> CreateNode(
      Session& session, const v1::CreateNodeRequest& request);
  absl::StatusOr<v1::SetNodeResponse> SetNode(
      const v1::SetNodeRequest& request);
  absl::StatusOr<v1::DeleteNodeResponse> DeleteNode(
      const v1::DeleteNodeRequest& request);
  absl::StatusOr<v1::WatchResponse> Watch(Session& session,
                                          const v1::WatchRequest& request);
  absl::StatusOr<std::optional<v1::AcquireResponse>> Acquire(
      Session& session, uint64_t request_id, const v1::AcquireRequest& request);
  absl::StatusOr<v1::ReleaseResponse> Release(
      Session& session, const v1::ReleaseRequest& request);
  absl::StatusOr<std::optional<v1::CampaignResponse>> Campaign(
      Session& session, uint64_t request_id,
      const v1::CampaignRequest& request);
  absl::StatusOr<v1::ProclaimResponse> Proclaim(
      Session& session, const v1::ProclaimRequest& request);
  absl::StatusOr<v1::ResignResponse> Resign(Session& session,
                                            const v1::ResignRequest& request);
  absl::StatusOr<v1::SetAclResponse> SetAcl(const v1::SetAclRequest& request);

  // --- Exactly-once.
  // Runs `execute` for the request under `header` unless the exactly-once
  // rules answer it first. `execute` returns the result to record, or
  // nothing if the request parked.
  void ApplyRequest(
      const v1::RequestHeader& header, absl::string_view secret_digest,
      const std::function<std::optional<statepb::Result>(Session&)>& execute);
  // Returns the session if the request under `header` presents the
  // session's secret digest and is new and may run; otherwise answers it
  // (error or recorded result) or leaves it parked and returns nullptr. A
  // wrong secret changes nothing.
  Session* Admit(const v1::RequestHeader& header,
                 absl::string_view secret_digest);
  // Records the result of a request of a live session and completes it.
  void Record(Session& session, uint64_t request_id, statepb::Result result);
  void Complete(RequestKey key, statepb::Result result);

  // --- Time.
  void SetExpiry(Session& session, int64_t expires_at_ms);
  void RunDueExpirations();
  void TimeOutWaiter();
  void EndLockDelay();
  // Ends a session: fails its parked requests, releases its locks (with
  // lock-delay if `expired`), drops its watches and deletes its ephemeral
  // nodes.
  void EndSession(uint64_t session_id, bool expired);

  // --- Nodes.
  const Node* FindNode(absl::string_view path) const;
  Node* FindNode(absl::string_view path);
  Node& NodeAt(absl::string_view path);
  v1::NodeMeta MetaOf(const Node& node) const;
  absl::Status CheckContentSize(absl::string_view content) const;
  // OK iff a node at the valid path `path` may be created now, with
  // `extra_nodes` more nodes about to be created first.
  absl::Status CheckCreate(absl::string_view path, const Session* owner,
                           size_t extra_nodes) const;
  // Creates a node that passed CheckCreate (owner 0: permanent).
  Node& AddNode(const std::string& path, std::string content, uint64_t owner);
  void SetContent(const std::string& path, Node& node, std::string content);
  // Deletes a node with no children, holders or waiters.
  void EraseNode(std::string path);
  // Deletes an ephemeral node whose owner ended, whatever its lock state.
  void ForceDeleteNode(std::string path);

  // --- Locks.
  static bool IsFree(const Node& node, v1::LockMode mode);
  absl::StatusOr<LockPlan> PlanLock(const Session& session,
                                    absl::string_view path, const Node* node,
                                    v1::LockMode mode,
                                    int64_t wait_timeout_ms) const;
  absl::Status CheckWaitTimeout(int64_t wait_timeout_ms) const;
  // The deadline of a wait of `wait_timeout_ms` starting now (kNoDeadline
  // for -1).
  int64_t WaitDeadline(int64_t wait_timeout_ms) const {
    return wait_timeout_ms < 0 ? kNoDeadline : now_ms_ + wait_timeout_ms;
  }
  absl::Status CheckLockDelay(int64_t lock_delay_ms) const;
  v1::Sequencer MakeSequencer(absl::string_view path, const Node& node,
                              uint64_t session_id, v1::LockMode mode) const;
  v1::Sequencer Grant(const std::string& path, Node& node, Session& session,
                      v1::LockMode mode, int64_t lock_delay_ms);
  void Park(const std::string& path, Node& node, Waiter waiter);
  // Removes a parked request from its lock's queue and the indexes.
  void RemoveWaiter(Node& node, uint64_t session_id, uint64_t request_id);
  void ReleaseLock(std::string path, Session& session, bool expired);
  // Grants waiters from the head of the queue while the lock allows.
  void GrantWaiters(const std::string& path);

  // --- Events and elections.
  void Emit(uint64_t session_id, v1::Event event);
  void EmitToWatchers(const Node& node, v1::Event::Type type,
                      absl::string_view path);
  std::optional<v1::LeaderInfo> LeaderOf(absl::string_view name) const;
  v1::CampaignResponse CampaignResponseFor(
      absl::string_view name, const v1::Sequencer& sequencer) const;
  // Remembers the leader of the election at `path` (if it is one) as it was
  // before this Apply changed it.
  void NoteElection(absl::string_view path);

  const Limits limits_;

  // Replicated state.
  int64_t now_ms_ = 0;
  uint64_t epoch_ = 0;
  uint64_t next_instance_ = kRootInstance + 1;
  uint64_t next_session_id_ = 1;
  NodeMap nodes_;
  std::map<uint64_t, Session> sessions_;

  // Indexes derived from the replicated state.
  std::map<uint64_t, uint64_t> session_by_nonce_;
  // (expires_at_ms, session id).
  std::set<std::pair<int64_t, uint64_t>> session_expiries_;
  // (deadline_ms, session id, request id).
  std::set<std::tuple<int64_t, uint64_t, uint64_t>> wait_deadlines_;
  // (lock_delay_until_ms, path).
  std::set<std::pair<int64_t, std::string>> lock_delay_ends_;

  // Scratch of the Apply in progress.
  ApplyResult out_;
  // Who sent the command being applied.
  Access access_;
  std::set<uint64_t> sessions_with_events_;
  std::map<std::string, std::optional<v1::LeaderInfo>, std::less<>>
      elections_before_;
};

}  // namespace lockd::sessions

#endif  // LOCKD_SESSIONS_STATE_MACHINE_IMPL_H_
