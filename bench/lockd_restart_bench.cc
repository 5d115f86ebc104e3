// lockd_restart_bench: a rolling restart of a cell under load
// (docs/benchmarks.md, "Rolling restart").
//
// Starts a cell of real `lockd` processes on 127.0.0.1 with the server's
// default timing, keeps --writers clients writing a node each in a loop,
// and restarts every replica once, in id order: SIGTERM (or SIGKILL with
// --kill, for comparison), start again, wait until it has caught up, wait
// --settle_ms, next. Meanwhile it polls every replica's Cluster.Status every
// --poll_ms and reports, per restart, the longest time no replica served as
// leader with a lease, and the longest gap between two completed writes of
// any writer (which adds the client library's retry backoff).
//
//   lockd_restart_bench                # SIGTERM: the leader hands over
//   lockd_restart_bench --kill         # kill -9: an election timeout

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/conditions.h"
#include "tests/integration/cell.h"
#include "tests/integration/test_client.h"

#ifndef LOCKD_BINARY
#define LOCKD_BINARY ""
#endif
#ifndef LOCKD_BUILD_TYPE
#define LOCKD_BUILD_TYPE "unknown"
#endif

ABSL_FLAG(std::string, lockd_binary, LOCKD_BINARY,
          "The lockd binary for the cell this benchmark starts.");
ABSL_FLAG(int, replicas, 3, "Replicas of the cell.");
ABSL_FLAG(int, writers, 4, "Clients writing in a loop throughout.");
ABSL_FLAG(bool, kill, false, "Restart with SIGKILL instead of SIGTERM.");
ABSL_FLAG(int, poll_ms, 2, "Cluster.Status polling period.");
ABSL_FLAG(int, settle_ms, 2000, "Pause after each replica caught up.");
ABSL_FLAG(int, rounds, 1, "Rolling restarts of the whole cell.");

namespace lockd {
namespace {

using integration::Cell;
using integration::CellOptions;
using integration::TestClient;

// Records when a leader with a lease was seen, and the longest time none
// was, since the last Take().
class LeaderWatch {
 public:
  void Observe(bool serving, absl::Time now) {
    absl::MutexLock lock(&mu_);
    if (serving) {
      if (down_since_.has_value()) {
        longest_ = std::max(longest_, now - *down_since_);
        down_since_.reset();
      }
    } else if (!down_since_.has_value()) {
      down_since_ = now;
    }
  }
  absl::Duration Take() {
    absl::MutexLock lock(&mu_);
    absl::Duration longest = longest_;
    longest_ = absl::ZeroDuration();
    return longest;
  }

 private:
  absl::Mutex mu_;
  std::optional<absl::Time> down_since_;
  absl::Duration longest_ = absl::ZeroDuration();
};

// The longest gap between two completed writes of one writer since the
// last Take().
class WriteGaps {
 public:
  void Completed(int writer, absl::Time now) {
    absl::MutexLock lock(&mu_);
    if (last_.size() <= static_cast<size_t>(writer)) last_.resize(writer + 1);
    if (last_[writer] != absl::InfinitePast()) {
      longest_ = std::max(longest_, now - last_[writer]);
    }
    last_[writer] = now;
    ++writes_;
  }
  void Failed() {
    absl::MutexLock lock(&mu_);
    ++failures_;
  }
  absl::Duration Take() {
    absl::MutexLock lock(&mu_);
    absl::Duration longest = longest_;
    longest_ = absl::ZeroDuration();
    return longest;
  }
  uint64_t writes() {
    absl::MutexLock lock(&mu_);
    return writes_;
  }
  uint64_t failures() {
    absl::MutexLock lock(&mu_);
    return failures_;
  }

