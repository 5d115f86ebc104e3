#include "paxos/memory_storage.h"

namespace lockd::paxos {
namespace {

// Applies `batch` to `state` exactly as a Storage must: snapshot first
// (dropping entries at or below it), then entries above the snapshot, then
// the hard state.
void ApplyPersistBatch(const PersistBatch& batch, DurableState& state) {
  if (batch.snapshot.has_value()) {
    state.snapshot = batch.snapshot;
    state.entries.erase(state.entries.begin(),
                        state.entries.upper_bound(batch.snapshot->index()));
  }
  const uint64_t snapshot_index =
      state.snapshot.has_value() ? state.snapshot->index() : 0;
  for (const paxospb::Entry& entry : batch.entries) {
    if (entry.slot() > snapshot_index) state.entries[entry.slot()] = entry;
  }
  if (batch.hard_state.has_value()) state.hard_state = *batch.hard_state;
}

}  // namespace

void MemoryStorage::Write(const PersistBatch& batch) {
  if (!batch.empty()) unsynced_.push_back(batch);
}

void MemoryStorage::Sync() {
  for (const PersistBatch& batch : unsynced_) {
    ApplyPersistBatch(batch, durable_);
  }
  unsynced_.clear();
}

absl::Status MemoryStorage::Save(const PersistBatch& batch) {
  if (batch.empty()) return absl::OkStatus();
  Write(batch);
  Sync();
  ++saves_;
  return absl::OkStatus();
}

}  // namespace lockd::paxos
