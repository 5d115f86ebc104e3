// The client library (client/) against real local cells: leader finding,
// retries without double effects, the session's jeopardy, recovery and
// expiry, and locks.

#include "lockd/client.h"

#include <algorithm>
#include <atomic>
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
#include "lockd/lock.h"
#include "lockd/session.h"
#include "tests/client/client_fixture.h"
#include "tests/integration/cell.h"
#include "tests/integration/cell_fixture.h"

namespace lockd {
namespace {

using integration::CodeOf;
using integration::PollUntil;

// Collects what a session's callbacks report. Held by shared_ptr: the
// callbacks keep it alive until the session (owned by the fixture) is gone.
class Recorder : public std::enable_shared_from_this<Recorder> {
 public:
  void Attach(SessionOptions* options) {
    std::shared_ptr<Recorder> self = shared_from_this();
    options->on_state_change = [self](SessionState state) {
      absl::MutexLock lock(&self->mu_);
      self->states_.push_back(state);
    };
    options->on_event = [self](const v1::Event& event) {
      absl::MutexLock lock(&self->mu_);
      self->events_.push_back(event);
    };
  }
  std::vector<SessionState> states() const {
    absl::MutexLock lock(&mu_);
    return states_;
  }
  bool SawEvent(v1::Event::Type type) const {
    absl::MutexLock lock(&mu_);
    return std::any_of(events_.begin(), events_.end(),
                       [&](const v1::Event& e) { return e.type() == type; });
  }
  std::vector<v1::Event> events() const {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<SessionState> states_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Event> events_ ABSL_GUARDED_BY(mu_);
};

class ClientTest : public LibraryClientTest {
 protected:
  void TearDown() override {
    locks_.clear();
    LibraryClientTest::TearDown();
  }

  std::vector<std::unique_ptr<Lock>> locks_;
};

TEST_F(ClientTest, FollowsTheLeaderFromFollowerEndpoints) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  ASSERT_NE(leader, 0);
  ClientOptions options = LibraryClientOptions();
  // Only followers first; the leader last.
  options.endpoints.clear();
  for (int id = 1; id <= cell_->size(); ++id) {
    if (id != leader) options.endpoints.push_back(cell_->address(id));
  }
  options.endpoints.push_back(cell_->address(leader));
  Client* client = NewLibraryClient(options);
  ASSERT_NE(client, nullptr);
  Session* session = NewSession(client);
  ASSERT_NE(session, nullptr);
  EXPECT_EQ(client->current_address(), cell_->address(leader));
  LOCKD_ASSERT_OK(session->CreateNode("/redirected", "x"));
  absl::StatusOr<v1::GetNodeResponse> got = client->Get("/redirected");
  LOCKD_ASSERT_OK(got);
  EXPECT_EQ(got->content(), "x");
}

TEST_F(ClientTest, NodeOperationsWithCasAndWatch) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  auto recorder = std::make_shared<Recorder>();
  SessionOptions options;
  recorder->Attach(&options);
  Session* session = NewSession(client, options);
  ASSERT_NE(session, nullptr);

