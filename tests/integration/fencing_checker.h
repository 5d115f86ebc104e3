#ifndef LOCKD_TESTS_INTEGRATION_FENCING_CHECKER_H_
#define LOCKD_TESTS_INTEGRATION_FENCING_CHECKER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace lockd::integration {

// An external checker of exclusive-lock safety, fed by the clients of a test
// as they see answers:
//  * mutual exclusion: between a client's Granted() and its Releasing() no
//    other client is granted the same path;
//  * fencing: every grant's lock generation is strictly greater than every
//    earlier grant's for that path.
// It records violations instead of failing, so that worker threads can call
// it; the test checks violations() at the end.
//
// Thread-safe.
class FencingChecker {
 public:
  // `holder` identifies the client (its session id). Call right after a
  // successful exclusive Acquire.
  void Granted(const std::string& path, uint64_t holder,
               uint64_t lock_generation);
  // Call right before sending Release (after that the lock may be granted
  // to someone else), and also when a holder gives up a lock it believed to
  // hold.
  void Releasing(const std::string& path, uint64_t holder);

  std::vector<std::string> violations() const;
  uint64_t grants() const;
  // The highest lock generation granted for `path` (0 if none).
  uint64_t max_generation(const std::string& path) const;

 private:
  struct PathState {
    uint64_t holder = 0;
    uint64_t max_generation = 0;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, PathState> paths_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> violations_ ABSL_GUARDED_BY(mu_);
  uint64_t grants_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace lockd::integration

#endif  // LOCKD_TESTS_INTEGRATION_FENCING_CHECKER_H_
