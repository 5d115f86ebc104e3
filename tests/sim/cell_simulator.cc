#include "tests/sim/cell_simulator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lockd/replica_node.h"
#include "paxos/membership.h"
#include "paxos/memory_storage.h"
#include "paxos/random.h"
#include "protos/lockd.pb.h"
#include "protos/paxos.pb.h"
#include "protos/state.pb.h"

namespace lockd::sim {
namespace {

struct BugInfo {
  Bug bug;
  const char* name;
};

constexpr BugInfo kBugs[] = {
    {Bug::kNone, "none"},
    {Bug::kClientIgnoresLease, "client_ignores_lease"},
    {Bug::kViewDoubleGrant, "view_double_grant"},
    {Bug::kViewGenerationRollback, "view_generation_rollback"},
};

}  // namespace

absl::StatusOr<Bug> ParseBug(const std::string& name) {
  std::vector<std::string> names;
  for (const BugInfo& info : kBugs) {
    if (info.name == name) return info.bug;
    names.push_back(info.name);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown bug '", name,
                                                 "'; expected one of ",
                                                 absl::StrJoin(names, ", ")));
}

std::string BugName(Bug bug) {
  for (const BugInfo& info : kBugs) {
    if (info.bug == bug) return info.name;
  }
  return "none";
}

namespace {

// ---------------------------------------------------------------- the world

// Nominal tick, as lockd's default --tick_ms.
constexpr int64_t kTickUs = 10000;
// Replica wall clocks read kWallBaseMs + true time + a skew within
// +-kMaxSkewMs (NTP-synchronized machines); in some seeds they also step.
constexpr int64_t kWallBaseMs = 1000000000;
constexpr int64_t kMaxSkewMs = 50;
// Machines beyond the founding replicas that membership changes may add.
constexpr int kSpareMachines = 2;
// Replica tick rates differ from nominal by at most this fraction: within
// the drift lockd's default lease allows ((30 - 3) * (1 + r) <= (30 - 1) *
// (1 - r), i.e. r <= 3.5 %; see docs/paxos.md).
constexpr double kMaxTickDrift = 0.03;
// Client clock rates differ from true time by at most this fraction.
constexpr double kMaxClientDrift = 0.03;
// A leader's cell clock runs within this fraction of its tick clock
// (ReplicaNodeOptions::cell_clock_slew_percent, docs/server.md "Time").
constexpr double kCellClockSlew = 0.05;
// So cell time runs at most this much faster than true time (a fast tick
// clock with the clock slewing forward), and at least this fraction of it.
constexpr double kMaxCellRate = (1 + kCellClockSlew) / (1 - kMaxTickDrift);
constexpr double kMinCellRate = (1 - kCellClockSlew) / (1 + kMaxTickDrift);
// lockd's defaults: checkpoint every 50 ticks, Tick commands 5 ticks apart.
constexpr int kCheckpointTicks = 50;
constexpr int kTickCommandTicks = 5;
constexpr int64_t kCheckpointMs = kCheckpointTicks * kTickUs / 1000;
// A client's local lease also ends this long earlier: the cell clock moves
// in steps of a tick.
constexpr int64_t kClientMarginMs = 2 * kTickUs / 1000;
// docs/server.md: a client silent since its last keep-alive loses its
// session once cell time has advanced by checkpoint interval + 2 x TTL past
// it. The replicated expires_at may exceed (cell time of the last answered
// keep-alive) + 2 x TTL by the checkpoint interval plus this (a leader that
// answered and then lost its lease for a while checkpoints late).
constexpr int64_t kExpirySlackMs = 1000;
// In true time that bound is stretched by 1 / kMinCellRate, plus the time
// without a serving leader, plus this (the leader proposes a Tick, the cell
// commits it through lost and delayed messages).
constexpr int64_t kExpiryRealTimeSlackMs = 2000;
// After healing, a replica that was cut off gets this long to catch up
// before its state is held to the deadlines.
constexpr int64_t kHealCatchUpUs = 5 * 1000000LL;
// After healing, every live client must be granted a lock and every
// abandoned session must end within this much virtual time.
constexpr int64_t kHealBoundUs = 60 * 1000000LL;
// Lock paths the clients share.
constexpr int kPaths = 3;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

std::string LockPath(int index) { return absl::StrCat("/lock", index); }

uint64_t Fingerprint(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h ^ (h >> 29);
}

// The fault mix of one seed: every probability and rate is drawn from the
// seed, so different seeds stress different combinations.
struct FaultMix {
  double loss = 0;
  double duplicate = 0;
  double long_delay = 0;
  int64_t max_delay_us = 0;
  int64_t max_long_delay_us = 0;
  int64_t mean_fault_interval_us = 0;
  bool crashes = false;
  bool partitions = false;
  bool stalls = false;
  bool client_faults = false;
  // Replica wall clocks step (NTP, an operator) to a new offset.
  bool clock_steps = false;
  // Configuration changes and handovers among the faults.
  bool membership = false;
  // Probability that a replica crashes in the middle of a Save (before or
  // after the batch is durable).
  double crash_mid_turn = 0;
  // A replica handles new input up to this long after it arrives, so that
  // several inputs share one turn (group commit).
  int64_t group_commit_us = 0;
  double max_tick_drift = 0;
};

enum class EventKind {
  kTurn,
  kPeerMessage,
  kToReplica,
  kToClient,
  kClientTimer,
  kClientReboot,
  kFault,
  kRestart,
};

enum TimerKind { kKeepAliveTimer = 0, kOperationTimer = 1 };

class World;

// One KeepAlive stream between a client and a replica. The replica's
// ReplicaNode holds it as its SessionListener; the client keeps it to send
// further keep-alives. Streams are FIFO and reliable until they break: a
// lost message breaks the stream (as a TCP connection would).
class SimListener : public SessionListener,
                    public std::enable_shared_from_this<SimListener> {
 public:
  SimListener(World* world, int client, int replica, uint64_t session_id)
      : world_(world),
        client_(client),
        replica_(replica),
        session_id_(session_id) {}

  void Send(v1::KeepAliveResponse response) override;
  void End(absl::Status status) override;

  int client() const { return client_; }
  int replica() const { return replica_; }
  uint64_t session_id() const { return session_id_; }

  // Set by End(): the replica will not use the stream again.
  bool ended = false;
  // Set when a message on the stream is lost.
  bool broken = false;
  // Delivery time of the last message (FIFO).
  int64_t last_delivery_us = 0;

 private:
  World* const world_;
  const int client_;
  const int replica_;
  const uint64_t session_id_;
};

// A message from a client to a replica.
struct ClientRequest {
  // kCancel: the client gave up on an attempt (its RPC deadline passed).
  enum class Kind { kSubmit, kKeepAlive, kCloseStream, kCancel };
  Kind kind = Kind::kSubmit;
  int client = 0;
  uint64_t incarnation = 0;
  // kSubmit, kCancel: identifies the attempt for ReplicaNode::Cancel.
  uint64_t caller = 0;
  // Keep-alives: the local send time, echoed in the answer.
  int64_t sent_local_us = 0;
  statepb::Command command;
  v1::KeepAliveRequest keepalive;
  std::shared_ptr<SimListener> listener;
};

// A message from a replica to a client.
struct ClientReply {
  enum class Kind { kResult, kStream, kStreamEnd };
  Kind kind = Kind::kResult;
  uint64_t incarnation = 0;
  // kResult: the request answered ({0, nonce} for CreateSession), and either
  // a refusal (`status`) or the state machine's answer.
  uint64_t session_id = 0;
  uint64_t request_id = 0;
  uint64_t caller = 0;
  absl::Status status;
  statepb::Result result;
  // kStream / kStreamEnd.
  std::shared_ptr<SimListener> listener;
  v1::KeepAliveResponse response;
  // True for the answer to a keep-alive request (with the request's send
  // time), false for events the replica pushed.
  bool direct = false;
  int64_t sent_local_us = 0;
};

struct Event {
  int64_t time_us = 0;
  uint64_t sequence = 0;
  EventKind kind = EventKind::kTurn;
  int target = 0;
  uint64_t token = 0;
  int timer = 0;
  paxospb::Message message;
  std::unique_ptr<ClientRequest> request;
  std::unique_ptr<ClientReply> reply;
};

// Heap order: earliest first, ties in scheduling order.
struct EventLater {
  bool operator()(const Event& a, const Event& b) const {
    if (a.time_us != b.time_us) return a.time_us > b.time_us;
    return a.sequence > b.sequence;
  }
};

// The checker's last view of one lock in one replica incarnation.
struct LockView {
  uint64_t instance = 0;
  uint64_t generation = 0;
  // The exclusive holder's session, 0 if none.
  uint64_t exclusive = 0;
};

// One simulated server: a ReplicaNode over its in-memory disk.
struct Machine {
  uint32_t id = 0;
  ReplicaNodeOptions options;
  paxos::MemoryStorage disk;
  std::unique_ptr<paxos::Storage> storage;
  std::unique_ptr<PeerSender> sender;
  std::unique_ptr<ReplicaNode> node;
  uint64_t generation = 0;
  int64_t skew_ms = 0;
  double tick_period_us = kTickUs;
  int64_t clock_start_us = 0;
  uint64_t ticks_delivered = 0;
  int64_t stalled_until_us = 0;
  // Set when the process dies in the middle of a turn: nothing it does
  // afterwards leaves the machine.
  bool crashing = false;
  std::vector<paxospb::Message> inbox;
  std::vector<std::unique_ptr<ClientRequest>> tasks;
  uint64_t turn_token = 0;
  int64_t turn_at_us = kNever;
  // The checker's view of this incarnation.
  bool viewed = false;
  uint64_t viewed_index = 0;
  std::map<std::string, LockView> locks;
  std::set<uint64_t> sessions;
  // A spare machine: not a founding member; started (with --join) when a
  // change adds it.
  bool spare = false;
  bool joined = false;
};

// A lock a client was granted, as the client sees it.
struct Held {
  v1::Sequencer sequencer;
  int64_t release_at_local_us = 0;
  // The client decided to release it: it no longer relies on it.
  bool releasing = false;
  // The fencing check ran when the client first relied on it.
  bool fenced = false;
};

// A client request waiting for its final answer. Retries reuse the request
// number (or, for CreateSession, the nonce).
struct Operation {
  enum class Kind {
    kCreateSession,
    kAcquire,
    kRelease,
    kCloseSession,
    // An intruder's Release of the client's lock without its secret.
    kForgedRelease,
    // Client 0 (an admin) puts the lock paths under an ACL that lists every
    // client: the other steps then run every grant through the ACL checks.
    kAclSetup,
  };
  Kind kind = Kind::kCreateSession;
  statepb::Command command;
  // The session's request number, or the CreateSession nonce.
  uint64_t request_id = 0;
  std::string path;
  int64_t first_sent_local_us = 0;
  int64_t timeout_local_us = 0;
  int attempts = 0;
  // The replica and caller id of the last attempt.
  int attempt_replica = 0;
  uint64_t attempt_caller = 0;
  // When the operation timer fires: true if it is a timeout (try another
  // replica), false if it is a back-off after a refusal.
  bool timer_is_timeout = false;
};

struct Client {
  int index = 0;
  // Client 0's progress through the ACL setup (kAclSetupSteps: done).
  int acl_setup_step = 0;
  int64_t clock_offset_us = 0;
  double rate = 0;
  // Bumped when the process dies: timers and answers of the old process
  // are void.
  uint64_t incarnation = 0;
  bool dead = false;
  int64_t paused_until_us = 0;
  int64_t isolated_until_us = 0;

