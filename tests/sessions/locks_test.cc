// Unit tests of locks in the state machine: grant rules, FIFO waiting
// without barging, shared/exclusive interplay, wait timeouts, lock-delay,
// close versus expiry, events, sequencers, and elections built on locks.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessions/state_machine.h"
#include "tests/sessions/test_util.h"

namespace lockd::sessions {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kLongWaitMs = 100000;

class LocksTest : public ::testing::Test {
 protected:
  // Sends an acquire that must be answered now; returns its result.
  statepb::Result Acquire(uint64_t session, const std::string& path,
                          v1::LockMode mode, int64_t wait_timeout_ms = 0,
                          int64_t lock_delay_ms = 0) {
    std::optional<statepb::Result> result = cell_.Run(
        session, AcquireCommand(path, mode, wait_timeout_ms, lock_delay_ms));
    EXPECT_TRUE(result.has_value()) << "parked";
    return result.value_or(statepb::Result());
  }
  // Sends an acquire that must park; returns its request id.
  uint64_t Park(uint64_t session, const std::string& path, v1::LockMode mode,
                int64_t wait_timeout_ms = kLongWaitMs) {
    uint64_t request_id = 0;
    EXPECT_FALSE(cell_
                     .Run(session, AcquireCommand(path, mode, wait_timeout_ms),
                          &request_id)
                     .has_value());
    return request_id;
  }
  // Releases and returns the sessions whose parked requests were granted.
  std::vector<uint64_t> Release(uint64_t session, const std::string& path) {
    ApplyResult applied;
    const std::optional<statepb::Result> result =
        cell_.Run(session, ReleaseCommand(path), nullptr, &applied);
    EXPECT_EQ(result.value_or(statepb::Result()).code(), kOk);
    return Granted(applied);
  }
  static std::vector<uint64_t> Granted(const ApplyResult& applied) {
    std::vector<uint64_t> granted;
    for (const Completion& completion : applied.completions) {
      if (completion.result.code() == kOk &&
          (completion.result.has_acquire() ||
           completion.result.has_campaign())) {
        granted.push_back(completion.key.session_id);
      }
    }
    return granted;
  }

  Cell cell_;
  const uint64_t a_ = cell_.NewSession();
  const uint64_t b_ = cell_.NewSession();
  const uint64_t c_ = cell_.NewSession();
  const uint64_t d_ = cell_.NewSession();
};

TEST_F(LocksTest, AcquireCreatesMissingNodeUnderExistingParent) {
  const statepb::Result result = Acquire(a_, "/l", v1::EXCLUSIVE);
  ASSERT_EQ(result.code(), kOk) << result.message();
  auto node = cell_.sm().GetNode("/l");
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->content(), "");
  EXPECT_EQ(node->meta().ephemeral_owner(), 0u);
  const v1::Sequencer& sequencer = result.acquire().sequencer();
  EXPECT_EQ(sequencer.path(), "/l");
  EXPECT_EQ(sequencer.mode(), v1::EXCLUSIVE);
  EXPECT_EQ(sequencer.lock_generation(), 1u);
  EXPECT_EQ(sequencer.session_id(), a_);
  EXPECT_EQ(sequencer.instance(), node->meta().instance());
  EXPECT_EQ(Acquire(a_, "/missing/l", v1::EXCLUSIVE).code(), kNotFound);
  // The node outlives the lock.
  Release(a_, "/l");
  EXPECT_TRUE(cell_.sm().StatNode("/l").ok());
}

TEST_F(LocksTest, RefusesBadArguments) {
  EXPECT_EQ(Acquire(a_, "/l", v1::LOCK_MODE_UNSPECIFIED).code(),
            kInvalidArgument);
  EXPECT_EQ(Acquire(a_, "l", v1::EXCLUSIVE).code(), kInvalidArgument);
  EXPECT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE, -2).code(), kInvalidArgument);
  EXPECT_EQ(
      Acquire(a_, "/l", v1::EXCLUSIVE, Limits().max_wait_timeout_ms + 1).code(),
      kInvalidArgument);
  EXPECT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE, 0, Limits().max_lock_delay_ms + 1)
                .code(),
            kInvalidArgument);
  EXPECT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE, 0, -1).code(), kInvalidArgument);
  EXPECT_FALSE(cell_.sm().StatNode("/l").ok());
}

TEST_F(LocksTest, TryAcquireOfHeldLockFailsNamingTheHolder) {
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  const statepb::Result refused = Acquire(b_, "/l", v1::EXCLUSIVE);
  EXPECT_EQ(refused.code(), kFailedPrecondition);
  EXPECT_THAT(refused.message(),
              HasSubstr("held by session " + std::to_string(a_)));
  EXPECT_EQ(Acquire(b_, "/l", v1::SHARED).code(), kFailedPrecondition);
}

