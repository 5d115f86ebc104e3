// Runs a command while lockctl holds a lock or leads an election, and stops
// it when the hold is lost (docs/lockctl.md, "Running a command under a
// lock", has the timing argument).
//
// The signals lockctl handles (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1,
// SIGUSR2, SIGCHLD) must be blocked in every thread, which BlockSignals()
// does; call it before any other thread starts.

#ifndef LOCKD_CLI_SUPERVISOR_H_
#define LOCKD_CLI_SUPERVISOR_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lockd::cli {

// Blocks the signals above in the calling thread (and the threads it
// starts afterwards).
void BlockSignals();

// Starts `argv` as a child process with `extra_env` added to the
// environment. The child gets the default signal mask and dispositions and
// is killed (SIGKILL) if lockctl dies, so it never outlives the holder.
// NOT_FOUND / PERMISSION_DENIED-style errors from exec are reported by the
// child as exit status 127 / 126 (as a shell does).
absl::StatusOr<pid_t> StartChild(
    const std::vector<std::string>& argv,
    const std::vector<std::pair<std::string, std::string>>& extra_env);

struct HoldOutcome {
  enum Kind {
    kChildExited,  // The child ended by itself; `wait_status` is set.
    kInterrupted,  // No child, and a signal asked lockctl to stop.
    kLost,         // `held` turned false; the child (if any) was stopped.
  };
  Kind kind;
  int wait_status = 0;  // waitpid() status of the child.
  int signal = 0;       // The signal, for kInterrupted.
};

// Waits while `held()` is true and the child (`child` > 0) runs:
// - signals sent to lockctl with kill(2) are forwarded to the child (those
//   from the terminal reached the child directly, as it shares lockctl's
//   process group); without a child, SIGINT, SIGTERM, SIGHUP and SIGQUIT
//   end the wait;
// - `held()` is polled every 20 ms; once false, the child gets SIGTERM and,
//   if still running after `kill_grace`, SIGKILL, and is reaped.
HoldOutcome Hold(pid_t child, const std::function<bool()>& held,
                 absl::Duration kill_grace);

// Waits for `work_done()` to become true (polled every 20 ms, for work on
// another thread) or a terminating signal (returned; 0 if none came).
int WaitInterruptibly(const std::function<bool()>& work_done);

// The exit code for a child's waitpid() status: its exit code, or
// 128 + signal number as shells report it.
int ExitCodeOfChild(int wait_status);

}  // namespace lockd::cli

#endif  // LOCKD_CLI_SUPERVISOR_H_
