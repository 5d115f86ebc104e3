// The Paxos core driven over LevelDbStorage, as the server will drive it:
// replicas restart from what LevelDB kept and catch up with the cell.

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "leveldb/env.h"
#include "leveldb/helpers/memenv.h"
#include "lockd/leveldb_storage.h"
#include "paxos/replica.h"

namespace lockd {
namespace {

using paxos::Replica;
using paxos::Role;

// Three replicas, each on its own LevelDB database in one in-memory Env.
// Messages to a "down" replica are dropped.
class LevelDbCell {
 public:
  LevelDbCell() : env_(leveldb::NewMemEnv(leveldb::Env::Default())) {
    for (uint32_t id : kMembers) Start(id);
  }

  ~LevelDbCell() {
    // Replicas and databases must close before the Env goes away.
    replicas_.clear();
    storages_.clear();
  }

  void Start(uint32_t id) {
    absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage =
        LevelDbStorage::Open(absl::StrCat("/cell/replica-", id), env_.get());
    ASSERT_TRUE(storage.ok()) << storage.status();
    absl::StatusOr<paxos::DurableState> state = (*storage)->Load();
    ASSERT_TRUE(state.ok()) << state.status();
    paxos::Config config;
    config.id = id;
    config.members = kMembers;
    config.max_entries_per_message = 8;
    config.random_seed = id;
    absl::StatusOr<std::unique_ptr<Replica>> replica =
        Replica::Create(config, *std::move(state));
    ASSERT_TRUE(replica.ok()) << replica.status();
    storages_[id] = std::move(*storage);
    replicas_[id] = std::move(*replica);
    applied_[id].clear();
    Drain(id);
  }

  // Simulates kill -9: the replica and its open database vanish; only what
  // LevelDB synced remains.
  void Kill(uint32_t id) {
    replicas_.erase(id);
    storages_.erase(id);
  }

  bool Up(uint32_t id) const { return replicas_.count(id) > 0; }
  Replica& replica(uint32_t id) { return *replicas_.at(id); }
  const std::vector<std::string>& applied(uint32_t id) { return applied_[id]; }

  // Handles every pending Ready and delivers every message until quiet.
  void Settle() {
    for (int round = 0; round < 1000; ++round) {
      bool busy = false;
      for (uint32_t id : kMembers) busy |= Drain(id);
      std::deque<paxospb::Message> inbox = std::move(inbox_);
      inbox_.clear();
      for (const auto& message : inbox) {
        busy = true;
        if (Up(message.to())) replicas_[message.to()]->Step(message);
      }
      if (!busy) return;
    }
    FAIL() << "cell did not settle";
  }

  void Tick(int ticks) {
    for (int i = 0; i < ticks; ++i) {
      for (uint32_t id : kMembers) {
        if (Up(id)) replicas_[id]->Tick();
      }
      Settle();
    }
  }

  uint32_t Leader() {
    for (uint32_t id : kMembers) {
      if (Up(id) && replicas_[id]->role() == Role::kLeader) return id;
    }
    return 0;
  }

  uint32_t ElectLeader() {
    for (int i = 0; i < 100 && Leader() == 0; ++i) Tick(1);
    return Leader();
  }

  const std::vector<uint32_t> kMembers = {1, 2, 3};

 private:
  // Handles the replica's Readies in the documented order. Returns true if
  // there was anything to do.
  bool Drain(uint32_t id) {
    if (!Up(id)) return false;
    bool any = false;
    Replica& replica = *replicas_[id];
    while (replica.HasReady()) {
      any = true;
      paxos::Ready ready = replica.GetReady();
      const absl::Status saved = storages_[id]->Save(ready.persist);
      EXPECT_TRUE(saved.ok()) << saved;
      for (auto& message : ready.messages) inbox_.push_back(message);
      if (ready.install_snapshot.has_value()) {
        // The toy state machine's snapshot is its applied list, joined.
        applied_[id].clear();
        for (absl::string_view command :
             absl::StrSplit(ready.install_snapshot->data(), ',')) {
          applied_[id].emplace_back(command);
        }
      }
      for (const auto& entry : ready.committed) {
        for (const std::string& command : entry.value().commands()) {
          applied_[id].push_back(command);
        }
      }
      replica.Advance();
    }
    return any;
  }

