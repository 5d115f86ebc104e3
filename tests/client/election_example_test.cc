// client/examples/elect.cc as processes against a real local cell: three
// candidates, exactly one leads and the others observe it; kill -9 of the
// leader hands over after the session TTL; SIGTERM ends a waiting candidate
// and the leader cleanly.

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/integration/cell.h"
#include "tests/integration/cell_fixture.h"
#include "tests/integration/process.h"

#ifndef LOCKD_ELECT_EXAMPLE
#error "LOCKD_ELECT_EXAMPLE must name the lockd_elect_example binary"
#endif

namespace lockd {
namespace {

using integration::CellTest;
using integration::PollUntil;

// One lockd_elect_example process, its stdout and stderr in a file. Killed
// (by PID) and reaped by the destructor if still running.
class Candidate {
 public:
  Candidate(std::string id, std::string log_path)
      : id_(std::move(id)), log_path_(std::move(log_path)) {}
  ~Candidate() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  Candidate(const Candidate&) = delete;
  Candidate& operator=(const Candidate&) = delete;

  bool Start(std::vector<std::string> args) {
    integration::ProcessOptions process;
    process.argv = std::move(args);
    process.argv.insert(process.argv.begin(), LOCKD_ELECT_EXAMPLE);
    process.argv.push_back(absl::StrCat("--id=", id_));
    process.output_path = log_path_;
    absl::StatusOr<pid_t> pid = integration::StartProcess(process);
    if (!pid.ok()) return false;
    pid_ = *pid;
    return true;
  }

  // Sends `signal` and waits up to `timeout` for the exit; returns the wait
  // status, or -1 if it did not exit in time (it is then killed).
  int SignalAndReap(int signal, absl::Duration timeout) {
    if (pid_ <= 0) return -1;
    kill(pid_, signal);
    int status = 0;
    const bool exited =
        integration::WaitForProcess(pid_, absl::Now() + timeout, &status);
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    return exited ? status : -1;
  }

  const std::string& id() const { return id_; }

  std::vector<std::string> Lines() const {
    std::ifstream in(log_path_);
    std::stringstream text;
    text << in.rdbuf();
    return absl::StrSplit(text.str(), '\n', absl::SkipEmpty());
  }
  // The lines that start with `prefix`.
  std::vector<std::string> LinesStartingWith(const std::string& prefix) const {
    std::vector<std::string> found;
    for (const std::string& line : Lines()) {
      if (absl::StartsWith(line, prefix)) found.push_back(line);
    }
    return found;
  }
  bool Printed(const std::string& line) const {
    for (const std::string& l : Lines()) {
      if (l == line) return true;
    }
    return false;
  }
  std::string Log() const {
    std::string all;
    for (const std::string& line : Lines()) absl::StrAppend(&all, line, "\n");
    return all;
  }

 private:
  const std::string id_;
  const std::string log_path_;
  pid_t pid_ = -1;
};

// The generation of a "leader: ID (generation N)" line; 0 if malformed.
uint64_t GenerationOf(const std::string& line) {
  const size_t at = line.rfind("(generation ");
  if (at == std::string::npos || line.back() != ')') return 0;
  const std::string number = line.substr(at + 12, line.size() - 1 - (at + 12));
  uint64_t generation = 0;
  return absl::SimpleAtoi(number, &generation) ? generation : 0;
}

class ElectionExampleTest : public CellTest {};

TEST_F(ElectionExampleTest, OneLeaderThenHandOverAfterKill) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  std::vector<std::unique_ptr<Candidate>> candidates;
  for (int i = 1; i <= 3; ++i) {
    const std::string id = absl::StrCat("candidate-", i);
    candidates.push_back(std::make_unique<Candidate>(
        id, absl::StrCat(cell_->directory(), "/", id, ".out")));
    ASSERT_TRUE(candidates.back()->Start(
        {absl::StrCat("--endpoints=", cell_->endpoints()),
         "--name=example-test", "--ttl=2s"}));
  }
  auto dump = [&] {
    std::string all;
    for (const auto& c : candidates) {
      absl::StrAppend(&all, "--- ", c->id(), ":\n", c->Log());
    }
    return all;
  };
  auto leaders = [&](const std::vector<Candidate*>& among) {
    std::vector<Candidate*> found;
    for (Candidate* c : among) {
      if (!c->LinesStartingWith("leader: ").empty()) found.push_back(c);
    }
    return found;
  };
  std::vector<Candidate*> all;
  for (const auto& c : candidates) all.push_back(c.get());

  // One wins; the two others observe it while they wait.
  Candidate* first = nullptr;
  std::string first_line;
  ASSERT_TRUE(PollUntil(
      [&] {
        std::vector<Candidate*> found = leaders(all);
        if (found.size() != 1) return false;
        first = found[0];
        first_line = first->LinesStartingWith("leader: ")[0];
        const std::string observed =
            absl::StrCat("observed: leader ",
                         first_line.substr(std::string("leader: ").size()));
        for (Candidate* c : all) {
          if (c != first && !c->Printed(observed)) return false;
        }
        return true;
      },
      absl::Seconds(20)))
      << dump();
  EXPECT_EQ(first_line, absl::StrCat("leader: ", first->id(), " (generation ",
                                     GenerationOf(first_line), ")"));
  ASSERT_GT(GenerationOf(first_line), 0u) << first_line;
  ASSERT_EQ(leaders(all).size(), 1u) << dump();
  ASSERT_TRUE(
      PollUntil([&] { return !first->LinesStartingWith("serving: ").empty(); },
                absl::Seconds(10)))
      << dump();

  // kill -9 of the leader: its session expires after the TTL (2 s) and the
  // first in line wins.
  const int killed = first->SignalAndReap(SIGKILL, absl::Seconds(10));
  ASSERT_TRUE(WIFSIGNALED(killed) && WTERMSIG(killed) == SIGKILL) << killed;
  std::vector<Candidate*> rest;
  for (Candidate* c : all) {
    if (c != first) rest.push_back(c);
  }
  Candidate* second = nullptr;
  std::string second_line;
  ASSERT_TRUE(PollUntil(
      [&] {
        std::vector<Candidate*> found = leaders(rest);
        if (found.empty()) return false;
        second = found[0];
        second_line = second->LinesStartingWith("leader: ")[0];
        return true;
      },
      FailoverBound() + absl::Seconds(20)))
      << dump();
  EXPECT_GT(GenerationOf(second_line), GenerationOf(first_line)) << dump();
  Candidate* third = rest[0] == second ? rest[1] : rest[0];
  const std::string observed = absl::StrCat(
      "observed: leader ", second_line.substr(std::string("leader: ").size()));
  ASSERT_TRUE(
      PollUntil([&] { return third->Printed(observed); }, absl::Seconds(10)))
      << dump();
  EXPECT_EQ(leaders(rest).size(), 1u) << dump();

  // SIGTERM ends a waiting candidate and the leader, each with status 0.
  int status = third->SignalAndReap(SIGTERM, absl::Seconds(20));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n"
                                                             << dump();
  status = second->SignalAndReap(SIGTERM, absl::Seconds(20));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n"
                                                             << dump();
  EXPECT_TRUE(second->Printed(absl::StrCat("resigned: ", second->id())))
      << dump();
}

}  // namespace
}  // namespace lockd
