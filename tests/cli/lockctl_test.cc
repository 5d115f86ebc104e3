// lockctl end to end: the real binary against a real local cell.

#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cli/lockctl_runner.h"
#include "tests/integration/cell.h"
#include "tests/integration/process.h"
#include "tests/integration/test_client.h"

#ifndef LOCKD_BINARY
#error "LOCKD_BINARY must name the lockd binary"
#endif
#ifndef LOCKCTL_BINARY
#error "LOCKCTL_BINARY must name the lockctl binary"
#endif

namespace lockd::cli_test {
namespace {

using ::lockd::integration::Cell;
using ::lockd::integration::CellOptions;
using ::lockd::integration::MakeCertificates;
using ::lockd::integration::PickFreePort;
using ::lockd::integration::PollUntil;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Exit codes documented in docs/lockctl.md.
constexpr int kUsage = 2;
constexpr int kNotFound = 3;
constexpr int kCasMismatch = 4;
constexpr int kNotAcquired = 5;
constexpr int kSessionLost = 6;
constexpr int kUnavailable = 7;
constexpr int kSequencerInvalid = 8;

std::unique_ptr<Cell> StartCell() {
  CellOptions options;
  options.lockd_binary = LOCKD_BINARY;
  absl::StatusOr<std::unique_ptr<Cell>> cell = Cell::Start(options);
  CHECK(cell.ok()) << cell.status();
  const absl::StatusOr<int> leader = (*cell)->WaitForLeader(absl::Seconds(20));
  CHECK(leader.ok()) << leader.status() << (*cell)->AllLogTails();
  return *std::move(cell);
}

class LockctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_cell_ = StartCell().release(); }
  static void TearDownTestSuite() {
    delete shared_cell_;
    shared_cell_ = nullptr;
  }

  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/lockctl-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }

  // The cell the test talks to.
  virtual Cell& cell() { return *shared_cell_; }

  RunResult Run(const std::vector<std::string>& args,
                const std::string& stdin_text = "") {
    return RunLockctl(LOCKCTL_BINARY, cell().endpoints(), dir_, args,
                      absl::Seconds(60), stdin_text);
  }
  std::unique_ptr<LockctlProcess> Start(const std::vector<std::string>& args) {
    return std::make_unique<LockctlProcess>(LOCKCTL_BINARY, cell().endpoints(),
                                            dir_, args);
  }
  std::string File(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }
  // Waits until the file `name` contains `text`.
  bool WaitForFile(const std::string& name, const std::string& text,
                   absl::Duration timeout = absl::Seconds(30)) {
    return PollUntil(
        [&] { return absl::StrContains(ReadFile(File(name)), text); }, timeout);
  }

  static Cell* shared_cell_;
  std::string dir_;
};

Cell* LockctlTest::shared_cell_ = nullptr;

std::string Describe(const RunResult& result) {
  return absl::StrCat("exit ", result.exit_code, "\nstdout: ", result.out,
                      "\nstderr: ", result.err);
}

TEST_F(LockctlTest, HelpAndUsageErrors) {
  RunResult help = Run({"help"});
  EXPECT_EQ(help.exit_code, 0) << Describe(help);
  for (const char* command :
       {"status", "members", "put", "get", "ls", "rm", "stat", "watch",
        "sessions", "locks", "lock", "elect", "leader", "observe", "create",
        "acl", "check-sequencer"}) {
    EXPECT_THAT(help.out, HasSubstr(absl::StrCat("  ", command, " ")));
    const RunResult command_help = Run({"help", command});
    EXPECT_EQ(command_help.exit_code, 0) << command;
    EXPECT_THAT(command_help.out, HasSubstr("Examples:")) << command;
  }
  EXPECT_THAT(Run({"help", "lock"}).out, HasSubstr("LOCKD_SEQUENCER"));
  EXPECT_THAT(Run({"lock", "--help"}).out, HasSubstr("--lock-delay"));

  const RunResult nothing = Run({});
  EXPECT_EQ(nothing.exit_code, kUsage);
  EXPECT_THAT(nothing.err, HasSubstr("Usage: lockctl"));
  const RunResult unknown = Run({"frobnicate"});
  EXPECT_EQ(unknown.exit_code, kUsage);
  EXPECT_THAT(unknown.err, HasSubstr("unknown command \"frobnicate\""));
  const RunResult missing = Run({"get"});
  EXPECT_EQ(missing.exit_code, kUsage);
  EXPECT_THAT(missing.err, HasSubstr("expected: lockctl get PATH"));
  EXPECT_EQ(Run({"get", "/a", "/b"}).exit_code, kUsage);
  const RunResult bad_flag = Run({"get", "--bogus", "/a"});
  EXPECT_EQ(bad_flag.exit_code, kUsage);
  EXPECT_THAT(bad_flag.err, HasSubstr("unknown flag --bogus for 'get' (see "
                                      "'lockctl help get')"));
  EXPECT_EQ(Run({"--output=xml", "status"}).exit_code, kUsage);
  const RunResult bad_duration = Run({"lock", "--wait=10", "/x"});
  EXPECT_EQ(bad_duration.exit_code, kUsage);
  EXPECT_THAT(bad_duration.err, HasSubstr("use a number with a unit"));
  EXPECT_EQ(Run({"get", "/x", "--", "true"}).exit_code, kUsage);
  const RunResult no_fit = Run({"lock", "--ttl=2s", "--lock-delay=0s",
                                "--kill-grace=3s", "/x", "--", "true"});
  EXPECT_EQ(no_fit.exit_code, kUsage);
  EXPECT_THAT(no_fit.err, HasSubstr("--kill-grace=3s does not fit"));
  EXPECT_EQ(Run({"lock", "--ttl=500ms", "/x"}).exit_code, kUsage);
  EXPECT_EQ(Run({"lock", "--lock-delay=61s", "/x"}).exit_code, kUsage);
  // A path the cell rejects is a usage error too.
  const RunResult bad_path = Run({"get", "no-slash"});
  EXPECT_EQ(bad_path.exit_code, kUsage) << Describe(bad_path);
  // Errors are one line.
  EXPECT_EQ(std::count(bad_path.err.begin(), bad_path.err.end(), '\n'), 1)
      << bad_path.err;
}

