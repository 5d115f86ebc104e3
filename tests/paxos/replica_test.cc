// Unit tests of the Multi-Paxos replica (paxos/replica.h).
//
// Two drivers are used:
// * Node: one replica driven by hand-crafted messages, for acceptor, proposer
//   and learner rules where the exact reply matters.
// * Cluster: N replicas on an in-memory network whose messages are delivered,
//   dropped or held under the test's control. It follows the Ready contract
//   (persist, send, apply, Advance) and checks after every Ready that no two
//   replicas ever hand out different values for the same slot.
// Everything is deterministic: time only moves when a test calls Tick().

#include "paxos/replica.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paxos/ballot.h"
#include "paxos/config.h"
#include "paxos/membership.h"
#include "paxos/memory_storage.h"
#include "paxos/random.h"
#include "paxos/storage.h"
#include "protos/paxos.pb.h"

namespace lockd::paxos {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::SizeIs;

constexpr int kHeartbeatTicks = 2;
constexpr int kElectionTicks = 20;
constexpr int kLeaseTicks = 10;
constexpr int kMaxDriftTicks = 2;

Config TestConfig(uint32_t id, std::vector<uint32_t> members) {
  Config config;
  config.id = id;
  config.members = std::move(members);
  config.heartbeat_ticks = kHeartbeatTicks;
  // Larger than the lease so that a replica can wait out its recovery (and
  // another leader's lease) without its own election timer firing.
  config.election_ticks = kElectionTicks;
  config.lease_ticks = kLeaseTicks;
  config.max_drift_ticks = kMaxDriftTicks;
  return config;
}

std::vector<uint32_t> Members(int size) {
  std::vector<uint32_t> members;
  for (int i = 1; i <= size; ++i) members.push_back(static_cast<uint32_t>(i));
  return members;
}

// ---------------------------------------------------------------------------
// Building and reading protos.

paxospb::Value MakeValue(const std::vector<std::string>& commands) {
  paxospb::Value value;
  for (const std::string& command : commands) value.add_commands(command);
  return value;
}

std::vector<std::string> Commands(const paxospb::Value& value) {
  return std::vector<std::string>(value.commands().begin(),
                                  value.commands().end());
}

paxospb::Entry MakeEntry(uint64_t slot, const paxospb::Ballot& ballot,
                         const std::vector<std::string>& commands,
                         bool chosen = false) {
  paxospb::Entry entry;
  entry.set_slot(slot);
  *entry.mutable_ballot() = ballot;
  *entry.mutable_value() = MakeValue(commands);
  entry.set_chosen(chosen);
  return entry;
}

using SlotCommands = std::pair<uint64_t, std::vector<std::string>>;

template <typename Entries>
std::vector<SlotCommands> Summarize(const Entries& entries) {
  std::vector<SlotCommands> summary;
  for (const paxospb::Entry& entry : entries) {
    summary.emplace_back(entry.slot(), Commands(entry.value()));
  }
  return summary;
}

std::vector<SlotCommands> Summarize(
    const std::map<uint64_t, paxospb::Entry>& entries) {
  std::vector<SlotCommands> summary;
  for (const auto& [slot, entry] : entries) {
    summary.emplace_back(slot, Commands(entry.value()));
  }
  return summary;
}

paxospb::Message Envelope(uint32_t from, uint32_t to) {
  paxospb::Message message;
  message.set_from(from);
  message.set_to(to);
  return message;
}

paxospb::Message ProbeMessage(uint32_t from, uint32_t to,
                              uint64_t first_unchosen) {
  paxospb::Message message = Envelope(from, to);
  message.mutable_probe()->set_first_unchosen(first_unchosen);
  return message;
}

paxospb::Message ProbeGrantMessage(uint32_t from, uint32_t to) {
  paxospb::Message message = Envelope(from, to);
  message.mutable_probe_grant();
  return message;
}

paxospb::Message PrepareMessage(uint32_t from, uint32_t to,
                                const paxospb::Ballot& ballot,
                                uint64_t first_unchosen) {
  paxospb::Message message = Envelope(from, to);
  *message.mutable_prepare()->mutable_ballot() = ballot;
  message.mutable_prepare()->set_first_unchosen(first_unchosen);
  return message;
}

paxospb::Message PromiseMessage(uint32_t from, uint32_t to,
                                const paxospb::Ballot& ballot,
                                const std::vector<paxospb::Entry>& entries) {
  paxospb::Message message = Envelope(from, to);
  *message.mutable_promise()->mutable_ballot() = ballot;
  for (const paxospb::Entry& entry : entries) {
    *message.mutable_promise()->add_entries() = entry;
  }
  return message;
}

paxospb::Message AcceptMessage(uint32_t from, uint32_t to,
                               const paxospb::Ballot& ballot,
                               const std::vector<paxospb::Entry>& entries,
                               uint64_t commit, uint64_t sent_tick = 0) {
  paxospb::Message message = Envelope(from, to);
  paxospb::Accept* accept = message.mutable_accept();
  *accept->mutable_ballot() = ballot;
  for (const paxospb::Entry& entry : entries) *accept->add_entries() = entry;
  accept->set_commit(commit);
  accept->set_sent_tick(sent_tick);
  return message;
}

paxospb::Message AcceptedMessage(uint32_t from, uint32_t to,
                                 const paxospb::Ballot& ballot,
                                 const std::vector<uint64_t>& slots,
                                 uint64_t sent_tick, uint64_t commit) {
  paxospb::Message message = Envelope(from, to);
  paxospb::Accepted* accepted = message.mutable_accepted();
  *accepted->mutable_ballot() = ballot;
  for (uint64_t slot : slots) accepted->add_slots(slot);
  accepted->set_sent_tick(sent_tick);
  accepted->set_commit(commit);
  return message;
}

// Messages of one kind, optionally only those addressed to `to`.
std::vector<paxospb::Message> OfKind(
    const std::vector<paxospb::Message>& messages,
    paxospb::Message::BodyCase body, uint32_t to = 0) {
  std::vector<paxospb::Message> selected;
  for (const paxospb::Message& message : messages) {
    if (message.body_case() == body && (to == 0 || message.to() == to)) {
      selected.push_back(message);
    }
  }
  return selected;
}

std::vector<uint32_t> Recipients(
    const std::vector<paxospb::Message>& messages) {
  std::vector<uint32_t> to;
  for (const paxospb::Message& message : messages) to.push_back(message.to());
  std::sort(to.begin(), to.end());
  return to;
}

// Ballots compare through their printed form so that failures are readable.
std::string B(const paxospb::Ballot& ballot) { return BallotString(ballot); }

std::string EncodeSnapshot(const std::vector<std::string>& commands) {
  return MakeValue(commands).SerializeAsString();
}

std::vector<std::string> DecodeSnapshot(const std::string& data) {
  paxospb::Value value;
  EXPECT_TRUE(value.ParseFromString(data));
  return Commands(value);
}

PersistBatch BatchOf(const DurableState& state) {
  PersistBatch batch;
  batch.hard_state = state.hard_state;
  batch.snapshot = state.snapshot;
  for (const auto& [slot, entry] : state.entries)
    batch.entries.push_back(entry);
  return batch;
}

// ---------------------------------------------------------------------------
// Node: one replica driven by hand.

class Node {
 public:
  explicit Node(Config config, const DurableState& state = DurableState())
      : config_(std::move(config)) {
    // The storage starts out holding `state`, as after a restart.
    EXPECT_TRUE(storage_.Save(BatchOf(state)).ok());
    absl::StatusOr<std::unique_ptr<Replica>> replica =
        Replica::Create(config_, state);
    EXPECT_TRUE(replica.ok()) << replica.status();
    if (replica.ok()) replica_ = std::move(*replica);
  }

  Replica& replica() { return *replica_; }
  MemoryStorage& storage() { return storage_; }

  // One GetReady / Save / Advance round; returns what was handed out.
  Ready Cycle() {
    Ready ready = replica_->GetReady();
    EXPECT_TRUE(storage_.Save(ready.persist).ok());
    for (const paxospb::Message& message : ready.messages) {
      EXPECT_NE(message.to(), config_.id)
          << "messages to self must be delivered by Advance()";
      EXPECT_EQ(message.from(), config_.id);
    }
    replica_->Advance();
    return ready;
  }

  // Cycles until nothing is ready; returns every Ready.
  std::vector<Ready> Drain() {
    std::vector<Ready> readies;
    for (int i = 0; i < 100 && replica_->HasReady(); ++i) {
      readies.push_back(Cycle());
    }
    EXPECT_FALSE(replica_->HasReady()) << "replica never quiesced";
    return readies;
  }

  // Steps `message`, then drains. Returns the messages sent meanwhile.
  std::vector<paxospb::Message> Receive(const paxospb::Message& message) {
    replica_->Step(message);
    return SentBy(Drain());
  }

  // Ticks `ticks` times, draining after each; returns the messages sent.
  std::vector<paxospb::Message> TickN(int ticks) {
    std::vector<paxospb::Message> sent;
    for (int i = 0; i < ticks; ++i) {
      replica_->Tick();
      for (paxospb::Message& message : SentBy(Drain())) {
        sent.push_back(std::move(message));
      }
    }
    return sent;
  }

  static std::vector<paxospb::Message> SentBy(
      const std::vector<Ready>& readies) {
    std::vector<paxospb::Message> sent;
    for (const Ready& ready : readies) {
      sent.insert(sent.end(), ready.messages.begin(), ready.messages.end());
    }
    return sent;
  }

  static std::vector<paxospb::Entry> CommittedBy(
      const std::vector<Ready>& readies) {
    std::vector<paxospb::Entry> committed;
    for (const Ready& ready : readies) {
      committed.insert(committed.end(), ready.committed.begin(),
                       ready.committed.end());
    }
    return committed;
  }

 private:
  const Config config_;
  MemoryStorage storage_;
  std::unique_ptr<Replica> replica_;
};

// ---------------------------------------------------------------------------
// Cluster: N replicas on a controllable in-memory network.

// What the layer above a replica holds: the commands applied in order.
struct StateMachine {
  uint64_t applied = 0;
  std::vector<std::string> commands;
  // Slot -> commands of every entry applied since the last (re)start.
  std::map<uint64_t, std::vector<std::string>> log;
  int snapshots_installed = 0;
  uint64_t last_snapshot_index = 0;
};

class Cluster {
 public:
  enum class Fate { kDeliver, kDrop, kHold };

  explicit Cluster(int size,
                   const std::function<void(Config&)>& tweak = nullptr) {
    for (uint32_t id : Members(size)) {
      Peer& peer = peers_[id];
      peer.config = TestConfig(id, Members(size));
      if (tweak) tweak(peer.config);
      peer.storage = std::make_unique<MemoryStorage>();
      absl::StatusOr<std::unique_ptr<Replica>> replica =
          Replica::Create(peer.config, DurableState());
      EXPECT_TRUE(replica.ok()) << replica.status();
      peer.replica = std::move(*replica);
    }
  }

  std::vector<uint32_t> ids() const {
    std::vector<uint32_t> ids;
    for (const auto& [id, peer] : peers_) ids.push_back(id);
    return ids;
  }
  Replica& replica(uint32_t id) { return *peers_.at(id).replica; }
  const StateMachine& state_machine(uint32_t id) const {
    return peers_.at(id).state_machine;
  }
  MemoryStorage& storage(uint32_t id) { return *peers_.at(id).storage; }
  // Every Ready `id` produced since its last (re)start.
  const std::vector<Ready>& readies(uint32_t id) const {
    return peers_.at(id).readies;
  }
  // The tick at which `id` last became leader.
  uint64_t elected_tick(uint32_t id) const {
    return peers_.at(id).elected_tick;
  }

  // Network control. A message is dropped if its link is cut or `filter`
  // says so; held messages wait until Release().
  void Isolate(uint32_t id) { isolated_.insert(id); }
  void Cut(uint32_t a, uint32_t b) {
    cut_.insert({a, b});
    cut_.insert({b, a});
  }
  void Uncut(uint32_t a, uint32_t b) {
    cut_.erase({a, b});
    cut_.erase({b, a});
  }
  void HealAll() {
    isolated_.clear();
    cut_.clear();
    filter_ = nullptr;
  }
  void SetFilter(std::function<Fate(const paxospb::Message&)> filter) {
    filter_ = std::move(filter);
  }
  void Release() {
    for (paxospb::Message& message : held_) queue_.push_back(message);
    held_.clear();
    Deliver();
  }
  size_t held() const { return held_.size(); }
  std::vector<paxospb::Message> TakeHeld() {
    std::vector<paxospb::Message> held;
    held.swap(held_);
    return held;
  }

  // Hands out every Ready of `id`, following the Ready contract.
  void Process(uint32_t id) {
    Peer& peer = peers_.at(id);
    for (int i = 0; i < 100 && peer.replica->HasReady(); ++i) {
      Ready ready = peer.replica->GetReady();
      // 1. Persist.
      EXPECT_TRUE(peer.storage->Save(ready.persist).ok());
      // 2. Send.
      for (const paxospb::Message& message : ready.messages) {
        EXPECT_EQ(message.from(), id);
        EXPECT_NE(message.to(), id)
            << "messages to self must be delivered by Advance()";
        queue_.push_back(message);
      }
      // 3. Apply.
      StateMachine& machine = peer.state_machine;
      if (ready.install_snapshot.has_value()) {
        const paxospb::Snapshot& snapshot = *ready.install_snapshot;
        EXPECT_GE(snapshot.index(), machine.applied);
        machine.commands = DecodeSnapshot(snapshot.data());
        machine.applied = snapshot.index();
        machine.last_snapshot_index = snapshot.index();
        ++machine.snapshots_installed;
        CheckSnapshotAgreement(id, snapshot.index(), machine.commands);
      }
      for (const paxospb::Entry& entry : ready.committed) {
        EXPECT_EQ(entry.slot(), machine.applied + 1)
            << "replica " << id << " skipped or repeated a slot";
        machine.applied = entry.slot();
        machine.log[entry.slot()] = Commands(entry.value());
        for (const std::string& command : entry.value().commands()) {
          machine.commands.push_back(command);
        }
        CheckAgreement(id, entry);
      }
      if (ready.soft_state.has_value() &&
          ready.soft_state->role == Role::kLeader) {
        peer.elected_tick = peer.replica->ticks();
      }
      peer.readies.push_back(ready);
      // 4. Advance.
      peer.replica->Advance();
    }
    EXPECT_FALSE(peer.replica->HasReady()) << "replica " << id << " spins";
  }

  // Delivers queued messages (and whatever they trigger) until none is left.
  void Deliver() {
    for (int steps = 0; !queue_.empty(); ++steps) {
      if (steps > 100000) {
        ADD_FAILURE() << "the network never quiesced";
        return;
      }
      paxospb::Message message = std::move(queue_.front());
      queue_.pop_front();
      const Fate fate = FateOf(message);
      if (fate == Fate::kDrop) continue;
      if (fate == Fate::kHold) {
        held_.push_back(std::move(message));
        continue;
      }
      if (message.has_accepted()) {
        uint64_t& tick =
            acked_sent_tick_[{message.to(), message.from(),
                              PackBallot(message.accepted().ballot())}];
        tick = std::max(tick, message.accepted().sent_tick());
      }
      replica(message.to()).Step(message);
      Process(message.to());
    }
  }

  // Ticks one replica and delivers what follows.
  void Tick(uint32_t id) {
    replica(id).Tick();
    Process(id);
    Deliver();
    CheckLeases();
  }

  void TickAll(int times = 1) {
    for (int i = 0; i < times; ++i) {
      for (auto& [id, peer] : peers_) {
        peer.replica->Tick();
        Process(id);
      }
      Deliver();
      CheckLeases();
    }
  }

  // Steps a hand-crafted message into its recipient and delivers what
  // follows.
  void Inject(const paxospb::Message& message) {
    replica(message.to()).Step(message);
    Process(message.to());
    Deliver();
  }

  // The leader with the highest epoch, or 0.
  uint32_t Leader() {
    uint32_t leader = 0;
    uint64_t epoch = 0;
    for (auto& [id, peer] : peers_) {
      if (peer.replica->role() == Role::kLeader &&
          peer.replica->epoch() > epoch) {
        leader = id;
        epoch = peer.replica->epoch();
      }
    }
    return leader;
  }

