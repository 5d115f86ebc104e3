#ifndef LOCKD_TESTS_INTEGRATION_CELL_H_
#define LOCKD_TESTS_INTEGRATION_CELL_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "protos/lockd.grpc.pb.h"

namespace lockd::integration {

// How to start a cell. Ids are 1..replicas.
struct CellOptions {
  // Path of the `lockd` binary. Required.
  std::string lockd_binary;
  int replicas = 3;
  // Passed to every replica as --tick_ms etc.; 0 leaves the server default.
  int tick_ms = 10;
  int heartbeat_ticks = 5;
  int election_ticks = 30;
  int snapshot_interval = 0;
  int checkpoint_interval_ms = 0;
  // More flags for every replica, e.g. "--foo=1".
  std::vector<std::string> extra_flags;
  // A directory of certificates made by `dev certs` (ca.pem,
  // replica-ID.pem/.key): the replicas then run TLS, mutual TLS between
  // them and accept client certificates of the same CA, and the harness's
  // own channels verify them. Empty: plaintext.
  std::string tls_dir;
  // Give every replica an HTTP port for metrics, health and the status
  // page (--metrics_address).
  bool metrics = false;
  // Where data directories and logs go. Empty: a fresh directory under
  // $TEST_TMPDIR, $TMPDIR or /tmp, removed by the destructor unless
  // KeepDirectory() was called.
  std::string directory;
};

// Starts and stops a cell of real `lockd` processes on 127.0.0.1 for
// integration tests and benchmarks.
//
// Every replica gets a client and a peer port the harness picked (bind
// port 0, read it, close), a data directory `<dir>/replica-<id>/` and a log
// file
// `<dir>/replica-<id>.log` that collects its stdout and stderr across
// restarts (each start is marked by a "=== cell:" line). Processes are
// signalled by PID only, and the destructor kills (SIGKILL) and reaps every
// child still running. Children also die with SIGKILL if the thread that
// started them exits, so start replicas from a thread that outlives the
// Cell (the test's main thread).
//
// Thread-safety: Start/Stop/Kill/Restart and the destructor must be called
// from one thread; Status(), WaitForLeader() and the accessors may be called
// from any thread concurrently with each other.
class Cell {
 public:
  // Picks ports, creates the directories and starts every replica (it does
  // not wait for a leader; see WaitForLeader).
  static absl::StatusOr<std::unique_ptr<Cell>> Start(CellOptions options);
  // Start, then WaitForLeader(timeout). If no leader comes, the directory
  // is kept and the status carries every replica's log tail.
  static absl::StatusOr<std::unique_ptr<Cell>> StartWithLeader(
      CellOptions options, absl::Duration timeout = absl::Seconds(30));

  ~Cell();
  Cell(const Cell&) = delete;
  Cell& operator=(const Cell&) = delete;

  int size() const { return static_cast<int>(replicas_.size()); }
  const CellOptions& options() const { return options_; }
  const std::string& directory() const { return directory_; }
  // "127.0.0.1:PORT" of replica `id`: its client address.
  std::string address(int id) const;
  // Where replica `id` listens for the other replicas (Paxos).
  std::string peer_address(int id) const;
  // Its HTTP port (CellOptions::metrics).
  std::string metrics_address(int id) const;
  // Every replica's address, in id order.
  std::vector<std::string> addresses() const;
  // The CA file of a TLS cell ("" for plaintext).
  std::string CaFile() const {
    return options_.tls_dir.empty() ? "" : options_.tls_dir + "/ca.pem";
  }
  // "127.0.0.1:P1,127.0.0.1:P2,..." for --endpoints flags.
  std::string endpoints() const;
  // The value of lockd's --members flag.
  std::string members_flag() const;
  // The nominal election timeout (tick_ms * election_ticks); a follower
  // starts an election after a random time in [1, 2) times this.
  absl::Duration election_timeout() const;

  // Starts replica `id` on its data directory. FAILED_PRECONDITION if it
  // runs already. A founding replica's first start passes --bootstrap, an
  // added one's --join; later starts neither (its data must be there).
  absl::Status StartReplica(int id);
  // Picks ports and a data directory for a new replica with the next id
  // (not started; the cell's membership is not changed: see lockctl member
  // add). Returns its id. Not safe concurrently with the accessors.
  absl::StatusOr<int> AddReplica();
  // SIGKILL and reap. OK if it was not running.
  absl::Status Kill(int id);
  // SIGTERM and wait up to `timeout` for the process to exit. OK iff it
  // exited with status 0; if it does not exit in time it is killed and
  // DEADLINE_EXCEEDED returned. OK if it was not running.
  absl::Status Stop(int id, absl::Duration timeout = absl::Seconds(10));
  // SIGSTOP / SIGCONT: the process stalls (as in a long VM pause) with its
  // sockets open, then carries on.
  absl::Status Pause(int id);
  absl::Status Resume(int id);
  // Stop (or Kill if `kill`) followed by StartReplica.
  absl::Status Restart(int id, bool kill = false);
  // True iff the process is running (reaps it and logs how it ended if it
  // exited on its own).
  bool IsRunning(int id);
  std::vector<int> RunningReplicas();
  pid_t pid(int id) const;

