// Locks across sessions on a real 3-replica cell: try-acquire, blocking
// acquire, FIFO waiters, shared locks, lock generations and an external
// fencing check under contention.

#include <atomic>
#include <string>
#include <thread>
#include <vector>

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
using v1::SHARED;

// True once `holder` was told that session `waiter` waits for its lock on
// `path` (so the waiter is parked in the cell's queue).
bool SawConflict(const TestClient& holder, const std::string& path,
                 uint64_t waiter, absl::Duration timeout) {
  return holder.WaitForEvent(
      [&](const v1::Event& event) {
        return event.type() == v1::Event::LOCK_CONFLICT &&
               event.path() == path && event.other_session_id() == waiter;
      },
      timeout);
}

class LockTest : public CellTest {};

TEST_F(LockTest, TryAcquireFailsWhileHeldAndBlockingAcquireGetsItAfterRelease) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewClient();
  TestClient* b = NewClient();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);

  absl::StatusOr<v1::AcquireResponse> held = a->Acquire("/l", EXCLUSIVE);
  LOCKD_ASSERT_OK(held);
  const v1::Sequencer first = held->sequencer();
  EXPECT_EQ(first.path(), "/l");
  EXPECT_EQ(first.mode(), EXCLUSIVE);
  EXPECT_EQ(first.session_id(), a->session_id());
  EXPECT_GT(first.lock_generation(), 0u);

  EXPECT_EQ(CodeOf(b->Acquire("/l", EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CodeOf(b->Acquire("/l", SHARED)),
            absl::StatusCode::kFailedPrecondition);

  std::atomic<bool> done{false};
  absl::StatusOr<v1::AcquireResponse> waited;
  std::thread waiter([&] {
    waited = b->Acquire("/l", EXCLUSIVE, absl::Seconds(30));
    done = true;
  });
  EXPECT_TRUE(SawConflict(*a, "/l", b->session_id(), absl::Seconds(10)))
      << "the holder got no LOCK_CONFLICT event naming the waiter";
  EXPECT_FALSE(done.load()) << "a blocking acquire returned while the lock "
                               "was held: "
                            << waited.status();

  LOCKD_EXPECT_OK(a->Release("/l"));
  waiter.join();
  LOCKD_ASSERT_OK(waited);
  const v1::Sequencer second = waited->sequencer();
  EXPECT_EQ(second.session_id(), b->session_id());
  EXPECT_GT(second.lock_generation(), first.lock_generation());

  // Fencing: the old sequencer is stale, the new one valid.
  absl::StatusOr<v1::CheckSequencerResponse> old_check =
      b->CheckSequencer(first);
  LOCKD_ASSERT_OK(old_check);
  EXPECT_FALSE(old_check->valid());
  EXPECT_FALSE(old_check->reason().empty());
  absl::StatusOr<v1::CheckSequencerResponse> new_check =
      a->CheckSequencer(second);
  LOCKD_ASSERT_OK(new_check);
  EXPECT_TRUE(new_check->valid()) << new_check->reason();

  // Releasing a lock one does not hold.
  EXPECT_EQ(CodeOf(a->Release("/l")), absl::StatusCode::kFailedPrecondition);

  // The node carries the generation.
  absl::StatusOr<v1::StatNodeResponse> stat = a->Stat("/l");
  LOCKD_ASSERT_OK(stat);
  EXPECT_EQ(stat->meta().lock_generation(), second.lock_generation());
}

TEST_F(LockTest, WaitersAreGrantedInFifoOrder) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* holder = NewClient();
  ASSERT_NE(holder, nullptr);
  constexpr int kWaiters = 3;
  std::vector<TestClient*> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.push_back(NewClient());
    ASSERT_NE(waiters.back(), nullptr);
  }
  LOCKD_ASSERT_OK(holder->Acquire("/fifo", EXCLUSIVE));

  absl::Mutex mu;
  std::vector<int> order;  // Guarded by mu.
  std::vector<absl::Status> results(kWaiters);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<v1::AcquireResponse> got =
          waiters[i]->Acquire("/fifo", EXCLUSIVE, absl::Seconds(60));
      results[i] = got.status();
      if (!got.ok()) return;
      {
        absl::MutexLock lock(&mu);
        order.push_back(i);
      }
      results[i] = waiters[i]->Release("/fifo");
    });
    // The next waiter starts only once this one is queued.
    ASSERT_TRUE(SawConflict(*holder, "/fifo", waiters[i]->session_id(),
                            absl::Seconds(10)))
        << "waiter " << i << " (session " << waiters[i]->session_id()
        << ") never showed up as a LOCK_CONFLICT at the holder";
  }
  LOCKD_EXPECT_OK(holder->Release("/fifo"));
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kWaiters; ++i) {
    EXPECT_TRUE(results[i].ok()) << "waiter " << i << ": " << results[i];
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(order, std::vector<int>({0, 1, 2}));
}

