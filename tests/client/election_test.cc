// Election and ElectionObserver (client/election.cc) against real local
// cells: FIFO hand-over seen by an observer change by change, Proclaim,
// campaign timeouts, leadership lost with the session, and an observer that
// follows the cell across a kill -9 and a pause of its leader.

#include "lockd/election.h"

#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "lockd/client.h"
#include "lockd/session.h"
#include "tests/client/client_fixture.h"
#include "tests/integration/cell.h"
#include "tests/integration/cell_fixture.h"

namespace lockd {
namespace {

using integration::CodeOf;
using integration::PollUntil;

// The LOCK_CONFLICT events a session got (a campaigner parked behind it).
// Held by shared_ptr: the callback keeps it alive as long as the session.
class ConflictRecorder {
 public:
  static std::shared_ptr<ConflictRecorder> Attach(SessionOptions* options) {
    auto recorder = std::make_shared<ConflictRecorder>();
    options->on_event = [recorder](const v1::Event& event) {
      if (event.type() != v1::Event::LOCK_CONFLICT) return;
      absl::MutexLock lock(&recorder->mu_);
      recorder->waiters_.push_back(event.other_session_id());
    };
    return recorder;
  }
  bool Saw(uint64_t session_id) const {
    absl::MutexLock lock(&mu_);
    return std::find(waiters_.begin(), waiters_.end(), session_id) !=
           waiters_.end();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<uint64_t> waiters_ ABSL_GUARDED_BY(mu_);
};

// The observer's next change (a generous bound: each comes within about a
// second of its cause).
absl::StatusOr<v1::LeaderInfo> NextChange(ElectionObserver* observer) {
  return observer->Next(absl::Seconds(10));
}

class ElectionTest : public LibraryClientTest {
 protected:
  ElectionObserver* NewObserver(Client* client, const std::string& name) {
    absl::StatusOr<std::unique_ptr<ElectionObserver>> observer =
        ElectionObserver::Start(client, name);
    EXPECT_TRUE(observer.ok()) << observer.status();
    if (!observer.ok()) return nullptr;
    observers_.push_back(std::move(*observer));
    return observers_.back().get();
  }

  // What the observer tests start from: a leader elected under `name` with
  // the value "before", and an observer (on a client of its own) that saw
  // it.
  struct ObservedElection {
    Session* session = nullptr;
    std::unique_ptr<Election> won;
    ElectionObserver* observer = nullptr;
    v1::LeaderInfo first_seen;
  };

  // Starts the cell and sets up `*election`; fatal on failure (use
  // ASSERT_NO_FATAL_FAILURE).
  void StartObservedElection(const std::string& name,
                             ObservedElection* election) {
    ASSERT_NO_FATAL_FAILURE(StartCell());
    Client* client = NewLibraryClient();
    Client* observer_client = NewLibraryClient();
    ASSERT_TRUE(client != nullptr && observer_client != nullptr);
    election->session = NewSession(client);
    ASSERT_NE(election->session, nullptr);
    absl::StatusOr<std::unique_ptr<Election>> won = Election::Campaign(
        election->session, name, "before", absl::ZeroDuration());
    LOCKD_ASSERT_OK(won);
    election->won = std::move(*won);
    election->observer = NewObserver(observer_client, name);
    ASSERT_NE(election->observer, nullptr);
    absl::StatusOr<v1::LeaderInfo> seen = NextChange(election->observer);
    LOCKD_ASSERT_OK(seen);
    EXPECT_EQ(seen->value(), "before");
    election->first_seen = *std::move(seen);
  }

  void TearDown() override {
    observers_.clear();
    elections_.clear();
    LibraryClientTest::TearDown();
  }

