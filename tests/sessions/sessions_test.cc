// Unit tests of sessions, epochs and exactly-once execution in the state
// machine: creation and its limits, nonce dedupe, expiry, renewal, the fresh
// TTL of a new epoch and its 2 * ttl cap, stale epochs, and request retries.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessions/state_machine.h"
#include "tests/sessions/test_util.h"

namespace lockd::sessions {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(SessionsTest, CreateSessionUsesDefaultTtlAndCountsIds) {
  Cell cell;
  const statepb::Result first = cell.CreateSession(0, 0);
  ASSERT_EQ(first.code(), kOk) << first.message();
  EXPECT_EQ(first.create_session().session_id(), 1u);
  EXPECT_EQ(first.create_session().ttl_ms(), Limits().default_ttl_ms);
  EXPECT_EQ(first.create_session().lease_remaining_ms(),
            Limits().default_ttl_ms);
  EXPECT_EQ(first.create_session().epoch(), cell.epoch());
  EXPECT_EQ(cell.CreateSession(5000, 0).create_session().session_id(), 2u);
  EXPECT_EQ(*cell.sm().SessionExpiresAt(2), cell.now() + 5000);
  EXPECT_THAT(cell.sm().SessionIds(), ElementsAre(1, 2));
  EXPECT_EQ(cell.sm().session_count(), 2u);
}

TEST(SessionsTest, CreateSessionRefusesTtlOutsideRange) {
  Cell cell;
  const Limits limits;
  EXPECT_EQ(cell.CreateSession(limits.min_ttl_ms - 1, 0).code(),
            kInvalidArgument);
  EXPECT_EQ(cell.CreateSession(limits.max_ttl_ms + 1, 0).code(),
            kInvalidArgument);
  EXPECT_EQ(cell.CreateSession(-5, 0).code(), kInvalidArgument);
  EXPECT_EQ(cell.CreateSession(limits.min_ttl_ms, 0).code(), kOk);
  EXPECT_EQ(cell.CreateSession(limits.max_ttl_ms, 0).code(), kOk);
  EXPECT_EQ(cell.sm().session_count(), 2u);
}

TEST(SessionsTest, CreateSessionRefusesLongClientName) {
  Limits limits;
  limits.max_client_name_bytes = 4;
  Cell cell(limits);
  const statepb::Result refused = cell.CreateSession(0, 0, "abcde");
  EXPECT_EQ(refused.code(), kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("max_client_name_bytes"));
  EXPECT_EQ(cell.CreateSession(0, 0, "\xff").code(), kInvalidArgument);
  EXPECT_EQ(cell.CreateSession(0, 0, "abcd").code(), kOk);
}

TEST(SessionsTest, MaxSessions) {
  Limits limits;
  limits.max_sessions = 2;
  Cell cell(limits);
  cell.NewSession();
  const uint64_t second = cell.NewSession();
  const statepb::Result full = cell.CreateSession(0, 0);
  EXPECT_EQ(full.code(), kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("max_sessions"));
  ASSERT_EQ(cell.Run(second, CloseSessionCommand())->code(), kOk);
  EXPECT_EQ(cell.CreateSession(0, 0).code(), kOk);
}

TEST(SessionsTest, RetriedCreateSessionWithSameNonceReturnsSameSession) {
  Cell cell;
  const statepb::Result first = cell.CreateSession(5000, 77);
  ASSERT_EQ(first.code(), kOk);
  cell.Advance(1000);
  const statepb::Result retry = cell.CreateSession(5000, 77);
  ASSERT_EQ(retry.code(), kOk);
  EXPECT_EQ(retry.create_session().session_id(),
            first.create_session().session_id());
  EXPECT_EQ(retry.create_session().lease_remaining_ms(), 4000);
  EXPECT_EQ(cell.sm().session_count(), 1u);
  // Nonce 0 never dedupes; another nonce is another session.
  EXPECT_NE(cell.CreateSession(5000, 0).create_session().session_id(),
            cell.CreateSession(5000, 0).create_session().session_id());
  EXPECT_NE(cell.CreateSession(5000, 78).create_session().session_id(),
            first.create_session().session_id());
  // Once the session is gone, the nonce opens a new one.
  ASSERT_EQ(cell.Run(first.create_session().session_id(), CloseSessionCommand())
                ->code(),
            kOk);
  EXPECT_NE(cell.CreateSession(5000, 77).create_session().session_id(),
            first.create_session().session_id());
}

TEST(SecretTest, WrongDigestIsDeniedAndChangesNothing) {
  Cell cell;
  const uint64_t s = cell.NewSession();
  const uint64_t other = cell.NewSession();
  ASSERT_EQ(cell.RunAs(s, 1, AcquireCommand("/a", v1::EXCLUSIVE))->code(), kOk);
  const std::string before = cell.sm().Snapshot();
  // (A missing secret reaches the state machine as the digest of "".)
  for (const std::string& forged :
       {std::string("forged"), cell.digest(other)}) {
    statepb::Command release = ReleaseCommand("/a");
    release.set_secret_digest(forged);
    const statepb::Result denied = *cell.RunAs(s, 2, std::move(release), 2);
    EXPECT_EQ(denied.code(), kPermissionDenied);
    EXPECT_THAT(
        denied.message(),
        HasSubstr(absl::StrCat("wrong or missing secret for session ", s)));
    statepb::Command close = CloseSessionCommand();
    close.set_secret_digest(forged);
    EXPECT_EQ(cell.RunAs(s, 3, std::move(close), 3)->code(), kPermissionDenied);
  }
  // Nothing was recorded: not even first_unanswered moved. The time did.
  statepb::StateSnapshot expected, actual;
  ASSERT_TRUE(expected.ParseFromString(before));
  ASSERT_TRUE(actual.ParseFromString(cell.sm().Snapshot()));
  expected.set_now_ms(actual.now_ms());
  EXPECT_EQ(expected.SerializeAsString(), actual.SerializeAsString());
  EXPECT_EQ(cell.RunAs(s, 2, ReleaseCommand("/a"))->code(), kOk);
  EXPECT_TRUE(cell.sm().CheckSecret(s, cell.digest(s)).ok());
  EXPECT_EQ(cell.sm().CheckSecret(s, "forged").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(cell.sm().CheckSecret(s + 100, cell.digest(s)).code(),
            absl::StatusCode::kNotFound);
}

TEST(SecretTest, RetryByNonceKeepsTheDigestAndSnapshotsKeepIt) {
  Cell cell;
  const uint64_t s = cell.NewSession(5000, 99);
  const std::string first = cell.digest(s);
  // The retry comes with another digest (a new secret drawn), which must
  // not replace the first.
  ASSERT_EQ(cell.NewSession(5000, 99), s);
  EXPECT_EQ(cell.digest(s), first);
  EXPECT_TRUE(cell.sm().CheckSecret(s, first).ok());
  StateMachine restored;
  ASSERT_TRUE(restored.Restore(cell.sm().Snapshot()).ok());
  EXPECT_TRUE(restored.CheckSecret(s, first).ok());
  EXPECT_EQ(restored.CheckSecret(s, "other").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(SessionsTest, SessionExpiresExactlyAtExpiresAt) {
  Cell cell;
  const uint64_t s = cell.NewSession(2000);
  EXPECT_EQ(cell.sm().NextDeadline(), cell.now() + 2000);
  EXPECT_THAT(cell.Advance(1999).ended_sessions, IsEmpty());
  EXPECT_TRUE(cell.sm().SessionExpiresAt(s).ok());
  EXPECT_THAT(cell.Advance(1).ended_sessions, ElementsAre(s));
  EXPECT_EQ(cell.sm().SessionExpiresAt(s).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(cell.sm().NextDeadline(), std::nullopt);
}

TEST(SessionsTest, RequestsOfUnknownOrExpiredSessionAreNotFound) {
  Cell cell;
  const std::optional<statepb::Result> unknown =
      cell.Run(42, CreateNodeCommand("/a"));
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->code(), kNotFound);
  EXPECT_THAT(unknown->message(),
              HasSubstr("session 42 does not exist (expired or closed)"));
  const uint64_t s = cell.NewSession(1000);
  cell.Advance(1000);
  const statepb::Result expired = *cell.Run(s, CreateNodeCommand("/a"));
  EXPECT_EQ(expired.code(), kNotFound);
  EXPECT_THAT(expired.message(),
              HasSubstr("does not exist (expired or closed)"));
  EXPECT_FALSE(cell.sm().StatNode("/a").ok());
  // A request in the command that moves time past expires_at comes after
  // the expiry.
  const uint64_t t = cell.NewSession(1000);
  statepb::Command late = CreateNodeCommand("/b");
  MutableHeader(late)->set_session_id(t);
  MutableHeader(late)->set_request_id(1);
  late.set_epoch(cell.epoch());
  late.set_time_ms(cell.now() + 1000);
  const ApplyResult result = cell.sm().Apply(late);
  EXPECT_THAT(result.ended_sessions, ElementsAre(t));
  ASSERT_TRUE(FindCompletion(result, {t, 1}).has_value());
  EXPECT_EQ(FindCompletion(result, {t, 1})->code(), kNotFound);
  EXPECT_FALSE(cell.sm().StatNode("/b").ok());
}

TEST(SessionsTest, RenewExtendsToNowPlusTtlAndIgnoresUnknownSessions) {
  Cell cell;
  const uint64_t s = cell.NewSession(3000);
  const int64_t created = cell.now();
  cell.Advance(2000);
  cell.Renew(s);
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 5000);
  // Never shortens.
  cell.Renew(s);
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 5000);
  cell.Advance(2999);
  EXPECT_TRUE(cell.sm().SessionExpiresAt(s).ok());
  // Unknown sessions in a renewal are skipped.
  EXPECT_THAT(cell.Renew(999).ended_sessions, IsEmpty());
  EXPECT_THAT(cell.Advance(1).ended_sessions, ElementsAre(s));
  EXPECT_THAT(cell.Renew(s).ended_sessions, IsEmpty());
  EXPECT_EQ(cell.sm().session_count(), 0u);
}

TEST(SessionsTest, RequestIdZeroIsInvalid) {
  Cell cell;
  const uint64_t s = cell.NewSession();
  const std::optional<statepb::Result> result =
      cell.RunAs(s, 0, CreateNodeCommand("/a"));
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), kInvalidArgument);
  EXPECT_FALSE(cell.sm().StatNode("/a").ok());
}

