// paxos_bench: throughput of the Multi-Paxos core alone.
//
// Three replicas in one process, no faults, messages delivered in memory.
// Each round the driver collects every replica's Ready, saves the three
// batches (on disk in parallel, one thread per replica, as three machines
// would),
// then delivers messages and applies committed entries. Clients keep
// --outstanding commands in flight (closed loop). Reports committed
// commands/s, fsyncs/s and commit latency percentiles for each storage and
// batch cap.
//
//   paxos_bench                      # memory and leveldb, batch 1/64/1024
//   paxos_bench --storage=leveldb --batch=64 --seconds=5

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/conditions.h"
#include "glog/logging.h"
#include "lockd/leveldb_storage.h"
#include "paxos/memory_storage.h"
#include "paxos/replica.h"

ABSL_FLAG(std::string, storage, "memory,leveldb",
          "Comma-separated storages to measure: memory, leveldb.");
ABSL_FLAG(std::string, batch, "1,64,1024",
          "Comma-separated batch caps (max commands per slot).");
ABSL_FLAG(double, seconds, 3.0, "Measured duration of each configuration.");
ABSL_FLAG(int, outstanding, 4096, "Commands kept in flight by the clients.");
ABSL_FLAG(int, window, 64, "Pipelining window (max slots in flight).");
ABSL_FLAG(int, value_bytes, 64, "Size of each command.");
ABSL_FLAG(std::string, dir, "",
          "Directory for LevelDB data (default: a fresh folder under /tmp). "
          "Its file system decides the fsync cost.");

namespace lockd::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Measurement {
  double commands_per_second = 0;
  double slots_per_second = 0;
  double fsyncs_per_second = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double p999_ms = 0;
};

// Counts the Save() calls that wrote something (one fsync each on disk).
class CountingStorage : public paxos::Storage {
 public:
  explicit CountingStorage(std::unique_ptr<paxos::Storage> inner)
      : inner_(std::move(inner)) {}
  absl::StatusOr<paxos::DurableState> Load() override { return inner_->Load(); }
  absl::Status Save(const paxos::PersistBatch& batch) override {
    if (batch.empty()) return absl::OkStatus();
    ++saves_;
    return inner_->Save(batch);
  }
  uint64_t saves() const { return saves_; }

 private:
  std::unique_ptr<paxos::Storage> inner_;
  uint64_t saves_ = 0;
};

std::string MakeTempDir() {
  std::string pattern = "/tmp/lockd-paxos-bench-XXXXXX";
  CHECK(mkdtemp(pattern.data()) != nullptr) << "mkdtemp failed";
  return pattern;
}

class Cell {
 public:
  Cell(const std::string& storage, int batch_cap, const std::string& dir)
      : parallel_saves_(storage == "leveldb") {
    const std::vector<uint32_t> members = {1, 2, 3};
    for (uint32_t id : members) {
      std::unique_ptr<paxos::Storage> inner;
      if (storage == "leveldb") {
        absl::StatusOr<std::unique_ptr<LevelDbStorage>> opened =
            LevelDbStorage::Open(absl::StrCat(dir, "/replica-", id));
        CHECK(opened.ok()) << opened.status();
        inner = std::move(*opened);
      } else {
        inner = std::make_unique<paxos::MemoryStorage>();
      }
      storages_.push_back(std::make_unique<CountingStorage>(std::move(inner)));
      paxos::Config config;
      config.id = id;
      config.members = members;
      config.max_batch_commands = batch_cap;
      config.max_inflight_slots = absl::GetFlag(FLAGS_window);
      config.max_pending_proposals =
          static_cast<size_t>(absl::GetFlag(FLAGS_outstanding)) + 1;
      config.random_seed = id;
      absl::StatusOr<paxos::DurableState> state = storages_.back()->Load();
      CHECK(state.ok()) << state.status();
      absl::StatusOr<std::unique_ptr<paxos::Replica>> replica =
          paxos::Replica::Create(config, *std::move(state));
      CHECK(replica.ok()) << replica.status();
      replicas_.push_back(std::move(*replica));
    }
  }