TEST_F(LocksTest, ReacquireInSameModeIsIdempotentOtherModeFails) {
  const statepb::Result first = Acquire(a_, "/l", v1::EXCLUSIVE);
  const statepb::Result again = Acquire(a_, "/l", v1::EXCLUSIVE);
  ASSERT_EQ(again.code(), kOk);
  EXPECT_EQ(again.acquire().sequencer().SerializeAsString(),
            first.acquire().sequencer().SerializeAsString());
  EXPECT_EQ(cell_.sm().StatNode("/l")->meta().lock_generation(), 1u);
  const statepb::Result other_mode = Acquire(a_, "/l", v1::SHARED);
  EXPECT_EQ(other_mode.code(), kFailedPrecondition);
  EXPECT_THAT(other_mode.message(), HasSubstr("EXCLUSIVE"));
}

TEST_F(LocksTest, ExclusiveGrantsBumpGenerationSharedGrantsDoNot) {
  EXPECT_EQ(
      Acquire(a_, "/l", v1::SHARED).acquire().sequencer().lock_generation(),
      0u);
  EXPECT_EQ(
      Acquire(b_, "/l", v1::SHARED).acquire().sequencer().lock_generation(),
      0u);
  Release(a_, "/l");
  Release(b_, "/l");
  EXPECT_EQ(
      Acquire(a_, "/l", v1::EXCLUSIVE).acquire().sequencer().lock_generation(),
      1u);
  Release(a_, "/l");
  EXPECT_EQ(
      Acquire(b_, "/l", v1::SHARED).acquire().sequencer().lock_generation(),
      1u);
  Release(b_, "/l");
  EXPECT_EQ(
      Acquire(c_, "/l", v1::EXCLUSIVE).acquire().sequencer().lock_generation(),
      2u);
}

TEST_F(LocksTest, SharedHoldersCoexistAndExcludeWriters) {
  ASSERT_EQ(Acquire(a_, "/l", v1::SHARED).code(), kOk);
  ASSERT_EQ(Acquire(b_, "/l", v1::SHARED).code(), kOk);
  EXPECT_EQ(Acquire(c_, "/l", v1::EXCLUSIVE).code(), kFailedPrecondition);
  Park(c_, "/l", v1::EXCLUSIVE);
  EXPECT_THAT(Release(a_, "/l"), IsEmpty());
  EXPECT_THAT(Release(b_, "/l"), ElementsAre(c_));
}

TEST_F(LocksTest, WaitersAreGrantedInFifoOrder) {
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  Park(c_, "/l", v1::EXCLUSIVE);
  Park(b_, "/l", v1::EXCLUSIVE);
  Park(d_, "/l", v1::EXCLUSIVE);
  EXPECT_THAT(Release(a_, "/l"), ElementsAre(c_));
  EXPECT_THAT(Release(c_, "/l"), ElementsAre(b_));
  EXPECT_THAT(Release(b_, "/l"), ElementsAre(d_));
  EXPECT_EQ(cell_.sm().StatNode("/l")->meta().lock_generation(), 4u);
}

TEST_F(LocksTest, NoBargingPastAnEarlierWaiter) {
  ASSERT_EQ(Acquire(a_, "/l", v1::SHARED).code(), kOk);
  Park(b_, "/l", v1::EXCLUSIVE);
  // Shared is compatible with the holder, but a writer waits first.
  const statepb::Result barging = Acquire(c_, "/l", v1::SHARED);
  EXPECT_EQ(barging.code(), kFailedPrecondition);
  EXPECT_THAT(barging.message(), HasSubstr("earlier waiters"));
  Park(c_, "/l", v1::SHARED);
  EXPECT_THAT(Release(a_, "/l"), ElementsAre(b_));
  EXPECT_THAT(Release(b_, "/l"), ElementsAre(c_));
}

TEST_F(LocksTest, ReleaseGrantsARunOfSharedWaiters) {
  const uint64_t e = cell_.NewSession();
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  Park(b_, "/l", v1::SHARED);
  Park(c_, "/l", v1::SHARED);
  Park(d_, "/l", v1::EXCLUSIVE);
  Park(e, "/l", v1::SHARED);
  EXPECT_THAT(Release(a_, "/l"), ElementsAre(b_, c_));
  EXPECT_THAT(Release(b_, "/l"), IsEmpty());
  EXPECT_THAT(Release(c_, "/l"), ElementsAre(d_));
  EXPECT_THAT(Release(d_, "/l"), ElementsAre(e));
}

