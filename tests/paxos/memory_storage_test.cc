#include "paxos/memory_storage.h"

#include "gtest/gtest.h"

namespace lockd::paxos {
namespace {

PersistBatch BatchWithCommit(uint64_t commit, uint64_t entry_slot) {
  PersistBatch batch;
  paxospb::HardState hard_state;
  hard_state.set_commit(commit);
  batch.hard_state = hard_state;
  paxospb::Entry entry;
  entry.set_slot(entry_slot);
  entry.mutable_value()->add_commands("cmd");
  batch.entries.push_back(entry);
  return batch;
}

TEST(MemoryStorageTest, SaveIsDurableAcrossCrash) {
  MemoryStorage storage;
  ASSERT_TRUE(storage.Save(BatchWithCommit(1, 1)).ok());
  storage.Crash();
  absl::StatusOr<DurableState> state = storage.Load();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->hard_state.commit(), 1u);
  EXPECT_EQ(state->entries.count(1), 1u);
  EXPECT_EQ(storage.saves(), 1u);
}

TEST(MemoryStorageTest, CrashDropsWritesNotYetSynced) {
  MemoryStorage storage;
  ASSERT_TRUE(storage.Save(BatchWithCommit(1, 1)).ok());
  storage.Write(BatchWithCommit(2, 2));
  EXPECT_EQ(storage.durable().hard_state.commit(), 1u);
  storage.Crash();
  storage.Sync();
  EXPECT_EQ(storage.durable().hard_state.commit(), 1u);
  EXPECT_EQ(storage.durable().entries.count(2), 0u);
}

TEST(MemoryStorageTest, SyncAppliesCachedWritesInOrder) {
  MemoryStorage storage;
  storage.Write(BatchWithCommit(1, 1));
  storage.Write(BatchWithCommit(2, 2));
  storage.Sync();
  EXPECT_EQ(storage.durable().hard_state.commit(), 2u);
  EXPECT_EQ(storage.durable().entries.size(), 2u);
}

TEST(MemoryStorageTest, SnapshotDropsEntriesAtOrBelowItsIndex) {
  MemoryStorage storage;
  ASSERT_TRUE(storage.Save(BatchWithCommit(3, 1)).ok());
  ASSERT_TRUE(storage.Save(BatchWithCommit(3, 2)).ok());
  ASSERT_TRUE(storage.Save(BatchWithCommit(3, 3)).ok());
  PersistBatch compact;
  paxospb::Snapshot snapshot;
  snapshot.set_index(2);
  snapshot.set_data("state@2");
  compact.snapshot = snapshot;
  compact.entries.push_back(BatchWithCommit(3, 2).entries[0]);
  ASSERT_TRUE(storage.Save(compact).ok());
  EXPECT_EQ(storage.durable().snapshot->data(), "state@2");
  ASSERT_EQ(storage.durable().entries.size(), 1u);
  EXPECT_EQ(storage.durable().entries.begin()->first, 3u);
}

TEST(MemoryStorageTest, EmptyBatchIsNotCountedAsASave) {
  MemoryStorage storage;
  ASSERT_TRUE(storage.Save(PersistBatch()).ok());
  EXPECT_EQ(storage.saves(), 0u);
}

}  // namespace
}  // namespace lockd::paxos