  // Ticks until some replica leads; returns its index.
  int ElectLeader() {
    for (int tick = 0; tick < 10000; ++tick) {
      for (auto& replica : replicas_) replica->Tick();
      RunRound();
      for (size_t i = 0; i < replicas_.size(); ++i) {
        if (replicas_[i]->role() == paxos::Role::kLeader) {
          // Let phase 1 re-proposals settle before measuring.
          for (int settle = 0; settle < 10; ++settle) RunRound();
          return static_cast<int>(i);
        }
      }
    }
    LOG(FATAL) << "no leader elected";
  }

  // One round: every replica's Ready is saved in parallel, then messages are
  // delivered and committed entries applied. Returns the commands the
  // leader `leader` applied.
  std::vector<std::string> RunRound(int leader = -1) {
    std::vector<std::string> applied;
    std::vector<paxos::Ready> readies(replicas_.size());
    std::vector<bool> has(replicas_.size(), false);
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i]->HasReady()) {
        readies[i] = replicas_[i]->GetReady();
        has[i] = true;
      }
    }
    // Disk writes of different machines overlap; memory writes are too
    // cheap to be worth a thread.
    const auto launch =
        parallel_saves_ ? std::launch::async : std::launch::deferred;
    std::vector<std::future<absl::Status>> saves;
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (!has[i] || readies[i].persist.empty()) continue;
      saves.push_back(std::async(launch, [this, i, &readies] {
        return storages_[i]->Save(readies[i].persist);
      }));
    }
    for (auto& save : saves) {
      const absl::Status status = save.get();
      CHECK(status.ok()) << status;
    }
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (!has[i]) continue;
      for (paxospb::Message& message : readies[i].messages) {
        inbox_.push_back(std::move(message));
      }
      if (static_cast<int>(i) == leader) {
        for (const paxospb::Entry& entry : readies[i].committed) {
          for (const std::string& command : entry.value().commands()) {
            applied.push_back(command);
          }
        }
      }
      replicas_[i]->Advance();
    }
    std::deque<paxospb::Message> inbox = std::move(inbox_);
    inbox_.clear();
    for (const auto& message : inbox) {
      replicas_[message.to() - 1]->Step(message);
    }
    return applied;
  }

  paxos::Replica& replica(int i) { return *replicas_[i]; }
  uint64_t TotalSaves() const {
    uint64_t total = 0;
    for (const auto& storage : storages_) total += storage->saves();
    return total;
  }
  uint64_t LeaderCommit(int leader) const {
    return replicas_[leader]->commit();
  }

 private:
  std::vector<std::unique_ptr<CountingStorage>> storages_;
  std::vector<std::unique_ptr<paxos::Replica>> replicas_;
  std::deque<paxospb::Message> inbox_;
  const bool parallel_saves_;
};

