// lockd::Lock is a held lock on a node (RAII): exclusive (one holder) or
// shared (any number of holders, no exclusive one). The destructor releases
// it. Waiters are granted in FIFO order.
//
// A Lock is only as good as its session: IsHeld() turns false as soon as the
// session leaves the healthy state (jeopardy, expiry, close), when the cell
// reported the lock lost, or after Release(). Work done under the lock
// should pass sequencer() to the servers it talks to, which check it with
// Client::CheckSequencer (fencing), since a holder may be paused past its
// lease at any moment.
//
// Example:
//   absl::StatusOr<std::unique_ptr<lockd::Lock>> lock = lockd::Lock::Acquire(
//       session.get(), "/jobs/reindex", lockd::v1::EXCLUSIVE,
//       absl::Seconds(30));
//   if (!lock.ok()) ...  // DEADLINE_EXCEEDED: not acquired in 30 s.
//   DoWork((*lock)->sequencer());
//
// Thread-safety: a Lock is thread-safe. It must not outlive its Session.

#ifndef LOCKD_CLIENT_INCLUDE_LOCKD_LOCK_H_
#define LOCKD_CLIENT_INCLUDE_LOCKD_LOCK_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lockd/session.h"
#include "protos/lockd.pb.h"

namespace lockd {

class Lock {
 public:
  // Acquires the lock on `path` (created, empty and permanent, if missing;
  // its parent must exist), waiting in FIFO order up to `wait` (at most 1 h,
  // or absl::InfiniteDuration(): until granted or the session ends, keeping
  // its place however long).
  // DEADLINE_EXCEEDED if it was not granted in time. `lock_delay` (at most
  // 60 s): if the session is lost while holding the lock, nobody gets it for
  // this long. The wait may restart after a leader change, so in rare cases
  // a call waits longer than `wait`.
  // REQUIRES: session != nullptr and outlives the Lock.
  static absl::StatusOr<std::unique_ptr<Lock>> Acquire(
      Session* session, const std::string& path, v1::LockMode mode,
      absl::Duration wait, absl::Duration lock_delay = absl::ZeroDuration());
  // Tries once: FAILED_PRECONDITION if the lock is held in a conflicting
  // mode.
  static absl::StatusOr<std::unique_ptr<Lock>> TryAcquire(
      Session* session, const std::string& path, v1::LockMode mode,
      absl::Duration lock_delay = absl::ZeroDuration());

  // Releases the lock if still held; errors are ignored (the lock goes with
  // the session at the latest). Like Release(), may block up to
  // ClientOptions::call_timeout while no leader answers.
  ~Lock();
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

  // Releases the lock. OK if it was released already.
  absl::Status Release();

  // True iff the lock was not released, the cell did not report it lost,
  // and the session is healthy (its local lease is running).
  bool IsHeld() const;

  // The proof of holding the lock, for fencing downstream servers.
  const v1::Sequencer& sequencer() const { return sequencer_; }
  const std::string& path() const { return sequencer_.path(); }
  v1::LockMode mode() const { return sequencer_.mode(); }
  Session* session() const { return session_; }

 private:
  Lock(Session* session, v1::Sequencer sequencer, uint64_t locks_lost);
  static absl::StatusOr<std::unique_ptr<Lock>> AcquireImpl(
      Session* session, const std::string& path, v1::LockMode mode,
      absl::Duration wait, absl::Duration lock_delay);

  Session* const session_;
  const v1::Sequencer sequencer_;
  // Session::locks_lost(path) when the lock was granted.
  const uint64_t locks_lost_at_grant_;

  mutable absl::Mutex mu_;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace lockd

#endif  // LOCKD_CLIENT_INCLUDE_LOCKD_LOCK_H_
