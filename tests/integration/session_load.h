// SessionLoad opens many lockd sessions and keeps them alive the way a fleet
// of independent clients would, for the session-load benchmark
// (bench/lockd_session_bench.cc) and the session-load integration test.
//
// Every session has its own KeepAlive stream, or with `batch_streams` the
// sessions of a connection share one stream in the batch form;
// `sessions_per_connection` sessions share one gRPC connection (1: a
// connection each, as separate processes would have). Sessions are opened with
// CreateSession, at most `open_concurrency` at once, each retried with the same
// nonce until it opens or `open_timeout` passes. A stream sends one keep-alive
// at once and then one every TTL/3 (the client library's cadence), follows a
// leader redirect when a call or stream ends with UNAVAILABLE, and counts the
// session lost when the cell ends the stream with NOT_FOUND or
// FAILED_PRECONDITION. A monitor polls Cluster.Status of every endpoint to
// count leader changes.
//
// All work runs on gRPC's callback threads and two threads of its own (a
// timer and the monitor), so 10,000s of sessions need no thread each.
//
// Thread-safety: Open(), Hold(), Close() and report() are called from one
// thread, in that order.

#ifndef LOCKD_TESTS_INTEGRATION_SESSION_LOAD_H_
#define LOCKD_TESTS_INTEGRATION_SESSION_LOAD_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lockd::integration {

struct SessionLoadOptions {
  // The cell's client addresses.
  std::vector<std::string> endpoints;
  int sessions = 10000;
  int sessions_per_connection = 1;
  // The sessions of a connection share one KeepAlive stream in the batch
  // form (one message renews them all) instead of a stream each.
  bool batch_streams = false;
  // Each connection first calls endpoints[i % n] and follows the leader
  // redirect from there, as clients configured with every replica's address
  // do; false: every connection starts at the leader.
  bool spread = true;
  // CreateSession calls in flight at once.
  int open_concurrency = 256;
  absl::Duration ttl = absl::Seconds(10);
  // Deadline of one CreateSession attempt.
  absl::Duration call_timeout = absl::Seconds(10);
  // A session that has not opened by then is given up.
  absl::Duration open_timeout = absl::Seconds(120);
  std::string client_name = "session-load";
};

struct SessionLoadReport {
  int sessions_tried = 0;
  int sessions_opened = 0;
  // CreateSession attempts that failed, by gRPC code name (a redirect from a
  // follower counts as UNAVAILABLE), and sessions given up.
  std::map<std::string, int> failed_open_attempts;
  int sessions_not_opened = 0;
  absl::Duration open_time;
  // Keep-alive requests written and answers read (pushed event messages
  // included) during Open() and Hold().
  uint64_t keep_alives_sent = 0;
  uint64_t keep_alive_answers = 0;
  // Streams that ended and were reopened (leader change or broken stream).
  uint64_t stream_restarts = 0;
  // Sessions the cell ended (stream closed with NOT_FOUND or
  // FAILED_PRECONDITION, or an answer with no lease left).
  int sessions_lost = 0;
  // Longest time any session went without a keep-alive answer while held.
  absl::Duration max_answer_gap;
  // Times the highest epoch any replica reported grew after the load
  // started: one per new leadership.
  int leader_changes = 0;
  // Each leadership seen, as "epoch E: replica R at T+S".
  std::vector<std::string> leaderships;
  // CloseSession calls that failed (after retries), by code.
  std::map<std::string, int> failed_closes;
  // Cluster.Status failures of the monitor (a replica too slow to answer
  // within a second).
  int status_timeouts = 0;
};

// CPU time and memory of a process, from /proc.
struct ProcessSample {
  double cpu_seconds = 0;  // utime + stime
  int64_t rss_kb = 0;      // VmRSS
};
absl::StatusOr<ProcessSample> SampleProcess(pid_t pid);

class SessionLoad {
 public:
  explicit SessionLoad(SessionLoadOptions options);
  // Ends every stream and stops the threads (sessions are left to expire
  // unless Close() was called).
  ~SessionLoad();
  SessionLoad(const SessionLoad&) = delete;
  SessionLoad& operator=(const SessionLoad&) = delete;

  // Opens every session and starts its keep-alive; returns when all are
  // open or given up. FAILED_PRECONDITION if no endpoint names a leader.
  absl::Status Open();
  // Keeps the sessions alive for `duration` (they are kept alive from
  // Open() on; this only waits and measures answer gaps).
  void Hold(absl::Duration duration);
  // Closes every open session (CloseSession), `open_concurrency` at once.
  // Returns how many closes failed.
  int Close();

  SessionLoadReport report() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockd::integration

#endif  // LOCKD_TESTS_INTEGRATION_SESSION_LOAD_H_
