#include "tests/paxos/simulator.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "paxos/ballot.h"
#include "paxos/membership.h"
#include "paxos/memory_storage.h"
#include "paxos/random.h"
#include "paxos/replica.h"

namespace lockd::paxos::sim {

namespace {

// Every variant once: its flag name and the core switch it turns on
// (ack_before_sync lives in the simulated disk, not in the core).
struct BugInfo {
  Bug bug;
  const char* name;
  bool InjectedBugs::*core_switch;
};

constexpr BugInfo kBugs[] = {
    {Bug::kNone, "none", nullptr},
    {Bug::kAcceptIgnoresBallot, "accept_ignores_ballot",
     &InjectedBugs::accept_ignores_ballot},
    {Bug::kLeaderIgnoresPromisedValues, "leader_ignores_promised_values",
     &InjectedBugs::leader_ignores_promised_values},
    {Bug::kAckBeforeSync, "ack_before_sync", nullptr},
    {Bug::kLearnerIgnoresBallot, "learner_ignores_ballot",
     &InjectedBugs::learner_ignores_ballot},
    {Bug::kLeaseFromAckReceipt, "lease_from_ack_receipt",
     &InjectedBugs::lease_from_ack_receipt},
    {Bug::kAcceptorIgnoresLeaderLease, "acceptor_ignores_leader_lease",
     &InjectedBugs::acceptor_ignores_leader_lease},
    {Bug::kLeaseBeforeTakeover, "lease_before_takeover",
     &InjectedBugs::lease_before_takeover},
    {Bug::kMembershipWithoutJointQuorums, "membership_without_joint_quorums",
     &InjectedBugs::membership_without_joint_quorums},
};

const BugInfo& InfoOf(Bug bug) {
  for (const BugInfo& info : kBugs) {
    if (info.bug == bug) return info;
  }
  return kBugs[0];
}

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

std::string BugName(Bug bug) { return InfoOf(bug).name; }

namespace {

// Nominal length of a tick in virtual microseconds (lockd uses 10 ms).
constexpr int64_t kTickUs = 10000;
// After healing, every replica must apply a fresh command within this many
// nominal ticks.
constexpr int64_t kHealBoundTicks = 1000;

// The fault mix of one seed: every probability and rate is itself drawn
// from the seed, so different seeds stress different combinations.
struct FaultMix {
  double loss = 0;
  double duplicate = 0;
  double long_delay = 0;
  int64_t max_delay_us = 0;
  int64_t max_long_delay_us = 0;
  // Mean virtual time between injected faults (partition, crash, ...).
  int64_t mean_fault_interval_us = 0;
  bool crashes = false;
  bool partitions = false;
  // Probability that a replica crashes in the middle of handling a Ready.
  double crash_mid_ready = 0;
  double max_drift = 0;
  int64_t mean_propose_interval_us = 0;
  // Process stalls (a VM pause): the replica's clock stops and its input
  // queues up. They break the timing assumptions leases rely on, so a seed
  // with stalls checks safety but not leases.
  bool stalls = false;
  // Let several inputs accumulate before a replica's Ready is handled, as a
  // server does when it group-commits.
  bool defer_ready = false;
  // Configuration changes and leadership handovers among the faults.
  bool membership = false;
};

// Ids the simulator may hand to new members, beyond the initial replicas.
constexpr int kSpareIds = 8;

enum class EventKind {
  kTick,
  kDeliver,
  kPropose,
  kClientRequest,
  kReady,
  kFault,
  kRestart
};

struct Event {
  int64_t time_us = 0;
  uint64_t sequence = 0;
  EventKind kind = EventKind::kTick;
  int replica = 0;
  uint64_t generation = 0;
  paxospb::Message message;
  std::string command;
};

struct EventLater {
  bool operator()(const Event& a, const Event& b) const {
    if (a.time_us != b.time_us) return a.time_us > b.time_us;
    return a.sequence > b.sequence;
  }
};

// One simulated machine: the replica core (absent while crashed), its disk,
// and a toy state machine (a hash chain over applied values).
struct Machine {
  uint32_t id = 0;
  Config config;
  std::unique_ptr<Replica> core;
  // Survives crashes; with Bug::kAckBeforeSync, writes linger unsynced.
  MemoryStorage disk;
  double tick_period_us = kTickUs;
  uint64_t generation = 0;
  int64_t stalled_until_us = 0;
  bool ready_scheduled = false;
  uint64_t applied = 0;
  uint64_t chain = 0;
  // What this replica told others it durably holds.
  paxospb::Ballot max_promise_sent;
  std::map<uint64_t, paxospb::Ballot> accepted_sent;
  // Removed from the configuration (chosen); stopped for good at healing.
  bool removed = false;
};

uint64_t Mix(uint64_t hash, const std::string& bytes) {
  uint64_t h = hash ^ 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h ^ (h >> 29);
}

std::string ValueKey(const paxospb::Value& value) {
  if (value.has_membership()) {
    return absl::StrCat("<config ", MembershipString(value.membership()), ">");
  }
  std::string key;
  for (const std::string& command : value.commands()) {
    absl::StrAppend(&key, command.size(), ":", command, ";");
  }
  return key.empty() ? "<no-op>" : key;
}

class World {
 public:
  explicit World(const Options& options)
      : options_(options), random_(options.seed * 0x9e3779b97f4a7c15ULL + 7) {
    DrawFaultMix();
    for (int i = 0; i < options_.replicas; ++i) {
      member_ids_.push_back(static_cast<uint32_t>(i + 1));
    }
    const int batch_commands = static_cast<int>(random_.Range(1, 16));
    compact_every_ = static_cast<uint64_t>(random_.Range(2, 200));
    initial_membership_ = MembershipOfVoters(member_ids_);
    machines_.resize(options_.replicas);
    for (int i = 0; i < options_.replicas; ++i) {
      Machine& machine = machines_[i];
      machine.id = member_ids_[i];
      Config& config = machine.config;
      config.id = machine.id;
      config.members = member_ids_;
      config.heartbeat_ticks = 2;
      config.election_ticks = 10;
      config.lease_ticks = 10;
      config.max_drift_ticks = 2;
      config.max_inflight_slots = 8;
      config.max_batch_commands = batch_commands;
      config.max_entries_per_message = 16;
      config.max_candidate_lag_slots = 64;
      // Backpressure: clients see RESOURCE_EXHAUSTED rather than building a
      // backlog that would take longer than the healing bound to drain.
      config.max_pending_proposals = 1000;
      config.random_seed = options_.seed;
      if (const auto core_switch = InfoOf(options_.bug).core_switch) {
        config.bugs.*core_switch = true;
      }
      StartMachine(i);
    }
    template_config_ = machines_[0].config;
    ScheduleFault();
    Schedule(EventKind::kPropose, 0, NextProposeDelay());
  }