Measurement Measure(const std::string& storage, int batch_cap,
                    const std::string& dir) {
  Cell cell(storage, batch_cap, dir);
  const int leader = cell.ElectLeader();
  const int outstanding = absl::GetFlag(FLAGS_outstanding);
  const std::string padding(
      static_cast<size_t>(std::max(absl::GetFlag(FLAGS_value_bytes) - 16, 0)),
      'v');
  absl::flat_hash_map<std::string, Clock::time_point> started;
  uint64_t next_id = 0;
  auto propose_up_to_outstanding = [&] {
    while (started.size() < static_cast<size_t>(outstanding)) {
      std::string command = absl::StrCat(next_id++, ":", padding);
      started.emplace(command, Clock::now());
      const absl::Status status =
          cell.replica(leader).Propose(std::move(command));
      CHECK(status.ok()) << status;
    }
  };
  std::vector<double> latencies_ms;
  const uint64_t saves_before = cell.TotalSaves();
  const uint64_t commit_before = cell.LeaderCommit(leader);
  const auto begin = Clock::now();
  const auto end =
      begin + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds)));
  uint64_t committed = 0;
  while (Clock::now() < end) {
    propose_up_to_outstanding();
    for (const std::string& command : cell.RunRound(leader)) {
      auto it = started.find(command);
      if (it == started.end()) continue;
      latencies_ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - it->second)
              .count());
      started.erase(it);
      ++committed;
    }
  }
  const double elapsed =
      std::chrono::duration<double>(Clock::now() - begin).count();
  CHECK(cell.replica(leader).role() == paxos::Role::kLeader)
      << "leadership changed during a fault-free run";
  std::sort(latencies_ms.begin(), latencies_ms.end());
  Measurement m;
  m.commands_per_second = static_cast<double>(committed) / elapsed;
  m.slots_per_second =
      static_cast<double>(cell.LeaderCommit(leader) - commit_before) / elapsed;
  m.fsyncs_per_second =
      static_cast<double>(cell.TotalSaves() - saves_before) / elapsed;
  m.p50_ms = Percentile(latencies_ms, 0.50);
  m.p99_ms = Percentile(latencies_ms, 0.99);
  m.p999_ms = Percentile(latencies_ms, 0.999);
  return m;
}

int Main() {
  std::vector<std::string> storages =
      absl::StrSplit(absl::GetFlag(FLAGS_storage), ',');
  std::vector<int> batches;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_batch), ',')) {
    int cap = 0;
    if (!absl::SimpleAtoi(part, &cap) || cap < 1) {
      std::fprintf(stderr, "paxos_bench: bad --batch value '%s'\n",
                   std::string(part).c_str());
      return 2;
    }
    batches.push_back(cap);
  }
  std::string dir = absl::GetFlag(FLAGS_dir);
  const bool own_dir = dir.empty();
  if (own_dir) dir = MakeTempDir();

  std::printf(
      "# paxos_bench: core only, 3 replicas in one process, no faults\n");
  std::printf("# cpu: %s (%ld online)\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("# disk: %s, 4 KiB write+fdatasync median %.3f ms\n", dir.c_str(),
              MeasureFsyncMs(dir));
  std::printf(
      "# clients: %d commands outstanding (closed loop), %d-byte commands, "
      "window %d slots, %.1f s per row\n",
      absl::GetFlag(FLAGS_outstanding), absl::GetFlag(FLAGS_value_bytes),
      absl::GetFlag(FLAGS_window), absl::GetFlag(FLAGS_seconds));
  std::printf("# fsyncs/s counts synced batches over all 3 replicas\n");
  std::printf("%-8s %6s %14s %11s %10s %9s %9s %9s\n", "storage", "batch",
              "commands/s", "slots/s", "fsyncs/s", "p50_ms", "p99_ms",
              "p99.9_ms");
  int row = 0;
  for (const std::string& storage : storages) {
    if (storage != "memory" && storage != "leveldb") {
      std::fprintf(stderr, "paxos_bench: unknown storage '%s'\n",
                   storage.c_str());
      return 2;
    }
    for (int batch : batches) {
      const std::string row_dir = absl::StrCat(dir, "/run-", row++);
      std::filesystem::create_directories(row_dir);
      const Measurement m = Measure(storage, batch, row_dir);
      std::printf("%-8s %6d %14.0f %11.0f %10.0f %9.3f %9.3f %9.3f\n",
                  storage.c_str(), batch, m.commands_per_second,
                  m.slots_per_second, m.fsyncs_per_second, m.p50_ms, m.p99_ms,
                  m.p999_ms);
      std::fflush(stdout);
    }
  }
  if (own_dir) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace lockd::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Throughput and latency of the lockd Multi-Paxos core (3 replicas, one "
      "process, no faults).");
  absl::ParseCommandLine(argc, argv);
  FLAGS_minloglevel = 1;
  google::InitGoogleLogging(argv[0]);
  return lockd::bench::Main();
}
