// Runs the real lockctl binary for tests: to completion (exit code, stdout,
// stderr) or in the background (a process signalled and reaped by PID).

#ifndef LOCKD_TESTS_CLI_LOCKCTL_RUNNER_H_
#define LOCKD_TESTS_CLI_LOCKCTL_RUNNER_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace lockd::cli_test {

struct RunResult {
  // Exit code, or 128 + signal; -1 if it had to be killed at the timeout.
  int exit_code = -1;
  std::string out;
  std::string err;
};

// A lockctl process. Its stdout and stderr go to files in `directory`; the
// environment gets LOCKD_ENDPOINTS = `endpoints` and the lockctl binary's
// directory in front of PATH. The destructor SIGKILLs and reaps it if it
// still runs.
class LockctlProcess {
 public:
  LockctlProcess(const std::string& binary, const std::string& endpoints,
                 const std::string& directory,
                 const std::vector<std::string>& args,
                 const std::string& stdin_text = "");
  ~LockctlProcess();
  LockctlProcess(const LockctlProcess&) = delete;
  LockctlProcess& operator=(const LockctlProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Waits up to `timeout` for the exit; returns the exit code (128+signal
  // if killed by one) or -1 if it still runs.
  int Wait(absl::Duration timeout);
  void Signal(int signal);
  bool Running();
  std::string Out() const;
  std::string Err() const;

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string out_path_;
  std::string err_path_;
};

// Runs lockctl to completion (SIGKILL after `timeout`).
RunResult RunLockctl(const std::string& binary, const std::string& endpoints,
                     const std::string& directory,
                     const std::vector<std::string>& args,
                     absl::Duration timeout = absl::Seconds(60),
                     const std::string& stdin_text = "");

// The content of a file ("" if it does not exist).
std::string ReadFile(const std::string& path);

}  // namespace lockd::cli_test

#endif  // LOCKD_TESTS_CLI_LOCKCTL_RUNNER_H_
