// kill -9 in a real 3-replica cell: of the leader under load (once and
// repeatedly), of a follower, with a parked waiter, with request numbers
// replayed across the failover; health follows the leader.

#include <atomic>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/cell_fixture.h"
#include "tests/integration/fencing_checker.h"

namespace lockd::integration {
namespace {

using v1::EXCLUSIVE;

class FailoverTest : public CellTest {
 protected:
  std::vector<int> AllBut(int id) const {
    std::vector<int> others;
    for (int i = 1; i <= cell_->size(); ++i) {
      if (i != id) others.push_back(i);
    }
    return others;
  }

  std::vector<int> All() const { return AllBut(0); }

  uint64_t Epoch(int id) {
    absl::StatusOr<v1::StatusResponse> status = cell_->Status(id);
    EXPECT_TRUE(status.ok()) << status.status();
    return status.ok() ? status->epoch() : 0;
  }
};

// Clients looping over contended locks. Every iteration also writes the
// client's own counter node and appends a sequential node, so that a
// request applied twice (or lost) across failovers shows up in the counts,
// and every grant goes through the fencing checker.
class Load {
 public:
  static constexpr int kWorkers = 4;

  // One worker per client; CreateNodes() before Start().
  explicit Load(std::vector<TestClient*> clients) {
    for (size_t i = 0; i < clients.size(); ++i) {
      auto worker = std::make_unique<Worker>();
      worker->client = clients[i];
      worker->counter_path = absl::StrCat("/work/counter-", i);
      worker->queue_path = absl::StrCat("/work/queue-", i);
      workers_.push_back(std::move(worker));
    }
  }

  void Start() {
    for (size_t i = 0; i < workers_.size(); ++i) {
      threads_.emplace_back([this, i] { Run(*workers_[i], i); });
    }
  }

  void Stop() {
    stop_ = true;
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
  }

  // Iterations each worker completed.
  std::vector<uint64_t> Iterations() const {
    std::vector<uint64_t> result;
    for (const auto& w : workers_) result.push_back(w->iterations.load());
    return result;
  }
  // Polls until every worker did `more` iterations beyond now.
  bool WaitForProgress(uint64_t more, absl::Duration timeout) const {
    const std::vector<uint64_t> floor = Iterations();
    return PollUntil(
        [&] {
          const std::vector<uint64_t> now = Iterations();
          for (size_t i = 0; i < now.size(); ++i) {
            if (now[i] < floor[i] + more) return false;
          }
          return true;
        },
        timeout);
  }

  // From now on, the first grant that `killed` did not answer is timed (see
  // first_grant_after()).
  void MarkKill(const std::string& killed) {
    {
      absl::MutexLock lock(&mu_);
      killed_address_ = killed;
    }
    first_grant_after_ns_ = 0;
    mark_ns_ = absl::ToUnixNanos(absl::Now());
  }
  // The first such grant after MarkKill(), if any.
  std::optional<absl::Time> first_grant_after() const {
    const int64_t ns = first_grant_after_ns_.load();
    if (ns == 0) return std::nullopt;
    return absl::FromUnixNanos(ns);
  }

  const FencingChecker& checker() const { return checker_; }

  std::string Summary() const {
    uint64_t iterations = 0, retries = 0, wait_timeouts = 0;
    for (const auto& w : workers_) {
      iterations += w->iterations.load();
      retries += w->client->retries();
      wait_timeouts += w->wait_timeouts;
    }
    return absl::StrCat(workers_.size(), " workers, ", iterations,
                        " iterations, ", checker_.grants(), " grants checked, ",
                        wait_timeouts, " wait timeouts, ", retries,
                        " retried attempts");
  }

