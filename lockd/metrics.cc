#include "lockd/metrics.h"

#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "paxos/membership.h"
#include "prometheus/text_serializer.h"

namespace lockd {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

prometheus::Gauge& NewGauge(prometheus::Registry& registry,
                            const std::string& name, const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

// Latency buckets from 50 us to 10 s.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
          0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   10};
}

const char* StatusCodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index < 17 ? kNames[index] : "UNKNOWN";
}

// Times one call from its arrival to the status it is finished with.
class RpcTimer : public grpc::experimental::Interceptor {
 public:
  RpcTimer(Metrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(absl::Now()) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->ObserveRpc(
          method_, StatusCodeName(methods->GetSendStatus().error_code()),
          absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  Metrics* const metrics_;
  const std::string method_;
  const absl::Time start_;
};

class RpcTimerFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcTimerFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcTimer(metrics_, info->method());
  }

 private:
  Metrics* const metrics_;
};

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      role_(BuildGauge()
                .Name("lockd_paxos_role")
                .Help("1 for this replica's Paxos role (leader, follower, "
                      "candidate), 0 for the others")
                .Register(*registry_)),
      epoch_(NewGauge(*registry_, "lockd_paxos_epoch",
                      "The leadership this replica follows or leads (packed "
                      "ballot: round * 65536 + replica id); 0 if none")),
      leader_id_(NewGauge(*registry_, "lockd_paxos_leader_id",
                          "The replica believed to lead; 0 if unknown")),
      has_lease_(NewGauge(*registry_, "lockd_paxos_has_lease",
                          "1 while this replica leads with a read lease")),
      commit_index_(NewGauge(*registry_, "lockd_paxos_commit_index",
                             "Highest log slot known chosen here")),
      applied_index_(NewGauge(*registry_, "lockd_paxos_applied_index",
                              "Highest log slot applied here")),
      snapshot_index_(NewGauge(*registry_, "lockd_paxos_snapshot_index",
                               "Log slot of the latest snapshot")),
      inflight_slots_(NewGauge(*registry_, "lockd_paxos_inflight_slots",
                               "Leader: slots proposed and not yet chosen")),
      pending_proposals_(NewGauge(*registry_, "lockd_paxos_pending_proposals",
                                  "Leader: commands waiting for a slot")),
      members_(BuildGauge()
                   .Name("lockd_cell_members")
                   .Help("Members of the cell's configuration by role (voter, "
                         "learner)")
                   .Register(*registry_)),
      sessions_(NewGauge(*registry_, "lockd_sessions",
                         "Live sessions in the applied state")),
      lock_holders_(NewGauge(*registry_, "lockd_lock_holders",
                             "Lock holders (each holder of a shared lock "
                             "counts)")),
      lock_waiters_(NewGauge(*registry_, "lockd_lock_waiters",
                             "Requests queued for a lock")),
      locks_in_lock_delay_(NewGauge(*registry_, "lockd_locks_in_lock_delay",
                                    "Locks ungrantable after a holder's "
                                    "session expired")),
      applied_entries_(NewGauge(*registry_, "lockd_applied_entries",
                                "Log entries applied since start (rate: "
                                "slots per second)")),
      applied_commands_(NewGauge(
          *registry_, "lockd_applied_commands",
          "Commands applied since start; divided by lockd_applied_entries: "
          "the mean batch size")),
      snapshots_taken_(NewGauge(*registry_, "lockd_snapshots_taken",
                                "Snapshots of the state machine taken since "
                                "start")),
      last_snapshot_bytes_(NewGauge(*registry_, "lockd_snapshot_bytes",
                                    "Size of the last snapshot taken here")),
      peer_queue_bytes_(NewGauge(*registry_, "lockd_peer_queue_bytes",
                                 "Bytes queued for other replicas")),
      leader_changes_(BuildCounter()
                          .Name("lockd_paxos_leader_changes_total")
                          .Help("Leaderships this replica saw begin")
                          .Register(*registry_)
                          .Add({})),
      keepalives_(BuildCounter()
                      .Name("lockd_keepalives_total")
                      .Help("KeepAlive requests handled here")
                      .Register(*registry_)
                      .Add({})),
      sync_seconds_(BuildHistogram()
                        .Name("lockd_storage_sync_seconds")
                        .Help("Duration of one synced write of Paxos state")
                        .Register(*registry_)
                        .Add({}, LatencyBuckets())),
      rpc_seconds_(BuildHistogram()
                       .Name("lockd_rpc_seconds")
                       .Help("Duration of public RPCs by method and status "
                             "code (a blocking Acquire includes its wait)")
                       .Register(*registry_)) {}