  absl::StatusOr<v1::CreateNodeResponse> created =
      session->CreateNode("/n", "one");
  LOCKD_ASSERT_OK(created);
  EXPECT_EQ(CodeOf(session->CreateNode("/n")),
            absl::StatusCode::kAlreadyExists);
  LOCKD_ASSERT_OK(session->Watch("/n"));
  const uint64_t generation = created->meta().content_generation();
  EXPECT_EQ(CodeOf(session->SetNode("/n", "bad", generation + 7)),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<v1::NodeMeta> set = session->SetNode("/n", "two", generation);
  LOCKD_ASSERT_OK(set);
  EXPECT_GT(set->content_generation(), generation);
  EXPECT_TRUE(
      PollUntil([&] { return recorder->SawEvent(v1::Event::CONTENT_CHANGED); },
                absl::Seconds(10)));

  LOCKD_ASSERT_OK(session->CreateNode("/n/child"));
  absl::StatusOr<std::vector<std::string>> children = client->List("/n");
  LOCKD_ASSERT_OK(children);
  EXPECT_EQ(*children, std::vector<std::string>{"child"});
  absl::StatusOr<v1::StatNodeResponse> stat = client->Stat("/n");
  LOCKD_ASSERT_OK(stat);
  EXPECT_EQ(stat->meta().num_children(), 1u);
  EXPECT_EQ(CodeOf(session->DeleteNode("/n/child", 99)),
            absl::StatusCode::kFailedPrecondition);
  LOCKD_ASSERT_OK(session->DeleteNode("/n/child"));
  EXPECT_EQ(CodeOf(client->Get("/n/child")), absl::StatusCode::kNotFound);
}

// A callback that blocks until opened; shared with the callback so that it
// outlives the test body even if the callback still runs.
struct Gate {
  absl::Mutex mu;
  bool entered ABSL_GUARDED_BY(mu) = false;
  bool open ABSL_GUARDED_BY(mu) = false;
  void Open() {
    absl::MutexLock lock(&mu);
    open = true;
  }
  // From the callback: marks it entered and blocks until Open().
  void EnterAndWait() {
    absl::MutexLock lock(&mu);
    entered = true;
    mu.Await(absl::Condition(&open));
  }
  bool WaitEntered(absl::Duration timeout) {
    return PollUntil(
        [this] {
          absl::MutexLock lock(&mu);
          return entered;
        },
        timeout);
  }
};

TEST_F(ClientTest, ABlockedCallbackDoesNotStopTheKeepAlive) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  auto gate = std::make_shared<Gate>();
  SessionOptions options;
  options.ttl = absl::Seconds(1);
  options.on_event = [gate](const v1::Event& event) {
    if (event.type() == v1::Event::CONTENT_CHANGED) gate->EnterAndWait();
  };
  Session* session = NewSession(client, options);
  ASSERT_NE(session, nullptr);
  // Opens the gate however the test ends (before the session goes).
  std::unique_ptr<Gate, void (*)(Gate*)> opener(gate.get(),
                                                [](Gate* g) { g->Open(); });
  LOCKD_ASSERT_OK(session->CreateNode("/blocked"));
  LOCKD_ASSERT_OK(session->Watch("/blocked"));
  LOCKD_ASSERT_OK(session->SetNode("/blocked", "x"));
  ASSERT_TRUE(gate->WaitEntered(absl::Seconds(10)));
  // While the callback blocks, keep-alives go on for several TTLs.
  const uint64_t answers = session->keep_alive_answers();
  const absl::Time until = absl::Now() + 3 * options.ttl;
  while (absl::Now() < until) {
    ASSERT_EQ(session->state(), SessionState::kHealthy);
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_GE(session->keep_alive_answers(), answers + 5);
}

TEST_F(ClientTest, ASlowCallbackLosesNoEventInSilence) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  auto gate = std::make_shared<Gate>();
  struct Seen {
    absl::Mutex mu;
    std::vector<v1::Event> events ABSL_GUARDED_BY(mu);
  };
  auto seen = std::make_shared<Seen>();
  SessionOptions options;
  options.max_queued_events = 5;
  options.on_event = [gate, seen](const v1::Event& event) {
    if (event.type() != v1::Event::CONTENT_CHANGED &&
        event.type() != v1::Event::EVENTS_LOST) {
      return;
    }
    {
      absl::MutexLock lock(&seen->mu);
      seen->events.push_back(event);
    }
    gate->EnterAndWait();
  };
  Session* session = NewSession(client, options);
  ASSERT_NE(session, nullptr);
  std::unique_ptr<Gate, void (*)(Gate*)> opener(gate.get(),
                                                [](Gate* g) { g->Open(); });
  LOCKD_ASSERT_OK(session->CreateNode("/slow"));
  LOCKD_ASSERT_OK(session->Watch("/slow"));
  LOCKD_ASSERT_OK(session->SetNode("/slow", "0"));
  ASSERT_TRUE(gate->WaitEntered(absl::Seconds(10)));
  // The callback blocks on the first change; 20 more arrive, of which the
  // queue keeps the newest 5.
  constexpr int kMore = 20;
  for (int i = 1; i <= kMore; ++i) {
    LOCKD_ASSERT_OK(session->SetNode("/slow", absl::StrCat(i)));
  }
  ASSERT_TRUE(PollUntil([&] { return session->events_lost() == kMore - 5; },
                        absl::Seconds(10)))
      << session->events_lost();
  gate->Open();
  ASSERT_TRUE(PollUntil(
      [&] {
        absl::MutexLock lock(&seen->mu);
        return seen->events.size() == 7;
      },
      absl::Seconds(10)));
  absl::MutexLock lock(&seen->mu);
  const std::vector<v1::Event>& events = seen->events;
  EXPECT_EQ(events[0].type(), v1::Event::CONTENT_CHANGED);
  // The gap is reported where it is: after the first change, before the
  // five kept, which are the last five in order.
  EXPECT_EQ(events[1].type(), v1::Event::EVENTS_LOST);
  EXPECT_EQ(events[1].lost_count(), static_cast<uint64_t>(kMore - 5));
  EXPECT_EQ(events[2].sequence(), events[0].sequence() + kMore - 5 + 1);
  for (int i = 2; i < 7; ++i) {
    EXPECT_EQ(events[i].type(), v1::Event::CONTENT_CHANGED);
    if (i > 2) {
      EXPECT_EQ(events[i].sequence(), events[i - 1].sequence() + 1);
    }
  }
}

TEST_F(ClientTest, RetriesAcrossLeaderKillWithoutDoubleEffects) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  Session* session = NewSession(client);
  ASSERT_NE(session, nullptr);
  LOCKD_ASSERT_OK(session->CreateNode("/q"));