  // After Stop(): no errors, no fencing violations, and every counter and
  // queue shows each answered request applied exactly once.
  void Check(TestClient* reader) const {
    std::vector<std::string> violations = checker_.violations();
    EXPECT_TRUE(violations.empty()) << absl::StrJoin(violations, "\n");
    for (size_t i = 0; i < workers_.size(); ++i) {
      const Worker& w = *workers_[i];
      EXPECT_TRUE(w.errors.empty()) << "worker " << i << ":\n"
                                    << absl::StrJoin(w.errors, "\n");
      // Content generation 1 at creation, +1 per answered Set.
      absl::StatusOr<v1::GetNodeResponse> counter = reader->Get(w.counter_path);
      LOCKD_ASSERT_OK(counter);
      EXPECT_EQ(counter->content(), absl::StrCat(w.sets));
      EXPECT_EQ(counter->meta().content_generation(), w.sets + 1)
          << "worker " << i << ": a Set was applied twice (or lost)";
      absl::StatusOr<v1::ListChildrenResponse> queue =
          reader->List(w.queue_path);
      LOCKD_ASSERT_OK(queue);
      std::set<std::string> listed;
      for (const std::string& name : queue->names()) {
        listed.insert(w.queue_path + "/" + name);
      }
      EXPECT_EQ(listed, w.created)
          << "worker " << i << ": sequential creates applied twice or lost";
    }
  }

  // Creates /work and each worker's nodes (fails the test otherwise).
  void CreateNodes() {
    LOCKD_ASSERT_OK(workers_[0]->client->Create("/work"));
    for (const auto& w : workers_) {
      LOCKD_ASSERT_OK(w->client->Create(w->counter_path, "0"));
      LOCKD_ASSERT_OK(w->client->Create(w->queue_path));
    }
  }

 private:
  struct Worker {
    TestClient* client = nullptr;
    std::string counter_path;  // Content: the number of Sets answered OK.
    std::string queue_path;    // Children: one per Create answered OK.
    std::atomic<uint64_t> iterations{0};
    uint64_t sets = 0;                // Only the worker thread.
    std::set<std::string> created;    // Only the worker thread.
    std::vector<std::string> errors;  // Only the worker thread.
    uint64_t wait_timeouts = 0;       // Only the worker thread.
  };

  void Run(Worker& w, size_t index) {
    const std::vector<std::string> paths = {"/work/lock-a", "/work/lock-b"};
    TestClient* c = w.client;
    for (uint64_t n = 0; !stop_.load(); ++n) {
      const std::string& path = paths[(index + n) % paths.size()];
      absl::StatusOr<v1::AcquireResponse> got =
          c->Acquire(path, EXCLUSIVE, absl::Seconds(1));
      if (!got.ok()) {
        if (got.status().code() == absl::StatusCode::kDeadlineExceeded) {
          ++w.wait_timeouts;
          continue;
        }
        w.errors.push_back(absl::StrCat("acquire: ", got.status().ToString()));
        return;
      }
      checker_.Granted(path, c->session_id(),
                       got->sequencer().lock_generation());
      const int64_t granted_ns = absl::ToUnixNanos(absl::Now());
      if (granted_ns > mark_ns_.load() && !AnsweredByKilled(*c)) {
        int64_t none = 0;
        first_grant_after_ns_.compare_exchange_strong(none, granted_ns);
      }
      absl::StatusOr<v1::SetNodeResponse> set =
          c->Set(w.counter_path, absl::StrCat(w.sets + 1));
      if (set.ok()) {
        ++w.sets;
      } else {
        w.errors.push_back(absl::StrCat("set: ", set.status().ToString()));
      }
      absl::StatusOr<v1::CreateNodeResponse> created =
          c->Create(w.queue_path + "/item-", "", false, /*sequential=*/true);
      if (created.ok()) {
        if (!w.created.insert(created->path()).second) {
          w.errors.push_back("sequential path given twice: " + created->path());
        }
      } else {
        w.errors.push_back(
            absl::StrCat("create: ", created.status().ToString()));
      }
      checker_.Releasing(path, c->session_id());
      absl::Status released = c->Release(path);
      if (!released.ok()) {
        w.errors.push_back(absl::StrCat("release: ", released.ToString()));
        return;
      }
      w.iterations.fetch_add(1);
    }
  }

