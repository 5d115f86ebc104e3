#ifndef LOCKD_METRICS_H_
#define LOCKD_METRICS_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"
#include "lockd/replica_node.h"
#include "paxos/replica.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "sessions/state_machine.h"

namespace lockd {

// The Prometheus metrics of one replica (the list is in docs/operations.md,
// "Metrics"). Counters and histograms are updated where things happen (the
// loop, the RPC interceptor); gauges are sampled from the replica's state
// when scraped (Sample). Thread-safe.
class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // One leadership seen by this replica, for the status page.
  struct Leadership {
    absl::Time seen;
    uint64_t epoch = 0;
    uint32_t leader_id = 0;
  };

  // What the gauges show, taken on the loop thread.
  struct Sample {
    uint32_t id = 0;
    paxos::Role role = paxos::Role::kFollower;
    uint32_t leader_id = 0;
    uint64_t epoch = 0;
    bool has_lease = false;
    uint64_t commit = 0;
    uint64_t applied = 0;
    uint64_t snapshot_index = 0;
    uint64_t inflight_slots = 0;
    uint64_t pending_proposals = 0;
    uint64_t voters = 0;
    uint64_t learners = 0;
    uint64_t sessions = 0;
    sessions::StateMachine::LockCounts locks;
    uint64_t applied_entries = 0;
    uint64_t applied_commands = 0;
    uint64_t snapshots_taken = 0;
    uint64_t last_snapshot_bytes = 0;
    uint64_t peer_queue_bytes = 0;
  };
  // Everything but peer_queue_bytes.
  static Sample Take(const ReplicaNode& node);

  // Sets the gauges and remembers a leadership change.
  void Update(const Sample& sample, absl::Time now);
  void ObserveSync(absl::Duration duration);
  void CountKeepAlive();
  void ObserveRpc(const std::string& method, const std::string& code,
                  absl::Duration duration);
  // The newest leaderships, newest last (at most 20).
  std::vector<Leadership> RecentLeaderships() const;

  // The text exposition format of every metric.
  std::string Serialize() const;

  // A server interceptor factory that times every call into ObserveRpc
  // (register with ServerBuilder::experimental().SetInterceptorCreators).
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  NewInterceptorFactory();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& role_;
  prometheus::Gauge& epoch_;
  prometheus::Gauge& leader_id_;
  prometheus::Gauge& has_lease_;
  prometheus::Gauge& commit_index_;
  prometheus::Gauge& applied_index_;
  prometheus::Gauge& snapshot_index_;
  prometheus::Gauge& inflight_slots_;
  prometheus::Gauge& pending_proposals_;
  prometheus::Family<prometheus::Gauge>& members_;
  prometheus::Gauge& sessions_;
  prometheus::Gauge& lock_holders_;
  prometheus::Gauge& lock_waiters_;
  prometheus::Gauge& locks_in_lock_delay_;
  prometheus::Gauge& applied_entries_;
  prometheus::Gauge& applied_commands_;
  prometheus::Gauge& snapshots_taken_;
  prometheus::Gauge& last_snapshot_bytes_;
  prometheus::Gauge& peer_queue_bytes_;
  prometheus::Counter& leader_changes_;
  prometheus::Counter& keepalives_;
  prometheus::Histogram& sync_seconds_;
  prometheus::Family<prometheus::Histogram>& rpc_seconds_;

  mutable absl::Mutex mu_;
  std::deque<Leadership> leaderships_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, prometheus::Histogram*> rpc_by_key_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace lockd

#endif  // LOCKD_METRICS_H_