  Result Run() {
    while (result_.steps < static_cast<uint64_t>(options_.steps)) {
      if (!StepOnce()) break;
    }
    Heal();
    const int64_t deadline = now_us_ + kHealBoundTicks * kTickUs;
    const std::string marker = absl::StrCat("heal-", options_.seed);
    bool marker_accepted = false;
    int64_t next_marker_attempt = now_us_;
    const int64_t heal_start = now_us_;
    while (now_us_ <= deadline) {
      // A queued proposal dies with its leadership: retry until applied,
      // as a client would.
      if (now_us_ >= next_marker_attempt) {
        marker_accepted = ProposeToLeader(marker) || marker_accepted;
        next_marker_attempt = now_us_ + (marker_accepted ? 50 : 1) * kTickUs;
      }
      if (marker_accepted && EveryoneApplied(marker)) {
        result_.heal_ticks = (now_us_ - heal_start) / kTickUs + 1;
        break;
      }
      if (!StepOnce()) break;
    }
    if (result_.heal_ticks == 0) {
      Violation(
          absl::StrCat("progress: after healing, not every replica "
                       "applied a fresh command within ",
                       kHealBoundTicks, " ticks; ", DescribeReplicas()));
    }
    CheckAcknowledgedKept();
    CheckMajorityAcceptances();
    result_.chosen_slots = chosen_.size();
    return std::move(result_);
  }

 private:
  void DrawFaultMix() {
    mix_.loss = random_.Bernoulli(0.8) ? random_.Uniform(200) / 1000.0 : 0;
    mix_.duplicate = random_.Bernoulli(0.5) ? random_.Uniform(100) / 1000.0 : 0;
    mix_.long_delay = random_.Bernoulli(0.5) ? random_.Uniform(50) / 1000.0 : 0;
    mix_.max_delay_us = random_.Range(500, 20000);
    mix_.max_long_delay_us = random_.Range(50000, 1000000);
    mix_.mean_fault_interval_us = random_.Range(50000, 1000000);
    mix_.crashes = random_.Bernoulli(0.8);
    mix_.partitions = random_.Bernoulli(0.8);
    mix_.crash_mid_ready = mix_.crashes && random_.Bernoulli(0.5)
                               ? random_.Uniform(20) / 1000.0
                               : 0;
    // Rates must stay within the drift the configuration allows:
    // (lease - drift) * (1 + r) <= (lease - 1) * (1 - r), i.e. r <= 1/17
    // for lease 10, drift 2 (see docs/paxos.md).
    mix_.max_drift = random_.Bernoulli(0.8) ? 0.05 : 0;
    mix_.mean_propose_interval_us = random_.Range(500, 10000);
    mix_.stalls = random_.Bernoulli(0.3);
    mix_.defer_ready = random_.Bernoulli(0.3);
    mix_.membership = options_.bug == Bug::kMembershipWithoutJointQuorums ||
                      (options_.membership && random_.Bernoulli(0.6));
  }