  // Cluster.Status of replica `id`, with an RPC deadline of `timeout`.
  absl::StatusOr<v1::StatusResponse> Status(
      int id, absl::Duration timeout = absl::Milliseconds(500)) const;

  // The grpc.health.v1 status of replica `id` (service ""): true iff
  // SERVING.
  absl::StatusOr<bool> Serving(
      int id, absl::Duration timeout = absl::Milliseconds(500)) const;

  // Polls the replicas in `among` (all when empty) until one reports role
  // "leader" with has_lease and every other answering replica of `among`
  // either names it as leader or does not know a leader yet. Returns its id,
  // or DEADLINE_EXCEEDED with what each replica last said.
  absl::StatusOr<int> WaitForLeader(absl::Duration timeout,
                                    std::vector<int> among = {}) const;

  // Polls until replica `id` has applied at least `index`.
  absl::Status WaitForApplied(int id, uint64_t index,
                              absl::Duration timeout) const;

  // The last `lines` lines of replica `id`'s log file.
  std::string LogTail(int id, int lines = 40) const;
  // LogTail of every replica with headers, for failure messages.
  std::string AllLogTails(int lines = 40) const;

  // Keeps the directory (data and logs) when the Cell is destroyed, e.g.
  // because the test failed.
  void KeepDirectory() { keep_directory_ = true; }

 private:
  struct Replica {
    int id = 0;
    int port = 0;
    int peer_port = 0;
    int metrics_port = 0;
    pid_t pid = -1;
    std::string data_dir;
    std::string log_path;
    int starts = 0;
    // Added to a running cell (starts with --join).
    bool joiner = false;
  };

  explicit Cell(CellOptions options);
  Replica& replica(int id);
  const Replica& replica(int id) const;
  // The channel to replica `id` (replaced when it cannot connect).
  std::shared_ptr<grpc::Channel> channel(int id) const;
  void ReplaceBrokenChannel(int id,
                            const std::shared_ptr<grpc::Channel>& broken) const;
  // Waits for `r`'s process to exit until `deadline`; returns false if it
  // still runs then.
  bool WaitForExit(Replica& r, absl::Time deadline, int* wait_status);
  void AppendToLog(const Replica& r, const std::string& line) const;

  CellOptions options_;
  std::string directory_;
  bool owns_directory_ = false;
  bool keep_directory_ = false;
  std::vector<Replica> replicas_;
  // One channel per replica for Status().
  mutable absl::Mutex channels_mu_;
  mutable std::vector<std::shared_ptr<grpc::Channel>> channels_
      ABSL_GUARDED_BY(channels_mu_);
};

// Picks a free TCP port on 127.0.0.1 by binding port 0.
absl::StatusOr<int> PickFreePort();

// A channel to `address` with a connection of its own (not shared with
// other channels to the same address, as separate processes would not).
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address);
// A TLS channel verifying the server against `ca_file` (and presenting
// `cert_file`/`key_file` if given); plaintext if `ca_file` is empty.
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                          const std::string& ca_file,
                                          const std::string& cert_file = "",
                                          const std::string& key_file = "");
// Makes a CA and certificates in `dir` with `dev certs` (see its usage):
// replica-N for each of `replicas`, client-NAME for each of `clients`.
absl::Status MakeCertificates(const std::string& dir,
                              const std::vector<int>& replicas,
                              const std::vector<std::string>& clients);

// True if a call failed with `status` because `channel` cannot connect.
// gRPC then retries the connection only after a backoff that grows to
// minutes (and in gRPC 1.51 ignores the backoff channel arguments), so
// callers replace such a channel: a restarted replica is reachable at once.
bool ChannelIsBroken(grpc::Channel& channel, const grpc::Status& status);

// Polls `condition` every `interval` until it returns true or `timeout`
// passes; returns whether it became true.
template <typename Condition>
bool PollUntil(Condition condition, absl::Duration timeout,
               absl::Duration interval = absl::Milliseconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(interval);
  }
}

}  // namespace lockd::integration

#endif  // LOCKD_TESTS_INTEGRATION_CELL_H_