  // Ticks every replica until one leads and every reachable replica follows
  // it. Returns the leader (0 on failure, after recording it).
  uint32_t ElectLeader(int max_ticks = 1000) {
    for (int i = 0; i < max_ticks; ++i) {
      const uint32_t leader = Leader();
      if (leader != 0 && EveryoneFollows(leader)) return leader;
      TickAll();
    }
    ADD_FAILURE() << "no leader after " << max_ticks << " ticks";
    return 0;
  }

  // Ticks only `id` until it leads. Returns false on failure.
  bool Campaign(uint32_t id, int max_ticks = 1000) {
    for (int i = 0; i < max_ticks; ++i) {
      if (replica(id).role() == Role::kLeader) return true;
      Tick(id);
    }
    ADD_FAILURE() << "replica " << id << " never won an election";
    return false;
  }

  // Proposes `commands` at `leader`, then lets them commit everywhere
  // reachable (the commit point travels on heartbeats).
  void ProposeAndCommit(uint32_t leader,
                        const std::vector<std::string>& commands) {
    for (const std::string& command : commands) {
      const absl::Status status = replica(leader).Propose(command);
      EXPECT_TRUE(status.ok()) << status;
    }
    Process(leader);
    Deliver();
    TickAll(2 * kHeartbeatTicks);
  }

  // Snapshots the state machine of `id` at its applied index.
  absl::Status Compact(uint32_t id) {
    const StateMachine& machine = state_machine(id);
    absl::Status status =
        replica(id).Compact(machine.applied, EncodeSnapshot(machine.commands));
    Process(id);
    return status;
  }

  // Crashes `id` and rebuilds it from its storage. Its state machine starts
  // empty and is rebuilt from the replica's first Ready.
  void Restart(uint32_t id) {
    Peer& peer = peers_.at(id);
    absl::StatusOr<DurableState> state = peer.storage->Load();
    ASSERT_TRUE(state.ok()) << state.status();
    absl::StatusOr<std::unique_ptr<Replica>> replica =
        Replica::Create(peer.config, *state);
    ASSERT_TRUE(replica.ok()) << replica.status();
    peer.replica = std::move(*replica);
    peer.state_machine = StateMachine();
    peer.readies.clear();
    Process(id);
  }

  // Starts replica `id` with an empty disk as a joiner that knows of
  // `members` (it learns the configuration from the cell).
  void Join(uint32_t id, std::vector<uint32_t> members) {
    Peer& peer = peers_[id];
    peer.config = TestConfig(id, std::move(members));
    peer.config.join = true;
    peer.storage = std::make_unique<MemoryStorage>();
    absl::StatusOr<std::unique_ptr<Replica>> replica =
        Replica::Create(peer.config, DurableState());
    ASSERT_TRUE(replica.ok()) << replica.status();
    peer.replica = std::move(*replica);
    Process(id);
  }

  // Mirrors Replica::QuorumAckTick() from the acknowledgements this network
  // delivered: the newest tick that a majority acknowledged.
  uint64_t DeliveredQuorumAckTick(uint32_t leader) {
    std::vector<uint64_t> acks;
    for (uint32_t id : ids()) {
      if (id == leader) {
        acks.push_back(replica(leader).ticks());
        continue;
      }
      auto it = acked_sent_tick_.find({leader, id, replica(leader).epoch()});
      acks.push_back(it == acked_sent_tick_.end() ? elected_tick(leader)
                                                  : it->second);
    }
    std::sort(acks.begin(), acks.end(), std::greater<uint64_t>());
    return acks[acks.size() / 2];
  }

 private:
  struct Peer {
    Config config;
    std::unique_ptr<MemoryStorage> storage;
    std::unique_ptr<Replica> replica;
    StateMachine state_machine;
    std::vector<Ready> readies;
    uint64_t elected_tick = 0;
  };

  Fate FateOf(const paxospb::Message& message) const {
    if (isolated_.count(message.from()) || isolated_.count(message.to()) ||
        cut_.count({message.from(), message.to()})) {
      return Fate::kDrop;
    }
    return filter_ ? filter_(message) : Fate::kDeliver;
  }

  bool EveryoneFollows(uint32_t leader) {
    for (auto& [id, peer] : peers_) {
      if (id == leader || isolated_.count(id) || cut_.count({leader, id})) {
        continue;
      }
      if (peer.replica->role() != Role::kFollower ||
          peer.replica->LeaderHint() != leader) {
        return false;
      }
    }
    return true;
  }

  // Safety: every replica hands out the same value for a slot.
  void CheckAgreement(uint32_t id, const paxospb::Entry& entry) {
    auto [it, inserted] =
        chosen_.emplace(entry.slot(), Commands(entry.value()));
    if (!inserted) {
      EXPECT_EQ(it->second, Commands(entry.value()))
          << "replica " << id << " applied a different value in slot "
          << entry.slot();
    }
  }

  void CheckSnapshotAgreement(uint32_t id, uint64_t index,
                              const std::vector<std::string>& commands) {
    std::vector<std::string> expected;
    for (uint64_t slot = 1; slot <= index; ++slot) {
      auto it = chosen_.find(slot);
      if (it == chosen_.end()) return;  // Not every slot is known here.
      expected.insert(expected.end(), it->second.begin(), it->second.end());
    }
    EXPECT_EQ(commands, expected)
        << "replica " << id << " installed a snapshot at " << index
        << " that disagrees with the chosen slots";
  }

  // Safety of leases (all clocks run at the same rate here): at most one
  // replica holds a lease at any moment.
  void CheckLeases() {
    std::vector<uint32_t> holders;
    for (auto& [id, peer] : peers_) {
      if (peer.replica->HasLease()) holders.push_back(id);
    }
    EXPECT_LE(holders.size(), 1u) << "several replicas hold a lease at once: "
                                  << ::testing::PrintToString(holders);
  }

