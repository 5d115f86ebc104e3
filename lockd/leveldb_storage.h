// LevelDbStorage keeps one replica's durable Paxos state (hard state, latest
// snapshot, log entries) in a LevelDB database. It is the only code in lockd
// that talks to LevelDB.
//
// On-disk format (format version 1). Keys are fixed width and big-endian, so
// LevelDB's byte order is slot order:
//   "e" + 8-byte big-endian slot   an Entry (paxospb::Entry)
//   "h"                            the HardState (paxospb::HardState)
//   "s"                            the latest Snapshot (paxospb::Snapshot)
//   "v"                            the format version, a 4-byte big-endian
//                                  unsigned integer
// Every value is a record: the masked CRC32C (lockd/crc32c.h) of the payload as
// a 4-byte little-endian integer, followed by the payload (the serialized
// proto, or the version integer). Load() verifies every record and reports any
// damage as DATA_LOSS naming the key; it never returns state it could not
// verify. Open() refuses a database of an unknown format version with
// FAILED_PRECONDITION.
//
// Each Save() is one LevelDB WriteBatch written with sync = true, so it is
// atomic and durable once Save() returns OK. Entries at or below the snapshot
// index (the stored one, or the one in the same batch) are never stored: a
// batch carrying a snapshot deletes them, and a batch entry at or below the
// snapshot index is skipped, because the snapshot already covers that slot.
//
// Errors from LevelDB are converted to absl::Status (message names the
// directory): Corruption -> DATA_LOSS, IOError -> UNAVAILABLE (the disk or the
// database lock cannot be used now; a restart may succeed), NotFound ->
// NOT_FOUND, NotSupported -> UNIMPLEMENTED, InvalidArgument ->
// INVALID_ARGUMENT. As the Storage contract says, any error is fatal for the
// replica.
//
// Thread-safety: not thread-safe; use one instance from one thread at a time.
// At most one instance (in any process) may have a directory open; LevelDB's
// lock file enforces this.
#ifndef LOCKD_LEVELDB_STORAGE_H_
#define LOCKD_LEVELDB_STORAGE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "paxos/storage.h"

namespace leveldb {
class DB;
class Env;
class WriteBatch;
}  // namespace leveldb

namespace lockd {

class LevelDbStorage : public paxos::Storage {
 public:
  // The on-disk format version this code reads and writes.
  static constexpr uint32_t kFormatVersion = 1;

  // Opens the database in directory `dir`, creating it if missing, and checks
  // its format version. `env` is used for all file access when non-null (tests
  // pass an in-memory Env); it must outlive the returned storage. nullptr means
  // LevelDB's default Env (the real file system).
  //
  // Returns FAILED_PRECONDITION for an unknown format version, DATA_LOSS for a
  // corrupt version or snapshot record or a non-empty database without a
  // version, UNAVAILABLE if the directory cannot be used (e.g. it is locked by
  // another process).
  static absl::StatusOr<std::unique_ptr<LevelDbStorage>> Open(
      const std::string& dir, leveldb::Env* env = nullptr);

  LevelDbStorage(const LevelDbStorage&) = delete;
  LevelDbStorage& operator=(const LevelDbStorage&) = delete;
  ~LevelDbStorage() override;

  // Reads and verifies every record. Returns DATA_LOSS with a message naming
  // the key if a record fails its checksum or does not parse, if an entry key's
  // slot differs from the slot in the entry, if an entry lies at or below the
  // snapshot index, or if an unknown key is present.
  absl::StatusOr<paxos::DurableState> Load() override;

  // Writes `batch` as one synced WriteBatch; does nothing for an empty batch.
  // A snapshot in the batch deletes every stored entry at or below its index.
  // Batch entries at or below the snapshot index (the batch's snapshot if it
  // has one, the stored snapshot otherwise) are skipped.
  absl::Status Save(const paxos::PersistBatch& batch) override;

 private:
  LevelDbStorage(std::string dir, std::unique_ptr<leveldb::DB> db,
                 std::optional<uint64_t> snapshot_index);

  // Adds to `batch` a deletion of every stored entry with slot <= `index`.
  absl::Status DeleteEntriesThrough(uint64_t index, leveldb::WriteBatch* batch);

  const std::string dir_;
  const std::unique_ptr<leveldb::DB> db_;
  // Index of the stored snapshot; nullopt when there is none.
  std::optional<uint64_t> snapshot_index_;
};

}  // namespace lockd

#endif  // LOCKD_LEVELDB_STORAGE_H_
