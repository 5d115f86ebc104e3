// Power-loss test of LevelDbStorage, in the spirit of LevelDB's
// db/fault_injection_test.cc: unlike a process kill (see
// leveldb_storage_crash_test.cc), a power loss also destroys whatever the
// operating system had not yet written to the disk, so only data that was
// synced survives for certain.
//
// FaultInjectionEnv wraps LevelDB's real Env (files live in a fresh temporary
// directory) and remembers, for every file LevelDB writes, how many bytes were
// appended and how many were synced. SimulatePowerLoss() then rewrites the
// directory to what a disk could hold after the power failed: each file is cut
// back to its synced length, or keeps a random prefix of its unsynced tail (a
// torn write), or keeps a prefix with one corrupted byte (garbage in a torn
// sector). The model of the file system, and its assumptions:
//   * A file's data survives up to its last successful Sync(). Of the bytes
//     appended after that and before the power failed, any prefix may survive
//     (kTornWrite, kGarbageTail); bytes appended after the power failed never
//     do.
//   * A file created since the last power loss survives only if it was synced
//     at least once: its directory entry is taken to be durable with its
//     first sync, as in fault_injection_test.cc. Files that were never synced
//     vanish. (LevelDB's POSIX Env fsyncs the directory only when it syncs a
//     MANIFEST. That covers new tables and the log DB::Open() creates, but not
//     a log created when a full 4 MiB memtable is switched, which on a file
//     system that needs the directory fsync could lose synced writes; this
//     workload never fills a memtable.)
//   * Renames and deletions are durable, in order, as soon as they return
//     (an ordered metadata journal, as on ext4); those issued after the power
//     failed never happen.
// The real disk never loses power here, so Sync() does not call fsync (which
// would only cost time): it writes LevelDB's buffer to the operating system
// and moves the synced mark.
//
// LevelDB runs its compactions on a background thread. To keep every run
// deterministic, FaultInjectionEnv queues the background work instead and the
// test runs it on its own thread (RunBackgroundWork()) after every Open() and
// Save(), so the order of all file operations depends on the seed only.
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "leveldb/env.h"
#include "leveldb/slice.h"
#include "leveldb/status.h"
#include "lockd/crc32c.h"
#include "lockd/leveldb_storage.h"

namespace lockd {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using paxos::DurableState;
using paxos::PersistBatch;
using ::testing::HasSubstr;

// The message of the IOError an injected Sync() failure returns.
constexpr char kInjectedSyncFailure[] = "injected Sync() failure";

uint64_t Uniform(std::mt19937& rng, uint64_t low, uint64_t high) {
  return std::uniform_int_distribution<uint64_t>(low, high)(rng);
}

bool OneIn(std::mt19937& rng, uint64_t n) { return Uniform(rng, 1, n) == 1; }

bool IsLog(absl::string_view name) { return absl::EndsWith(name, ".log"); }

// An Env over the real file system that can simulate a power loss; see the
// file comment for the model.
class FaultInjectionEnv : public leveldb::EnvWrapper {
 public:
  enum class PowerLossMode {
    // Every file is cut back to its synced length.
    kDropUnsynced,
    // Every file keeps a random-length prefix of its unsynced tail (see
    // TornLength()).
    kTornWrite,
    // Like kTornWrite, and one byte of the kept unsynced tail is changed.
    kGarbageTail,
  };

  // What SimulatePowerLoss() did to one file.
  struct FileDamage {
    std::string name;
    // Bytes synced, bytes appended before the power failed, bytes left.
    uint64_t synced = 0;
    uint64_t written = 0;
    uint64_t kept = 0;
    // The file was never synced and is gone.
    bool removed = false;
    // Offset of the byte that kGarbageTail changed.
    std::optional<uint64_t> flipped_offset;
  };

  // `seed` drives the random choices of SimulatePowerLoss().
  explicit FaultInjectionEnv(uint32_t seed)
      : EnvWrapper(leveldb::Env::Default()), rng_(seed) {}

  FaultInjectionEnv(const FaultInjectionEnv&) = delete;
  FaultInjectionEnv& operator=(const FaultInjectionEnv&) = delete;

  ~FaultInjectionEnv() override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(open_files_, 0) << "a LevelDB file outlived the test";
    EXPECT_TRUE(background_work_.empty()) << "background work never ran";
  }

  leveldb::Status NewWritableFile(const std::string& name,
                                  leveldb::WritableFile** result) override {
    const leveldb::Status status = target()->NewWritableFile(name, result);
    if (!status.ok()) return status;
    std::lock_guard<std::mutex> lock(mu_);
    // A new (or truncated) file whose directory entry is not durable yet.
    files_[name] = FileState();
    ++open_files_;
    *result = new TrackedFile(this, name, *result);
    return status;
  }

  leveldb::Status NewAppendableFile(const std::string& name,
                                    leveldb::WritableFile** result) override {
    uint64_t existing_size = 0;
    const bool existed = target()->FileExists(name) &&
                         target()->GetFileSize(name, &existing_size).ok();
    const leveldb::Status status = target()->NewAppendableFile(name, result);
    if (!status.ok()) return status;
    std::lock_guard<std::mutex> lock(mu_);
    const auto [it, inserted] = files_.try_emplace(name);
    if (inserted && existed) {
      // Untracked, so it is on disk since the last power loss: durable.
      it->second.size = existing_size;
      it->second.synced = existing_size;
      it->second.size_at_power_failure = existing_size;
      it->second.durable_entry = true;
    }
    ++open_files_;
    *result = new TrackedFile(this, name, *result);
    return status;
  }

