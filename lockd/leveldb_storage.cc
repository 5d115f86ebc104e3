#include "lockd/leveldb_storage.h"

#include <map>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message_lite.h"
#include "leveldb/db.h"
#include "leveldb/iterator.h"
#include "leveldb/options.h"
#include "leveldb/slice.h"
#include "leveldb/status.h"
#include "leveldb/write_batch.h"
#include "lockd/crc32c.h"

namespace lockd {
namespace {

using paxos::DurableState;
using paxos::PersistBatch;

constexpr char kEntryPrefix = 'e';
constexpr size_t kEntryKeySize = 1 + sizeof(uint64_t);
constexpr absl::string_view kHardStateKey = "h";
constexpr absl::string_view kSnapshotKey = "s";
constexpr absl::string_view kVersionKey = "v";
constexpr size_t kChecksumSize = sizeof(uint32_t);
constexpr size_t kVersionSize = sizeof(uint32_t);

// The one place where a leveldb::Status becomes an absl::Status.
absl::Status FromLevelDb(const leveldb::Status& status,
                         absl::string_view operation, absl::string_view dir) {
  if (status.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat("leveldb ", operation, " failed in ",
                                           dir, ": ", status.ToString());
  if (status.IsCorruption()) return absl::DataLossError(message);
  if (status.IsIOError()) return absl::UnavailableError(message);
  if (status.IsNotFound()) return absl::NotFoundError(message);
  if (status.IsNotSupportedError()) return absl::UnimplementedError(message);
  if (status.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

leveldb::Slice ToSlice(absl::string_view s) {
  return leveldb::Slice(s.data(), s.size());
}

absl::string_view ToStringView(const leveldb::Slice& s) {
  return absl::string_view(s.data(), s.size());
}

leveldb::ReadOptions VerifyingReadOptions() {
  leveldb::ReadOptions options;
  options.verify_checksums = true;
  return options;
}

leveldb::WriteOptions SyncWriteOptions() {
  leveldb::WriteOptions options;
  options.sync = true;
  return options;
}

std::string EntryKey(uint64_t slot) {
  std::string key(kEntryKeySize, '\0');
  key[0] = kEntryPrefix;
  for (size_t i = 0; i < sizeof(slot); ++i) {
    key[1 + i] = static_cast<char>(slot >> (8 * (sizeof(slot) - 1 - i)));
  }
  return key;
}

uint64_t DecodeBigEndian(absl::string_view bytes) {
  uint64_t value = 0;
  for (char byte : bytes) {
    value = (value << 8) | static_cast<unsigned char>(byte);
  }
  return value;
}

std::string EncodeRecord(absl::string_view payload) {
  const uint32_t masked_crc =
      crc32c::Mask(crc32c::Value(payload.data(), payload.size()));
  std::string record(kChecksumSize, '\0');
  for (size_t i = 0; i < kChecksumSize; ++i) {
    record[i] = static_cast<char>(masked_crc >> (8 * i));
  }
  record.append(payload.data(), payload.size());
  return record;
}

absl::StatusOr<std::string> SerializeRecord(
    const google::protobuf::MessageLite& message) {
  std::string payload;
  if (!message.SerializeToString(&payload)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot serialize a ", message.GetTypeName(), " of ",
                     message.ByteSizeLong(), " bytes"));
  }
  return EncodeRecord(payload);
}

// Returns the payload of `record` if its checksum matches, else DATA_LOSS
// naming `what` and `dir`.
absl::StatusOr<absl::string_view> VerifyRecord(absl::string_view record,
                                               absl::string_view what,
                                               absl::string_view dir) {
  if (record.size() < kChecksumSize) {
    return absl::DataLossError(absl::StrCat(
        "corrupt ", what, " in ", dir, ": record has ", record.size(),
        " bytes, fewer than its ", kChecksumSize, "-byte checksum"));
  }
  uint32_t stored_masked_crc = 0;
  for (size_t i = 0; i < kChecksumSize; ++i) {
    stored_masked_crc |=
        static_cast<uint32_t>(static_cast<unsigned char>(record[i])) << (8 * i);
  }
  const absl::string_view payload = record.substr(kChecksumSize);
  const uint32_t stored_crc = crc32c::Unmask(stored_masked_crc);
  const uint32_t computed_crc = crc32c::Value(payload.data(), payload.size());
  if (stored_crc != computed_crc) {
    return absl::DataLossError(absl::StrCat(
        "corrupt ", what, " in ", dir, ": checksum mismatch (stored 0x",
        absl::Hex(stored_crc, absl::kZeroPad8), ", computed 0x",
        absl::Hex(computed_crc, absl::kZeroPad8), ")"));
  }
  return payload;
}

// Verifies `record` and parses its payload into `message`.
absl::Status ParseRecord(absl::string_view record, absl::string_view what,
                         absl::string_view dir,
                         google::protobuf::MessageLite* message) {
  absl::StatusOr<absl::string_view> payload = VerifyRecord(record, what, dir);
  if (!payload.ok()) return payload.status();
  if (!message->ParseFromArray(payload->data(),
                               static_cast<int>(payload->size()))) {
    return absl::DataLossError(absl::StrCat("corrupt ", what, " in ", dir,
                                            ": payload does not parse as ",
                                            message->GetTypeName()));
  }
  return absl::OkStatus();
}

// Returns OK iff `record` is an intact format version record of
// kFormatVersion.
absl::Status CheckVersionRecord(absl::string_view record,
                                absl::string_view dir) {
  constexpr absl::string_view kWhat = "format version record";
  absl::StatusOr<absl::string_view> payload = VerifyRecord(record, kWhat, dir);
  if (!payload.ok()) return payload.status();
  if (payload->size() != kVersionSize) {
    return absl::DataLossError(absl::StrCat("corrupt ", kWhat, " in ", dir,
                                            ": payload has ", payload->size(),
                                            " bytes, want ", kVersionSize));
  }
  const uint64_t version = DecodeBigEndian(*payload);
  if (version != LevelDbStorage::kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database in ", dir, " has on-disk format version ", version,
        " but this lockd reads only version ", LevelDbStorage::kFormatVersion,
        "; run a lockd release that supports version ", version));
  }
  return absl::OkStatus();
}

// Checks the format version of `db`; stamps kFormatVersion into a new, empty
// database.
absl::Status CheckFormatVersion(leveldb::DB& db, absl::string_view dir) {
  std::string record;
  const leveldb::Status read_status =
      db.Get(VerifyingReadOptions(), ToSlice(kVersionKey), &record);
  if (read_status.ok()) return CheckVersionRecord(record, dir);
  if (!read_status.IsNotFound()) {
    return FromLevelDb(read_status, "read of the format version", dir);
  }
  std::unique_ptr<leveldb::Iterator> it(db.NewIterator(VerifyingReadOptions()));
  it->SeekToFirst();
  if (it->Valid()) {
    return absl::DataLossError(
        absl::StrCat("corrupt database in ", dir,
                     ": no format version record, but it holds key \"",
                     absl::CEscape(ToStringView(it->key())), "\""));
  }
  absl::Status status = FromLevelDb(it->status(), "scan", dir);
  if (!status.ok()) return status;
  std::string version(kVersionSize, '\0');
  for (size_t i = 0; i < kVersionSize; ++i) {
    version[i] = static_cast<char>(LevelDbStorage::kFormatVersion >>
                                   (8 * (kVersionSize - 1 - i)));
  }
  return FromLevelDb(db.Put(SyncWriteOptions(), ToSlice(kVersionKey),
                            ToSlice(EncodeRecord(version))),
                     "write of the format version", dir);
}

// Returns the index of the snapshot stored in `db`, nullopt if there is none.
absl::StatusOr<std::optional<uint64_t>> ReadSnapshotIndex(
    leveldb::DB& db, absl::string_view dir) {
  std::string record;
  const leveldb::Status read_status =
      db.Get(VerifyingReadOptions(), ToSlice(kSnapshotKey), &record);
  if (read_status.IsNotFound()) return std::optional<uint64_t>();
  if (!read_status.ok()) {
    return FromLevelDb(read_status, "read of the snapshot", dir);
  }
  paxospb::Snapshot snapshot;
  absl::Status status = ParseRecord(record, "snapshot record", dir, &snapshot);
  if (!status.ok()) return status;
  return std::optional<uint64_t>(snapshot.index());
}

// Verifies the entry record `record` stored under `key` and adds it to
// `entries`.
absl::Status LoadEntry(absl::string_view key, absl::string_view record,
                       absl::string_view dir,
                       std::map<uint64_t, paxospb::Entry>* entries) {
  if (key.size() != kEntryKeySize) {
    return absl::DataLossError(absl::StrCat(
        "corrupt database in ", dir, ": entry key \"", absl::CEscape(key),
        "\" has ", key.size(), " bytes, want ", kEntryKeySize));
  }
  const uint64_t slot = DecodeBigEndian(key.substr(1));
  const std::string what = absl::StrCat("entry record for slot ", slot);
  paxospb::Entry entry;
  absl::Status status = ParseRecord(record, what, dir, &entry);
  if (!status.ok()) return status;
  if (entry.slot() != slot) {
    return absl::DataLossError(absl::StrCat(
        "corrupt ", what, " in ", dir, ": record holds slot ", entry.slot()));
  }
  entries->emplace_hint(entries->end(), slot, std::move(entry));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LevelDbStorage>> LevelDbStorage::Open(
    const std::string& dir, leveldb::Env* env) {
  leveldb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  if (env != nullptr) options.env = env;
  leveldb::DB* raw_db = nullptr;
  absl::Status status =
      FromLevelDb(leveldb::DB::Open(options, dir, &raw_db), "open", dir);
  if (!status.ok()) return status;
  std::unique_ptr<leveldb::DB> db(raw_db);
  status = CheckFormatVersion(*db, dir);
  if (!status.ok()) return status;
  absl::StatusOr<std::optional<uint64_t>> snapshot_index =
      ReadSnapshotIndex(*db, dir);
  if (!snapshot_index.ok()) return snapshot_index.status();
  return std::unique_ptr<LevelDbStorage>(
      new LevelDbStorage(dir, std::move(db), *snapshot_index));
}

LevelDbStorage::LevelDbStorage(std::string dir, std::unique_ptr<leveldb::DB> db,
                               std::optional<uint64_t> snapshot_index)
    : dir_(std::move(dir)),
      db_(std::move(db)),
      snapshot_index_(snapshot_index) {}

LevelDbStorage::~LevelDbStorage() = default;

absl::StatusOr<DurableState> LevelDbStorage::Load() {
  DurableState state;
  leveldb::ReadOptions options = VerifyingReadOptions();
  options.fill_cache = false;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(options));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const absl::string_view key = ToStringView(it->key());
    const absl::string_view record = ToStringView(it->value());
    absl::Status status;
    if (!key.empty() && key[0] == kEntryPrefix) {
      status = LoadEntry(key, record, dir_, &state.entries);
    } else if (key == kHardStateKey) {
      status =
          ParseRecord(record, "hard state record", dir_, &state.hard_state);
    } else if (key == kSnapshotKey) {
      status = ParseRecord(record, "snapshot record", dir_,
                           &state.snapshot.emplace());
    } else if (key == kVersionKey) {
      status = CheckVersionRecord(record, dir_);
    } else {
      status = absl::DataLossError(absl::StrCat("corrupt database in ", dir_,
                                                ": unknown key \"",
                                                absl::CEscape(key), "\""));
    }
    if (!status.ok()) return status;
  }
  absl::Status status = FromLevelDb(it->status(), "scan", dir_);
  if (!status.ok()) return status;
  if (state.snapshot.has_value() && !state.entries.empty() &&
      state.entries.begin()->first <= state.snapshot->index()) {
    return absl::DataLossError(absl::StrCat(
        "corrupt database in ", dir_, ": entry record for slot ",
        state.entries.begin()->first, " lies at or below snapshot index ",
        state.snapshot->index()));
  }
  return state;
}