  void Schedule(EventKind kind, int replica, int64_t delay_us,
                paxospb::Message message = {}, std::string command = {}) {
    Event event;
    event.time_us = now_us_ + std::max<int64_t>(delay_us, 0);
    event.sequence = next_sequence_++;
    event.kind = kind;
    event.replica = replica;
    event.generation =
        replica >= 0 && replica < static_cast<int>(machines_.size())
            ? machines_[replica].generation
            : 0;
    event.message = std::move(message);
    event.command = std::move(command);
    events_.push(std::move(event));
  }

  int64_t NextProposeDelay() {
    return random_.Range(1, 2 * mix_.mean_propose_interval_us);
  }

  void ScheduleFault() {
    if (healed_ || (!mix_.crashes && !mix_.partitions && !mix_.stalls &&
                    !mix_.membership)) {
      return;
    }
    Schedule(EventKind::kFault, 0,
             random_.Range(1, 2 * mix_.mean_fault_interval_us));
  }

  void CountFault(const std::string& kind) { ++result_.faults[kind]; }

  // Returns false when the world has nothing left to do.
  bool StepOnce() {
    if (events_.empty()) return false;
    Event event = events_.top();
    events_.pop();
    now_us_ = event.time_us;
    ++result_.steps;
    switch (event.kind) {
      case EventKind::kTick: {
        Machine& machine = machines_[event.replica];
        if (!machine.core || event.generation != machine.generation) break;
        if (Stalled(machine)) {
          // A stalled clock loses its ticks.
          Schedule(EventKind::kTick, event.replica,
                   machine.stalled_until_us - now_us_ +
                       static_cast<int64_t>(machine.tick_period_us));
          break;
        }
        machine.core->Tick();
        HandleReady(event.replica);
        ScheduleTick(event.replica);
        break;
      }
      case EventKind::kDeliver: {
        const int target = static_cast<int>(event.message.to()) - 1;
        if (target < 0 || target >= static_cast<int>(machines_.size())) break;
        Machine& machine = machines_[target];
        if (!machine.core) break;
        if (Stalled(machine)) {
          // Input waits in the socket until the process runs again.
          Schedule(EventKind::kDeliver, target,
                   machine.stalled_until_us - now_us_,
                   std::move(event.message));
          break;
        }
        machine.core->Step(event.message);
        HandleReady(target);
        break;
      }
      case EventKind::kPropose: {
        ProposeToLeader(absl::StrCat("c", next_command_++));
        Schedule(EventKind::kPropose, 0, NextProposeDelay());
        break;
      }
      case EventKind::kClientRequest:
        ProposeTo(event.replica, event.command);
        break;
      case EventKind::kReady: {
        Machine& machine = machines_[event.replica];
        if (event.generation != machine.generation) break;
        machine.ready_scheduled = false;
        ProcessReady(event.replica);
        break;
      }
      case EventKind::kFault:
        if (healed_) break;
        InjectFault();
        ScheduleFault();
        break;
      case EventKind::kRestart: {
        Machine& machine = machines_[event.replica];
        if (!machine.core && event.generation == machine.generation) {
          CountFault("restart");
          StartMachine(event.replica);
        }
        break;
      }
    }
    CheckLeases();
    return true;
  }

  bool Stalled(const Machine& machine) const {
    return now_us_ < machine.stalled_until_us;
  }

  void ScheduleTick(int replica) {
    Schedule(EventKind::kTick, replica,
             static_cast<int64_t>(machines_[replica].tick_period_us));
  }

  void StartMachine(int index) {
    Machine& machine = machines_[index];
    const double drift =
        mix_.max_drift == 0
            ? 0
            : (static_cast<double>(random_.Uniform(2001)) / 1000.0 - 1.0) *
                  mix_.max_drift;
    machine.tick_period_us = kTickUs * (1.0 + drift);
    machine.config.random_seed = options_.seed * 31 + machine.generation;
    absl::StatusOr<std::unique_ptr<Replica>> core =
        Replica::Create(machine.config, machine.disk.durable());
    if (!core.ok()) {
      Violation(absl::StrCat(
          "replica ", machine.id,
          " cannot restart from its disk: ", core.status().ToString()));
      return;
    }
    machine.core = std::move(*core);
    machine.applied = 0;
    machine.chain = 0;
    ProcessReady(index);
    // Start at a random phase so replicas do not tick in lockstep.
    Schedule(EventKind::kTick, index,
             random_.Range(1, static_cast<int64_t>(machine.tick_period_us)));
  }

