#ifndef LOCKD_PAXOS_MEMORY_STORAGE_H_
#define LOCKD_PAXOS_MEMORY_STORAGE_H_

#include "paxos/storage.h"

namespace lockd::paxos {

// Storage kept in memory: for tests, simulation and benchmarks. Save() is
// "durable" the moment it returns, so a simulated crash keeps exactly what
// was saved. Not thread-safe.
class MemoryStorage : public Storage {
 public:
  absl::StatusOr<DurableState> Load() override { return state_; }
  absl::Status Save(const PersistBatch& batch) override;

  // Number of Save() calls that wrote something (one fsync each on disk).
  uint64_t saves() const { return saves_; }
  const DurableState& state() const { return state_; }

 private:
  DurableState state_;
  uint64_t saves_ = 0;
};

// Applies `batch` to `state` exactly as a Storage must: snapshot first
// (dropping entries at or below it), then entries above the snapshot, then
// the hard state.
void ApplyPersistBatch(const PersistBatch& batch, DurableState& state);

}  // namespace lockd::paxos

#endif  // LOCKD_PAXOS_MEMORY_STORAGE_H_