  bool has_session = false;
  uint64_t session_id = 0;
  // From the CreateSession answer; every request and keep-alive carries it.
  std::string session_secret;
  int64_t ttl_ms = 0;
  // The nonce of the last CreateSession.
  uint64_t nonce = 0;
  int64_t lease_end_local_us = std::numeric_limits<int64_t>::min();
  uint64_t max_epoch = 0;
  int target = 0;

  // Odd-numbered clients keep their session alive in the KeepAlive batch
  // form (a stream of many sessions, here of one), the others in the
  // single form, so that both paths of ReplicaNode run under every fault.
  bool batch_keepalive = false;
  bool keepalive_waiting = false;
  int64_t keepalive_sent_local_us = 0;
  uint64_t acked_event = 0;
  uint64_t events_lost_seen = 0;
  std::map<int, std::shared_ptr<SimListener>> streams;

  std::optional<Operation> op;
  uint64_t next_request_id = 1;
  std::map<std::string, Held> held;
  // Final answers of this session's requests (exactly-once check).
  std::map<uint64_t, std::string> answers;
  // Session granted for each CreateSession nonce of this process.
  std::map<uint64_t, uint64_t> created;

  bool granted_since_heal = false;
  uint64_t timer_token[2] = {0, 0};
};

// What the world knows about a session, for the expiry bounds.
struct SessionInfo {
  int64_t ttl_ms = 0;
  uint64_t nonce = 0;
  // When a replica's state first showed the session.
  int64_t first_seen_us = 0;
  // The last sign of life: the session's creation or the last keep-alive a
  // serving leader answered, in true time and in that leader's cell time,
  // and the time without a serving leader until then.
  int64_t base_us = 0;
  int64_t base_cell_ms = 0;
  int64_t base_leaderless_us = 0;
  // Leaderships that served by then: each later one grants the session a
  // fresh TTL (it cannot know the previous leader's keep-alive times).
  size_t base_leaderships = 0;
  bool close_requested = false;
  // Some replica's applied state no longer has the session.
  bool ended = false;
  bool relied_after_end_reported = false;
  bool bound_reported = false;
  bool deadline_reported = false;
};

// Who created the sessions of a nonce.
struct NonceOwner {
  int client = 0;
  uint64_t incarnation = 0;
};

class SimStorage : public paxos::Storage {
 public:
  SimStorage(World* world, int index) : world_(world), index_(index) {}
  absl::StatusOr<paxos::DurableState> Load() override;
  absl::Status Save(const paxos::PersistBatch& batch) override;

 private:
  World* const world_;
  const int index_;
};

class SimSender : public PeerSender {
 public:
  SimSender(World* world, int index) : world_(world), index_(index) {}
  void Send(paxospb::Message message) override;

 private:
  World* const world_;
  const int index_;
};

class World {
 public:
  explicit World(const Options& options)
      : options_(options),
        random_(options.seed * 0x9e3779b97f4a7c15ULL + 11),
        replicas_(options.replicas +
                  (options.membership ? kSpareMachines : 0)) {
    DrawFaultMix();
    snapshot_interval_ = static_cast<uint64_t>(random_.Range(20, 400));
    std::vector<uint32_t> members;
    for (int i = 0; i < options.replicas; ++i) {
      members.push_back(static_cast<uint32_t>(i + 1));
    }
    initial_membership_ = paxos::MembershipOfVoters(members);
    machines_.resize(replicas_);
    for (int i = 0; i < replicas_; ++i) {
      Machine& m = machines_[i];
      m.id = static_cast<uint32_t>(i + 1);
      m.skew_ms = random_.Range(-kMaxSkewMs, kMaxSkewMs);
      ReplicaNodeOptions& o = m.options;
      o.paxos.id = m.id;
      o.paxos.members = members;
      // lockd's defaults (docs/server.md).
      o.paxos.heartbeat_ticks = 5;
      o.paxos.election_ticks = 30;
      o.paxos.lease_ticks = 30;
      o.paxos.max_drift_ticks = 3;
      for (int other = 1; other <= replicas_; ++other) {
        o.addresses[other] = absl::StrCat("replica-", other);
      }
      o.snapshot_interval = snapshot_interval_;
      o.tick_ms = kTickUs / 1000;
      o.checkpoint_ticks = kCheckpointTicks;
      o.tick_command_ticks = kTickCommandTicks;
      o.cell_clock_slew_percent = static_cast<int>(kCellClockSlew * 100);
      m.storage = std::make_unique<SimStorage>(this, i);
      m.sender = std::make_unique<SimSender>(this, i);
      m.spare = i >= options.replicas;
      if (!m.spare) StartMachine(i);
    }
    clients_.resize(options_.clients);
    for (int c = 0; c < options_.clients; ++c) {
      Client& client = clients_[c];
      client.index = c;
      client.batch_keepalive = c % 2 == 1;
      client.clock_offset_us = random_.Range(-1000000000LL, 1000000000LL);
      client.rate =
          (static_cast<double>(random_.Uniform(2001)) / 1000.0 - 1.0) *
          kMaxClientDrift;
      client.target = static_cast<int>(random_.Uniform(options.replicas));
      ScheduleClientTimer(client, kOperationTimer, random_.Range(0, 200000));
    }
    ScheduleFault();
  }

  Result Run() {
    while (result_.steps < static_cast<uint64_t>(options_.steps)) {
      if (!StepOnce()) break;
    }
    Heal();
    while (now_us_ - heal_start_us_ <= kHealBoundUs) {
      if (HealDone()) {
        result_.heal_ms = (now_us_ - heal_start_us_) / 1000;
        break;
      }
      if (!StepOnce()) break;
    }
    if (result_.heal_ms == 0) {
      Violation(absl::StrCat("progress: ", kHealBoundUs / 1000000,
                             " s after healing: ", DescribeHealState()));
    }
    result_.virtual_ms = now_us_ / 1000;
    result_.leader_changes = serving_epochs_.size();
    return std::move(result_);
  }

  // --- Called by the adapters and listeners (from inside ReplicaNode).

  absl::StatusOr<paxos::DurableState> Load(int index) {
    return machines_[index].disk.Load();
  }

  absl::Status Save(int index, const paxos::PersistBatch& batch) {
    Machine& m = machines_[index];
    if (m.crashing || batch.empty()) return absl::OkStatus();
    if (batch.snapshot.has_value() && m.node != nullptr &&
        batch.snapshot->index() > m.node->applied_index()) {
      ++result_.snapshots_installed;
    }
    if (Roll(mix_.crash_mid_turn)) {
      if (random_.Bernoulli(0.5)) {
        // The process dies before the write is durable.
        CountFault("crash_before_persist");
        m.disk.Write(batch);
      } else {
        CountFault("crash_after_persist");
        m.disk.Save(batch).IgnoreError();
      }
      m.crashing = true;
      return absl::OkStatus();
    }
    return m.disk.Save(batch);
  }

  void SendPeer(int from, paxospb::Message message) {
    if (machines_[from].crashing) return;
    const int to = static_cast<int>(message.to()) - 1;
    if (to < 0 || to >= replicas_) return;
    const int copies = Copies(from, to);
    for (int copy = 0; copy < copies; ++copy) {
      Event event;
      event.kind = EventKind::kPeerMessage;
      event.target = to;
      event.message = message;
      Schedule(std::move(event), DrawDelay());
    }
  }

  // The per-session answers in a KeepAlive response: the response itself in
  // the single form, its successful entries in the batch form.
  static std::vector<const v1::KeepAliveResponse*> Answers(
      const v1::KeepAliveResponse& response) {
    std::vector<const v1::KeepAliveResponse*> answers;
    if (response.sessions_size() == 0) {
      answers.push_back(&response);
      return answers;
    }
    for (const v1::KeepAliveResponse& entry : response.sessions()) {
      if (entry.code() == 0) answers.push_back(&entry);
    }
    return answers;
  }

  void OnListenerSend(SimListener* listener, v1::KeepAliveResponse response) {
    Machine& m = machines_[listener->replica()];
    if (m.crashing) return;
    auto reply = std::make_unique<ClientReply>();
    reply->kind = ClientReply::Kind::kStream;
    reply->response = std::move(response);
    if (keepalive_in_progress_ != nullptr &&
        keepalive_in_progress_->listener.get() == listener) {
      // The leader renewed the session (in memory, for its next
      // checkpoint), whether or not the answer reaches the client.
      reply->direct = true;
      reply->sent_local_us = keepalive_in_progress_->sent_local_us;
      reply->incarnation = keepalive_in_progress_->incarnation;
      ++result_.keepalives_answered;
      for (const v1::KeepAliveResponse* answer : Answers(reply->response)) {
        const uint64_t session_id = answer->session_id();
        const absl::StatusOr<int64_t> expires_at =
            m.node->state().SessionExpiresAt(session_id);
        if (!expires_at.ok()) continue;
        // The answer's cell time is expires_at - lease_remaining.
        SessionInfo& info = sessions_[session_id];
        info.base_us = now_us_;
        info.base_leaderless_us = leaderless_us_;
        info.base_leaderships = serving_epochs_.size();
        info.base_cell_ms = std::max(
            info.base_cell_ms, *expires_at - answer->lease_remaining_ms());
        CheckLeaseTold(m, session_id, *expires_at,
                       answer->lease_remaining_ms());
      }
    } else {
      reply->incarnation = clients_[listener->client()].incarnation;
      // Pushed events carry a lease too.
      for (const v1::KeepAliveResponse* answer : Answers(reply->response)) {
        const absl::StatusOr<int64_t> expires_at =
            m.node->state().SessionExpiresAt(answer->session_id());
        if (expires_at.ok()) {
          CheckLeaseTold(m, answer->session_id(), *expires_at,
                         answer->lease_remaining_ms());
        }
      }
    }
    if (listener->broken) return;
    SendOnStream(listener, std::move(reply));
  }

  void OnListenerEnd(SimListener* listener, absl::Status status) {
    listener->ended = true;
    Machine& m = machines_[listener->replica()];
    if (m.crashing || listener->broken) return;
    auto reply = std::make_unique<ClientReply>();
    reply->kind = ClientReply::Kind::kStreamEnd;
    reply->status = std::move(status);
    if (keepalive_in_progress_ != nullptr &&
        keepalive_in_progress_->listener.get() == listener) {
      reply->direct = true;
      reply->sent_local_us = keepalive_in_progress_->sent_local_us;
      reply->incarnation = keepalive_in_progress_->incarnation;
    } else {
      reply->incarnation = clients_[listener->client()].incarnation;
    }
    SendOnStream(listener, std::move(reply));
  }

 private:
  // ------------------------------------------------------------- set-up

  void DrawFaultMix() {
    mix_.loss = random_.Bernoulli(0.8) ? random_.Uniform(100) / 1000.0 : 0;
    mix_.duplicate = random_.Bernoulli(0.5) ? random_.Uniform(50) / 1000.0 : 0;
    mix_.long_delay = random_.Bernoulli(0.5) ? random_.Uniform(30) / 1000.0 : 0;
    mix_.max_delay_us = random_.Range(500, 20000);
    mix_.max_long_delay_us = random_.Range(50000, 1000000);
    mix_.mean_fault_interval_us = random_.Range(200000, 2000000);
    mix_.crashes = random_.Bernoulli(0.8);
    mix_.partitions = random_.Bernoulli(0.8);
    mix_.stalls = random_.Bernoulli(0.4);
    mix_.client_faults = random_.Bernoulli(0.9);
    mix_.clock_steps = random_.Bernoulli(0.3);
    mix_.crash_mid_turn = mix_.crashes && random_.Bernoulli(0.5)
                              ? random_.Uniform(10) / 1000.0
                              : 0;
    mix_.group_commit_us =
        random_.Bernoulli(0.3) ? random_.Range(100, 2000) : 0;
    mix_.max_tick_drift = random_.Bernoulli(0.8) ? kMaxTickDrift : 0;
    mix_.membership = options_.membership && random_.Bernoulli(0.5);
  }

