#include "cli/supervisor.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace lockd::cli {
namespace {

// Signals lockctl waits for (sigtimedwait) and forwards.
constexpr int kHandledSignals[] = {SIGINT,  SIGTERM, SIGHUP, SIGQUIT,
                                   SIGUSR1, SIGUSR2, SIGCHLD};
// Job control: blocked so that lockctl itself is never stopped by the
// terminal and may take the terminal back from the command's group.
constexpr int kJobControlSignals[] = {SIGTSTP, SIGTTIN, SIGTTOU};
constexpr absl::Duration kPollInterval = absl::Milliseconds(20);

sigset_t HandledSet() {
  sigset_t set;
  sigemptyset(&set);
  for (int signal : kHandledSignals) sigaddset(&set, signal);
  return set;
}

bool Terminates(int signal) {
  return signal == SIGINT || signal == SIGTERM || signal == SIGHUP ||
         signal == SIGQUIT;
}

// Waits up to `timeout` for one of the handled signals; 0 if none came.
int NextSignal(absl::Duration timeout) {
  const sigset_t set = HandledSet();
  const timespec wait = absl::ToTimespec(timeout);
  siginfo_t info;
  const int signal = sigtimedwait(&set, &info, &wait);
  return signal > 0 ? signal : 0;
}

// Reaps every ended child (lockctl is the subreaper of the command's
// descendants); sets *child_status if `child` was among them.
void ReapAll(pid_t child, bool* child_exited, int* child_status) {
  while (true) {
    int status;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return;
    if (pid == child) {
      *child_exited = true;
      *child_status = status;
    }
  }
}

bool GroupGone(pid_t group) { return kill(-group, 0) != 0 && errno == ESRCH; }

// Whether the command's group takes the terminal: lockctl runs in the
// terminal's foreground.
bool OwnsForeground() {
  return isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp();
}

}  // namespace

void BlockSignals() {
  sigset_t set = HandledSet();
  for (int signal : kJobControlSignals) sigaddset(&set, signal);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

absl::StatusOr<pid_t> StartChild(
    const std::vector<std::string>& argv,
    const std::vector<std::pair<std::string, std::string>>& extra_env) {
  if (argv.empty()) return absl::InvalidArgumentError("no command after --");
  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls are allowed in a multi-threaded process.
  std::vector<std::string> env_strings;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    bool replaced = false;
    for (const auto& [name, value] : extra_env) {
      if (absl::StartsWith(*entry, name + "=")) replaced = true;
    }
    if (!replaced) env_strings.emplace_back(*entry);
  }
  for (const auto& [name, value] : extra_env) {
    env_strings.push_back(absl::StrCat(name, "=", value));
  }
  std::vector<char*> envp;
  for (std::string& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> arg_pointers;
  for (std::string& arg : args) arg_pointers.push_back(arg.data());
  arg_pointers.push_back(nullptr);
  const std::string exec_failed =
      absl::StrCat("lockctl: cannot run ", argv[0], ": ");
  const bool take_terminal = OwnsForeground();
  // Orphaned descendants of the command become lockctl's children, so the
  // whole group can be reaped and waited for.
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // lockctl died already.
    setpgid(0, 0);
    // SIGTTOU is still blocked (inherited), so this works from the
    // background too.
    if (take_terminal) tcsetpgrp(STDIN_FILENO, getpid());
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(arg_pointers[0], arg_pointers.data(), envp.data());
    const int error = errno;
    const char* reason = strerrordesc_np(error);
    ssize_t ignored = write(2, exec_failed.data(), exec_failed.size());
    ignored = write(2, reason, strlen(reason));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(error == ENOENT ? 127 : 126);
  }
  // Also here, so that neither order of the two processes' steps races.
  setpgid(pid, pid);
  if (take_terminal) tcsetpgrp(STDIN_FILENO, pid);
  return pid;
}

HoldOutcome Hold(pid_t child, const std::function<absl::Time()>& stop_at,
                 absl::Duration kill_grace,
                 const std::function<bool()>& finished) {
  HoldOutcome outcome;
  // StartChild gave the command's group the terminal; it comes back when
  // the group is gone.
  const bool took_terminal =
      child > 0 && isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == child;
  bool lost = false;
  bool child_exited = false;
  // Stopping the group: SIGTERM sent, and when SIGKILL is due.
  bool stopping = false;
  bool killed = false;
  absl::Time kill_at = absl::InfiniteFuture();
  while (true) {
    if (child > 0) {
      ReapAll(child, &child_exited, &outcome.wait_status);
      if (child_exited && GroupGone(child)) {
        if (took_terminal) tcsetpgrp(STDIN_FILENO, getpgrp());
        outcome.kind = lost ? HoldOutcome::kLost : HoldOutcome::kChildExited;
        return outcome;
      }
    }
    const absl::Time now = absl::Now();
    if (!stopping) {
      const absl::Time at = stop_at();
      if (now >= at) {
        lost = true;
        if (child <= 0) {
          outcome.kind = HoldOutcome::kLost;
          return outcome;
        }
        stopping = true;
        kill_at = at + kill_grace;
      } else if (child_exited) {
        stopping = true;  // The command left processes in its group.
        outcome.stopped_leftovers = true;
        kill_at = now + kill_grace;
      }
      if (stopping) {
        kill(-child, now >= kill_at ? SIGKILL : SIGTERM);
        kill(-child, SIGCONT);  // A stopped group would not act on SIGTERM.
        killed = now >= kill_at;
      }
    }
    if (stopping && !killed && now >= kill_at) {
      kill(-child, SIGKILL);
      killed = true;
    }
    if (child <= 0 && finished != nullptr && finished()) {
      outcome.kind = HoldOutcome::kInterrupted;
      return outcome;
    }
    const int signal = NextSignal(kPollInterval);
    if (signal == 0 || signal == SIGCHLD) continue;
    if (child > 0) {
      kill(-child, signal);
    } else if (Terminates(signal)) {
      outcome.kind = HoldOutcome::kInterrupted;
      return outcome;
    }
  }
}

int WaitInterruptibly(const std::function<bool()>& work_done) {
  while (!work_done()) {
    const int signal = NextSignal(kPollInterval);
    if (Terminates(signal)) return signal;
  }
  return 0;
}

int ExitCodeOfChild(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 1;
}

}  // namespace lockd::cli