  // A grant that arrives late from the killed leader is not a new one.
  bool AnsweredByKilled(const TestClient& c) const {
    absl::MutexLock lock(&mu_);
    return c.last_answered_by() == killed_address_;
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  mutable absl::Mutex mu_;
  std::string killed_address_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  FencingChecker checker_;
  std::atomic<int64_t> mark_ns_{INT64_MAX};
  std::atomic<int64_t> first_grant_after_ns_{0};
};

// A session holding a lock and an ephemeral node through failovers.
struct Holder {
  TestClient* client = nullptr;
  v1::Sequencer lock;
};

TEST_F(FailoverTest, KillLeaderUnderLoad) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int old_leader = Leader();
  ASSERT_NE(old_leader, 0);

  TestClient* holder = NewClient();
  ASSERT_NE(holder, nullptr);
  LOCKD_ASSERT_OK(holder->Create("/held"));
  LOCKD_ASSERT_OK(holder->Create("/held/eph", "e", /*ephemeral=*/true));
  absl::StatusOr<v1::AcquireResponse> held =
      holder->Acquire("/held/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(held);

  std::vector<TestClient*> clients;
  for (int i = 0; i < Load::kWorkers; ++i) {
    clients.push_back(NewClient());
    ASSERT_NE(clients.back(), nullptr);
  }
  Load load(clients);
  ASSERT_NO_FATAL_FAILURE(load.CreateNodes());
  load.Start();

  // Warm up, then kill the leader in the middle of the load.
  EXPECT_TRUE(load.WaitForProgress(5, absl::Seconds(30)))
      << "the workers made no progress before the kill";
  const uint64_t epoch_before = Epoch(old_leader);
  const uint64_t keep_alives_before = holder->keep_alive_responses();
  const absl::Time killed_at = absl::Now();
  LOCKD_ASSERT_OK(cell_->Kill(old_leader));
  load.MarkKill(cell_->address(old_leader));

  absl::StatusOr<int> new_leader =
      cell_->WaitForLeader(absl::Seconds(30), AllBut(old_leader));
  const absl::Duration to_leader = absl::Now() - killed_at;
  ASSERT_TRUE(new_leader.ok()) << new_leader.status();
  EXPECT_NE(*new_leader, old_leader);
  ASSERT_TRUE(PollUntil([&] { return load.first_grant_after().has_value(); },
                        absl::Seconds(30)))
      << "no lock granted after the kill";
  const absl::Duration to_grant = *load.first_grant_after() - killed_at;
  std::fprintf(stderr,
               "failover: leader %d killed; replica %d leads after %s, first "
               "grant after %s (bound %s)\n",
               old_leader, *new_leader, absl::FormatDuration(to_leader).c_str(),
               absl::FormatDuration(to_grant).c_str(),
               absl::FormatDuration(FailoverBound()).c_str());
  EXPECT_LE(to_grant, FailoverBound());
  EXPECT_GT(Epoch(*new_leader), epoch_before);

  // Everyone keeps working against the new leader.
  EXPECT_TRUE(load.WaitForProgress(5, absl::Seconds(30)))
      << "a worker stalled after the failover";
  load.Stop();
  std::fprintf(stderr, "load: %s\n", load.Summary().c_str());
  load.Check(holder);

  // The holder's session, lock and ephemeral node survived, and its
  // keep-alives reached the new leader.
  EXPECT_TRUE(PollUntil(
      [&] {
        return holder->keep_alive_responses() > keep_alives_before &&
               holder->last_keep_alive_epoch() > epoch_before;
      },
      absl::Seconds(10)))
      << "no keep-alive answered by the new leader";
  EXPECT_FALSE(holder->session_lost());
  absl::StatusOr<v1::CheckSequencerResponse> check =
      clients[0]->CheckSequencer(held->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_TRUE(check->valid()) << check->reason();
  EXPECT_EQ(CodeOf(clients[0]->Acquire("/held/lock", EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);
  LOCKD_EXPECT_OK(clients[0]->Stat("/held/eph"));

  // The killed replica comes back and catches up.
  absl::StatusOr<v1::StatusResponse> leader_status = cell_->Status(*new_leader);
  LOCKD_ASSERT_OK(leader_status);
  LOCKD_ASSERT_OK(cell_->StartReplica(old_leader));
  LOCKD_EXPECT_OK(cell_->WaitForApplied(
      old_leader, leader_status->applied_index(), absl::Seconds(30)));
}

TEST_F(FailoverTest, RepeatedLeaderKillsUnderLoad) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* holder = NewClient();
  ASSERT_NE(holder, nullptr);
  LOCKD_ASSERT_OK(holder->Create("/held", "", /*ephemeral=*/true));
  absl::StatusOr<v1::AcquireResponse> held =
      holder->Acquire("/held-lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(held);
  std::vector<TestClient*> clients;
  for (int i = 0; i < Load::kWorkers; ++i) {
    clients.push_back(NewClient());
    ASSERT_NE(clients.back(), nullptr);
  }
  Load load(clients);
  ASSERT_NO_FATAL_FAILURE(load.CreateNodes());
  load.Start();

  // Each round: kill -9 the leader, wait for a new one and for progress,
  // bring the killed replica back and let it catch up (so that the next
  // round has a majority without it).
  constexpr int kRounds = 4;
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_TRUE(load.WaitForProgress(3, absl::Seconds(30)))
        << "round " << round << ": no progress before the kill";
    const int leader = Leader();
    ASSERT_NE(leader, 0);
    const absl::Time killed_at = absl::Now();
    LOCKD_ASSERT_OK(cell_->Kill(leader));
    load.MarkKill(cell_->address(leader));
    const int next = Leader(absl::Seconds(30), AllBut(leader));
    ASSERT_NE(next, 0) << "round " << round;
    ASSERT_TRUE(PollUntil([&] { return load.first_grant_after().has_value(); },
                          absl::Seconds(30)))
        << "round " << round << ": no lock granted after the kill";
    EXPECT_LE(*load.first_grant_after() - killed_at, FailoverBound())
        << "round " << round;
    absl::StatusOr<v1::StatusResponse> status = cell_->Status(next);
    LOCKD_ASSERT_OK(status);
    LOCKD_ASSERT_OK(cell_->StartReplica(leader));
    LOCKD_ASSERT_OK(cell_->WaitForApplied(leader, status->applied_index(),
                                          absl::Seconds(30)))
        << "round " << round;
  }
  ASSERT_TRUE(load.WaitForProgress(3, absl::Seconds(30)));
  load.Stop();
  std::fprintf(stderr, "load: %s\n", load.Summary().c_str());
  load.Check(holder);

  EXPECT_FALSE(holder->session_lost());
  absl::StatusOr<v1::CheckSequencerResponse> check =
      clients[0]->CheckSequencer(held->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_TRUE(check->valid()) << check->reason();
  LOCKD_EXPECT_OK(clients[0]->Stat("/held"));
}

TEST_F(FailoverTest, KillFollowerUnderLoad) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  std::vector<TestClient*> clients;
  for (int i = 0; i < Load::kWorkers; ++i) {
    clients.push_back(NewClient());
    ASSERT_NE(clients.back(), nullptr);
  }
  Load load(clients);
  ASSERT_NO_FATAL_FAILURE(load.CreateNodes());
  load.Start();
  ASSERT_TRUE(load.WaitForProgress(5, absl::Seconds(30)));
  const int leader = Leader();
  const int follower = leader % cell_->size() + 1;
  LOCKD_ASSERT_OK(cell_->Kill(follower));
  // Two of three still make a majority: the load goes on, same leader.
  EXPECT_TRUE(load.WaitForProgress(10, absl::Seconds(30)));
  EXPECT_EQ(Leader(), leader);
  LOCKD_ASSERT_OK(cell_->StartReplica(follower));
  EXPECT_TRUE(load.WaitForProgress(5, absl::Seconds(30)));
  load.Stop();
  load.Check(clients[0]);
  absl::StatusOr<v1::StatusResponse> status = cell_->Status(leader);
  LOCKD_ASSERT_OK(status);
  LOCKD_EXPECT_OK(cell_->WaitForApplied(follower, status->applied_index(),
                                        absl::Seconds(30)));
}

TEST_F(FailoverTest, ShortLeaseSurvivesAFailover) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  // A 1 s lease outlives a failover of ~0.5-1 s: the new leader grants a
  // fresh TTL and the client's keep-alives find it.
  ClientOptions options = DefaultClientOptions();
  options.ttl_ms = 1000;
  TestClient* c = NewClient(options);
  TestClient* observer = NewClient();
  ASSERT_TRUE(c != nullptr && observer != nullptr);
  LOCKD_ASSERT_OK(c->Create("/short", "", /*ephemeral=*/true));
  absl::StatusOr<v1::AcquireResponse> held =
      c->Acquire("/short-lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(held);
  const int leader = Leader();
  LOCKD_ASSERT_OK(cell_->Kill(leader));
  ASSERT_NE(Leader(absl::Seconds(30), AllBut(leader)), 0);
  // Several TTLs against the new leader.
  const uint64_t answers = c->keep_alive_responses();
  EXPECT_TRUE(
      PollUntil([&] { return c->keep_alive_responses() >= answers + 9; },
                absl::Seconds(15)));
  EXPECT_FALSE(c->session_lost());
  LOCKD_EXPECT_OK(observer->Stat("/short"));
  absl::StatusOr<v1::CheckSequencerResponse> check =
      observer->CheckSequencer(held->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_TRUE(check->valid()) << check->reason();
}

TEST_F(FailoverTest, PausedLeaderServesNoStaleReadsWhenItWakes) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int old_leader = Leader();
  ClientOptions options = DefaultClientOptions();
  options.attempt_timeout = absl::Seconds(1);  // The paused one never answers.
  TestClient* writer = NewClient(options);
  ASSERT_NE(writer, nullptr);
  LOCKD_ASSERT_OK(writer->Create("/p", "before"));

  // Connections to the old leader, up before the pause.
  constexpr int kReaders = 4;
  std::vector<std::unique_ptr<v1::Nodes::Stub>> stubs;
  for (int i = 0; i < kReaders; ++i) {
    stubs.push_back(v1::Nodes::NewStub(NewChannel(cell_->address(old_leader))));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::GetNodeRequest request;
    request.set_path("/p");
    v1::GetNodeResponse response;
    grpc::Status status = stubs.back()->Get(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.content(), "before");
  }

  // The leader stalls; the others elect a new one, which takes a write.
  LOCKD_ASSERT_OK(cell_->Pause(old_leader));
  const int new_leader = Leader(absl::Seconds(30), AllBut(old_leader));
  ASSERT_NE(new_leader, 0);
  LOCKD_ASSERT_OK(writer->Set("/p", "after"));

  // Reads keep arriving at the old leader while it wakes up. Each must be
  // refused or see the new value; "before" is a stale read.
  std::atomic<bool> stop{false};
  std::atomic<int> stale{0}, fresh{0}, refused{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&, i] {
      while (!stop.load()) {
        grpc::ClientContext context;
        context.set_deadline(
            absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
        v1::GetNodeRequest request;
        request.set_path("/p");
        v1::GetNodeResponse response;
        grpc::Status status = stubs[i]->Get(&context, request, &response);
        if (!status.ok()) {
          ++refused;
        } else if (response.content() == "before") {
          ++stale;
        } else {
          ++fresh;
        }
      }
    });
  }
  LOCKD_EXPECT_OK(cell_->Resume(old_leader));
  // It learns that it was deposed.
  EXPECT_TRUE(PollUntil(
      [&] {
        absl::StatusOr<v1::StatusResponse> status = cell_->Status(old_leader);
        return status.ok() && status->role() != "leader" &&
               status->leader_id() == static_cast<uint32_t>(new_leader);
      },
      absl::Seconds(10)))
      << "the resumed replica does not follow the new leader";
  EXPECT_TRUE(PollUntil([&] { return refused.load() + fresh.load() >= 20; },
                        absl::Seconds(10)));
  stop = true;
  for (std::thread& reader : readers) reader.join();
  std::fprintf(stderr,
               "reads at the resumed leader: %d stale, %d fresh, %d "
               "refused\n",
               stale.load(), fresh.load(), refused.load());
  EXPECT_EQ(stale.load(), 0) << "the old leader served stale reads";
  // The cell still has one leader.
  EXPECT_EQ(Leader(), new_leader);
}

// A session learns of a failover from the epoch of its keep-alive answers
// (the client library turns a higher epoch into LEADER_CHANGED; lockd.proto).
TEST_F(FailoverTest, KeepAliveAnswersCarryTheNewLeadersEpoch) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  TestClient* c = NewClient();
  ASSERT_NE(c, nullptr);
  LOCKD_ASSERT_OK(c->Create("/x"));
  ASSERT_TRUE(PollUntil([&] { return c->last_keep_alive_epoch() > 0; },
                        absl::Seconds(10)))
      << "no keep-alive answer yet";
  const uint64_t epoch_before = c->last_keep_alive_epoch();
  LOCKD_ASSERT_OK(cell_->Kill(leader));
  ASSERT_NE(Leader(absl::Seconds(30), AllBut(leader)), 0);
  EXPECT_TRUE(
      PollUntil([&] { return c->last_keep_alive_epoch() > epoch_before; },
                absl::Seconds(10)))
      << "keep-alive answers still carry epoch " << epoch_before;
}

TEST_F(FailoverTest, HealthIsServingOnlyOnTheLeader) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  auto only_leader_serves = [&](int leader, const std::vector<int>& among) {
    for (int id : among) {
      absl::StatusOr<bool> serving = cell_->Serving(id);
      if (!serving.ok() || *serving != (id == leader)) return false;
    }
    return true;
  };
  const int leader = Leader();
  EXPECT_TRUE(PollUntil([&] { return only_leader_serves(leader, All()); },
                        absl::Seconds(10)))
      << "health is not SERVING on exactly the leader " << leader;
  LOCKD_ASSERT_OK(cell_->Kill(leader));
  const int next = Leader(absl::Seconds(30), AllBut(leader));
  ASSERT_NE(next, 0);
  EXPECT_TRUE(
      PollUntil([&] { return only_leader_serves(next, AllBut(leader)); },
                absl::Seconds(10)))
      << "health is not SERVING on exactly the new leader " << next;
}

TEST_F(FailoverTest, RetriedRequestsAfterFailoverAreNotAppliedTwice) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int old_leader = Leader();
  ClientOptions options = DefaultClientOptions();
  options.report_answered = false;  // We replay old numbers below.
  TestClient* c = NewClient(options);
  TestClient* other = NewClient();
  ASSERT_TRUE(c != nullptr && other != nullptr);
  LOCKD_ASSERT_OK(c->Create("/r", "v0"));

