#ifndef LOCKD_PAXOS_STORAGE_H_
#define LOCKD_PAXOS_STORAGE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "protos/paxos.pb.h"

namespace lockd::paxos {

// Everything a replica keeps on disk. Loaded once at start-up to rebuild the
// replica after a crash or restart.
struct DurableState {
  paxospb::HardState hard_state;
  // The latest snapshot, if any; entries at or below its index are gone.
  std::optional<paxospb::Snapshot> snapshot;
  // Accepted or chosen entries above the snapshot, keyed by slot.
  std::map<uint64_t, paxospb::Entry> entries;
};

// One atomic, durable update produced by Replica::GetReady().
struct PersistBatch {
  // Replaces the stored hard state when set.
  std::optional<paxospb::HardState> hard_state;
  // Each entry replaces whatever is stored for its slot.
  std::vector<paxospb::Entry> entries;
  // Replaces the stored snapshot when set, and deletes every stored entry at
  // or below its index (log compaction).
  std::optional<paxospb::Snapshot> snapshot;

  bool empty() const {
    return !hard_state.has_value() && entries.empty() && !snapshot.has_value();
  }
};

// Durable storage of one replica's acceptor state.
//
// Contract: Save() returns OK only once the whole batch is durable (synced to
// stable storage) and applied atomically: after a crash, Load() returns either
// the state before the batch or the state after it, never a mix. A replica
// must not send any message that depends on a batch before Save() of that
// batch returned OK. Any error is fatal for the replica (fail-stop): the
// caller must stop rather than continue with state it cannot persist.
//
// Implementations are not required to be thread-safe.
class Storage {
 public:
  virtual ~Storage() = default;

  // Returns the durable state; an empty state for a new replica. Returns
  // DATA_LOSS if a stored record is corrupt.
  virtual absl::StatusOr<DurableState> Load() = 0;

  // Durably and atomically applies `batch`.
  virtual absl::Status Save(const PersistBatch& batch) = 0;
};

}  // namespace lockd::paxos

#endif  // LOCKD_PAXOS_STORAGE_H_