  leveldb::Status RemoveFile(const std::string& name) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (power_failed_) return leveldb::Status::OK();  // Never happens.
    }
    const leveldb::Status status = target()->RemoveFile(name);
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      files_.erase(name);
    }
    return status;
  }

  leveldb::Status RenameFile(const std::string& from,
                             const std::string& to) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (power_failed_) return leveldb::Status::OK();  // Never happens.
    }
    const leveldb::Status status = target()->RenameFile(from, to);
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = files_.find(from);
      if (it == files_.end()) {
        files_.erase(to);
      } else {
        files_[to] = it->second;
        files_.erase(it);
      }
    }
    return status;
  }

  // LevelDB's informational LOG is not needed; skipping it saves file
  // operations.
  leveldb::Status NewLogger(const std::string& /*name*/,
                            leveldb::Logger** result) override {
    *result = new NullLogger();
    return leveldb::Status::OK();
  }

  // Queues the work; RunBackgroundWork() runs it.
  void Schedule(void (*function)(void*), void* arg) override {
    std::lock_guard<std::mutex> lock(mu_);
    background_work_.emplace_back(function, arg);
  }

  // Runs the queued background work (and any work it queues) on the calling
  // thread. Call it before deleting a LevelDbStorage: LevelDB's destructor
  // waits for scheduled work.
  void RunBackgroundWork() {
    while (true) {
      std::pair<void (*)(void*), void*> work;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (background_work_.empty()) return;
        work = background_work_.front();
        background_work_.pop_front();
      }
      work.first(work.second);
    }
  }

  bool has_background_work() const {
    std::lock_guard<std::mutex> lock(mu_);
    return !background_work_.empty();
  }

  // The power fails during the `syncs`-th Sync() from now (0: the next one):
  // that Sync() and everything after it leave no durable trace. The calls
  // still succeed, so that the doomed process runs on and LevelDB closes its
  // files normally; the caller must ignore their results. Data appended before
  // the failing Sync() was in the page cache and may partly survive,
  // depending on the PowerLossMode.
  void CutPowerAtSync(int syncs) {
    std::lock_guard<std::mutex> lock(mu_);
    syncs_until_power_failure_ = syncs;
  }

  // Whether the power has failed (the process is doomed).
  bool power_failed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return power_failed_;
  }

  // From the `syncs`-th Sync() from now on (0: the next one), every Sync()
  // returns an IOError and makes nothing durable: the disk died.
  void FailSyncsFrom(int syncs) {
    std::lock_guard<std::mutex> lock(mu_);
    syncs_until_sync_failure_ = syncs;
  }

  // Replaces the dead disk: Sync() works again; what is unsynced stays so.
  void StopFailingSyncs() {
    std::lock_guard<std::mutex> lock(mu_);
    syncs_until_sync_failure_.reset();
  }

  // Total bytes appended to files so far.
  uint64_t appended_bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return appended_bytes_;
  }

  // Rewrites the directory to what survives a power loss (if the power has
  // not failed yet, it fails now). Requires every file to be closed: delete
  // the LevelDbStorage first. Afterwards the power is back, Sync() works, and
  // every file on disk counts as durable. Returns what happened to each file
  // written since the last power loss.
  std::vector<FileDamage> SimulatePowerLoss(PowerLossMode mode) {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(open_files_, 0) << "delete the LevelDbStorage first";
    EXPECT_TRUE(background_work_.empty()) << "run the background work first";
    std::vector<FileDamage> damages;
    for (const auto& [name, file] : files_) {
      FileDamage damage;
      damage.name = name;
      damage.synced = file.synced;
      damage.written = power_failed_ ? file.size_at_power_failure : file.size;
      std::error_code error;
      if (!file.durable_entry) {
        damage.removed = true;
        std::filesystem::remove(name, error);
        EXPECT_FALSE(error) << name << ": " << error.message();
        damages.push_back(std::move(damage));
        continue;
      }
      damage.kept = damage.synced;
      if (mode != PowerLossMode::kDropUnsynced &&
          damage.written > damage.synced) {
        damage.kept = TornLength(damage.synced, damage.written);
        if (mode == PowerLossMode::kGarbageTail &&
            damage.kept > damage.synced) {
          // A third of the time in the first 7 bytes of the tail, where the
          // header of the first new log fragment usually is.
          damage.flipped_offset =
              OneIn(rng_, 3)
                  ? damage.synced +
                        Uniform(rng_, 0,
                                std::min<uint64_t>(
                                    6, damage.kept - damage.synced - 1))
                  : Uniform(rng_, damage.synced, damage.kept - 1);
          FlipByte(name, *damage.flipped_offset,
                   static_cast<char>(Uniform(rng_, 1, 255)));
        }
      }
      if (damage.kept != file.size) {
        std::filesystem::resize_file(name, damage.kept, error);
        EXPECT_FALSE(error) << name << ": " << error.message();
      }
      damages.push_back(std::move(damage));
    }
    files_.clear();
    power_failed_ = false;
    syncs_until_power_failure_.reset();
    syncs_until_sync_failure_.reset();
    return damages;
  }

 private:
  struct FileState {
    // Bytes appended so far.
    uint64_t size = 0;
    // Bytes that survive any power loss.
    uint64_t synced = 0;
    // `size` when the power failed.
    uint64_t size_at_power_failure = 0;
    // Whether the file itself survives a power loss.
    bool durable_entry = false;
  };

  class NullLogger : public leveldb::Logger {
   public:
    void Logv(const char* /*format*/, std::va_list /*args*/) override {}
  };

  // Forwards to a real file and reports appends and syncs to the env.
  class TrackedFile : public leveldb::WritableFile {
   public:
    TrackedFile(FaultInjectionEnv* env, std::string name,
                leveldb::WritableFile* target)
        : env_(env), name_(std::move(name)), target_(target) {}

    ~TrackedFile() override {
      target_.reset();  // Closes the real file.
      std::lock_guard<std::mutex> lock(env_->mu_);
      --env_->open_files_;
    }

    leveldb::Status Append(const leveldb::Slice& data) override {
      const leveldb::Status status = target_->Append(data);
      if (status.ok()) {
        std::lock_guard<std::mutex> lock(env_->mu_);
        env_->files_[name_].size += data.size();
        env_->appended_bytes_ += data.size();
      }
      return status;
    }

    leveldb::Status Close() override { return target_->Close(); }
    leveldb::Status Flush() override { return target_->Flush(); }

    leveldb::Status Sync() override {
      // Hand LevelDB's buffer to the operating system; no fsync (see the file
      // comment).
      const leveldb::Status status = target_->Flush();
      if (!status.ok()) return status;
      return env_->SyncFile(name_);
    }

   private:
    FaultInjectionEnv* const env_;
    const std::string name_;
    std::unique_ptr<leveldb::WritableFile> target_;
  };

  // Records a Sync() of `name`, or fails it, or fails the power.
  leveldb::Status SyncFile(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    if (syncs_until_sync_failure_.has_value()) {
      if (*syncs_until_sync_failure_ == 0) {
        return leveldb::Status::IOError(name, kInjectedSyncFailure);
      }
      --*syncs_until_sync_failure_;
    }
    if (syncs_until_power_failure_.has_value()) {
      if (*syncs_until_power_failure_ == 0) {
        power_failed_ = true;
        syncs_until_power_failure_.reset();
        for (auto& [file_name, file] : files_) {
          file.size_at_power_failure = file.size;
        }
      } else {
        --*syncs_until_power_failure_;
      }
    }
    if (power_failed_) return leveldb::Status::OK();
    FileState& file = files_[name];
    file.synced = file.size;
    file.durable_entry = true;
    return leveldb::Status::OK();
  }

  // A length in [synced, written]: all of the unsynced tail one time in
  // four (the page cache was written back entirely), none of it one time in
  // four, otherwise a uniformly random cut (a torn sector).
  uint64_t TornLength(uint64_t synced, uint64_t written) {
    switch (Uniform(rng_, 0, 3)) {
      case 0:
        return written;
      case 1:
        return synced;
      default:
        return Uniform(rng_, synced, written);
    }
  }

  static void FlipByte(const std::string& name, uint64_t offset, char mask) {
    std::fstream file(name, std::ios::in | std::ios::out | std::ios::binary);
    char byte = 0;
    file.seekg(static_cast<std::streamoff>(offset));
    file.get(byte);
    file.seekp(static_cast<std::streamoff>(offset));
    file.put(static_cast<char>(byte ^ mask));
    file.flush();
    EXPECT_TRUE(file.good())
        << "cannot change byte " << offset << " of " << name;
  }

  mutable std::mutex mu_;
  std::mt19937 rng_;
  // Files written since the last power loss, by name.
  std::map<std::string, FileState> files_;
  int open_files_ = 0;
  uint64_t appended_bytes_ = 0;
  std::deque<std::pair<void (*)(void*), void*>> background_work_;
  std::optional<int> syncs_until_power_failure_;
  bool power_failed_ = false;
  std::optional<int> syncs_until_sync_failure_;
};