  std::map<uint32_t, Peer> peers_;
  std::deque<paxospb::Message> queue_;
  std::vector<paxospb::Message> held_;
  std::set<uint32_t> isolated_;
  std::set<std::pair<uint32_t, uint32_t>> cut_;
  std::function<Fate(const paxospb::Message&)> filter_;
  std::map<uint64_t, std::vector<std::string>> chosen_;
  // (leader, acceptor, packed ballot) -> newest sent_tick acknowledged.
  std::map<std::tuple<uint32_t, uint32_t, uint64_t>, uint64_t> acked_sent_tick_;
};

// ===========================================================================
// 1. Acceptor rules.

// Acceptor 3 of five. After setup it is recovered, has accepted slots 1..3 at
// ballot 5.4 from leader 4 (commit 0), and that leader's lease has lapsed.
constexpr uint32_t kAcceptorId = 3;

std::unique_ptr<Node> SetUpAcceptor() {
  auto node = std::make_unique<Node>(TestConfig(kAcceptorId, Members(5)));
  node->TickN(kLeaseTicks);
  const paxospb::Ballot ballot = MakeBallot(5, 4);
  node->Receive(
      AcceptMessage(4, kAcceptorId, ballot,
                    {MakeEntry(1, ballot, {"a"}), MakeEntry(2, ballot, {"b"}),
                     MakeEntry(3, ballot, {"c", "d"})},
                    /*commit=*/0));
  node->TickN(kLeaseTicks);
  EXPECT_EQ(B(node->replica().promised()), "5.4");
  EXPECT_EQ(node->replica().role(), Role::kFollower);
  return node;
}

struct PrepareCase {
  std::string name;
  uint32_t from;
  uint64_t round;
  bool promises;
};

class AcceptorPrepareTest : public ::testing::TestWithParam<PrepareCase> {};

TEST_P(AcceptorPrepareTest, PromisesOnlyAtOrAbovePromisedBallot) {
  const PrepareCase& test = GetParam();
  std::unique_ptr<Node> node = SetUpAcceptor();
  const paxospb::Ballot ballot = MakeBallot(test.round, test.from);
  node->replica().Step(
      PrepareMessage(test.from, kAcceptorId, ballot, /*first_unchosen=*/2));
  // The promise and the durable promised ballot travel in the same Ready,
  // so a driver that persists before sending never promises unsaved.
  const Ready ready = node->Cycle();
  EXPECT_FALSE(node->replica().HasReady());
  ASSERT_THAT(ready.messages, SizeIs(1));
  const paxospb::Message& reply = ready.messages[0];
  EXPECT_EQ(reply.to(), test.from);

  if (!test.promises) {
    ASSERT_TRUE(reply.has_reject()) << reply.DebugString();
    EXPECT_EQ(reply.reject().reason(), paxospb::Reject::HIGHER_BALLOT);
    EXPECT_EQ(B(reply.reject().promised()), "5.4");
    EXPECT_EQ(B(reply.reject().refused()), B(ballot));
    EXPECT_FALSE(ready.persist.hard_state.has_value());
    EXPECT_EQ(B(node->replica().promised()), "5.4");
    return;
  }
  ASSERT_TRUE(reply.has_promise()) << reply.DebugString();
  EXPECT_EQ(B(reply.promise().ballot()), B(ballot));
  // Entries at or above first_unchosen, with the ballot they were accepted
  // at.
  EXPECT_THAT(
      Summarize(reply.promise().entries()),
      ElementsAre(Pair(2, ElementsAre("b")), Pair(3, ElementsAre("c", "d"))));
  for (const paxospb::Entry& entry : reply.promise().entries()) {
    EXPECT_EQ(B(entry.ballot()), "5.4");
    EXPECT_FALSE(entry.chosen());
  }
  EXPECT_EQ(B(node->replica().promised()), B(ballot));
  if (BallotEqual(ballot, MakeBallot(5, 4))) {
    // Re-promising the same ballot changes nothing durable.
    EXPECT_FALSE(ready.persist.hard_state.has_value());
  } else {
    ASSERT_TRUE(ready.persist.hard_state.has_value());
    EXPECT_EQ(B(ready.persist.hard_state->promised()), B(ballot));
  }
  EXPECT_EQ(B(node->storage().durable().hard_state.promised()), B(ballot));
}

INSTANTIATE_TEST_SUITE_P(
    Ballots, AcceptorPrepareTest,
    ::testing::Values(PrepareCase{"LowerRound", 5, 4, false},
                      PrepareCase{"SameRoundLowerId", 1, 5, false},
                      PrepareCase{"Equal", 4, 5, true},
                      PrepareCase{"SameRoundHigherId", 5, 5, true},
                      PrepareCase{"HigherRound", 1, 6, true}),
    [](const ::testing::TestParamInfo<PrepareCase>& info) {
      return info.param.name;
    });

struct AcceptCase {
  std::string name;
  uint32_t from;
  uint64_t round;
  bool accepts;
};

class AcceptorAcceptTest : public ::testing::TestWithParam<AcceptCase> {};

TEST_P(AcceptorAcceptTest, AcceptsOnlyAtOrAbovePromisedBallot) {
  const AcceptCase& test = GetParam();
  std::unique_ptr<Node> node = SetUpAcceptor();
  const paxospb::Ballot ballot = MakeBallot(test.round, test.from);
  node->replica().Step(AcceptMessage(
      test.from, kAcceptorId, ballot,
      {MakeEntry(2, ballot, {"new2"}), MakeEntry(4, ballot, {"new4"})},
      /*commit=*/0, /*sent_tick=*/77));
  const Ready ready = node->Cycle();
  ASSERT_THAT(ready.messages, SizeIs(1));
  const paxospb::Message& reply = ready.messages[0];
  EXPECT_EQ(reply.to(), test.from);
  const std::map<uint64_t, paxospb::Entry>& stored =
      node->storage().durable().entries;

  if (!test.accepts) {
    ASSERT_TRUE(reply.has_reject()) << reply.DebugString();
    EXPECT_EQ(reply.reject().reason(), paxospb::Reject::HIGHER_BALLOT);
    EXPECT_EQ(B(reply.reject().promised()), "5.4");
    EXPECT_EQ(B(reply.reject().refused()), B(ballot));
    EXPECT_TRUE(ready.persist.empty());
    EXPECT_THAT(Summarize(stored), ElementsAre(Pair(1, ElementsAre("a")),
                                               Pair(2, ElementsAre("b")),
                                               Pair(3, ElementsAre("c", "d"))));
    EXPECT_EQ(B(node->replica().promised()), "5.4");
    return;
  }
  ASSERT_TRUE(reply.has_accepted()) << reply.DebugString();
  EXPECT_EQ(B(reply.accepted().ballot()), B(ballot));
  EXPECT_THAT(reply.accepted().slots(), ElementsAre(2, 4));
  EXPECT_EQ(reply.accepted().sent_tick(), 77u);
  // The accepted values are in the same Ready as the reply.
  EXPECT_THAT(
      Summarize(ready.persist.entries),
      ElementsAre(Pair(2, ElementsAre("new2")), Pair(4, ElementsAre("new4"))));
  for (const paxospb::Entry& entry : ready.persist.entries) {
    EXPECT_EQ(B(entry.ballot()), B(ballot));
  }
  EXPECT_THAT(Summarize(stored), ElementsAre(Pair(1, ElementsAre("a")),
                                             Pair(2, ElementsAre("new2")),
                                             Pair(3, ElementsAre("c", "d")),
                                             Pair(4, ElementsAre("new4"))));
  EXPECT_EQ(B(node->replica().promised()), B(ballot));
  EXPECT_EQ(B(node->storage().durable().hard_state.promised()), B(ballot));
  EXPECT_EQ(node->replica().LeaderHint(), test.from);
}

INSTANTIATE_TEST_SUITE_P(
    Ballots, AcceptorAcceptTest,
    ::testing::Values(AcceptCase{"LowerRound", 5, 4, false},
                      AcceptCase{"SameRoundLowerId", 1, 5, false},
                      AcceptCase{"Equal", 4, 5, true},
                      AcceptCase{"HigherRound", 2, 6, true}),
    [](const ::testing::TestParamInfo<AcceptCase>& info) {
      return info.param.name;
    });

TEST(AcceptorTest, PromisedBallotNeverDecreasesAndIsDurableBeforeReplies) {
  Node node(TestConfig(kAcceptorId, Members(5)));
  node.TickN(kLeaseTicks);
  Random random(42);
  const std::vector<uint32_t> peers = {1, 2, 4, 5};
  paxospb::Ballot previous;
  int promises = 0;
  int accepts = 0;
  int rejects = 0;
  for (int step = 0; step < 400; ++step) {
    const uint32_t from = peers[random.Uniform(peers.size())];
    const paxospb::Ballot ballot = MakeBallot(random.Range(1, 12), from);
    const uint64_t slot = random.Range(1, 6);
    if (random.Bernoulli(0.5)) {
      node.replica().Step(PrepareMessage(from, kAcceptorId, ballot, 1));
    } else {
      node.replica().Step(AcceptMessage(
          from, kAcceptorId, ballot,
          {MakeEntry(slot, ballot, {absl::StrCat("v", step)})}, 0));
    }
    const Ready ready = node.Cycle();
    const paxospb::Ballot& promised = node.replica().promised();
    EXPECT_FALSE(BallotLess(promised, previous))
        << B(previous) << " -> " << B(promised) << " at step " << step;
    previous = promised;
    // Whatever the replies claim is durable once the Ready is saved.
    EXPECT_EQ(B(node.storage().durable().hard_state.promised()), B(promised));
    for (const paxospb::Message& reply : ready.messages) {
      if (reply.has_promise()) {
        ++promises;
        EXPECT_EQ(B(reply.promise().ballot()), B(promised));
      } else if (reply.has_accepted()) {
        ++accepts;
        EXPECT_EQ(B(reply.accepted().ballot()), B(promised));
        for (uint64_t accepted_slot : reply.accepted().slots()) {
          const paxospb::Entry& entry =
              node.storage().durable().entries.at(accepted_slot);
          EXPECT_EQ(B(entry.ballot()), B(ballot));
        }
      } else if (reply.has_reject()) {
        ++rejects;
        if (reply.reject().reason() == paxospb::Reject::HIGHER_BALLOT) {
          EXPECT_TRUE(BallotLess(reply.reject().refused(), promised));
          EXPECT_EQ(B(reply.reject().promised()), B(promised));
        }
      }
    }
    if (random.Bernoulli(0.3)) node.TickN(static_cast<int>(random.Range(1, 4)));
  }
  // The walk exercised every kind of answer.
  EXPECT_GT(promises, 0);
  EXPECT_GT(accepts, 0);
  EXPECT_GT(rejects, 0);
}

struct RefusalCase {
  std::string name;
  // Durable state of the acceptor (replica 2 of 3).
  uint64_t snapshot_index;
  uint64_t commit;
  uint64_t max_candidate_lag_slots;
  // The candidate's first unchosen slot.
  uint64_t first_unchosen;
  paxospb::Reject::Reason reason;  // REASON_UNSPECIFIED: it grants.
};

class AcceptorRefusalTest : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(AcceptorRefusalTest, RefusesCandidatesThatAreBehind) {
  const RefusalCase& test = GetParam();
  Config config = TestConfig(2, Members(3));
  config.max_candidate_lag_slots = test.max_candidate_lag_slots;
  DurableState state;
  state.hard_state.set_commit(test.commit);
  if (test.snapshot_index > 0) {
    paxospb::Snapshot snapshot;
    snapshot.set_index(test.snapshot_index);
    state.snapshot = snapshot;
  }
  for (uint64_t slot = test.snapshot_index + 1; slot <= test.commit; ++slot) {
    state.entries[slot] = MakeEntry(slot, MakeBallot(1, 1), {"x"}, true);
  }
  Node node(config, state);
  node.Drain();
  node.TickN(kLeaseTicks);
  for (bool prepare : {false, true}) {
    SCOPED_TRACE(prepare ? "prepare" : "probe");
    const std::vector<paxospb::Message> replies = node.Receive(
        prepare ? PrepareMessage(3, 2, MakeBallot(7, 3), test.first_unchosen)
                : ProbeMessage(3, 2, test.first_unchosen));
    ASSERT_THAT(replies, SizeIs(1));
    if (test.reason == paxospb::Reject::REASON_UNSPECIFIED) {
      EXPECT_TRUE(prepare ? replies[0].has_promise()
                          : replies[0].has_probe_grant())
          << replies[0].DebugString();
    } else {
      ASSERT_TRUE(replies[0].has_reject()) << replies[0].DebugString();
      EXPECT_EQ(replies[0].reject().reason(), test.reason);
      EXPECT_EQ(replies[0].reject().commit(), test.commit);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AcceptorRefusalTest,
    ::testing::Values(RefusalCase{"UpToDate", 0, 5, 4096, 6,
                                  paxospb::Reject::REASON_UNSPECIFIED},
                      RefusalCase{"SlightlyBehind", 0, 5, 4096, 2,
                                  paxospb::Reject::REASON_UNSPECIFIED},
                      RefusalCase{"BehindTheSnapshot", 4, 5, 4096, 4,
                                  paxospb::Reject::BEHIND},
                      RefusalCase{"JustAfterTheSnapshot", 4, 5, 4096, 5,
                                  paxospb::Reject::REASON_UNSPECIFIED},
                      // BEHIND once commit - first_unchosen reaches the limit.
                      RefusalCase{"LagAtTheLimit", 0, 10, 5, 5,
                                  paxospb::Reject::BEHIND},
                      RefusalCase{"LagBelowTheLimit", 0, 10, 5, 6,
                                  paxospb::Reject::REASON_UNSPECIFIED}),
    [](const ::testing::TestParamInfo<RefusalCase>& info) {
      return info.param.name;
    });

TEST(CandidateTest, FetchesWhenRefusedAsBehind) {
  Node node(TestConfig(1, Members(3)));
  // Run until replica 1 probes.
  for (int i = 0;
       i < 2 * kElectionTicks && node.replica().role() != Role::kCandidate;
       ++i) {
    node.TickN(1);
  }
  ASSERT_EQ(node.replica().role(), Role::kCandidate);
  paxospb::Message reject = Envelope(2, 1);
  reject.mutable_reject()->set_reason(paxospb::Reject::BEHIND);
  reject.mutable_reject()->set_commit(40);
  const std::vector<paxospb::Message> sent = node.Receive(reject);
  const std::vector<paxospb::Message> fetches =
      OfKind(sent, paxospb::Message::kFetchRequest, 2);
  ASSERT_THAT(fetches, SizeIs(1));
  EXPECT_EQ(fetches[0].fetch_request().from_slot(), 1u);
}

// An acceptor promised a candidate, the promise was lost, and then the
// acceptor learned that a slot it had reported is chosen and dropped it from
// its log (installed a snapshot, or compacted). When the candidate re-sends
// the same prepare, the acceptor must not promise again without that slot:
// it must report it or refuse (BEHIND), like it refuses a new ballot whose
// first_unchosen is below its snapshot.
//
// CORE BUG: HandlePrepare() answers a prepare of the ballot it already
// promised without RefusalReason(), and the promise lists only entries still
// in the log, so the re-promise silently omits the chosen slot.
enum class Forget { kInstallSnapshot, kCompact };

class RepromiseTest : public ::testing::TestWithParam<Forget> {};

TEST_P(RepromiseTest, RepromiseAfterForgettingAChosenSlotReportsItOrRefuses) {
  Node node(TestConfig(1, Members(3)));
  node.TickN(kLeaseTicks);
  const paxospb::Ballot old_ballot = MakeBallot(1, 3);
  node.Receive(
      AcceptMessage(3, 1, old_ballot, {MakeEntry(1, old_ballot, {"v"})}, 0));
  node.TickN(kLeaseTicks);
  const paxospb::Ballot candidate = MakeBallot(2, 2);
  const std::vector<paxospb::Message> first =
      node.Receive(PrepareMessage(2, 1, candidate, /*first_unchosen=*/1));
  ASSERT_THAT(first, SizeIs(1));
  ASSERT_TRUE(first[0].has_promise());
  EXPECT_THAT(Summarize(first[0].promise().entries()),
              ElementsAre(Pair(1, ElementsAre("v"))));

  // That promise is lost. Replica 3 (which chose slot 1 and compacted it)
  // refuses a probe as BEHIND, so replica 1 fetches and learns slot 1.
  paxospb::Message behind = Envelope(3, 1);
  behind.mutable_reject()->set_reason(paxospb::Reject::BEHIND);
  behind.mutable_reject()->set_commit(1);
  ASSERT_THAT(OfKind(node.Receive(behind), paxospb::Message::kFetchRequest, 3),
              SizeIs(1));
  paxospb::Message reply = Envelope(3, 1);
  reply.mutable_fetch_reply()->set_commit(1);
  if (GetParam() == Forget::kInstallSnapshot) {
    reply.mutable_fetch_reply()->mutable_snapshot()->set_index(1);
    reply.mutable_fetch_reply()->mutable_snapshot()->set_data(
        EncodeSnapshot({"v"}));
    node.Receive(reply);
  } else {
    *reply.mutable_fetch_reply()->add_entries() =
        MakeEntry(1, old_ballot, {"v"}, true);
    node.Receive(reply);
    ASSERT_EQ(node.replica().emitted(), 1u);
    ASSERT_TRUE(node.replica().Compact(1, EncodeSnapshot({"v"})).ok());
    node.Drain();
  }
  ASSERT_EQ(node.replica().commit(), 1u);
  ASSERT_EQ(node.replica().snapshot_index(), 1u);
  ASSERT_EQ(B(node.replica().promised()), B(candidate));

  // The candidate re-sends its prepare.
  const std::vector<paxospb::Message> again =
      node.Receive(PrepareMessage(2, 1, candidate, /*first_unchosen=*/1));
  ASSERT_THAT(again, SizeIs(1));
  if (again[0].has_promise()) {
    EXPECT_THAT(Summarize(again[0].promise().entries()),
                ::testing::Contains(Pair(1, ElementsAre("v"))))
        << "the re-promise omits chosen slot 1, so the candidate would fill "
           "it with a no-op or a new command";
  } else {
    ASSERT_TRUE(again[0].has_reject()) << again[0].DebugString();
    EXPECT_EQ(again[0].reject().reason(), paxospb::Reject::BEHIND);
  }
}

INSTANTIATE_TEST_SUITE_P(Ways, RepromiseTest,
                         ::testing::Values(Forget::kInstallSnapshot,
                                           Forget::kCompact),
                         [](const ::testing::TestParamInfo<Forget>& info) {
                           return info.param == Forget::kInstallSnapshot
                                      ? "InstallSnapshot"
                                      : "Compact";
                         });

// The same scenario end to end: slot 1 is chosen as "v" by replicas 3 and 1;
// candidate 2 loses replica 1's first promise, replica 1 then installs 3's
// snapshot, and replica 2's re-sent prepare makes it leader. Whoever leads,
// slot 1 must stay "v" on every replica.
//
// CORE BUG (same root cause as RepromiseTest): replica 2 leads without
// knowing slot 1, proposes "w" there, and replica 1 acknowledges it without
// storing it because slot 1 is at or below its commit point. Replicas 1 and
// 3 applied "v" in slot 1, replica 2 applies "w".
TEST(SafetyTest, ChosenSlotSurvivesARepromiseAfterSnapshotInstall) {
  Cluster cluster(3);
  cluster.TickAll(kLeaseTicks);
  // Replica 3 leads with replica 1; replica 2 cannot reach replica 3.
  cluster.Cut(2, 3);
  ASSERT_TRUE(cluster.Campaign(3));
  ASSERT_TRUE(cluster.replica(3).Propose("v").ok());
  cluster.Process(3);
  cluster.Deliver();
  ASSERT_EQ(cluster.replica(3).commit(), 1u);
  ASSERT_EQ(cluster.replica(1).commit(), 0u);  // No heartbeat since.
  ASSERT_TRUE(cluster.Compact(3).ok());

  // Replica 3 falls silent; once its lease lapsed at replica 1, replica 2
  // campaigns, and replica 1's promise to it is lost.
  cluster.Cut(1, 3);
  for (int i = 0; i < kLeaseTicks; ++i) cluster.Tick(1);
  cluster.SetFilter([](const paxospb::Message& message) {
    return message.from() == 1 && message.to() == 2 && message.has_promise()
               ? Cluster::Fate::kDrop
               : Cluster::Fate::kDeliver;
  });
  for (int i = 0; i < 10 * kElectionTicks &&
                  cluster.replica(1).promised().replica_id() != 2;
       ++i) {
    cluster.Tick(2);
  }
  ASSERT_EQ(cluster.replica(1).promised().replica_id(), 2u);
  ASSERT_EQ(cluster.replica(2).role(), Role::kCandidate);
  const std::string promised = B(cluster.replica(1).promised());
  cluster.SetFilter(nullptr);

  // Replica 1 meets replica 3 again (but not replica 2): 3 steps down on
  // its refusal, and 1, probing, is told it is BEHIND and installs 3's
  // snapshot. Its promise is unchanged.
  cluster.Cut(1, 2);
  cluster.Uncut(1, 3);
  for (int i = 0; i < kHeartbeatTicks; ++i) cluster.Tick(3);
  ASSERT_NE(cluster.replica(3).role(), Role::kLeader);
  for (int i = 0; i < 2 * kElectionTicks && cluster.replica(1).commit() == 0;
       ++i) {
    cluster.Tick(1);
  }
  ASSERT_EQ(cluster.replica(1).snapshot_index(), 1u);
  ASSERT_EQ(cluster.state_machine(1).commands, std::vector<std::string>{"v"});
  ASSERT_EQ(B(cluster.replica(1).promised()), promised);

  // Replica 2 re-sends its prepare to replica 1 (and only to it).
  cluster.Uncut(1, 2);
  for (int i = 0;
       i <= kHeartbeatTicks && cluster.replica(2).role() == Role::kCandidate;
       ++i) {
    cluster.Tick(2);
  }
  // Everyone is connected again; a leader emerges and commits "w".
  cluster.HealAll();
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.ProposeAndCommit(leader, {"w"});
  for (uint32_t id : cluster.ids()) {
    SCOPED_TRACE(absl::StrCat("replica ", id, " (leader ", leader, ")"));
    EXPECT_THAT(cluster.state_machine(id).commands, ElementsAre("v", "w"));
  }
}

// ---------------------------------------------------------------------------
// Proposer rules: quorums always include the proposer itself, and its own
// votes only count once they are durable (delivered by Advance()).

// Ticks `node` until it probes; returns the probes.
std::vector<paxospb::Message> TickUntilProbing(Node& node) {
  for (int i = 0; i < 2 * kElectionTicks; ++i) {
    std::vector<paxospb::Message> probes =
        OfKind(node.TickN(1), paxospb::Message::kProbe);
    if (!probes.empty()) return probes;
  }
  ADD_FAILURE() << "replica never probed";
  return {};
}

TEST(ProposerTest, PreparesOnlyAfterAProbeMajority) {
  Node node(TestConfig(1, Members(3)));
  const std::vector<paxospb::Message> probes = TickUntilProbing(node);
  EXPECT_THAT(Recipients(probes), ElementsAre(2, 3));
  for (const paxospb::Message& probe : probes) {
    EXPECT_EQ(probe.probe().first_unchosen(), 1u);
  }
  EXPECT_EQ(node.replica().role(), Role::kCandidate);
  // A probe persists nothing and raises no ballot.
  EXPECT_EQ(B(node.storage().durable().hard_state.promised()), "0.0");
  // Unanswered probes are re-sent; still no prepare.
  std::vector<paxospb::Message> sent = node.TickN(kHeartbeatTicks);
  EXPECT_THAT(OfKind(sent, paxospb::Message::kPrepare), IsEmpty());
  EXPECT_THAT(Recipients(OfKind(sent, paxospb::Message::kProbe)),
              ElementsAre(2, 3));
  // A refusal does not count.
  paxospb::Message refusal = Envelope(2, 1);
  refusal.mutable_reject()->set_reason(paxospb::Reject::LEADER_ALIVE);
  EXPECT_THAT(OfKind(node.Receive(refusal), paxospb::Message::kPrepare),
              IsEmpty());
  // One grant plus its own make a majority of three.
  sent = node.Receive(ProbeGrantMessage(3, 1));
  const std::vector<paxospb::Message> prepares =
      OfKind(sent, paxospb::Message::kPrepare);
  EXPECT_THAT(Recipients(prepares), ElementsAre(2, 3));
  ASSERT_FALSE(prepares.empty());
  EXPECT_EQ(B(prepares[0].prepare().ballot()), "1.1");
  EXPECT_EQ(B(node.storage().durable().hard_state.promised()), "1.1");
}

TEST(ProposerTest, LeadsOnlyOnceItsOwnPromiseIsDurable) {
  Node node(TestConfig(1, Members(3)));
  TickUntilProbing(node);
  node.replica().Step(ProbeGrantMessage(2, 1));
  // The prepare to itself waits in this Ready's Advance().
  Ready ready = node.replica().GetReady();
  ASSERT_THAT(Recipients(OfKind(ready.messages, paxospb::Message::kPrepare)),
              ElementsAre(2, 3));
  const paxospb::Ballot ballot = MakeBallot(1, 1);
  EXPECT_EQ(B(node.replica().promised()), "0.0");
  // Both peers promise before it has promised itself: no leadership yet.
  node.replica().Step(PromiseMessage(2, 1, ballot, {}));
  node.replica().Step(PromiseMessage(3, 1, ballot, {}));
  EXPECT_EQ(node.replica().role(), Role::kCandidate);
  ASSERT_TRUE(node.storage().Save(ready.persist).ok());
  node.replica().Advance();
  // Its own promise is persisted in the next Ready and delivered by the
  // Advance() after it.
  ready = node.replica().GetReady();
  ASSERT_TRUE(ready.persist.hard_state.has_value());
  EXPECT_EQ(B(ready.persist.hard_state->promised()), "1.1");
  EXPECT_EQ(node.replica().role(), Role::kCandidate);
  ASSERT_TRUE(node.storage().Save(ready.persist).ok());
  node.replica().Advance();
  EXPECT_EQ(node.replica().role(), Role::kLeader);
}

TEST(ProposerTest, CommitsOnlyOnceItsOwnAcceptanceIsDurable) {
  Node node(TestConfig(1, Members(3)));
  TickUntilProbing(node);
  node.Receive(ProbeGrantMessage(2, 1));
  const paxospb::Ballot ballot = MakeBallot(1, 1);
  node.Receive(PromiseMessage(2, 1, ballot, {}));
  ASSERT_EQ(node.replica().role(), Role::kLeader);

  ASSERT_TRUE(node.replica().Propose("x").ok());
  Ready ready = node.replica().GetReady();
  ASSERT_THAT(Recipients(OfKind(ready.messages, paxospb::Message::kAccept)),
              ElementsAre(2, 3));
  // Both peers accept before the leader's own acceptance went through
  // Advance(): a majority without the leader is not enough.
  node.replica().Step(AcceptedMessage(2, 1, ballot, {1}, 0, 0));
  node.replica().Step(AcceptedMessage(3, 1, ballot, {1}, 0, 0));
  EXPECT_EQ(node.replica().commit(), 0u);
  ASSERT_TRUE(node.storage().Save(ready.persist).ok());
  node.replica().Advance();
  EXPECT_EQ(node.replica().commit(), 0u);
  // Its acceptance is saved (with the entry) before it counts.
  ready = node.replica().GetReady();
  EXPECT_THAT(Summarize(ready.persist.entries),
              ElementsAre(Pair(1, ElementsAre("x"))));
  EXPECT_THAT(ready.committed, IsEmpty());
  ASSERT_TRUE(node.storage().Save(ready.persist).ok());
  node.replica().Advance();
  EXPECT_EQ(node.replica().commit(), 1u);
  EXPECT_THAT(Summarize(Node::CommittedBy(node.Drain())),
              ElementsAre(Pair(1, ElementsAre("x"))));
  EXPECT_EQ(node.storage().durable().hard_state.commit(), 1u);
}

// ===========================================================================
// 2. Stickiness (pre-vote) and recovery.

enum class Ask { kProbe, kPrepare };

std::string AskName(Ask ask) {
  return ask == Ask::kProbe ? "Probe" : "Prepare";
}

paxospb::Message Asking(Ask ask, uint32_t from, uint32_t to,
                        const paxospb::Ballot& ballot) {
  return ask == Ask::kProbe ? ProbeMessage(from, to, 1)
                            : PrepareMessage(from, to, ballot, 1);
}

bool Granted(Ask ask, const std::vector<paxospb::Message>& replies) {
  return replies.size() == 1 &&
         (ask == Ask::kProbe ? replies[0].has_probe_grant()
                             : replies[0].has_promise());
}

class StickinessTest : public ::testing::TestWithParam<Ask> {};

TEST_P(StickinessTest, RefusesOtherCandidatesWhileTheLeaderIsAlive) {
  const Ask ask = GetParam();
  Node node(TestConfig(2, Members(3)));
  node.TickN(kLeaseTicks);
  node.Receive(AcceptMessage(1, 2, MakeBallot(1, 1), {}, 0));
  ASSERT_EQ(node.replica().LeaderHint(), 1u);
  const paxospb::Ballot candidate = MakeBallot(2, 3);
  for (int since_contact = 0; since_contact < kLeaseTicks; ++since_contact) {
    SCOPED_TRACE(absl::StrCat(since_contact, " ticks after the heartbeat"));
    const std::vector<paxospb::Message> replies =
        node.Receive(Asking(ask, 3, 2, candidate));
    ASSERT_THAT(replies, SizeIs(1));
    ASSERT_TRUE(replies[0].has_reject()) << replies[0].DebugString();
    EXPECT_EQ(replies[0].reject().reason(), paxospb::Reject::LEADER_ALIVE);
    if (ask == Ask::kPrepare) {
      EXPECT_EQ(B(replies[0].reject().refused()), B(candidate));
    }
    EXPECT_EQ(B(node.replica().promised()), "1.1");
    EXPECT_EQ(node.replica().LeaderHint(), 1u);
    node.TickN(1);
  }
  // lease_ticks after the last contact, the candidate gets its way.
  const std::vector<paxospb::Message> replies =
      node.Receive(Asking(ask, 3, 2, candidate));
  EXPECT_TRUE(Granted(ask, replies))
      << (replies.empty() ? "no reply" : replies[0].DebugString());
  if (ask == Ask::kPrepare) {
    EXPECT_EQ(B(node.replica().promised()), "2.3");
  }
}

TEST_P(StickinessTest, HeartbeatsKeepTheLeaderSticky) {
  const Ask ask = GetParam();
  Node node(TestConfig(2, Members(3)));
  node.TickN(kLeaseTicks);
  for (int tick = 0; tick < 3 * kElectionTicks; ++tick) {
    if (tick % kHeartbeatTicks == 0) {
      node.Receive(AcceptMessage(1, 2, MakeBallot(1, 1), {}, 0));
    }
    const std::vector<paxospb::Message> replies =
        node.Receive(Asking(ask, 3, 2, MakeBallot(2, 3)));
    ASSERT_THAT(replies, SizeIs(1));
    ASSERT_TRUE(replies[0].has_reject());
    EXPECT_EQ(replies[0].reject().reason(), paxospb::Reject::LEADER_ALIVE);
    node.TickN(1);
    // Nor does the follower itself campaign.
    EXPECT_EQ(node.replica().role(), Role::kFollower);
  }
}

TEST_P(StickinessTest, TheLeaderItselfMayCampaignAgain) {
  const Ask ask = GetParam();
  Node node(TestConfig(2, Members(3)));
  node.TickN(kLeaseTicks);
  node.Receive(AcceptMessage(1, 2, MakeBallot(1, 1), {}, 0));
  EXPECT_TRUE(Granted(ask, node.Receive(Asking(ask, 1, 2, MakeBallot(2, 1)))));
}

struct RecoveryCase {
  std::string name;
  Ask ask;
  bool restarted;
};

class RecoveryTest : public ::testing::TestWithParam<RecoveryCase> {};

TEST_P(RecoveryTest, RefusesUntilLeaseTicksAfterStart) {
  const RecoveryCase& test = GetParam();
  DurableState state;
  if (test.restarted) {
    // It had promised replica 1 (which may hold a lease) before the crash.
    *state.hard_state.mutable_promised() = MakeBallot(3, 1);
    state.hard_state.set_commit(1);
    state.entries[1] = MakeEntry(1, MakeBallot(3, 1), {"x"}, true);
  }
  Node node(TestConfig(2, Members(3)), state);
  node.Drain();
  const paxospb::Ballot candidate = MakeBallot(4, 3);
  for (int tick = 0; tick < kLeaseTicks; ++tick) {
    SCOPED_TRACE(absl::StrCat("tick ", tick));
    const std::vector<paxospb::Message> replies =
        node.Receive(Asking(test.ask, 3, 2, candidate));
    ASSERT_THAT(replies, SizeIs(1));
    ASSERT_TRUE(replies[0].has_reject()) << replies[0].DebugString();
    EXPECT_EQ(replies[0].reject().reason(), paxospb::Reject::RECOVERING);
    node.TickN(1);
  }
  EXPECT_TRUE(
      Granted(test.ask, node.Receive(Asking(test.ask, 3, 2, candidate))));
}

INSTANTIATE_TEST_SUITE_P(Asks, StickinessTest,
                         ::testing::Values(Ask::kProbe, Ask::kPrepare),
                         [](const ::testing::TestParamInfo<Ask>& info) {
                           return AskName(info.param);
                         });

INSTANTIATE_TEST_SUITE_P(
    Cases, RecoveryTest,
    ::testing::Values(RecoveryCase{"FreshProbe", Ask::kProbe, false},
                      RecoveryCase{"FreshPrepare", Ask::kPrepare, false},
                      RecoveryCase{"RestartedProbe", Ask::kProbe, true},
                      RecoveryCase{"RestartedPrepare", Ask::kPrepare, true}),
    [](const ::testing::TestParamInfo<RecoveryCase>& info) {
      return info.param.name;
    });

// ===========================================================================
// 3. Election and replication in a cluster.

TEST(ElectionTest, OneLeaderIsElectedAndTheOthersFollow) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  const uint64_t epoch = cluster.replica(leader).epoch();
  EXPECT_NE(epoch, 0u);
  for (uint32_t id : cluster.ids()) {
    SCOPED_TRACE(absl::StrCat("replica ", id));
    const SoftState soft = cluster.replica(id).soft_state();
    EXPECT_EQ(soft.role, id == leader ? Role::kLeader : Role::kFollower);
    EXPECT_EQ(soft.leader_id, leader);
    EXPECT_EQ(soft.epoch, epoch);
    // The last soft state reported in a Ready is the current one.
    std::optional<SoftState> reported;
    for (const Ready& ready : cluster.readies(id)) {
      if (ready.soft_state.has_value()) reported = ready.soft_state;
    }
    ASSERT_TRUE(reported.has_value());
    EXPECT_EQ(*reported, soft);
  }
  // No acceptor promises before it has run for lease_ticks.
  EXPECT_GE(cluster.elected_tick(leader), static_cast<uint64_t>(kLeaseTicks));
}

TEST(ElectionTest, FollowersRedirectProposalsToTheLeader) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  for (uint32_t id : cluster.ids()) {
    if (id == leader) continue;
    const absl::Status status = cluster.replica(id).Propose("x");
    EXPECT_TRUE(absl::IsUnavailable(status)) << status;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(absl::StrCat("the leader is replica ", leader)));
    EXPECT_EQ(cluster.replica(id).LeaderHint(), leader);
  }
}

