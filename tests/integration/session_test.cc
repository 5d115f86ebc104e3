// Sessions on a real 3-replica cell: keep-alives hold a short lease, an
// expired session loses its locks and ephemeral nodes (with lock-delay), a
// closed one loses them at once, and retried request numbers are answered
// from the record instead of acting twice.

#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/cell_fixture.h"

namespace lockd::integration {
namespace {

using v1::EXCLUSIVE;

constexpr int64_t kShortTtlMs = 1000;  // The smallest TTL the cell accepts.

class SessionTest : public CellTest {
 protected:
  TestClient* NewShortLivedClient() {
    ClientOptions options = DefaultClientOptions();
    options.ttl_ms = kShortTtlMs;
    return NewClient(options);
  }

  // Polls until `path` does not exist.
  bool WaitUntilGone(TestClient* c, const std::string& path,
                     absl::Duration timeout) {
    return PollUntil(
        [&] { return CodeOf(c->Stat(path)) == absl::StatusCode::kNotFound; },
        timeout);
  }
};

TEST_F(SessionTest, KeepAlivesHoldAShortLease) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewShortLivedClient();
  ASSERT_NE(a, nullptr);
  LOCKD_ASSERT_OK(a->Create("/alive", "", /*ephemeral=*/true));
  // Several TTLs' worth of keep-alives (one every third of the TTL).
  const uint64_t start = a->keep_alive_responses();
  ASSERT_TRUE(PollUntil([&] { return a->keep_alive_responses() >= start + 10; },
                        absl::Seconds(20)))
      << "keep-alive responses: " << a->keep_alive_responses();
  EXPECT_FALSE(a->session_lost());
  EXPECT_GT(a->last_keep_alive_epoch(), 0u);
  LOCKD_EXPECT_OK(a->Stat("/alive"));
  LOCKD_EXPECT_OK(a->Set("/alive", "still here"));
}

TEST_F(SessionTest, ExpiredSessionReleasesLocksAndDeletesEphemeralNodes) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewShortLivedClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  LOCKD_ASSERT_OK(b->Create("/dir"));
  absl::StatusOr<v1::CreateNodeResponse> ephemeral =
      a->Create("/dir/eph", "mine", /*ephemeral=*/true);
  LOCKD_ASSERT_OK(ephemeral);
  EXPECT_EQ(ephemeral->meta().ephemeral_owner(), a->session_id());
  absl::StatusOr<v1::AcquireResponse> held = a->Acquire("/dir/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(held);
  EXPECT_EQ(CodeOf(b->Acquire("/dir/lock", EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);

  a->StopKeepAlive();
  const absl::Time stopped = absl::Now();
  // The lease runs out within a TTL of the last keep-alive; allow for the
  // leader's expiry tick and a loaded machine.
  ASSERT_TRUE(WaitUntilGone(b, "/dir/eph", absl::Seconds(10)))
      << "ephemeral node of an expired session still there";
  EXPECT_LE(absl::Now() - stopped, absl::Seconds(10));
  // Expired without lock-delay: the lock is free at once.
  absl::StatusOr<v1::AcquireResponse> taken =
      b->Acquire("/dir/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(taken);
  EXPECT_GT(taken->sequencer().lock_generation(),
            held->sequencer().lock_generation());
  absl::StatusOr<v1::CheckSequencerResponse> check =
      b->CheckSequencer(held->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_FALSE(check->valid());

  // The expired session can do nothing any more.
  absl::Status late = a->Set("/dir", "x").status();
  EXPECT_TRUE(late.code() == absl::StatusCode::kFailedPrecondition ||
              late.code() == absl::StatusCode::kNotFound)
      << late;
  absl::StatusOr<v1::ListChildrenResponse> children = b->List("/dir");
  LOCKD_ASSERT_OK(children);
  for (const std::string& name : children->names()) EXPECT_NE(name, "eph");
}

TEST_F(SessionTest, LockDelayKeepsAnExpiredHoldersLockUngrantable) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewShortLivedClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  constexpr absl::Duration kLockDelay = absl::Seconds(3);
  LOCKD_ASSERT_OK(a->Create("/marker", "", /*ephemeral=*/true));
  LOCKD_ASSERT_OK(
      a->Acquire("/delayed", EXCLUSIVE, absl::ZeroDuration(), kLockDelay));

  a->StopKeepAlive();
  // The ephemeral node goes in the same step as the session.
  ASSERT_TRUE(WaitUntilGone(b, "/marker", absl::Seconds(10)));
  const absl::Time expired_seen = absl::Now();
  EXPECT_EQ(CodeOf(b->Acquire("/delayed", EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition)
      << "lock of an expired holder granted during its lock-delay";
  absl::StatusOr<v1::AcquireResponse> later =
      b->Acquire("/delayed", EXCLUSIVE, absl::Seconds(20));
  LOCKD_ASSERT_OK(later);
  // Granted once the delay ended: not much earlier (we saw the expiry within
  // a few polls of it), not much later.
  const absl::Duration waited = absl::Now() - expired_seen;
  EXPECT_GE(waited, kLockDelay - absl::Seconds(1));
  EXPECT_LE(waited, kLockDelay + absl::Seconds(3));
}

TEST_F(SessionTest, CloseSessionReleasesLocksAndEphemeralNodesAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  LOCKD_ASSERT_OK(a->Create("/gone", "", /*ephemeral=*/true));
  LOCKD_ASSERT_OK(
      a->Acquire("/kept", EXCLUSIVE, absl::ZeroDuration(), absl::Seconds(30)));
  LOCKD_ASSERT_OK(a->CloseSession());
  // Close goes through the log before it is answered: no polling needed.
  EXPECT_EQ(CodeOf(b->Stat("/gone")), absl::StatusCode::kNotFound);
  // A clean close has no lock-delay.
  LOCKD_EXPECT_OK(b->Acquire("/kept", EXCLUSIVE));
  // The lock node itself is permanent.
  LOCKD_EXPECT_OK(b->Stat("/kept"));
  EXPECT_NE(CodeOf(a->Create("/after-close")), absl::StatusCode::kOk);
}

TEST_F(SessionTest, RetriedRequestNumbersAreAnsweredFromTheRecord) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  ClientOptions options = DefaultClientOptions();
  options.report_answered = false;  // We replay old numbers below.
  TestClient* c = NewClient(options);
  TestClient* other = NewClient();
  ASSERT_TRUE(c != nullptr && other != nullptr);
  LOCKD_ASSERT_OK(c->Create("/once", "v0"));

  v1::CreateNodeRequest create;
  *create.mutable_header() = c->NewHeader();
  create.set_path("/once/item-");
  create.set_sequential(true);
  absl::StatusOr<v1::CreateNodeResponse> created = c->Send(create);
  LOCKD_ASSERT_OK(created);
  EXPECT_TRUE(absl::StartsWith(created->path(), "/once/item-"))
      << created->path();

  v1::SetNodeRequest set;
  *set.mutable_header() = c->NewHeader();
  set.set_path("/once");
  set.set_content("v1");
  absl::StatusOr<v1::SetNodeResponse> written = c->Send(set);
  LOCKD_ASSERT_OK(written);

  v1::AcquireRequest acquire;
  *acquire.mutable_header() = c->NewHeader();
  acquire.set_path("/once/lock");
  acquire.set_mode(EXCLUSIVE);
  absl::StatusOr<v1::AcquireResponse> granted = c->Send(acquire);
  LOCKD_ASSERT_OK(granted);
  LOCKD_ASSERT_OK(c->Release("/once/lock"));

  // Replays.
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

  // Nothing happened twice.
  absl::StatusOr<v1::ListChildrenResponse> children = other->List("/once");
  LOCKD_ASSERT_OK(children);
  int items = 0;
  for (const std::string& name : children->names()) {
    if (absl::StartsWith(name, "item-")) ++items;
  }
  EXPECT_EQ(items, 1);
  absl::StatusOr<v1::GetNodeResponse> node = other->Get("/once");
  LOCKD_ASSERT_OK(node);
  EXPECT_EQ(node->content(), "v1");
  EXPECT_EQ(node->meta().content_generation(),
            written->meta().content_generation());
  // The replayed acquire did not take the lock again.
  absl::StatusOr<v1::AcquireResponse> others =
      other->Acquire("/once/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(others);
  EXPECT_EQ(others->sequencer().lock_generation(),
            granted->sequencer().lock_generation() + 1);
}

TEST_F(SessionTest, StatusCountsLiveSessionsOnEveryReplica) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  LOCKD_ASSERT_OK(b->Create("/sync"));  // Something to apply everywhere.
  for (int id = 1; id <= cell_->size(); ++id) {
    std::string last;
    EXPECT_TRUE(PollUntil(
        [&] {
          absl::StatusOr<v1::StatusResponse> status = cell_->Status(id);
          if (!status.ok()) return false;
          last = status->DebugString();
          return status->sessions() == 2;
        },
        absl::Seconds(10)))
        << "replica " << id << ": " << last;
  }
  LOCKD_ASSERT_OK(a->CloseSession());
  absl::StatusOr<v1::StatusResponse> status = cell_->Status(Leader());
  LOCKD_ASSERT_OK(status);
  EXPECT_EQ(status->sessions(), 1u);
}

}  // namespace
}  // namespace lockd::integration
