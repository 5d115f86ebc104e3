// lockd_bench: acquire/release throughput and latency of a lockd cell.
//
// Starts a cell of real `lockd` processes on 127.0.0.1 (the integration
// test harness, tests/integration/cell.h) unless --endpoints names a running
// one. --sessions clients, each with its own session, connection and thread
// (sync gRPC), loop Acquire(EXCLUSIVE) + Release for --seconds. By default
// every session locks a path of its own, so the figures are the service's
// cost without contention; --contended makes all sessions share --paths
// paths. Reports acquire+release pairs per second and the latency of a pair.
// Every grant also goes through an external fencing checker (mutual
// exclusion, lock generations only grow).
//
// --failover (own cell only) kills the leader with SIGKILL after
// --failover_after_s and reports the time from the kill to the next
// successful acquire.
//
//   lockd_bench                                  # 32 sessions, own paths, 10 s
//   lockd_bench --contended --paths=4 --wait_ms=100
//   lockd_bench --failover --seconds=10
//   lockd_bench --endpoints=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/conditions.h"
#include "grpcpp/grpcpp.h"
#include "lockd/client.h"
#include "protos/lockd.grpc.pb.h"
#include "tests/integration/cell.h"
#include "tests/integration/fencing_checker.h"
#include "tests/integration/test_client.h"

#ifndef LOCKD_BINARY
#define LOCKD_BINARY ""
#endif
#ifndef LOCKD_BUILD_TYPE
#define LOCKD_BUILD_TYPE "unknown"
#endif

ABSL_FLAG(std::string, endpoints, "",
          "Comma-separated addresses of a running cell. Empty: start a cell "
          "of --replicas lockd processes here.");
ABSL_FLAG(std::string, lockd_binary, LOCKD_BINARY,
          "The lockd binary for the cell this benchmark starts.");
ABSL_FLAG(int, replicas, 3, "Replicas of the cell this benchmark starts.");
ABSL_FLAG(int, tick_ms, 10, "--tick_ms of the cell this benchmark starts.");
ABSL_FLAG(int, heartbeat_ticks, 5, "--heartbeat_ticks of the started cell.");
ABSL_FLAG(int, election_ticks, 30, "--election_ticks of the started cell.");
ABSL_FLAG(std::string, data_dir, "",
          "Directory for the started cell's data and logs. Empty: a temporary "
          "directory, removed afterwards.");
ABSL_FLAG(int, sessions, 32, "Concurrent sessions, one thread each.");
ABSL_FLAG(double, seconds, 10, "Length of the measurement.");
ABSL_FLAG(bool, contended, false,
          "All sessions share --paths lock paths (default: one path each).");
ABSL_FLAG(int, paths, 4, "Shared lock paths with --contended.");
ABSL_FLAG(int, wait_ms, 100,
          "Acquire's wait_timeout_ms: 0 tries once; a held lock counts as "
          "busy and the session moves on to its next path.");
ABSL_FLAG(int64_t, ttl_ms, 10000, "Session TTL.");
ABSL_FLAG(bool, failover, false,
          "Kill the leader (SIGKILL) during the run and report the time to "
          "the next successful acquire. Needs a cell started here.");
ABSL_FLAG(double, failover_after_s, -1,
          "When to kill the leader; default: half of --seconds.");

