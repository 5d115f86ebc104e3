// lockd::Session is a client's lease on the cell (Chubby's session): the
// locks and ephemeral nodes it holds live as long as it does.
//
// A background thread keeps the session alive on one KeepAlive stream to the
// leader (reconnecting to a new leader when the stream breaks) and keeps a
// local lease that is conservative: a keep-alive answer saying the lease has
// L ms left extends the local lease to
//   (send time of the keep-alive) + L * (1 - lease_margin)
// measured on the local monotonic clock. The default margin of 10% covers the
// cell clock running up to 5% fast (docs/server.md, "Time"), the leader's
// tick clock drifting against ours (~3.5%) and the lag of an answer pushed
// with events while a keep-alive is in flight.
//
// States (Chubby's):
//   kHealthy   the local lease is running.
//   kJeopardy  the local lease ran out without a new answer: the cell may have
//              expired the session. Locks report !IsHeld(). Ends in kHealthy
//              when a leader answers a keep-alive within the grace period, or
//              in kExpired.
//   kExpired   the cell said the session is gone (NOT_FOUND or
//              FAILED_PRECONDITION), or the grace period passed in jeopardy.
//              Final: locks and ephemeral nodes are gone (or must be assumed
//              gone); create a new session.
//   kClosed    Close() succeeded. Final.
//
// Callbacks (SessionOptions::on_state_change, on_event) run on a dispatcher
// thread of the session, one at a time and in order; they never block the
// keep-alive. A callback must not destroy the Session.
//
// State-changing calls number their requests 1, 2, 3, ... and a retry of a
// call reuses its number, so the cell executes it once however often it is
// retried across failovers (RequestHeader in protos/lockd.proto).
//
// Thread-safety: a Session is thread-safe. It must not outlive its Client.

#ifndef LOCKD_CLIENT_INCLUDE_LOCKD_SESSION_H_
#define LOCKD_CLIENT_INCLUDE_LOCKD_SESSION_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/client.h"
#include "protos/lockd.grpc.pb.h"

namespace lockd {

enum class SessionState { kHealthy, kJeopardy, kExpired, kClosed };

// "healthy", "jeopardy", "expired", "closed".
const char* SessionStateName(SessionState state);

struct SessionOptions {
  // Lease length asked for; the cell accepts [1 s, 1 h].
  absl::Duration ttl = absl::Seconds(10);
  // Shown to operators.
  std::string client_name = "lockd-client";
  // How long the session may stay in jeopardy before the library gives it up.
  absl::Duration grace_period = absl::Seconds(45);
  // Fraction of every lease the cell grants that the local lease leaves off
  // (see above). Must be in [0.06, 0.9].
  double lease_margin = 0.10;
  // Called on every state change with the new state. Also reports
  // SESSION_EXPIRING (on entering jeopardy) and LEADER_CHANGED (a keep-alive
  // answer carried a higher epoch) through on_event.
  std::function<void(SessionState)> on_state_change;
  // Called for every event of the session in sequence order: watches, lock
  // events from the cell, and the three the library reports (see above and
  // EVENTS_LOST). No event is dropped in silence: where the cell's buffer
  // or this library's queue dropped events, an EVENTS_LOST event with
  // their number (lost_count) comes in their place.
  std::function<void(const v1::Event&)> on_event;
  // Events queued for on_event at most; beyond it the oldest queued event
  // is dropped (and reported, above), so that a stuck callback cannot make
  // the session grow without end. State changes are never dropped.
  size_t max_queued_events = 10000;
};

class Session {
 public:
  // Opens a session on `client` (retried with the same random nonce, so a
  // retry never opens a second one) and starts the keep-alive.
  // REQUIRES: client != nullptr and outlives the Session.
  static absl::StatusOr<std::unique_ptr<Session>> Create(
      Client* client, SessionOptions options = SessionOptions());

  // Stops the keep-alive and the dispatcher (after the callbacks already
  // queued ran). Does not close the session: call Close() to release its
  // locks at once; otherwise they go when its lease runs out.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  uint64_t id() const { return id_; }
  // The session's secret (CreateSessionResponse.session_secret), for
  // requests sent with Client::Invoke: RequestHeader.session_secret and
  // KeepAliveRequest.session_secret must carry it. Treat it like a password.
  const std::string& secret() const { return secret_; }
  Client* client() const { return client_; }
  const SessionOptions& options() const { return options_; }

  SessionState state() const;
  // Waits until state() == `state` or `timeout` passes; returns whether it
  // was reached.
  bool WaitForState(SessionState state, absl::Duration timeout) const;
  // The local lease's remaining time (zero once it ran out).
  absl::Duration LocalLeaseRemaining() const;
  // Highest epoch (leadership) a keep-alive answer carried.
  uint64_t epoch() const;

  // Ends the session: the cell releases its locks (without lock-delay) and
  // deletes its ephemeral nodes. The state becomes kClosed. OK at once if
  // the session already expired or was closed.
  absl::Status Close();