TEST_F(LocksTest, ParkedGrantCompletesAndSendsLockAcquired) {
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  const uint64_t request = Park(b_, "/l", v1::EXCLUSIVE);
  ApplyResult applied;
  ASSERT_EQ(cell_.Run(a_, ReleaseCommand("/l"), nullptr, &applied)->code(),
            kOk);
  const std::optional<statepb::Result> granted =
      FindCompletion(applied, {b_, request});
  ASSERT_TRUE(granted.has_value());
  EXPECT_EQ(granted->acquire().sequencer().lock_generation(), 2u);
  EXPECT_THAT(applied.sessions_with_events, ElementsAre(b_));
  const std::vector<v1::Event> events = cell_.sm().PendingEvents(b_, 0);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type(), v1::Event::LOCK_ACQUIRED);
  EXPECT_EQ(events[0].path(), "/l");
  EXPECT_EQ(events[0].sequencer().SerializeAsString(),
            granted->acquire().sequencer().SerializeAsString());
}

TEST_F(LocksTest, ParkingSendsLockConflictToEachHolder) {
  const v1::Sequencer a_grant =
      Acquire(a_, "/l", v1::SHARED).acquire().sequencer();
  ASSERT_EQ(Acquire(b_, "/l", v1::SHARED).code(), kOk);
  ApplyResult applied;
  EXPECT_FALSE(cell_
                   .Run(c_, AcquireCommand("/l", v1::EXCLUSIVE, kLongWaitMs),
                        nullptr, &applied)
                   .has_value());
  EXPECT_THAT(applied.sessions_with_events, ElementsAre(a_, b_));
  for (uint64_t holder : {a_, b_}) {
    const std::vector<v1::Event> events = cell_.sm().PendingEvents(holder, 0);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].type(), v1::Event::LOCK_CONFLICT);
    EXPECT_EQ(events[0].path(), "/l");
    EXPECT_EQ(events[0].other_session_id(), c_);
    EXPECT_EQ(events[0].sequencer().session_id(), holder);
  }
  EXPECT_EQ(cell_.sm().PendingEvents(a_, 0)[0].sequencer().SerializeAsString(),
            a_grant.SerializeAsString());
  // Every waiter is announced, also a reader queued behind the writer.
  EXPECT_FALSE(cell_
                   .Run(d_, AcquireCommand("/l", v1::SHARED, kLongWaitMs),
                        nullptr, &applied)
                   .has_value());
  EXPECT_THAT(applied.sessions_with_events, ElementsAre(a_, b_));
  EXPECT_EQ(cell_.sm().PendingEvents(a_, 1)[0].other_session_id(), d_);
}

TEST_F(LocksTest, SessionMayWaitOnlyOnceForALock) {
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  Park(b_, "/l", v1::EXCLUSIVE);
  const statepb::Result twice = Acquire(b_, "/l", v1::SHARED, kLongWaitMs);
  EXPECT_EQ(twice.code(), kFailedPrecondition);
  EXPECT_THAT(twice.message(), HasSubstr("already waits"));
}

TEST_F(LocksTest, WaitTimesOutWithDeadlineExceededAtItsDeadline) {
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  const uint64_t request = Park(b_, "/l", v1::EXCLUSIVE, 500);
  EXPECT_EQ(cell_.sm().NextDeadline(), cell_.now() + 500);
  EXPECT_THAT(cell_.Advance(499).completions, IsEmpty());
  const ApplyResult timed_out = cell_.Advance(1);
  const std::optional<statepb::Result> result =
      FindCompletion(timed_out, {b_, request});
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), kDeadlineExceeded);
  // The deadline as people read it, and as a number for programs.
  EXPECT_THAT(result->message(),
              HasSubstr("was not granted by its wait deadline (1970-01-01T"));
  EXPECT_THAT(result->message(), HasSubstr("Z, now)"));
  EXPECT_EQ(result->error_time_ms(), cell_.now());
  // The answer is recorded for retries; the lock is unaffected.
  EXPECT_EQ(cell_.RunAs(b_, request, AcquireCommand("/l", v1::EXCLUSIVE, 500))
                ->code(),
            kDeadlineExceeded);
  EXPECT_THAT(Release(a_, "/l"), IsEmpty());
}