using PowerLossMode = FaultInjectionEnv::PowerLossMode;
using FileDamage = FaultInjectionEnv::FileDamage;

std::string ModeName(PowerLossMode mode) {
  switch (mode) {
    case PowerLossMode::kDropUnsynced:
      return "DropUnsynced";
    case PowerLossMode::kTornWrite:
      return "TornWrite";
    case PowerLossMode::kGarbageTail:
      return "GarbageTail";
  }
  return "Unknown";
}

// Lets gtest print a PowerLossMode parameter.
void PrintTo(PowerLossMode mode, std::ostream* os) { *os << ModeName(mode); }

// What LevelDB's recovery makes of a write-ahead log: how many complete
// records it replays and the first corruption it reports (empty if none).
// With paranoid_checks = true, as LevelDbStorage opens the database, any
// reported corruption fails DB::Open with that Corruption status.
//
// Written from LevelDB's doc/log_format.md and the recovery rules of
// db/log_reader.cc in LevelDB 1.23 (the Debian 12 version): the log is a
// sequence of 32 KiB blocks; a block ends in zero padding when fewer than 7
// bytes are left; each fragment has a 7-byte header (masked CRC32C of type and
// payload, 2-byte little-endian length, type). The reader silently stops at a
// truncated header or a truncated fragment in the file's last block (a torn
// write), silently skips the rest of a block at a header of type 0 and length
// 0 (as preallocated, zero-filled space reads), ignores an incomplete
// fragmented record at the end of the file, and reports everything else: a
// checksum mismatch, a fragment longer than a full block's rest ("bad record
// length"), fragments out of order.
struct LogScan {
  int records = 0;
  std::string corruption;
};

