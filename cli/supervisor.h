// Runs a command while lockctl holds a lock or leads an election, and stops
// it in time when the hold is lost (docs/lockctl.md, "Running a command under
// a lock", has the timing argument).
//
// The command runs in a process group of its own, which gets every signal
// lockctl forwards and every stop; lockctl is the subreaper of the command's
// descendants, so it reaps them and waits until the whole group is gone
// before it releases the lock. When lockctl runs in the foreground of a
// terminal, the group gets the terminal (Ctrl-C, Ctrl-Z and reads go to the
// command) and lockctl takes it back when the group ends.
//
// The signals lockctl handles (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1,
// SIGUSR2, SIGCHLD, and the job-control SIGTSTP, SIGTTIN, SIGTTOU) must be
// blocked in every thread, which BlockSignals() does; call it before any
// other thread starts.

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

// Starts `argv` in a new process group (its id is the returned pid) with
// `extra_env` added to the environment, the signal mask emptied and
// SIGPIPE at its default. The command is killed (SIGKILL) if lockctl dies.
// If it cannot be executed it exits 127 (not found) or 126, as a shell does.
absl::StatusOr<pid_t> StartChild(
    const std::vector<std::string>& argv,
    const std::vector<std::pair<std::string, std::string>>& extra_env);

struct HoldOutcome {
  enum Kind {
    kChildExited,  // The command ended by itself; `wait_status` is set.
    kInterrupted,  // No command, and SIGINT/SIGTERM/SIGHUP/SIGQUIT came.
    kLost,         // `stop_at` came; the command's group was stopped.
  };
  Kind kind;
  int wait_status = 0;  // waitpid() status of the command.
  // With a command: processes of its group that outlived it and were
  // stopped before the lock was released.
  bool stopped_leftovers = false;
};

// Holds until `stop_at()` (polled every 20 ms) has come, or the command
// (`child` > 0, the leader of its process group) exits, or, without a
// command, a terminating signal arrives. Signals to lockctl are forwarded
// to the command's group. To stop the group lockctl sends SIGTERM at
// `stop_at()` and SIGKILL at `stop_at() + kill_grace`; if lockctl notices
// late (it was stopped or starved), it sends SIGKILL at once. When the
// command exits by itself, the rest of its group gets the same treatment
// from then on. Returns only once the group is gone. Without a command,
// `finished` (if set, polled like `stop_at`) returning true also ends the
// hold, as kInterrupted.
HoldOutcome Hold(pid_t child, const std::function<absl::Time()>& stop_at,
                 absl::Duration kill_grace,
                 const std::function<bool()>& finished = nullptr);

// Runs `work_done` (polled every 20 ms, for work on another thread) until
// it returns true or a terminating signal arrives; returns that signal, or
// 0.
int WaitInterruptibly(const std::function<bool()>& work_done);

// The exit code for a command's waitpid() status: its exit code, or
// 128 + signal number as shells report it.
int ExitCodeOfChild(int wait_status);

}  // namespace lockd::cli

#endif  // LOCKD_CLI_SUPERVISOR_H_
