#include "lockd/leveldb_storage.h"

#include <stdlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "leveldb/db.h"
#include "leveldb/env.h"
#include "leveldb/helpers/memenv.h"
#include "leveldb/iterator.h"
#include "leveldb/options.h"
#include "lockd/crc32c.h"

namespace lockd {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using paxos::DurableState;
using paxos::PersistBatch;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

constexpr char kDir[] = "/db/replica-1";

// The on-disk format as documented in lockd/leveldb_storage.h, written out
// independently so that these tests pin it down.
std::string EntryKey(uint64_t slot) {
  std::string key = "e";
  for (int shift = 56; shift >= 0; shift -= 8) {
    key.push_back(static_cast<char>(slot >> shift));
  }
  return key;
}

std::string Record(const std::string& payload) {
  const uint32_t masked_crc =
      crc32c::Mask(crc32c::Value(payload.data(), payload.size()));
  std::string record;
  for (int shift = 0; shift < 32; shift += 8) {
    record.push_back(static_cast<char>(masked_crc >> shift));
  }
  return record + payload;
}

std::string VersionRecord(uint32_t version) {
  std::string payload;
  for (int shift = 24; shift >= 0; shift -= 8) {
    payload.push_back(static_cast<char>(version >> shift));
  }
  return Record(payload);
}

paxospb::Entry MakeEntry(uint64_t slot, uint64_t round,
                         const std::string& command) {
  paxospb::Entry entry;
  entry.set_slot(slot);
  entry.mutable_ballot()->set_round(round);
  entry.mutable_ballot()->set_replica_id(2);
  entry.mutable_value()->add_commands(command);
  entry.set_chosen(slot % 2 == 0);
  return entry;
}

paxospb::HardState MakeHardState(uint64_t round, uint64_t commit) {
  paxospb::HardState hard_state;
  hard_state.mutable_promised()->set_round(round);
  hard_state.mutable_promised()->set_replica_id(3);
  hard_state.set_commit(commit);
  return hard_state;
}

paxospb::Snapshot MakeSnapshot(uint64_t index) {
  paxospb::Snapshot snapshot;
  snapshot.set_index(index);
  snapshot.set_data(absl::StrCat("state machine through slot ", index));
  return snapshot;
}

MATCHER_P(EqualsProto, expected, "equals " + expected.ShortDebugString()) {
  return MessageDifferencer::Equals(arg, expected);
}

// Expects `actual` to equal `expected` field by field.
void ExpectStateEq(const DurableState& actual, const DurableState& expected) {
  EXPECT_THAT(actual.hard_state, EqualsProto(expected.hard_state));
  ASSERT_EQ(actual.snapshot.has_value(), expected.snapshot.has_value());
  if (expected.snapshot.has_value()) {
    EXPECT_THAT(*actual.snapshot, EqualsProto(*expected.snapshot));
  }
  std::vector<uint64_t> actual_slots;
  for (const auto& [slot, entry] : actual.entries) actual_slots.push_back(slot);
  std::vector<uint64_t> expected_slots;
  for (const auto& [slot, entry] : expected.entries) {
    expected_slots.push_back(slot);
  }
  ASSERT_EQ(actual_slots, expected_slots);
  for (const auto& [slot, entry] : expected.entries) {
    EXPECT_THAT(actual.entries.at(slot), EqualsProto(entry)) << "slot " << slot;
  }
}

// Counts Sync() calls on LevelDB's write-ahead log files and otherwise
// delegates to `target`.
class LogSyncCountingEnv : public leveldb::EnvWrapper {
 public:
  explicit LogSyncCountingEnv(leveldb::Env* target) : EnvWrapper(target) {}

  leveldb::Status NewWritableFile(const std::string& name,
                                  leveldb::WritableFile** file) override {
    const leveldb::Status status = target()->NewWritableFile(name, file);
    if (status.ok() && IsLog(name)) *file = new CountingFile(*file, &syncs_);
    return status;
  }

  static bool IsLog(const std::string& name) {
    return name.size() > 4 && name.compare(name.size() - 4, 4, ".log") == 0;
  }

  int log_syncs() const { return syncs_.load(); }

 private:
  class CountingFile : public leveldb::WritableFile {
   public:
    CountingFile(leveldb::WritableFile* file, std::atomic<int>* syncs)
        : file_(file), syncs_(syncs) {}
    leveldb::Status Append(const leveldb::Slice& data) override {
      return file_->Append(data);
    }
    leveldb::Status Close() override { return file_->Close(); }
    leveldb::Status Flush() override { return file_->Flush(); }
    leveldb::Status Sync() override {
      ++*syncs_;
      return file_->Sync();
    }