TEST(ElectionTest, ProposalWithoutAnyLeaderIsUnavailable) {
  Cluster cluster(3);
  const absl::Status status = cluster.replica(1).Propose("x");
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_EQ(cluster.replica(1).LeaderHint(), 0u);
}

TEST(ElectionTest, TheLeaderRefusesOtherCandidates) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  const uint32_t other = leader == 1 ? 2 : 1;
  cluster.Inject(ProbeMessage(other, leader, 1));
  const std::vector<paxospb::Message> rejects =
      OfKind(cluster.readies(leader).back().messages, paxospb::Message::kReject,
             other);
  ASSERT_THAT(rejects, SizeIs(1));
  EXPECT_EQ(rejects[0].reject().reason(), paxospb::Reject::LEADER_ALIVE);
}

TEST(ElectionTest, CommandsCommitEverywhereInProposalOrder) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  std::vector<std::string> proposed;
  for (int round = 0; round < 5; ++round) {
    std::vector<std::string> commands;
    for (int i = 0; i < 3; ++i) {
      commands.push_back(absl::StrCat("cmd-", round, "-", i));
    }
    cluster.ProposeAndCommit(leader, commands);
    proposed.insert(proposed.end(), commands.begin(), commands.end());
  }
  for (uint32_t id : cluster.ids()) {
    SCOPED_TRACE(absl::StrCat("replica ", id));
    EXPECT_EQ(cluster.state_machine(id).commands, proposed);
    EXPECT_EQ(cluster.replica(id).commit(), cluster.replica(leader).commit());
    EXPECT_EQ(cluster.replica(id).emitted(), cluster.replica(id).commit());
  }
  EXPECT_EQ(cluster.replica(leader).inflight_slots(), 0u);
  EXPECT_EQ(cluster.replica(leader).pending_proposals(), 0u);
}

TEST(ElectionTest, SingleReplicaCellElectsItselfAndCommits) {
  Cluster cluster(1);
  ASSERT_EQ(cluster.ElectLeader(), 1u);
  cluster.ProposeAndCommit(1, {"a", "b"});
  EXPECT_THAT(cluster.state_machine(1).commands, ElementsAre("a", "b"));
}

TEST(ElectionTest, ProposalQueueIsBounded) {
  Cluster cluster(3, [](Config& config) {
    config.max_pending_proposals = 3;
    config.max_inflight_slots = 1;
  });
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  Replica& replica = cluster.replica(leader);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(replica.Propose(absl::StrCat("p", i)).ok());
  }
  const absl::Status full = replica.Propose("one too many");
  EXPECT_TRUE(absl::IsResourceExhausted(full)) << full;
  EXPECT_EQ(replica.pending_proposals(), 3u);
  // Once the queue drains into slots, proposals are welcome again.
  cluster.Process(leader);
  cluster.Deliver();
  EXPECT_TRUE(replica.Propose("after").ok());
  cluster.Process(leader);
  cluster.Deliver();
  cluster.TickAll(2 * kHeartbeatTicks);
  for (uint32_t id : cluster.ids()) {
    EXPECT_THAT(cluster.state_machine(id).commands,
                ElementsAre("p0", "p1", "p2", "after"));
  }
}

TEST(ElectionTest, LeaderCutOffFromTheMajorityStepsDownAndIsReplaced) {
  Cluster cluster(3);
  const uint32_t old_leader = cluster.ElectLeader();
  ASSERT_NE(old_leader, 0u);
  cluster.ProposeAndCommit(old_leader, {"before"});
  cluster.Isolate(old_leader);
  // Its proposals can no longer commit; it steps down within an election
  // timeout and the others elect a new leader.
  EXPECT_TRUE(cluster.replica(old_leader).Propose("lost").ok());
  const uint64_t old_epoch = cluster.replica(old_leader).epoch();
  cluster.TickAll(kElectionTicks);
  EXPECT_NE(cluster.replica(old_leader).role(), Role::kLeader);
  const uint32_t new_leader = cluster.ElectLeader();
  ASSERT_NE(new_leader, 0u);
  EXPECT_NE(new_leader, old_leader);
  EXPECT_GT(cluster.replica(new_leader).epoch(), old_epoch);
  cluster.ProposeAndCommit(new_leader, {"after"});
  cluster.HealAll();
  cluster.TickAll(4 * kHeartbeatTicks);
  for (uint32_t id : cluster.ids()) {
    SCOPED_TRACE(absl::StrCat("replica ", id));
    EXPECT_THAT(cluster.state_machine(id).commands,
                ElementsAre("before", "after"));
    EXPECT_EQ(cluster.replica(id).LeaderHint(), new_leader);
  }
}

// ===========================================================================
// 4. and 5. A new leader re-proposes what may have been chosen.

struct TakeoverCase {
  std::string name;
  uint32_t new_leader;
  uint64_t slot;
};

class TakeoverTest : public ::testing::TestWithParam<TakeoverCase> {};

// Replica 3, an old leader, got value V accepted by replica 1 only, then
// vanished. Whoever leads next hears of V from replica 1 (every quorum of
// {1, 2} includes it) and must choose V, not a no-op, in that slot.
TEST_P(TakeoverTest, ValueAcceptedByAMinorityIsReproposed) {
  const TakeoverCase& test = GetParam();
  Cluster cluster(3);
  cluster.TickAll(kLeaseTicks);
  cluster.Isolate(3);
  const paxospb::Ballot old_ballot = MakeBallot(1, 3);
  cluster.Inject(AcceptMessage(3, 1, old_ballot,
                               {MakeEntry(test.slot, old_ballot, {"V"})}, 0));
  ASSERT_EQ(cluster.storage(1).durable().entries.count(test.slot), 1u);
  // Replica 1 waits out replica 3's lease before it promises anyone else.
  for (int i = 0; i < kLeaseTicks; ++i) cluster.Tick(1);
  ASSERT_TRUE(cluster.Campaign(test.new_leader));
  const uint32_t leader = test.new_leader;
  cluster.TickAll(2 * kHeartbeatTicks);

  std::vector<SlotCommands> expected;
  for (uint64_t slot = 1; slot < test.slot; ++slot) {
    expected.emplace_back(slot, std::vector<std::string>{});  // No-ops.
  }
  expected.emplace_back(test.slot, std::vector<std::string>{"V"});
  for (uint32_t id : {1u, 2u}) {
    SCOPED_TRACE(absl::StrCat("replica ", id));
    EXPECT_THAT(cluster.state_machine(id).log, ElementsAreArray(expected));
    EXPECT_EQ(cluster.replica(id).commit(), test.slot);
  }
  // New commands go after the re-proposed slots.
  cluster.ProposeAndCommit(leader, {"W"});
  expected.emplace_back(test.slot + 1, std::vector<std::string>{"W"});
  EXPECT_THAT(cluster.state_machine(leader).log, ElementsAreArray(expected));

  // The old leader comes back and learns the same log.
  cluster.HealAll();
  cluster.TickAll(4 * kHeartbeatTicks);
  EXPECT_THAT(cluster.state_machine(3).log, ElementsAreArray(expected));
  EXPECT_EQ(cluster.replica(3).LeaderHint(), leader);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, TakeoverTest,
    ::testing::Values(TakeoverCase{"OtherReplicaLeadsSlot1", 2, 1},
                      TakeoverCase{"OtherReplicaLeadsSlot3", 2, 3},
                      TakeoverCase{"AcceptorLeadsSlot1", 1, 1},
                      TakeoverCase{"AcceptorLeadsSlot3", 1, 3}),
    [](const ::testing::TestParamInfo<TakeoverCase>& info) {
      return info.param.name;
    });

