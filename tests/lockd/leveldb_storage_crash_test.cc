// Crash test of LevelDbStorage on the real file system: a writer process
// saves batch after batch and reports each Save() that returned OK on a pipe;
// the test kills it with SIGKILL at a varying point and checks that every
// acknowledged batch survived and that no batch is half applied.
//
// The writer is this binary started again (fork + exec) with kWriterFlag, so
// that it begins with a fresh process image: LevelDB's default Env keeps a
// background thread, which a plain fork() of a process that already used
// LevelDB would not carry into the child.
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "lockd/leveldb_storage.h"

namespace lockd {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using paxos::DurableState;
using paxos::PersistBatch;

constexpr char kWriterFlag[] = "--leveldb_storage_crash_test_writer";

// Batch i holds the entries for slots kEntriesPerBatch*(i-1)+1 ..
// kEntriesPerBatch*i; every kSnapshotEveryBatches-th batch also carries a
// snapshot that compacts the log up to kSnapshotLagBatches batches earlier.
constexpr uint64_t kEntriesPerBatch = 4;
constexpr uint64_t kSnapshotEveryBatches = 8;
constexpr uint64_t kSnapshotLagBatches = 3;
// One entry per batch is large so that a write takes a while and the kill
// often lands inside it.
constexpr size_t kLargeCommandBaseBytes = 96 << 10;
constexpr size_t kLargeCommandVariationBytes = 64 << 10;
// The writer stops on its own after this many batches; the test kills it long
// before.
constexpr uint64_t kWriterMaxBatch = 100000;
// Where to kill the writer: after `acks` acknowledgements in this round, plus
// `save_fraction` of a typical Save() (the wait ends early if the next
// acknowledgement arrives). The directory is reused, so each round also
// recovers from the previous crash.
struct KillPoint {
  uint64_t acks;
  double save_fraction;
};
constexpr KillPoint kKillPoints[] = {{50, 0.0}, {1, 0.5}, {23, 0.25},
                                     {64, 0.9}, {7, 0.7}, {12, 0.1},
                                     {30, 0.4}, {5, 0.8}, {9, 0.6}};
constexpr std::chrono::seconds kAckTimeout{30};

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
  return z ^ (z >> 31);
}

// Incompressible, deterministic command bytes for `slot`.
std::string CommandBytes(uint64_t slot, size_t size) {
  std::string bytes;
  bytes.reserve(size + sizeof(uint64_t));
  uint64_t state = slot;
  while (bytes.size() < size) {
    const uint64_t word = SplitMix64(&state);
    bytes.append(reinterpret_cast<const char*>(&word), sizeof(word));
  }
  bytes.resize(size);
  return bytes;
}

paxospb::Entry EntryOfBatch(uint64_t batch, uint64_t slot) {
  paxospb::Entry entry;
  entry.set_slot(slot);
  entry.mutable_ballot()->set_round(batch);
  entry.mutable_ballot()->set_replica_id(1);
  const size_t size = slot % kEntriesPerBatch == 0
                          ? kLargeCommandBaseBytes +
                                (batch * 7919) % kLargeCommandVariationBytes
                          : 16 + slot % 97;
  entry.mutable_value()->add_commands(CommandBytes(slot, size));
  entry.set_chosen(true);
  return entry;
}

std::optional<paxospb::Snapshot> SnapshotOfBatch(uint64_t batch) {
  if (batch % kSnapshotEveryBatches != 0) return std::nullopt;
  paxospb::Snapshot snapshot;
  snapshot.set_index((batch - kSnapshotLagBatches) * kEntriesPerBatch);
  snapshot.set_data(absl::StrCat("snapshot taken by batch ", batch));
  return snapshot;
}

PersistBatch MakeBatch(uint64_t batch) {
  PersistBatch persist;
  persist.hard_state.emplace();
  persist.hard_state->mutable_promised()->set_round(batch);
  persist.hard_state->mutable_promised()->set_replica_id(1 + batch % 3);
  persist.hard_state->set_commit(batch);
  for (uint64_t slot = kEntriesPerBatch * (batch - 1) + 1;
       slot <= kEntriesPerBatch * batch; ++slot) {
    persist.entries.push_back(EntryOfBatch(batch, slot));
  }
  persist.snapshot = SnapshotOfBatch(batch);
  return persist;
}

// The state that batches 1..last leave behind.
DurableState StateAfter(uint64_t last) {
  DurableState state;
  for (uint64_t batch = 1; batch <= last; ++batch) {
    PersistBatch persist = MakeBatch(batch);
    state.hard_state = *persist.hard_state;
    if (persist.snapshot.has_value()) {
      state.snapshot = persist.snapshot;
      state.entries.erase(state.entries.begin(),
                          state.entries.upper_bound(persist.snapshot->index()));
    }
    for (paxospb::Entry& entry : persist.entries) {
      state.entries[entry.slot()] = std::move(entry);
    }
  }
  return state;
}