 private:
  absl::Mutex mu_;
  std::vector<absl::Time> last_;
  absl::Duration longest_ = absl::ZeroDuration();
  uint64_t writes_ = 0;
  uint64_t failures_ = 0;
};

int Run() {
  CellOptions options;
  options.lockd_binary = absl::GetFlag(FLAGS_lockd_binary);
  options.replicas = absl::GetFlag(FLAGS_replicas);
  absl::StatusOr<std::unique_ptr<Cell>> started =
      Cell::StartWithLeader(options);
  if (!started.ok()) {
    std::fprintf(stderr, "lockd_restart_bench: %s\n",
                 started.status().ToString().c_str());
    return 1;
  }
  Cell& cell = **started;
  std::printf("# lockd_restart_bench: %s restart, %d replicas, %d writers\n",
              absl::GetFlag(FLAGS_kill) ? "SIGKILL" : "SIGTERM", cell.size(),
              absl::GetFlag(FLAGS_writers));
  std::printf(
      "# cpu: %s; build: %s; fsync floor (4 KiB write + fdatasync): "
      "%.3f ms\n",
      bench::CpuModel().c_str(), LOCKD_BUILD_TYPE,
      bench::MeasureFsyncMs(cell.directory()));

  std::atomic<bool> stop{false};
  LeaderWatch watch;
  std::thread poller([&] {
    while (!stop.load()) {
      bool serving = false;
      for (int id = 1; id <= cell.size() && !serving; ++id) {
        absl::StatusOr<v1::StatusResponse> status =
            cell.Status(id, absl::Milliseconds(100));
        serving =
            status.ok() && status->role() == "leader" && status->has_lease();
      }
      watch.Observe(serving, absl::Now());
      absl::SleepFor(absl::Milliseconds(absl::GetFlag(FLAGS_poll_ms)));
    }
  });

  WriteGaps gaps;
  std::vector<std::thread> writers;
  for (int w = 0; w < absl::GetFlag(FLAGS_writers); ++w) {
    writers.emplace_back([&, w] {
      integration::ClientOptions client_options;
      client_options.endpoints = cell.addresses();
      client_options.client_name = absl::StrCat("restart-bench-", w);
      absl::StatusOr<std::unique_ptr<TestClient>> client =
          TestClient::Connect(client_options);
      if (!client.ok()) {
        std::fprintf(stderr, "writer %d: %s\n", w,
                     client.status().ToString().c_str());
        return;
      }
      const std::string path = absl::StrCat("/restart-bench-", w);
      if (!(*client)->Create(path, "0").ok()) gaps.Failed();
      for (uint64_t i = 1; !stop.load(); ++i) {
        const absl::StatusOr<v1::SetNodeResponse> set =
            (*client)->Set(path, absl::StrCat(i));
        if (set.ok()) {
          gaps.Completed(w, absl::Now());
        } else {
          gaps.Failed();
          std::fprintf(stderr, "writer %d: %s\n", w,
                       set.status().ToString().c_str());
        }
      }
    });
  }

  absl::SleepFor(absl::Seconds(2));
  watch.Take();
  gaps.Take();
  std::printf("%-6s %-8s %-10s %-22s %-18s\n", "ROUND", "REPLICA", "WAS",
              "LONGEST NO-LEADER (ms)", "LONGEST WRITE GAP (ms)");
  absl::Duration worst_leader_gap = absl::ZeroDuration();
  absl::Duration worst_write_gap = absl::ZeroDuration();
  for (int round = 1; round <= absl::GetFlag(FLAGS_rounds); ++round) {
    for (int id = 1; id <= cell.size(); ++id) {
      absl::StatusOr<v1::StatusResponse> before = cell.Status(id);
      const bool leader = before.ok() && before->role() == "leader";
      const absl::Status stopped =
          absl::GetFlag(FLAGS_kill) ? cell.Kill(id) : cell.Stop(id);
      if (!stopped.ok()) {
        std::fprintf(stderr, "stop %d: %s\n", id, stopped.ToString().c_str());
      }
      if (absl::Status restarted = cell.StartReplica(id); !restarted.ok()) {
        std::fprintf(stderr, "start %d: %s\n", id,
                     restarted.ToString().c_str());
        return 1;
      }
      absl::StatusOr<int> now_leader = cell.WaitForLeader(absl::Seconds(30));
      if (now_leader.ok()) {
        absl::StatusOr<v1::StatusResponse> status = cell.Status(*now_leader);
        if (status.ok()) {
          cell.WaitForApplied(id, status->commit_index(), absl::Seconds(30))
              .IgnoreError();
        }
      }
      absl::SleepFor(absl::Milliseconds(absl::GetFlag(FLAGS_settle_ms)));
      const absl::Duration leader_gap = watch.Take();
      const absl::Duration write_gap = gaps.Take();
      worst_leader_gap = std::max(worst_leader_gap, leader_gap);
      worst_write_gap = std::max(worst_write_gap, write_gap);
      std::printf("%-6d %-8d %-10s %-22.1f %-18.1f\n", round, id,
                  leader ? "leader" : "follower",
                  absl::ToDoubleMilliseconds(leader_gap),
                  absl::ToDoubleMilliseconds(write_gap));
    }
  }
  stop.store(true);
  for (std::thread& writer : writers) writer.join();
  poller.join();
  std::printf(
      "{\"restart\":\"%s\",\"worst_no_leader_ms\":%.1f,"
      "\"worst_write_gap_ms\":%.1f,\"writes\":%llu,\"failed_writes\":%llu}\n",
      absl::GetFlag(FLAGS_kill) ? "sigkill" : "sigterm",
      absl::ToDoubleMilliseconds(worst_leader_gap),
      absl::ToDoubleMilliseconds(worst_write_gap),
      static_cast<unsigned long long>(gaps.writes()),
      static_cast<unsigned long long>(gaps.failures()));
  return 0;
}

}  // namespace
}  // namespace lockd

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "A rolling restart under load: lockd_restart_bench [--kill]");
  absl::ParseCommandLine(argc, argv);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return lockd::Run();
}