TEST(EpochTest, StartEpochGivesFreshTtl) {
  Cell cell;
  const uint64_t s = cell.NewSession(10000);
  const int64_t created = cell.now();
  cell.Advance(9000);
  cell.NewEpoch();
  // min(now + ttl, last_renewed + 2 * ttl) = min(created + 19000,
  // created + 20000).
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 19000);
  EXPECT_EQ(cell.sm().epoch(), cell.epoch());
}

TEST(EpochTest, FreshTtlComesBeforeExpiry) {
  Cell cell;
  const uint64_t s = cell.NewSession(10000);
  const int64_t created = cell.now();
  // The old leader vanished; the next command is the new leader's
  // StartEpoch, well after the session's expires_at.
  statepb::Command start;
  start.mutable_start_epoch();
  start.set_epoch(cell.epoch() + 1);
  start.set_time_ms(created + 15000);
  const ApplyResult result = cell.sm().Apply(start);
  EXPECT_THAT(result.ended_sessions, IsEmpty());
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 20000);
}

TEST(EpochTest, SilentClientExpiresByTwiceTtlWhateverTheLeaders) {
  Cell cell;
  const uint64_t s = cell.NewSession(10000);
  const int64_t created = cell.now();
  for (int i = 0; i < 5; ++i) {
    cell.Advance(3000);
    const ApplyResult result = cell.NewEpoch();
    if (cell.now() < created + 20000) {
      EXPECT_THAT(result.ended_sessions, IsEmpty()) << i;
      EXPECT_LE(*cell.sm().SessionExpiresAt(s), created + 20000);
    }
  }
  // 15,000 ms in: the cap holds the session at created + 20,000.
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 20000);
  cell.Advance(created + 20000 - cell.now() - 1);
  EXPECT_TRUE(cell.sm().SessionExpiresAt(s).ok());
  EXPECT_THAT(cell.Advance(1).ended_sessions, ElementsAre(s));
}