  // ------------------------------------------------------------- events

  void Schedule(Event event, int64_t delay_us) {
    event.time_us = now_us_ + std::max<int64_t>(delay_us, 0);
    event.sequence = next_sequence_++;
    events_.push_back(std::move(event));
    std::push_heap(events_.begin(), events_.end(), EventLater());
  }

  // Returns false when nothing is left to do.
  bool StepOnce() {
    while (!events_.empty()) {
      std::pop_heap(events_.begin(), events_.end(), EventLater());
      Event event = std::move(events_.back());
      events_.pop_back();
      if (!leader_serving_) leaderless_us_ += event.time_us - now_us_;
      now_us_ = event.time_us;
      if (!Handle(event)) continue;  // A superseded timer: not a step.
      ++result_.steps;
      leader_serving_ = false;
      for (const Machine& m : machines_) {
        leader_serving_ = leader_serving_ ||
                          (m.node != nullptr && now_us_ >= m.stalled_until_us &&
                           m.node->Serving());
      }
      CheckAfterStep();
      return true;
    }
    return false;
  }

  // Returns false if the event was void.
  bool Handle(Event& event) {
    switch (event.kind) {
      case EventKind::kTurn: {
        Machine& m = machines_[event.target];
        if (m.node == nullptr || event.token != m.turn_token) return false;
        Turn(event.target);
        return true;
      }
      case EventKind::kPeerMessage: {
        Machine& m = machines_[event.target];
        if (m.node == nullptr) return true;
        m.inbox.push_back(std::move(event.message));
        InputArrived(event.target);
        return true;
      }
      case EventKind::kToReplica: {
        Machine& m = machines_[event.target];
        if (m.node == nullptr) return true;
        m.tasks.push_back(std::move(event.request));
        InputArrived(event.target);
        return true;
      }
      case EventKind::kToClient: {
        Client& c = clients_[event.target];
        if (c.dead || event.reply->incarnation != c.incarnation) return true;
        if (now_us_ < c.paused_until_us) {
          // Waits in the socket until the process runs again.
          Schedule(std::move(event), c.paused_until_us - now_us_);
          return true;
        }
        ClientReceive(c, *event.reply);
        return true;
      }
      case EventKind::kClientTimer: {
        Client& c = clients_[event.target];
        if (c.dead || event.token != c.timer_token[event.timer]) return false;
        if (now_us_ < c.paused_until_us) {
          Schedule(std::move(event), c.paused_until_us - now_us_);
          return true;
        }
        if (event.timer == kKeepAliveTimer) {
          KeepAliveTimer(c);
        } else {
          OperationTimer(c);
        }
        return true;
      }
      case EventKind::kClientReboot: {
        Client& c = clients_[event.target];
        if (!c.dead || event.token != c.incarnation) return false;
        Reboot(c);
        return true;
      }
      case EventKind::kFault:
        if (healed_) return false;
        InjectFault();
        ScheduleFault();
        return true;
      case EventKind::kRestart: {
        Machine& m = machines_[event.target];
        if (m.node != nullptr || event.token != m.generation) return false;
        CountFault("restart");
        StartMachine(event.target);
        return true;
      }
    }
    return false;
  }

  // ------------------------------------------------------------- replicas

  int64_t WallMs(const Machine& m) const {
    return kWallBaseMs + now_us_ / 1000 + m.skew_ms;
  }

  int64_t NextTickUs(const Machine& m) const {
    return m.clock_start_us +
           static_cast<int64_t>(std::ceil(
               static_cast<double>(m.ticks_delivered + 1) * m.tick_period_us));
  }

  void EnsureTurn(int index, int64_t at_us) {
    Machine& m = machines_[index];
    if (m.turn_at_us <= at_us) return;
    m.turn_at_us = at_us;
    Event event;
    event.kind = EventKind::kTurn;
    event.target = index;
    event.token = ++m.turn_token;
    Schedule(std::move(event), at_us - now_us_);
  }

  void InputArrived(int index) {
    Machine& m = machines_[index];
    const int64_t at =
        std::max(now_us_ + (mix_.group_commit_us > 0
                                ? random_.Range(0, mix_.group_commit_us)
                                : 0),
                 m.stalled_until_us);
    EnsureTurn(index, at);
  }

  // One turn of the replica's loop, as lockd/replica_loop.cc Turn() does
  // it: elapsed ticks, peer messages, Ready, client tasks, housekeeping,
  // Ready.
  void Turn(int index) {
    Machine& m = machines_[index];
    m.turn_at_us = kNever;
    if (now_us_ < m.stalled_until_us) {
      // A stalled process: its monotonic clock runs on, its input waits.
      EnsureTurn(index, m.stalled_until_us);
      return;
    }
    const int64_t wall_ms = WallMs(m);
    while (NextTickUs(m) <= now_us_) {
      m.node->Tick();
      ++m.ticks_delivered;
    }
    std::vector<paxospb::Message> inbox = std::move(m.inbox);
    m.inbox.clear();
    std::vector<std::unique_ptr<ClientRequest>> tasks = std::move(m.tasks);
    m.tasks.clear();
    for (const paxospb::Message& message : inbox) m.node->Step(message);
    m.node->ProcessReady(wall_ms);
    if (!m.crashing) {
      for (const std::unique_ptr<ClientRequest>& task : tasks) {
        RunTask(index, *task, wall_ms);
      }
      m.node->Housekeeping(wall_ms);
      m.node->ProcessReady(wall_ms);
    }
    if (m.crashing) {
      FinishCrash(index);
      return;
    }
    if (m.node->Serving() &&
        serving_epochs_.insert(m.node->replica().epoch()).second) {
      Trace(absl::StrCat("replica ", m.id, " serves epoch ",
                         m.node->replica().epoch()));
    }
    EnsureTurn(index, NextTickUs(m));
  }

  // A session secret from the run's seed (a replica draws it from OpenSSL).
  std::string RandomSecret() {
    std::string secret;
    for (int i = 0; i < 4; ++i) {
      const uint64_t word = random_.Next();
      secret.append(reinterpret_cast<const char*>(&word), sizeof(word));
    }
    return secret;
  }

  void RunTask(int index, ClientRequest& task, int64_t wall_ms) {
    Machine& m = machines_[index];
    switch (task.kind) {
      case ClientRequest::Kind::kSubmit: {
        uint64_t session_id = 0;
        uint64_t request_id = 0;
        RequestOf(task.command, &session_id, &request_id);
        const uint64_t generation = m.generation;
        const int client = task.client;
        const uint64_t incarnation = task.incarnation;
        const uint64_t caller = task.caller;
        m.node->Submit(
            task.command, wall_ms, random_.Next() | 1, RandomSecret(), caller,
            [this, index, generation, client, incarnation, session_id,
             request_id, caller](absl::StatusOr<statepb::Result> result) {
              OnResult(index, generation, client, incarnation, session_id,
                       request_id, caller, std::move(result));
            });
        return;
      }
      case ClientRequest::Kind::kKeepAlive:
        keepalive_in_progress_ = &task;
        m.node->KeepAlive(task.listener, task.keepalive, wall_ms);
        keepalive_in_progress_ = nullptr;
        return;
      case ClientRequest::Kind::kCloseStream:
        m.node->RemoveSessionListener(task.listener.get());
        return;
      case ClientRequest::Kind::kCancel:
        m.node->Cancel(task.caller);
        return;
    }
  }

  static void RequestOf(const statepb::Command& command, uint64_t* session_id,
                        uint64_t* request_id) {
    const sessions::RequestKey key = sessions::RequestKeyOf(command);
    *session_id = key.session_id;
    *request_id = key.request_id;
  }

  void OnResult(int index, uint64_t generation, int client,
                uint64_t incarnation, uint64_t session_id, uint64_t request_id,
                uint64_t caller, absl::StatusOr<statepb::Result> result) {
    Machine& m = machines_[index];
    if (m.crashing || m.generation != generation) return;
    const int copies = Copies(index, replicas_ + client);
    for (int copy = 0; copy < copies; ++copy) {
      auto reply = std::make_unique<ClientReply>();
      reply->kind = ClientReply::Kind::kResult;
      reply->incarnation = incarnation;
      reply->session_id = session_id;
      reply->request_id = request_id;
      reply->caller = caller;
      if (result.ok()) {
        reply->result = *result;
      } else {
        reply->status = result.status();
      }
      Event event;
      event.kind = EventKind::kToClient;
      event.target = client;
      event.reply = std::move(reply);
      Schedule(std::move(event), DrawDelay());
    }
  }

  void StartMachine(int index) {
    Machine& m = machines_[index];
    m.tick_period_us =
        kTickUs *
        (1.0 + (static_cast<double>(random_.Uniform(2001)) / 1000.0 - 1.0) *
                   mix_.max_tick_drift);
    m.options.paxos.random_seed =
        options_.seed * 1000003 + m.generation * 31 + m.id;
    m.clock_start_us = now_us_;
    m.ticks_delivered = 0;
    m.crashing = false;
    m.viewed = false;
    m.locks.clear();
    m.sessions.clear();
    absl::StatusOr<std::unique_ptr<ReplicaNode>> node =
        ReplicaNode::Create(m.options, m.storage.get(), m.sender.get());
    if (!node.ok()) {
      Violation(absl::StrCat("replica ", m.id, " cannot start from its disk: ",
                             node.status().ToString()));
      return;
    }
    m.node = *std::move(node);
    Trace(absl::StrCat("replica ", m.id, " starts (generation ", m.generation,
                       ")"));
    EnsureTurn(index, now_us_ + random_.Range(0, kTickUs));
  }

  // Stops the process now: everything not synced is lost, queued input and
  // waiting callers vanish with it.
  void FinishCrash(int index) {
    Machine& m = machines_[index];
    m.node.reset();
    m.disk.Crash();
    m.crashing = false;
    m.inbox.clear();
    m.tasks.clear();
    m.turn_at_us = kNever;
    ++m.generation;
    Trace(absl::StrCat("replica ", m.id, " crashed"));
    Event event;
    event.kind = EventKind::kRestart;
    event.target = index;
    event.token = m.generation;
    Schedule(std::move(event), healed_ ? 0 : random_.Range(10000, 500000));
  }

  // ------------------------------------------------------------- network

  bool Roll(double probability) {
    return probability > 0 && random_.Bernoulli(probability);
  }

  void CountFault(const std::string& kind) { ++result_.faults[kind]; }

  // Endpoints: replicas are 0..R-1, client c is R + c.
  bool Blocked(int from, int to) const {
    if (blocked_.count({from, to}) != 0) return true;
    for (int endpoint : {from, to}) {
      if (endpoint >= replicas_ &&
          now_us_ < clients_[endpoint - replicas_].isolated_until_us) {
        return true;
      }
    }
    return false;
  }

  int64_t DrawDelay() {
    if (Roll(mix_.long_delay)) {
      CountFault("message_long_delay");
      return random_.Range(mix_.max_delay_us, mix_.max_long_delay_us);
    }
    return random_.Range(100, mix_.max_delay_us);
  }