  void Crash(int index) {
    Machine& machine = machines_[index];
    if (!machine.core) return;
    machine.core.reset();
    machine.ready_scheduled = false;
    machine.disk.Crash();
    ++machine.generation;
    CheckDurability(machine);
    if (!healed_) {
      Schedule(EventKind::kRestart, index, random_.Range(10000, 500000));
    } else {
      Schedule(EventKind::kRestart, index, 0);
    }
  }

  void Save(Machine& machine, const PersistBatch& batch) {
    if (batch.empty()) return;
    if (options_.bug == Bug::kAckBeforeSync) {
      // Acknowledge now, make durable only when the next batch arrives.
      machine.disk.Sync();
      machine.disk.Write(batch);
      return;
    }
    const absl::Status status = machine.disk.Save(batch);
    if (!status.ok()) Violation(status.ToString());
  }

  // Handles the replica's Ready now, or with defer_ready a little later so
  // that more inputs join it.
  void HandleReady(int index) {
    Machine& machine = machines_[index];
    if (!mix_.defer_ready) {
      ProcessReady(index);
      return;
    }
    if (machine.ready_scheduled) return;
    machine.ready_scheduled = true;
    Schedule(EventKind::kReady, index, random_.Range(0, 2000));
  }

  void ProcessReady(int index) {
    Machine& machine = machines_[index];
    while (machine.core && machine.core->HasReady()) {
      Ready ready = machine.core->GetReady();
      if (Roll(mix_.crash_mid_ready)) {
        CountFault("crash_before_persist");
        Crash(index);
        return;
      }
      Save(machine, ready.persist);
      RecordAcceptances(machine, ready.persist);
      if (Roll(mix_.crash_mid_ready)) {
        CountFault("crash_after_persist");
        Crash(index);
        return;
      }
      for (paxospb::Message& message : ready.messages) {
        RecordDurabilityClaims(machine, message);
        SendMessage(std::move(message));
      }
      if (ready.install_snapshot.has_value()) {
        InstallSnapshot(machine, *ready.install_snapshot);
      }
      for (const paxospb::Entry& entry : ready.committed) Apply(machine, entry);
      if (ready.soft_state.has_value() &&
          ready.soft_state->role == Role::kLeader) {
        ++result_.leader_changes;
      }
      machine.core->Advance();
      if (machine.applied >= machine.core->snapshot_index() + compact_every_) {
        const absl::Status status = machine.core->Compact(
            machine.applied, absl::StrCat(machine.applied, ":", machine.chain));
        if (!status.ok()) {
          Violation(absl::StrCat("replica ", machine.id,
                                 " could not compact: ", status.ToString()));
        }
      }
    }
  }

  bool Roll(double probability) {
    return probability > 0 && random_.Bernoulli(probability);
  }

  void SendMessage(paxospb::Message message) {
    const int from = static_cast<int>(message.from()) - 1;
    const int to = static_cast<int>(message.to()) - 1;
    if (blocked_.count({from, to})) {
      CountFault("partition_drop");
      return;
    }
    if (Roll(mix_.loss)) {
      CountFault("message_loss");
      return;
    }
    const int copies = Roll(mix_.duplicate) ? 2 : 1;
    if (copies == 2) CountFault("message_duplicate");
    for (int copy = 0; copy < copies; ++copy) {
      int64_t delay = random_.Range(100, mix_.max_delay_us);
      if (Roll(mix_.long_delay)) {
        CountFault("message_long_delay");
        delay = random_.Range(mix_.max_delay_us, mix_.max_long_delay_us);
      }
      Schedule(EventKind::kDeliver, to, delay, message);
    }
  }

  // A reply that claims durable state is a promise the disk must keep.
  void RecordDurabilityClaims(Machine& machine,
                              const paxospb::Message& message) {
    if (message.has_promise()) {
      if (BallotLess(machine.max_promise_sent, message.promise().ballot())) {
        machine.max_promise_sent = message.promise().ballot();
      }
    } else if (message.has_accepted()) {
      for (uint64_t slot : message.accepted().slots()) {
        paxospb::Ballot& ballot = machine.accepted_sent[slot];
        if (BallotLess(ballot, message.accepted().ballot())) {
          ballot = message.accepted().ballot();
        }
      }
    }
  }

  void CheckDurability(Machine& machine) {
    const DurableState& disk = machine.disk.durable();
    if (BallotLess(disk.hard_state.promised(), machine.max_promise_sent)) {
      Violation(absl::StrCat("durability: replica ", machine.id,
                             " promised ballot ",
                             BallotString(machine.max_promise_sent),
                             " but after a crash its disk holds only ",
                             BallotString(disk.hard_state.promised())));
    }
    const uint64_t snapshot_index =
        disk.snapshot.has_value() ? disk.snapshot->index() : 0;
    const uint64_t safe_below =
        std::max(snapshot_index, disk.hard_state.commit());
    for (auto it = machine.accepted_sent.begin();
         it != machine.accepted_sent.end();) {
      const auto& [slot, ballot] = *it;
      if (slot <= safe_below) {
        it = machine.accepted_sent.erase(it);
        continue;
      }
      auto entry = disk.entries.find(slot);
      if (entry == disk.entries.end() ||
          (!entry->second.chosen() &&
           BallotLess(entry->second.ballot(), ballot))) {
        Violation(absl::StrCat("durability: replica ", machine.id,
                               " acknowledged slot ", slot, " at ballot ",
                               BallotString(ballot),
                               " but after a crash its disk does not hold it"));
      }
      ++it;
    }
  }