TEST(EpochTest, FreshTtlNeverShortensALease) {
  Cell cell;
  const uint64_t s = cell.NewSession(10000);
  const int64_t created = cell.now();
  cell.Advance(9000);
  cell.Renew(s);  // last_renewed = created + 9000, expires created + 19000
  cell.Advance(100);
  cell.NewEpoch();
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 19100);
  cell.Advance(1);
  cell.NewEpoch();
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 19101);
}

TEST(EpochTest, StartEpochNotAboveCurrentIsIgnored) {
  Cell cell;
  const uint64_t s = cell.NewSession(10000);
  const int64_t created = cell.now();
  cell.Advance(9000);
  statepb::Command same;
  same.mutable_start_epoch();
  cell.Apply(same);  // the current epoch again: no fresh TTL
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 10000);
  statepb::Command older;
  older.mutable_start_epoch();
  older.set_epoch(cell.epoch() - 1);
  older.set_time_ms(cell.now());
  cell.sm().Apply(older);
  EXPECT_EQ(*cell.sm().SessionExpiresAt(s), created + 10000);
  EXPECT_EQ(cell.sm().epoch(), cell.epoch());
}

TEST(EpochTest, StaleEpochCommandIsAbortedAndNotRecorded) {
  Cell cell;
  const uint64_t s = cell.NewSession();
  cell.NewEpoch();
  statepb::Command stale = CreateNodeCommand("/a");
  MutableHeader(stale)->set_session_id(s);
  MutableHeader(stale)->set_request_id(1);
  stale.set_epoch(cell.epoch() - 1);
  stale.set_time_ms(cell.now() + 50000);  // would expire the session
  const ApplyResult aborted = cell.sm().Apply(stale);
  const std::optional<statepb::Result> result = FindCompletion(aborted, {s, 1});
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), kAborted);
  EXPECT_THAT(aborted.ended_sessions, IsEmpty());
  EXPECT_EQ(cell.sm().now_ms(), cell.now());
  EXPECT_FALSE(cell.sm().StatNode("/a").ok());
  // The retry with the same request number runs.
  EXPECT_EQ(cell.RunAs(s, 1, CreateNodeCommand("/a"))->code(), kOk);
  EXPECT_TRUE(cell.sm().StatNode("/a").ok());

  statepb::Command stale_session;
  stale_session.mutable_create_session()->set_nonce(5);
  stale_session.set_epoch(cell.epoch() - 1);
  const std::optional<statepb::Result> session_result =
      FindCompletion(cell.sm().Apply(stale_session), {0, 5});
  ASSERT_TRUE(session_result.has_value());
  EXPECT_EQ(session_result->code(), kAborted);
  EXPECT_EQ(cell.sm().session_count(), 1u);
}