  v1::CreateNodeRequest create;
  *create.mutable_header() = c->NewHeader();
  create.set_path("/r/item-");
  create.set_sequential(true);
  absl::StatusOr<v1::CreateNodeResponse> created = c->Send(create);
  LOCKD_ASSERT_OK(created);
  v1::SetNodeRequest set;
  *set.mutable_header() = c->NewHeader();
  set.set_path("/r");
  set.set_content("v1");
  absl::StatusOr<v1::SetNodeResponse> written = c->Send(set);
  LOCKD_ASSERT_OK(written);
  v1::AcquireRequest acquire;
  *acquire.mutable_header() = c->NewHeader();
  acquire.set_path("/r/lock");
  acquire.set_mode(EXCLUSIVE);
  absl::StatusOr<v1::AcquireResponse> granted = c->Send(acquire);
  LOCKD_ASSERT_OK(granted);
  LOCKD_ASSERT_OK(c->Release("/r/lock"));

  LOCKD_ASSERT_OK(cell_->Kill(old_leader));
  ASSERT_NE(Leader(absl::Seconds(30), AllBut(old_leader)), 0);

  // The same numbers, now answered by the new leader from the replicated
  // record.
  absl::StatusOr<v1::CreateNodeResponse> created_again = c->Send(create);
  LOCKD_ASSERT_OK(created_again);
  EXPECT_EQ(created_again->path(), created->path());
  absl::StatusOr<v1::SetNodeResponse> written_again = c->Send(set);
  LOCKD_ASSERT_OK(written_again);
  EXPECT_EQ(written_again->meta().content_generation(),
            written->meta().content_generation());
  absl::StatusOr<v1::AcquireResponse> granted_again = c->Send(acquire);
  LOCKD_ASSERT_OK(granted_again);
  EXPECT_EQ(granted_again->sequencer().lock_generation(),
            granted->sequencer().lock_generation());