  void InstallSnapshot(Machine& machine, const paxospb::Snapshot& snapshot) {
    ++result_.snapshots_installed;
    std::vector<std::string> parts = absl::StrSplit(snapshot.data(), ':');
    uint64_t index = 0;
    uint64_t chain = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &index) ||
        !absl::SimpleAtoi(parts[1], &chain) || index != snapshot.index()) {
      Violation(absl::StrCat("replica ", machine.id,
                             " received a malformed snapshot at index ",
                             snapshot.index()));
      return;
    }
    auto known = chain_.find(index);
    if (known == chain_.end()) {
      Violation(absl::StrCat("replica ", machine.id,
                             " installed a snapshot at ", index,
                             " that no replica has applied"));
    } else if (known->second != chain) {
      Violation(absl::StrCat("agreement: replica ", machine.id,
                             " installed a snapshot at ", index,
                             " whose history differs from the chosen log"));
    }
    machine.applied = index;
    machine.chain = chain;
  }

  void Apply(Machine& machine, const paxospb::Entry& entry) {
    const uint64_t slot = entry.slot();
    if (slot != machine.applied + 1) {
      Violation(absl::StrCat("order: replica ", machine.id, " applied slot ",
                             slot, " after slot ", machine.applied));
    }
    const std::string key = ValueKey(entry.value());
    auto [chosen, first] = chosen_.emplace(slot, key);
    if (!first && chosen->second != key) {
      Violation(absl::StrCat("agreement: slot ", slot, " chosen as ",
                             chosen->second, " and as ", key, " (replica ",
                             machine.id, ")"));
    }
    if (first && entry.value().has_membership()) {
      RecordChosenMembership(slot, entry.value().membership());
    }
    for (const std::string& command : entry.value().commands()) {
      if (!proposed_.count(command)) {
        Violation(absl::StrCat("validity: slot ", slot, " holds command '",
                               command, "' that no client proposed"));
      }
      if (machine.core && machine.core->role() == Role::kLeader) {
        if (acknowledged_.emplace(command, slot).second) {
          max_acknowledged_slot_ = std::max(max_acknowledged_slot_, slot);
          ++result_.acknowledged;
        }
      }
    }
    machine.applied = slot;
    machine.chain = Mix(machine.chain, key);
    auto [link, new_link] = chain_.emplace(slot, machine.chain);
    if (!new_link && link->second != machine.chain) {
      Violation(absl::StrCat("agreement: replica ", machine.id,
                             " applied a log that is not a prefix of the "
                             "others' at slot ",
                             slot));
    }
  }

  bool ProposeToLeader(const std::string& command) {
    std::vector<int> leaders;
    for (size_t i = 0; i < machines_.size(); ++i) {
      if (machines_[i].core && machines_[i].core->role() == Role::kLeader) {
        leaders.push_back(static_cast<int>(i));
      }
    }
    const int target = leaders.empty()
                           ? static_cast<int>(random_.Uniform(machines_.size()))
                           : leaders[random_.Uniform(leaders.size())];
    proposed_.insert(command);
    ++result_.proposals;
    return ProposeTo(target, command);
  }

  // Returns true iff `target` queued the command now.
  bool ProposeTo(int target, const std::string& command) {
    Machine& machine = machines_[target];
    if (!machine.core) return false;
    if (Stalled(machine)) {
      Schedule(EventKind::kClientRequest, target,
               machine.stalled_until_us - now_us_, {}, command);
      return false;
    }
    if (!machine.core->Propose(command).ok()) return false;
    HandleReady(target);
    return true;
  }

