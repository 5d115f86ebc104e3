// lockd_session_bench: many sessions kept alive at once (docs/benchmarks.md,
// "Session load").
//
// Starts a cell of real `lockd` processes on 127.0.0.1 with the server's
// default flags (or uses --endpoints with --pids), opens --sessions
// sessions with --open_concurrency CreateSession calls in flight, each on
// its own KeepAlive stream and --sessions_per_connection sessions to a gRPC
// connection, keeps them alive (one keep-alive at once, then every TTL/3)
// for --hold_s, and reports: sessions opened per second, failed open
// attempts, sessions lost, leader changes during the run, keep-alive
// round trips per second, and every replica's RSS and CPU seconds.
//
//   lockd_session_bench --sessions=10000                 # a connection each
//   lockd_session_bench --sessions=100000 --sessions_per_connection=100

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/conditions.h"
#include "tests/integration/cell.h"
#include "tests/integration/session_load.h"

#ifndef LOCKD_BINARY
#define LOCKD_BINARY ""
#endif
#ifndef LOCKD_BUILD_TYPE
#define LOCKD_BUILD_TYPE "unknown"
#endif

ABSL_FLAG(std::string, endpoints, "",
          "Comma-separated addresses of a running cell. Empty: start a cell "
          "of --replicas lockd processes here.");
ABSL_FLAG(std::string, pids, "",
          "With --endpoints: the replicas' PIDs (comma separated), for RSS "
          "and CPU figures.");
ABSL_FLAG(std::string, lockd_binary, LOCKD_BINARY,
          "The lockd binary for the cell this benchmark starts.");
ABSL_FLAG(int, replicas, 3, "Replicas of the cell this benchmark starts.");
ABSL_FLAG(std::vector<std::string>, lockd_flags, {},
          "Extra flags for every replica of the started cell, e.g. "
          "--lockd_flags=--election_ticks=100 (default: the server's "
          "defaults).");
ABSL_FLAG(std::string, data_dir, "",
          "Directory for the started cell's data and logs. Empty: a temporary "
          "directory, removed afterwards.");
ABSL_FLAG(int, sessions, 10000, "Sessions to open and keep alive.");
ABSL_FLAG(int, sessions_per_connection, 1,
          "Sessions sharing one gRPC connection (each has its own stream).");
ABSL_FLAG(bool, batch_streams, false,
          "The sessions of a connection share one KeepAlive stream in the "
          "batch form (one message renews them all) instead of a stream "
          "each.");
ABSL_FLAG(bool, spread, true,
          "Each connection starts at one of the endpoints in turn and "
          "follows the leader redirect (as clients given every address do); "
          "false: all connect to the leader.");
ABSL_FLAG(int, open_concurrency, 256, "CreateSession calls in flight.");
ABSL_FLAG(int64_t, ttl_ms, 10000, "Session TTL.");
ABSL_FLAG(double, hold_s, 60, "How long the sessions are held once open.");
ABSL_FLAG(bool, json, true, "Also print the figures as one JSON line.");