TEST_F(LocksTest, AWaitWithoutDeadlineKeepsItsPlaceForHours) {
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  Park(b_, "/l", v1::EXCLUSIVE, -1);
  absl::StatusOr<v1::ListLocksResponse> listed = cell_.sm().ListLocks("/l");
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->locks(0).waiters_size(), 1);
  EXPECT_EQ(listed->locks(0).waiters(0).wait_remaining_ms(), -1);
  // Hours later (both sessions kept alive) the waiter is still first, and
  // it survives a snapshot.
  for (int hour = 0; hour < 3; ++hour) {
    for (int i = 0; i < 720; ++i) {
      cell_.Advance(5'000);
      cell_.Renew(a_);
      cell_.Renew(b_);
    }
  }
  StateMachine restored;
  ASSERT_TRUE(restored.Restore(cell_.sm().Snapshot()).ok());
  EXPECT_EQ(restored.Snapshot(), cell_.sm().Snapshot());
  EXPECT_EQ(restored.NextDeadline(), cell_.sm().NextDeadline());
  EXPECT_THAT(Release(a_, "/l"), ElementsAre(b_));
  EXPECT_EQ(
      cell_.RunAs(a_, 99, AcquireCommand("/m", v1::EXCLUSIVE, -2))->code(),
      kInvalidArgument);
}

TEST_F(LocksTest, TimedOutHeadWaiterLetsCompatibleWaitersIn) {
  ASSERT_EQ(Acquire(a_, "/l", v1::SHARED).code(), kOk);
  Park(b_, "/l", v1::EXCLUSIVE, 500);
  Park(c_, "/l", v1::SHARED, kLongWaitMs);
  const ApplyResult applied = cell_.Advance(500);
  EXPECT_THAT(Granted(applied), ElementsAre(c_));
}

TEST_F(LocksTest, MaxWaitersPerLock) {
  Limits limits;
  limits.max_waiters_per_lock = 1;
  Cell cell(limits);
  const uint64_t a = cell.NewSession();
  const uint64_t b = cell.NewSession();
  const uint64_t c = cell.NewSession();
  ASSERT_EQ(cell.Run(a, AcquireCommand("/l", v1::EXCLUSIVE))->code(), kOk);
  EXPECT_FALSE(
      cell.Run(b, AcquireCommand("/l", v1::EXCLUSIVE, 1000)).has_value());
  const statepb::Result full =
      *cell.Run(c, AcquireCommand("/l", v1::EXCLUSIVE, 1000));
  EXPECT_EQ(full.code(), kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("max_waiters_per_lock"));
}

TEST_F(LocksTest, ReleaseOfLockNotHeldFails) {
  const std::optional<statepb::Result> missing =
      cell_.Run(a_, ReleaseCommand("/nothing"));
  EXPECT_EQ(missing->code(), kFailedPrecondition);
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  const std::optional<statepb::Result> not_mine =
      cell_.Run(b_, ReleaseCommand("/l"));
  EXPECT_EQ(not_mine->code(), kFailedPrecondition);
  EXPECT_THAT(not_mine->message(), HasSubstr("does not hold"));
  EXPECT_EQ(cell_.Run(a_, ReleaseCommand("l"))->code(), kInvalidArgument);
}

TEST_F(LocksTest, CheckSequencer) {
  const v1::Sequencer sequencer =
      Acquire(a_, "/l", v1::EXCLUSIVE).acquire().sequencer();
  EXPECT_TRUE(cell_.sm().CheckSequencer(sequencer).valid());
  v1::Sequencer wrong_mode = sequencer;
  wrong_mode.set_mode(v1::SHARED);
  EXPECT_FALSE(cell_.sm().CheckSequencer(wrong_mode).valid());
  v1::Sequencer wrong_session = sequencer;
  wrong_session.set_session_id(b_);
  EXPECT_FALSE(cell_.sm().CheckSequencer(wrong_session).valid());

  Release(a_, "/l");
  v1::CheckSequencerResponse released = cell_.sm().CheckSequencer(sequencer);
  EXPECT_FALSE(released.valid());
  EXPECT_THAT(released.reason(), HasSubstr("does not hold"));

  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  released = cell_.sm().CheckSequencer(sequencer);
  EXPECT_FALSE(released.valid());
  EXPECT_THAT(released.reason(), HasSubstr("generation"));

  // Delete and recreate: the same generation number on a new instance.
  Release(a_, "/l");
  ASSERT_EQ(cell_.Run(a_, DeleteNodeCommand("/l"))->code(), kOk);
  EXPECT_THAT(cell_.sm().CheckSequencer(sequencer).reason(),
              HasSubstr("does not exist"));
  const v1::Sequencer reborn =
      Acquire(a_, "/l", v1::EXCLUSIVE).acquire().sequencer();
  EXPECT_EQ(reborn.lock_generation(), sequencer.lock_generation());
  const v1::CheckSequencerResponse recreated =
      cell_.sm().CheckSequencer(sequencer);
  EXPECT_FALSE(recreated.valid());
  EXPECT_THAT(recreated.reason(), HasSubstr("recreated"));
  EXPECT_TRUE(cell_.sm().CheckSequencer(reborn).valid());
  v1::Sequencer bad_path = reborn;
  bad_path.set_path("l");
  EXPECT_FALSE(cell_.sm().CheckSequencer(bad_path).valid());
}