Metrics::Sample Metrics::Take(const ReplicaNode& node) {
  const paxos::Replica& replica = node.replica();
  const sessions::StateMachine& state = node.state();
  Sample sample;
  sample.id = replica.id();
  sample.role = replica.role();
  sample.leader_id = replica.LeaderHint();
  sample.epoch = replica.epoch();
  sample.has_lease = replica.HasLease();
  sample.commit = replica.commit();
  sample.applied = node.applied_index();
  sample.snapshot_index = replica.snapshot_index();
  sample.inflight_slots = replica.inflight_slots();
  sample.pending_proposals = replica.pending_proposals();
  for (const paxospb::Member& member : replica.membership().members()) {
    ++(member.voter() ? sample.voters : sample.learners);
  }
  sample.sessions = state.session_count();
  sample.locks = state.lock_counts();
  sample.applied_entries = node.applied_entries();
  sample.applied_commands = node.applied_commands();
  sample.snapshots_taken = node.snapshots_taken();
  sample.last_snapshot_bytes = node.last_snapshot_bytes();
  return sample;
}

void Metrics::Update(const Sample& sample, absl::Time now) {
  for (paxos::Role role : {paxos::Role::kLeader, paxos::Role::kFollower,
                           paxos::Role::kCandidate}) {
    role_.Add({{"role", paxos::RoleName(role)}})
        .Set(sample.role == role ? 1 : 0);
  }
  epoch_.Set(static_cast<double>(sample.epoch));
  leader_id_.Set(sample.leader_id);
  has_lease_.Set(sample.has_lease ? 1 : 0);
  commit_index_.Set(static_cast<double>(sample.commit));
  applied_index_.Set(static_cast<double>(sample.applied));
  snapshot_index_.Set(static_cast<double>(sample.snapshot_index));
  inflight_slots_.Set(static_cast<double>(sample.inflight_slots));
  pending_proposals_.Set(static_cast<double>(sample.pending_proposals));
  members_.Add({{"role", "voter"}}).Set(static_cast<double>(sample.voters));
  members_.Add({{"role", "learner"}}).Set(static_cast<double>(sample.learners));
  sessions_.Set(static_cast<double>(sample.sessions));
  lock_holders_.Set(static_cast<double>(sample.locks.holders));
  lock_waiters_.Set(static_cast<double>(sample.locks.waiters));
  locks_in_lock_delay_.Set(static_cast<double>(sample.locks.in_lock_delay));
  applied_entries_.Set(static_cast<double>(sample.applied_entries));
  applied_commands_.Set(static_cast<double>(sample.applied_commands));
  snapshots_taken_.Set(static_cast<double>(sample.snapshots_taken));
  last_snapshot_bytes_.Set(static_cast<double>(sample.last_snapshot_bytes));
  peer_queue_bytes_.Set(static_cast<double>(sample.peer_queue_bytes));
  if (sample.epoch == 0) return;
  absl::MutexLock lock(&mu_);
  if (!leaderships_.empty() && leaderships_.back().epoch == sample.epoch) {
    return;
  }
  leader_changes_.Increment();
  leaderships_.push_back({now, sample.epoch, sample.leader_id});
  while (leaderships_.size() > 20) leaderships_.pop_front();
}

void Metrics::ObserveSync(absl::Duration duration) {
  sync_seconds_.Observe(absl::ToDoubleSeconds(duration));
}

void Metrics::CountKeepAlive() { keepalives_.Increment(); }

void Metrics::ObserveRpc(const std::string& method, const std::string& code,
                         absl::Duration duration) {
  Histogram* histogram = nullptr;
  {
    absl::MutexLock lock(&mu_);
    Histogram*& cached = rpc_by_key_[absl::StrCat(method, " ", code)];
    if (cached == nullptr) {
      cached = &rpc_seconds_.Add({{"method", method}, {"code", code}},
                                 LatencyBuckets());
    }
    histogram = cached;
  }
  histogram->Observe(absl::ToDoubleSeconds(duration));
}

std::vector<Metrics::Leadership> Metrics::RecentLeaderships() const {
  absl::MutexLock lock(&mu_);
  return std::vector<Leadership>(leaderships_.begin(), leaderships_.end());
}

std::string Metrics::Serialize() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Metrics::NewInterceptorFactory() {
  return std::make_unique<RpcTimerFactory>(this);
}

}  // namespace lockd