  std::unique_ptr<leveldb::Env> env_;
  std::map<uint32_t, std::unique_ptr<LevelDbStorage>> storages_;
  std::map<uint32_t, std::unique_ptr<Replica>> replicas_;
  std::map<uint32_t, std::vector<std::string>> applied_;
  std::deque<paxospb::Message> inbox_;
};

std::string Join(const std::vector<std::string>& commands) {
  std::string joined;
  for (const std::string& command : commands) {
    absl::StrAppend(&joined, command, ",");
  }
  return joined;
}

void ProposeAndSettle(LevelDbCell& cell, const std::string& command) {
  const uint32_t leader = cell.ElectLeader();
  ASSERT_NE(leader, 0u);
  ASSERT_TRUE(cell.replica(leader).Propose(command).ok());
  cell.Settle();
}

TEST(PaxosOnLevelDbTest, RestartedFollowerReplaysItsDiskAndCatchesUp) {
  LevelDbCell cell;
  const uint32_t leader = cell.ElectLeader();
  ASSERT_NE(leader, 0u);
  const uint32_t follower = leader == 1 ? 2 : 1;
  for (int i = 0; i < 20; ++i) ProposeAndSettle(cell, absl::StrCat("a", i));
  cell.Tick(4);  // the commit point reaches the followers
  ASSERT_EQ(cell.applied(follower).size(), 20u);

  cell.Kill(follower);
  for (int i = 0; i < 20; ++i) ProposeAndSettle(cell, absl::StrCat("b", i));

  cell.Start(follower);
  // Straight from its own disk: everything it had applied before the kill.
  ASSERT_GE(cell.applied(follower).size(), 20u);
  EXPECT_EQ(cell.applied(follower)[19], "a19");
  cell.Tick(30);
  EXPECT_EQ(cell.applied(follower), cell.applied(leader));
  EXPECT_EQ(cell.applied(leader).size(), 40u);
}

TEST(PaxosOnLevelDbTest, FollowerBehindACompactedLogInstallsTheSnapshot) {
  LevelDbCell cell;
  const uint32_t leader = cell.ElectLeader();
  ASSERT_NE(leader, 0u);
  const uint32_t follower = leader == 3 ? 2 : 3;
  ProposeAndSettle(cell, "first");
  cell.Tick(4);
  cell.Kill(follower);
  for (int i = 0; i < 30; ++i) ProposeAndSettle(cell, absl::StrCat("c", i));
  // Every live replica snapshots and truncates its log.
  for (uint32_t id : cell.kMembers) {
    if (!cell.Up(id)) continue;
    Replica& replica = cell.replica(id);
    std::vector<std::string> applied = cell.applied(id);
    std::string data = Join(applied);
    data.pop_back();
    ASSERT_TRUE(replica.Compact(replica.emitted(), data).ok());
  }
  cell.Settle();

  cell.Start(follower);
  cell.Tick(30);
  EXPECT_EQ(cell.applied(follower), cell.applied(leader));
  EXPECT_GT(cell.replica(follower).snapshot_index(), 1u);
}

TEST(PaxosOnLevelDbTest, WholeCellRestartKeepsEveryCommittedCommand) {
  LevelDbCell cell;
  for (int i = 0; i < 25; ++i) ProposeAndSettle(cell, absl::StrCat("d", i));
  cell.Tick(4);
  const std::vector<std::string> before = cell.applied(cell.Leader());
  ASSERT_EQ(before.size(), 25u);
  for (uint32_t id : cell.kMembers) cell.Kill(id);
  for (uint32_t id : cell.kMembers) cell.Start(id);
  for (uint32_t id : cell.kMembers) {
    EXPECT_EQ(cell.applied(id), before) << "replica " << id;
  }
  // And the cell still works: a new leader, new commands after the old.
  ProposeAndSettle(cell, "after-restart");
  cell.Tick(4);
  const std::vector<std::string>& after = cell.applied(cell.Leader());
  ASSERT_EQ(after.size(), 26u);
  EXPECT_EQ(after.back(), "after-restart");
}

}  // namespace
}  // namespace lockd