TEST_F(LockTest, SharedHoldersExcludeAWriterUntilAllRelease) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* r1 = NewClient();
  TestClient* r2 = NewClient();
  TestClient* w = NewClient();
  ASSERT_TRUE(r1 != nullptr && r2 != nullptr && w != nullptr);

  absl::StatusOr<v1::AcquireResponse> s1 = r1->Acquire("/rw", SHARED);
  LOCKD_ASSERT_OK(s1);
  EXPECT_EQ(s1->sequencer().mode(), SHARED);
  LOCKD_ASSERT_OK(r2->Acquire("/rw", SHARED));
  EXPECT_EQ(CodeOf(w->Acquire("/rw", EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);

  std::atomic<bool> done{false};
  absl::StatusOr<v1::AcquireResponse> writer;
  std::thread thread([&] {
    writer = w->Acquire("/rw", EXCLUSIVE, absl::Seconds(30));
    done = true;
  });
  EXPECT_TRUE(SawConflict(*r1, "/rw", w->session_id(), absl::Seconds(10)));
  absl::StatusOr<v1::StatNodeResponse> before = r1->Stat("/rw");
  LOCKD_ASSERT_OK(before);
  LOCKD_EXPECT_OK(r1->Release("/rw"));
  // One reader still holds it: the writer keeps waiting (an exclusive grant
  // would have bumped the lock generation).
  absl::StatusOr<v1::StatNodeResponse> after = r2->Stat("/rw");
  LOCKD_ASSERT_OK(after);
  EXPECT_EQ(after->meta().lock_generation(), before->meta().lock_generation())
      << "writer granted while a reader holds the lock";
  EXPECT_FALSE(done.load()) << "writer granted while a reader holds the lock";
  LOCKD_EXPECT_OK(r2->Release("/rw"));
  thread.join();
  LOCKD_ASSERT_OK(writer);
  EXPECT_EQ(writer->sequencer().mode(), EXCLUSIVE);
  // Now the writer excludes readers.
  EXPECT_EQ(CodeOf(r1->Acquire("/rw", SHARED)),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(LockTest, LockGenerationGrowsWithEveryExclusiveGrant) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  uint64_t last = 0;
  for (int i = 0; i < 10; ++i) {
    TestClient* c = i % 2 == 0 ? a : b;
    absl::StatusOr<v1::AcquireResponse> got = c->Acquire("/gen", EXCLUSIVE);
    LOCKD_ASSERT_OK(got);
    EXPECT_GT(got->sequencer().lock_generation(), last) << "grant " << i;
    last = got->sequencer().lock_generation();
    LOCKD_ASSERT_OK(c->Release("/gen"));
  }
  // Shared grants leave it alone.
  LOCKD_ASSERT_OK(a->Acquire("/gen", SHARED));
  absl::StatusOr<v1::StatNodeResponse> stat = b->Stat("/gen");
  LOCKD_ASSERT_OK(stat);
  EXPECT_EQ(stat->meta().lock_generation(), last);
}

TEST_F(LockTest, ContendedLocksStayExclusiveAndFenced) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  constexpr int kWorkers = 4;
  const std::vector<std::string> paths = {"/c1", "/c2"};
  std::vector<TestClient*> clients;
  for (int i = 0; i < kWorkers; ++i) {
    clients.push_back(NewClient());
    ASSERT_NE(clients.back(), nullptr);
  }
  FencingChecker checker;
  std::atomic<bool> stop{false};
  std::atomic<int> grants{0};
  absl::Mutex mu;
  std::vector<std::string> errors;  // Guarded by mu.
  std::vector<std::thread> threads;
  for (int i = 0; i < kWorkers; ++i) {
    threads.emplace_back([&, i] {
      TestClient* c = clients[i];
      for (int n = 0; !stop.load(); ++n) {
        const std::string& path = paths[(i + n) % paths.size()];
        absl::StatusOr<v1::AcquireResponse> got =
            c->Acquire(path, EXCLUSIVE, absl::Seconds(2));
        if (!got.ok()) {
          if (got.status().code() == absl::StatusCode::kDeadlineExceeded) {
            continue;
          }
          absl::MutexLock lock(&mu);
          errors.push_back(got.status().ToString());
          return;
        }
        checker.Granted(path, c->session_id(),
                        got->sequencer().lock_generation());
        grants.fetch_add(1);
        checker.Releasing(path, c->session_id());
        absl::Status released = c->Release(path);
        if (!released.ok()) {
          absl::MutexLock lock(&mu);
          errors.push_back(released.ToString());
          return;
        }
      }
    });
  }
  EXPECT_TRUE(
      PollUntil([&] { return grants.load() >= 200; }, absl::Seconds(60)))
      << "only " << grants.load() << " grants";
  stop = true;
  for (std::thread& thread : threads) thread.join();
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(errors.empty()) << absl::StrJoin(errors, "\n");
  std::vector<std::string> violations = checker.violations();
  EXPECT_TRUE(violations.empty()) << absl::StrJoin(violations, "\n");
}

}  // namespace
}  // namespace lockd::integration
