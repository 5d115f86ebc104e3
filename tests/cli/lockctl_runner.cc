#include "tests/cli/lockctl_runner.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "tests/integration/process.h"

extern char** environ;

namespace lockd::cli_test {
namespace {

using ::lockd::integration::ProcessOptions;
using ::lockd::integration::StartProcess;
using ::lockd::integration::WaitForProcess;

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

std::string UniquePath(const std::string& directory, const char* suffix) {
  static std::atomic<int> counter{0};
  return absl::StrCat(directory, "/lockctl-", getpid(), "-", counter++, suffix);
}

}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

LockctlProcess::LockctlProcess(const std::string& binary,
                               const std::string& endpoints,
                               const std::string& directory,
                               const std::vector<std::string>& args,
                               const std::string& stdin_text)
    : out_path_(UniquePath(directory, ".out")),
      err_path_(UniquePath(directory, ".err")) {
  const std::string in_path = UniquePath(directory, ".in");
  std::ofstream(in_path) << stdin_text;
  std::vector<std::string> env;
  const std::string bin_dir = binary.substr(0, binary.rfind('/'));
  const char* path = std::getenv("PATH");
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (absl::StartsWith(*entry, "LOCKD_ENDPOINTS=") ||
        absl::StartsWith(*entry, "PATH=")) {
      continue;
    }
    env.emplace_back(*entry);
  }
  env.push_back("LOCKD_ENDPOINTS=" + endpoints);
  env.push_back(absl::StrCat("PATH=", bin_dir, ":",
                             path != nullptr ? path : "/usr/bin:/bin"));
  ProcessOptions process;
  process.argv = {binary};
  process.argv.insert(process.argv.end(), args.begin(), args.end());
  process.env = std::move(env);
  process.stdin_path = in_path;
  process.output_path = out_path_;
  process.error_path = err_path_;
  absl::StatusOr<pid_t> pid = StartProcess(process);
  CHECK(pid.ok()) << pid.status();
  pid_ = *pid;
}

LockctlProcess::~LockctlProcess() {
  if (Running()) {
    kill(pid_, SIGKILL);
    Wait(absl::Seconds(10));
  }
}

int LockctlProcess::Wait(absl::Duration timeout) {
  int status;
  if (exit_code_ < 0 && WaitForProcess(pid_, absl::Now() + timeout, &status)) {
    exit_code_ = ExitCodeOf(status);
  }
  return exit_code_;
}

void LockctlProcess::Signal(int signal) {
  if (Running()) kill(pid_, signal);
}

bool LockctlProcess::Running() { return Wait(absl::ZeroDuration()) < 0; }

std::string LockctlProcess::Out() const { return ReadFile(out_path_); }
std::string LockctlProcess::Err() const { return ReadFile(err_path_); }

RunResult RunLockctl(const std::string& binary, const std::string& endpoints,
                     const std::string& directory,
                     const std::vector<std::string>& args,
                     absl::Duration timeout, const std::string& stdin_text) {
  LockctlProcess process(binary, endpoints, directory, args, stdin_text);
  RunResult result;
  result.exit_code = process.Wait(timeout);
  if (result.exit_code < 0) {
    process.Signal(SIGKILL);
    process.Wait(absl::Seconds(10));
    result.exit_code = -1;
  }
  result.out = process.Out();
  result.err = process.Err();
  return result;
}

}  // namespace lockd::cli_test