  // How many copies of a message from `from` to `to` get through.
  int Copies(int from, int to) {
    if (Blocked(from, to)) {
      CountFault("partition_drop");
      return 0;
    }
    if (Roll(mix_.loss)) {
      CountFault("message_loss");
      return 0;
    }
    if (Roll(mix_.duplicate)) {
      CountFault("message_duplicate");
      return 2;
    }
    return 1;
  }

  void SendOnStream(SimListener* listener, std::unique_ptr<ClientReply> reply) {
    const int client = listener->client();
    if (Blocked(listener->replica(), replicas_ + client) || Roll(mix_.loss)) {
      CountFault("stream_break");
      listener->broken = true;
      return;
    }
    const int64_t at =
        std::max(now_us_ + DrawDelay(), listener->last_delivery_us + 1);
    listener->last_delivery_us = at;
    reply->listener = listener->shared_from_this();
    Event event;
    event.kind = EventKind::kToClient;
    event.target = client;
    event.reply = std::move(reply);
    Schedule(std::move(event), at - now_us_);
  }

  void SendToReplica(Client& c, int replica,
                     std::unique_ptr<ClientRequest> request) {
    request->client = c.index;
    request->incarnation = c.incarnation;
    const int copies = Copies(replicas_ + c.index, replica);
    for (int copy = 0; copy < copies; ++copy) {
      Event event;
      event.kind = EventKind::kToReplica;
      event.target = replica;
      event.request = std::make_unique<ClientRequest>(*request);
      Schedule(std::move(event), DrawDelay());
    }
  }

  // ------------------------------------------------------------- clients

  int64_t LocalNow(const Client& c) const {
    return c.clock_offset_us +
           static_cast<int64_t>(static_cast<double>(now_us_) * (1.0 + c.rate));
  }

  void ScheduleClientTimer(Client& c, TimerKind kind, int64_t local_delay_us) {
    Event event;
    event.kind = EventKind::kClientTimer;
    event.target = c.index;
    event.timer = kind;
    event.token = ++c.timer_token[kind];
    Schedule(std::move(event),
             static_cast<int64_t>(std::ceil(
                 static_cast<double>(std::max<int64_t>(local_delay_us, 0)) /
                 (1.0 + c.rate))));
  }

  // True iff the client's local lease runs.
  bool LeaseValid(const Client& c) const {
    return c.has_session && LocalNow(c) < c.lease_end_local_us;
  }

  // True iff the client relies on the locks it was granted: while its lease
  // runs (always, with --bug=client_ignores_lease).
  bool Relies(const Client& c) const {
    if (options_.bug == Bug::kClientIgnoresLease) return c.has_session;
    return LeaseValid(c);
  }

  // Extends the local lease from an answer to a request sent at
  // `sent_local_us` that granted `remaining_ms` of cell time: conservative
  // for the round trip (dated from the send), the cell clock's rate and the
  // client's own clock rate.
  void ExtendLease(Client& c, int64_t sent_local_us, int64_t remaining_ms,
                   uint64_t epoch) {
    if (epoch < c.max_epoch) return;  // From a deposed leader.
    c.max_epoch = epoch;
    const int64_t usable_us =
        static_cast<int64_t>(static_cast<double>(remaining_ms) * 1000.0 *
                             (1.0 - kMaxClientDrift) / kMaxCellRate);
    c.lease_end_local_us =
        std::max(c.lease_end_local_us,
                 sent_local_us + usable_us - kClientMarginMs * 1000);
  }

  void OperationTimer(Client& c) {
    if (!c.op.has_value()) {
      NextOperation(c);
      return;
    }
    if (c.op->timer_is_timeout) {
      // The attempt's deadline passed: the RPC is cancelled, and the request
      // goes to another replica.
      auto cancel = std::make_unique<ClientRequest>();
      cancel->kind = ClientRequest::Kind::kCancel;
      cancel->caller = c.op->attempt_caller;
      SendToReplica(c, c.op->attempt_replica, std::move(cancel));
      c.target = NextTarget(c.target);
    }
    SendOperation(c);
  }

  void NextOperation(Client& c) {
    if (!c.has_session) {
      StartSession(c);
      return;
    }
    if (c.index == 0 && c.acl_setup_step < kAclSetupSteps) {
      StartAclSetup(c);
      return;
    }
    const int64_t local = LocalNow(c);
    for (auto& [path, held] : c.held) {
      if (held.release_at_local_us <= local) {
        StartRelease(c, path);
        return;
      }
    }
    // Now and then someone who knows the session's id (not its secret)
    // tries to release one of its locks: it must be refused, and the lock
    // stays held (the real release later checks that it still is).
    if (!c.held.empty() && random_.Bernoulli(0.05)) {
      StartForgedRelease(c, c.held.begin()->first);
      return;
    }
    if (!healed_ && c.held.empty() && random_.Bernoulli(0.02)) {
      Operation op;
      op.kind = Operation::Kind::kCloseSession;
      op.request_id = c.next_request_id;
      v1::RequestHeader* header =
          op.command.mutable_close_session()->mutable_header();
      header->set_session_id(c.session_id);
      header->set_request_id(op.request_id);
      header->set_session_secret(c.session_secret);
      header->set_first_unanswered_request_id(op.request_id);
      op.timeout_local_us = 500000;
      sessions_[c.session_id].close_requested = true;
      Trace(absl::StrCat("client ", c.index, " closes session ", c.session_id));
      StartOperation(c, std::move(op));
      return;
    }
    std::vector<int> free_paths;
    for (int p = 0; p < kPaths; ++p) {
      if (c.held.count(LockPath(p)) == 0) free_paths.push_back(p);
    }
    // A client waits for a lock only while it holds none (two clients each
    // holding what the other waits for would deadlock until the wait
    // timeout); it may try for a second one.
    if (!free_paths.empty() && c.held.size() < 2 &&
        (healed_ ? c.held.empty() : random_.Bernoulli(0.7))) {
      StartAcquire(c, LockPath(free_paths[random_.Uniform(free_paths.size())]),
                   /*may_wait=*/c.held.empty());
      return;
    }
    int64_t wake = local + random_.Range(50000, 300000);
    for (const auto& [path, held] : c.held) {
      wake = std::min(wake, held.release_at_local_us);
    }
    ScheduleClientTimer(c, kOperationTimer, wake - local);
  }

  void StartAcquire(Client& c, const std::string& path, bool may_wait) {
    Operation op;
    op.kind = Operation::Kind::kAcquire;
    op.path = path;
    op.request_id = c.next_request_id;
    v1::AcquireRequest* acquire = op.command.mutable_acquire();
    v1::RequestHeader* header = acquire->mutable_header();
    header->set_session_id(c.session_id);
    header->set_request_id(op.request_id);
    header->set_session_secret(c.session_secret);
    header->set_first_unanswered_request_id(op.request_id);
    acquire->set_path(path);
    const bool shared = !healed_ && random_.Bernoulli(0.25);
    acquire->set_mode(shared ? v1::SHARED : v1::EXCLUSIVE);
    int64_t wait_ms = 0;
    if (!may_wait) {
      wait_ms = 0;
    } else if (healed_) {
      wait_ms = 10000;
    } else if (random_.Bernoulli(0.6)) {
      wait_ms = random_.Range(100, 3000);
    }
    acquire->set_wait_timeout_ms(wait_ms);
    if (!shared && random_.Bernoulli(0.3)) {
      acquire->set_lock_delay_ms(random_.Range(100, 1000));
    }
    op.timeout_local_us = (wait_ms + 500) * 1000;
    StartOperation(c, std::move(op));
  }

  void StartRelease(Client& c, const std::string& path) {
    Held& held = c.held.at(path);
    // From here on the client no longer relies on the lock.
    held.releasing = true;
    StartOperation(c, ReleaseOperation(c, path, Operation::Kind::kRelease,
                                       c.session_secret));
  }

  void StartForgedRelease(Client& c, const std::string& path) {
    StartOperation(c, ReleaseOperation(c, path, Operation::Kind::kForgedRelease,
                                       "forged"));
  }

  // A Release of `path` as the client's next request, presenting `secret`.
  static Operation ReleaseOperation(const Client& c, const std::string& path,
                                    Operation::Kind kind,
                                    const std::string& secret) {
    Operation op;
    op.kind = kind;
    op.path = path;
    op.request_id = c.next_request_id;
    v1::ReleaseRequest* release = op.command.mutable_release();
    v1::RequestHeader* header = release->mutable_header();
    header->set_session_id(c.session_id);
    header->set_request_id(op.request_id);
    header->set_session_secret(secret);
    header->set_first_unanswered_request_id(op.request_id);
    release->set_path(path);
    op.timeout_local_us = 500000;
    return op;
  }

  void StartSession(Client& c) {
    c.nonce = random_.Next() | 1;
    nonce_owner_[c.nonce] = {c.index, c.incarnation};
    Operation op;
    op.kind = Operation::Kind::kCreateSession;
    op.request_id = c.nonce;
    v1::CreateSessionRequest* create = op.command.mutable_create_session();
    create->set_ttl_ms(random_.Range(2000, 5000));
    create->set_client_name(absl::StrCat("client-", c.index));
    create->set_nonce(c.nonce);
    op.timeout_local_us = 500000;
    StartOperation(c, std::move(op));
  }

  // /acl, /acl/writers listing every client, write and change-ACL on "/"
  // for the writers only (inherited by nodes created later), then each lock
  // path created (if missing) and given the same names.
  static constexpr int kAclSetupSteps = 3 + 2 * kPaths;
  void StartAclSetup(Client& c) {
    Operation op;
    op.kind = Operation::Kind::kAclSetup;
    op.request_id = c.next_request_id;
    v1::RequestHeader* header = nullptr;
    const int step = c.acl_setup_step;
    if (step == 0 || step == 1 || (step >= 3 && step < 3 + kPaths)) {
      v1::CreateNodeRequest* create = op.command.mutable_create_node();
      create->set_path(step == 0   ? std::string("/acl")
                       : step == 1 ? std::string("/acl/writers")
                                   : LockPath(step - 3));
      if (step == 1) {
        std::vector<std::string> names;
        for (const Client& client : clients_) {
          names.push_back(Principal(client));
        }
        create->set_content(absl::StrJoin(names, "\n"));
      }
      header = create->mutable_header();
    } else {
      v1::SetAclRequest* set = op.command.mutable_set_acl();
      set->set_path(step == 2 ? std::string("/") : LockPath(step - 3 - kPaths));
      set->set_write_acl("writers");
      set->set_change_acl("writers");
      header = set->mutable_header();
    }
    header->set_session_id(c.session_id);
    header->set_request_id(op.request_id);
    header->set_session_secret(c.session_secret);
    header->set_first_unanswered_request_id(op.request_id);
    op.timeout_local_us = 500000;
    StartOperation(c, std::move(op));
  }

  static std::string Principal(const Client& c) {
    return absl::StrCat("client-", c.index);
  }

  void StartOperation(Client& c, Operation op) {
    // As the front end would stamp it from the client's certificate;
    // client 0 is the operator.
    op.command.set_principal(Principal(c));
    op.command.set_admin(c.index == 0);
    op.first_sent_local_us = LocalNow(c);
    c.op = std::move(op);
    SendOperation(c);
  }