  std::vector<std::unique_ptr<Election>> elections_;
  std::vector<std::unique_ptr<ElectionObserver>> observers_;
};

// Joins the thread when the scope ends, also when an assertion returns
// early (a campaign then ends at the latest with its wait).
class ScopedThread {
 public:
  template <typename F>
  explicit ScopedThread(F f) : thread_(std::move(f)) {}
  ~ScopedThread() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::thread thread_;
};

TEST_F(ElectionTest, HandoverInFifoOrderIsObservedChangeByChange) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  ASSERT_NE(client, nullptr);
  ElectionObserver* observer = NewObserver(client, "handover");
  ASSERT_NE(observer, nullptr);
  // Nobody has campaigned yet.
  absl::StatusOr<v1::LeaderInfo> seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->session_id(), 0u);
  EXPECT_EQ(seen->name(), "handover");

  SessionOptions a_options;
  std::shared_ptr<ConflictRecorder> conflicts =
      ConflictRecorder::Attach(&a_options);
  Session* a = NewSession(client, a_options);
  Session* b = NewSession(client);
  Session* c = NewSession(client);
  ASSERT_TRUE(a != nullptr && b != nullptr && c != nullptr);

  absl::StatusOr<std::unique_ptr<Election>> a_won =
      Election::Campaign(a, "handover", "value-a", absl::Seconds(10));
  LOCKD_ASSERT_OK(a_won);
  EXPECT_TRUE((*a_won)->IsLeader());
  EXPECT_EQ((*a_won)->sequencer().path(), "/election/handover");
  EXPECT_EQ((*a_won)->leader().session_id(), a->id());
  seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->session_id(), a->id());
  EXPECT_EQ(seen->value(), "value-a");
  const uint64_t a_generation = seen->lock_generation();
  EXPECT_EQ(a_generation, (*a_won)->sequencer().lock_generation());

  // B, then C, wait in line (known once A hears of each conflict).
  absl::StatusOr<std::unique_ptr<Election>> b_won;
  absl::StatusOr<std::unique_ptr<Election>> c_won;
  ScopedThread b_campaign([&] {
    b_won = Election::Campaign(b, "handover", "value-b", absl::Seconds(60));
  });
  ASSERT_TRUE(
      PollUntil([&] { return conflicts->Saw(b->id()); }, absl::Seconds(10)));
  ScopedThread c_campaign([&] {
    c_won = Election::Campaign(c, "handover", "value-c", absl::Seconds(60));
  });
  ASSERT_TRUE(
      PollUntil([&] { return conflicts->Saw(c->id()); }, absl::Seconds(10)));

  // A resigns: B (first in line) leads at once.
  LOCKD_ASSERT_OK((*a_won)->Resign());
  EXPECT_FALSE((*a_won)->IsLeader());
  LOCKD_EXPECT_OK((*a_won)->Resign());  // Again: a no-op.
  b_campaign.Join();
  LOCKD_ASSERT_OK(b_won);
  EXPECT_TRUE((*b_won)->IsLeader());
  seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->session_id(), b->id());
  EXPECT_EQ(seen->value(), "value-b");
  EXPECT_GT(seen->lock_generation(), a_generation);
  EXPECT_EQ(seen->lock_generation(), (*b_won)->leader().lock_generation());
  const uint64_t b_generation = seen->lock_generation();
  absl::StatusOr<v1::LeaderInfo> leader = Election::Leader(client, "handover");
  LOCKD_ASSERT_OK(leader);
  EXPECT_EQ(leader->session_id(), b->id());

  // B's session closes: C leads.
  LOCKD_ASSERT_OK(b->Close());
  EXPECT_FALSE((*b_won)->IsLeader());
  c_campaign.Join();
  LOCKD_ASSERT_OK(c_won);
  seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->session_id(), c->id());
  EXPECT_EQ(seen->value(), "value-c");
  EXPECT_GT(seen->lock_generation(), b_generation);

  // C resigns with nobody waiting: no leader.
  LOCKD_ASSERT_OK((*c_won)->Resign());
  seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->session_id(), 0u);
  EXPECT_EQ(seen->value(), "");
  EXPECT_EQ(CodeOf(Election::Leader(client, "handover")),
            absl::StatusCode::kNotFound);
  // Nothing else was queued.
  EXPECT_EQ(CodeOf(observer->Next(absl::ZeroDuration())),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(observer->reconnects(), 0u);
  observer->Cancel();
  EXPECT_EQ(CodeOf(observer->Next(absl::Seconds(1))),
            absl::StatusCode::kCancelled);
}