LogScan ScanLog(absl::string_view log) {
  constexpr size_t kBlockSize = 32768;
  constexpr size_t kHeaderSize = 7;
  enum : int {
    kZeroType = 0,
    kFullType = 1,
    kFirstType = 2,
    kMiddleType = 3,
    kLastType = 4,
    kEof = -1,
    kBadRecord = -2,
  };
  LogScan scan;
  const auto report = [&scan](const char* reason) {
    if (scan.corruption.empty()) scan.corruption = reason;
  };
  size_t block_end = 0;  // End of the block read last.
  size_t pos = 0;        // Next unread byte of that block.
  bool eof = false;      // The block read last was the file's final block.
  // Returns the next fragment's type and sets `length`, or kEof/kBadRecord.
  const auto read_fragment = [&](size_t* length) -> int {
    while (true) {
      if (block_end - pos < kHeaderSize) {
        if (eof) return kEof;
        pos = block_end;  // Skip the padding.
        block_end = std::min(pos + kBlockSize, log.size());
        eof = block_end - pos < kBlockSize;
        continue;
      }
      const auto* header =
          reinterpret_cast<const unsigned char*>(log.data() + pos);
      *length = header[4] | (static_cast<size_t>(header[5]) << 8);
      const int type = header[6];
      if (kHeaderSize + *length > block_end - pos) {
        pos = block_end;
        if (!eof) {
          report("bad record length");
          return kBadRecord;
        }
        return kEof;
      }
      if (type == kZeroType && *length == 0) {
        pos = block_end;
        return kBadRecord;
      }
      const uint32_t stored_crc =
          crc32c::Unmask(header[0] | (static_cast<uint32_t>(header[1]) << 8) |
                         (static_cast<uint32_t>(header[2]) << 16) |
                         (static_cast<uint32_t>(header[3]) << 24));
      if (crc32c::Value(log.data() + pos + 6, 1 + *length) != stored_crc) {
        pos = block_end;
        report("checksum mismatch");
        return kBadRecord;
      }
      pos += kHeaderSize + *length;
      return type;
    }
  };
  bool in_record = false;
  size_t record_bytes = 0;
  while (true) {
    size_t length = 0;
    switch (read_fragment(&length)) {
      case kFullType:
        if (in_record && record_bytes > 0) {
          report("partial record without end(1)");
        }
        ++scan.records;
        in_record = false;
        break;
      case kFirstType:
        if (in_record && record_bytes > 0) {
          report("partial record without end(2)");
        }
        in_record = true;
        record_bytes = length;
        break;
      case kMiddleType:
        if (!in_record) report("missing start of fragmented record(1)");
        record_bytes += length;
        break;
      case kLastType:
        if (!in_record) {
          report("missing start of fragmented record(2)");
        } else {
          ++scan.records;
          in_record = false;
        }
        break;
      case kEof:
        return scan;
      case kBadRecord:
        if (in_record) report("error in middle of record");
        in_record = false;
        break;
      default:
        report("unknown record type");
        in_record = false;
        break;
    }
  }
}

std::string ReadWholeFile(const std::string& name) {
  std::ifstream file(name, std::ios::binary);
  EXPECT_TRUE(file.good()) << "cannot read " << name;
  return std::string(std::istreambuf_iterator<char>(file),
                     std::istreambuf_iterator<char>());
}

// A deterministic sequence of batches and the state after each of them.
struct Workload {
  // batches[i], i >= 1, carries hard state commit = i; batches[0] is unused.
  std::vector<PersistBatch> batches;
  // states[i] is the durable state after batches 1..i.
  std::vector<DurableState> states;
};

std::string RandomBytes(std::mt19937& rng, size_t size) {
  std::string bytes(size, '\0');
  for (char& byte : bytes) byte = static_cast<char>(rng());
  return bytes;
}

// Mostly small commands; now and then one that spans LevelDB log blocks.
size_t CommandSize(std::mt19937& rng) {
  const uint64_t kind = Uniform(rng, 0, 19);
  if (kind == 0) return Uniform(rng, 8000, 70000);
  if (kind <= 2) return Uniform(rng, 500, 4000);
  return Uniform(rng, 0, 200);
}

// Applies `batch` to `state` as LevelDbStorage documents it: the snapshot
// replaces the stored one and deletes the entries at or below its index;
// entries at or below the (new or stored) snapshot index are skipped; every
// other entry replaces its slot.
void Apply(const PersistBatch& batch, DurableState* state) {
  if (batch.hard_state.has_value()) state->hard_state = *batch.hard_state;
  if (batch.snapshot.has_value()) {
    state->snapshot = batch.snapshot;
    state->entries.erase(state->entries.begin(),
                         state->entries.upper_bound(batch.snapshot->index()));
  }
  for (const paxospb::Entry& entry : batch.entries) {
    if (state->snapshot.has_value() &&
        entry.slot() <= state->snapshot->index()) {
      continue;
    }
    state->entries[entry.slot()] = entry;
  }
}