  // --- Node operations (exactly-once; see protos/lockd.proto for codes).
  // Creates `path` (the parent must exist). Returns the created path, which
  // differs from `path` for sequential nodes.
  absl::StatusOr<v1::CreateNodeResponse> CreateNode(
      const std::string& path, const std::string& content = "",
      bool ephemeral = false, bool sequential = false);
  // Replaces the content; with expected_content_generation != 0 only if the
  // node's content generation equals it (else FAILED_PRECONDITION).
  absl::StatusOr<v1::NodeMeta> SetNode(
      const std::string& path, const std::string& content,
      uint64_t expected_content_generation = 0);
  // Deletes `path`, with compare-and-set as in SetNode.
  absl::Status DeleteNode(const std::string& path,
                          uint64_t expected_content_generation = 0);
  // The three ACL names of a node (docs/security.md): each "" (everyone)
  // or the name of an ACL node /acl/NAME listing principals.
  struct Acl {
    std::string read;
    std::string write;
    std::string change;
  };
  // Replaces the ACL names of `path` (needs the change-ACL right); with
  // expected_acl_generation != 0 only if the node's ACL generation equals
  // it. The current names are in StatNode's meta.
  absl::StatusOr<v1::NodeMeta> SetAcl(const std::string& path, const Acl& acl,
                                      uint64_t expected_acl_generation = 0);
  // Registers (or with `remove`, drops) interest in `path`: its changes
  // arrive through on_event.
  absl::Status Watch(const std::string& path, bool remove = false);

  // Reads, forwarded to the client.
  absl::StatusOr<v1::GetNodeResponse> GetNode(const std::string& path) {
    return client_->Get(path);
  }
  absl::StatusOr<v1::StatNodeResponse> StatNode(const std::string& path) {
    return client_->Stat(path);
  }
  absl::StatusOr<std::vector<std::string>> ListChildren(
      const std::string& path) {
    return client_->List(path);
  }

  // Keep-alive answers received so far (for tests).
  uint64_t keep_alive_answers() const;
  // Events dropped so far: by the cell because the session's buffer was
  // full (the largest KeepAliveResponse.events_lost seen) plus by this
  // library's queue. Each drop is also reported in order through on_event
  // as EVENTS_LOST.
  uint64_t events_lost() const;

 private:
  friend class Election;
  friend class Lock;
  using Clock = std::chrono::steady_clock;

  Session(Client* client, SessionOptions options);

  // A header with the next request number. Pair with Answered().
  v1::RequestHeader NewHeader();
  // The request will never be retried again.
  void Answered(uint64_t request_id);
  // LOCK_LOST events seen for `path` so far (Lock::IsHeld compares).
  uint64_t locks_lost(const std::string& path) const;
  // Whether a lock on `path`, granted when locks_lost(path) was
  // `lost_at_grant`, still stands as far as the session knows: no LOCK_LOST
  // since, and the session healthy with its local lease running.
  bool StillHolds(const std::string& path, uint64_t lost_at_grant) const;

  void KeepAliveLoop();
  // Sleeps `duration` (between keep-alive attempts), moving to jeopardy or
  // expiry on time meanwhile. False if the loop should end (stopped, or the
  // session expired).
  bool SleepWhileLeaseChecked(absl::Duration duration);
  // Handles one KeepAlive answer, `base` the send time to measure from.
  void OnAnswer(const v1::KeepAliveResponse& response, Clock::time_point base)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves to jeopardy or expiry when their time has come.
  void CheckLeaseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetStateLocked(SessionState state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues a state change for the dispatcher (never dropped).
  void PostLocked(std::function<void()> callback)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues an event for on_event; beyond max_queued_events the oldest queued
  // event makes way and is counted for an EVENTS_LOST report.
  void PostEventLocked(v1::Event event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PostEventLocked(v1::Event::Type type) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The absl::Time at which steady time `t` arrives (for condvar waits).
  static absl::Time ToDeadline(Clock::time_point t);
  void DispatchLoop();
  void StopThreads();

  // An EVENTS_LOST event for `count` events.
  static v1::Event LostEvent(uint64_t count);

  Client* const client_;
  const SessionOptions options_;
  uint64_t id_ = 0;
  // From CreateSession; carried by every request and keep-alive. Set once
  // before any other thread sees the session.
  std::string secret_;

  mutable absl::Mutex mu_;
  mutable absl::CondVar cv_;
  SessionState state_ ABSL_GUARDED_BY(mu_) = SessionState::kHealthy;
  // End of the local lease, and of the grace period once in jeopardy.
  Clock::time_point lease_end_ ABSL_GUARDED_BY(mu_);
  Clock::time_point grace_end_ ABSL_GUARDED_BY(mu_);
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t answers_ ABSL_GUARDED_BY(mu_) = 0;
  // Dropped by the cell (largest events_lost heard) and by the queue.
  uint64_t cell_events_lost_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t queue_events_lost_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_event_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> locks_lost_ ABSL_GUARDED_BY(mu_);
  uint64_t next_request_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::set<uint64_t> unanswered_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Close() is running: the cell ending the stream with NOT_FOUND means
  // closed, not expired.
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  // For the dispatcher, in order. An event item may be dropped; then
  // lost_before_front_ counts it until the dispatcher reports it.
  struct Callback {
    std::function<void()> run;
    bool is_event = false;
  };
  std::deque<Callback> callbacks_ ABSL_GUARDED_BY(mu_);
  size_t queued_events_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lost_before_front_ ABSL_GUARDED_BY(mu_) = 0;
  bool dispatcher_stop_ ABSL_GUARDED_BY(mu_) = false;

  std::thread keep_alive_thread_;
  std::thread dispatcher_thread_;
};

}  // namespace lockd

#endif  // LOCKD_CLIENT_INCLUDE_LOCKD_SESSION_H_