TEST(ExactlyOnceTest, RetryReturnsRecordedResultAndAppliesOnce) {
  Cell cell;
  const uint64_t s = cell.NewSession();
  ASSERT_EQ(cell.RunAs(s, 1, CreateNodeCommand("/a"))->code(), kOk);
  const statepb::Result first = *cell.RunAs(s, 2, SetNodeCommand("/a", "x"));
  ASSERT_EQ(first.code(), kOk);
  cell.Advance(10);
  const statepb::Result retry = *cell.RunAs(s, 2, SetNodeCommand("/a", "x"));
  EXPECT_EQ(retry.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(cell.sm().StatNode("/a")->meta().content_generation(), 2u);
  // Errors are recorded too: a retry does not re-run the request.
  const statepb::Result exists = *cell.RunAs(s, 3, CreateNodeCommand("/b/c"));
  EXPECT_EQ(exists.code(), kNotFound);
  ASSERT_EQ(cell.RunAs(s, 4, CreateNodeCommand("/b"))->code(), kOk);
  EXPECT_EQ(cell.RunAs(s, 3, CreateNodeCommand("/b/c"))->code(), kNotFound);
  EXPECT_FALSE(cell.sm().StatNode("/b/c").ok());
}

TEST(ExactlyOnceTest, FirstUnansweredForgetsOlderResults) {
  Cell cell;
  const uint64_t s = cell.NewSession();
  ASSERT_EQ(cell.RunAs(s, 1, CreateNodeCommand("/a"))->code(), kOk);
  ASSERT_EQ(cell.RunAs(s, 2, CreateNodeCommand("/b"))->code(), kOk);
  ASSERT_EQ(
      cell.RunAs(s, 3, CreateNodeCommand("/c"), /*first_unanswered=*/2)->code(),
      kOk);
  // Request 2 is still retained, request 1 is not.
  EXPECT_EQ(cell.RunAs(s, 2, CreateNodeCommand("/b"), 2)->code(), kOk);
  const statepb::Result old = *cell.RunAs(s, 1, CreateNodeCommand("/a"));
  EXPECT_EQ(old.code(), kFailedPrecondition);
  EXPECT_THAT(old.message(), HasSubstr("request 1 is too old"));
  // A header claiming its own request answered is malformed.
  const statepb::Result malformed =
      *cell.RunAs(s, 4, CreateNodeCommand("/d"), 5);
  EXPECT_EQ(malformed.code(), kInvalidArgument);
  EXPECT_FALSE(cell.sm().StatNode("/d").ok());
}

TEST(ExactlyOnceTest, MaxRetainedResultsPerSession) {
  Limits limits;
  limits.max_retained_results_per_session = 2;
  Cell cell(limits);
  const uint64_t s = cell.NewSession();
  const uint64_t holder = cell.NewSession();
  ASSERT_EQ(cell.Run(holder, AcquireCommand("/l", v1::EXCLUSIVE))->code(), kOk);
  ASSERT_EQ(cell.RunAs(s, 1, CreateNodeCommand("/a"))->code(), kOk);
  // A parked request counts too.
  EXPECT_FALSE(
      cell.RunAs(s, 2, AcquireCommand("/l", v1::EXCLUSIVE, 10000)).has_value());
  const statepb::Result full = *cell.RunAs(s, 3, CreateNodeCommand("/b"));
  EXPECT_EQ(full.code(), kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("max_retained_results_per_session"));
  EXPECT_FALSE(cell.sm().StatNode("/b").ok());
  // Acknowledging request 1 frees room.
  EXPECT_EQ(cell.RunAs(s, 3, CreateNodeCommand("/b"), 2)->code(), kOk);
}

TEST(ExactlyOnceTest, RetryOfParkedRequestStaysParkedThenGetsTheGrant) {
  Cell cell;
  const uint64_t holder = cell.NewSession();
  const uint64_t waiter = cell.NewSession();
  ASSERT_EQ(cell.Run(holder, AcquireCommand("/l", v1::EXCLUSIVE))->code(), kOk);
  ApplyResult parked;
  EXPECT_FALSE(cell.RunAs(waiter, 1, AcquireCommand("/l", v1::EXCLUSIVE, 5000),
                          0, &parked)
                   .has_value());
  EXPECT_THAT(parked.completions, IsEmpty());
  ApplyResult retried;
  EXPECT_FALSE(cell.RunAs(waiter, 1, AcquireCommand("/l", v1::EXCLUSIVE, 5000),
                          0, &retried)
                   .has_value());
  EXPECT_THAT(retried.completions, IsEmpty());
  ApplyResult released;
  ASSERT_EQ(cell.Run(holder, ReleaseCommand("/l"), nullptr, &released)->code(),
            kOk);
  const std::optional<statepb::Result> granted =
      FindCompletion(released, {waiter, 1});
  ASSERT_TRUE(granted.has_value());
  EXPECT_EQ(granted->code(), kOk);
  EXPECT_EQ(granted->acquire().sequencer().session_id(), waiter);
  const statepb::Result retry =
      *cell.RunAs(waiter, 1, AcquireCommand("/l", v1::EXCLUSIVE, 5000));
  EXPECT_EQ(retry.SerializeAsString(), granted->SerializeAsString());
  EXPECT_EQ(cell.sm().StatNode("/l")->meta().lock_generation(), 2u);
}

TEST(ExactlyOnceTest, FailedRequestChangesNothing) {
  Limits limits;
  limits.max_nodes = 3;
  Cell cell(limits);
  const uint64_t s = cell.NewSession();
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/a"))->code(), kOk);
  const uint64_t instance = cell.sm().StatNode("/a")->meta().instance();
  // Each fails after passing some checks; none may leave a trace.
  EXPECT_EQ(
      cell.Run(s, AcquireCommand("/l", v1::LOCK_MODE_UNSPECIFIED))->code(),
      kInvalidArgument);
  EXPECT_EQ(cell.Run(s, AcquireCommand("/l", v1::EXCLUSIVE, -2))->code(),
            kInvalidArgument);
  EXPECT_EQ(cell.Run(s, AcquireCommand("/l", v1::EXCLUSIVE, 0, -1))->code(),
            kInvalidArgument);
  EXPECT_EQ(cell.Run(s, AcquireCommand("/x/l", v1::EXCLUSIVE))->code(),
            kNotFound);
  EXPECT_EQ(cell.Run(s, CampaignCommand("e", "v", -2))->code(),
            kInvalidArgument);
  // /election and /election/e would be two nodes; only one fits.
  EXPECT_EQ(cell.Run(s, CampaignCommand("e", "v"))->code(), kResourceExhausted);
  EXPECT_THAT(cell.sm().ListChildren("/")->names(), ElementsAre("a"));
  EXPECT_EQ(cell.sm().NextDeadline(), *cell.sm().SessionExpiresAt(s));
  // No instance number was consumed either.
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/b"))->code(), kOk);
  EXPECT_EQ(cell.sm().StatNode("/b")->meta().instance(), instance + 1);
}

TEST(CloseTest, CloseEndsSessionAndItsRequestsAfterwardAreNotFound) {
  Cell cell;
  const uint64_t s = cell.NewSession();
  ApplyResult closed;
  ASSERT_EQ(cell.Run(s, CloseSessionCommand(), nullptr, &closed)->code(), kOk);
  EXPECT_THAT(closed.ended_sessions, ElementsAre(s));
  EXPECT_EQ(cell.sm().session_count(), 0u);
  EXPECT_EQ(cell.Run(s, CloseSessionCommand())->code(), kNotFound);
}

}  // namespace
}  // namespace lockd::sessions