namespace lockd::integration {
namespace {

using bench::CpuModel;
using bench::MeasureFsyncMs;
using bench::Percentile;

// Cluster.Status of one address, for the log-slot count.
absl::StatusOr<v1::StatusResponse> StatusOf(const std::string& address) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  v1::StatusResponse response;
  grpc::Status status = v1::Cluster::NewStub(NewChannel(address))
                            ->Status(&context, v1::StatusRequest(), &response);
  if (!status.ok()) return lockd::FromGrpcStatus(status);
  return response;
}

// The leader's applied index, found by asking every address.
uint64_t LeaderAppliedIndex(const std::vector<std::string>& addresses) {
  for (const std::string& address : addresses) {
    absl::StatusOr<v1::StatusResponse> status = StatusOf(address);
    if (status.ok() && status->role() == "leader") {
      return status->applied_index();
    }
  }
  return 0;
}

struct SessionResult {
  std::vector<double> pair_ms;
  uint64_t busy = 0;
  uint64_t errors = 0;
  std::string first_error;
};

int Run() {
  const int sessions = absl::GetFlag(FLAGS_sessions);
  const absl::Duration run_time = absl::Seconds(absl::GetFlag(FLAGS_seconds));
  const bool contended = absl::GetFlag(FLAGS_contended);
  const int paths = std::max(1, absl::GetFlag(FLAGS_paths));
  const int wait_ms = absl::GetFlag(FLAGS_wait_ms);
  const bool failover = absl::GetFlag(FLAGS_failover);
  absl::Duration failover_after =
      absl::Seconds(absl::GetFlag(FLAGS_failover_after_s));
  if (failover_after < absl::ZeroDuration()) failover_after = run_time / 2;

  std::unique_ptr<Cell> cell;
  std::vector<std::string> addresses;
  std::string cell_line;
  if (absl::GetFlag(FLAGS_endpoints).empty()) {
    CellOptions options;
    options.lockd_binary = absl::GetFlag(FLAGS_lockd_binary);
    options.replicas = absl::GetFlag(FLAGS_replicas);
    options.tick_ms = absl::GetFlag(FLAGS_tick_ms);
    options.heartbeat_ticks = absl::GetFlag(FLAGS_heartbeat_ticks);
    options.election_ticks = absl::GetFlag(FLAGS_election_ticks);
    options.directory = absl::GetFlag(FLAGS_data_dir);
    absl::StatusOr<std::unique_ptr<Cell>> started =
        Cell::StartWithLeader(options);
    if (!started.ok()) {
      std::fprintf(stderr, "lockd_bench: %s\n",
                   started.status().ToString().c_str());
      return 1;
    }
    cell = std::move(*started);
    addresses = cell->addresses();
    cell_line = absl::StrCat(
        options.replicas, " lockd replicas started here on 127.0.0.1 (tick ",
        options.tick_ms, " ms, heartbeat ", options.heartbeat_ticks,
        " ticks, election ", options.election_ticks, " ticks), data in ",
        cell->directory(), "; 4 KiB write+fdatasync median ",
        absl::StrFormat("%.3f", MeasureFsyncMs(cell->directory())), " ms");
  } else {
    if (failover) {
      std::fprintf(stderr,
                   "lockd_bench: --failover needs a cell started here (it "
                   "kills the leader by PID); drop --endpoints\n");
      return 2;
    }
    addresses = absl::StrSplit(absl::GetFlag(FLAGS_endpoints), ',',
                               absl::SkipWhitespace());
    cell_line =
        absl::StrCat("running cell at ", absl::GetFlag(FLAGS_endpoints));
  }

  // Sessions, connected before the clock starts.
  ClientOptions client_options;
  client_options.endpoints = addresses;
  client_options.ttl_ms = absl::GetFlag(FLAGS_ttl_ms);
  client_options.client_name = "lockd_bench";
  client_options.attempt_timeout = absl::Seconds(5);
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < sessions; ++i) {
    absl::StatusOr<std::unique_ptr<TestClient>> client =
        TestClient::Connect(client_options);
    if (!client.ok()) {
      std::fprintf(stderr, "lockd_bench: session %d: %s\n", i,
                   client.status().ToString().c_str());
      return 1;
    }
    clients.push_back(std::move(*client));
  }
  absl::Status parent = clients[0]->Create("/bench").status();
  if (!parent.ok() && parent.code() != absl::StatusCode::kAlreadyExists) {
    std::fprintf(stderr, "lockd_bench: create /bench: %s\n",
                 parent.ToString().c_str());
    return 1;
  }

