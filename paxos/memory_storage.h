#ifndef LOCKD_PAXOS_MEMORY_STORAGE_H_
#define LOCKD_PAXOS_MEMORY_STORAGE_H_

#include <cstdint>
#include <vector>

#include "paxos/storage.h"

namespace lockd::paxos {

// Storage kept in memory, for tests, simulation and benchmarks. It models a
// disk with a write cache: Write() puts a batch in the cache, Sync() makes
// everything cached durable, and Crash() loses whatever was not synced.
// Save() is Write() followed by Sync(), so it honours the Storage contract.
// Not thread-safe.
class MemoryStorage : public Storage {
 public:
  // Returns the durable state (what survives a crash).
  absl::StatusOr<DurableState> Load() override { return durable_; }
  absl::Status Save(const PersistBatch& batch) override;

  // Caches `batch` without making it durable.
  void Write(const PersistBatch& batch);
  // Makes every cached batch durable, in order.
  void Sync();
  // Simulates power loss: drops every batch not yet synced.
  void Crash() { unsynced_.clear(); }

  // Number of non-empty batches made durable by Save() (one fsync each on a
  // real disk).
  uint64_t saves() const { return saves_; }
  const DurableState& durable() const { return durable_; }

 private:
  DurableState durable_;
  std::vector<PersistBatch> unsynced_;
  uint64_t saves_ = 0;
};

}  // namespace lockd::paxos

#endif  // LOCKD_PAXOS_MEMORY_STORAGE_H_