  // Sequential creates run back to back while the leader is killed, so some
  // are in flight at the kill and are retried at the new leader.
  std::atomic<bool> stop{false};
  std::atomic<int> succeeded{0};
  std::atomic<int> failed{0};
  std::thread writer([&] {
    while (!stop.load()) {
      if (session->CreateNode("/q/item-", "", false, true).ok()) {
        succeeded.fetch_add(1);
      } else {
        failed.fetch_add(1);
      }
    }
  });
  ASSERT_TRUE(
      PollUntil([&] { return succeeded.load() >= 20; }, absl::Seconds(20)));
  const int leader = Leader();
  const uint64_t retries_before = client->retries();
  LOCKD_ASSERT_OK(cell_->Kill(leader));
  const int before_kill = succeeded.load();
  EXPECT_TRUE(PollUntil([&] { return succeeded.load() >= before_kill + 20; },
                        FailoverBound() + absl::Seconds(20)));
  stop.store(true);
  writer.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(client->retries(), retries_before);
  absl::StatusOr<std::vector<std::string>> children = client->List("/q");
  LOCKD_ASSERT_OK(children);
  // One node per successful call: no retry was applied twice.
  EXPECT_EQ(static_cast<int>(children->size()), succeeded.load());
}

TEST_F(ClientTest, JeopardyThenRecoveryWhenANewLeaderAnswers) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  auto recorder = std::make_shared<Recorder>();
  SessionOptions options;
  options.ttl = absl::Seconds(2);
  options.grace_period = absl::Seconds(60);
  recorder->Attach(&options);
  Session* session = NewSession(client, options);
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(PollUntil([&] { return session->keep_alive_answers() > 0; },
                        absl::Seconds(10)));
  const uint64_t epoch = session->epoch();
  absl::StatusOr<std::unique_ptr<Lock>> lock = Lock::TryAcquire(
      session, "/jeopardy", v1::EXCLUSIVE, absl::Milliseconds(100));
  LOCKD_ASSERT_OK(lock);
  EXPECT_TRUE((*lock)->IsHeld());

  // Kill the leader and one follower: no quorum, so no leader answers and
  // the local lease runs out.
  const int leader = Leader();
  const int follower = leader % cell_->size() + 1;
  LOCKD_ASSERT_OK(cell_->Kill(leader));
  LOCKD_ASSERT_OK(cell_->Kill(follower));
  ASSERT_TRUE(
      session->WaitForState(SessionState::kJeopardy, absl::Seconds(10)));
  EXPECT_FALSE((*lock)->IsHeld());
  EXPECT_TRUE(
      PollUntil([&] { return recorder->SawEvent(v1::Event::SESSION_EXPIRING); },
                absl::Seconds(5)));

  // A new leader within the grace period: healthy again, same session.
  LOCKD_ASSERT_OK(cell_->StartReplica(follower));
  ASSERT_TRUE(session->WaitForState(SessionState::kHealthy,
                                    FailoverBound() + absl::Seconds(20)));
  EXPECT_GT(session->epoch(), epoch);
  EXPECT_TRUE(
      PollUntil([&] { return recorder->SawEvent(v1::Event::LEADER_CHANGED); },
                absl::Seconds(5)));
  EXPECT_TRUE((*lock)->IsHeld());
  absl::StatusOr<v1::CheckSequencerResponse> check =
      client->CheckSequencer((*lock)->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_TRUE(check->valid()) << check->reason();
  const std::vector<SessionState> states = recorder->states();
  ASSERT_GE(states.size(), 2u);
  EXPECT_EQ(states[0], SessionState::kJeopardy);
  EXPECT_EQ(states[1], SessionState::kHealthy);
  locks_.push_back(std::move(*lock));
}