TEST_F(ElectionTest, ProclaimChangesTheValueOnlyForTheLeader) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  ASSERT_NE(client, nullptr);
  Session* session = NewSession(client);
  ASSERT_NE(session, nullptr);
  absl::StatusOr<std::unique_ptr<Election>> won =
      Election::Campaign(session, "proclaim", "one", absl::Seconds(10));
  LOCKD_ASSERT_OK(won);
  ElectionObserver* observer = NewObserver(client, "proclaim");
  ASSERT_NE(observer, nullptr);
  absl::StatusOr<v1::LeaderInfo> seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->value(), "one");
  const uint64_t generation = seen->lock_generation();

  LOCKD_ASSERT_OK((*won)->Proclaim("two"));
  EXPECT_EQ((*won)->leader().value(), "two");
  EXPECT_EQ((*won)->leader().lock_generation(), generation);
  seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->value(), "two");
  EXPECT_EQ(seen->session_id(), session->id());
  EXPECT_EQ(seen->lock_generation(), generation);
  // The same value again is no change; a new one is.
  LOCKD_ASSERT_OK((*won)->Proclaim("two"));
  LOCKD_ASSERT_OK((*won)->Proclaim("three"));
  seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->value(), "three");
  absl::StatusOr<v1::LeaderInfo> leader = Election::Leader(client, "proclaim");
  LOCKD_ASSERT_OK(leader);
  EXPECT_EQ(leader->value(), "three");

  // A campaign by the leader's own session answers the current leadership
  // and keeps the value.
  absl::StatusOr<std::unique_ptr<Election>> again =
      Election::Campaign(session, "proclaim", "ignored", absl::ZeroDuration());
  LOCKD_ASSERT_OK(again);
  EXPECT_EQ((*again)->leader().value(), "three");
  EXPECT_EQ((*again)->leader().lock_generation(), generation);

  // After Resign: refused by the library, and by the cell for the second
  // handle on the same (now gone) leadership, which then knows it lost.
  LOCKD_ASSERT_OK((*won)->Resign());
  EXPECT_EQ(CodeOf((*won)->Proclaim("four")),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*again)->IsLeader());  // It cannot know yet.
  EXPECT_EQ(CodeOf((*again)->Proclaim("four")),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*again)->IsLeader());
  LOCKD_EXPECT_OK((*again)->Resign());
  seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->session_id(), 0u);
  EXPECT_EQ(CodeOf(observer->Next(absl::ZeroDuration())),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ElectionTest, ASlowObserverIsToldOfDroppedChanges) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  ASSERT_NE(client, nullptr);
  Session* session = NewSession(client);
  ASSERT_NE(session, nullptr);
  absl::StatusOr<std::unique_ptr<ElectionObserver>> observer =
      ElectionObserver::Start(client, "slow", /*max_queued=*/3);
  LOCKD_ASSERT_OK(observer);
  absl::StatusOr<v1::LeaderInfo> seen = NextChange(observer->get());
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->session_id(), 0u);  // nobody leads yet
  absl::StatusOr<std::unique_ptr<Election>> won =
      Election::Campaign(session, "slow", "v0", absl::Seconds(10));
  LOCKD_ASSERT_OK(won);
  for (int i = 1; i <= 9; ++i) {
    LOCKD_ASSERT_OK((*won)->Proclaim(absl::StrCat("v", i)));
  }
  // Ten changes, three kept: Next() says seven were dropped, then returns
  // the three newest in order.
  ASSERT_TRUE(PollUntil([&] { return (*observer)->changes_lost() == 7; },
                        absl::Seconds(10)))
      << (*observer)->changes_lost();
  absl::StatusOr<v1::LeaderInfo> gap = (*observer)->Next(absl::Seconds(5));
  EXPECT_EQ(gap.status().code(), absl::StatusCode::kDataLoss) << gap.status();
  EXPECT_TRUE(absl::StrContains(gap.status().message(), "7 changes"))
      << gap.status();
  for (int i = 7; i <= 9; ++i) {
    seen = (*observer)->Next(absl::Seconds(5));
    LOCKD_ASSERT_OK(seen);
    EXPECT_EQ(seen->value(), absl::StrCat("v", i));
  }
  EXPECT_EQ(CodeOf((*observer)->Next(absl::ZeroDuration())),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ElectionTest, CampaignTimesOutOrFailsWhileSomeoneLeads) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  ASSERT_NE(client, nullptr);
  Session* leader = NewSession(client);
  Session* other = NewSession(client);
  ASSERT_TRUE(leader != nullptr && other != nullptr);
  absl::StatusOr<std::unique_ptr<Election>> won =
      Election::Campaign(leader, "busy", "leader", absl::ZeroDuration());
  LOCKD_ASSERT_OK(won);

  const absl::Time start = absl::Now();
  EXPECT_EQ(CodeOf(Election::Campaign(other, "busy", "other",
                                      absl::Milliseconds(300))),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  EXPECT_EQ(
      CodeOf(Election::Campaign(other, "busy", "other", absl::ZeroDuration())),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      CodeOf(Election::Campaign(other, "a/b", "other", absl::ZeroDuration())),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      CodeOf(Election::Campaign(other, "busy", "other", -absl::Seconds(1))),
      absl::StatusCode::kInvalidArgument);

  // The timed-out campaign left the line: after the resignation nobody
  // leads.
  LOCKD_ASSERT_OK((*won)->Resign());
  EXPECT_EQ(CodeOf(Election::Leader(client, "busy")),
            absl::StatusCode::kNotFound);

  // A bad name ends an observation with the cell's status.
  ElectionObserver* observer = NewObserver(client, "a/b");
  ASSERT_NE(observer, nullptr);
  EXPECT_EQ(CodeOf(observer->Next(absl::Seconds(10))),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CodeOf(observer->Next(absl::ZeroDuration())),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ElectionTest, CloseEndsLeadershipAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  ASSERT_NE(client, nullptr);
  Session* leader = NewSession(client);
  Session* next = NewSession(client);
  ASSERT_TRUE(leader != nullptr && next != nullptr);
  absl::StatusOr<std::unique_ptr<Election>> won =
      Election::Campaign(leader, "closed", "first", absl::ZeroDuration());
  LOCKD_ASSERT_OK(won);
  EXPECT_TRUE((*won)->IsLeader());
  LOCKD_ASSERT_OK(leader->Close());
  EXPECT_FALSE((*won)->IsLeader());
  EXPECT_EQ(CodeOf((*won)->Proclaim("x")),
            absl::StatusCode::kFailedPrecondition);
  LOCKD_EXPECT_OK((*won)->Resign());  // Gone with the session.
  absl::StatusOr<std::unique_ptr<Election>> second =
      Election::Campaign(next, "closed", "second", absl::ZeroDuration());
  LOCKD_ASSERT_OK(second);
  EXPECT_GT((*second)->sequencer().lock_generation(),
            (*won)->sequencer().lock_generation());
  // The first leader's sequencer no longer passes.
  absl::StatusOr<v1::CheckSequencerResponse> check =
      client->CheckSequencer((*won)->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_FALSE(check->valid());
  check = client->CheckSequencer((*second)->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_TRUE(check->valid()) << check->reason();
}

TEST_F(ElectionTest, IsLeaderTurnsFalseWhenTheCellStaysDown) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  ASSERT_NE(client, nullptr);
  SessionOptions options;
  options.ttl = absl::Seconds(2);
  options.grace_period = absl::Seconds(2);
  Session* session = NewSession(client, options);
  ASSERT_NE(session, nullptr);
  absl::StatusOr<std::unique_ptr<Election>> won =
      Election::Campaign(session, "down", "me", absl::ZeroDuration());
  LOCKD_ASSERT_OK(won);
  EXPECT_TRUE((*won)->IsLeader());
  for (int id = 1; id <= cell_->size(); ++id) {
    LOCKD_ASSERT_OK(cell_->Kill(id));
  }
  // Leadership ends with the local lease, before the session expires.
  ASSERT_TRUE(
      session->WaitForState(SessionState::kJeopardy, absl::Seconds(10)));
  EXPECT_FALSE((*won)->IsLeader());
  ASSERT_TRUE(session->WaitForState(SessionState::kExpired, absl::Seconds(10)));
  EXPECT_FALSE((*won)->IsLeader());
  LOCKD_EXPECT_OK((*won)->Resign());  // No cell needed.
}

TEST_F(ElectionTest, ObserverFollowsTheCellAcrossALeaderKill) {
  ObservedElection election;
  ASSERT_NO_FATAL_FAILURE(StartObservedElection("failover", &election));
  Session* session = election.session;
  Election* won = election.won.get();
  ElectionObserver* observer = election.observer;
  const uint64_t generation = election.first_seen.lock_generation();

  const int old_leader = Leader();
  LOCKD_ASSERT_OK(cell_->Kill(old_leader));
  std::vector<int> others;
  for (int id = 1; id <= cell_->size(); ++id) {
    if (id != old_leader) others.push_back(id);
  }
  ASSERT_NE(Leader(FailoverBound() + absl::Seconds(10), others), 0);
  // The observer reopened its stream at the new leader, which began with
  // the unchanged leadership: not queued again.
  ASSERT_TRUE(PollUntil([&] { return observer->reconnects() >= 1; },
                        FailoverBound() + absl::Seconds(10)));
  EXPECT_EQ(CodeOf(observer->Next(absl::ZeroDuration())),
            absl::StatusCode::kDeadlineExceeded);

  // The next change arrives through the new stream.
  LOCKD_ASSERT_OK(won->Proclaim("after"));
  absl::StatusOr<v1::LeaderInfo> seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->value(), "after");
  EXPECT_EQ(seen->session_id(), session->id());
  EXPECT_EQ(seen->lock_generation(), generation);
  EXPECT_TRUE(won->IsLeader());
  LOCKD_ASSERT_OK(won->Resign());
  seen = NextChange(observer);
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->session_id(), 0u);
}

TEST_F(ElectionTest, ObserverMovesOnFromAPausedLeader) {
  ObservedElection election;
  ASSERT_NO_FATAL_FAILURE(StartObservedElection("paused", &election));
  Election* won = election.won.get();
  ElectionObserver* observer = election.observer;

  // A paused leader keeps the stream's connection open and sends nothing:
  // the observer must notice (its probe goes unanswered) and move on.
  const int paused = Leader();
  LOCKD_ASSERT_OK(cell_->Pause(paused));
  LOCKD_ASSERT_OK(won->Proclaim("after"));
  absl::StatusOr<v1::LeaderInfo> seen =
      observer->Next(FailoverBound() + 3 * absl::Seconds(2) + absl::Seconds(5));
  LOCKD_ASSERT_OK(seen);
  EXPECT_EQ(seen->value(), "after");
  EXPECT_GE(observer->reconnects(), 1u);
  LOCKD_ASSERT_OK(cell_->Resume(paused));
}

}  // namespace
}  // namespace lockd
