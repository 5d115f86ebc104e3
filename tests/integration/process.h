// Child processes for tests and benchmarks: started with fork/exec so that
// they die with the process that started them, and reaped by PID.

#ifndef LOCKD_TESTS_INTEGRATION_PROCESS_H_
#define LOCKD_TESTS_INTEGRATION_PROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lockd::integration {

struct ProcessOptions {
  // argv[0] is the path of the program (no PATH lookup).
  std::vector<std::string> argv;
  // The whole environment ("NAME=value"); unset: the caller's.
  std::optional<std::vector<std::string>> env;
  std::string stdin_path = "/dev/null";
  // Standard output and error go to this file (created if missing).
  std::string output_path = "/dev/null";
  // A separate file for standard error; empty: output_path.
  std::string error_path;
  // Append to the output files instead of truncating them.
  bool append = false;
};

// Starts the program. The child gets SIGKILL if the thread that started it
// exits (PR_SET_PDEATHSIG), so start children from a thread that outlives
// them; it starts with an empty signal mask and default dispositions. If the
// exec fails, the child writes why to its standard error and exits 127.
absl::StatusOr<pid_t> StartProcess(const ProcessOptions& options);

// Waits for `pid` to exit until `deadline`: true, with its waitpid() status
// in *wait_status, once it did (also if it was reaped elsewhere already,
// with status 0); false if it still runs at the deadline.
bool WaitForProcess(pid_t pid, absl::Time deadline, int* wait_status);

// The content of the file at `path` ("" if it cannot be read).
std::string ReadWholeFile(const std::string& path);

// What a program that ran to its end said.
struct ProcessResult {
  // The exit status; -1 if it was killed by a signal, did not start, or
  // was still running at the deadline (then it was killed).
  int exit_code = -1;
  // Its standard output and error together.
  std::string output;
};

// Runs `options` (its output goes to options.output_path, which must name
// a file) until it exits or `timeout` passes.
ProcessResult RunToExit(const ProcessOptions& options, absl::Duration timeout);

}  // namespace lockd::integration

#endif  // LOCKD_TESTS_INTEGRATION_PROCESS_H_