   private:
    const std::unique_ptr<leveldb::WritableFile> file_;
    std::atomic<int>* const syncs_;
  };

  std::atomic<int> syncs_{0};
};

class LevelDbStorageTest : public ::testing::Test {
 protected:
  // Opens a new LevelDbStorage on the in-memory directory kDir.
  absl::StatusOr<std::unique_ptr<LevelDbStorage>> Open() {
    return LevelDbStorage::Open(kDir, &env_);
  }

  // Saves `batch` through a storage that is closed again afterwards.
  void SaveAndClose(const PersistBatch& batch) {
    absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage = Open();
    ASSERT_TRUE(storage.ok()) << storage.status();
    ASSERT_TRUE((*storage)->Save(batch).ok());
  }

  // Loads through a freshly opened storage, as a restarted replica does.
  absl::StatusOr<DurableState> ReopenAndLoad() {
    absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage = Open();
    if (!storage.ok()) return storage.status();
    return (*storage)->Load();
  }

  // Opens kDir with LevelDB directly, bypassing LevelDbStorage.
  std::unique_ptr<leveldb::DB> OpenRaw() {
    leveldb::Options options;
    options.env = &env_;
    options.create_if_missing = true;
    leveldb::DB* db = nullptr;
    const leveldb::Status status = leveldb::DB::Open(options, kDir, &db);
    EXPECT_TRUE(status.ok()) << status.ToString();
    return std::unique_ptr<leveldb::DB>(db);
  }

  std::string GetRaw(const std::string& key) {
    std::string value;
    const leveldb::Status status =
        OpenRaw()->Get(leveldb::ReadOptions(), key, &value);
    EXPECT_TRUE(status.ok()) << key << ": " << status.ToString();
    return value;
  }

  void PutRaw(const std::string& key, const std::string& value) {
    const leveldb::Status status =
        OpenRaw()->Put(leveldb::WriteOptions(), key, value);
    ASSERT_TRUE(status.ok()) << status.ToString();
  }

  std::vector<std::string> RawKeys() {
    std::unique_ptr<leveldb::DB> db = OpenRaw();
    std::unique_ptr<leveldb::Iterator> it(
        db->NewIterator(leveldb::ReadOptions()));
    std::vector<std::string> keys;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      keys.push_back(it->key().ToString());
    }
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    return keys;
  }

  // Total size of LevelDB's write-ahead log files in kDir.
  uint64_t LogBytes() {
    std::vector<std::string> children;
    EXPECT_TRUE(env_.GetChildren(kDir, &children).ok());
    uint64_t total = 0;
    for (const std::string& child : children) {
      if (LogSyncCountingEnv::IsLog(child)) {
        uint64_t size = 0;
        EXPECT_TRUE(
            env_.GetFileSize(absl::StrCat(kDir, "/", child), &size).ok());
        total += size;
      }
    }
    return total;
  }

  // Entries for slots [first, last], all at ballot round `round`.
  static std::vector<paxospb::Entry> Entries(uint64_t first, uint64_t last,
                                             uint64_t round) {
    std::vector<paxospb::Entry> entries;
    for (uint64_t slot = first; slot <= last; ++slot) {
      entries.push_back(
          MakeEntry(slot, round, absl::StrCat("command ", slot, "@", round)));
    }
    return entries;
  }

  static void AddEntries(const std::vector<paxospb::Entry>& entries,
                         DurableState* state) {
    for (const paxospb::Entry& entry : entries) {
      state->entries[entry.slot()] = entry;
    }
  }

  const std::unique_ptr<leveldb::Env> mem_env_{
      leveldb::NewMemEnv(leveldb::Env::Default())};
  LogSyncCountingEnv env_{mem_env_.get()};
};

TEST_F(LevelDbStorageTest, NewDatabaseLoadsEmptyState) {
  absl::StatusOr<DurableState> state = ReopenAndLoad();
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectStateEq(*state, DurableState());
}