  void SendOperation(Client& c) {
    Operation& op = *c.op;
    if (++op.attempts > 1) ++result_.retries;
    auto request = std::make_unique<ClientRequest>();
    request->kind = ClientRequest::Kind::kSubmit;
    request->command = op.command;
    request->caller = ++next_caller_;
    op.attempt_replica = c.target;
    op.attempt_caller = request->caller;
    SendToReplica(c, c.target, std::move(request));
    op.timer_is_timeout = true;
    ScheduleClientTimer(c, kOperationTimer, op.timeout_local_us);
  }

  // Retries the operation after a refusal, at `target`.
  void RetryOperation(Client& c, int target, int64_t backoff_local_us) {
    c.target = target;
    c.op->timer_is_timeout = false;
    ScheduleClientTimer(c, kOperationTimer, backoff_local_us);
  }

  // The replica a refusal names as leader, or the next one.
  int TargetAfterRefusal(const Client& c, const absl::Status& status) const {
    const auto leader = status.GetPayload(kLeaderIdPayload);
    int id = 0;
    if (leader.has_value() && absl::SimpleAtoi(std::string(*leader), &id) &&
        id >= 1 && id <= replicas_) {
      return id - 1;
    }
    return NextTarget(c.target);
  }

  void ClientReceive(Client& c, ClientReply& reply) {
    if (reply.kind == ClientReply::Kind::kResult) {
      OnOperationReply(c, reply);
    } else {
      OnStreamMessage(c, reply);
    }
  }

  // Exactly-once, as the client sees it: two final answers to one request
  // (a retry, a duplicate) must be the same answer when either succeeded.
  void CheckSameAnswer(Client& c, uint64_t request_id,
                       const statepb::Result& result) {
    const std::string bytes = result.SerializeAsString();
    auto [it, first] = c.answers.emplace(request_id, bytes);
    if (first || it->second == bytes) return;
    statepb::Result before;
    before.ParseFromString(it->second);
    if (before.code() != 0 && result.code() != 0) return;
    // A late duplicate may find its session gone, or (below the
    // first_unanswered_request_id the client has since sent) its answer
    // forgotten.
    if (result.code() == static_cast<int>(absl::StatusCode::kNotFound) ||
        (result.code() ==
             static_cast<int>(absl::StatusCode::kFailedPrecondition) &&
         absl::StrContains(result.message(), "no longer retained"))) {
      return;
    }
    Violation(absl::StrCat("exactly-once: client ", c.index, " request ",
                           request_id, " of session ", c.session_id,
                           " was answered ", before.ShortDebugString(),
                           " and later ", result.ShortDebugString()));
  }

  void OnOperationReply(Client& c, const ClientReply& reply) {
    if (reply.session_id == 0) {
      OnCreateReply(c, reply);
      return;
    }
    if (!c.has_session || reply.session_id != c.session_id) return;
    const bool current = c.op.has_value() &&
                         c.op->kind != Operation::Kind::kCreateSession &&
                         reply.request_id == c.op->request_id;
    // A refusal matters only for the latest attempt (earlier ones were
    // cancelled or superseded).
    const bool latest = current && reply.caller == c.op->attempt_caller;
    if (latest && c.op->kind == Operation::Kind::kForgedRelease) {
      const bool denied =
          reply.status.code() == absl::StatusCode::kPermissionDenied ||
          (reply.status.ok() &&
           reply.result.code() ==
               static_cast<int>(absl::StatusCode::kPermissionDenied));
      if (denied) {
        ++result_.forgeries_refused;
        c.op.reset();
        ScheduleClientTimer(c, kOperationTimer, random_.Range(0, 200000));
        return;
      }
      if (reply.status.ok() && reply.result.code() == 0) {
        Violation(absl::StrCat("forged secret accepted: a release of ",
                               c.op->path, " for session ", c.session_id,
                               " without its secret succeeded"));
      }
      // Otherwise (not the leader, overtaken, session gone) as any request.
    }
    if (current && !latest && c.op->kind == Operation::Kind::kForgedRelease) {
      return;
    }
    if (!reply.status.ok()) {
      if (latest) RefusedOperation(c, reply.status);
      return;
    }
    const statepb::Result& result = reply.result;
    if (result.code() == static_cast<int>(absl::StatusCode::kAborted)) {
      if (latest) RetryOperation(c, c.target, 5000);
      return;
    }
    CheckSameAnswer(c, reply.request_id, result);
    if (!current) return;
    Operation op = *std::move(c.op);
    c.op.reset();
    ++c.next_request_id;
    const absl::StatusCode code = static_cast<absl::StatusCode>(result.code());
    if (code == absl::StatusCode::kPermissionDenied) {
      Violation(absl::StrCat("ACL: ", Principal(c),
                             " (listed in /acl/writers) "
                             "was denied request ",
                             op.request_id, ": ", result.message()));
    }
    if (code == absl::StatusCode::kNotFound) {
      SessionLost(
          c, absl::StrCat("request ", op.request_id, ": ", result.message()));
      return;
    }
    switch (op.kind) {
      case Operation::Kind::kAcquire:
        if (code == absl::StatusCode::kOk) {
          Granted(c, op, result.acquire().sequencer());
        }
        break;
      case Operation::Kind::kRelease:
        if (code == absl::StatusCode::kOk) {
          ++result_.releases;
        } else {
          Violation(absl::StrCat("lock lost: client ", c.index, " session ",
                                 c.session_id, " released ", op.path,
                                 " (granted, never released) and got ",
                                 result.ShortDebugString()));
        }
        c.held.erase(op.path);
        break;
      case Operation::Kind::kCloseSession:
        EndSession(c, "closed");
        break;
      case Operation::Kind::kAclSetup:
        if (code == absl::StatusCode::kOk ||
            code == absl::StatusCode::kAlreadyExists) {
          ++c.acl_setup_step;
          if (c.acl_setup_step == kAclSetupSteps) ++result_.acl_setups;
        }
        break;
      case Operation::Kind::kCreateSession:
      case Operation::Kind::kForgedRelease:
        break;
    }
    ScheduleClientTimer(c, kOperationTimer, random_.Range(0, 200000));
  }

  void RefusedOperation(Client& c, const absl::Status& status) {
    if (status.code() == absl::StatusCode::kUnavailable) {
      const int target = TargetAfterRefusal(c, status);
      RetryOperation(c, target, target == c.target ? 20000 : 2000);
    } else {
      RetryOperation(c, c.target, 100000);
    }
  }

  void Granted(Client& c, const Operation& op, const v1::Sequencer& sequencer) {
    if (sequencer.mode() == v1::EXCLUSIVE) {
      ++result_.exclusive_grants;
      if (healed_) c.granted_since_heal = true;
    } else {
      ++result_.shared_grants;
    }
    Held& held = c.held[op.path];
    held.sequencer = sequencer;
    held.release_at_local_us = LocalNow(c) + random_.Range(20000, 1000000);
    Trace(absl::StrCat("client ", c.index, " session ", c.session_id,
                       " granted ", op.path, " ",
                       v1::LockMode_Name(sequencer.mode()), " generation ",
                       sequencer.lock_generation()));
  }

  void OnCreateReply(Client& c, const ClientReply& reply) {
    const bool current = c.op.has_value() &&
                         c.op->kind == Operation::Kind::kCreateSession &&
                         reply.request_id == c.op->request_id;
    const bool latest = current && reply.caller == c.op->attempt_caller;
    if (!reply.status.ok()) {
      if (latest) RefusedOperation(c, reply.status);
      return;
    }
    const statepb::Result& result = reply.result;
    if (result.code() != 0) {
      if (latest) RetryOperation(c, c.target, 100000);
      return;
    }
    const v1::CreateSessionResponse& response = result.create_session();
    auto [it, first] =
        c.created.emplace(reply.request_id, response.session_id());
    // The nonce names one session as long as that session lives (closed or
    // expired, a late retry opens a new one).
    if (!first && it->second != response.session_id() &&
        !sessions_[it->second].ended) {
      Violation(absl::StrCat("exactly-once: client ", c.index, " nonce ",
                             reply.request_id, " created session ", it->second,
                             " (still live) and session ",
                             response.session_id()));
    }
    if (!current) return;
    if (response.session_secret().empty()) {
      // An earlier attempt opened the session and its answer, with the
      // secret, was lost: as the client library, open another with a new
      // nonce (the first expires by its TTL).
      c.op.reset();
      StartSession(c);
      return;
    }
    Operation op = *std::move(c.op);
    c.op.reset();
    c.has_session = true;
    c.session_id = response.session_id();
    c.session_secret = response.session_secret();
    c.ttl_ms = response.ttl_ms();
    c.next_request_id = 1;
    c.lease_end_local_us = std::numeric_limits<int64_t>::min();
    c.max_epoch = 0;
    c.acked_event = 0;
    c.events_lost_seen = 0;
    c.streams.clear();
    c.answers.clear();
    c.held.clear();
    c.keepalive_waiting = false;
    // Any attempt may be the one answered: date the lease from the first.
    ExtendLease(c, op.first_sent_local_us, response.lease_remaining_ms(),
                response.epoch());
    ++result_.sessions_created;
    SessionInfo& info = sessions_[c.session_id];
    info.ttl_ms = c.ttl_ms;
    info.nonce = c.nonce;
    Trace(absl::StrCat("client ", c.index, " has session ", c.session_id,
                       " ttl ", c.ttl_ms, " ms"));
    ScheduleClientTimer(c, kKeepAliveTimer, c.ttl_ms * 1000 / 3);
    ScheduleClientTimer(c, kOperationTimer, random_.Range(0, 200000));
    if (random_.Bernoulli(0.2)) {
      // Retry the CreateSession once more: the same nonce must name the
      // same session.
      auto request = std::make_unique<ClientRequest>();
      request->kind = ClientRequest::Kind::kSubmit;
      request->command = op.command;
      request->caller = ++next_caller_;
      ++result_.retries;
      SendToReplica(c, c.target, std::move(request));
    }
  }

  // The session ended for the client: it stops relying on its locks.
  void EndSession(Client& c, const std::string& why) {
    Trace(absl::StrCat("client ", c.index, " session ", c.session_id,
                       " ended: ", why));
    c.has_session = false;
    c.held.clear();
    c.op.reset();
    c.streams.clear();
    c.answers.clear();
    c.keepalive_waiting = false;
    ++c.timer_token[kKeepAliveTimer];
  }

  void SessionLost(Client& c, const std::string& why) {
    EndSession(c, absl::StrCat("lost (", why, ")"));
    ScheduleClientTimer(c, kOperationTimer, random_.Range(0, 200000));
  }

  std::shared_ptr<SimListener> StreamTo(Client& c, int replica) {
    std::shared_ptr<SimListener>& stream = c.streams[replica];
    if (stream != nullptr && !stream->ended && !stream->broken) return stream;
    if (stream != nullptr && !stream->ended) {
      // The replica forgets a broken stream.
      auto request = std::make_unique<ClientRequest>();
      request->kind = ClientRequest::Kind::kCloseStream;
      request->listener = stream;
      SendToReplica(c, replica, std::move(request));
    }
    stream =
        std::make_shared<SimListener>(this, c.index, replica, c.session_id);
    return stream;
  }