// Replicas 1 and 2 accepted different values for slot 2 from replica 3 at
// two ballots; the value of the higher ballot must win whoever leads.
class HighestBallotTakeoverTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(HighestBallotTakeoverTest, HigherBallotValueIsChosen) {
  const uint32_t new_leader = GetParam();
  for (bool higher_at_one : {false, true}) {
    SCOPED_TRACE(higher_at_one ? "replica 1 holds the higher ballot"
                               : "replica 2 holds the higher ballot");
    Cluster cluster(3);
    cluster.TickAll(kLeaseTicks);
    cluster.Isolate(3);
    const paxospb::Ballot low = MakeBallot(1, 3);
    const paxospb::Ballot high = MakeBallot(2, 3);
    cluster.Inject(AcceptMessage(3, higher_at_one ? 2 : 1, low,
                                 {MakeEntry(2, low, {"old"})}, 0));
    cluster.Inject(AcceptMessage(3, higher_at_one ? 1 : 2, high,
                                 {MakeEntry(2, high, {"new"})}, 0));
    for (int i = 0; i < kLeaseTicks; ++i) {
      cluster.Tick(1);
      cluster.Tick(2);
    }
    ASSERT_TRUE(cluster.Campaign(new_leader));
    cluster.TickAll(2 * kHeartbeatTicks);
    for (uint32_t id : {1u, 2u}) {
      SCOPED_TRACE(absl::StrCat("replica ", id));
      EXPECT_THAT(cluster.state_machine(id).log,
                  ElementsAre(Pair(1, IsEmpty()), Pair(2, ElementsAre("new"))));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Leaders, HighestBallotTakeoverTest,
                         ::testing::Values(1u, 2u),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return absl::StrCat("Replica", info.param);
                         });

struct MergeCase {
  std::string name;
  // The candidate's own log.
  std::vector<paxospb::Entry> own;
  // What acceptors 2 and 3 report in their promises.
  std::vector<paxospb::Entry> from2;
  std::vector<paxospb::Entry> from3;
  std::vector<SlotCommands> expected;
};

class PromiseMergeTest : public ::testing::TestWithParam<MergeCase> {};

// Drives candidate 1 of five by hand through probe, prepare and promises,
// and checks which value it proposes and finally commits in each slot.
TEST_P(PromiseMergeTest, LeaderReproposesHighestBallotValuePerSlot) {
  const MergeCase& test = GetParam();
  DurableState state;
  // Rounds up to 5 were seen; the candidate will use ballot 6.1.
  *state.hard_state.mutable_promised() = MakeBallot(5, 4);
  for (const paxospb::Entry& entry : test.own)
    state.entries[entry.slot()] = entry;
  Node node(TestConfig(1, Members(5)), state);
  node.Drain();

  std::vector<paxospb::Message> probes;
  for (int i = 0; i < 2 * kElectionTicks && probes.empty(); ++i) {
    probes = OfKind(node.TickN(1), paxospb::Message::kProbe);
  }
  EXPECT_THAT(Recipients(probes), ElementsAre(2, 3, 4, 5));
  ASSERT_EQ(node.replica().role(), Role::kCandidate);
  // Nothing is persisted for a probe.
  EXPECT_EQ(B(node.replica().promised()), "5.4");

  node.replica().Step(ProbeGrantMessage(2, 1));
  EXPECT_FALSE(node.replica().HasReady()) << "two of five is no quorum";
  node.replica().Step(ProbeGrantMessage(3, 1));
  // Phase 1: the prepare to itself is delivered by Advance(), only then is
  // the promise durable.
  const Ready prepare_ready = node.Cycle();
  const std::vector<paxospb::Message> prepares =
      OfKind(prepare_ready.messages, paxospb::Message::kPrepare);
  EXPECT_THAT(Recipients(prepares), ElementsAre(2, 3, 4, 5));
  ASSERT_FALSE(prepares.empty());
  const paxospb::Ballot ballot = prepares[0].prepare().ballot();
  EXPECT_EQ(B(ballot), "6.1");
  EXPECT_EQ(prepares[0].prepare().first_unchosen(), 1u);
  EXPECT_FALSE(prepare_ready.persist.hard_state.has_value());
  const Ready promise_ready = node.Cycle();
  ASSERT_TRUE(promise_ready.persist.hard_state.has_value());
  EXPECT_EQ(B(promise_ready.persist.hard_state->promised()), "6.1");
  node.Drain();
  EXPECT_EQ(node.replica().role(), Role::kCandidate);

  node.replica().Step(PromiseMessage(2, 1, ballot, test.from2));
  EXPECT_EQ(node.replica().role(), Role::kCandidate);
  node.replica().Step(PromiseMessage(3, 1, ballot, test.from3));
  ASSERT_EQ(node.replica().role(), Role::kLeader);
  EXPECT_EQ(node.replica().epoch(), PackBallot(ballot));

  const std::vector<Ready> readies = node.Drain();
  // Every peer is asked to accept the merged log.
  const std::vector<paxospb::Message> accepts =
      OfKind(Node::SentBy(readies), paxospb::Message::kAccept);
  EXPECT_THAT(Recipients(accepts), ElementsAre(2, 3, 4, 5));
  for (const paxospb::Message& accept : accepts) {
    EXPECT_EQ(B(accept.accept().ballot()), "6.1");
    EXPECT_THAT(Summarize(accept.accept().entries()),
                ElementsAreArray(test.expected));
  }
  // And it accepted them itself, at its own ballot.
  std::vector<SlotCommands> own_log;
  for (const auto& [slot, entry] : node.storage().durable().entries) {
    EXPECT_EQ(B(entry.ballot()), "6.1") << "slot " << slot;
    own_log.emplace_back(slot, Commands(entry.value()));
  }
  EXPECT_THAT(own_log, ElementsAreArray(test.expected));
  EXPECT_EQ(node.replica().inflight_slots(), test.expected.size());

  // Two acceptances besides its own choose them all.
  std::vector<uint64_t> slots;
  for (const SlotCommands& slot : test.expected) slots.push_back(slot.first);
  node.replica().Step(AcceptedMessage(2, 1, ballot, slots, 0, 0));
  EXPECT_EQ(node.replica().commit(), 0u);
  node.replica().Step(AcceptedMessage(3, 1, ballot, slots, 0, 0));
  const std::vector<paxospb::Entry> committed = Node::CommittedBy(node.Drain());
  EXPECT_THAT(Summarize(committed), ElementsAreArray(test.expected));
  EXPECT_EQ(node.replica().commit(), test.expected.size());
  EXPECT_EQ(node.storage().durable().hard_state.commit(), test.expected.size());
}

std::vector<MergeCase> MergeCases() {
  const auto e = [](uint64_t slot, uint64_t round, uint32_t id,
                    const std::string& value) {
    return MakeEntry(slot, MakeBallot(round, id), {value});
  };
  const auto s = [](uint64_t slot, std::vector<std::string> commands) {
    return SlotCommands(slot, std::move(commands));
  };
  return {
      {"NothingAccepted", {}, {}, {}, {}},
      {"HigherRoundFromThree",
       {},
       {e(1, 2, 4, "low")},
       {e(1, 4, 5, "high")},
       {s(1, {"high"})}},
      {"HigherRoundFromTwo",
       {},
       {e(1, 4, 5, "high")},
       {e(1, 2, 4, "low")},
       {s(1, {"high"})}},
      {"SameRoundHigherReplicaId",
       {},
       {e(1, 3, 2, "two")},
       {e(1, 3, 4, "four")},
       {s(1, {"four"})}},
      {"OwnEntryLosesToHigherBallot",
       {e(1, 2, 1, "mine")},
       {e(1, 3, 5, "theirs")},
       {},
       {s(1, {"theirs"})}},
      {"OwnEntryWinsWithHigherBallot",
       {e(1, 4, 1, "mine")},
       {e(1, 3, 5, "theirs")},
       {},
       {s(1, {"mine"})}},
      {"HolesBecomeNoOps",
       {},
       {e(3, 2, 4, "x")},
       {e(1, 1, 2, "y")},
       {s(1, {"y"}), s(2, {}), s(3, {"x"})}},
      {"ChosenEntryIsKept",
       {},
       {MakeEntry(1, MakeBallot(2, 4), {"c"}, true)},
       {e(2, 3, 5, "z")},
       {s(1, {"c"}), s(2, {"z"})}},
  };
}

INSTANTIATE_TEST_SUITE_P(Cases, PromiseMergeTest,
                         ::testing::ValuesIn(MergeCases()),
                         [](const ::testing::TestParamInfo<MergeCase>& info) {
                           return info.param.name;
                         });

// ===========================================================================
// 6. Batching and pipelining.

struct BatchCase {
  std::string name;
  int max_batch_commands;
  size_t max_batch_bytes;
  int commands;
  size_t command_bytes;
  std::vector<size_t> expected_slot_sizes;
};

class BatchingTest : public ::testing::TestWithParam<BatchCase> {};

TEST_P(BatchingTest, ProposalsMadeTogetherShareSlots) {
  const BatchCase& test = GetParam();
  Cluster cluster(3, [&](Config& config) {
    config.max_batch_commands = test.max_batch_commands;
    config.max_batch_bytes = test.max_batch_bytes;
  });
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  std::vector<std::string> proposed;
  for (int i = 0; i < test.commands; ++i) {
    std::string command = absl::StrCat(i, ":");
    command.resize(test.command_bytes, '.');
    proposed.push_back(command);
    ASSERT_TRUE(cluster.replica(leader).Propose(command).ok());
  }
  cluster.Process(leader);
  cluster.Deliver();
  cluster.TickAll(2 * kHeartbeatTicks);
  for (uint32_t id : cluster.ids()) {
    SCOPED_TRACE(absl::StrCat("replica ", id));
    const StateMachine& machine = cluster.state_machine(id);
    EXPECT_EQ(machine.commands, proposed);
    std::vector<size_t> sizes;
    for (const auto& [slot, commands] : machine.log) {
      sizes.push_back(commands.size());
    }
    EXPECT_EQ(sizes, test.expected_slot_sizes);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BatchingTest,
    ::testing::Values(
        BatchCase{"ByCount", 64, 1 << 20, 200, 8, {64, 64, 64, 8}},
        BatchCase{"ExactMultiple", 64, 1 << 20, 128, 8, {64, 64}},
        BatchCase{"ByBytes", 1024, 10, 5, 4, {2, 2, 1}},
        BatchCase{
            "CommandOfExactlyTheLimitFillsASlot", 1024, 10, 2, 10, {1, 1}}),
    [](const ::testing::TestParamInfo<BatchCase>& info) {
      return info.param.name;
    });

TEST(BatchingTest, CommandLargerThanABatchIsRefused) {
  Cluster cluster(3, [](Config& config) { config.max_batch_bytes = 10; });
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  const absl::Status status =
      cluster.replica(leader).Propose(std::string(11, 'x'));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("max_batch_bytes"));
  EXPECT_EQ(cluster.replica(leader).pending_proposals(), 0u);
}

TEST(PipeliningTest, ProposalsWaitForAFreeSlotAndThenShareIt) {
  Cluster cluster(3, [](Config& config) { config.max_inflight_slots = 1; });
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  Replica& replica = cluster.replica(leader);
  // Hold every acceptance so that the first slot stays in flight.
  cluster.SetFilter([](const paxospb::Message& message) {
    return message.has_accepted() ? Cluster::Fate::kHold
                                  : Cluster::Fate::kDeliver;
  });
  ASSERT_TRUE(replica.Propose("a").ok());
  cluster.Process(leader);
  cluster.Deliver();
  EXPECT_EQ(replica.inflight_slots(), 1u);
  ASSERT_TRUE(replica.Propose("b").ok());
  ASSERT_TRUE(replica.Propose("c").ok());
  cluster.Process(leader);
  cluster.Deliver();
  EXPECT_EQ(replica.inflight_slots(), 1u);
  EXPECT_EQ(replica.pending_proposals(), 2u);
  EXPECT_GT(cluster.held(), 0u);

  cluster.SetFilter(nullptr);
  cluster.Release();
  cluster.TickAll(2 * kHeartbeatTicks);
  EXPECT_EQ(replica.inflight_slots(), 0u);
  EXPECT_EQ(replica.pending_proposals(), 0u);
  for (uint32_t id : cluster.ids()) {
    SCOPED_TRACE(absl::StrCat("replica ", id));
    EXPECT_THAT(
        cluster.state_machine(id).log,
        ElementsAre(Pair(1, ElementsAre("a")), Pair(2, ElementsAre("b", "c"))));
  }
}

TEST(PipeliningTest, SeveralSlotsInFlightAtOnce) {
  Cluster cluster(3, [](Config& config) {
    config.max_inflight_slots = 3;
    config.max_batch_commands = 1;
  });
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  Replica& replica = cluster.replica(leader);
  cluster.SetFilter([](const paxospb::Message& message) {
    return message.has_accepted() ? Cluster::Fate::kHold
                                  : Cluster::Fate::kDeliver;
  });
  for (const char* command : {"a", "b", "c", "d", "e"}) {
    ASSERT_TRUE(replica.Propose(command).ok());
  }
  cluster.Process(leader);
  cluster.Deliver();
  EXPECT_EQ(replica.inflight_slots(), 3u);
  EXPECT_EQ(replica.pending_proposals(), 2u);
  cluster.SetFilter(nullptr);
  cluster.Release();
  cluster.TickAll(2 * kHeartbeatTicks);
  EXPECT_THAT(cluster.state_machine(leader).commands,
              ElementsAre("a", "b", "c", "d", "e"));
  EXPECT_THAT(cluster.state_machine(leader).log, SizeIs(5));
}

// ===========================================================================
// 7. Snapshots and log compaction.

TEST(SnapshotTest, CompactTruncatesTheLogAndRejectsBadIndexes) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  for (const char* command : {"a", "b", "c", "d", "e"}) {
    cluster.ProposeAndCommit(leader, {command});
  }
  Replica& replica = cluster.replica(leader);
  ASSERT_EQ(replica.emitted(), 5u);

  const absl::Status too_high = replica.Compact(6, "x");
  EXPECT_TRUE(absl::IsInvalidArgument(too_high)) << too_high;
  EXPECT_FALSE(replica.HasReady());

  ASSERT_TRUE(replica.Compact(3, EncodeSnapshot({"a", "b", "c"})).ok());
  EXPECT_EQ(replica.snapshot_index(), 3u);
  ASSERT_TRUE(replica.HasReady());
  const Ready ready = replica.GetReady();
  ASSERT_TRUE(ready.persist.snapshot.has_value());
  EXPECT_EQ(ready.persist.snapshot->index(), 3u);
  EXPECT_THAT(DecodeSnapshot(ready.persist.snapshot->data()),
              ElementsAre("a", "b", "c"));
  // The state machine already holds what it snapshotted.
  EXPECT_FALSE(ready.install_snapshot.has_value());
  EXPECT_THAT(ready.committed, IsEmpty());
  ASSERT_TRUE(cluster.storage(leader).Save(ready.persist).ok());
  replica.Advance();
  EXPECT_THAT(
      Summarize(cluster.storage(leader).durable().entries),
      ElementsAre(Pair(4, ElementsAre("d")), Pair(5, ElementsAre("e"))));

  for (uint64_t index : {1u, 3u}) {
    const absl::Status stale = replica.Compact(index, "x");
    EXPECT_TRUE(absl::IsInvalidArgument(stale)) << index << ": " << stale;
  }
  EXPECT_TRUE(
      replica.Compact(5, EncodeSnapshot({"a", "b", "c", "d", "e"})).ok());
  cluster.Process(leader);
  EXPECT_THAT(cluster.storage(leader).durable().entries, IsEmpty());
  EXPECT_EQ(cluster.storage(leader).durable().snapshot->index(), 5u);
}

TEST(SnapshotTest, CompactBeyondWhatWasHandedOutIsRejected) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  Replica& replica = cluster.replica(leader);
  // Nothing was handed out yet.
  EXPECT_TRUE(absl::IsInvalidArgument(replica.Compact(1, "x")));
  // Slot 1 is chosen, but not yet handed out in a Ready.
  cluster.SetFilter([leader](const paxospb::Message& message) {
    return message.to() == leader && message.has_accepted()
               ? Cluster::Fate::kHold
               : Cluster::Fate::kDeliver;
  });
  ASSERT_TRUE(replica.Propose("a").ok());
  cluster.Process(leader);
  cluster.Deliver();
  const std::vector<paxospb::Message> acks = cluster.TakeHeld();
  ASSERT_FALSE(acks.empty());
  for (const paxospb::Message& ack : acks) replica.Step(ack);
  ASSERT_EQ(replica.commit(), 1u);
  EXPECT_EQ(replica.emitted(), 0u);
  EXPECT_TRUE(absl::IsInvalidArgument(replica.Compact(1, "x")));
  cluster.Process(leader);
  EXPECT_EQ(replica.emitted(), 1u);
  EXPECT_TRUE(replica.Compact(1, EncodeSnapshot({"a"})).ok());
}

