#include "tests/integration/process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace lockd::integration {
namespace {

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

absl::Status ErrnoError(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

}  // namespace

absl::StatusOr<pid_t> StartProcess(const ProcessOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("no argv");
  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls.
  std::vector<std::string> args = options.argv;
  std::vector<char*> argv = Pointers(args);
  std::vector<std::string> env_strings;
  if (options.env.has_value()) env_strings = *options.env;
  std::vector<char*> envp = Pointers(env_strings);
  char** child_env = options.env.has_value() ? envp.data() : environ;
  const std::string exec_failed =
      absl::StrCat("exec of ", options.argv[0], " failed\n");

  const int flags =
      O_WRONLY | O_CREAT | O_CLOEXEC | (options.append ? O_APPEND : O_TRUNC);
  const int in = open(options.stdin_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return ErrnoError("open " + options.stdin_path);
  const int out = open(options.output_path.c_str(), flags, 0644);
  if (out < 0) {
    const absl::Status error = ErrnoError("open " + options.output_path);
    close(in);
    return error;
  }
  const int err = options.error_path.empty()
                      ? dup(out)
                      : open(options.error_path.c_str(), flags, 0644);
  if (err < 0) {
    const absl::Status error = ErrnoError("open " + options.error_path);
    close(in);
    close(out);
    return error;
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int signal : {SIGTERM, SIGINT, SIGPIPE}) ::signal(signal, SIG_DFL);
    dup2(in, STDIN_FILENO);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    execve(argv[0], argv.data(), child_env);
    if (write(STDERR_FILENO, exec_failed.data(), exec_failed.size()) < 0) {
      // Nothing more to say.
    }
    _exit(127);
  }
  const absl::Status fork_error =
      pid < 0 ? ErrnoError("fork") : absl::OkStatus();
  close(in);
  close(out);
  close(err);
  if (!fork_error.ok()) return fork_error;
  return pid;
}

bool WaitForProcess(pid_t pid, absl::Time deadline, int* wait_status) {
  while (true) {
    const pid_t got = waitpid(pid, wait_status, WNOHANG);
    if (got == pid) return true;
    if (got < 0 && errno != EINTR) {
      // Not our child any more: someone else reaped it.
      *wait_status = 0;
      return true;
    }
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

ProcessResult RunToExit(const ProcessOptions& options, absl::Duration timeout) {
  ProcessResult result;
  absl::StatusOr<pid_t> pid = StartProcess(options);
  if (!pid.ok()) {
    result.output = pid.status().ToString();
    return result;
  }
  int wait_status = 0;
  if (!WaitForProcess(*pid, absl::Now() + timeout, &wait_status)) {
    kill(*pid, SIGKILL);
    WaitForProcess(*pid, absl::InfiniteFuture(), &wait_status);
    result.output = "(killed: still running after the timeout)\n";
  } else if (WIFEXITED(wait_status)) {
    result.exit_code = WEXITSTATUS(wait_status);
  }
  result.output.append(ReadWholeFile(options.output_path));
  return result;
}

}  // namespace lockd::integration
