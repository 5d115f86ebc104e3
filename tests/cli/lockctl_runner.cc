#include "tests/cli/lockctl_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"

extern char** environ;

namespace lockd::cli_test {
namespace {

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
  // Everything the child needs is prepared before fork().
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
  std::vector<char*> envp;
  for (std::string& entry : env) envp.push_back(entry.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = {binary};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);

  pid_ = fork();
  CHECK_GE(pid_, 0) << "fork: " << errno;
  if (pid_ == 0) {
    const int in = open(in_path.c_str(), O_RDONLY);
    const int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
}

LockctlProcess::~LockctlProcess() {
  if (Running()) {
    kill(pid_, SIGKILL);
    Wait(absl::Seconds(10));
  }
}

int LockctlProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (exit_code_ < 0) {
    int status;
    const pid_t pid = waitpid(pid_, &status, WNOHANG);
    if (pid == pid_) {
      exit_code_ = ExitCodeOf(status);
      break;
    }
    if (absl::Now() >= deadline) return -1;
    absl::SleepFor(absl::Milliseconds(10));
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