  absl::StatusOr<v1::ListChildrenResponse> children = other->List("/r");
  LOCKD_ASSERT_OK(children);
  int items = 0;
  for (const std::string& name : children->names()) {
    if (absl::StartsWith(name, "item-")) ++items;
  }
  EXPECT_EQ(items, 1);
  absl::StatusOr<v1::GetNodeResponse> node = other->Get("/r");
  LOCKD_ASSERT_OK(node);
  EXPECT_EQ(node->meta().content_generation(),
            written->meta().content_generation());
  absl::StatusOr<v1::AcquireResponse> others =
      other->Acquire("/r/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(others);
  EXPECT_EQ(others->sequencer().lock_generation(),
            granted->sequencer().lock_generation() + 1);
  // New numbers act as usual.
  absl::StatusOr<v1::SetNodeResponse> next = c->Set("/r", "v2");
  LOCKD_ASSERT_OK(next);
  EXPECT_EQ(next->meta().content_generation(),
            written->meta().content_generation() + 1);
}

TEST_F(FailoverTest, ParkedWaiterKeepsItsPlaceAcrossFailover) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int old_leader = Leader();
  TestClient* holder = NewClient();
  TestClient* waiter = NewClient();
  ASSERT_TRUE(holder != nullptr && waiter != nullptr);
  absl::StatusOr<v1::AcquireResponse> held =
      holder->Acquire("/parked", EXCLUSIVE);
  LOCKD_ASSERT_OK(held);

  absl::StatusOr<v1::AcquireResponse> waited;
  std::thread thread([&] {
    waited = waiter->Acquire("/parked", EXCLUSIVE, absl::Seconds(60));
  });
  ASSERT_TRUE(holder->WaitForEvent(
      [&](const v1::Event& event) {
        return event.type() == v1::Event::LOCK_CONFLICT &&
               event.other_session_id() == waiter->session_id();
      },
      absl::Seconds(10)))
      << "the waiter never showed up as a LOCK_CONFLICT";

  LOCKD_ASSERT_OK(cell_->Kill(old_leader));
  ASSERT_NE(Leader(absl::Seconds(30), AllBut(old_leader)), 0);
  LOCKD_EXPECT_OK(holder->Release("/parked"));
  thread.join();
  LOCKD_ASSERT_OK(waited);
  EXPECT_EQ(waited->sequencer().session_id(), waiter->session_id());
  EXPECT_GT(waited->sequencer().lock_generation(),
            held->sequencer().lock_generation());
}

}  // namespace
}  // namespace lockd::integration