TEST(SnapshotTest, PartitionedFollowerCatchesUpFromASnapshot) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  const uint32_t lagging = leader == 3 ? 2 : 3;
  cluster.ProposeAndCommit(leader, {"a", "b"});
  ASSERT_EQ(cluster.state_machine(lagging).commands,
            std::vector<std::string>({"a", "b"}));
  const uint64_t lagging_commit = cluster.replica(lagging).commit();

  cluster.Isolate(lagging);
  for (const char* command : {"c", "d", "e"}) {
    cluster.ProposeAndCommit(leader, {command});
  }
  ASSERT_TRUE(cluster.Compact(leader).ok());
  const uint64_t snapshot_index = cluster.replica(leader).snapshot_index();
  EXPECT_GT(snapshot_index, lagging_commit + 1);
  cluster.ProposeAndCommit(leader, {"f"});
  EXPECT_EQ(cluster.replica(lagging).commit(), lagging_commit);

  cluster.HealAll();
  cluster.TickAll(4 * kHeartbeatTicks);
  const StateMachine& machine = cluster.state_machine(lagging);
  EXPECT_EQ(machine.snapshots_installed, 1);
  EXPECT_EQ(machine.last_snapshot_index, snapshot_index);
  EXPECT_THAT(machine.commands, ElementsAre("a", "b", "c", "d", "e", "f"));
  EXPECT_EQ(cluster.replica(lagging).commit(),
            cluster.replica(leader).commit());
  EXPECT_EQ(cluster.replica(lagging).snapshot_index(), snapshot_index);
  EXPECT_EQ(cluster.replica(lagging).LeaderHint(), leader);
  // The install arrived in a Ready of its own kind.
  bool installed = false;
  for (const Ready& ready : cluster.readies(lagging)) {
    if (!ready.install_snapshot.has_value()) continue;
    installed = true;
    EXPECT_EQ(ready.install_snapshot->index(), snapshot_index);
    ASSERT_TRUE(ready.persist.snapshot.has_value());
    EXPECT_EQ(ready.persist.snapshot->index(), snapshot_index);
    ASSERT_TRUE(ready.persist.hard_state.has_value());
    EXPECT_GE(ready.persist.hard_state->commit(), snapshot_index);
  }
  EXPECT_TRUE(installed);
  // It keeps up afterwards.
  cluster.ProposeAndCommit(leader, {"g"});
  EXPECT_THAT(cluster.state_machine(lagging).commands,
              ElementsAre("a", "b", "c", "d", "e", "f", "g"));
}

TEST(SnapshotTest, FetchCatchUpIsSplitByMaxEntriesPerMessage) {
  Cluster cluster(3,
                  [](Config& config) { config.max_entries_per_message = 2; });
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  const uint32_t lagging = leader == 3 ? 2 : 3;
  cluster.Isolate(lagging);
  std::vector<std::string> proposed;
  for (int i = 0; i < 7; ++i) {
    proposed.push_back(absl::StrCat("c", i));
    cluster.ProposeAndCommit(leader, {proposed.back()});
  }
  cluster.HealAll();
  cluster.TickAll(4 * kHeartbeatTicks);
  EXPECT_EQ(cluster.state_machine(lagging).commands, proposed);
  for (const Ready& ready : cluster.readies(leader)) {
    for (const paxospb::Message& message : ready.messages) {
      if (message.has_fetch_reply()) {
        EXPECT_LE(message.fetch_reply().entries_size(), 2);
      }
    }
  }
}

// ===========================================================================
// 8. Leases.

TEST(LeaseTest, LeaseStartsLeaseTicksAfterElectionAndOnlyOnTheLeader) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  const uint64_t elected = cluster.elected_tick(leader);
  ASSERT_EQ(cluster.replica(leader).ticks(), elected);
  for (int i = 0; i <= 3 * kLeaseTicks; ++i) {
    const uint64_t now = cluster.replica(leader).ticks();
    SCOPED_TRACE(absl::StrCat("tick ", now, ", elected at ", elected));
    EXPECT_EQ(cluster.replica(leader).HasLease(), now >= elected + kLeaseTicks);
    for (uint32_t id : cluster.ids()) {
      if (id != leader) {
        EXPECT_FALSE(cluster.replica(id).HasLease());
      }
    }
    cluster.TickAll();
  }
}

struct LeaseLossCase {
  std::string name;
  int size;
  // How many followers are cut off from the leader.
  int cut;
  bool keeps_lease;
};

class LeaseLossTest : public ::testing::TestWithParam<LeaseLossCase> {};

TEST_P(LeaseLossTest, LeaseLastsLeaseMinusDriftAfterTheLastMajorityAck) {
  const LeaseLossCase& test = GetParam();
  Cluster cluster(test.size);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.TickAll(kLeaseTicks + 1);
  ASSERT_TRUE(cluster.replica(leader).HasLease());
  int cut = 0;
  for (uint32_t id : cluster.ids()) {
    if (id != leader && cut < test.cut) {
      cluster.Cut(leader, id);
      ++cut;
    }
  }
  const uint64_t cut_tick = cluster.replica(leader).ticks();
  const uint64_t last_ack = cluster.DeliveredQuorumAckTick(leader);
  EXPECT_LE(last_ack, cut_tick);
  EXPECT_GT(last_ack + kHeartbeatTicks, cut_tick);
  if (test.keeps_lease) {
    for (int i = 0; i < 3 * kElectionTicks; ++i) {
      cluster.TickAll();
      ASSERT_TRUE(cluster.replica(leader).HasLease())
          << "at tick " << cluster.replica(leader).ticks();
    }
    return;
  }
  const uint64_t expiry = last_ack + kLeaseTicks - kMaxDriftTicks;
  while (cluster.replica(leader).ticks() < expiry) {
    EXPECT_TRUE(cluster.replica(leader).HasLease())
        << "at tick " << cluster.replica(leader).ticks() << ", expiry "
        << expiry;
    cluster.TickAll();
  }
  EXPECT_FALSE(cluster.replica(leader).HasLease());
  // It keeps leading (without a lease) until an election timeout passed.
  EXPECT_EQ(cluster.replica(leader).role(), Role::kLeader);
  while (cluster.replica(leader).ticks() < last_ack + kElectionTicks) {
    EXPECT_FALSE(cluster.replica(leader).HasLease());
    cluster.TickAll();
  }
  EXPECT_NE(cluster.replica(leader).role(), Role::kLeader);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LeaseLossTest,
    ::testing::Values(LeaseLossCase{"ThreeLoseOne", 3, 1, true},
                      LeaseLossCase{"ThreeLoseTwo", 3, 2, false},
                      LeaseLossCase{"FiveLoseTwo", 5, 2, true},
                      LeaseLossCase{"FiveLoseThree", 5, 3, false}),
    [](const ::testing::TestParamInfo<LeaseLossCase>& info) {
      return info.param.name;
    });

TEST(LeaseTest, NewLeaderHoldsNoLeaseUntilTheOldOneExpired) {
  Cluster cluster(3);
  const uint32_t old_leader = cluster.ElectLeader();
  ASSERT_NE(old_leader, 0u);
  cluster.TickAll(kLeaseTicks + 1);
  ASSERT_TRUE(cluster.replica(old_leader).HasLease());
  cluster.Isolate(old_leader);
  const uint64_t old_lease_end =
      cluster.DeliveredQuorumAckTick(old_leader) + kLeaseTicks - kMaxDriftTicks;
  uint32_t new_leader = 0;
  for (int i = 0; i < 10 * kElectionTicks && new_leader == 0; ++i) {
    cluster.TickAll();
    for (uint32_t id : cluster.ids()) {
      if (id != old_leader && cluster.replica(id).role() == Role::kLeader) {
        new_leader = id;
      }
    }
    // Cluster::TickAll() also checks that no two replicas hold a lease.
  }
  ASSERT_NE(new_leader, 0u);
  const uint64_t elected = cluster.elected_tick(new_leader);
  EXPECT_GE(elected, old_lease_end);
  while (cluster.replica(new_leader).ticks() < elected + kLeaseTicks) {
    EXPECT_FALSE(cluster.replica(new_leader).HasLease());
    cluster.TickAll();
  }
  EXPECT_TRUE(cluster.replica(new_leader).HasLease());
}

// ===========================================================================
// 9. Restart and configuration.

class RestartTest : public ::testing::TestWithParam<bool> {};

TEST_P(RestartTest, ReplaysSnapshotAndCommittedEntriesInTheFirstReady) {
  const bool with_snapshot = GetParam();
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  const uint32_t follower = leader == 1 ? 2 : 1;
  for (const char* command : {"a", "b", "c"}) {
    cluster.ProposeAndCommit(leader, {command});
  }
  if (with_snapshot) {
    ASSERT_TRUE(cluster.Compact(follower).ok());
  }
  cluster.ProposeAndCommit(leader, {"d", "e"});
  const uint64_t commit = cluster.replica(follower).commit();
  const std::vector<std::string> before =
      cluster.state_machine(follower).commands;
  ASSERT_THAT(before, ElementsAre("a", "b", "c", "d", "e"));

  cluster.Restart(follower);
  ASSERT_FALSE(cluster.readies(follower).empty());
  const Ready& first = cluster.readies(follower).front();
  uint64_t next = 1;
  if (with_snapshot) {
    ASSERT_TRUE(first.install_snapshot.has_value());
    EXPECT_EQ(first.install_snapshot->index(), 3u);
    EXPECT_THAT(DecodeSnapshot(first.install_snapshot->data()),
                ElementsAre("a", "b", "c"));
    next = 4;
  } else {
    EXPECT_FALSE(first.install_snapshot.has_value());
  }
  ASSERT_FALSE(first.committed.empty());
  EXPECT_EQ(first.committed.front().slot(), next);
  EXPECT_EQ(first.committed.back().slot(), commit);
  // Nothing new is persisted: it is all already on disk.
  EXPECT_TRUE(first.persist.empty());
  EXPECT_EQ(cluster.state_machine(follower).commands, before);
  EXPECT_EQ(cluster.replica(follower).emitted(), commit);
  EXPECT_EQ(cluster.replica(follower).role(), Role::kFollower);

  // It rejoins and keeps up.
  cluster.ProposeAndCommit(leader, {"f"});
  EXPECT_THAT(cluster.state_machine(follower).commands,
              ElementsAre("a", "b", "c", "d", "e", "f"));
}

INSTANTIATE_TEST_SUITE_P(Snapshot, RestartTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "WithSnapshot"
                                             : "WithoutSnapshot";
                         });

TEST(RestartLeaderTest, RestartedLeaderCanBeReelectedAndKeepsItsLog) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.ProposeAndCommit(leader, {"a", "b"});
  cluster.Restart(leader);
  EXPECT_EQ(cluster.replica(leader).role(), Role::kFollower);
  EXPECT_THAT(cluster.state_machine(leader).commands, ElementsAre("a", "b"));
  const uint32_t next_leader = cluster.ElectLeader();
  ASSERT_NE(next_leader, 0u);
  cluster.ProposeAndCommit(next_leader, {"c"});
  for (uint32_t id : cluster.ids()) {
    EXPECT_THAT(cluster.state_machine(id).commands, ElementsAre("a", "b", "c"));
  }
}

struct DurableCase {
  std::string name;
  uint64_t commit;
  uint64_t snapshot_index;  // 0: none.
  std::vector<uint64_t> slots;
  absl::StatusCode code;
};

class CreateTest : public ::testing::TestWithParam<DurableCase> {};

TEST_P(CreateTest, ChecksTheDurableStateIsConsistent) {
  const DurableCase& test = GetParam();
  DurableState state;
  state.hard_state.set_commit(test.commit);
  *state.hard_state.mutable_promised() = MakeBallot(2, 1);
  if (test.snapshot_index > 0) {
    paxospb::Snapshot snapshot;
    snapshot.set_index(test.snapshot_index);
    state.snapshot = snapshot;
  }
  for (uint64_t slot : test.slots) {
    state.entries[slot] =
        MakeEntry(slot, MakeBallot(2, 1), {absl::StrCat("s", slot)});
  }
  absl::StatusOr<std::unique_ptr<Replica>> replica =
      Replica::Create(TestConfig(1, Members(3)), state);
  EXPECT_EQ(replica.status().code(), test.code) << replica.status();
  if (!replica.ok()) return;
  const Ready ready = (*replica)->GetReady();
  EXPECT_EQ(ready.install_snapshot.has_value(), test.snapshot_index > 0);
  std::vector<uint64_t> replayed;
  for (const paxospb::Entry& entry : ready.committed) {
    replayed.push_back(entry.slot());
    EXPECT_TRUE(entry.chosen());
  }
  std::vector<uint64_t> expected;
  for (uint64_t slot = test.snapshot_index + 1; slot <= test.commit; ++slot) {
    expected.push_back(slot);
  }
  EXPECT_EQ(replayed, expected);
  EXPECT_EQ((*replica)->commit(), test.commit);
  EXPECT_EQ(B((*replica)->promised()), "2.1");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CreateTest,
    ::testing::Values(
        DurableCase{"Empty", 0, 0, {}, absl::StatusCode::kOk},
        DurableCase{
            "AcceptedButUncommitted", 0, 0, {2, 5}, absl::StatusCode::kOk},
        DurableCase{"Complete", 3, 0, {1, 2, 3, 4}, absl::StatusCode::kOk},
        DurableCase{"SnapshotCoversTheGap", 3, 2, {3}, absl::StatusCode::kOk},
        DurableCase{"SnapshotOnly", 2, 2, {}, absl::StatusCode::kOk},
        DurableCase{
            "HoleBelowCommit", 3, 0, {1, 3}, absl::StatusCode::kDataLoss},
        DurableCase{
            "CommittedSlotMissing", 3, 0, {1, 2}, absl::StatusCode::kDataLoss},
        DurableCase{
            "MissingAfterSnapshot", 3, 2, {}, absl::StatusCode::kDataLoss},
        DurableCase{
            "CommitBelowSnapshot", 1, 2, {}, absl::StatusCode::kDataLoss}),
    [](const ::testing::TestParamInfo<DurableCase>& info) {
      return info.param.name;
    });

struct ConfigCase {
  std::string name;
  std::function<void(Config&)> mutate;
  bool valid;
};

class ConfigTest : public ::testing::TestWithParam<ConfigCase> {};