  void InjectFault() {
    std::vector<std::string> kinds;
    if (mix_.crashes) kinds.push_back("crash");
    if (mix_.partitions) {
      kinds.insert(kinds.end(),
                   {"partition", "asymmetric_partition", "isolate_leader",
                    "flaky_links", "heal_partitions"});
    }
    if (mix_.stalls) kinds.push_back("stall");
    if (mix_.membership) {
      kinds.insert(kinds.end(),
                   {"membership_change", "membership_change", "handover"});
    }
    const std::string kind = kinds[random_.Uniform(kinds.size())];
    const int n = static_cast<int>(machines_.size());
    if (kind == "membership_change") {
      ChangeMembership();
    } else if (kind == "handover") {
      const int leader = LeaderWithLease();
      if (leader < 0) return;
      const std::vector<uint32_t> voters =
          Voters(machines_[leader].core->membership());
      HandOver(leader, voters[random_.Uniform(voters.size())]);
    } else if (kind == "crash") {
      const int victim = static_cast<int>(random_.Uniform(n));
      if (!machines_[victim].core) return;
      CountFault("crash");
      Crash(victim);
    } else if (kind == "partition") {
      blocked_.clear();
      std::vector<int> side(n);
      for (int& s : side) s = static_cast<int>(random_.Uniform(2));
      for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) {
          if (side[a] != side[b]) blocked_.insert({a, b});
        }
      }
      CountFault("partition");
    } else if (kind == "asymmetric_partition") {
      const int a = static_cast<int>(random_.Uniform(n));
      const int b = static_cast<int>(random_.Uniform(n));
      if (a == b) return;
      blocked_.insert({a, b});
      CountFault("asymmetric_partition");
    } else if (kind == "flaky_links") {
      // Cut each direction of each link independently: partitions that are
      // neither symmetric nor transitive.
      blocked_.clear();
      for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) {
          if (a != b && random_.Bernoulli(0.3)) blocked_.insert({a, b});
        }
      }
      CountFault("flaky_links");
    } else if (kind == "stall") {
      Machine& machine = machines_[random_.Uniform(n)];
      if (!machine.core || Stalled(machine)) return;
      machine.stalled_until_us = now_us_ + random_.Range(50000, 1500000);
      timing_faults_ = true;
      CountFault("stall");
    } else if (kind == "isolate_leader") {
      for (int i = 0; i < n; ++i) {
        if (!machines_[i].core || machines_[i].core->role() != Role::kLeader) {
          continue;
        }
        for (int j = 0; j < n; ++j) {
          if (j == i) continue;
          blocked_.insert({i, j});
          blocked_.insert({j, i});
        }
        CountFault("isolate_leader");
        return;
      }
    } else {
      blocked_.clear();
      CountFault("heal_partitions");
    }
  }

  void Heal() {
    healed_ = true;
    blocked_.clear();
    mix_.loss = 0;
    mix_.duplicate = 0;
    mix_.long_delay = 0;
    mix_.crash_mid_ready = 0;
    for (size_t i = 0; i < machines_.size(); ++i) {
      Machine& machine = machines_[i];
      // Removed members (and joiners whose addition was never chosen) are
      // decommissioned; everyone else runs.
      if (FindMember(LatestMembership(), machine.id) == nullptr) {
        machine.removed = true;
        machine.core.reset();
        ++machine.generation;
        continue;
      }
      if (!machine.core) {
        ++machine.generation;
        StartMachine(static_cast<int>(i));
      }
    }
  }

  // The configuration of the longest chosen log.
  const paxospb::Membership& LatestMembership() const {
    return chosen_memberships_.empty() ? initial_membership_
                                       : chosen_memberships_.rbegin()->second;
  }

  // The configuration that governs `slot` in the chosen log.
  const paxospb::Membership& GoverningMembership(uint64_t slot) const {
    auto it = chosen_memberships_.lower_bound(slot);
    if (it == chosen_memberships_.begin()) return initial_membership_;
    return std::prev(it)->second;
  }

  void RecordChosenMembership(uint64_t slot,
                              const paxospb::Membership& membership) {
    ++result_.membership_changes;
    const paxospb::Membership& previous = GoverningMembership(slot);
    if (options_.bug != Bug::kMembershipWithoutJointQuorums) {
      if (absl::Status single = ValidateChange(previous, membership);
          !single.ok()) {
        Violation(absl::StrCat(
            "membership: slot ", slot, " changes ", MembershipString(previous),
            " to ", MembershipString(membership), ": ", single.message()));
      }
    }
    chosen_memberships_[slot] = membership;
  }

  int LeaderWithLease() const {
    for (size_t i = 0; i < machines_.size(); ++i) {
      if (machines_[i].core && machines_[i].core->HasLease()) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

  void HandOver(int leader, uint32_t target) {
    if (machines_[leader].core->TransferLeadership(target).ok()) {
      ++result_.handovers;
      CountFault("handover");
      HandleReady(leader);
    }
  }

  // Starts a new machine under a fresh id that will join the cell; returns
  // its id, or 0 when every spare id is used.
  uint32_t AddMachine(const paxospb::Membership& current) {
    if (machines_.size() >=
        static_cast<size_t>(options_.replicas + kSpareIds)) {
      return 0;
    }
    machines_.emplace_back();
    Machine& machine = machines_.back();
    machine.id = static_cast<uint32_t>(machines_.size());
    machine.config = template_config_;
    machine.config.id = machine.id;
    machine.config.join = true;
    machine.config.members = Voters(current);
    StartMachine(static_cast<int>(machines_.size()) - 1);
    return machine.id;
  }

  // One configuration change proposed by the leader: add a learner, promote
  // a learner that caught up, add a voter, remove a voter or a learner. The
  // leader never removes itself: it hands leadership over instead. With
  // Bug::kMembershipWithoutJointQuorums, two voters at a time.
  void ChangeMembership() {
    const int leader = LeaderWithLease();
    if (leader < 0) return;
    Replica& core = *machines_[leader].core;
    if (core.change_in_flight()) return;
    const paxospb::Membership current = core.membership();
    const std::vector<uint32_t> voters = Voters(current);
    std::vector<uint32_t> learners;
    std::vector<uint32_t> other_voters;
    for (const paxospb::Member& member : current.members()) {
      if (!member.voter()) learners.push_back(member.id());
      if (member.voter() && member.id() != core.id()) {
        other_voters.push_back(member.id());
      }
    }
    std::map<uint32_t, bool> next;  // id -> voter
    for (const paxospb::Member& member : current.members()) {
      next[member.id()] = member.voter();
    }
    std::string kind;
    if (options_.bug == Bug::kMembershipWithoutJointQuorums) {
      if (voters.size() <= 3) {
        for (int i = 0; i < 2; ++i) {
          const uint32_t id = AddMachine(current);
          if (id == 0) return;
          next[id] = true;
        }
        kind = "member_add_two_voters";
      } else {
        if (other_voters.size() < 2) return;
        next.erase(other_voters[0]);
        next.erase(other_voters[1]);
        kind = "member_remove_two_voters";
      }
    } else {
      const uint64_t roll = random_.Uniform(100);
      if (!learners.empty() && roll < 40) {
        const uint32_t learner = learners[random_.Uniform(learners.size())];
        if (core.PeerCommit(learner) + 8 < core.commit()) return;
        next[learner] = true;
        kind = "member_promote";
      } else if (!learners.empty() && roll < 50) {
        next.erase(learners[random_.Uniform(learners.size())]);
        kind = "member_remove_learner";
      } else if (voters.size() > 2 && roll < 75) {
        const uint32_t victim = voters[random_.Uniform(voters.size())];
        if (victim == core.id()) {
          if (!other_voters.empty()) {
            HandOver(leader,
                     other_voters[random_.Uniform(other_voters.size())]);
          }
          return;
        }
        next.erase(victim);
        kind = "member_remove_voter";
      } else if (voters.size() < 5) {
        const uint32_t id = AddMachine(current);
        if (id == 0) return;
        // Mostly as a learner first, sometimes straight in as a voter.
        next[id] = random_.Bernoulli(0.2);
        kind = next[id] ? "member_add_voter" : "member_add_learner";
      } else {
        return;
      }
    }
    paxospb::Membership proposed;
    for (const auto& [id, voter] : next) {
      paxospb::Member* member = proposed.add_members();
      member->set_id(id);
      member->set_voter(voter);
    }
    *proposed.mutable_retired_ids() = current.retired_ids();
    for (const paxospb::Member& member : current.members()) {
      if (next.count(member.id()) == 0) proposed.add_retired_ids(member.id());
    }
    if (core.ProposeMembership(proposed).ok()) {
      CountFault(kind);
      HandleReady(leader);
    }
  }

  std::string DescribeReplicas() const {
    std::string out;
    for (const Machine& machine : machines_) {
      if (!machine.core) {
        absl::StrAppend(&out, "[", machine.id, " down] ");
        continue;
      }
      const Replica& core = *machine.core;
      absl::StrAppend(&out, "[", machine.id, " ", RoleName(core.role()),
                      " leader=", core.LeaderHint(),
                      " promised=", BallotString(core.promised()),
                      " commit=", core.commit(), " applied=", machine.applied,
                      " snapshot=", core.snapshot_index(),
                      " inflight=", core.DebugInflight(),
                      " pending=", core.pending_proposals(),
                      " config=", MembershipString(core.membership()),
                      machine.removed ? " removed" : "", "] ");
    }
    return out;
  }

  bool EveryoneApplied(const std::string& marker) {
    auto it = acknowledged_.find(marker);
    if (it == acknowledged_.end()) return false;
    for (const Machine& machine : machines_) {
      // Removed members (also those removed after healing began) stay
      // behind; nobody sends to them any more.
      if (machine.removed || !FindMember(LatestMembership(), machine.id)) {
        continue;
      }
      if (!machine.core || machine.applied < it->second) return false;
    }
    return true;
  }

  // Agreement on what is chosen, not only on what is applied: one value per
  // (slot, ballot), and a value accepted by a majority at one ballot is the
  // only value ever chosen for its slot.
  void RecordAcceptances(const Machine& machine, const PersistBatch& batch) {
    for (const paxospb::Entry& entry : batch.entries) {
      if (entry.chosen()) continue;
      const std::string key = ValueKey(entry.value());
      const auto slot_ballot =
          std::make_pair(entry.slot(), PackBallot(entry.ballot()));
      auto [value, first] = accepted_value_.emplace(slot_ballot, key);
      if (!first && value->second != key) {
        Violation(absl::StrCat("agreement: ballot ",
                               BallotString(entry.ballot()),
                               " proposed two values for slot ", entry.slot()));
      }
      acceptors_[slot_ballot].insert(machine.id);
    }
  }

  // A value accepted at one ballot by a majority of the configuration that
  // governs its slot (in the chosen log) is chosen: it must be the only
  // value ever chosen for that slot.
  void CheckMajorityAcceptances() {
    std::map<uint64_t, std::string> majority_chosen;
    for (const auto& [slot_ballot, acceptors] : acceptors_) {
      const uint64_t slot = slot_ballot.first;
      if (!IsQuorum(GoverningMembership(slot), acceptors)) continue;
      const std::string& key = accepted_value_.at(slot_ballot);
      auto [chosen, new_slot] = majority_chosen.emplace(slot, key);
      auto applied = chosen_.find(slot);
      if ((!new_slot && chosen->second != key) ||
          (applied != chosen_.end() && applied->second != key)) {
        Violation(absl::StrCat(
            "agreement: slot ", slot, " accepted by a majority of ",
            MembershipString(GoverningMembership(slot)), " as ", key,
            " at ballot ", EpochString(slot_ballot.second), " but chosen as ",
            applied != chosen_.end() ? applied->second : chosen->second));
      }
    }
  }

  // A lease holder serves reads locally: it must reflect every write any
  // leader acknowledged.
  void CheckStaleReads() {
    for (const Machine& machine : machines_) {
      if (machine.core && machine.core->HasLease() &&
          machine.applied < max_acknowledged_slot_) {
        Violation(absl::StrCat("lease: replica ", machine.id,
                               " holds a read lease but applied "
                               "only up to slot ",
                               machine.applied, " while slot ",
                               max_acknowledged_slot_,
                               " was acknowledged to a client"));
      }
    }
  }

  void CheckLeases() {
    if (timing_faults_) return;
    CheckStaleReads();
    int holders = 0;
    std::string who;
    for (const Machine& machine : machines_) {
      if (machine.core && machine.core->HasLease()) {
        ++holders;
        absl::StrAppend(&who, who.empty() ? "" : ", ", machine.id);
      }
    }
    if (holders > 1) {
      Violation(absl::StrCat(
          "lease: replicas ", who,
          " hold a read lease at the same instant (t=", now_us_, "us)"));
    }
  }

  void CheckAcknowledgedKept() {
    for (const auto& [command, slot] : acknowledged_) {
      auto it = chosen_.find(slot);
      if (it == chosen_.end() ||
          it->second.find(absl::StrCat(command.size(), ":", command, ";")) ==
              std::string::npos) {
        Violation(absl::StrCat("lost: acknowledged command '", command,
                               "' is no longer at slot ", slot));
      }
    }
  }

  void Violation(std::string message) {
    ++result_.violations;
    if (result_.violation_messages.size() < 20) {
      result_.violation_messages.push_back(
          absl::StrCat("step ", result_.steps, ": ", std::move(message)));
    }
  }

  const Options options_;
  Random random_;
  FaultMix mix_;
  std::vector<uint32_t> member_ids_;
  std::vector<Machine> machines_;
  uint64_t compact_every_ = 100;
  std::priority_queue<Event, std::vector<Event>, EventLater> events_;
  int64_t now_us_ = 0;
  uint64_t next_sequence_ = 0;
  uint64_t next_command_ = 0;
  std::set<std::pair<int, int>> blocked_;
  bool healed_ = false;
  bool timing_faults_ = false;

  // Global knowledge for the checkers.
  absl::flat_hash_set<std::string> proposed_;
  std::map<uint64_t, std::string> chosen_;
  absl::flat_hash_map<uint64_t, uint64_t> chain_;
  absl::flat_hash_map<std::string, uint64_t> acknowledged_;
  uint64_t max_acknowledged_slot_ = 0;
  std::map<std::pair<uint64_t, uint64_t>, std::string> accepted_value_;
  std::map<std::pair<uint64_t, uint64_t>, std::set<uint32_t>> acceptors_;
  paxospb::Membership initial_membership_;
  // Configuration changes of the chosen log, by slot.
  std::map<uint64_t, paxospb::Membership> chosen_memberships_;
  // The configuration new machines start from (ids and join set per
  // machine).
  Config template_config_;

  Result result_;
};

}  // namespace

Result Run(const Options& options) {
  World world(options);
  return world.Run();
}

}  // namespace lockd::paxos::sim