// Saves MakeBatch(i) for i = (stored commit + 1), ... and writes i to
// `ack_fd` after each Save() returned OK. Returns a process exit code.
int RunWriter(const std::string& dir, int ack_fd) {
  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage =
      LevelDbStorage::Open(dir);
  if (!storage.ok()) {
    std::fprintf(stderr, "writer: %s\n", storage.status().ToString().c_str());
    return 2;
  }
  absl::StatusOr<DurableState> state = (*storage)->Load();
  if (!state.ok()) {
    std::fprintf(stderr, "writer: %s\n", state.status().ToString().c_str());
    return 2;
  }
  for (uint64_t batch = state->hard_state.commit() + 1;
       batch <= kWriterMaxBatch; ++batch) {
    const absl::Status status = (*storage)->Save(MakeBatch(batch));
    if (!status.ok()) {
      std::fprintf(stderr, "writer: %s\n", status.ToString().c_str());
      return 3;
    }
    if (write(ack_fd, &batch, sizeof(batch)) != sizeof(batch)) {
      std::perror("writer: write acknowledgement");
      return 4;
    }
  }
  return 0;
}

// Reads the acknowledgements of one writer process.
class AckReader {
 public:
  enum class Result { kAck, kEnd, kTimeout };

  explicit AckReader(int fd) : fd_(fd) {}
  AckReader(const AckReader&) = delete;
  AckReader& operator=(const AckReader&) = delete;
  ~AckReader() { close(fd_); }

  // Waits up to `timeout` for the next acknowledged batch and stores it in
  // `batch`. kEnd: the writer is gone and every acknowledgement was read.
  Result Next(std::chrono::nanoseconds timeout, uint64_t* batch) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (have_ < sizeof(buffer_)) {
      const auto left = std::max(std::chrono::nanoseconds::zero(),
                                 deadline - std::chrono::steady_clock::now());
      const timespec left_spec = {
          static_cast<time_t>(left.count() / 1000000000),
          static_cast<long>(left.count() % 1000000000)};
      pollfd poll_fd = {fd_, POLLIN, 0};
      const int ready = ppoll(&poll_fd, 1, &left_spec, nullptr);
      if (ready == 0) return Result::kTimeout;
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) {
        ADD_FAILURE() << "ppoll: " << std::strerror(errno);
        return Result::kEnd;
      }
      const ssize_t n = read(fd_, reinterpret_cast<char*>(&buffer_) + have_,
                             sizeof(buffer_) - have_);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ADD_FAILURE() << "read: " << std::strerror(errno);
        return Result::kEnd;
      }
      if (n == 0) {
        EXPECT_EQ(have_, 0u) << "acknowledgement cut short";
        return Result::kEnd;
      }
      have_ += static_cast<size_t>(n);
    }
    *batch = buffer_;
    have_ = 0;
    return Result::kAck;
  }

 private:
  const int fd_;
  uint64_t buffer_ = 0;
  size_t have_ = 0;
};

// Starts this binary as a writer on `dir`; returns its pid and sets `ack_fd`
// to the read end of its acknowledgement pipe.
pid_t StartWriter(const std::string& dir, int* ack_fd) {
  int fds[2];
  if (pipe(fds) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return -1;
  }
  // Built before fork(): the child may only exec.
  std::string self = "/proc/self/exe";
  std::string flag = kWriterFlag;
  std::string dir_arg = dir;
  std::string fd_arg = std::to_string(fds[1]);
  char* const argv[] = {self.data(), flag.data(), dir_arg.data(), fd_arg.data(),
                        nullptr};
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(fds[1]);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    close(fds[0]);
    return -1;
  }
  *ack_fd = fds[0];
  return pid;
}

// Kills and reaps a writer process unless the test already did.
class WriterReaper {
 public:
  explicit WriterReaper(pid_t pid) : pid_(pid) {}
  WriterReaper(const WriterReaper&) = delete;
  WriterReaper& operator=(const WriterReaper&) = delete;
  ~WriterReaper() {
    if (pid_ > 0) KillAndWait();
  }

  // Kills the writer with SIGKILL and returns its wait status.
  int KillAndWait() {
    kill(pid_, SIGKILL);
    int wait_status = 0;
    EXPECT_EQ(waitpid(pid_, &wait_status, 0), pid_) << std::strerror(errno);
    pid_ = -1;
    return wait_status;
  }

 private:
  pid_t pid_;
};