TEST_F(LevelDbStorageTest, LoadAfterReopenReturnsWhatWasSaved) {
  PersistBatch first;
  first.hard_state = MakeHardState(/*round=*/4, /*commit=*/2);
  first.entries = Entries(1, 6, /*round=*/4);
  SaveAndClose(first);

  PersistBatch second;
  second.hard_state = MakeHardState(/*round=*/5, /*commit=*/6);
  second.entries = Entries(7, 8, /*round=*/5);
  second.entries.push_back(MakeEntry(3, /*round=*/5, "replaced command"));
  SaveAndClose(second);

  DurableState expected;
  expected.hard_state = *second.hard_state;
  AddEntries(first.entries, &expected);
  AddEntries(second.entries, &expected);
  absl::StatusOr<DurableState> state = ReopenAndLoad();
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectStateEq(*state, expected);
  EXPECT_EQ(state->entries.at(3).value().commands(0), "replaced command");
}

TEST_F(LevelDbStorageTest, StoresTheDocumentedOnDiskFormat) {
  PersistBatch batch;
  batch.hard_state = MakeHardState(/*round=*/9, /*commit=*/1);
  batch.entries = {MakeEntry(0x0102030405060708, /*round=*/9, "x")};
  batch.snapshot = MakeSnapshot(1);
  SaveAndClose(batch);

  EXPECT_THAT(RawKeys(),
              ElementsAre(std::string("e\x01\x02\x03\x04\x05\x06\x07\x08", 9),
                          "h", "s", "v"));
  EXPECT_EQ(GetRaw("h"), Record(batch.hard_state->SerializeAsString()));
  EXPECT_EQ(GetRaw("s"), Record(batch.snapshot->SerializeAsString()));
  EXPECT_EQ(GetRaw(EntryKey(0x0102030405060708)),
            Record(batch.entries[0].SerializeAsString()));
  EXPECT_EQ(GetRaw("v"), VersionRecord(LevelDbStorage::kFormatVersion));
}

TEST_F(LevelDbStorageTest, SnapshotDeletesEntriesAtOrBelowIndexKeepsLaterOnes) {
  PersistBatch first;
  first.hard_state = MakeHardState(/*round=*/1, /*commit=*/10);
  first.entries = Entries(1, 10, /*round=*/1);
  SaveAndClose(first);

  PersistBatch second;
  second.snapshot = MakeSnapshot(6);
  second.hard_state = MakeHardState(/*round=*/2, /*commit=*/11);
  // At or below the snapshot index: must not be written.
  second.entries.push_back(MakeEntry(5, /*round=*/2, "compacted"));
  second.entries.push_back(MakeEntry(6, /*round=*/2, "compacted"));
  // Above it: written.
  second.entries.push_back(MakeEntry(11, /*round=*/2, "eleven"));
  second.entries.push_back(MakeEntry(12, /*round=*/2, "twelve"));
  SaveAndClose(second);

  DurableState expected;
  expected.hard_state = *second.hard_state;
  expected.snapshot = *second.snapshot;
  AddEntries(Entries(7, 10, /*round=*/1), &expected);
  expected.entries[11] = second.entries[2];
  expected.entries[12] = second.entries[3];
  absl::StatusOr<DurableState> state = ReopenAndLoad();
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectStateEq(*state, expected);

  std::vector<std::string> expected_keys;
  for (uint64_t slot = 7; slot <= 12; ++slot) {
    expected_keys.push_back(EntryKey(slot));
  }
  expected_keys.insert(expected_keys.end(), {"h", "s", "v"});
  EXPECT_EQ(RawKeys(), expected_keys);
}

TEST_F(LevelDbStorageTest, SnapshotAboveAllEntriesDeletesEveryEntry) {
  PersistBatch first;
  first.entries = Entries(1, 5, /*round=*/1);
  SaveAndClose(first);

  PersistBatch second;
  second.snapshot = MakeSnapshot(100);
  SaveAndClose(second);

  DurableState expected;
  expected.snapshot = *second.snapshot;
  absl::StatusOr<DurableState> state = ReopenAndLoad();
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectStateEq(*state, expected);
  EXPECT_THAT(RawKeys(), ElementsAre("s", "v"));
}