TEST_F(LocksTest, ExpiryOfExclusiveHolderImposesLockDelay) {
  const uint64_t holder = cell_.NewSession(/*ttl_ms=*/1000);
  ASSERT_EQ(Acquire(holder, "/l", v1::EXCLUSIVE, 0, 3000).code(), kOk);
  const uint64_t request = Park(a_, "/l", v1::EXCLUSIVE);
  const ApplyResult expired = cell_.Advance(1000);
  EXPECT_THAT(expired.ended_sessions, ElementsAre(holder));
  EXPECT_THAT(Granted(expired), IsEmpty());
  EXPECT_EQ(cell_.sm().NextDeadline(), cell_.now() + 3000);
  const statepb::Result try_now = Acquire(b_, "/l", v1::EXCLUSIVE);
  EXPECT_EQ(try_now.code(), kFailedPrecondition);
  EXPECT_THAT(cell_.Advance(2999).completions, IsEmpty());
  const ApplyResult delay_over = cell_.Advance(1);
  EXPECT_THAT(Granted(delay_over), ElementsAre(a_));
  EXPECT_TRUE(FindCompletion(delay_over, {a_, request}).has_value());
}

TEST_F(LocksTest, LockDelayWithoutWaitersThenFree) {
  const uint64_t holder = cell_.NewSession(1000);
  ASSERT_EQ(Acquire(holder, "/l", v1::EXCLUSIVE, 0, 2000).code(), kOk);
  cell_.Advance(1000);
  const statepb::Result delayed = Acquire(a_, "/l", v1::SHARED);
  EXPECT_EQ(delayed.code(), kFailedPrecondition);
  // Cell time 1,001,000 ms; the delay ends 2 s later.
  ASSERT_EQ(cell_.now(), 1'001'000);
  EXPECT_THAT(delayed.message(),
              HasSubstr("is in lock-delay until 1970-01-01T00:16:43.000Z, 2s "
                        "from now"));
  EXPECT_EQ(delayed.error_time_ms(), 1'003'000);
  cell_.Advance(2000);
  EXPECT_EQ(Acquire(a_, "/l", v1::SHARED).code(), kOk);
}

TEST_F(LocksTest, SharedHolderExpiryHasNoLockDelay) {
  const uint64_t holder = cell_.NewSession(1000);
  ASSERT_EQ(Acquire(holder, "/l", v1::SHARED, 0, 3000).code(), kOk);
  Park(a_, "/l", v1::EXCLUSIVE);
  EXPECT_THAT(Granted(cell_.Advance(1000)), ElementsAre(a_));
}

TEST_F(LocksTest, CloseReleasesWithoutLockDelayExpiryWith) {
  const uint64_t closing = cell_.NewSession(1000);
  const uint64_t expiring = cell_.NewSession(1000);
  ASSERT_EQ(Acquire(closing, "/closed", v1::EXCLUSIVE, 0, 3000).code(), kOk);
  ASSERT_EQ(Acquire(expiring, "/expired", v1::EXCLUSIVE, 0, 3000).code(), kOk);
  Park(a_, "/closed", v1::EXCLUSIVE);
  Park(b_, "/expired", v1::EXCLUSIVE);
  ApplyResult closed;
  ASSERT_EQ(cell_.Run(closing, CloseSessionCommand(), nullptr, &closed)->code(),
            kOk);
  EXPECT_THAT(Granted(closed), ElementsAre(a_));
  const ApplyResult expired = cell_.Advance(1000);
  EXPECT_THAT(expired.ended_sessions, ElementsAre(expiring));
  EXPECT_THAT(Granted(expired), IsEmpty());
  EXPECT_THAT(Granted(cell_.Advance(3000)), ElementsAre(b_));
}