namespace lockd::integration {
namespace {

struct Totals {
  double cpu_seconds = 0;
  int64_t rss_kb = 0;
  std::vector<ProcessSample> each;
};

Totals SampleAll(const std::vector<pid_t>& pids) {
  Totals totals;
  for (pid_t pid : pids) {
    absl::StatusOr<ProcessSample> sample = SampleProcess(pid);
    ProcessSample value = sample.ok() ? *sample : ProcessSample();
    totals.cpu_seconds += value.cpu_seconds;
    totals.rss_kb += value.rss_kb;
    totals.each.push_back(value);
  }
  return totals;
}

std::string PerReplicaRss(const Totals& totals) {
  std::vector<std::string> parts;
  for (const ProcessSample& s : totals.each) {
    parts.push_back(absl::StrFormat("%.0f", s.rss_kb / 1024.0));
  }
  return absl::StrJoin(parts, "/");
}

int Run() {
  std::unique_ptr<Cell> cell;
  std::vector<std::string> addresses;
  std::vector<pid_t> pids;
  std::string cell_line;
  if (absl::GetFlag(FLAGS_endpoints).empty()) {
    CellOptions options;
    options.lockd_binary = absl::GetFlag(FLAGS_lockd_binary);
    options.replicas = absl::GetFlag(FLAGS_replicas);
    // The server's defaults unless --lockd_flags says otherwise.
    options.tick_ms = 0;
    options.heartbeat_ticks = 0;
    options.election_ticks = 0;
    options.extra_flags = absl::GetFlag(FLAGS_lockd_flags);
    options.directory = absl::GetFlag(FLAGS_data_dir);
    absl::StatusOr<std::unique_ptr<Cell>> started =
        Cell::StartWithLeader(options);
    if (!started.ok()) {
      std::fprintf(stderr, "lockd_session_bench: %s\n",
                   started.status().ToString().c_str());
      return 1;
    }
    cell = std::move(*started);
    addresses = cell->addresses();
    for (int id = 1; id <= cell->size(); ++id) pids.push_back(cell->pid(id));
    const std::vector<std::string> flags = absl::GetFlag(FLAGS_lockd_flags);
    cell_line = absl::StrCat(
        options.replicas, " lockd replicas started here on 127.0.0.1 with ",
        flags.empty() ? "the default flags"
                      : absl::StrCat("flags ", absl::StrJoin(flags, " ")),
        ", data in ", cell->directory(), "; 4 KiB write+fdatasync median ",
        absl::StrFormat("%.3f", bench::MeasureFsyncMs(cell->directory())),
        " ms");
  } else {
    addresses = absl::StrSplit(absl::GetFlag(FLAGS_endpoints), ',',
                               absl::SkipWhitespace());
    for (absl::string_view text : absl::StrSplit(absl::GetFlag(FLAGS_pids), ',',
                                                 absl::SkipWhitespace())) {
      int pid = 0;
      if (!absl::SimpleAtoi(text, &pid)) {
        std::fprintf(stderr, "lockd_session_bench: --pids: '%s' is no PID\n",
                     std::string(text).c_str());
        return 2;
      }
      pids.push_back(pid);
    }
    cell_line =
        absl::StrCat("running cell at ", absl::GetFlag(FLAGS_endpoints),
                     pids.empty() ? " (no --pids: no server figures)" : "");
  }

  SessionLoadOptions options;
  options.endpoints = addresses;
  options.sessions = absl::GetFlag(FLAGS_sessions);
  options.sessions_per_connection =
      std::max(1, absl::GetFlag(FLAGS_sessions_per_connection));
  options.open_concurrency = std::max(1, absl::GetFlag(FLAGS_open_concurrency));
  options.ttl = absl::Milliseconds(absl::GetFlag(FLAGS_ttl_ms));
  options.spread = absl::GetFlag(FLAGS_spread);
  options.batch_streams = absl::GetFlag(FLAGS_batch_streams);
  options.client_name = "lockd_session_bench";
  const absl::Duration hold = absl::Seconds(absl::GetFlag(FLAGS_hold_s));
  const int connections =
      (options.sessions + options.sessions_per_connection - 1) /
      options.sessions_per_connection;

  std::printf("# lockd_session_bench: sessions opened and kept alive\n");
  std::printf(
      "# cpu: %s (%ld online), build %s; cell and load share the "
      "machine\n",
      bench::CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN),
      LOCKD_BUILD_TYPE);
  std::printf("# cell: %s\n", cell_line.c_str());
  std::printf(
      "# load: %d sessions on %d connections (%d per connection), %s, %d "
      "CreateSession in flight, %s, TTL %s, keep-alive at once then every "
      "TTL/3, held %s\n",
      options.sessions, connections, options.sessions_per_connection,
      options.batch_streams ? "one batch KeepAlive stream per connection"
                            : "a KeepAlive stream per session",
      options.open_concurrency,
      options.spread ? "first call to each replica in turn, then redirected"
                     : "all at the leader",
      absl::FormatDuration(options.ttl).c_str(),
      absl::FormatDuration(hold).c_str());
  std::fflush(stdout);

  const Totals before = SampleAll(pids);
  SessionLoad load(options);
  const absl::Status opened = load.Open();
  if (!opened.ok()) {
    std::fprintf(stderr, "lockd_session_bench: %s\n",
                 opened.ToString().c_str());
    return 1;
  }
  // Let the open burst settle (the last keep-alives and checkpoints) before
  // the hold is measured.
  load.Hold(absl::Seconds(2));
  const Totals hold_start = SampleAll(pids);
  const SessionLoadReport at_hold = load.report();
  load.Hold(hold);
  const Totals hold_end = SampleAll(pids);
  const SessionLoadReport report = load.report();
  const int close_failures = load.Close();
  const SessionLoadReport closed = load.report();