  void KeepAliveTimer(Client& c) {
    if (!c.has_session) return;
    if (c.keepalive_waiting) {
      // No answer in time: try another replica.
      c.target = NextTarget(c.target);
    }
    auto request = std::make_unique<ClientRequest>();
    request->kind = ClientRequest::Kind::kKeepAlive;
    request->listener = StreamTo(c, c.target);
    v1::KeepAliveRequest& keepalive = c.batch_keepalive
                                          ? *request->keepalive.add_sessions()
                                          : request->keepalive;
    keepalive.set_session_id(c.session_id);
    keepalive.set_session_secret(c.session_secret);
    keepalive.set_acked_event_sequence(c.acked_event);
    request->sent_local_us = LocalNow(c);
    c.keepalive_waiting = true;
    c.keepalive_sent_local_us = request->sent_local_us;
    SendToReplica(c, c.target, std::move(request));
    ScheduleClientTimer(c, kKeepAliveTimer, 300000);
  }

  void OnStreamMessage(Client& c, const ClientReply& reply) {
    if (!c.has_session || reply.listener == nullptr ||
        reply.listener->session_id() != c.session_id) {
      return;
    }
    if (reply.kind == ClientReply::Kind::kStreamEnd) {
      if (reply.status.code() == absl::StatusCode::kNotFound) {
        SessionLost(c, std::string(reply.status.message()));
        return;
      }
      if (reply.direct) {
        c.target = TargetAfterRefusal(c, reply.status);
        c.keepalive_waiting = false;
        ScheduleClientTimer(c, kKeepAliveTimer, 10000);
      }
      return;
    }
    if (c.batch_keepalive && reply.response.sessions_size() != 1) {
      Violation(absl::StrCat(
          "keep-alive: client ", c.index, " got a batch answer with ",
          reply.response.sessions_size(), " entries for its one session"));
      return;
    }
    const v1::KeepAliveResponse& response =
        c.batch_keepalive ? reply.response.sessions(0) : reply.response;
    if (c.batch_keepalive && response.code() != 0) {
      if (response.code() == static_cast<int>(absl::StatusCode::kNotFound)) {
        SessionLost(c, response.message());
      }
      return;
    }
    if (response.events_lost() > c.events_lost_seen) {
      c.events_lost_seen = response.events_lost();
    }
    for (const v1::Event& event : response.events()) {
      if (event.sequence() <= c.acked_event) continue;
      if (event.sequence() != c.acked_event + 1 &&
          response.events_lost() == 0) {
        Violation(absl::StrCat("events: client ", c.index, " session ",
                               c.session_id, " received event ",
                               event.sequence(), " after ", c.acked_event,
                               " with no loss reported"));
      }
      c.acked_event = event.sequence();
    }
    if (!reply.direct) return;
    ExtendLease(c, reply.sent_local_us, response.lease_remaining_ms(),
                response.epoch());
    if (c.keepalive_waiting &&
        reply.sent_local_us == c.keepalive_sent_local_us) {
      // Every third of the TTL, sooner if the lease granted is short.
      c.keepalive_waiting = false;
      const int64_t interval_us = std::min(
          c.ttl_ms * 1000 / 3, response.lease_remaining_ms() * 1000 / 2);
      ScheduleClientTimer(
          c, kKeepAliveTimer,
          c.keepalive_sent_local_us + interval_us - LocalNow(c));
    }
  }

  void Die(Client& c, bool permanent) {
    Trace(absl::StrCat("client ", c.index, " dies",
                       permanent ? " for good" : ""));
    if (c.has_session) EndSession(c, "process died");
    c.dead = true;
    c.op.reset();
    ++c.incarnation;
    if (permanent) return;
    Event event;
    event.kind = EventKind::kClientReboot;
    event.target = c.index;
    event.token = c.incarnation;
    Schedule(std::move(event), random_.Range(500000, 5000000));
  }

  void Reboot(Client& c) {
    Trace(absl::StrCat("client ", c.index, " restarts"));
    c.dead = false;
    c.has_session = false;
    c.created.clear();
    c.target = static_cast<int>(random_.Uniform(options_.replicas));
    c.granted_since_heal = false;
    ScheduleClientTimer(c, kOperationTimer, random_.Range(0, 200000));
  }

  // ------------------------------------------------------------- faults

  void ScheduleFault() {
    if (healed_ ||
        (!mix_.crashes && !mix_.partitions && !mix_.stalls &&
         !mix_.client_faults && !mix_.clock_steps && !mix_.membership)) {
      return;
    }
    Event event;
    event.kind = EventKind::kFault;
    Schedule(std::move(event),
             random_.Range(1, 2 * mix_.mean_fault_interval_us));
  }

  int ServingLeader() const {
    for (int i = 0; i < replicas_; ++i) {
      if (machines_[i].node != nullptr && machines_[i].node->Serving()) {
        return i;
      }
    }
    for (int i = 0; i < replicas_; ++i) {
      if (machines_[i].node != nullptr &&
          machines_[i].node->replica().role() == paxos::Role::kLeader) {
        return i;
      }
    }
    return -1;
  }

  // The replica a client tries after `target`: spares only once added
  // (clients know the founding endpoints and whatever redirects name).
  int NextTarget(int target) const {
    for (int step = 1; step <= replicas_; ++step) {
      const int next = (target + step) % replicas_;
      if (!machines_[next].spare || machines_[next].joined) return next;
    }
    return target;
  }

  // The configuration of the longest chosen log among running replicas.
  const paxospb::Membership& LatestMembership() const {
    const paxospb::Membership* latest = &initial_membership_;
    uint64_t commit = 0;
    for (const Machine& m : machines_) {
      if (m.node == nullptr || !m.node->replica().knows_membership()) continue;
      if (m.node->replica().commit() >= commit) {
        commit = m.node->replica().commit();
        latest = &m.node->replica().membership();
      }
    }
    return *latest;
  }

  bool IsMember(const Machine& m) const {
    return paxos::FindMember(LatestMembership(), m.id) != nullptr;
  }

  // One change at the serving leader: add a spare as a learner (started
  // with --join), promote a learner that caught up, remove a voter (the
  // leader hands over instead of removing itself) or a learner.
  void ChangeMembership() {
    const int leader = ServingLeader();
    if (leader < 0 || !machines_[leader].node->Serving()) return;
    ReplicaNode& node = *machines_[leader].node;
    const paxos::Replica& replica = node.replica();
    if (replica.change_in_flight()) return;
    const paxospb::Membership current = replica.membership();
    const std::vector<uint32_t> voters = paxos::Voters(current);
    std::vector<uint32_t> learners;
    for (const paxospb::Member& member : current.members()) {
      if (!member.voter()) learners.push_back(member.id());
    }
    const uint64_t roll = random_.Uniform(100);
    paxospb::Membership next;
    std::string kind;
    if (!learners.empty() && roll < 40) {
      const uint32_t learner = learners[random_.Uniform(learners.size())];
      if (replica.PeerCommit(learner) + 8 < replica.commit()) return;
      paxospb::Member voter = *paxos::FindMember(current, learner);
      voter.set_voter(true);
      next = paxos::WithMember(current, voter);
      kind = "member_promote";
    } else if (!learners.empty() && roll < 50) {
      next = paxos::WithoutMember(current,
                                  learners[random_.Uniform(learners.size())]);
      kind = "member_remove_learner";
    } else if (voters.size() > 2 && roll < 75) {
      const uint32_t victim = voters[random_.Uniform(voters.size())];
      if (victim == replica.id()) {
        if (node.HandOver(0).ok()) {
          CountFault("handover");
          InputArrived(leader);
        }
        return;
      }
      next = paxos::WithoutMember(current, victim);
      kind = "member_remove_voter";
    } else {
      int spare = -1;
      for (int i = 0; i < replicas_; ++i) {
        if (machines_[i].spare && !machines_[i].joined) spare = i;
      }
      if (spare < 0 || voters.size() >= 5) return;
      Machine& m = machines_[spare];
      m.joined = true;
      m.options.paxos.join = true;
      m.options.paxos.members = voters;
      StartMachine(spare);
      paxospb::Member member;
      member.set_id(m.id);
      member.set_client_address(absl::StrCat("replica-", m.id));
      member.set_peer_address(absl::StrCat("replica-", m.id));
      member.set_voter(false);
      next = paxos::WithMember(current, member);
      kind = "member_add_learner";
    }
    node.ChangeMembership(
        [next](const paxos::Replica&) -> absl::StatusOr<paxospb::Membership> {
          return next;
        },
        [](absl::StatusOr<AppliedChange>) {});
    CountFault(kind);
    Trace(absl::StrCat("fault: ", kind, " -> ", paxos::MembershipString(next)));
    InputArrived(leader);
  }

