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

constexpr int kHandledSignals[] = {SIGINT,  SIGTERM, SIGHUP, SIGQUIT,
                                   SIGUSR1, SIGUSR2, SIGCHLD};

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
int NextSignal(absl::Duration timeout, siginfo_t* info) {
  const sigset_t set = HandledSet();
  const timespec wait = absl::ToTimespec(timeout);
  const int signal = sigtimedwait(&set, info, &wait);
  return signal > 0 ? signal : 0;
}

// Reaps `child` if it ended; true then, with its status.
bool Reaped(pid_t child, int* wait_status) {
  pid_t pid;
  do {
    pid = waitpid(child, wait_status, WNOHANG);
  } while (pid < 0 && errno == EINTR);
  return pid == child;
}

void StopChild(pid_t child, absl::Duration kill_grace, int* wait_status) {
  if (Reaped(child, wait_status)) return;
  kill(child, SIGTERM);
  const absl::Time deadline = absl::Now() + kill_grace;
  while (absl::Now() < deadline) {
    siginfo_t info;
    NextSignal(std::min(absl::Milliseconds(20), deadline - absl::Now()), &info);
    if (Reaped(child, wait_status)) return;
  }
  kill(child, SIGKILL);
  while (waitpid(child, wait_status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

void BlockSignals() {
  const sigset_t set = HandledSet();
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

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // lockctl died already.
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(arg_pointers[0], arg_pointers.data(), envp.data());
    const int error = errno;
    const char* reason = strerror(error);
    ssize_t ignored = write(2, exec_failed.data(), exec_failed.size());
    ignored = write(2, reason, strlen(reason));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(error == ENOENT ? 127 : 126);
  }
  return pid;
}

HoldOutcome Hold(pid_t child, const std::function<bool()>& held,
                 absl::Duration kill_grace) {
  HoldOutcome outcome;
  while (true) {
    if (child > 0 && Reaped(child, &outcome.wait_status)) {
      outcome.kind = HoldOutcome::kChildExited;
      return outcome;
    }
    if (!held()) {
      if (child > 0) StopChild(child, kill_grace, &outcome.wait_status);
      outcome.kind = HoldOutcome::kLost;
      return outcome;
    }
    siginfo_t info;
    const int signal = NextSignal(absl::Milliseconds(20), &info);
    if (signal == 0 || signal == SIGCHLD) continue;
    if (child > 0) {
      // si_code <= 0: sent by a process (kill, sigqueue), not the terminal.
      if (info.si_code <= 0) kill(child, signal);
    } else if (Terminates(signal)) {
      outcome.kind = HoldOutcome::kInterrupted;
      outcome.signal = signal;
      return outcome;
    }
  }
}

int WaitInterruptibly(const std::function<bool()>& work_done) {
  while (!work_done()) {
    siginfo_t info;
    const int signal = NextSignal(absl::Milliseconds(20), &info);
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