absl::Status LevelDbStorage::DeleteEntriesThrough(uint64_t index,
                                                  leveldb::WriteBatch* batch) {
  const std::string last_key = EntryKey(index);
  std::unique_ptr<leveldb::Iterator> it(
      db_->NewIterator(VerifyingReadOptions()));
  for (it->Seek(leveldb::Slice(&kEntryPrefix, 1));
       it->Valid() && it->key().compare(last_key) <= 0; it->Next()) {
    if (it->key().size() != kEntryKeySize) {
      return absl::DataLossError(
          absl::StrCat("corrupt database in ", dir_, ": entry key \"",
                       absl::CEscape(ToStringView(it->key())), "\" has ",
                       it->key().size(), " bytes, want ", kEntryKeySize));
    }
    batch->Delete(it->key());
  }
  return FromLevelDb(it->status(), "scan of entries", dir_);
}

absl::Status LevelDbStorage::Save(const PersistBatch& batch) {
  leveldb::WriteBatch write_batch;
  bool has_updates = false;
  std::optional<uint64_t> snapshot_index = snapshot_index_;
  if (batch.snapshot.has_value()) {
    snapshot_index = batch.snapshot->index();
    absl::StatusOr<std::string> record = SerializeRecord(*batch.snapshot);
    if (!record.ok()) return record.status();
    write_batch.Put(ToSlice(kSnapshotKey), *record);
    absl::Status status = DeleteEntriesThrough(*snapshot_index, &write_batch);
    if (!status.ok()) return status;
    has_updates = true;
  }
  if (batch.hard_state.has_value()) {
    absl::StatusOr<std::string> record = SerializeRecord(*batch.hard_state);
    if (!record.ok()) return record.status();
    write_batch.Put(ToSlice(kHardStateKey), *record);
    has_updates = true;
  }
  for (const paxospb::Entry& entry : batch.entries) {
    if (snapshot_index.has_value() && entry.slot() <= *snapshot_index) {
      continue;
    }
    absl::StatusOr<std::string> record = SerializeRecord(entry);
    if (!record.ok()) return record.status();
    write_batch.Put(EntryKey(entry.slot()), *record);
    has_updates = true;
  }
  if (!has_updates) return absl::OkStatus();
  absl::Status status = FromLevelDb(
      db_->Write(SyncWriteOptions(), &write_batch), "synced write", dir_);
  if (!status.ok()) return status;
  snapshot_index_ = snapshot_index;
  return absl::OkStatus();
}

}  // namespace lockd