  std::printf(
      "# lockd_bench: Acquire(EXCLUSIVE) + Release pairs over gRPC, closed "
      "loop\n");
  std::printf(
      "# cpu: %s (%ld online), build %s; cell and clients share "
      "the machine\n",
      CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN), LOCKD_BUILD_TYPE);
  std::printf("# cell: %s\n", cell_line.c_str());
  std::printf(
      "# clients: %d sessions, one thread and connection each (sync gRPC); "
      "%s; wait_timeout_ms=%d; %s%s\n",
      sessions,
      contended ? absl::StrCat(paths, " shared lock paths").c_str()
                : "one lock path per session",
      wait_ms, absl::FormatDuration(run_time).c_str(),
      failover ? absl::StrCat("; leader killed after ",
                              absl::FormatDuration(failover_after))
                     .c_str()
               : "");
  std::fflush(stdout);

  FencingChecker checker;
  // Set once the killed leader is reaped; the first grant after it from
  // another replica records its time.
  std::atomic<int64_t> killed_at_ns{INT64_MAX};
  std::string killed_address;  // Written before killed_at_ns.
  std::atomic<int64_t> first_grant_after_kill_ns{0};
  std::vector<SessionResult> results(sessions);
  const uint64_t applied_before = LeaderAppliedIndex(addresses);
  const absl::Time start = absl::Now();
  const absl::Time end = start + run_time;
  std::vector<std::thread> threads;
  for (int i = 0; i < sessions; ++i) {
    threads.emplace_back([&, i] {
      TestClient& client = *clients[i];
      SessionResult& result = results[i];
      for (uint64_t n = 0; absl::Now() < end; ++n) {
        const std::string path =
            contended ? absl::StrCat("/bench/shared-", (i + n) % paths)
                      : absl::StrCat("/bench/session-", i);
        const absl::Time t0 = absl::Now();
        absl::StatusOr<v1::AcquireResponse> acquired =
            client.Acquire(path, v1::EXCLUSIVE, absl::Milliseconds(wait_ms));
        if (!acquired.ok()) {
          const absl::StatusCode code = acquired.status().code();
          if (code == absl::StatusCode::kFailedPrecondition ||
              code == absl::StatusCode::kDeadlineExceeded) {
            ++result.busy;
          } else {
            if (result.errors++ == 0) {
              result.first_error = acquired.status().ToString();
            }
            absl::SleepFor(absl::Milliseconds(10));  // Do not spin on it.
          }
          continue;
        }
        checker.Granted(path, client.session_id(),
                        acquired->sequencer().lock_generation());
        const int64_t granted_ns = absl::ToUnixNanos(absl::Now());
        // (A grant that arrives late from the killed leader is not one.)
        if (granted_ns > killed_at_ns.load() &&
            client.last_answered_by() != killed_address) {
          int64_t none = 0;
          first_grant_after_kill_ns.compare_exchange_strong(none, granted_ns);
        }
        checker.Releasing(path, client.session_id());
        absl::Status released = client.Release(path);
        if (!released.ok()) {
          if (result.errors++ == 0) result.first_error = released.ToString();
          continue;
        }
        const absl::Time t1 = absl::Now();
        if (t1 <= end) {
          result.pair_ms.push_back(absl::ToDoubleMilliseconds(t1 - t0));
        }
      }
    });
  }

  std::string failover_line;
  if (failover) {
    absl::SleepFor(failover_after);
    absl::StatusOr<int> leader = cell->WaitForLeader(absl::Seconds(10));
    if (!leader.ok()) {
      failover_line = "no leader to kill: " + leader.status().ToString();
    } else {
      const absl::Time killed_at = absl::Now();
      killed_address = cell->address(*leader);
      absl::Status killed = cell->Kill(*leader);
      // Reaped: every grant seen from now on comes from a new leader.
      killed_at_ns.store(absl::ToUnixNanos(absl::Now()));
      std::vector<int> others;
      for (int id = 1; id <= cell->size(); ++id) {
        if (id != *leader) others.push_back(id);
      }
      absl::StatusOr<int> next = cell->WaitForLeader(absl::Seconds(60), others);
      const absl::Duration to_leader = absl::Now() - killed_at;
      const bool granted =
          PollUntil([&] { return first_grant_after_kill_ns.load() != 0; },
                    absl::Seconds(60), absl::Milliseconds(1));
      if (!killed.ok() || !next.ok() || !granted) {
        failover_line = absl::StrCat(
            "failover: kill ", killed.ToString(), "; new leader ",
            next.ok() ? absl::StrCat(*next) : next.status().ToString(),
            granted ? "" : "; no acquire succeeded within 60 s");
      } else {
        failover_line = absl::StrFormat(
            "failover: killed leader %d; replica %d leads (Cluster.Status) "
            "after %.0f ms; first successful acquire %.0f ms after the kill",
            *leader, *next, absl::ToDoubleMilliseconds(to_leader),
            absl::ToDoubleMilliseconds(
                absl::FromUnixNanos(first_grant_after_kill_ns.load()) -
                killed_at));
      }
    }
  }
  for (std::thread& thread : threads) thread.join();
  const absl::Duration elapsed = std::min(absl::Now(), end) - start;
  const uint64_t applied_after = LeaderAppliedIndex(addresses);

  std::vector<double> all;
  uint64_t busy = 0;
  uint64_t errors = 0;
  std::string first_error;
  for (const SessionResult& result : results) {
    all.insert(all.end(), result.pair_ms.begin(), result.pair_ms.end());
    busy += result.busy;
    errors += result.errors;
    if (first_error.empty()) first_error = result.first_error;
  }
  std::sort(all.begin(), all.end());
  const double seconds = absl::ToDoubleSeconds(elapsed);
  std::printf("%8s %10s %10s %9s %9s %9s %9s %8s %7s %12s\n", "sessions",
              "paths", "pairs/s", "p50_ms", "p99_ms", "p99.9_ms", "max_ms",
              "busy", "errors", "log_slots/s");
  std::printf(
      "%8d %10s %10.0f %9.2f %9.2f %9.2f %9.2f %8llu %7llu %12.0f\n", sessions,
      contended ? absl::StrCat(paths, " shared").c_str() : "own",
      static_cast<double>(all.size()) / seconds, Percentile(all, 0.50),
      Percentile(all, 0.99), Percentile(all, 0.999),
      all.empty() ? 0.0 : all.back(), static_cast<unsigned long long>(busy),
      static_cast<unsigned long long>(errors),
      applied_after >= applied_before && applied_before > 0
          ? static_cast<double>(applied_after - applied_before) / seconds
          : 0.0);
  if (!failover_line.empty()) std::printf("# %s\n", failover_line.c_str());
  if (errors > 0) std::printf("# first error: %s\n", first_error.c_str());
  const std::vector<std::string> violations = checker.violations();
  std::printf("# fencing checker: %llu grants, %zu violations\n",
              static_cast<unsigned long long>(checker.grants()),
              violations.size());
  for (const std::string& violation : violations) {
    std::printf("#   %s\n", violation.c_str());
  }

  for (std::unique_ptr<TestClient>& client : clients) {
    client->CloseSession().IgnoreError();
  }
  return violations.empty() ? 0 : 1;
}

}  // namespace
}  // namespace lockd::integration

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Acquire/release throughput and latency of a lockd cell.\n"
      "  lockd_bench [--sessions=32] [--seconds=10] [--contended --paths=4] "
      "[--failover] [--endpoints=HOST:PORT,...]");
  absl::ParseCommandLine(argc, argv);
  // As in lockd: Debian's Abseil checks lock order in a global graph on
  // every absl::Mutex (gRPC's too) unless told not to.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return lockd::integration::Run();
}