// Batch i sets the hard state (commit i), writes 0..3 entries for slots near
// 2i (so slots are rewritten and some fall below the snapshot), and one time
// in six carries a snapshot whose index never decreases.
Workload MakeWorkload(uint32_t seed, uint64_t num_batches) {
  std::mt19937 rng(seed);
  Workload workload;
  workload.batches.emplace_back();
  workload.states.emplace_back();
  uint64_t snapshot_index = 0;
  for (uint64_t i = 1; i <= num_batches; ++i) {
    PersistBatch batch;
    batch.hard_state.emplace();
    batch.hard_state->mutable_promised()->set_round(i);
    batch.hard_state->mutable_promised()->set_replica_id(1 + i % 3);
    batch.hard_state->set_commit(i);
    const uint64_t num_entries = Uniform(rng, 0, 3);
    for (uint64_t e = 0; e < num_entries; ++e) {
      paxospb::Entry& entry = batch.entries.emplace_back();
      const uint64_t slot = 2 * i + Uniform(rng, 0, 4);  // 2i-3 .. 2i+1
      entry.set_slot(slot > 3 ? slot - 3 : 1);
      entry.mutable_ballot()->set_round(i);
      entry.mutable_ballot()->set_replica_id(1 + e);
      const uint64_t num_commands = Uniform(rng, 0, 2);
      for (uint64_t c = 0; c < num_commands; ++c) {
        entry.mutable_value()->add_commands(RandomBytes(rng, CommandSize(rng)));
      }
      entry.set_chosen(OneIn(rng, 2));
    }
    if (OneIn(rng, 6)) {
      snapshot_index =
          std::max(snapshot_index, 2 * i - std::min(2 * i, Uniform(rng, 0, 5)));
      batch.snapshot.emplace();
      batch.snapshot->set_index(snapshot_index);
      batch.snapshot->set_data(RandomBytes(rng, Uniform(rng, 0, 3000)));
    }
    DurableState state = workload.states.back();
    Apply(batch, &state);
    workload.batches.push_back(std::move(batch));
    workload.states.push_back(std::move(state));
  }
  return workload;
}

::testing::AssertionResult SameState(const DurableState& actual,
                                     const DurableState& expected) {
  if (!MessageDifferencer::Equals(actual.hard_state, expected.hard_state)) {
    return ::testing::AssertionFailure()
           << "hard state {" << actual.hard_state.ShortDebugString()
           << "}, want {" << expected.hard_state.ShortDebugString() << "}";
  }
  if (actual.snapshot.has_value() != expected.snapshot.has_value() ||
      (actual.snapshot.has_value() &&
       !MessageDifferencer::Equals(*actual.snapshot, *expected.snapshot))) {
    return ::testing::AssertionFailure()
           << "snapshot differs (index "
           << (actual.snapshot ? std::to_string(actual.snapshot->index())
                               : "none")
           << ", want "
           << (expected.snapshot ? std::to_string(expected.snapshot->index())
                                 : "none")
           << ")";
  }
  std::ostringstream slots;
  for (const auto& [slot, entry] : actual.entries) slots << " " << slot;
  slots << " | want";
  for (const auto& [slot, entry] : expected.entries) slots << " " << slot;
  if (actual.entries.size() != expected.entries.size()) {
    return ::testing::AssertionFailure() << "entry slots" << slots.str();
  }
  for (const auto& [slot, entry] : expected.entries) {
    const auto it = actual.entries.find(slot);
    if (it == actual.entries.end()) {
      return ::testing::AssertionFailure() << "entry slots" << slots.str();
    }
    if (!MessageDifferencer::Equals(it->second, entry)) {
      return ::testing::AssertionFailure()
             << "entry for slot " << slot << " differs";
    }
  }
  return ::testing::AssertionSuccess();
}

// The write-ahead log that held unsynced data when the power failed; nullptr
// if there is none.
const FileDamage* FindUnsyncedLog(const std::vector<FileDamage>& damages) {
  const FileDamage* found = nullptr;
  for (const FileDamage& damage : damages) {
    if (IsLog(damage.name) && damage.written > damage.synced) {
      EXPECT_EQ(found, nullptr) << "two logs hold unsynced data";
      found = &damage;
    }
  }
  return found;
}

// What must happen when the database is opened after a power loss.
struct Expectation {
  // Load() must return workload.states[batch]...
  uint64_t batch = 0;
  // ...unless this is non-empty: then Open() must fail with DATA_LOSS
  // naming this LevelDB corruption.
  std::string data_loss;
};

// Outcomes seen over many runs; the tests check that each interesting case
// came up, so that a change in the workload cannot hollow them out.
struct Counters {
  int saves_in_flight = 0;
  int in_flight_kept = 0;
  int recovery_power_failures = 0;
  int compaction_power_failures = 0;
  int data_losses = 0;
  int clean_recoveries_after_garbage = 0;
};

class LevelDbStoragePowerLossTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string name =
        ::testing::TempDir() + "leveldb_storage_power_loss_test.XXXXXX";
    ASSERT_NE(mkdtemp(name.data()), nullptr) << std::strerror(errno);
    root_ = name;
  }

  void TearDown() override {
    if (!root_.empty()) std::filesystem::remove_all(root_);
  }

  // Opens `dir`; on success checks that Load() returns exactly
  // workload.states[expected.batch], or, if expected.data_loss is set,
  // that Open() fails with DATA_LOSS naming it. Returns the storage (nullptr
  // after the expected DATA_LOSS); the caller must run the background work
  // before deleting it.
  [[nodiscard]] std::unique_ptr<LevelDbStorage> OpenAndCheck(
      const std::string& dir, FaultInjectionEnv& env, const Workload& workload,
      const Expectation& expected) {
    absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage =
        LevelDbStorage::Open(dir, &env);
    if (!expected.data_loss.empty()) {
      EXPECT_EQ(storage.status().code(), absl::StatusCode::kDataLoss)
          << storage.status();
      EXPECT_THAT(storage.status().message(), HasSubstr(dir));
      EXPECT_THAT(storage.status().message(),
                  HasSubstr("Corruption: " + expected.data_loss));
      if (storage.ok()) {
        env.RunBackgroundWork();
        storage->reset();
      }
      return nullptr;
    }
    EXPECT_TRUE(storage.ok()) << storage.status();
    if (!storage.ok()) return nullptr;
    const absl::StatusOr<DurableState> state = (*storage)->Load();
    EXPECT_TRUE(state.ok()) << state.status();
    if (state.ok()) {
      EXPECT_TRUE(SameState(*state, workload.states[expected.batch]))
          << "after batch " << expected.batch << " (loaded commit "
          << state->hard_state.commit() << ")";
    }
    return *std::move(storage);
  }

  // One replica's life on one directory across up to kRounds power losses in
  // `mode`. Each round opens the database (which must hold exactly the state
  // the previous power loss left), acknowledges a few Saves, then loses power
  // in the middle of the next Save, or while idle, or (if
  // `vary_power_failures`) in the middle of a recovery or a compaction.
  void RunSeed(uint32_t seed, PowerLossMode mode, bool vary_power_failures,
               Counters* counters) {
    constexpr int kRounds = 8;
    constexpr uint64_t kMaxSavesPerRound = 5;
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    const std::string dir = absl::StrCat(root_, "/seed-", seed);
    const Workload workload =
        MakeWorkload(seed, kRounds * (kMaxSavesPerRound + 1));
    FaultInjectionEnv env(seed);
    std::mt19937 rng(seed ^ 0x5eed);
    Expectation expected;
    for (int round = 0; round < kRounds; ++round) {
      SCOPED_TRACE(absl::StrCat("round ", round));
      if (vary_power_failures && round > 0 && OneIn(rng, 4)) {
        // The power fails while LevelDB recovers the log the previous power
        // loss left (it writes a table, a new MANIFEST and CURRENT, then
        // deletes the old log); a later recovery must still find the same
        // state.
        env.CutPowerAtSync(static_cast<int>(Uniform(rng, 0, 3)));
        {
          const absl::StatusOr<std::unique_ptr<LevelDbStorage>> doomed =
              LevelDbStorage::Open(dir, &env);
          env.RunBackgroundWork();
          if (env.power_failed()) ++counters->recovery_power_failures;
        }  // Deletes the storage: LevelDB closes its files.
        env.SimulatePowerLoss(mode);
      }
      std::unique_ptr<LevelDbStorage> storage =
          OpenAndCheck(dir, env, workload, expected);
      if (storage == nullptr) {
        env.RunBackgroundWork();
        if (!expected.data_loss.empty()) {
          ++counters->data_losses;
          // Nothing was repaired behind the caller's back: the damage is
          // still reported on the next attempt.
          EXPECT_EQ(OpenAndCheck(dir, env, workload, expected), nullptr);
        }
        return;
      }
      if (vary_power_failures && env.has_background_work() && OneIn(rng, 2)) {
        // The power fails during the compaction this recovery triggered
        // (output table sync or MANIFEST sync), or at the next Save if the
        // compaction syncs less often.
        env.CutPowerAtSync(static_cast<int>(Uniform(rng, 0, 2)));
      }
      env.RunBackgroundWork();
      if (env.power_failed()) ++counters->compaction_power_failures;

      uint64_t acknowledged = expected.batch;
      std::optional<uint64_t> in_flight;
      const uint64_t saves = Uniform(rng, 0, kMaxSavesPerRound);
      const bool fail_in_save = !OneIn(rng, 5);
      for (uint64_t i = 0;
           !env.power_failed() && acknowledged + 1 < workload.batches.size();
           ++i) {
        if (i == saves) {
          if (!fail_in_save) break;
          // The power fails while the next Save() waits for its log sync.
          env.CutPowerAtSync(0);
        }
        const uint64_t batch = acknowledged + 1;
        const absl::Status status = storage->Save(workload.batches[batch]);
        env.RunBackgroundWork();
        if (env.power_failed()) {
          in_flight = batch;  // Its caller never saw the result.
          break;
        }
        ASSERT_TRUE(status.ok()) << "batch " << batch << ": " << status;
        acknowledged = batch;
      }
      env.RunBackgroundWork();
      storage.reset();
      const std::vector<FileDamage> damages = env.SimulatePowerLoss(mode);

      expected.batch = acknowledged;
      if (!in_flight.has_value()) continue;
      ++counters->saves_in_flight;
      const FileDamage* log = FindUnsyncedLog(damages);
      ASSERT_NE(log, nullptr) << "the Save in flight wrote no log record";
      if (log->removed) continue;  // Its log was never synced, so it is gone.
      const std::string contents = ReadWholeFile(log->name);
      ASSERT_EQ(contents.size(), log->kept);
      const LogScan before = ScanLog(contents.substr(0, log->synced));
      const LogScan after = ScanLog(contents);
      ASSERT_EQ(before.corruption, "");
      if (mode != PowerLossMode::kGarbageTail) {
        // A torn or dropped tail is never reported as corruption, and the
        // batch in flight is replayed exactly when its whole record made it.
        ASSERT_EQ(after.corruption, "");
        ASSERT_EQ(after.records - before.records,
                  log->kept == log->written ? 1 : 0);
      }
      ASSERT_LE(after.records - before.records, 1);
      if (!after.corruption.empty()) {
        expected.data_loss = after.corruption;
        continue;
      }
      if (log->flipped_offset.has_value()) {
        ++counters->clean_recoveries_after_garbage;
      }
      if (after.records > before.records) {
        expected.batch = *in_flight;
        ++counters->in_flight_kept;
      }
    }
    if (!expected.data_loss.empty()) ++counters->data_losses;
    std::unique_ptr<LevelDbStorage> storage =
        OpenAndCheck(dir, env, workload, expected);
    env.RunBackgroundWork();
    storage.reset();
    std::filesystem::remove_all(dir);
  }

  std::string root_;
};