  void InjectFault() {
    std::vector<std::string> kinds;
    if (mix_.crashes) {
      kinds.insert(kinds.end(), {"crash", "crash_leader", "restart_cleanly"});
    }
    if (mix_.partitions) {
      kinds.insert(kinds.end(),
                   {"partition", "asymmetric_partition", "flaky_links",
                    "isolate_leader", "heal_partitions"});
    }
    if (mix_.stalls) kinds.push_back("stall");
    if (mix_.clock_steps) kinds.push_back("clock_step");
    if (mix_.client_faults) {
      kinds.insert(kinds.end(),
                   {"client_death", "client_pause", "isolate_client"});
    }
    if (mix_.membership) {
      kinds.insert(kinds.end(),
                   {"membership_change", "membership_change", "handover"});
    }
    const std::string kind = kinds[random_.Uniform(kinds.size())];
    Trace(absl::StrCat("fault: ", kind));
    const int n = replicas_;
    if (kind == "membership_change") {
      ChangeMembership();
    } else if (kind == "handover") {
      const int leader = ServingLeader();
      if (leader < 0 || !machines_[leader].node->Serving()) return;
      if (machines_[leader].node->HandOver(0).ok()) {
        CountFault("handover");
        InputArrived(leader);
      }
    } else if (kind == "crash" || kind == "crash_leader") {
      const int victim = kind == "crash" ? static_cast<int>(random_.Uniform(n))
                                         : ServingLeader();
      if (victim < 0 || machines_[victim].node == nullptr) return;
      CountFault(kind);
      FinishCrash(victim);
    } else if (kind == "restart_cleanly") {
      const int victim = static_cast<int>(random_.Uniform(n));
      Machine& m = machines_[victim];
      if (m.node == nullptr) return;
      CountFault(kind);
      m.node->Drain();
      FinishCrash(victim);
    } else if (kind == "partition") {
      blocked_.clear();
      std::vector<int> side(n + clients_.size());
      for (int& s : side) s = static_cast<int>(random_.Uniform(2));
      for (size_t a = 0; a < side.size(); ++a) {
        for (size_t b = 0; b < side.size(); ++b) {
          if (side[a] != side[b]) {
            blocked_.insert({static_cast<int>(a), static_cast<int>(b)});
          }
        }
      }
      CountFault(kind);
    } else if (kind == "asymmetric_partition") {
      const int a = static_cast<int>(random_.Uniform(n));
      const int b = static_cast<int>(random_.Uniform(n));
      if (a == b) return;
      blocked_.insert({a, b});
      CountFault(kind);
    } else if (kind == "flaky_links") {
      blocked_.clear();
      for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) {
          if (a != b && random_.Bernoulli(0.3)) blocked_.insert({a, b});
        }
      }
      CountFault(kind);
    } else if (kind == "isolate_leader") {
      const int leader = ServingLeader();
      if (leader < 0) return;
      // Cut from the other replicas; half the time from the clients too.
      const bool from_clients = random_.Bernoulli(0.5);
      const int endpoints =
          from_clients ? n + static_cast<int>(clients_.size()) : n;
      for (int j = 0; j < endpoints; ++j) {
        if (j == leader) continue;
        blocked_.insert({leader, j});
        blocked_.insert({j, leader});
      }
      CountFault(kind);
    } else if (kind == "heal_partitions") {
      blocked_.clear();
      CountFault(kind);
    } else if (kind == "clock_step") {
      // The cell clock must not follow it faster than its slew allows.
      Machine& m = machines_[random_.Uniform(n)];
      m.skew_ms = random_.Range(-5000, 5000);
      Trace(absl::StrCat("replica ", m.id, " wall clock steps to offset ",
                         m.skew_ms, " ms"));
      CountFault(kind);
    } else if (kind == "stall") {
      Machine& m = machines_[random_.Uniform(n)];
      if (m.node == nullptr || now_us_ < m.stalled_until_us) return;
      m.stalled_until_us = now_us_ + random_.Range(50000, 1500000);
      Trace(absl::StrCat("replica ", m.id, " stalls until ",
                         m.stalled_until_us / 1000, " ms"));
      CountFault(kind);
    } else {
      Client& c = clients_[random_.Uniform(clients_.size())];
      if (c.dead || now_us_ < c.paused_until_us) return;
      if (kind == "client_death") {
        const bool permanent =
            permanent_deaths_ < static_cast<int>(clients_.size()) / 3 &&
            random_.Bernoulli(0.5);
        if (permanent) ++permanent_deaths_;
        CountFault(permanent ? "client_death" : "client_restart");
        Die(c, permanent);
      } else if (kind == "client_pause") {
        const int64_t ttl_ms = c.has_session ? c.ttl_ms : 3000;
        c.paused_until_us =
            now_us_ + random_.Range(ttl_ms / 2, 2 * ttl_ms + 1000) * 1000;
        Trace(absl::StrCat("client ", c.index, " pauses until ",
                           c.paused_until_us / 1000, " ms"));
        CountFault(kind);
      } else {
        c.isolated_until_us = now_us_ + random_.Range(200000, 6000000);
        CountFault(kind);
      }
    }
  }

  void Heal() {
    healed_ = true;
    heal_start_us_ = now_us_;
    Trace("healing: faults stop");
    blocked_.clear();
    mix_.loss = 0;
    mix_.duplicate = 0;
    mix_.long_delay = 0;
    mix_.crash_mid_turn = 0;
    for (Client& c : clients_) c.isolated_until_us = 0;
    for (int i = 0; i < replicas_; ++i) {
      Machine& m = machines_[i];
      if (!IsMember(m)) continue;
      if (m.node == nullptr) {
        ++m.generation;
        StartMachine(i);
      }
    }
  }

  // ------------------------------------------------------------- checks

  void Trace(const std::string& message) {
    if (!options_.trace) return;
    std::printf("t=%.3fs %s\n", static_cast<double>(now_us_) / 1e6,
                message.c_str());
  }

  void Violation(std::string message) {
    ++result_.violations;
    Trace(absl::StrCat("VIOLATION ", message));
    if (result_.violation_messages.size() < 20) {
      result_.violation_messages.push_back(absl::StrCat(
          "step ", result_.steps, " t=", now_us_ / 1000, "ms: ", message));
    }
  }

  void CheckAfterStep() {
    for (int i = 0; i < replicas_; ++i) {
      Machine& m = machines_[i];
      if (m.node == nullptr) continue;
      if (m.viewed && m.viewed_index == m.node->applied_index()) continue;
      CheckReplica(i);
    }
    CheckClients();
    CheckDeadlines();
  }

  // Everything the checker verifies on one replica's applied state.
  void CheckReplica(int index) {
    Machine& m = machines_[index];
    m.viewed = true;
    m.viewed_index = m.node->applied_index();
    const std::string bytes = m.node->state().Snapshot();
    // (3) Agreement: equal applied index, byte-identical state.
    const uint64_t fingerprint = Fingerprint(bytes);
    auto [known, first] = state_at_index_.emplace(
        m.viewed_index, std::make_pair(fingerprint, m.id));
    if (!first && known->second.first != fingerprint) {
      Violation(absl::StrCat("agreement: replica ", m.id, " state at index ",
                             m.viewed_index, " differs from replica ",
                             known->second.second, "'s"));
    }
    statepb::StateSnapshot state;
    if (!state.ParseFromString(bytes)) {
      Violation(absl::StrCat("replica ", m.id, " snapshot does not parse"));
      return;
    }
    DistortView(index, state);
    std::map<uint64_t, const statepb::SessionState*> live;
    for (const statepb::SessionState& session : state.sessions()) {
      live[session.session_id()] = &session;
    }
    for (const statepb::NodeState& node : state.nodes()) {
      CheckLock(m, state, live, node);
    }
    std::set<uint64_t> sessions;
    for (const statepb::SessionState& session : state.sessions()) {
      sessions.insert(session.session_id());
      CheckSession(m, state, session);
    }
    for (uint64_t gone : m.sessions) {
      if (sessions.count(gone) != 0) continue;
      SessionInfo& info = sessions_[gone];
      if (!info.ended) {
        info.ended = true;
        if (!info.close_requested) ++result_.sessions_expired;
        Trace(absl::StrCat("session ", gone, " ended in replica ", m.id,
                           "'s state"));
      }
    }
    m.sessions = std::move(sessions);
  }

  // The checker-input faults of --bug=view_*: the replica's state as the
  // checker sees it is altered now and then.
  void DistortView(int index, statepb::StateSnapshot& state) {
    if (index != 0 || (options_.bug != Bug::kViewDoubleGrant &&
                       options_.bug != Bug::kViewGenerationRollback)) {
      return;
    }
    for (statepb::NodeState& node : *state.mutable_nodes()) {
      if (node.holders().empty() || node.holders(0).mode() != v1::EXCLUSIVE ||
          !random_.Bernoulli(0.05)) {
        continue;
      }
      if (options_.bug == Bug::kViewDoubleGrant) {
        // A second live session holds the lock too.
        for (const statepb::SessionState& session : state.sessions()) {
          if (session.session_id() == node.holders(0).session_id()) continue;
          statepb::LockHolderState* extra = node.add_holders();
          extra->set_session_id(session.session_id());
          extra->set_mode(v1::EXCLUSIVE);
          break;
        }
      } else if (node.meta().lock_generation() > 1) {
        node.mutable_meta()->set_lock_generation(node.meta().lock_generation() -
                                                 1);
      }
      return;
    }
  }

  // A lease told to a client is one the cell keeps: at most the TTL, and
  // at most what remains after the replicated time (a leader taking over
  // now starts its cell clock there).
  void CheckLeaseTold(const Machine& m, uint64_t session_id,
                      int64_t expires_at_ms, int64_t remaining_ms) {
    const int64_t replicated_now_ms = m.node->state().now_ms();
    const int64_t ttl_ms = sessions_[session_id].ttl_ms;
    if (remaining_ms <= expires_at_ms - replicated_now_ms &&
        (ttl_ms == 0 || remaining_ms <= ttl_ms)) {
      return;
    }
    Violation(absl::StrCat(
        "lease told: replica ", m.id, " told session ", session_id, " (ttl ",
        ttl_ms, " ms) its lease has ", remaining_ms,
        " ms left, but it expires at cell time ", expires_at_ms,
        " and the replicated time is already ", replicated_now_ms));
  }

  // (1) mutual exclusion, (2) generations, holders are live sessions.
  void CheckLock(Machine& m, const statepb::StateSnapshot& state,
                 const std::map<uint64_t, const statepb::SessionState*>& live,
                 const statepb::NodeState& node) {
    const std::string& path = node.path();
    uint64_t exclusive = 0;
    int exclusive_count = 0;
    int shared_count = 0;
    for (const statepb::LockHolderState& holder : node.holders()) {
      if (holder.mode() == v1::EXCLUSIVE) {
        ++exclusive_count;
        exclusive = holder.session_id();
      } else {
        ++shared_count;
      }
      auto session = live.find(holder.session_id());
      if (session == live.end()) {
        Violation(absl::StrCat("replica ", m.id, ": ", path,
                               " is held by session ", holder.session_id(),
                               " which does not exist"));
      } else if (session->second->expires_at_ms() <= state.now_ms()) {
        Violation(absl::StrCat("replica ", m.id, ": ", path,
                               " is held by session ", holder.session_id(),
                               " whose lease ended at ",
                               session->second->expires_at_ms(), " (cell time ",
                               state.now_ms(), ")"));
      }
    }
    if (exclusive_count > 1 || (exclusive_count == 1 && shared_count > 0)) {
      Violation(absl::StrCat("mutual exclusion: replica ", m.id, " index ",
                             m.viewed_index, ": ", path, " has ",
                             exclusive_count, " exclusive and ", shared_count,
                             " shared holders"));
    }
    const uint64_t instance = node.meta().instance();
    const uint64_t generation = node.meta().lock_generation();
    auto [last, first_view] = m.locks.try_emplace(path);
    if (!first_view && last->second.instance == instance) {
      if (generation < last->second.generation) {
        Violation(absl::StrCat("generation: replica ", m.id, ": ", path,
                               " lock generation went from ",
                               last->second.generation, " to ", generation));
      } else if (generation == last->second.generation && exclusive != 0 &&
                 exclusive != last->second.exclusive) {
        Violation(
            absl::StrCat("generation: replica ", m.id, ": ", path,
                         " was granted exclusively to session ", exclusive,
                         " without a new lock generation (still ", generation,
                         "; holder before: ", last->second.exclusive, ")"));
      }
    } else if (!first_view && instance < last->second.instance) {
      Violation(absl::StrCat("replica ", m.id, ": ", path,
                             " instance went from ", last->second.instance,
                             " to ", instance));
    }
    last->second = {instance, generation, exclusive};
    if (exclusive != 0) {
      RecordGrant(path, instance, generation, exclusive,
                  absl::StrCat("replica ", m.id));
      std::pair<uint64_t, uint64_t>& newest = newest_granted_[path];
      newest = std::max(newest, std::make_pair(instance, generation));
    }
  }

  // Every exclusive grant (path, instance, generation) belongs to one
  // session, wherever it is seen.
  void RecordGrant(const std::string& path, uint64_t instance,
                   uint64_t generation, uint64_t session,
                   const std::string& seen_by) {
    auto [it, first] =
        grants_.emplace(std::make_tuple(path, instance, generation),
                        std::make_pair(session, seen_by));
    if (!first && it->second.first != session) {
      Violation(absl::StrCat("generation: ", path, " generation ", generation,
                             " was granted to session ", it->second.first,
                             " (seen by ", it->second.second,
                             ") and to session ", session, " (seen by ",
                             seen_by, ")"));
    }
  }

  void CheckSession(const Machine& m, const statepb::StateSnapshot& state,
                    const statepb::SessionState& session) {
    const uint64_t id = session.session_id();
    SessionInfo& info = sessions_[id];
    if (info.first_seen_us == 0) {
      info.first_seen_us = now_us_;
      info.ttl_ms = session.ttl_ms();
      info.nonce = session.nonce();
      if (info.base_us == 0) {
        info.base_us = now_us_;
        info.base_leaderless_us = leaderless_us_;
        info.base_leaderships = serving_epochs_.size();
      }
      info.base_cell_ms = std::max(info.base_cell_ms, state.now_ms());
    }
    // Exactly-once in the replicated state: a recorded answer never changes.
    for (const statepb::RetainedResult& retained : session.results()) {
      const uint64_t fingerprint =
          Fingerprint(retained.result().SerializeAsString());
      auto [it, first] = recorded_.emplace(
          std::make_pair(id, retained.request_id()), fingerprint);
      if (!first && it->second != fingerprint) {
        Violation(absl::StrCat("exactly-once: replica ", m.id, ": session ", id,
                               " request ", retained.request_id(),
                               " has a different recorded answer than before"));
      }
    }
    // The expiry bound: the replicated expires_at never exceeds the last
    // answered keep-alive (or the creation) + checkpoint + 2 * TTL + slack,
    // in cell time.
    const int64_t base_ms = info.base_cell_ms;
    const int64_t overshoot =
        session.expires_at_ms() - (base_ms + 2 * session.ttl_ms());
    result_.max_expiry_overshoot_ms =
        std::max(result_.max_expiry_overshoot_ms, overshoot);
    if (overshoot > kCheckpointMs + kExpirySlackMs && !info.bound_reported) {
      info.bound_reported = true;
      Violation(absl::StrCat("expiry bound: replica ", m.id, ": session ", id,
                             " expires at ", session.expires_at_ms(), ", ",
                             overshoot, " ms after its last keep-alive (",
                             base_ms, ") + 2 x TTL (", session.ttl_ms(), ")"));
    }
  }

  // (4) and (5): what the clients rely on.
  void CheckClients() {
    // path -> (client, sequencer) of every lock a client relies on now.
    std::map<std::string, std::vector<std::pair<int, const v1::Sequencer*>>>
        relied;
    for (Client& c : clients_) {
      if (c.dead || !Relies(c)) continue;
      for (auto& [path, held] : c.held) {
        if (held.releasing) continue;
        relied[path].push_back({c.index, &held.sequencer});
        if (!held.fenced) {
          held.fenced = true;
          CheckFencing(c, path, held.sequencer);
        }
        CheckStillHeld(c, path, held.sequencer);
      }
    }
    for (const auto& [path, holders] : relied) {
      if (holders.size() < 2) continue;
      bool exclusive = false;
      for (const auto& [client, sequencer] : holders) {
        exclusive = exclusive || sequencer->mode() == v1::EXCLUSIVE;
      }
      if (!exclusive) continue;
      // Reported once per set of grants.
      std::string key = path;
      std::vector<std::string> who;
      for (const auto& [client, sequencer] : holders) {
        absl::StrAppend(&key, ":", sequencer->session_id(), "/",
                        sequencer->lock_generation());
        who.push_back(absl::StrCat(
            "client ", client, " (session ", sequencer->session_id(), ", ",
            v1::LockMode_Name(sequencer->mode()), ", generation ",
            sequencer->lock_generation(), ", local lease ",
            (clients_[client].lease_end_local_us - LocalNow(clients_[client])) /
                1000,
            " ms left)"));
      }
      if (!reported_overlaps_.insert(key).second) continue;
      Violation(absl::StrCat("lease: ", path, " is relied on at once by ",
                             absl::StrJoin(who, " and ")));
    }
  }

  // A client relies on a lock only while the cell may not give it away: its
  // session has not ended in any replica's state, and no replica granted
  // the lock exclusively after the client's grant.
  void CheckStillHeld(const Client& c, const std::string& path,
                      const v1::Sequencer& sequencer) {
    SessionInfo& info = sessions_[c.session_id];
    if (info.ended && !info.relied_after_end_reported) {
      info.relied_after_end_reported = true;
      Violation(absl::StrCat("lease: client ", c.index, " relies on ", path,
                             " (generation ", sequencer.lock_generation(),
                             ") with ",
                             (c.lease_end_local_us - LocalNow(c)) / 1000,
                             " ms of local lease left, but its session ",
                             c.session_id, " already ended in the cell"));
    }
    auto newest = newest_granted_.find(path);
    if (newest == newest_granted_.end() ||
        newest->second <=
            std::make_pair(sequencer.instance(), sequencer.lock_generation())) {
      return;
    }
    const std::string key = absl::StrCat(path, ":", sequencer.session_id(), "/",
                                         sequencer.lock_generation());
    if (!reported_overlaps_.insert(key).second) return;
    Violation(absl::StrCat(
        "lease: client ", c.index, " relies on ", path, " (session ",
        c.session_id, ", generation ", sequencer.lock_generation(), ") with ",
        (c.lease_end_local_us - LocalNow(c)) / 1000,
        " ms of local lease left, but the cell already granted generation ",
        newest->second.second));
  }

  // Fencing: an exclusive grant a client starts relying on is newer than
  // every one relied on before, and is the grant the replicas recorded.
  void CheckFencing(const Client& c, const std::string& path,
                    const v1::Sequencer& sequencer) {
    if (sequencer.mode() != v1::EXCLUSIVE) return;
    RecordGrant(path, sequencer.instance(), sequencer.lock_generation(),
                sequencer.session_id(), absl::StrCat("client ", c.index));
    const auto key =
        std::make_pair(sequencer.instance(), sequencer.lock_generation());
    auto [newest, first] = newest_relied_.try_emplace(path, key);
    if (first) return;
    if (key <= newest->second) {
      Violation(absl::StrCat(
          "fencing: client ", c.index, " relies on ", path, " generation ",
          sequencer.lock_generation(), " (instance ", sequencer.instance(),
          ") after generation ", newest->second.second, " (instance ",
          newest->second.first, ") was relied on"));
      return;
    }
    newest->second = key;
  }

  // True iff session `id` has no live client that keeps it alive.
  bool Abandoned(uint64_t id) const {
    auto info = sessions_.find(id);
    if (info == sessions_.end()) return true;
    auto owner = nonce_owner_.find(info->second.nonce);
    if (owner == nonce_owner_.end()) return true;
    const Client& c = clients_[owner->second.client];
    if (c.dead || c.incarnation != owner->second.incarnation) return true;
    if (c.has_session) return c.session_id != id;
    return !c.op.has_value() || c.op->request_id != info->second.nonce;
  }

  // When an abandoned session must be gone, in true time: the bound in
  // cell time, stretched by the slowest cell clock, plus the time without a
  // serving leader since its last sign of life, plus a TTL for every
  // leadership after the first that began since (handovers begin them
  // without any leaderless time).
  int64_t DeadlineUs(const SessionInfo& info) const {
    const size_t leaderships = serving_epochs_.size() - info.base_leaderships;
    const int64_t extra_ttls =
        leaderships > 1 ? static_cast<int64_t>(leaderships - 1) : 0;
    const double bound_ms =
        static_cast<double>(kCheckpointMs + (2 + extra_ttls) * info.ttl_ms +
                            kExpirySlackMs) /
            kMinCellRate +
        kExpiryRealTimeSlackMs;
    return info.base_us + static_cast<int64_t>(bound_ms * 1000) +
           (leaderless_us_ - info.base_leaderless_us);
  }

  // (6) An abandoned session is gone by its deadline from every serving
  // replica's state (after healing, and time to catch up: from every
  // replica's).
  void CheckDeadlines() {
    for (const Machine& m : machines_) {
      // A removed member keeps its last state; nobody updates it.
      if (m.node == nullptr || !IsMember(m)) continue;
      const bool serving = now_us_ >= m.stalled_until_us && m.node->Serving();
      if (!serving && (!healed_ || now_us_ < heal_start_us_ + kHealCatchUpUs)) {
        continue;
      }
      for (uint64_t id : m.sessions) {
        SessionInfo& info = sessions_[id];
        if (info.deadline_reported || now_us_ <= DeadlineUs(info) ||
            !Abandoned(id)) {
          continue;
        }
        info.deadline_reported = true;
        Violation(
            absl::StrCat("expiry: session ", id, " (ttl ", info.ttl_ms,
                         " ms, last sign of life at ", info.base_us / 1000,
                         " ms, cell time ", info.base_cell_ms,
                         ") is abandoned but still in replica ", m.id,
                         "'s state at ", now_us_ / 1000, " ms (",
                         (leaderless_us_ - info.base_leaderless_us) / 1000,
                         " ms without a serving leader since)"));
      }
    }
  }

  bool HealDone() const {
    for (const Client& c : clients_) {
      if (!c.dead && !c.granted_since_heal) return false;
    }
    for (const Machine& m : machines_) {
      // Removed members (and spares never added) stay behind.
      if (!IsMember(m)) continue;
      if (m.node == nullptr) return false;
      for (uint64_t id : m.sessions) {
        if (Abandoned(id)) return false;
      }
    }
    return true;
  }

  std::string DescribeHealState() const {
    std::vector<std::string> parts;
    for (const Client& c : clients_) {
      if (!c.dead && !c.granted_since_heal) {
        parts.push_back(absl::StrCat(
            "client ", c.index, " was granted no lock (session ",
            c.has_session ? absl::StrCat(c.session_id) : "none", ")"));
      }
    }
    for (const Machine& m : machines_) {
      for (uint64_t id : m.sessions) {
        if (Abandoned(id)) {
          parts.push_back(absl::StrCat("replica ", m.id,
                                       " still has abandoned session ", id));
        }
      }
      if (m.node != nullptr) {
        const paxos::Replica& r = m.node->replica();
        parts.push_back(
            absl::StrCat("[replica ", m.id, " ", paxos::RoleName(r.role()),
                         " epoch=", r.epoch(), " serving=", m.node->Serving(),
                         " applied=", m.node->applied_index(), "]"));
      }
    }
    return absl::StrJoin(parts, "; ");
  }

  const Options options_;
  paxos::Random random_;
  const int replicas_;
  FaultMix mix_;
  paxospb::Membership initial_membership_;
  uint64_t snapshot_interval_ = 100;
  std::vector<Machine> machines_;
  std::vector<Client> clients_;
  std::vector<Event> events_;
  int64_t now_us_ = 0;
  uint64_t next_sequence_ = 0;
  std::set<std::pair<int, int>> blocked_;
  bool healed_ = false;
  int64_t heal_start_us_ = 0;
  int permanent_deaths_ = 0;
  // True time without a serving leader so far, and whether one served after
  // the last step.
  int64_t leaderless_us_ = 0;
  bool leader_serving_ = false;
  uint64_t next_caller_ = 0;
  // The keep-alive task being run, so that its listener's Send is known to
  // be the direct answer.
  const ClientRequest* keepalive_in_progress_ = nullptr;

  // Knowledge for the checkers.
  std::set<uint64_t> serving_epochs_;
  std::map<uint64_t, std::pair<uint64_t, uint32_t>> state_at_index_;
  std::map<std::tuple<std::string, uint64_t, uint64_t>,
           std::pair<uint64_t, std::string>>
      grants_;
  std::map<std::string, std::pair<uint64_t, uint64_t>> newest_relied_;
  // Newest exclusive grant (instance, generation) any replica applied.
  std::map<std::string, std::pair<uint64_t, uint64_t>> newest_granted_;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> recorded_;
  std::map<uint64_t, SessionInfo> sessions_;
  std::map<uint64_t, NonceOwner> nonce_owner_;
  std::set<std::string> reported_overlaps_;

  Result result_;
};

void SimListener::Send(v1::KeepAliveResponse response) {
  world_->OnListenerSend(this, std::move(response));
}

void SimListener::End(absl::Status status) {
  world_->OnListenerEnd(this, std::move(status));
}

absl::StatusOr<paxos::DurableState> SimStorage::Load() {
  return world_->Load(index_);
}

absl::Status SimStorage::Save(const paxos::PersistBatch& batch) {
  return world_->Save(index_, batch);
}

void SimSender::Send(paxospb::Message message) {
  world_->SendPeer(index_, std::move(message));
}

}  // namespace

Result Run(const Options& options) {
  World world(options);
  return world.Run();
}

}  // namespace lockd::sim