TEST_F(ClientTest, MovesOnFromAPausedLeader) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  SessionOptions options;
  options.ttl = absl::Seconds(2);
  Session* session = NewSession(client, options);
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(PollUntil([&] { return session->keep_alive_answers() > 0; },
                        absl::Seconds(10)));
  const uint64_t epoch = session->epoch();
  // A paused leader keeps its sockets open and answers nothing: the
  // keep-alive must give its stream up and find the new leader.
  const int leader = Leader();
  LOCKD_ASSERT_OK(cell_->Pause(leader));
  EXPECT_TRUE(PollUntil(
      [&] {
        return session->epoch() > epoch &&
               session->state() == SessionState::kHealthy;
      },
      FailoverBound() + absl::Seconds(10)));
  LOCKD_EXPECT_OK(session->CreateNode("/after-pause"));
  LOCKD_ASSERT_OK(cell_->Resume(leader));
}

TEST_F(ClientTest, ExpiresWhenTheCellStaysDownLongerThanTheGracePeriod) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  auto recorder = std::make_shared<Recorder>();
  SessionOptions options;
  options.ttl = absl::Seconds(2);
  options.grace_period = absl::Seconds(2);
  recorder->Attach(&options);
  Session* session = NewSession(client, options);
  ASSERT_NE(session, nullptr);
  absl::StatusOr<std::unique_ptr<Lock>> lock =
      Lock::TryAcquire(session, "/expiry", v1::EXCLUSIVE);
  LOCKD_ASSERT_OK(lock);
  for (int id = 1; id <= cell_->size(); ++id) {
    LOCKD_ASSERT_OK(cell_->Kill(id));
  }
  ASSERT_TRUE(
      session->WaitForState(SessionState::kJeopardy, absl::Seconds(10)));
  ASSERT_TRUE(session->WaitForState(SessionState::kExpired, absl::Seconds(10)));
  EXPECT_FALSE((*lock)->IsHeld());
  EXPECT_TRUE(PollUntil(
      [&] {
        std::vector<SessionState> states = recorder->states();
        return states == std::vector<SessionState>{SessionState::kJeopardy,
                                                   SessionState::kExpired};
      },
      absl::Seconds(5)));
  // Release of a lock of an expired session is a no-op.
  LOCKD_EXPECT_OK((*lock)->Release());
}