TEST_F(LocksTest, EndedSessionsParkedRequestsFailWithReason) {
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  const uint64_t closing = cell_.NewSession();
  const uint64_t expiring = cell_.NewSession(1000);
  const uint64_t closing_request = Park(closing, "/l", v1::EXCLUSIVE);
  const uint64_t expiring_request = Park(expiring, "/l", v1::SHARED);
  ApplyResult closed;
  ASSERT_EQ(cell_.Run(closing, CloseSessionCommand(), nullptr, &closed)->code(),
            kOk);
  const std::optional<statepb::Result> closed_result =
      FindCompletion(closed, {closing, closing_request});
  ASSERT_TRUE(closed_result.has_value());
  EXPECT_EQ(closed_result->code(), kFailedPrecondition);
  EXPECT_THAT(closed_result->message(), HasSubstr("session closed"));
  const ApplyResult expired = cell_.Advance(1000);
  const std::optional<statepb::Result> expired_result =
      FindCompletion(expired, {expiring, expiring_request});
  ASSERT_TRUE(expired_result.has_value());
  EXPECT_EQ(expired_result->code(), kFailedPrecondition);
  EXPECT_THAT(expired_result->message(), HasSubstr("session expired"));
  // Neither is granted later.
  EXPECT_THAT(Release(a_, "/l"), IsEmpty());
}

TEST_F(LocksTest, ExpiredHeadWaiterUnblocksTheQueue) {
  const uint64_t expiring = cell_.NewSession(1000);
  ASSERT_EQ(Acquire(a_, "/l", v1::SHARED).code(), kOk);
  Park(expiring, "/l", v1::EXCLUSIVE);
  Park(b_, "/l", v1::SHARED);
  EXPECT_THAT(Granted(cell_.Advance(1000)), ElementsAre(b_));
}

TEST_F(LocksTest, EphemeralLockNodeDeletedWithOwnerTellsHolderLockLost) {
  const uint64_t owner = cell_.NewSession(1000);
  ASSERT_EQ(cell_.Run(owner, CreateNodeCommand("/e", "", true))->code(), kOk);
  const v1::Sequencer sequencer =
      Acquire(a_, "/e", v1::EXCLUSIVE).acquire().sequencer();
  const uint64_t request = Park(b_, "/e", v1::EXCLUSIVE);
  const ApplyResult expired = cell_.Advance(1000);
  EXPECT_FALSE(cell_.sm().StatNode("/e").ok());
  const std::vector<v1::Event> events = cell_.sm().PendingEvents(a_, 0);
  EXPECT_THAT(EventTypes(events),
              ElementsAre(v1::Event::LOCK_CONFLICT, v1::Event::LOCK_LOST));
  EXPECT_EQ(events[1].sequencer().SerializeAsString(),
            sequencer.SerializeAsString());
  const std::optional<statepb::Result> waiter =
      FindCompletion(expired, {b_, request});
  ASSERT_TRUE(waiter.has_value());
  EXPECT_EQ(waiter->code(), kFailedPrecondition);
  EXPECT_THAT(waiter->message(), HasSubstr("deleted"));
  EXPECT_EQ(cell_.Run(a_, ReleaseCommand("/e"))->code(), kFailedPrecondition);
}

TEST_F(LocksTest, ExpiryDeletesEphemeralNodesAndReleasesLocks) {
  const uint64_t expiring = cell_.NewSession(1000);
  ASSERT_EQ(cell_.Run(a_, WatchCommand("/"))->code(), kOk);
  ASSERT_EQ(cell_.Run(expiring, CreateNodeCommand("/e", "", true))->code(),
            kOk);
  ASSERT_EQ(Acquire(expiring, "/l", v1::SHARED).code(), kOk);
  const ApplyResult expired = cell_.Advance(1000);
  EXPECT_THAT(expired.ended_sessions, ElementsAre(expiring));
  EXPECT_FALSE(cell_.sm().StatNode("/e").ok());
  EXPECT_EQ(Acquire(b_, "/l", v1::EXCLUSIVE).code(), kOk);
  EXPECT_THAT(EventTypes(cell_.sm().PendingEvents(a_, 0)),
              ElementsAre(v1::Event::CHILD_ADDED, v1::Event::CHILD_ADDED,
                          v1::Event::CHILD_REMOVED));
}

TEST_F(LocksTest, NextDeadlineIsTheEarliestOfAllKinds) {
  // Sessions expire at now + 10000; a wait of 400 comes first.
  ASSERT_EQ(Acquire(a_, "/l", v1::EXCLUSIVE).code(), kOk);
  Park(b_, "/l", v1::EXCLUSIVE, 400);
  EXPECT_EQ(cell_.sm().NextDeadline(), cell_.now() + 400);
  cell_.Advance(400);
  EXPECT_EQ(cell_.sm().NextDeadline(), cell_.now() + 10000 - 400);
  const uint64_t short_lived = cell_.NewSession(1000);
  EXPECT_EQ(cell_.sm().NextDeadline(), cell_.now() + 1000);
  ASSERT_EQ(Acquire(short_lived, "/m", v1::EXCLUSIVE, 0, 200).code(), kOk);
  cell_.Advance(1000);
  EXPECT_EQ(cell_.sm().NextDeadline(), cell_.now() + 200);
}