void ExpectEntriesEq(const std::map<uint64_t, paxospb::Entry>& actual,
                     const std::map<uint64_t, paxospb::Entry>& expected) {
  std::vector<uint64_t> actual_slots;
  for (const auto& [slot, entry] : actual) actual_slots.push_back(slot);
  std::vector<uint64_t> expected_slots;
  for (const auto& [slot, entry] : expected) expected_slots.push_back(slot);
  ASSERT_EQ(actual_slots, expected_slots);
  for (const auto& [slot, entry] : expected) {
    EXPECT_TRUE(MessageDifferencer::Equals(actual.at(slot), entry))
        << "entry for slot " << slot << " differs";
  }
}

class LevelDbStorageCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string name =
        ::testing::TempDir() + "leveldb_storage_crash_test.XXXXXX";
    ASSERT_NE(mkdtemp(name.data()), nullptr) << std::strerror(errno);
    dir_ = name;
  }

  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::string dir_;
};

TEST_F(LevelDbStorageCrashTest, KilledWriterKeepsAcknowledgedBatchesAtomic) {
  uint64_t last_ack = 0;
  // Mean time between two acknowledgements, measured in the first round.
  std::chrono::nanoseconds save_interval{0};
  for (const KillPoint& kill_point : kKillPoints) {
    SCOPED_TRACE(absl::StrCat("kill after ", kill_point.acks,
                              " acknowledgements + ", kill_point.save_fraction,
                              " Save()"));
    int ack_fd = -1;
    const pid_t pid = StartWriter(dir_, &ack_fd);
    ASSERT_GT(pid, 0);
    AckReader acks(ack_fd);
    WriterReaper writer(pid);
    const uint64_t round_start = last_ack;
    std::chrono::steady_clock::time_point first_ack_time;
    uint64_t ack = 0;
    AckReader::Result result = AckReader::Result::kAck;
    while (last_ack - round_start < kill_point.acks &&
           (result = acks.Next(kAckTimeout, &ack)) == AckReader::Result::kAck) {
      ASSERT_EQ(ack, last_ack + 1) << "acknowledgements out of order";
      last_ack = ack;
      if (last_ack == round_start + 1) {
        first_ack_time = std::chrono::steady_clock::now();
      }
    }
    if (save_interval.count() == 0 && last_ack > round_start + 1) {
      save_interval = (std::chrono::steady_clock::now() - first_ack_time) /
                      (last_ack - round_start - 1);
    }
    // Let the next Save() run for a while; if it completes first, the kill
    // follows its acknowledgement.
    if (result == AckReader::Result::kAck) {
      const auto delay = std::chrono::duration_cast<std::chrono::nanoseconds>(
          save_interval * kill_point.save_fraction);
      if (acks.Next(delay, &ack) == AckReader::Result::kAck) {
        ASSERT_EQ(ack, last_ack + 1) << "acknowledgements out of order";
        last_ack = ack;
      }
    }
    const int wait_status = writer.KillAndWait();
    ASSERT_NE(result, AckReader::Result::kTimeout)
        << "writer sent no acknowledgement for " << kAckTimeout.count() << " s";
    ASSERT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL)
        << "writer ended on its own with wait status " << wait_status;
    // Acknowledgements sent before the kill count too.
    while (acks.Next(kAckTimeout, &ack) == AckReader::Result::kAck) {
      ASSERT_EQ(ack, last_ack + 1) << "acknowledgements out of order";
      last_ack = ack;
    }
    ASSERT_GE(last_ack - round_start, kill_point.acks);

    absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage =
        LevelDbStorage::Open(dir_);
    ASSERT_TRUE(storage.ok()) << storage.status();
    absl::StatusOr<DurableState> state = (*storage)->Load();
    ASSERT_TRUE(state.ok()) << state.status();

    // The kill may land after a Save() returned but before its
    // acknowledgement was written: then one more batch is stored.
    const uint64_t stored = state->hard_state.commit();
    ASSERT_GE(stored, last_ack) << "an acknowledged batch was lost";
    ASSERT_LE(stored, last_ack + 1) << "a batch never saved is present";
    const DurableState expected = StateAfter(stored);
    EXPECT_TRUE(
        MessageDifferencer::Equals(state->hard_state, expected.hard_state));
    ASSERT_EQ(state->snapshot.has_value(), expected.snapshot.has_value());
    if (expected.snapshot.has_value()) {
      EXPECT_TRUE(
          MessageDifferencer::Equals(*state->snapshot, *expected.snapshot));
    }
    ExpectEntriesEq(state->entries, expected.entries);
    last_ack = stored;
  }
}

}  // namespace
}  // namespace lockd

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], lockd::kWriterFlag) == 0) {
    return lockd::RunWriter(argv[2], std::atoi(argv[3]));
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