TEST_F(ClientTest, ExclusiveLockIsHandedOverInFifoOrder) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  auto holder_events = std::make_shared<Recorder>();
  SessionOptions holder_options;
  holder_events->Attach(&holder_options);
  Session* holder = NewSession(client, holder_options);
  Session* first = NewSession(client);
  Session* second = NewSession(client);
  ASSERT_TRUE(holder != nullptr && first != nullptr && second != nullptr);

  absl::StatusOr<std::unique_ptr<Lock>> held =
      Lock::TryAcquire(holder, "/fifo", v1::EXCLUSIVE);
  LOCKD_ASSERT_OK(held);
  // A waiter is known to be queued once the holder hears LOCK_CONFLICT.
  auto conflict_from = [&](uint64_t session_id) {
    for (const v1::Event& e : holder_events->events()) {
      if (e.type() == v1::Event::LOCK_CONFLICT &&
          e.other_session_id() == session_id) {
        return true;
      }
    }
    return false;
  };
  absl::StatusOr<std::unique_ptr<Lock>> first_lock;
  absl::StatusOr<std::unique_ptr<Lock>> second_lock;
  std::atomic<bool> first_done{false};
  std::atomic<bool> second_done{false};
  std::thread first_waiter([&] {
    first_lock =
        Lock::Acquire(first, "/fifo", v1::EXCLUSIVE, absl::Seconds(60));
    first_done.store(true);
  });
  ASSERT_TRUE(
      PollUntil([&] { return conflict_from(first->id()); }, absl::Seconds(10)));
  std::thread second_waiter([&] {
    second_lock =
        Lock::Acquire(second, "/fifo", v1::EXCLUSIVE, absl::Seconds(60));
    second_done.store(true);
  });
  ASSERT_TRUE(PollUntil([&] { return conflict_from(second->id()); },
                        absl::Seconds(10)));

  LOCKD_ASSERT_OK((*held)->Release());
  EXPECT_FALSE((*held)->IsHeld());
  first_waiter.join();
  LOCKD_ASSERT_OK(first_lock);
  EXPECT_TRUE((*first_lock)->IsHeld());
  EXPECT_FALSE(second_done.load());
  EXPECT_GT((*first_lock)->sequencer().lock_generation(),
            (*held)->sequencer().lock_generation());

  first_lock->reset();  // The destructor releases.
  second_waiter.join();
  LOCKD_ASSERT_OK(second_lock);
  EXPECT_TRUE((*second_lock)->IsHeld());
  absl::StatusOr<v1::CheckSequencerResponse> check =
      client->CheckSequencer((*second_lock)->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_TRUE(check->valid()) << check->reason();
  check = client->CheckSequencer((*held)->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_FALSE(check->valid());
}

TEST_F(ClientTest, CloseReleasesLocksAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  Session* closing = NewSession(client);
  Session* other = NewSession(client);
  ASSERT_TRUE(closing != nullptr && other != nullptr);
  absl::StatusOr<std::unique_ptr<Lock>> lock =
      Lock::TryAcquire(closing, "/closed", v1::EXCLUSIVE, absl::Seconds(30));
  LOCKD_ASSERT_OK(lock);
  EXPECT_EQ(CodeOf(Lock::TryAcquire(other, "/closed", v1::EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);
  LOCKD_ASSERT_OK(closing->Close());
  EXPECT_EQ(closing->state(), SessionState::kClosed);
  EXPECT_FALSE((*lock)->IsHeld());
  // No lock-delay after a close.
  LOCKD_EXPECT_OK(Lock::TryAcquire(other, "/closed", v1::EXCLUSIVE));
}

TEST_F(ClientTest, SharedLocksCoexistAndExcludeWriters) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  Client* client = NewLibraryClient();
  Session* a = NewSession(client);
  Session* b = NewSession(client);
  Session* writer = NewSession(client);
  ASSERT_TRUE(a != nullptr && b != nullptr && writer != nullptr);

  absl::StatusOr<std::unique_ptr<Lock>> lock_a =
      Lock::TryAcquire(a, "/shared", v1::SHARED);
  absl::StatusOr<std::unique_ptr<Lock>> lock_b =
      Lock::TryAcquire(b, "/shared", v1::SHARED);
  LOCKD_ASSERT_OK(lock_a);
  LOCKD_ASSERT_OK(lock_b);
  EXPECT_TRUE((*lock_a)->IsHeld());
  EXPECT_TRUE((*lock_b)->IsHeld());
  for (const auto* lock : {&*lock_a, &*lock_b}) {
    absl::StatusOr<v1::CheckSequencerResponse> check =
        client->CheckSequencer((*lock)->sequencer());
    LOCKD_ASSERT_OK(check);
    EXPECT_TRUE(check->valid()) << check->reason();
  }
  EXPECT_EQ(CodeOf(Lock::TryAcquire(writer, "/shared", v1::EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);
  LOCKD_ASSERT_OK((*lock_a)->Release());
  EXPECT_EQ(CodeOf(Lock::TryAcquire(writer, "/shared", v1::EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);
  LOCKD_ASSERT_OK((*lock_b)->Release());
  absl::StatusOr<std::unique_ptr<Lock>> exclusive =
      Lock::TryAcquire(writer, "/shared", v1::EXCLUSIVE);
  LOCKD_ASSERT_OK(exclusive);
  EXPECT_TRUE((*exclusive)->IsHeld());
}

}  // namespace
}  // namespace lockd