// ---------------------------------------------------------------- elections

TEST_F(LocksTest, CampaignWinsAndWritesValue) {
  ApplyResult applied;
  const statepb::Result won =
      *cell_.Run(a_, CampaignCommand("db", "host-a"), nullptr, &applied);
  ASSERT_EQ(won.code(), kOk) << won.message();
  EXPECT_EQ(won.campaign().leader().name(), "db");
  EXPECT_EQ(won.campaign().leader().value(), "host-a");
  EXPECT_EQ(won.campaign().leader().session_id(), a_);
  EXPECT_EQ(won.campaign().leader().lock_generation(), 1u);
  EXPECT_EQ(won.campaign().sequencer().path(), "/election/db");
  EXPECT_THAT(applied.changed_elections, ElementsAre("db"));
  auto node = cell_.sm().GetNode("/election/db");
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->content(), "host-a");
  EXPECT_EQ(node->meta().content_generation(), 2u);
  auto leader = cell_.sm().GetLeader("db");
  ASSERT_TRUE(leader.ok());
  EXPECT_EQ(leader->leader().SerializeAsString(),
            won.campaign().leader().SerializeAsString());
  // Campaigning again while leading changes nothing.
  const statepb::Result again =
      *cell_.Run(a_, CampaignCommand("db", "other"), nullptr, &applied);
  EXPECT_EQ(again.campaign().leader().value(), "host-a");
  EXPECT_THAT(applied.changed_elections, IsEmpty());
}

TEST_F(LocksTest, CampaignTryFailsWhileLedThenWaitsAndWinsOnResign) {
  ASSERT_EQ(cell_.Run(a_, CampaignCommand("db", "a"))->code(), kOk);
  EXPECT_EQ(cell_.Run(b_, CampaignCommand("db", "b"))->code(),
            kFailedPrecondition);
  uint64_t request = 0;
  EXPECT_FALSE(cell_.Run(b_, CampaignCommand("db", "b", kLongWaitMs), &request)
                   .has_value());
  ApplyResult resigned;
  ASSERT_EQ(cell_.Run(a_, ResignCommand("db"), nullptr, &resigned)->code(),
            kOk);
  const std::optional<statepb::Result> won =
      FindCompletion(resigned, {b_, request});
  ASSERT_TRUE(won.has_value());
  EXPECT_EQ(won->campaign().leader().value(), "b");
  EXPECT_EQ(won->campaign().leader().lock_generation(), 2u);
  EXPECT_THAT(resigned.changed_elections, ElementsAre("db"));
  EXPECT_EQ(cell_.sm().GetLeader("db")->leader().session_id(), b_);
  EXPECT_THAT(EventTypes(cell_.sm().PendingEvents(b_, 0)),
              ElementsAre(v1::Event::LOCK_ACQUIRED));
}

