// lockd::Election is a won leader election (RAII): the session holds the
// election `name` (the exclusive lock on /election/NAME, whose content is the
// leader's value) until Resign(), the destructor, or the session's loss.
// lockd::ElectionObserver follows who leads an election, change by change.
//
// Like a Lock, leadership is only as good as the session: IsLeader() turns
// false as soon as the session leaves the healthy state, the cell reported
// the lock lost, the cell refused a Proclaim because this session no longer
// leads, or after Resign(). A leader should fence the work it does with
// sequencer() (Client::CheckSequencer) or leader().lock_generation(), which
// grows with every new leader.
//
// Example:
//   absl::StatusOr<std::unique_ptr<lockd::Election>> won =
//       lockd::Election::Campaign(session.get(), "indexer", "host-a:8080",
//                                 absl::Minutes(10));
//   if (!won.ok()) ...  // DEADLINE_EXCEEDED: not elected within 10 min.
//   while ((*won)->IsLeader()) Serve((*won)->sequencer());
//
//   absl::StatusOr<std::unique_ptr<lockd::ElectionObserver>> observer =
//       lockd::ElectionObserver::Start(client.get(), "indexer");
//   while (true) {
//     absl::StatusOr<lockd::v1::LeaderInfo> leader =
//         (*observer)->Next(absl::InfiniteDuration());
//     if (!leader.ok()) break;  // CANCELLED, or the cell refused the name.
//     if (leader->session_id() == 0) ...  // Nobody leads.
//   }
//
// Thread-safety: both classes are thread-safe. An Election must not outlive
// its Session, an ElectionObserver not its Client.

#ifndef LOCKD_CLIENT_INCLUDE_LOCKD_ELECTION_H_
#define LOCKD_CLIENT_INCLUDE_LOCKD_ELECTION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/client.h"
#include "lockd/session.h"
#include "protos/lockd.pb.h"

namespace lockd {

class Election {
 public:
  // Campaigns for `name` with `value` and blocks until this session leads
  // (the value is then the election's content) or `wait` (at most 1 h, or
  // absl::InfiniteDuration() for no limit)
  // passes (DEADLINE_EXCEEDED). A zero `wait` tries once
  // (FAILED_PRECONDITION if someone else leads or others wait). Campaigners
  // win in FIFO order. As with Lock::Acquire, the wait may restart after a
  // leader change of the cell. If this session leads already, the answer is
  // the current leadership and its value is not replaced (use Proclaim).
  // `lock_delay` (at most 60 s): if the session is lost while leading,
  // nobody wins for this long (as with Lock::Acquire; a Resign or Close
  // hands over at once). INVALID_ARGUMENT for a bad name (one node name, no
  // '/').
  // REQUIRES: session != nullptr and outlives the Election.
  static absl::StatusOr<std::unique_ptr<Election>> Campaign(
      Session* session, const std::string& name, const std::string& value,
      absl::Duration wait, absl::Duration lock_delay = absl::ZeroDuration());

  // The current leader of `name`; NOT_FOUND if nobody leads.
  static absl::StatusOr<v1::LeaderInfo> Leader(Client* client,
                                               const std::string& name);

  // Resigns if still leader; errors are ignored (leadership goes with the
  // session at the latest). Like Resign(), may block up to
  // ClientOptions::call_timeout while no cell leader answers.
  ~Election();
  Election(const Election&) = delete;
  Election& operator=(const Election&) = delete;

  // Replaces the leader's value (observers see the change; the same value
  // again is no change). FAILED_PRECONDITION if this session no longer
  // leads (after Resign(), the session's end, or when the cell says so),
  // NOT_FOUND if the cell no longer knows the session; either answer of the
  // cell also makes IsLeader() false.
  absl::Status Proclaim(const std::string& value);
  // Gives up leadership: the next campaigner wins at once. OK if resigned
  // already, if the session is over (closed or expired), or if the cell
  // says this session does not lead any more (FAILED_PRECONDITION) or no
  // longer exists (NOT_FOUND). Otherwise (no cell leader answered within
  // ClientOptions::call_timeout) the error, and IsLeader() stays as it was.
  absl::Status Resign();