class PowerLossModeTest : public LevelDbStoragePowerLossTest,
                          public ::testing::WithParamInterface<PowerLossMode> {
};

// Proves the Storage contract under power loss: after a power failure at a
// random point (while a Save waits for its log sync, while idle, while
// LevelDB recovers from the previous power loss, or while it compacts), a
// reopened LevelDbStorage opens cleanly and Load() returns exactly the state
// after the last acknowledged batch, or after the batch in flight, never a
// mix and never DATA_LOSS. Which of the two is decided precisely: the batch
// in flight is there exactly when its whole log record survived (never with
// kDropUnsynced, when the whole unsynced tail survived with kTornWrite).
TEST_P(PowerLossModeTest, KeepsAcknowledgedBatchesAndNeverHalfABatch) {
  const PowerLossMode mode = GetParam();
  Counters counters;
  for (uint32_t seed = 1; seed <= 25; ++seed) {
    RunSeed(seed, mode, /*vary_power_failures=*/true, &counters);
    if (HasFatalFailure()) return;
  }
  EXPECT_EQ(counters.data_losses, 0);
  EXPECT_GT(counters.saves_in_flight, 100);
  EXPECT_GT(counters.recovery_power_failures, 10);
  EXPECT_GT(counters.compaction_power_failures, 3);
  if (mode == PowerLossMode::kDropUnsynced) {
    EXPECT_EQ(counters.in_flight_kept, 0);
  } else {
    EXPECT_GT(counters.in_flight_kept, 5);
    EXPECT_LT(counters.in_flight_kept, counters.saves_in_flight);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, PowerLossModeTest,
    ::testing::Values(PowerLossMode::kDropUnsynced, PowerLossMode::kTornWrite),
    [](const ::testing::TestParamInfo<PowerLossMode>& info) {
      return ModeName(info.param);
    });

// Proves that a dying disk cannot make LevelDbStorage acknowledge a batch it
// did not persist, and that every acknowledged batch survives:
//   * Sync() fails from a random Save on: that Save returns UNAVAILABLE
//     naming the directory; LevelDB latches the error (db_impl.cc
//     RecordBackgroundError), so every later Save fails the same way without
//     writing a byte; the failed batch is not visible to Load() in the same
//     process (LevelDB applies a batch to its memtable only after the sync).
//   * The failed batch's record did reach the log (the page cache) before the
//     sync failed, so what the next Open() finds depends on what happens next.
//     In this model a failed Sync() makes nothing durable, hence:
//     - power loss, unsynced data dropped: exactly the last acknowledged
//       batch;
//     - power loss, torn tail: the failed batch too exactly when its whole
//       record survived;
//     - no power loss (only the process restarts): the failed batch is
//       there, as LevelDB warns ("the log record we just added may or may
//       not show up when the DB is re-opened"), and recovery makes it
//       durable: a power loss right after changes nothing.
//     Surfacing a batch whose Save failed is allowed: the caller stopped at
//     the error (the Storage contract makes it fatal) and sent nothing that
//     depends on it.
TEST_F(LevelDbStoragePowerLossTest, SyncFailureNeverLosesAcknowledgedBatches) {
  constexpr uint64_t kMaxOkSaves = 6;
  int failed_batch_kept = 0;
  for (uint32_t seed = 1; seed <= 30; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    const std::string dir = absl::StrCat(root_, "/seed-", seed);
    const Workload workload = MakeWorkload(seed, kMaxOkSaves + 3);
    FaultInjectionEnv env(seed);
    std::mt19937 rng(seed ^ 0xd15c);
    std::unique_ptr<LevelDbStorage> storage =
        OpenAndCheck(dir, env, workload, Expectation());
    ASSERT_NE(storage, nullptr);
    env.RunBackgroundWork();

    // One Sync() per Save (LevelDB syncs the log; no compaction runs).
    const uint64_t ok_saves = Uniform(rng, 0, kMaxOkSaves);
    env.FailSyncsFrom(static_cast<int>(ok_saves));
    for (uint64_t batch = 1; batch <= ok_saves; ++batch) {
      const absl::Status status = storage->Save(workload.batches[batch]);
      ASSERT_TRUE(status.ok()) << "batch " << batch << ": " << status;
      env.RunBackgroundWork();
    }
    const uint64_t failed = ok_saves + 1;
    uint64_t appended = env.appended_bytes();
    const absl::Status status = storage->Save(workload.batches[failed]);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_THAT(status.message(), HasSubstr("synced write failed in " + dir));
    EXPECT_THAT(status.message(), HasSubstr(kInjectedSyncFailure));
    EXPECT_GT(env.appended_bytes(), appended) << "no log record written";
    appended = env.appended_bytes();
    for (uint64_t batch = failed + 1; batch <= failed + 2; ++batch) {
      const absl::Status later = storage->Save(workload.batches[batch]);
      EXPECT_EQ(later.code(), absl::StatusCode::kUnavailable) << later;
      EXPECT_THAT(later.message(), HasSubstr(kInjectedSyncFailure));
    }
    EXPECT_EQ(env.appended_bytes(), appended) << "a Save wrote after failing";
    const absl::StatusOr<DurableState> in_process = storage->Load();
    ASSERT_TRUE(in_process.ok()) << in_process.status();
    EXPECT_TRUE(SameState(*in_process, workload.states[ok_saves]));
    env.RunBackgroundWork();
    storage.reset();

    Expectation expected{ok_saves, ""};
    switch (seed % 3) {
      case 0:
        env.SimulatePowerLoss(PowerLossMode::kDropUnsynced);
        break;
      case 1: {
        const std::vector<FileDamage> damages =
            env.SimulatePowerLoss(PowerLossMode::kTornWrite);
        const FileDamage* log = FindUnsyncedLog(damages);
        ASSERT_NE(log, nullptr);
        if (!log->removed && log->kept == log->written) {
          expected.batch = failed;
          ++failed_batch_kept;
        }
        break;
      }
      case 2:
        // Only the process restarts, on a replaced disk.
        env.StopFailingSyncs();
        expected.batch = failed;
        storage = OpenAndCheck(dir, env, workload, expected);
        ASSERT_NE(storage, nullptr);
        env.RunBackgroundWork();
        storage.reset();
        env.SimulatePowerLoss(PowerLossMode::kDropUnsynced);
        break;
    }
    storage = OpenAndCheck(dir, env, workload, expected);
    ASSERT_NE(storage, nullptr);
    // The replaced disk works: Saves succeed again from the loaded state.
    const absl::Status next =
        storage->Save(workload.batches[expected.batch + 1]);
    EXPECT_TRUE(next.ok()) << next;
    env.RunBackgroundWork();
    storage.reset();
    std::filesystem::remove_all(dir);
  }
  EXPECT_GT(failed_batch_kept, 0);
}

// Proves that garbage in the unsynced tail of the log (a torn sector holding
// neither the old nor the new bytes) never yields wrong state silently: Open()
// either succeeds and Load() returns exactly the acknowledged state (or the
// batch in flight, if its record is intact), or Open() fails with DATA_LOSS
// naming the directory and LevelDB's corruption, and keeps failing. Which of
// these happens is asserted exactly, as ScanLog() predicts it.
//
// Behaviour of LevelDB 1.23 with paranoid_checks = true (as LevelDbStorage
// opens it); the first three were observed (over 3000 seeds during
// development: 2315 checksum mismatches, 12 bad record lengths, 4629 silent
// drops, every one as predicted), the last one follows from the reader's code:
//   * a changed byte inside a complete fragment (header or payload) is a
//     checksum mismatch: DATA_LOSS "leveldb open failed in <dir>: Corruption:
//     checksum mismatch", although only unacknowledged data was damaged:
//     LevelDB cannot tell a torn write from corruption of acknowledged data,
//     and paranoid_checks turns every reported log corruption into a failed
//     DB::Open();
//   * a changed length byte that makes the fragment run past the end of the
//     file counts as a torn write (dropped silently), but past the end of a
//     full 32 KiB block it is "Corruption: bad record length";
//   * if the file ends inside the damaged fragment's header or payload, the
//     record is dropped silently whatever the garbage;
//   * garbage in the zero padding at a block's end is never read.
// A replica that gets DATA_LOSS here stops; it cannot restart on this
// directory without repair, although no acknowledged batch is damaged. (A
// zero-filled tail, by contrast, reads as LevelDB's "zero type, zero length"
// padding and is skipped silently.)
TEST_F(LevelDbStoragePowerLossTest, GarbageTailIsDetectedOrHarmless) {
  Counters counters;
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    RunSeed(seed, PowerLossMode::kGarbageTail, /*vary_power_failures=*/false,
            &counters);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(counters.data_losses, 10);
  EXPECT_GT(counters.clean_recoveries_after_garbage, 10);
}

}  // namespace
}  // namespace lockd