TEST_F(LocksTest, ExpiredLeaderImposesTheCampaignsLockDelay) {
  const uint64_t leader = cell_.NewSession(/*ttl_ms=*/1000);
  ASSERT_EQ(cell_.Run(leader, CampaignCommand("db", "old", 0, 2000))->code(),
            kOk);
  uint64_t request = 0;
  EXPECT_FALSE(
      cell_.Run(a_, CampaignCommand("db", "new", kLongWaitMs, 500), &request)
          .has_value());
  EXPECT_THAT(cell_.Advance(1000).ended_sessions, ElementsAre(leader));
  EXPECT_EQ(cell_.sm().GetLeader("db").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(cell_.Advance(1999).completions, IsEmpty());
  const ApplyResult delay_over = cell_.Advance(1);
  EXPECT_TRUE(FindCompletion(delay_over, {a_, request}).has_value());
  EXPECT_EQ(cell_.sm().GetLeader("db")->leader().value(), "new");
  EXPECT_EQ(cell_.Run(b_, CampaignCommand("x", "b", 0, -1))->code(),
            kInvalidArgument);
}

TEST_F(LocksTest, ProclaimOnlyByLeader) {
  ASSERT_EQ(cell_.Run(a_, CampaignCommand("db", "a"))->code(), kOk);
  const statepb::Result refused = *cell_.Run(b_, ProclaimCommand("db", "b"));
  EXPECT_EQ(refused.code(), kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("does not lead"));
  EXPECT_EQ(cell_.Run(b_, ProclaimCommand("none", "b"))->code(),
            kFailedPrecondition);
  ApplyResult applied;
  const statepb::Result proclaimed =
      *cell_.Run(a_, ProclaimCommand("db", "a2"), nullptr, &applied);
  ASSERT_EQ(proclaimed.code(), kOk);
  EXPECT_EQ(proclaimed.proclaim().leader().value(), "a2");
  EXPECT_THAT(applied.changed_elections, ElementsAre("db"));
  EXPECT_EQ(cell_.sm().GetNode("/election/db")->meta().content_generation(),
            3u);
  EXPECT_EQ(cell_.sm().GetLeader("db")->leader().value(), "a2");
}

TEST_F(LocksTest, GetLeaderAndResignWithoutLeader) {
  EXPECT_EQ(cell_.sm().GetLeader("db").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(cell_.Run(a_, ResignCommand("db"))->code(), kFailedPrecondition);
  ASSERT_EQ(cell_.Run(a_, CampaignCommand("db", "a"))->code(), kOk);
  ApplyResult applied;
  ASSERT_EQ(cell_.Run(a_, ResignCommand("db"), nullptr, &applied)->code(), kOk);
  EXPECT_THAT(applied.changed_elections, ElementsAre("db"));
  EXPECT_EQ(cell_.sm().GetLeader("db").status().code(),
            absl::StatusCode::kNotFound);
  // The election's lock is not a lock for Locks.Acquire.
  const statepb::Result shared = Acquire(b_, "/election/db", v1::SHARED);
  EXPECT_EQ(shared.code(), kInvalidArgument);
  EXPECT_THAT(shared.message(),
              HasSubstr("\"/election/db\" is reserved for elections: "
                        "Locks.Acquire cannot change it"));
  EXPECT_EQ(cell_.sm().GetLeader("db").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(LocksTest, ElectionNamesMustBeOneValidName) {
  for (const char* name : {"", ".", "..", "a/b", "/a"}) {
    EXPECT_EQ(cell_.Run(a_, CampaignCommand(name, "v"))->code(),
              kInvalidArgument)
        << name;
    EXPECT_EQ(cell_.Run(a_, ProclaimCommand(name, "v"))->code(),
              kInvalidArgument)
        << name;
    EXPECT_EQ(cell_.Run(a_, ResignCommand(name))->code(), kInvalidArgument)
        << name;
    EXPECT_EQ(cell_.sm().GetLeader(name).status().code(),
              absl::StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_EQ(
      cell_
          .Run(a_, CampaignCommand(
                       "db", std::string(Limits().max_content_bytes + 1, 'x')))
          ->code(),
      kInvalidArgument);
  EXPECT_FALSE(cell_.sm().StatNode("/election").ok());
}

TEST_F(LocksTest, LeaderExpiryPassesLeadershipWithoutDelay) {
  const uint64_t leader = cell_.NewSession(1000);
  ASSERT_EQ(cell_.Run(leader, CampaignCommand("db", "old"))->code(), kOk);
  uint64_t request = 0;
  EXPECT_FALSE(
      cell_.Run(a_, CampaignCommand("db", "new", kLongWaitMs), &request)
          .has_value());
  const ApplyResult expired = cell_.Advance(1000);
  EXPECT_THAT(expired.ended_sessions, ElementsAre(leader));
  EXPECT_THAT(expired.changed_elections, ElementsAre("db"));
  ASSERT_TRUE(FindCompletion(expired, {a_, request}).has_value());
  EXPECT_EQ(cell_.sm().GetLeader("db")->leader().value(), "new");
}

TEST_F(LocksTest, OrdinaryWritesCannotTouchElections) {
  ASSERT_EQ(cell_.Run(a_, CampaignCommand("db", "a"))->code(), kOk);
  for (statepb::Command command :
       {SetNodeCommand("/election/db", "x"), DeleteNodeCommand("/election/db"),
        CreateNodeCommand("/election/other"),
        CreateNodeCommand("/election/db/below")}) {
    ApplyResult applied;
    const statepb::Result result = *cell_.Run(b_, command, nullptr, &applied);
    EXPECT_EQ(result.code(), kInvalidArgument) << command.ShortDebugString();
    EXPECT_THAT(result.message(), HasSubstr("is reserved for elections"));
    EXPECT_THAT(applied.changed_elections, IsEmpty());
  }
  EXPECT_EQ(cell_.sm().GetLeader("db")->leader().value(), "a");
  EXPECT_FALSE(cell_.sm().StatNode("/election/other").ok());
}

}  // namespace
}  // namespace lockd::sessions