  // True iff not resigned, the cell did not report the lock lost or refuse
  // a Proclaim (see there), and the session is healthy (its local lease is
  // running).
  bool IsLeader() const;

  // The election's name (not its path).
  const std::string& name() const { return name_; }
  // The leader record as of the win or the last Proclaim.
  v1::LeaderInfo leader() const;
  // The lock of the win (path /election/NAME), for fencing.
  const v1::Sequencer& sequencer() const { return sequencer_; }
  Session* session() const { return session_; }

 private:
  Election(Session* session, std::string name, v1::LeaderInfo leader,
           v1::Sequencer sequencer, uint64_t locks_lost);

  Session* const session_;
  const std::string name_;
  const v1::Sequencer sequencer_;
  // Session::locks_lost(sequencer_.path()) at the win.
  const uint64_t locks_lost_at_win_;

  // Serializes Proclaim and Resign (held across their calls to the cell, so
  // that leader_ follows the cell's order); mu_ is never held across a call.
  absl::Mutex call_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  v1::LeaderInfo leader_ ABSL_GUARDED_BY(mu_);
  bool resigned_ ABSL_GUARDED_BY(mu_) = false;
  // The cell refused a Proclaim: this session does not lead.
  bool lost_ ABSL_GUARDED_BY(mu_) = false;
};

// Follows the leader of one election: Next() returns the current leader
// first, then every change in order: a new leader, a new value, and "nobody
// leads" (a LeaderInfo with session_id 0, lock_generation 0 and an empty
// value). The stream runs on a background thread and follows the cell's
// leader across failovers (retrying with jittered backoff, without end,
// while no cell leader answers); after such a reconnection it resumes with
// the election's current state, skipping it if it repeats the last one it
// queued (changes during the failover itself may be coalesced;
// lock_generation shows a missed leader). A stream that stays silent for
// ClientOptions::attempt_timeout is checked with Cluster.Status and given
// up if its replica does not answer in time or no longer leads (a paused or
// deposed cell leader).
//
// Changes wait in a queue for Next(); beyond kMaxQueued the oldest are
// dropped (the newest state is always kept).
class ElectionObserver {
 public:
  static constexpr size_t kMaxQueued = 10000;

  // Starts observing `name` (the stream opens in the background). Changes
  // not yet taken by Next() are queued, at most `max_queued`: beyond it the
  // oldest is dropped, and Next() says so (DATA_LOSS) where it was.
  // REQUIRES: client != nullptr and outlives the observer.
  static absl::StatusOr<std::unique_ptr<ElectionObserver>> Start(
      Client* client, const std::string& name, size_t max_queued = kMaxQueued);

  // Cancels the stream and waits for its threads.
  ~ElectionObserver();
  ElectionObserver(const ElectionObserver&) = delete;
  ElectionObserver& operator=(const ElectionObserver&) = delete;

  // The next change, waiting up to `timeout`: DEADLINE_EXCEEDED if none
  // came; CANCELLED after Cancel(); the cell's status if it rejected the
  // observation (e.g. INVALID_ARGUMENT for a bad name; returned once the
  // queue is empty, and again on every later call). DATA_LOSS, naming how
  // many, once in place of changes dropped because Next() fell behind; the
  // call after it returns the oldest change kept.
  absl::StatusOr<v1::LeaderInfo> Next(absl::Duration timeout);
  // Ends the observation; a blocked Next() returns CANCELLED.
  void Cancel();

  // Streams that answered after the first one (reconnections), for reports
  // and tests.
  uint64_t reconnects() const;
  // Changes dropped so far (each also reported by Next()).
  uint64_t changes_lost() const;

 private:
  class Impl;
  explicit ElectionObserver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockd

#endif  // LOCKD_CLIENT_INCLUDE_LOCKD_ELECTION_H_