TEST_F(LockctlTest, StatusAndMembers) {
  const RunResult status = Run({"status"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_THAT(status.out, ContainsRegex("leader +[123] \\(127.0.0.1:"));
  EXPECT_THAT(status.out, ContainsRegex("endpoints answering +3 of 3"));
  const RunResult json = Run({"-o", "json", "status"});
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  EXPECT_THAT(json.out, HasSubstr("\"role\":\"leader\",\"has_lease\":true"));

  const RunResult members = Run({"members"});
  ASSERT_EQ(members.exit_code, 0) << Describe(members);
  EXPECT_THAT(members.out, HasSubstr("HEALTH"));
  for (const std::string& address : cell().addresses()) {
    EXPECT_THAT(members.out, ContainsRegex(address + " +(leader|follower)"));
  }
  // Given one endpoint, the others come from the membership.
  const RunResult from_one =
      RunLockctl(LOCKCTL_BINARY, cell().address(1), dir_, {"members"});
  ASSERT_EQ(from_one.exit_code, 0) << Describe(from_one);
  EXPECT_THAT(from_one.out, HasSubstr(cell().address(3)));
}

TEST_F(LockctlTest, NodeCommandsAndTheirExitCodes) {
  RunResult put = Run({"put", "--parents", "/tour/config/db", "primary=a"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  EXPECT_EQ(put.out, "/tour/config/db: content generation 1\n");
  EXPECT_EQ(Run({"get", "/tour/config/db"}).out, "primary=a");
  EXPECT_EQ(Run({"put", "/tour/config/db"}, "from stdin").exit_code, 0);
  // Without a value and without the parent: said before reading stdin.
  const RunResult orphan = Run({"put", "/no/such/node"}, "unread");
  EXPECT_EQ(orphan.exit_code, kNotFound) << Describe(orphan);
  EXPECT_THAT(orphan.err, HasSubstr("the parent /no/such does not exist; "
                                    "create it first, or use --parents"));
  EXPECT_EQ(Run({"get", "/tour/config/db"}).out, "from stdin");

  // Compare-and-set.
  const RunResult stale = Run({"put", "--expect=1", "/tour/config/db", "x"});
  EXPECT_EQ(stale.exit_code, kCasMismatch) << Describe(stale);
  EXPECT_THAT(stale.err, HasSubstr("lockctl: put /tour/config/db: "));
  EXPECT_EQ(Run({"put", "--expect=2", "/tour/config/db", "b"}).exit_code, 0);
  EXPECT_EQ(Run({"put", "--create", "/tour/config/db", "c"}).exit_code,
            kCasMismatch);
  EXPECT_EQ(Run({"rm", "--expect=9", "/tour/config/db"}).exit_code,
            kCasMismatch);
  EXPECT_EQ(Run({"rm", "/tour/config"}).exit_code, kCasMismatch)
      << "a node with children";

  const RunResult stat = Run({"stat", "/tour/config/db"});
  ASSERT_EQ(stat.exit_code, 0) << Describe(stat);
  EXPECT_THAT(stat.out, ContainsRegex("content generation +3"));
  const RunResult ls = Run({"ls", "/tour"});
  EXPECT_EQ(ls.out, "config\n");
  const RunResult ls_json = Run({"ls", "-o", "json", "/tour/config"});
  EXPECT_EQ(ls_json.out, "{\"path\":\"/tour/config\",\"children\":[\"db\"]}\n");
  const RunResult get_json = Run({"--output=json", "get", "/tour/config/db"});
  EXPECT_THAT(get_json.out,
              HasSubstr("\"content\":\"b\",\"meta\":{\"instance\":"));

  EXPECT_EQ(Run({"rm", "--expect=3", "/tour/config/db"}).exit_code, 0);
  const RunResult gone = Run({"get", "/tour/config/db"});
  EXPECT_EQ(gone.exit_code, kNotFound);
  EXPECT_THAT(gone.err, HasSubstr("does not exist"));
  const RunResult gone_json = Run({"get", "-o", "json", "/tour/config/db"});
  EXPECT_EQ(gone_json.exit_code, kNotFound);
  EXPECT_THAT(gone_json.out,
              HasSubstr("{\"error\":{\"command\":\"get /tour/config/db\","
                        "\"code\":\"NOT_FOUND\""));
  EXPECT_THAT(gone_json.out, HasSubstr("\"exit_code\":3}}"));
  EXPECT_EQ(Run({"put", "/no/parent", "x"}).exit_code, kNotFound);
}

TEST_F(LockctlTest, UnavailableCellExitsSeven) {
  absl::StatusOr<int> port = PickFreePort();
  ASSERT_TRUE(port.ok());
  const RunResult result =
      RunLockctl(LOCKCTL_BINARY, absl::StrCat("127.0.0.1:", *port), dir_,
                 {"--timeout=1s", "get", "/x"});
  EXPECT_EQ(result.exit_code, kUnavailable) << Describe(result);
  EXPECT_THAT(result.err, HasSubstr("cell unavailable"));
  const RunResult status =
      RunLockctl(LOCKCTL_BINARY, absl::StrCat("127.0.0.1:", *port), dir_,
                 {"--timeout=1s", "status"});
  EXPECT_EQ(status.exit_code, kUnavailable) << Describe(status);
}

TEST_F(LockctlTest, RacingLockCommandsNeverOverlap) {
  // Each command appends "start NS GEN" and "end NS GEN" around a pause.
  const std::string log = File("intervals");
  const std::string script = absl::StrCat(
      "echo \"start $(date +%s%N) $LOCKD_LOCK_GENERATION\" >> ", log,
      "; sleep 0.2; echo \"end $(date +%s%N) $LOCKD_LOCK_GENERATION\" >> ",
      log);
  constexpr int kWorkers = 2;
  constexpr int kRounds = 3;
  std::vector<std::thread> workers;
  std::vector<int> failures(kWorkers, 0);
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      for (int round = 0; round < kRounds; ++round) {
        const RunResult result =
            Run({"lock", "/race", "--", "sh", "-c", script});
        if (result.exit_code != 0) {
          ++failures[w];
          ADD_FAILURE() << Describe(result);
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  ASSERT_EQ(failures, std::vector<int>(kWorkers, 0));

  const std::vector<std::string> lines =
      absl::StrSplit(ReadFile(log), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u * kWorkers * kRounds) << ReadFile(log);
  // In file order (appends are atomic): start, end, start, end...; each
  // start after the previous end; generations strictly increase.
  uint64_t last_end = 0;
  uint64_t last_generation = 0;
  for (size_t i = 0; i < lines.size(); i += 2) {
    const std::vector<std::string> start = absl::StrSplit(lines[i], ' ');
    const std::vector<std::string> end = absl::StrSplit(lines[i + 1], ' ');
    ASSERT_EQ(start.size(), 3u);
    ASSERT_EQ(end.size(), 3u);
    ASSERT_EQ(start[0], "start") << ReadFile(log);
    ASSERT_EQ(end[0], "end") << ReadFile(log);
    uint64_t start_ns, end_ns, generation, end_generation;
    ASSERT_TRUE(absl::SimpleAtoi(start[1], &start_ns));
    ASSERT_TRUE(absl::SimpleAtoi(end[1], &end_ns));
    ASSERT_TRUE(absl::SimpleAtoi(start[2], &generation));
    ASSERT_TRUE(absl::SimpleAtoi(end[2], &end_generation));
    EXPECT_EQ(generation, end_generation);
    EXPECT_GT(start_ns, last_end) << "overlapping intervals:\n"
                                  << ReadFile(log);
    EXPECT_GT(generation, last_generation) << ReadFile(log);
    last_end = end_ns;
    last_generation = generation;
  }
}

TEST_F(LockctlTest, CommandGetsASequencerAndItsStatusIsReturned) {
  const RunResult checked =
      Run({"lock", "/seq", "--", "sh", "-c",
           absl::StrCat("echo \"$LOCKD_SEQUENCER\" > ", File("sequencer"),
                        "; lockctl check-sequencer \"$LOCKD_SEQUENCER\"")});
  ASSERT_EQ(checked.exit_code, 0) << Describe(checked);
  EXPECT_EQ(checked.out, "valid\n");
  std::string sequencer = ReadFile(File("sequencer"));
  ASSERT_THAT(sequencer,
              ContainsRegex("^lockd1:exclusive:[0-9]+:[0-9]+:[0-9]+:/seq\n$"));
  sequencer.pop_back();
  // Released when the command ended.
  const RunResult stale = Run({"check-sequencer", sequencer});
  EXPECT_EQ(stale.exit_code, kSequencerInvalid) << Describe(stale);
  EXPECT_THAT(stale.out, HasSubstr("invalid: "));
  EXPECT_EQ(Run({"check-sequencer", "lockd1:bogus"}).exit_code, kUsage);

  EXPECT_EQ(Run({"lock", "/seq", "--", "sh", "-c", "exit 42"}).exit_code, 42);
  const RunResult missing = Run({"lock", "/seq", "--", "/nonexistent/cmd"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_THAT(missing.err, HasSubstr("cannot run /nonexistent/cmd"));
  EXPECT_EQ(Run({"lock", "/seq", "--", "sh", "-c", "kill -9 $$"}).exit_code,
            128 + SIGKILL);
}

TEST_F(LockctlTest, NotAcquiredBeforeTheWaitRunsOut) {
  auto holder = Start({"lock", "/busy"});
  ASSERT_TRUE(
      PollUntil([&] { return !holder->Out().empty(); }, absl::Seconds(30)))
      << holder->Err();
  EXPECT_THAT(holder->Out(), HasSubstr("lock /busy: held, generation "));

  const RunResult once = Run({"lock", "--wait=0", "/busy", "--", "true"});
  EXPECT_EQ(once.exit_code, kNotAcquired) << Describe(once);
  const RunResult waited = Run({"lock", "--wait=300ms", "/busy"});
  EXPECT_EQ(waited.exit_code, kNotAcquired) << Describe(waited);
  // Listed while held.
  const RunResult locks = Run({"locks", "/busy"});
  ASSERT_EQ(locks.exit_code, 0) << Describe(locks);
  EXPECT_THAT(locks.out, ContainsRegex("/busy +[0-9]+ +[0-9]+/exclusive"));
  const RunResult sessions = Run({"sessions"});
  ASSERT_EQ(sessions.exit_code, 0) << Describe(sessions);
  EXPECT_THAT(sessions.out, ContainsRegex("lockctl lock /busy .*/busy"));

  // A waiter interrupted by SIGTERM leaves the queue.
  auto waiter = Start({"lock", "/busy"});
  ASSERT_TRUE(PollUntil(
      [&] {
        const RunResult r = Run({"-o", "json", "locks", "/busy"});
        return absl::StrContains(r.out, "\"waiters\":[{");
      },
      absl::Seconds(30), absl::Milliseconds(100)));
  waiter->Signal(SIGTERM);
  EXPECT_EQ(waiter->Wait(absl::Seconds(30)), 128 + SIGTERM);
  EXPECT_THAT(Run({"-o", "json", "locks", "/busy"}).out,
              HasSubstr("\"waiters\":[]"));

  holder->Signal(SIGTERM);
  EXPECT_EQ(holder->Wait(absl::Seconds(30)), 0) << holder->Err();
  EXPECT_EQ(Run({"lock", "--wait=0", "/busy", "--", "true"}).exit_code, 0);
  // Empty listings say so instead of printing a bare header.
  EXPECT_EQ(Run({"locks", "/busy"}).out, "no locks under /busy\n");
}

TEST_F(LockctlTest, SignalsAreForwardedToTheCommand) {
  const std::string script = absl::StrCat(
      "trap 'echo usr1 >> ", File("signals"), "' USR1; trap 'echo term >> ",
      File("signals"), "; exit 3' TERM; echo ready >> ", File("signals"),
      "; while true; do sleep 0.05; done");
  auto process = Start({"lock", "/signals", "--", "sh", "-c", script});
  ASSERT_TRUE(WaitForFile("signals", "ready")) << process->Err();
  process->Signal(SIGUSR1);
  ASSERT_TRUE(WaitForFile("signals", "usr1")) << process->Err();
  process->Signal(SIGTERM);
  EXPECT_EQ(process->Wait(absl::Seconds(30)), 3) << process->Err();
  EXPECT_EQ(ReadFile(File("signals")), "ready\nusr1\nterm\n");
  // The lock was released.
  EXPECT_EQ(Run({"lock", "--wait=0", "/signals", "--", "true"}).exit_code, 0);
}

TEST_F(LockctlTest, KilledHolderHandsTheLockOnAfterTtlPlusLockDelay) {
  constexpr absl::Duration kTtl = absl::Seconds(2);
  constexpr absl::Duration kLockDelay = absl::Seconds(1);
  auto holder = Start({"lock", "--ttl=2s", "--lock-delay=1s",
                       "--kill-grace=500ms", "/handover", "--", "sh", "-c",
                       absl::StrCat("echo $$ $LOCKD_LOCK_GENERATION > ",
                                    File("holder"), "; exec sleep 600")});
  ASSERT_TRUE(WaitForFile("holder", "\n")) << holder->Err();
  auto waiter =
      Start({"lock", "/handover", "--", "sh", "-c",
             absl::StrCat("echo $LOCKD_LOCK_GENERATION > ", File("waiter"))});
  ASSERT_TRUE(PollUntil(
      [&] {
        return absl::StrContains(Run({"-o", "json", "locks", "/handover"}).out,
                                 "\"waiters\":[{");
      },
      absl::Seconds(30), absl::Milliseconds(50)));

  const absl::Time killed = absl::Now();
  holder->Signal(SIGKILL);
  ASSERT_EQ(holder->Wait(absl::Seconds(10)), 128 + SIGKILL);
  ASSERT_TRUE(WaitForFile("waiter", "\n", absl::Seconds(30))) << waiter->Err();
  const absl::Duration handover = absl::Now() - killed;
  EXPECT_EQ(waiter->Wait(absl::Seconds(30)), 0) << waiter->Err();
  // The cell expires the holder's session no earlier than 2/3 TTL after
  // the kill (its last keep-alive went out at most TTL/3 before), then
  // keeps the lock for the lock-delay (cell time may run 5% fast).
  EXPECT_GE(handover, (kTtl * 2 / 3 + kLockDelay) * 0.95);
  EXPECT_LE(handover, kTtl + kLockDelay + absl::Seconds(3));

  const std::vector<std::string> holder_line = absl::StrSplit(
      ReadFile(File("holder")), absl::ByAnyChar(" \n"), absl::SkipEmpty());
  ASSERT_EQ(holder_line.size(), 2u);
  uint64_t child_pid, holder_generation, waiter_generation;
  ASSERT_TRUE(absl::SimpleAtoi(holder_line[0], &child_pid));
  ASSERT_TRUE(absl::SimpleAtoi(holder_line[1], &holder_generation));
  ASSERT_TRUE(
      absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadFile(File("waiter"))),
                       &waiter_generation));
  EXPECT_GT(waiter_generation, holder_generation);
  // The holder's command died with lockctl.
  EXPECT_TRUE(
      PollUntil([&] { return kill(static_cast<pid_t>(child_pid), 0) != 0; },
                absl::Seconds(10)));
}

TEST_F(LockctlTest, WatchPrintsChangesUntilCount) {
  ASSERT_EQ(Run({"put", "/watched", "v1"}).exit_code, 0);
  auto watch = Start({"watch", "--count=2", "/watched"});
  ASSERT_TRUE(PollUntil(
      [&] { return absl::StrContains(watch->Err(), "watching /watched"); },
      absl::Seconds(30)))
      << watch->Err();
  ASSERT_EQ(Run({"put", "/watched", "v2"}).exit_code, 0);
  ASSERT_EQ(Run({"put", "/watched", "v3"}).exit_code, 0);
  EXPECT_EQ(watch->Wait(absl::Seconds(30)), 0) << watch->Err();
  const std::vector<std::string> lines =
      absl::StrSplit(watch->Out(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << watch->Out();
  for (const std::string& line : lines) {
    EXPECT_THAT(line, ContainsRegex("^20[0-9-]+T[0-9:.]+Z  CONTENT_CHANGED  "
                                    "/watched$"));
  }
  EXPECT_EQ(Run({"watch", "/not-there"}).exit_code, kNotFound);
}

TEST_F(LockctlTest, ElectLeaderAndObserve) {
  auto observer = Start({"observe", "--count=5", "tour"});
  ASSERT_TRUE(
      PollUntil([&] { return absl::StrContains(observer->Out(), "no leader"); },
                absl::Seconds(30)))
      << observer->Err();
  const RunResult no_leader = Run({"leader", "tour"});
  EXPECT_EQ(no_leader.exit_code, kNotFound) << Describe(no_leader);

  const RunResult first =
      Run({"elect", "tour", "host-a", "--", "sh", "-c",
           "test \"$LOCKD_ELECTION_VALUE\" = host-a && lockctl leader tour"});
  ASSERT_EQ(first.exit_code, 0) << Describe(first);
  EXPECT_THAT(first.out, ContainsRegex("tour +host-a +[0-9]+ +[0-9]+"));

  auto second = Start({"elect", "tour", "host-b"});
  ASSERT_TRUE(
      PollUntil([&] { return !second->Out().empty(); }, absl::Seconds(30)))
      << second->Err();
  // Election words, not a lock's, and the value.
  EXPECT_THAT(second->Out(),
              ContainsRegex("^elect tour: leading with value host-b, "
                            "generation [0-9]+, sequencer lockd1:"));
  EXPECT_EQ(Run({"elect", "--wait=0", "tour", "host-c"}).exit_code,
            kNotAcquired);
  second->Signal(SIGINT);
  EXPECT_EQ(second->Wait(absl::Seconds(30)), 0) << second->Err();

  EXPECT_EQ(observer->Wait(absl::Seconds(30)), 0) << observer->Err();
  const std::vector<std::string> lines =
      absl::StrSplit(observer->Out(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << observer->Out();
  EXPECT_THAT(lines[0], HasSubstr("tour: no leader"));
  EXPECT_THAT(lines[1], HasSubstr("tour: host-a (session "));
  EXPECT_THAT(lines[2], HasSubstr("tour: no leader"));
  EXPECT_THAT(lines[3], HasSubstr("tour: host-b (session "));
  EXPECT_THAT(lines[4], HasSubstr("tour: no leader"));
}

TEST_F(LockctlTest, ALeadingElectProclaimsAndResignsFromStandardInput) {
  auto observer = Start({"observe", "--count=4", "stdin-election"});
  ASSERT_TRUE(
      PollUntil([&] { return absl::StrContains(observer->Out(), "no leader"); },
                absl::Seconds(30)))
      << observer->Err();
  const RunResult elect =
      Run({"elect", "stdin-election", "v1"}, "proclaim v2\nbogus\nresign\n");
  EXPECT_EQ(elect.exit_code, 0) << Describe(elect);
  EXPECT_THAT(elect.out, HasSubstr("leading with value v1"));
  EXPECT_THAT(elect.out,
              HasSubstr("elect stdin-election: proclaimed value v2"));
  EXPECT_THAT(elect.err, HasSubstr("unknown input \"bogus\""));
  // The observer saw: no leader, v1, v2, no leader.
  EXPECT_EQ(observer->Wait(absl::Seconds(30)), 0) << observer->Err();
  const std::vector<std::string> lines =
      absl::StrSplit(observer->Out(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << observer->Out();
  EXPECT_THAT(lines[1], HasSubstr("stdin-election: v1 (session "));
  EXPECT_THAT(lines[2], HasSubstr("stdin-election: v2 (session "));
  EXPECT_THAT(lines[3], HasSubstr("stdin-election: no leader"));
}

TEST_F(LockctlTest, TheCommandsWholeProcessGroupEndsBeforeTheRelease) {
  // CMD leaves a process behind that ignores SIGTERM.
  const std::string script =
      absl::StrCat("(trap '' TERM; exec sleep 600) & echo $! > ",
                   File("leftover"), "; exit 7");
  const RunResult result =
      Run({"lock", "--kill-grace=300ms", "/group", "--", "sh", "-c", script});
  EXPECT_EQ(result.exit_code, 7) << Describe(result);
  EXPECT_THAT(result.err, HasSubstr("left processes in its group"));
  uint64_t leftover = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      absl::StripAsciiWhitespace(ReadFile(File("leftover"))), &leftover));
  // Reaped by lockctl (its subreaper) before it exited.
  EXPECT_NE(kill(static_cast<pid_t>(leftover), 0), 0);

  // A forwarded signal reaches the whole group.
  auto process =
      Start({"lock", "/group", "--", "sh", "-c",
             absl::StrCat("sleep 600 & echo $! > ", File("child"), "; wait")});
  ASSERT_TRUE(WaitForFile("child", "\n")) << process->Err();
  process->Signal(SIGTERM);
  EXPECT_EQ(process->Wait(absl::Seconds(30)), 128 + SIGTERM) << process->Err();
  uint64_t child = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      absl::StripAsciiWhitespace(ReadFile(File("child"))), &child));
  EXPECT_NE(kill(static_cast<pid_t>(child), 0), 0);
}

TEST_F(LockctlTest, AStoppedHolderKillsItsCommandAtOnceWhenItResumes) {
  const std::string script =
      absl::StrCat("trap '' TERM; echo started > ", File("cmd"),
                   "; while true; do sleep 0.05; done");
  auto holder = Start({"lock", "--ttl=4s", "--lock-delay=4s", "--kill-grace=3s",
                       "/stopped", "--", "sh", "-c", script});
  ASSERT_TRUE(WaitForFile("cmd", "started")) << holder->Err();
  holder->Signal(SIGSTOP);
  // The cell expires the session and, after the lock-delay, grants the
  // lock to someone else.
  const RunResult taker = Run({"lock", "--wait=30s", "/stopped", "--", "true"});
  EXPECT_EQ(taker.exit_code, 0) << Describe(taker);
  const absl::Time resumed = absl::Now();
  holder->Signal(SIGCONT);
  // Its stop time passed long ago: SIGKILL at once, not SIGTERM and the
  // 3 s grace (the command ignores SIGTERM).
  EXPECT_EQ(holder->Wait(absl::Seconds(30)), kSessionLost) << holder->Err();
  EXPECT_LT(absl::Now() - resumed, absl::Seconds(2)) << holder->Err();
  EXPECT_THAT(holder->Err(), HasSubstr("signal 9"));
}

TEST_F(LockctlTest, GetIsByteExactAndBinaryContentIsBase64InJson) {
  const std::string binary("\x00\xff\x01line\n\xfe\x80tail",
                           sizeof("\x00\xff\x01line\n\xfe\x80tail") - 1);
  ASSERT_EQ(binary.size(), 14u);
  const RunResult put = Run({"put", "/binary"}, binary);
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  const RunResult get = Run({"get", "/binary"});
  ASSERT_EQ(get.exit_code, 0) << Describe(get);
  EXPECT_EQ(get.out, binary);
  const RunResult json = Run({"-o", "json", "get", "/binary"});
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  EXPECT_THAT(json.out,
              HasSubstr(absl::StrCat("\"content_base64\":\"",
                                     absl::Base64Escape(binary), "\"")));
  EXPECT_THAT(json.out, Not(HasSubstr("\"content\":")));
  EXPECT_THAT(json.out, HasSubstr("\"content_size\":14"));

  // Text keeps "content", and no newline is added off a terminal.
  ASSERT_EQ(Run({"put", "/text", "h\xc3\xa9"}).exit_code, 0);
  EXPECT_EQ(Run({"get", "/text"}).out, "h\xc3\xa9");
  EXPECT_THAT(Run({"-o", "json", "get", "/text"}).out,
              HasSubstr("\"content\":\"h\xc3\xa9\""));
  ASSERT_EQ(Run({"put", "/text"}, "").exit_code, 0);
  EXPECT_EQ(Run({"get", "/text"}).out, "");
}

TEST_F(LockctlTest, PutChecksTheContentLimitAndTakesValuesAfterDashes) {
  const std::string at_limit(65536, 'a');
  const RunResult fits = Run({"put", "/limit"}, at_limit);
  ASSERT_EQ(fits.exit_code, 0) << Describe(fits);
  EXPECT_EQ(Run({"get", "/limit"}).out, at_limit);

  // Too large on the command line or on stdin: the same usage error.
  const RunResult argument =
      Run({"put", "/limit", std::string(70 * 1024, 'b')});
  EXPECT_EQ(argument.exit_code, kUsage) << Describe(argument);
  EXPECT_THAT(argument.err,
              HasSubstr("lockctl: put /limit: the value is larger than 65536 "
                        "bytes, the cell's content limit"));
  EXPECT_EQ(std::count(argument.err.begin(), argument.err.end(), '\n'), 1)
      << argument.err;
  const RunResult input = Run({"put", "/limit"}, std::string(1100 * 1000, 'c'));
  EXPECT_EQ(input.exit_code, kUsage) << Describe(input);
  EXPECT_EQ(input.err, argument.err);
  const RunResult over_by_one = Run({"put", "/limit"}, std::string(65537, 'd'));
  EXPECT_EQ(over_by_one.exit_code, kUsage) << Describe(over_by_one);
  EXPECT_THAT(Run({"stat", "/limit"}).out,
              ContainsRegex("content generation +1\n"));

  // A value that starts with '-' goes after "--".
  const RunResult dash = Run({"put", "/dash", "-5"});
  EXPECT_EQ(dash.exit_code, kUsage) << Describe(dash);
  EXPECT_THAT(dash.err, HasSubstr("goes after --"));
  const RunResult after = Run({"put", "/dash", "--", "-5"});
  ASSERT_EQ(after.exit_code, 0) << Describe(after);
  EXPECT_EQ(Run({"get", "/dash"}).out, "-5");
  ASSERT_EQ(Run({"put", "--", "/dash", "--create"}).exit_code, 0);
  EXPECT_EQ(Run({"get", "/dash"}).out, "--create");
  EXPECT_EQ(Run({"get", "--", "/dash"}).out, "--create");
  EXPECT_EQ(Run({"put", "/dash", "--", "a", "b"}).exit_code, kUsage);
}

TEST_F(LockctlTest, UsageErrorsAndResultsInJson) {
  // Usage errors come in JSON when it was asked for, wherever the flag is.
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"-o", "json", "frobnicate"},
           {"--output", "json", "get", "--bogus", "/x"},
           {"-ojson", "lock", "--wait=inf", "/x"},
           {"get", "/x", "--output=json", "--ttl=1s"},
           {"--output=json"}}) {
    const RunResult result = Run(args);
    EXPECT_EQ(result.exit_code, kUsage) << Describe(result);
    EXPECT_THAT(result.out, StartsWith("{\"error\":{\"command\":"))
        << Describe(result);
    EXPECT_THAT(result.out, HasSubstr("\"exit_code\":2}}\n"));
    EXPECT_EQ(result.err, "") << Describe(result);
  }
  // Help is offered for commands, not for whatever came first.
  const RunResult not_a_command = Run({"/x"});
  EXPECT_EQ(not_a_command.exit_code, kUsage);
  EXPECT_THAT(not_a_command.err, HasSubstr("(see 'lockctl help')"));
  EXPECT_THAT(Run({"get"}).err, HasSubstr("(see 'lockctl help get')"));
  const RunResult no_address = Run({"--endpoints=,", "status"});
  EXPECT_EQ(no_address.exit_code, kUsage) << Describe(no_address);
  EXPECT_THAT(no_address.err, HasSubstr("--endpoints lists no address"));
  const RunResult infinite = Run({"lock", "--wait=inf", "/x"});
  EXPECT_EQ(infinite.exit_code, kUsage) << Describe(infinite);
  EXPECT_THAT(infinite.err, HasSubstr("use a number with a unit"));

  // status: the leader's address once, inside "leader".
  const RunResult status = Run({"-o", "json", "status"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_THAT(status.out,
              ContainsRegex("^\\{\"leader\":\\{\"id\":[123],\"address\":"
                            "\"127.0.0.1:[0-9]+\",\"role\":\"leader\""));
  EXPECT_THAT(status.out, Not(HasSubstr("leader_address")));
  EXPECT_THAT(status.out, Not(HasSubstr("leader_id")));
  // members: every row has its id.
  const RunResult members = Run({"-o", "json", "members"});
  ASSERT_EQ(members.exit_code, 0) << Describe(members);
  for (int id = 1; id <= cell().size(); ++id) {
    EXPECT_THAT(members.out, HasSubstr(absl::StrCat(
                                 "{\"id\":", id, ",\"address\":\"",
                                 cell().address(id), "\",\"health\":\"ok\"")));
  }
  // No leader: an error for `leader`, a null leader for `observe`.
  const RunResult leader = Run({"-o", "json", "leader", "nobody"});
  EXPECT_EQ(leader.exit_code, kNotFound) << Describe(leader);
  EXPECT_THAT(leader.out, StartsWith("{\"error\":"));
  const RunResult observe =
      Run({"-o", "json", "observe", "--count=1", "nobody"});
  EXPECT_EQ(observe.exit_code, 0) << Describe(observe);
  EXPECT_EQ(observe.out, "{\"election\":\"nobody\",\"leader\":null}\n");
}

TEST_F(LockctlTest, WatchWarnsWhenTheCellDropsEvents) {
  ASSERT_EQ(Run({"put", "/dropped", "v0"}).exit_code, 0);
  auto watch = Start({"-o", "json", "watch", "--ttl=60s", "/dropped"});
  // The watch's session is named after it.
  ASSERT_TRUE(PollUntil(
      [&] {
        return absl::StrContains(Run({"sessions"}).out,
                                 "lockctl watch /dropped (");
      },
      absl::Seconds(30), absl::Milliseconds(100)))
      << watch->Err();
  // Once an event came through, the watch is in place.
  ASSERT_TRUE(PollUntil(
      [&] {
        if (Run({"put", "/dropped", "v1"}).exit_code != 0) return false;
        return absl::StrContains(watch->Out(), "CONTENT_CHANGED");
      },
      absl::Seconds(30), absl::Milliseconds(200)))
      << watch->Err();

  // While lockctl is stopped, more events pile up than the cell keeps
  // (max_events_per_session, 1024).
  watch->Signal(SIGSTOP);
  integration::ClientOptions options;
  options.endpoints = cell().addresses();
  absl::StatusOr<std::unique_ptr<integration::TestClient>> writer =
      integration::TestClient::Connect(options);
  ASSERT_TRUE(writer.ok()) << writer.status();
  constexpr int kThreads = 4;
  constexpr int kSetsPerThread = 300;
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kSetsPerThread; ++i) {
        if (!(*writer)->Set("/dropped", absl::StrCat(t, "-", i)).ok()) {
          ++failed;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  watch->Signal(SIGCONT);
  ASSERT_EQ(failed, 0);

  ASSERT_TRUE(PollUntil(
      [&] { return absl::StrContains(watch->Out(), "{\"events_lost\":"); },
      absl::Seconds(30)))
      << watch->Err();
  EXPECT_THAT(watch->Err(),
              ContainsRegex("lockctl: watch /dropped: [1-9][0-9]* events "
                            "were dropped \\(the cell keeps 1024 per "
                            "session\\); re-read the node\n"));
  watch->Signal(SIGTERM);
  EXPECT_EQ(watch->Wait(absl::Seconds(30)), 0) << watch->Err();
  EXPECT_THAT(watch->Out(),
              ContainsRegex("\n\\{\"events_lost\":[1-9][0-9]*\\}\n"));
}

TEST_F(LockctlTest, CreatePlainSequentialAndEphemeralNodes) {
  const RunResult plain = Run({"create", "/made", "v"});
  ASSERT_EQ(plain.exit_code, 0) << Describe(plain);
  EXPECT_EQ(plain.out, "/made\n");
  EXPECT_EQ(Run({"create", "/made"}).exit_code, kCasMismatch);
  const RunResult first = Run({"create", "--sequential", "/made/job-", "a"});
  const RunResult second = Run({"create", "--sequential", "/made/job-", "b"});
  EXPECT_THAT(first.out, ContainsRegex("^/made/job-[0-9]{10}\n$"));
  EXPECT_THAT(second.out, ContainsRegex("^/made/job-[0-9]{10}\n$"));
  EXPECT_LT(first.out, second.out);

  auto holder = Start({"create", "--ephemeral", "/made/eph", "here"});
  ASSERT_TRUE(PollUntil(
      [&] {
        return Run({"get", "/made/eph"}).out == "here";
      },
      absl::Seconds(30)))
      << holder->Err();
  EXPECT_THAT(holder->Err(), HasSubstr("/made/eph exists while this runs"));
  holder->Signal(SIGINT);
  EXPECT_EQ(holder->Wait(absl::Seconds(30)), 0) << holder->Err();
  EXPECT_EQ(Run({"get", "/made/eph"}).exit_code, kNotFound);
  EXPECT_EQ(Run({"create", "--ttl=5s", "/made/x"}).exit_code, kUsage);
}

TEST_F(LockctlTest, AclGetAndSet) {
  EXPECT_EQ(Run({"acl", "get", "/acl-test"}).exit_code, kNotFound);
  ASSERT_EQ(Run({"put", "/acl-test", "x"}).exit_code, 0);
  const RunResult fresh = Run({"acl", "get", "/acl-test"});
  ASSERT_EQ(fresh.exit_code, 0) << Describe(fresh);
  EXPECT_THAT(fresh.out, HasSubstr("write       - (everyone)"));
  EXPECT_THAT(fresh.out, HasSubstr("ACL generation 1"));
  const RunResult set = Run({"acl", "set", "/acl-test", "--write=ops"});
  ASSERT_EQ(set.exit_code, 0) << Describe(set);
  EXPECT_THAT(set.out, HasSubstr("write       ops (/acl/ops)"));
  EXPECT_THAT(set.out, HasSubstr("read        - (everyone)"));
  EXPECT_THAT(set.out, HasSubstr("ACL generation 2"));
  EXPECT_THAT(Run({"-o", "json", "acl", "get", "/acl-test"}).out,
              HasSubstr("\"write_acl\":\"ops\",\"change_acl\":\"\","
                        "\"acl_generation\":2"));
  EXPECT_THAT(Run({"stat", "/acl-test"}).out, HasSubstr("ops (/acl/ops)"));
  // Without client certificates the cell enforces no ACLs: writes go on.
  EXPECT_EQ(Run({"put", "/acl-test", "y"}).exit_code, 0);
  const RunResult nothing = Run({"acl", "set", "/acl-test"});
  EXPECT_EQ(nothing.exit_code, kUsage);
  EXPECT_THAT(nothing.out + nothing.err,
              HasSubstr("needs at least one of --read, --write, --change"));
  EXPECT_EQ(Run({"acl", "frob", "/acl-test"}).exit_code, kUsage);
  EXPECT_EQ(Run({"acl", "get", "/acl-test", "--read=x"}).exit_code, kUsage);
}

// A cell with TLS: lockctl needs the CA.
class LockctlTlsTest : public LockctlTest {
 protected:
  static void SetUpTestSuite() {}
  static void TearDownTestSuite() {}
  void SetUp() override {
    LockctlTest::SetUp();
    ASSERT_TRUE(MakeCertificates(File("certs"), {1, 2, 3}, {"alice"}).ok());
    CellOptions options;
    options.lockd_binary = LOCKD_BINARY;
    options.tls_dir = File("certs");
    absl::StatusOr<std::unique_ptr<Cell>> cell = Cell::Start(options);
    ASSERT_TRUE(cell.ok()) << cell.status();
    own_cell_ = *std::move(cell);
    ASSERT_TRUE(own_cell_->WaitForLeader(absl::Seconds(20)).ok());
  }
  Cell& cell() override { return *own_cell_; }
  std::unique_ptr<Cell> own_cell_;
};

TEST_F(LockctlTlsTest, TalksTlsWithTheCa) {
  const std::string ca = "--ca=" + File("certs/ca.pem");
  const RunResult status = Run({ca, "status"});
  EXPECT_EQ(status.exit_code, 0) << Describe(status);
  const RunResult alice =
      Run({ca, "--cert=" + File("certs/client-alice.pem"),
           "--key=" + File("certs/client-alice.key"), "put", "/tls", "x"});
  EXPECT_EQ(alice.exit_code, 0) << Describe(alice);
  const RunResult no_key =
      Run({ca, "--cert=" + File("certs/client-alice.pem"), "status"});
  EXPECT_EQ(no_key.exit_code, kUsage);
  EXPECT_THAT(no_key.out + no_key.err, HasSubstr("needs its key"));
  const RunResult no_file = Run({"--ca=" + File("nope.pem"), "status"});
  EXPECT_EQ(no_file.exit_code, kUsage);
  EXPECT_THAT(no_file.out + no_file.err, HasSubstr("cannot read the TLS CA"));
}

// Tests that stop the cell get one of their own.
class LockctlLostSessionTest : public LockctlTest {
 protected:
  static void SetUpTestSuite() {}
  static void TearDownTestSuite() {}
  void SetUp() override {
    LockctlTest::SetUp();
    own_cell_ = StartCell();
  }
  Cell& cell() override { return *own_cell_; }
  std::unique_ptr<Cell> own_cell_;
};

// A backup taken under load and restored into a new cell.
class LockctlBackupTest : public LockctlLostSessionTest {};

TEST_F(LockctlBackupTest, SaveUnderLoadAndRestoreIntoANewCell) {
  integration::ClientOptions options;
  options.endpoints = cell().addresses();
  absl::StatusOr<std::unique_ptr<integration::TestClient>> client =
      integration::TestClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(
        (*client)
            ->Create(absl::StrCat("/keep-", i), absl::StrCat("value ", i))
            .ok());
  }
  ASSERT_TRUE((*client)->Create("/queue").ok());
  absl::StatusOr<v1::CreateNodeResponse> item =
      (*client)->Create("/queue/item-", "", false, /*sequential=*/true);
  ASSERT_TRUE(item.ok()) << item.status();
  ASSERT_TRUE((*client)->Create("/locked").ok());
  absl::StatusOr<v1::AcquireResponse> held =
      (*client)->Acquire("/locked", v1::EXCLUSIVE);
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_TRUE((*client)->Create("/busy", "0").ok());

  // Writes go on while the snapshot is taken and fetched.
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 1; !stop.load(); ++i) {
      if ((*client)->Set("/busy", absl::StrCat(i)).ok()) written.store(i);
    }
  });
  const RunResult save = Run({"snapshot", "save", File("cell.snap")});
  stop.store(true);
  writer.join();
  ASSERT_EQ(save.exit_code, 0) << Describe(save);
  EXPECT_THAT(save.out, HasSubstr("saved the state at log index"));
  EXPECT_GT(written.load(), 0);
  EXPECT_EQ(Run({"snapshot", "load", File("cell.snap")}).exit_code, kUsage);

  // A new cell from the backup, on new ports.
  CellOptions restored_options;
  restored_options.lockd_binary = LOCKD_BINARY;
  restored_options.extra_flags = {"--restore=" + File("cell.snap")};
  absl::StatusOr<std::unique_ptr<Cell>> restored =
      Cell::StartWithLeader(restored_options);
  ASSERT_TRUE(restored.ok()) << restored.status();
  options.endpoints = (*restored)->addresses();
  absl::StatusOr<std::unique_ptr<integration::TestClient>> reader =
      integration::TestClient::Connect(options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<v1::GetNodeResponse> got =
        (*reader)->Get(absl::StrCat("/keep-", i));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->content(), absl::StrCat("value ", i));
  }
  // The lock generation and the holder's session come along (the session
  // expires after its TTL unless its client finds the new cell) ...
  absl::StatusOr<v1::StatNodeResponse> locked = (*reader)->Stat("/locked");
  ASSERT_TRUE(locked.ok()) << locked.status();
  EXPECT_EQ(locked->meta().lock_generation(),
            held->sequencer().lock_generation());
  const RunResult locks = RunLockctl(LOCKCTL_BINARY, (*restored)->endpoints(),
                                     dir_, {"locks"}, absl::Seconds(30));
  EXPECT_THAT(locks.out, HasSubstr("/locked"));
  // ... and so do sequence numbers: the next item follows the saved one.
  absl::StatusOr<v1::CreateNodeResponse> next =
      (*reader)->Create("/queue/item-", "", false, /*sequential=*/true);
  ASSERT_TRUE(next.ok()) << next.status();
  uint64_t before = 0;
  uint64_t after = 0;
  ASSERT_TRUE(absl::SimpleAtoi(item->path().substr(12), &before));
  ASSERT_TRUE(absl::SimpleAtoi(next->path().substr(12), &after));
  EXPECT_EQ(after, before + 1);
  // The busy node holds one of the values written during the save.
  absl::StatusOr<v1::GetNodeResponse> busy = (*reader)->Get("/busy");
  ASSERT_TRUE(busy.ok()) << busy.status();
  int value = -1;
  ASSERT_TRUE(absl::SimpleAtoi(busy->content(), &value));
  EXPECT_LE(value, written.load());

  // A damaged backup is refused with the reason.
  std::string bytes = ReadFile(File("cell.snap"));
  bytes[bytes.size() - 10] ^= 0x55;
  {
    std::ofstream out(File("damaged.snap"), std::ios::binary);
    out << bytes;
  }
  integration::ProcessOptions process;
  process.argv = {LOCKD_BINARY, "--id=1", "--members=1@127.0.0.1:1/127.0.0.1:2",
                  "--data_dir=" + File("damaged-data"),
                  "--restore=" + File("damaged.snap")};
  process.output_path = File("damaged.out");
  const integration::ProcessResult refused =
      integration::RunToExit(process, absl::Seconds(20));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_THAT(refused.output, HasSubstr("the state is damaged"));
}

// Membership changes need a cell of their own.
class LockctlMemberTest : public LockctlLostSessionTest {};

TEST_F(LockctlMemberTest, ListAddPromoteRemoveAndHandOver) {
  const RunResult list = Run({"member", "list"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_THAT(list.out, HasSubstr("voter (leader)"));
  EXPECT_THAT(list.out, HasSubstr(cell().peer_address(1)));

  absl::StatusOr<int> added = own_cell_->AddReplica();
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(own_cell_->StartReplica(*added).ok());
  const std::string id = absl::StrCat(*added);
  const RunResult add = Run({"member", "add", id, cell().address(*added),
                             cell().peer_address(*added)});
  ASSERT_EQ(add.exit_code, 0) << Describe(add);
  EXPECT_THAT(add.out, HasSubstr("learner"));
  EXPECT_THAT(Run({"-o", "json", "member", "list"}).out,
              HasSubstr("\"id\":4,\"address\":\"" + cell().address(4) +
                        "\",\"peer_address\":\"" + cell().peer_address(4) +
                        "\",\"role\":\"learner\""));
  const RunResult promote = Run({"member", "promote", id});
  ASSERT_EQ(promote.exit_code, 0) << Describe(promote);
  EXPECT_THAT(promote.out, Not(HasSubstr("learner")));

  const RunResult handover = Run({"member", "handover"});
  ASSERT_EQ(handover.exit_code, 0) << Describe(handover);
  EXPECT_THAT(handover.out, HasSubstr("leadership handed to replica"));

  const RunResult remove = Run({"member", "remove", id});
  ASSERT_EQ(remove.exit_code, 0) << Describe(remove);
  EXPECT_THAT(remove.out, HasSubstr("retired ids (never members again): 4"));
  const RunResult back = Run({"member", "add", id, cell().address(*added),
                              cell().peer_address(*added)});
  EXPECT_NE(back.exit_code, 0);
  EXPECT_THAT(back.out + back.err, HasSubstr("add the replica under a new id"));

  EXPECT_EQ(Run({"member", "frob"}).exit_code, kUsage);
  EXPECT_EQ(Run({"member", "add", "5"}).exit_code, kUsage);
  const RunResult bad_id = Run({"member", "promote", "zero"});
  EXPECT_EQ(bad_id.exit_code, kUsage);
  EXPECT_THAT(bad_id.out + bad_id.err, HasSubstr("is not a member id"));
}

TEST_F(LockctlLostSessionTest, LostSessionStopsTheCommandInTime) {
  constexpr absl::Duration kTtl = absl::Seconds(3);
  constexpr absl::Duration kLockDelay = absl::Seconds(3);
  const std::string script = absl::StrCat(
      "trap 'echo term >> ", File("child"), "; exit 0' TERM; echo started >> ",
      File("child"), "; while true; do sleep 0.05; done");
  auto process =
      Start({"lock", "--ttl=3s", "--lock-delay=3s", "--kill-grace=500ms",
             "/lost", "--", "sh", "-c", script});
  ASSERT_TRUE(WaitForFile("child", "started")) << process->Err();
  const absl::Time cell_killed = absl::Now();
  for (int id = 1; id <= cell().size(); ++id) ASSERT_TRUE(cell().Kill(id).ok());

  ASSERT_TRUE(WaitForFile("child", "term", absl::Seconds(30)))
      << process->Err();
  const absl::Duration stopped = absl::Now() - cell_killed;
  EXPECT_EQ(process->Wait(absl::Seconds(30)), kSessionLost) << process->Err();
  EXPECT_THAT(process->Err(), HasSubstr("in jeopardy"));
  EXPECT_THAT(process->Err(), HasSubstr("stopped CMD"));
  // The safety bound: the cell could hand the lock on no earlier than the
  // session's expiry plus the lock-delay; the local lease ends before that
  // expiry, at most 0.9 TTL after the kill.
  EXPECT_LE(stopped, kTtl + kLockDelay) << process->Err();
}

TEST_F(LockctlLostSessionTest, SharedHolderStopsItsCommandBeforeItsLeaseEnds) {
  // A shared holder's expiry imposes no lock-delay, so its command must be
  // gone when the local lease ends (at most 0.9 TTL after the last answer).
  constexpr absl::Duration kTtl = absl::Seconds(3);
  const std::string script = absl::StrCat(
      "trap 'echo term >> ", File("child"), "; exit 0' TERM; echo started >> ",
      File("child"), "; while true; do sleep 0.05; done");
  auto process = Start({"lock", "--shared", "--ttl=3s", "--kill-grace=500ms",
                        "/shared", "--", "sh", "-c", script});
  ASSERT_TRUE(WaitForFile("child", "started")) << process->Err();
  const absl::Time cell_killed = absl::Now();
  for (int id = 1; id <= cell().size(); ++id) ASSERT_TRUE(cell().Kill(id).ok());
  ASSERT_TRUE(WaitForFile("child", "term", absl::Seconds(30)))
      << process->Err();
  EXPECT_LE(absl::Now() - cell_killed, kTtl * 0.9) << process->Err();
  EXPECT_EQ(process->Wait(absl::Seconds(30)), kSessionLost) << process->Err();
}

}  // namespace
}  // namespace lockd::cli_test
