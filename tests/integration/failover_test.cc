// kill -9 of the leader of a real 3-replica cell: under load, with a parked
// waiter, and with request numbers replayed across the failover.

#include <atomic>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
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

  uint64_t Epoch(int id) {
    absl::StatusOr<v1::StatusResponse> status = cell_->Status(id);
    EXPECT_TRUE(status.ok()) << status.status();
    return status.ok() ? status->epoch() : 0;
  }
};

// One client looping over contended locks; every iteration also writes its
// own counter node and appends a sequential node, so that a request applied
// twice across the failover shows up in the counts.
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

TEST_F(FailoverTest, KillLeaderUnderLoad) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int old_leader = Leader();
  ASSERT_NE(old_leader, 0);

  // A session that holds a lock and an ephemeral node through the failover.
  TestClient* holder = NewClient();
  ASSERT_NE(holder, nullptr);
  LOCKD_ASSERT_OK(holder->Create("/held"));
  LOCKD_ASSERT_OK(holder->Create("/held/eph", "e", /*ephemeral=*/true));
  absl::StatusOr<v1::AcquireResponse> held =
      holder->Acquire("/held/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(held);
  LOCKD_ASSERT_OK(holder->Create("/work"));

  constexpr int kWorkers = 4;
  const std::vector<std::string> paths = {"/work/lock-a", "/work/lock-b"};
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < kWorkers; ++i) {
    auto worker = std::make_unique<Worker>();
    worker->client = NewClient();
    ASSERT_NE(worker->client, nullptr);
    worker->counter_path = absl::StrCat("/work/counter-", i);
    worker->queue_path = absl::StrCat("/work/queue-", i);
    LOCKD_ASSERT_OK(worker->client->Create(worker->counter_path, "0"));
    LOCKD_ASSERT_OK(worker->client->Create(worker->queue_path));
    workers.push_back(std::move(worker));
  }

  FencingChecker checker;
  std::atomic<bool> stop{false};
  // Set just before the kill; the first grant after it records its time.
  std::atomic<int64_t> killed_at_ns{INT64_MAX};
  std::atomic<int64_t> first_grant_after_kill_ns{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWorkers; ++i) {
    threads.emplace_back([&, i] {
      Worker& w = *workers[i];
      TestClient* c = w.client;
      for (uint64_t n = 0; !stop.load(); ++n) {
        const std::string& path = paths[(i + n) % paths.size()];
        absl::StatusOr<v1::AcquireResponse> got =
            c->Acquire(path, EXCLUSIVE, absl::Seconds(1));
        if (!got.ok()) {
          if (got.status().code() == absl::StatusCode::kDeadlineExceeded) {
            ++w.wait_timeouts;
            continue;
          }
          w.errors.push_back(
              absl::StrCat("acquire: ", got.status().ToString()));
          return;
        }
        checker.Granted(path, c->session_id(),
                        got->sequencer().lock_generation());
        const int64_t granted_ns = absl::ToUnixNanos(absl::Now());
        if (granted_ns > killed_at_ns.load()) {
          int64_t none = 0;
          first_grant_after_kill_ns.compare_exchange_strong(none, granted_ns);
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
            w.errors.push_back("sequential path given twice: " +
                               created->path());
          }
        } else {
          w.errors.push_back(
              absl::StrCat("create: ", created.status().ToString()));
        }
        checker.Releasing(path, c->session_id());
        absl::Status released = c->Release(path);
        if (!released.ok()) {
          w.errors.push_back(absl::StrCat("release: ", released.ToString()));
          return;
        }
        w.iterations.fetch_add(1);
      }
    });
  }
  auto all_reached = [&](const std::vector<uint64_t>& floor) {
    for (int i = 0; i < kWorkers; ++i) {
      if (workers[i]->iterations.load() < floor[i]) return false;
    }
    return true;
  };
  auto iterations_plus = [&](uint64_t more) {
    std::vector<uint64_t> floor;
    for (const auto& w : workers) floor.push_back(w->iterations.load() + more);
    return floor;
  };

  // Warm up, then kill the leader in the middle of the load.
  EXPECT_TRUE(
      PollUntil([&] { return all_reached(std::vector<uint64_t>(kWorkers, 5)); },
                absl::Seconds(30)))
      << "the workers made no progress before the kill";
  const uint64_t epoch_before = Epoch(old_leader);
  const uint64_t keep_alives_before = holder->keep_alive_responses();
  const absl::Time killed_at = absl::Now();
  LOCKD_ASSERT_OK(cell_->Kill(old_leader));
  // Reaped: every grant seen from now on comes from a new leader.
  killed_at_ns.store(absl::ToUnixNanos(absl::Now()));

  absl::StatusOr<int> new_leader =
      cell_->WaitForLeader(absl::Seconds(30), AllBut(old_leader));
  const absl::Duration to_leader = absl::Now() - killed_at;
  ASSERT_TRUE(new_leader.ok()) << new_leader.status();
  EXPECT_NE(*new_leader, old_leader);
  ASSERT_TRUE(PollUntil([&] { return first_grant_after_kill_ns.load() != 0; },
                        absl::Seconds(30)))
      << "no lock granted after the kill";
  const absl::Duration to_grant =
      absl::FromUnixNanos(first_grant_after_kill_ns.load()) - killed_at;
  std::fprintf(stderr,
               "failover: leader %d killed; replica %d leads after %s, first "
               "grant after %s (bound %s)\n",
               old_leader, *new_leader, absl::FormatDuration(to_leader).c_str(),
               absl::FormatDuration(to_grant).c_str(),
               absl::FormatDuration(FailoverBound()).c_str());
  EXPECT_LE(to_grant, FailoverBound());
  EXPECT_GT(Epoch(*new_leader), epoch_before);

  // Everyone keeps working against the new leader.
  EXPECT_TRUE(
      PollUntil([&, floor = iterations_plus(5)] { return all_reached(floor); },
                absl::Seconds(30)))
      << "a worker stalled after the failover";
  stop = true;
  for (std::thread& thread : threads) thread.join();
  uint64_t iterations = 0, retries = 0, wait_timeouts = 0;
  for (const auto& w : workers) {
    iterations += w->iterations.load();
    retries += w->client->retries();
    wait_timeouts += w->wait_timeouts;
  }
  std::fprintf(stderr,
               "load: %d workers, %llu iterations, %llu grants checked, "
               "%llu wait timeouts, %llu retried attempts\n",
               kWorkers, static_cast<unsigned long long>(iterations),
               static_cast<unsigned long long>(checker.grants()),
               static_cast<unsigned long long>(wait_timeouts),
               static_cast<unsigned long long>(retries));

  std::vector<std::string> violations = checker.violations();
  EXPECT_TRUE(violations.empty()) << absl::StrJoin(violations, "\n");
  TestClient* reader = holder;
  for (int i = 0; i < kWorkers; ++i) {
    Worker& w = *workers[i];
    EXPECT_TRUE(w.errors.empty()) << "worker " << i << ":\n"
                                  << absl::StrJoin(w.errors, "\n");
    // Exactly once: content generation 1 at creation, +1 per answered Set.
    absl::StatusOr<v1::GetNodeResponse> counter = reader->Get(w.counter_path);
    LOCKD_ASSERT_OK(counter);
    EXPECT_EQ(counter->content(), absl::StrCat(w.sets));
    EXPECT_EQ(counter->meta().content_generation(), w.sets + 1)
        << "worker " << i << ": a Set was applied twice (or lost)";
    absl::StatusOr<v1::ListChildrenResponse> queue = reader->List(w.queue_path);
    LOCKD_ASSERT_OK(queue);
    std::set<std::string> listed;
    for (const std::string& name : queue->names()) {
      listed.insert(w.queue_path + "/" + name);
    }
    EXPECT_EQ(listed, w.created)
        << "worker " << i << ": sequential creates applied twice or lost";
  }

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
      workers[0]->client->CheckSequencer(held->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_TRUE(check->valid()) << check->reason();
  EXPECT_EQ(CodeOf(workers[0]->client->Acquire("/held/lock", EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);
  LOCKD_EXPECT_OK(workers[0]->client->Stat("/held/eph"));

  // The killed replica comes back and catches up.
  absl::StatusOr<v1::StatusResponse> leader_status = cell_->Status(*new_leader);
  LOCKD_ASSERT_OK(leader_status);
  LOCKD_ASSERT_OK(cell_->StartReplica(old_leader));
  LOCKD_EXPECT_OK(cell_->WaitForApplied(
      old_leader, leader_status->applied_index(), absl::Seconds(30)));
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