TEST_F(LevelDbStorageTest, EntriesAtOrBelowStoredSnapshotAreSkipped) {
  PersistBatch first;
  first.snapshot = MakeSnapshot(6);
  first.entries = Entries(7, 8, /*round=*/1);
  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage = Open();
  ASSERT_TRUE(storage.ok()) << storage.status();
  ASSERT_TRUE((*storage)->Save(first).ok());

  // Same instance: the snapshot index is known from the previous Save().
  PersistBatch second;
  second.entries = {MakeEntry(6, /*round=*/2, "late"),
                    MakeEntry(9, /*round=*/2, "nine")};
  ASSERT_TRUE((*storage)->Save(second).ok());
  storage->reset();

  // New instance: the snapshot index is read back at Open().
  PersistBatch third;
  third.entries = {MakeEntry(2, /*round=*/3, "late"),
                   MakeEntry(10, /*round=*/3, "ten")};
  SaveAndClose(third);

  DurableState expected;
  expected.snapshot = *first.snapshot;
  AddEntries(first.entries, &expected);
  expected.entries[9] = second.entries[1];
  expected.entries[10] = third.entries[1];
  absl::StatusOr<DurableState> state = ReopenAndLoad();
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectStateEq(*state, expected);
}

TEST_F(LevelDbStorageTest, EverySaveIsOneSyncedWrite) {
  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage = Open();
  ASSERT_TRUE(storage.ok()) << storage.status();
  for (uint64_t round = 1; round <= 3; ++round) {
    PersistBatch batch;
    batch.hard_state = MakeHardState(round, /*commit=*/round);
    batch.entries = Entries(round * 10, round * 10 + 4, round);
    if (round == 2) batch.snapshot = MakeSnapshot(12);
    const int syncs_before = env_.log_syncs();
    ASSERT_TRUE((*storage)->Save(batch).ok());
    EXPECT_EQ(env_.log_syncs(), syncs_before + 1) << "round " << round;
  }
}

TEST_F(LevelDbStorageTest, EmptyBatchWritesNothing) {
  PersistBatch batch;
  batch.hard_state = MakeHardState(/*round=*/1, /*commit=*/0);
  batch.entries = Entries(1, 2, /*round=*/1);
  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage = Open();
  ASSERT_TRUE(storage.ok()) << storage.status();
  ASSERT_TRUE((*storage)->Save(batch).ok());
  const uint64_t log_bytes = LogBytes();
  ASSERT_GT(log_bytes, 0u);

  const int log_syncs = env_.log_syncs();
  ASSERT_TRUE((*storage)->Save(PersistBatch()).ok());
  EXPECT_EQ(LogBytes(), log_bytes);
  EXPECT_EQ(env_.log_syncs(), log_syncs);

  // A non-empty batch does write, so the measurement above is meaningful.
  PersistBatch another;
  another.entries = Entries(3, 3, /*round=*/1);
  ASSERT_TRUE((*storage)->Save(another).ok());
  EXPECT_GT(LogBytes(), log_bytes);
  storage->reset();

  DurableState expected;
  expected.hard_state = *batch.hard_state;
  AddEntries(batch.entries, &expected);
  AddEntries(another.entries, &expected);
  absl::StatusOr<DurableState> state = ReopenAndLoad();
  ASSERT_TRUE(state.ok()) << state.status();
  ExpectStateEq(*state, expected);
}

TEST_F(LevelDbStorageTest, CorruptEntryIsDataLossNamingTheSlot) {
  PersistBatch batch;
  batch.entries = Entries(40, 44, /*round=*/1);
  SaveAndClose(batch);

  std::string record = GetRaw(EntryKey(42));
  ASSERT_GT(record.size(), 6u);
  record[5] ^= 0x5A;
  record[6] ^= 0xFF;
  PutRaw(EntryKey(42), record);

  absl::StatusOr<DurableState> state = ReopenAndLoad();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(state.status().message(),
              AllOf(HasSubstr("entry record for slot 42"), HasSubstr(kDir),
                    HasSubstr("checksum mismatch")));
}

TEST_F(LevelDbStorageTest, TruncatedHardStateIsDataLoss) {
  PersistBatch batch;
  batch.hard_state = MakeHardState(/*round=*/7, /*commit=*/3);
  SaveAndClose(batch);

  PutRaw("h", GetRaw("h").substr(0, 3));

  absl::StatusOr<DurableState> state = ReopenAndLoad();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(state.status().message(),
              AllOf(HasSubstr("hard state record"), HasSubstr(kDir)));
}

TEST_F(LevelDbStorageTest, HardStateWithCutPayloadIsDataLoss) {
  PersistBatch batch;
  batch.hard_state = MakeHardState(/*round=*/7, /*commit=*/3);
  SaveAndClose(batch);

  const std::string record = GetRaw("h");
  PutRaw("h", record.substr(0, record.size() - 1));

  absl::StatusOr<DurableState> state = ReopenAndLoad();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(state.status().message(),
              AllOf(HasSubstr("hard state record"), HasSubstr(kDir),
                    HasSubstr("checksum mismatch")));
}