  std::vector<std::string> close_failures_by_code;
  for (const auto& [code, count] : closed.failed_closes) {
    close_failures_by_code.push_back(absl::StrCat(code, "=", count));
  }
  int failed_attempts = 0;
  std::vector<std::string> failures;
  for (const auto& [code, count] : report.failed_open_attempts) {
    failed_attempts += count;
    failures.push_back(absl::StrCat(code, "=", count));
  }
  const double open_s = absl::ToDoubleSeconds(report.open_time);
  const double opens_per_s = open_s > 0 ? report.sessions_opened / open_s : 0.0;
  const double hold_s = absl::ToDoubleSeconds(hold);
  const double keep_alives_per_s =
      static_cast<double>(report.keep_alive_answers -
                          at_hold.keep_alive_answers) /
      hold_s;
  const double rss_growth_kb =
      static_cast<double>(hold_end.rss_kb - before.rss_kb);
  const double kb_per_session =
      report.sessions_opened > 0 ? rss_growth_kb / report.sessions_opened : 0;
  const double hold_cpu = hold_end.cpu_seconds - hold_start.cpu_seconds;
  const double cpu_per_minute = hold_cpu * 60.0 / hold_s;

  std::printf("%9s %7s %8s %9s %10s %9s %8s %7s %9s %12s %14s %10s %12s\n",
              "sessions", "per_con", "opened", "opens/s", "failed_try",
              "not_open", "elections", "lost", "max_gap_s", "keepalive/s",
              "rss_mb_before", "rss_mb_held", "kb/session");
  std::printf(
      "%9d %7d %8d %9.0f %10d %9d %8d %7d %9.2f %12.0f %14.0f %10.0f "
      "%12.2f\n",
      options.sessions, options.sessions_per_connection, report.sessions_opened,
      opens_per_s, failed_attempts, report.sessions_not_opened,
      report.leader_changes, report.sessions_lost,
      absl::ToDoubleSeconds(report.max_answer_gap), keep_alives_per_s,
      before.rss_kb / 1024.0, hold_end.rss_kb / 1024.0, kb_per_session);
  if (!pids.empty()) {
    std::printf(
        "# server: RSS per replica held %s MB; CPU during the %s hold "
        "%.1f s (%.1f CPU-s per minute, %.3f cores); CPU while opening "
        "%.1f s\n",
        PerReplicaRss(hold_end).c_str(), absl::FormatDuration(hold).c_str(),
        hold_cpu, cpu_per_minute, hold_cpu / hold_s,
        hold_start.cpu_seconds - before.cpu_seconds);
  }
  std::printf(
      "# failed open attempts: %s; stream restarts %llu; Cluster.Status "
      "timeouts %d; closes failed %d%s\n",
      failures.empty() ? "none" : absl::StrJoin(failures, ", ").c_str(),
      static_cast<unsigned long long>(report.stream_restarts),
      report.status_timeouts, close_failures,
      close_failures == 0
          ? ""
          : absl::StrCat(" (", absl::StrJoin(close_failures_by_code, ", "), ")")
                .c_str());
  for (const std::string& leadership : report.leaderships) {
    std::printf("# new leadership: %s\n", leadership.c_str());
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf(
        "{\"workload\":\"sessions\",\"sessions\":%d,"
        "\"sessions_per_connection\":%d,\"batch_streams\":%s,"
        "\"opened\":%d,\"opens_per_s\":%.1f,"
        "\"failed_open_attempts\":%d,\"not_opened\":%d,"
        "\"leader_changes\":%d,\"sessions_lost\":%d,\"max_answer_gap_s\":%.3f,"
        "\"keep_alives_per_s\":%.1f,\"server_rss_mb_before\":%.1f,"
        "\"server_rss_mb_held\":%.1f,\"server_rss_kb_per_session\":%.2f,"
        "\"server_cpu_s_hold\":%.2f,\"server_cpu_s_per_minute\":%.2f,"
        "\"hold_s\":%.0f}\n",
        options.sessions, options.sessions_per_connection,
        options.batch_streams ? "true" : "false", report.sessions_opened,
        opens_per_s, failed_attempts, report.sessions_not_opened,
        report.leader_changes, report.sessions_lost,
        absl::ToDoubleSeconds(report.max_answer_gap), keep_alives_per_s,
        before.rss_kb / 1024.0, hold_end.rss_kb / 1024.0, kb_per_session,
        hold_cpu, cpu_per_minute, hold_s);
  }
  const bool clean = report.sessions_not_opened == 0 &&
                     report.sessions_lost == 0 && report.leader_changes == 0;
  return clean ? 0 : 1;
}

}  // namespace
}  // namespace lockd::integration

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Opens many lockd sessions and keeps them alive.\n"
      "  lockd_session_bench [--sessions=10000] [--sessions_per_connection=1] "
      "[--hold_s=60] [--endpoints=HOST:PORT,... --pids=PID,...]");
  absl::ParseCommandLine(argc, argv);
  // As in lockd: Debian's Abseil checks lock order in a global graph on
  // every absl::Mutex (gRPC's too) unless told not to.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return lockd::integration::Run();
}