TEST_P(ConfigTest, Validate) {
  const ConfigCase& test = GetParam();
  Config config = TestConfig(1, Members(3));
  test.mutate(config);
  const absl::Status status = config.Validate();
  if (test.valid) {
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_TRUE(Replica::Create(config, DurableState()).ok());
    return;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_FALSE(status.message().empty());
  absl::StatusOr<std::unique_ptr<Replica>> replica =
      Replica::Create(config, DurableState());
  EXPECT_TRUE(absl::IsInvalidArgument(replica.status())) << replica.status();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ConfigTest,
    ::testing::Values(
        ConfigCase{"TestDefaults", [](Config&) {}, true},
        ConfigCase{"LibraryDefaults",
                   [](Config& c) {
                     const Config defaults;
                     c.heartbeat_ticks = defaults.heartbeat_ticks;
                     c.election_ticks = defaults.election_ticks;
                     c.lease_ticks = defaults.lease_ticks;
                     c.max_drift_ticks = defaults.max_drift_ticks;
                   },
                   true},
        ConfigCase{"SingleMember", [](Config& c) { c.members = {1}; }, true},
        ConfigCase{"MessageHoldsFourBatches",
                   [](Config& c) {
                     c.max_batch_bytes = 1000;
                     c.max_message_bytes = 4000;
                   },
                   true},
        ConfigCase{"MessageTooSmallForBatches",
                   [](Config& c) {
                     c.max_batch_bytes = 1000;
                     c.max_message_bytes = 3999;
                   },
                   false},
        ConfigCase{"LargestId",
                   [](Config& c) {
                     c.id = 0xffff;
                     c.members = {1, 0xffff};
                   },
                   true},
        ConfigCase{"IdZero",
                   [](Config& c) {
                     c.id = 0;
                     c.members = {0, 1, 2};
                   },
                   false},
        ConfigCase{"IdTooLarge",
                   [](Config& c) {
                     c.id = 0x10000;
                     c.members = {1, 0x10000};
                   },
                   false},
        ConfigCase{"NoMembers", [](Config& c) { c.members.clear(); }, false},
        ConfigCase{"DuplicateMember",
                   [](Config& c) {
                     c.members = {1, 2, 2};
                   },
                   false},
        ConfigCase{"NotAMember",
                   [](Config& c) {
                     c.members = {2, 3};
                   },
                   false},
        ConfigCase{"MemberZero",
                   [](Config& c) {
                     c.members = {1, 0};
                   },
                   false},
        ConfigCase{"MemberTooLarge",
                   [](Config& c) {
                     c.members = {1, 0x10000};
                   },
                   false},
        ConfigCase{"HeartbeatZero", [](Config& c) { c.heartbeat_ticks = 0; },
                   false},
        ConfigCase{"ElectionNotAboveHeartbeat",
                   [](Config& c) {
                     c.heartbeat_ticks = 5;
                     c.election_ticks = 5;
                     c.lease_ticks = 4;
                   },
                   false},
        ConfigCase{"LeaseAboveElection",
                   [](Config& c) { c.lease_ticks = c.election_ticks + 1; },
                   false},
        ConfigCase{"LeaseEqualsElection",
                   [](Config& c) { c.lease_ticks = c.election_ticks; }, true},
        ConfigCase{"DriftZero", [](Config& c) { c.max_drift_ticks = 0; },
                   false},
        ConfigCase{"DriftEqualsLease",
                   [](Config& c) { c.max_drift_ticks = c.lease_ticks; }, false},
        ConfigCase{"InflightZero", [](Config& c) { c.max_inflight_slots = 0; },
                   false},
        ConfigCase{"BatchCommandsZero",
                   [](Config& c) { c.max_batch_commands = 0; }, false},
        ConfigCase{"BatchBytesZero", [](Config& c) { c.max_batch_bytes = 0; },
                   false},
        ConfigCase{"PendingZero",
                   [](Config& c) { c.max_pending_proposals = 0; }, false},
        ConfigCase{"EntriesPerMessageZero",
                   [](Config& c) { c.max_entries_per_message = 0; }, false},
        ConfigCase{"CandidateLagZero",
                   [](Config& c) { c.max_candidate_lag_slots = 0; }, false}),
    [](const ::testing::TestParamInfo<ConfigCase>& info) {
      return info.param.name;
    });

// ===========================================================================
// 10. Learning which values are chosen.

struct LearnCase {
  std::string name;
  // The ballot at which the follower accepted slot 1 (its leader is 1 at
  // ballot 2.1).
  paxospb::Ballot accepted_at;
  bool must_fetch;
};

class LearnerTest : public ::testing::TestWithParam<LearnCase> {};

TEST_P(LearnerTest, OnlyAnEntryOfTheLeadersBallotIsKnownChosen) {
  const LearnCase& test = GetParam();
  Node node(TestConfig(2, Members(3)));
  node.TickN(kLeaseTicks);
  const paxospb::Ballot leader_ballot = MakeBallot(2, 1);
  const uint32_t old_proposer = test.accepted_at.replica_id();
  const std::string held_value =
      BallotEqual(test.accepted_at, leader_ballot) ? "new" : "old";
  node.Receive(AcceptMessage(old_proposer, 2, test.accepted_at,
                             {MakeEntry(1, test.accepted_at, {held_value})},
                             0));
  // The leader says slot 1 is chosen.
  node.replica().Step(AcceptMessage(1, 2, leader_ballot, {}, /*commit=*/1));
  std::vector<Ready> readies = node.Drain();
  const std::vector<paxospb::Message> fetches =
      OfKind(Node::SentBy(readies), paxospb::Message::kFetchRequest);
  if (!test.must_fetch) {
    EXPECT_THAT(fetches, IsEmpty());
    EXPECT_THAT(Summarize(Node::CommittedBy(readies)),
                ElementsAre(Pair(1, ElementsAre("new"))));
    EXPECT_EQ(node.replica().commit(), 1u);
    return;
  }
  EXPECT_THAT(Node::CommittedBy(readies), IsEmpty());
  EXPECT_EQ(node.replica().commit(), 0u);
  ASSERT_THAT(fetches, SizeIs(1));
  EXPECT_EQ(fetches[0].to(), 1u);
  EXPECT_EQ(fetches[0].fetch_request().from_slot(), 1u);

  // The leader answers with the chosen value.
  paxospb::Message reply = Envelope(1, 2);
  *reply.mutable_fetch_reply()->add_entries() =
      MakeEntry(1, leader_ballot, {"new"}, true);
  reply.mutable_fetch_reply()->set_commit(1);
  node.replica().Step(reply);
  readies = node.Drain();
  EXPECT_THAT(Summarize(Node::CommittedBy(readies)),
              ElementsAre(Pair(1, ElementsAre("new"))));
  EXPECT_EQ(node.replica().commit(), 1u);
  const paxospb::Entry& stored = node.storage().durable().entries.at(1);
  EXPECT_THAT(Commands(stored.value()), ElementsAre("new"));
  EXPECT_TRUE(stored.chosen());
  EXPECT_EQ(node.storage().durable().hard_state.commit(), 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LearnerTest,
    ::testing::Values(
        LearnCase{"OlderBallotFromAnotherLeader", MakeBallot(1, 3), true},
        LearnCase{"OlderBallotFromTheSameLeader", MakeBallot(1, 1), true},
        LearnCase{"LeadersOwnBallot", MakeBallot(2, 1), false}),
    [](const ::testing::TestParamInfo<LearnCase>& info) {
      return info.param.name;
    });

TEST(FetchTest, HoleIsFetchedAndRetriedWhenTheReplyIsLost) {
  Node node(TestConfig(2, Members(3)));
  node.TickN(kLeaseTicks);
  const paxospb::Ballot ballot = MakeBallot(2, 1);
  // Slot 2 arrived, slot 1 was lost; the leader has both chosen.
  node.Receive(AcceptMessage(1, 2, ballot, {MakeEntry(2, ballot, {"b"})}, 0));
  std::vector<paxospb::Message> sent =
      node.Receive(AcceptMessage(1, 2, ballot, {}, /*commit=*/2));
  ASSERT_THAT(OfKind(sent, paxospb::Message::kFetchRequest, 1), SizeIs(1));
  EXPECT_EQ(node.replica().commit(), 0u);
  // The reply is lost: the follower asks again after heartbeat_ticks.
  sent = node.TickN(kHeartbeatTicks);
  const std::vector<paxospb::Message> retries =
      OfKind(sent, paxospb::Message::kFetchRequest, 1);
  ASSERT_THAT(retries, SizeIs(1));
  EXPECT_EQ(retries[0].fetch_request().from_slot(), 1u);

  paxospb::Message reply = Envelope(1, 2);
  *reply.mutable_fetch_reply()->add_entries() =
      MakeEntry(1, ballot, {"a"}, true);
  *reply.mutable_fetch_reply()->add_entries() =
      MakeEntry(2, ballot, {"b"}, true);
  reply.mutable_fetch_reply()->set_commit(2);
  node.replica().Step(reply);
  EXPECT_THAT(
      Summarize(Node::CommittedBy(node.Drain())),
      ElementsAre(Pair(1, ElementsAre("a")), Pair(2, ElementsAre("b"))));
}

TEST(FetchTest, AnyReplicaAnswersFetchesWithChosenEntriesOnly) {
  Node node(TestConfig(2, Members(3)));
  node.TickN(kLeaseTicks);
  const paxospb::Ballot ballot = MakeBallot(2, 1);
  node.Receive(
      AcceptMessage(1, 2, ballot,
                    {MakeEntry(1, ballot, {"a"}), MakeEntry(2, ballot, {"b"}),
                     MakeEntry(3, ballot, {"c"})},
                    /*commit=*/2));
  ASSERT_EQ(node.replica().commit(), 2u);
  paxospb::Message request = Envelope(3, 2);
  request.mutable_fetch_request()->set_from_slot(1);
  const std::vector<paxospb::Message> replies = node.Receive(request);
  ASSERT_THAT(replies, SizeIs(1));
  ASSERT_TRUE(replies[0].has_fetch_reply());
  EXPECT_EQ(replies[0].to(), 3u);
  EXPECT_EQ(replies[0].fetch_reply().commit(), 2u);
  // Slot 3 is only accepted, not known chosen: it is not handed out.
  EXPECT_THAT(
      Summarize(replies[0].fetch_reply().entries()),
      ElementsAre(Pair(1, ElementsAre("a")), Pair(2, ElementsAre("b"))));
  EXPECT_FALSE(replies[0].fetch_reply().has_snapshot());
}

TEST(StepTest, MessagesFromNonMembersAndMisaddressedAreIgnored) {
  Node node(TestConfig(2, Members(3)));
  node.TickN(kLeaseTicks);
  const paxospb::Ballot ballot = MakeBallot(9, 7);
  node.replica().Step(
      AcceptMessage(7, 2, ballot, {MakeEntry(1, ballot, {"x"})}, 1));
  node.replica().Step(PrepareMessage(1, 3, MakeBallot(9, 1), 1));
  // A ballot that does not belong to its sender is ignored too.
  node.replica().Step(AcceptMessage(
      1, 2, MakeBallot(9, 3), {MakeEntry(1, MakeBallot(9, 3), {"y"})}, 1));
  // Nothing is promised or accepted. The stranger's heartbeat claims
  // commit 1, so it may be a member added by a change this replica missed:
  // it asks that sender for chosen entries, and nothing else.
  ASSERT_TRUE(node.replica().HasReady());
  const Ready ready = node.replica().GetReady();
  ASSERT_THAT(ready.messages, SizeIs(1));
  EXPECT_EQ(ready.messages[0].to(), 7u);
  EXPECT_TRUE(ready.messages[0].has_fetch_request());
  EXPECT_TRUE(ready.persist.entries.empty());
  EXPECT_EQ(B(node.replica().promised()), "0.0");
  EXPECT_THAT(node.storage().durable().entries, IsEmpty());
}

// Lease safety: a lease read must see every acknowledged write (found in
// review; the simulator now checks the same property).

bool Applied(const StateMachine& machine, const std::string& command) {
  return std::find(machine.commands.begin(), machine.commands.end(), command) !=
         machine.commands.end();
}

// A new leader holds the lease before it has committed (and applied) the
// slots it re-proposed at takeover: a lease read there misses a write the
// previous leader already acknowledged.
TEST(LeaseSafetyTest, NoLeaseBeforeTakeoverSlotsAreApplied) {
  Cluster cluster(3,
                  [](Config& config) { config.max_entries_per_message = 1; });
  cluster.TickAll(kLeaseTicks);
  ASSERT_TRUE(cluster.Campaign(1));
  cluster.TickAll(2);
  // Replica 2 misses everything from here on; 1 commits 30 slots with 3.
  cluster.Cut(1, 2);
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(cluster.replica(1).Propose(absl::StrCat("w", i)).ok());
    cluster.Process(1);
    cluster.Deliver();
  }
  cluster.TickAll(2 * kHeartbeatTicks);
  const uint64_t acknowledged = cluster.replica(1).commit();
  ASSERT_GE(acknowledged, 30u);
  ASSERT_TRUE(Applied(cluster.state_machine(1), "w29"));  // client answered
  ASSERT_FALSE(Applied(cluster.state_machine(2), "w29"));
  // The old leader dies; 2 takes over with 3's promise.
  cluster.Isolate(1);
  uint32_t leader = 0;
  for (int i = 0; i < 10 * kElectionTicks && leader == 0; ++i) {
    cluster.TickAll();
    if (cluster.replica(2).role() == Role::kLeader) leader = 2;
    if (cluster.replica(3).role() == Role::kLeader) leader = 3;
  }
  ASSERT_EQ(leader, 2u) << "want the lagging replica to win for this test";
  bool stale = false;
  for (int i = 0; i < 4 * kLeaseTicks && !stale; ++i) {
    cluster.TickAll();
    if (cluster.replica(2).HasLease() &&
        !Applied(cluster.state_machine(2), "w29")) {
      stale = true;
      ADD_FAILURE() << "replica 2 holds the lease at tick "
                    << cluster.replica(2).ticks() << " (elected "
                    << cluster.elected_tick(2) << ") with commit "
                    << cluster.replica(2).commit() << " < " << acknowledged
                    << ": a lease read misses acknowledged write w29";
    }
  }
}

// Stickiness is cleared when an acceptor promises a higher ballot of the
// replica it follows (the leader_id_ == candidate exemption), even when that
// Prepare is a stale one from the leader's previous incarnation. Another
// candidate can then be elected and commit while the leader still holds its
// lease.
TEST(LeaseSafetyTest, StalePrepareFromLeadersOldIncarnationKeepsOthersOut) {
  Cluster cluster(5);
  cluster.TickAll(kLeaseTicks);
  ASSERT_TRUE(cluster.Campaign(1));
  // 4 and 5 never hear from leader 1.
  cluster.Cut(1, 4);
  cluster.Cut(1, 5);
  cluster.TickAll(3 * kElectionTicks);
  ASSERT_EQ(cluster.replica(1).role(), Role::kLeader);
  ASSERT_TRUE(cluster.replica(1).HasLease());
  ASSERT_NE(cluster.replica(5).role(), Role::kLeader);
  const paxospb::Ballot current = cluster.replica(1).promised();
  ASSERT_EQ(current.replica_id(), 1u);
  // From now on 2's replies no longer reach 1 (asymmetric link failure).
  cluster.SetFilter([](const paxospb::Message& m) {
    return m.from() == 2 && m.to() == 1 ? Cluster::Fate::kDrop
                                        : Cluster::Fate::kDeliver;
  });
  const uint64_t lease_end =
      cluster.DeliveredQuorumAckTick(1) + kLeaseTicks - kMaxDriftTicks;
  // A Prepare that 1 sent in its previous incarnation (round + 1, crashed
  // before its own promise was durable) finally reaches 2.
  cluster.Inject(PrepareMessage(1, 2, MakeBallot(current.round() + 1, 1),
                                cluster.replica(2).commit() + 1));
  EXPECT_EQ(B(cluster.replica(2).promised()),
            B(MakeBallot(current.round() + 1, 1)));
  bool violated = false;
  while (cluster.replica(1).ticks() < lease_end && !violated) {
    cluster.TickAll();
    for (uint32_t id : {4u, 5u}) {
      if (cluster.replica(id).role() == Role::kLeader) {
        (void)cluster.replica(id).Propose("w");
        cluster.Process(id);
        cluster.Deliver();
        if (cluster.replica(1).HasLease() &&
            Applied(cluster.state_machine(id), "w") &&
            !Applied(cluster.state_machine(1), "w")) {
          violated = true;
          ADD_FAILURE() << "replica " << id << " was elected and acknowledged"
                        << " write w at tick " << cluster.replica(1).ticks()
                        << " of replica 1, whose lease runs until " << lease_end
                        << ": a lease read on 1 misses it";
        }
      }
    }
  }
}

// Byte budgets: no message may outgrow max_message_bytes / 2.

Config SmallMessageConfig(uint32_t id) {
  Config config = TestConfig(id, Members(3));
  config.max_batch_bytes = 1024;
  config.max_message_bytes = 4096;
  return config;
}

TEST(ByteBudgetTest, PromiseThatWouldOutgrowAMessageIsRefusedAsBehind) {
  Node node(SmallMessageConfig(1));
  node.TickN(kLeaseTicks);  // past RECOVERING
  const paxospb::Ballot old_ballot = MakeBallot(1, 2);
  std::vector<paxospb::Entry> entries;
  for (uint64_t slot = 1; slot <= 10; ++slot) {
    entries.push_back(MakeEntry(slot, old_ballot, {std::string(500, 'x')}));
  }
  node.Receive(AcceptMessage(2, 1, old_ballot, entries, /*commit=*/0));
  node.TickN(kLeaseTicks);  // past the stickiness to replica 2
  const paxospb::Ballot ballot = MakeBallot(2, 3);

  const std::vector<paxospb::Message> refused =
      node.Receive(PrepareMessage(3, 1, ballot, /*first_unchosen=*/1));
  ASSERT_EQ(refused.size(), 1u);
  ASSERT_TRUE(refused[0].has_reject());
  EXPECT_EQ(refused[0].reject().reason(), paxospb::Reject::BEHIND);
  EXPECT_EQ(B(node.replica().promised()), B(old_ballot));

  // The last two entries fit: that promise is made.
  const std::vector<paxospb::Message> promised =
      node.Receive(PrepareMessage(3, 1, ballot, /*first_unchosen=*/9));
  ASSERT_EQ(promised.size(), 1u);
  ASSERT_TRUE(promised[0].has_promise());
  EXPECT_EQ(promised[0].promise().entries_size(), 2);
}

TEST(ByteBudgetTest, SnapshotThatFillsTheBudgetTravelsAlone) {
  DurableState state;
  paxospb::Snapshot snapshot;
  snapshot.set_index(5);
  snapshot.set_data(std::string(3000, 's'));
  state.snapshot = snapshot;
  for (uint64_t slot = 6; slot <= 8; ++slot) {
    state.entries[slot] = MakeEntry(slot, MakeBallot(1, 2), {"c"});
  }
  state.hard_state.set_commit(8);
  Node node(SmallMessageConfig(1), state);
  node.Drain();

  paxospb::Message request = Envelope(2, 1);
  request.mutable_fetch_request()->set_from_slot(1);
  const std::vector<paxospb::Message> with_snapshot = node.Receive(request);
  ASSERT_EQ(with_snapshot.size(), 1u);
  const paxospb::FetchReply& reply = with_snapshot[0].fetch_reply();
  EXPECT_EQ(reply.snapshot().index(), 5u);
  EXPECT_EQ(reply.entries_size(), 0);

  request.mutable_fetch_request()->set_from_slot(6);
  const std::vector<paxospb::Message> entries_only = node.Receive(request);
  ASSERT_EQ(entries_only.size(), 1u);
  EXPECT_FALSE(entries_only[0].fetch_reply().has_snapshot());
  EXPECT_EQ(entries_only[0].fetch_reply().entries_size(), 3);
}

// A Prepare a candidate queued to itself must not raise its promise once a
// live leader's Accept turned it back into a follower: that would make it
// refuse the leader's next Accept and depose it.
TEST(CandidateTest, StaleSelfPrepareAfterReturningToFollowerIsDropped) {
  Node node(TestConfig(1, Members(3)));
  node.TickN(kLeaseTicks);
  const paxospb::Ballot leader_ballot = MakeBallot(5, 3);
  node.Receive(AcceptMessage(3, 1, leader_ballot, {}, /*commit=*/0));
  for (int i = 0;
       i < 4 * kElectionTicks && node.replica().role() != Role::kCandidate;
       ++i) {
    node.TickN(1);
  }
  ASSERT_EQ(node.replica().role(), Role::kCandidate);
  // The probe succeeds: the Prepare to itself is queued, not yet delivered.
  node.replica().Step(ProbeGrantMessage(2, 1));
  // Before it is delivered, the leader turns out to be alive.
  node.replica().Step(AcceptMessage(3, 1, leader_ballot, {}, /*commit=*/0));
  node.Drain();
  EXPECT_EQ(node.replica().role(), Role::kFollower);
  EXPECT_EQ(B(node.replica().promised()), B(leader_ballot));
  const std::vector<paxospb::Message> replies =
      node.Receive(AcceptMessage(3, 1, leader_ballot, {}, /*commit=*/0));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_TRUE(replies[0].has_accepted());
}

}  // namespace
}  // namespace lockd::paxos