TEST_F(LevelDbStorageTest, GarbledHardStateWithValidChecksumIsDataLoss) {
  SaveAndClose(PersistBatch());
  // A field tag promising a length-delimited field longer than the payload.
  PutRaw("h", Record("\x0a\x7f\x01"));

  absl::StatusOr<DurableState> state = ReopenAndLoad();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(state.status().message(),
              AllOf(HasSubstr("hard state record"), HasSubstr(kDir),
                    HasSubstr("does not parse")));
}

TEST_F(LevelDbStorageTest, EntryStoredUnderAnotherSlotIsDataLoss) {
  SaveAndClose(PersistBatch());
  PutRaw(EntryKey(7), Record(MakeEntry(8, 1, "x").SerializeAsString()));

  absl::StatusOr<DurableState> state = ReopenAndLoad();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(state.status().message(),
              AllOf(HasSubstr("entry record for slot 7"), HasSubstr(kDir),
                    HasSubstr("holds slot 8")));
}

TEST_F(LevelDbStorageTest, MalformedEntryKeyIsDataLoss) {
  SaveAndClose(PersistBatch());
  PutRaw("e\x01", Record(MakeEntry(1, 1, "x").SerializeAsString()));

  absl::StatusOr<DurableState> state = ReopenAndLoad();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(state.status().message(),
              AllOf(HasSubstr("entry key \"e\\001\""), HasSubstr(kDir)));
}

TEST_F(LevelDbStorageTest, UnknownKeyIsDataLoss) {
  SaveAndClose(PersistBatch());
  PutRaw("zebra", Record("stripes"));

  absl::StatusOr<DurableState> state = ReopenAndLoad();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(state.status().message(),
              AllOf(HasSubstr("unknown key \"zebra\""), HasSubstr(kDir)));
}

TEST_F(LevelDbStorageTest, UnknownFormatVersionIsFailedPrecondition) {
  SaveAndClose(PersistBatch());
  PutRaw("v", VersionRecord(LevelDbStorage::kFormatVersion + 1));

  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage = Open();
  EXPECT_EQ(storage.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(storage.status().message(),
              AllOf(HasSubstr(kDir), HasSubstr(absl::StrCat(
                                         "format version ",
                                         LevelDbStorage::kFormatVersion + 1))));
}

TEST_F(LevelDbStorageTest, CorruptFormatVersionIsDataLoss) {
  SaveAndClose(PersistBatch());
  std::string record = GetRaw("v");
  record.back() ^= 0x01;
  PutRaw("v", record);

  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage = Open();
  EXPECT_EQ(storage.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(storage.status().message(),
              AllOf(HasSubstr("format version record"), HasSubstr(kDir)));
}

TEST_F(LevelDbStorageTest, DatabaseWithoutFormatVersionIsDataLoss) {
  PutRaw("h", Record(MakeHardState(1, 1).SerializeAsString()));

  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage = Open();
  EXPECT_EQ(storage.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(storage.status().message(),
              AllOf(HasSubstr("no format version record"), HasSubstr(kDir)));
}

TEST_F(LevelDbStorageTest, EntryAtOrBelowSnapshotIndexIsDataLoss) {
  PersistBatch batch;
  batch.snapshot = MakeSnapshot(5);
  SaveAndClose(batch);
  PutRaw(EntryKey(5), Record(MakeEntry(5, 1, "x").SerializeAsString()));

  absl::StatusOr<DurableState> state = ReopenAndLoad();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(state.status().message(),
              AllOf(HasSubstr("entry record for slot 5"),
                    HasSubstr("snapshot index 5"), HasSubstr(kDir)));
}

// A directory on the real file system, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string name = ::testing::TempDir() + "leveldb_storage_test.XXXXXX";
    EXPECT_NE(mkdtemp(name.data()), nullptr) << name;
    path_ = name;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(LevelDbStorageRealDirTest, SecondOpenOfTheSameDirectoryIsUnavailable) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<LevelDbStorage>> first =
      LevelDbStorage::Open(dir.path());
  ASSERT_TRUE(first.ok()) << first.status();

  absl::StatusOr<std::unique_ptr<LevelDbStorage>> second =
      LevelDbStorage::Open(dir.path());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(dir.path()));
}

}  // namespace
}  // namespace lockd