namespace lockd::paxos {
namespace {

// ===========================================================================
// Membership changes and leadership handover.

paxospb::Membership Configuration(
    const std::vector<std::pair<uint32_t, bool>>& members) {
  paxospb::Membership membership;
  for (const auto& [id, voter] : members) {
    paxospb::Member* member = membership.add_members();
    member->set_id(id);
    member->set_voter(voter);
  }
  return membership;
}

// Proposes `next` at `leader` and ticks until it is the committed
// configuration there.
void ChangeAndWait(Cluster& cluster, uint32_t leader,
                   const paxospb::Membership& next) {
  const absl::Status status = cluster.replica(leader).ProposeMembership(next);
  ASSERT_TRUE(status.ok()) << status;
  for (int i = 0; i < 100; ++i) {
    if (MembershipString(cluster.replica(leader).membership()) ==
        MembershipString(next)) {
      // The followers learn it with the next heartbeat.
      cluster.TickAll(2 * kHeartbeatTicks);
      return;
    }
    cluster.TickAll();
  }
  FAIL() << "configuration " << MembershipString(next) << " never chosen";
}

TEST(MembershipTest, ALearnerCatchesUpFromASnapshotAndIsPromoted) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.TickAll(kLeaseTicks);
  cluster.ProposeAndCommit(leader, {"a", "b", "c"});
  ASSERT_TRUE(cluster.Compact(leader).ok());

  cluster.Join(4, {1, 2, 3});
  EXPECT_FALSE(cluster.replica(4).knows_membership());
  ChangeAndWait(cluster, leader,
                Configuration({{1, true}, {2, true}, {3, true}, {4, false}}));
  cluster.ProposeAndCommit(leader, {"d"});
  cluster.TickAll(4 * kHeartbeatTicks);
  EXPECT_TRUE(cluster.replica(4).knows_membership());
  EXPECT_THAT(cluster.state_machine(4).commands,
              ElementsAre("a", "b", "c", "d"));
  EXPECT_GE(cluster.state_machine(4).snapshots_installed, 1);
  EXPECT_EQ(cluster.replica(leader).PeerCommit(4),
            cluster.replica(leader).commit());
  // A learner never campaigns, however long it hears nothing.
  cluster.Isolate(4);
  cluster.TickAll(5 * kElectionTicks);
  EXPECT_EQ(cluster.replica(4).role(), Role::kFollower);
  cluster.HealAll();

  ChangeAndWait(cluster, leader,
                Configuration({{1, true}, {2, true}, {3, true}, {4, true}}));
  EXPECT_EQ(MembershipString(cluster.replica(4).membership()), "1,2,3,4");
  // Four voters: the leader and one other are no longer a majority.
  std::vector<uint32_t> others;
  for (uint32_t id : {1u, 2u, 3u, 4u}) {
    if (id != leader) others.push_back(id);
  }
  cluster.Cut(leader, others[0]);
  cluster.Cut(leader, others[1]);
  const uint64_t commit = cluster.replica(leader).commit();
  ASSERT_TRUE(cluster.replica(leader).Propose("e").ok());
  cluster.Process(leader);
  cluster.Deliver();
  cluster.TickAll(kHeartbeatTicks);
  EXPECT_EQ(cluster.replica(leader).commit(), commit);
  cluster.HealAll();
  cluster.TickAll(2 * kHeartbeatTicks);
  EXPECT_GT(cluster.replica(leader).commit(), commit);
}

TEST(MembershipTest, OneMemberAtATimeAndNeverTheLeaderItself) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.TickAll(kLeaseTicks);
  const uint32_t follower = leader == 1 ? 2 : 1;

  const absl::Status two_at_once = cluster.replica(leader).ProposeMembership(
      Configuration({{1, true}, {2, true}, {3, true}, {4, true}, {5, true}}));
  EXPECT_EQ(two_at_once.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two_at_once.message(), HasSubstr("one member at a time"));

  paxospb::Membership without_leader;
  for (uint32_t id : {1u, 2u, 3u}) {
    if (id == leader) continue;
    paxospb::Member* member = without_leader.add_members();
    member->set_id(id);
    member->set_voter(true);
  }
  const absl::Status remove_self =
      cluster.replica(leader).ProposeMembership(without_leader);
  EXPECT_EQ(remove_self.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(remove_self.message(), HasSubstr("hand leadership over"));

  EXPECT_EQ(cluster.replica(follower)
                .ProposeMembership(Configuration(
                    {{1, true}, {2, true}, {3, true}, {4, false}}))
                .code(),
            absl::StatusCode::kUnavailable);

  ASSERT_TRUE(cluster.replica(leader)
                  .ProposeMembership(Configuration(
                      {{1, true}, {2, true}, {3, true}, {4, false}}))
                  .ok());
  EXPECT_TRUE(cluster.replica(leader).change_in_flight());
  const absl::Status second = cluster.replica(leader).ProposeMembership(
      Configuration({{1, true}, {2, true}, {3, true}, {5, false}}));
  EXPECT_EQ(second.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.message(), HasSubstr("in flight"));
}

TEST(MembershipTest, NothingIsProposedAfterAChangeUntilItIsChosen) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.TickAll(kLeaseTicks);
  cluster.Join(4, {1, 2, 3});
  // Hold every accept so that the change stays unchosen.
  cluster.SetFilter([](const paxospb::Message& message) {
    return message.has_accept() && message.accept().entries_size() > 0
               ? Cluster::Fate::kHold
               : Cluster::Fate::kDeliver;
  });
  ASSERT_TRUE(cluster.replica(leader)
                  .ProposeMembership(Configuration(
                      {{1, true}, {2, true}, {3, true}, {4, false}}))
                  .ok());
  cluster.Process(leader);
  cluster.Deliver();
  ASSERT_TRUE(cluster.replica(leader).Propose("after").ok());
  cluster.Process(leader);
  cluster.Deliver();
  EXPECT_EQ(cluster.replica(leader).inflight_slots(), 1u);
  EXPECT_EQ(cluster.replica(leader).pending_proposals(), 1u);
  cluster.SetFilter(nullptr);
  cluster.Release();
  cluster.TickAll(2 * kHeartbeatTicks);
  EXPECT_EQ(MembershipString(cluster.replica(leader).membership()),
            "1,2,3,4 (learner)");
  EXPECT_THAT(cluster.state_machine(leader).commands, ElementsAre("after"));
}

TEST(MembershipTest, ARemovedVoterIsIgnoredAndNeverCampaigns) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.TickAll(kLeaseTicks);
  const uint32_t removed = leader == 3 ? 2 : 3;
  paxospb::Membership next;
  for (uint32_t id : {1u, 2u, 3u}) {
    if (id == removed) continue;
    paxospb::Member* member = next.add_members();
    member->set_id(id);
    member->set_voter(true);
  }
  ChangeAndWait(cluster, leader, next);
  cluster.TickAll(2 * kHeartbeatTicks);
  EXPECT_EQ(MembershipString(cluster.replica(removed).membership()),
            MembershipString(next));
  const uint64_t epoch = cluster.replica(leader).epoch();
  // Cut off from the leader, it would campaign if it were still a voter.
  cluster.Cut(leader, removed);
  cluster.TickAll(5 * kElectionTicks);
  EXPECT_EQ(cluster.replica(removed).role(), Role::kFollower);
  EXPECT_EQ(cluster.replica(leader).epoch(), epoch);
  // Its messages are ignored: a huge Prepare changes no promise.
  const uint32_t other = 6 - leader - removed;
  const paxospb::Ballot before = cluster.replica(other).promised();
  cluster.Inject(PrepareMessage(removed, other, MakeBallot(1000, removed), 1));
  EXPECT_TRUE(BallotEqual(cluster.replica(other).promised(), before));
  // Two voters: both are needed, and both still commit.
  cluster.ProposeAndCommit(leader, {"x"});
  EXPECT_THAT(cluster.state_machine(other).commands, ElementsAre("x"));
}

TEST(MembershipTest, TheConfigurationSurvivesRestartsAndSnapshots) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.TickAll(kLeaseTicks);
  cluster.Join(4, {1, 2, 3});
  const paxospb::Membership four =
      Configuration({{1, true}, {2, true}, {3, true}, {4, false}});
  ChangeAndWait(cluster, leader, four);
  cluster.TickAll(4 * kHeartbeatTicks);
  const uint32_t follower = leader == 1 ? 2 : 1;
  // From the log...
  cluster.Restart(follower);
  EXPECT_EQ(MembershipString(cluster.replica(follower).membership()),
            MembershipString(four));
  // ...and from a snapshot, with the joiner restarted too.
  cluster.ProposeAndCommit(leader, {"a"});
  ASSERT_TRUE(cluster.Compact(follower).ok());
  cluster.Restart(follower);
  EXPECT_EQ(MembershipString(cluster.replica(follower).membership()),
            MembershipString(four));
  EXPECT_TRUE(cluster.replica(4).knows_membership());
  cluster.Restart(4);
  EXPECT_TRUE(cluster.replica(4).knows_membership());
  EXPECT_EQ(MembershipString(cluster.replica(4).membership()),
            MembershipString(four));
}

TEST(MembershipTest, MessagesOfAnotherCellAreIgnored) {
  Config config = TestConfig(2, Members(3));
  config.initial_membership = MembershipOfVoters(Members(3));
  config.initial_membership.set_cell_id(7);
  Node node(config);
  node.TickN(kLeaseTicks);
  paxospb::Message foreign = PrepareMessage(1, 2, MakeBallot(5, 1), 1);
  foreign.set_cell_id(9);
  node.replica().Step(foreign);
  EXPECT_EQ(B(node.replica().promised()), "0.0");
  paxospb::Message own = PrepareMessage(1, 2, MakeBallot(5, 1), 1);
  own.set_cell_id(7);
  node.replica().Step(own);
  EXPECT_EQ(B(node.replica().promised()), "5.1");
  // Its own messages carry the cell's identity.
  const Ready ready = node.replica().GetReady();
  ASSERT_FALSE(ready.messages.empty());
  EXPECT_EQ(ready.messages[0].cell_id(), 7u);
}

TEST(HandoverTest, TheTargetLeadsAtOnceAndTheOldLeaderStopsServing) {
  Cluster cluster(3);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.TickAll(kLeaseTicks);
  cluster.ProposeAndCommit(leader, {"a"});
  ASSERT_TRUE(cluster.replica(leader).HasLease());
  const uint32_t target = leader == 1 ? 2 : 1;

  EXPECT_EQ(cluster.replica(leader).TransferLeadership(leader).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster.replica(leader).TransferLeadership(9).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cluster.replica(target).TransferLeadership(leader).code(),
            absl::StatusCode::kUnavailable);

  ASSERT_TRUE(cluster.replica(leader).TransferLeadership(target).ok());
  EXPECT_EQ(cluster.replica(leader).role(), Role::kFollower);
  EXPECT_FALSE(cluster.replica(leader).HasLease());
  cluster.Process(leader);
  cluster.Deliver();
  // Promises and the takeover need a round trip; the lease of the old
  // leader is not waited out (the cluster checks that no two replicas hold
  // a lease at any instant).
  int ticks = 0;
  while (!cluster.replica(target).HasLease() && ticks < kLeaseTicks) {
    cluster.TickAll();
    ++ticks;
  }
  EXPECT_TRUE(cluster.replica(target).HasLease());
  EXPECT_LT(ticks, kLeaseTicks - kMaxDriftTicks);
  cluster.ProposeAndCommit(target, {"b"});
  EXPECT_THAT(cluster.state_machine(leader).commands, ElementsAre("a", "b"));
}

TEST(HandoverTest, OnlyTheTargetIsExemptFromTheOldLeadersLease) {
  Cluster cluster(5);
  const uint32_t leader = cluster.ElectLeader();
  ASSERT_NE(leader, 0u);
  cluster.TickAll(kLeaseTicks);
  std::vector<uint32_t> followers;
  for (uint32_t id : Members(5)) {
    if (id != leader) followers.push_back(id);
  }
  const uint32_t target = followers[0];
  const uint32_t acceptor = followers[1];
  const uint32_t intruder = followers[2];
  // The target does not hear of it (so it does not campaign yet).
  cluster.Isolate(target);
  ASSERT_TRUE(cluster.replica(leader).TransferLeadership(target).ok());
  cluster.Process(leader);
  cluster.Deliver();
  cluster.HealAll();
  const paxospb::Ballot before = cluster.replica(acceptor).promised();
  cluster.Inject(PrepareMessage(intruder, acceptor,
                                MakeBallot(before.round() + 5, intruder), 1));
  EXPECT_TRUE(BallotEqual(cluster.replica(acceptor).promised(), before))
      << "promised " << BallotString(cluster.replica(acceptor).promised());
  const paxospb::Ballot handed = MakeBallot(before.round() + 6, target);
  cluster.Inject(PrepareMessage(target, acceptor, handed, 1));
  EXPECT_TRUE(BallotEqual(cluster.replica(acceptor).promised(), handed));
}

}  // namespace
}  // namespace lockd::paxos
