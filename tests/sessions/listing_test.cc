// Unit tests of the operators' listings of the state machine
// (ListSessions, ListLocks): contents, order, remaining times, prefix
// filtering by whole names, and the bounds of one answer.

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
using ::testing::IsEmpty;

// The paths of a lock listing, in the order listed.
std::vector<std::string> Paths(const v1::ListLocksResponse& response) {
  std::vector<std::string> paths;
  for (const v1::LockInfo& lock : response.locks())
    paths.push_back(lock.path());
  return paths;
}

std::vector<uint64_t> Ids(const v1::ListSessionsResponse& response) {
  std::vector<uint64_t> ids;
  for (const v1::SessionInfo& session : response.sessions()) {
    ids.push_back(session.session_id());
  }
  return ids;
}

class ListingTest : public ::testing::Test {
 protected:
  explicit ListingTest(const Limits& limits = Limits()) : cell_(limits) {}

  uint64_t NewSession(const std::string& name, int64_t ttl_ms = 10000) {
    const statepb::Result result = cell_.CreateSession(ttl_ms, 0, name);
    EXPECT_EQ(result.code(), kOk) << result.message();
    return result.create_session().session_id();
  }
  // Runs a request that must be answered OK now.
  void Ok(uint64_t session, statepb::Command command) {
    const std::optional<statepb::Result> result =
        cell_.Run(session, std::move(command));
    ASSERT_TRUE(result.has_value()) << "parked";
    EXPECT_EQ(result->code(), kOk) << result->message();
  }
  void Lock(uint64_t session, const std::string& path,
            v1::LockMode mode = v1::EXCLUSIVE, int64_t lock_delay_ms = 0) {
    Ok(session, AcquireCommand(path, mode, 0, lock_delay_ms));
  }
  // Sends a request that must park (wait for a lock).
  void Park(uint64_t session, statepb::Command command) {
    EXPECT_FALSE(cell_.Run(session, std::move(command)).has_value());
  }
  v1::ListLocksResponse Locks(const std::string& prefix = "/") {
    absl::StatusOr<v1::ListLocksResponse> locks = cell_.sm().ListLocks(prefix);
    EXPECT_TRUE(locks.ok()) << locks.status();
    return locks.value_or(v1::ListLocksResponse());
  }

  Cell cell_;
};

TEST_F(ListingTest, EmptyCellListsNothing) {
  EXPECT_THAT(cell_.sm().ListSessions().sessions(), IsEmpty());
  EXPECT_FALSE(cell_.sm().ListSessions().truncated());
  EXPECT_THAT(Paths(Locks()), IsEmpty());
  EXPECT_FALSE(Locks().truncated());
}

TEST_F(ListingTest, SessionsByIdWithLeaseLocksAndEphemeralNodes) {
  const uint64_t a = NewSession("host-a/app", 5000);
  const uint64_t b = NewSession("host-b", 20000);
  const uint64_t c = NewSession("");
  Ok(a, CreateNodeCommand("/dir"));
  Lock(a, "/dir/z");
  Lock(a, "/b", v1::SHARED);
  Lock(b, "/b", v1::SHARED);
  Lock(a, "/dir/a");
  Ok(a, CreateNodeCommand("/dir/e1", "", /*ephemeral=*/true));
  Ok(a, CreateNodeCommand("/dir/e2", "", /*ephemeral=*/true));
  Ok(c, CreateNodeCommand("/e3", "", /*ephemeral=*/true));
  // A parked request is not a held lock.
  Park(c, AcquireCommand("/dir/z", v1::EXCLUSIVE, 3000));
  cell_.Advance(1200);

  const v1::ListSessionsResponse listed = cell_.sm().ListSessions();
  EXPECT_FALSE(listed.truncated());
  ASSERT_THAT(Ids(listed), ElementsAre(a, b, c));
  const v1::SessionInfo& first = listed.sessions(0);
  EXPECT_EQ(first.client_name(), "host-a/app");
  EXPECT_EQ(first.ttl_ms(), 5000);
  EXPECT_EQ(first.lease_remaining_ms(), 5000 - 1200);
  EXPECT_THAT(first.locks(), ElementsAre("/b", "/dir/a", "/dir/z"));
  EXPECT_EQ(first.num_locks(), 3u);
  EXPECT_EQ(first.ephemeral_nodes(), 2u);
  const v1::SessionInfo& second = listed.sessions(1);
  EXPECT_EQ(second.client_name(), "host-b");
  EXPECT_EQ(second.lease_remaining_ms(), 20000 - 1200);
  EXPECT_THAT(second.locks(), ElementsAre("/b"));
  EXPECT_EQ(second.num_locks(), 1u);
  EXPECT_EQ(second.ephemeral_nodes(), 0u);
  const v1::SessionInfo& third = listed.sessions(2);
  EXPECT_EQ(third.client_name(), "");
  EXPECT_EQ(third.ttl_ms(), 10000);
  EXPECT_THAT(third.locks(), IsEmpty());
  EXPECT_EQ(third.num_locks(), 0u);
  EXPECT_EQ(third.ephemeral_nodes(), 1u);

  // A renewal moves the lease; a closed session is gone.
  cell_.Renew(a);
  Ok(b, CloseSessionCommand());
  const v1::ListSessionsResponse later = cell_.sm().ListSessions();
  ASSERT_THAT(Ids(later), ElementsAre(a, c));
  EXPECT_EQ(later.sessions(0).lease_remaining_ms(), 5000);
}

TEST_F(ListingTest, ExpiredSessionIsNotListed) {
  const uint64_t short_lived = NewSession("short", 1000);
  const uint64_t other = NewSession("other", 10000);
  Lock(short_lived, "/l");
  cell_.Advance(999);
  EXPECT_THAT(Ids(cell_.sm().ListSessions()), ElementsAre(short_lived, other));
  EXPECT_EQ(cell_.sm().ListSessions().sessions(0).lease_remaining_ms(), 1);
  cell_.Advance(1);
  EXPECT_THAT(Ids(cell_.sm().ListSessions()), ElementsAre(other));
  EXPECT_THAT(Paths(Locks()), IsEmpty());
}

TEST_F(ListingTest, HoldersAndFifoWaitersWithRemainingWait) {
  const uint64_t a = NewSession("a");
  const uint64_t b = NewSession("b");
  const uint64_t c = NewSession("c");
  const uint64_t d = NewSession("d");
  Lock(b, "/l", v1::SHARED);
  Lock(a, "/l", v1::SHARED);
  Park(c, AcquireCommand("/l", v1::EXCLUSIVE, 5000));
  cell_.Advance(1000);
  // d is a reader behind a queued writer (no barging).
  Park(d, AcquireCommand("/l", v1::SHARED, 8000));
  cell_.Advance(500);

  v1::ListLocksResponse listed = Locks();
  ASSERT_THAT(Paths(listed), ElementsAre("/l"));
  const v1::LockInfo& lock = listed.locks(0);
  EXPECT_EQ(lock.lock_generation(), 0u);  // No exclusive grant yet.
  ASSERT_EQ(lock.holders_size(), 2);
  EXPECT_EQ(lock.holders(0).session_id(), a);
  EXPECT_EQ(lock.holders(0).mode(), v1::SHARED);
  EXPECT_EQ(lock.holders(1).session_id(), b);
  EXPECT_EQ(lock.holders(1).mode(), v1::SHARED);
  ASSERT_EQ(lock.waiters_size(), 2);
  EXPECT_EQ(lock.waiters(0).session_id(), c);
  EXPECT_EQ(lock.waiters(0).mode(), v1::EXCLUSIVE);
  EXPECT_EQ(lock.waiters(0).wait_remaining_ms(), 5000 - 1500);
  EXPECT_FALSE(lock.waiters(0).campaign());
  EXPECT_EQ(lock.waiters(1).session_id(), d);
  EXPECT_EQ(lock.waiters(1).mode(), v1::SHARED);
  EXPECT_EQ(lock.waiters(1).wait_remaining_ms(), 8000 - 500);
  EXPECT_EQ(lock.lock_delay_remaining_ms(), 0);

  // The readers leave: c is granted, d still waits.
  Ok(a, ReleaseCommand("/l"));
  Ok(b, ReleaseCommand("/l"));
  listed = Locks();
  ASSERT_EQ(listed.locks_size(), 1);
  EXPECT_EQ(listed.locks(0).lock_generation(), 1u);
  ASSERT_EQ(listed.locks(0).holders_size(), 1);
  EXPECT_EQ(listed.locks(0).holders(0).session_id(), c);
  EXPECT_EQ(listed.locks(0).holders(0).mode(), v1::EXCLUSIVE);
  ASSERT_EQ(listed.locks(0).waiters_size(), 1);
  EXPECT_EQ(listed.locks(0).waiters(0).session_id(), d);

  // d's wait times out; c releases: the node stays but is no longer listed.
  cell_.Advance(7500);
  listed = Locks();
  ASSERT_EQ(listed.locks_size(), 1);
  EXPECT_THAT(listed.locks(0).waiters(), IsEmpty());
  Ok(c, ReleaseCommand("/l"));
  EXPECT_THAT(Paths(Locks()), IsEmpty());
  EXPECT_TRUE(cell_.sm().StatNode("/l").ok());
}

TEST_F(ListingTest, CampaignWaiterIsMarked) {
  const uint64_t a = NewSession("a");
  const uint64_t b = NewSession("b");
  Ok(a, CampaignCommand("e", "a"));
  Park(b, CampaignCommand("e", "b", 2000));
  const v1::ListLocksResponse listed = Locks("/election");
  ASSERT_THAT(Paths(listed), ElementsAre("/election/e"));
  ASSERT_EQ(listed.locks(0).holders_size(), 1);
  EXPECT_EQ(listed.locks(0).holders(0).session_id(), a);
  ASSERT_EQ(listed.locks(0).waiters_size(), 1);
  EXPECT_TRUE(listed.locks(0).waiters(0).campaign());
  EXPECT_EQ(listed.locks(0).waiters(0).wait_remaining_ms(), 2000);
}

TEST_F(ListingTest, LockDelayRemainingAfterTheHolderExpires) {
  const uint64_t holder = NewSession("holder", 2000);
  const uint64_t waiter = NewSession("waiter", 30000);
  Lock(holder, "/d", v1::EXCLUSIVE, /*lock_delay_ms=*/5000);
  cell_.Advance(1000);
  cell_.Renew(waiter);
  cell_.Advance(1000);  // The holder's session expires now.
  ASSERT_THAT(Ids(cell_.sm().ListSessions()), ElementsAre(waiter));
  v1::ListLocksResponse listed = Locks();
  ASSERT_THAT(Paths(listed), ElementsAre("/d"));
  EXPECT_THAT(listed.locks(0).holders(), IsEmpty());
  EXPECT_EQ(listed.locks(0).lock_delay_remaining_ms(), 5000);
  EXPECT_EQ(listed.locks(0).lock_generation(), 1u);

  Park(waiter, AcquireCommand("/d", v1::EXCLUSIVE, 10000));
  cell_.Advance(1500);
  listed = Locks();
  ASSERT_EQ(listed.locks_size(), 1);
  EXPECT_EQ(listed.locks(0).lock_delay_remaining_ms(), 3500);
  ASSERT_EQ(listed.locks(0).waiters_size(), 1);
  EXPECT_EQ(listed.locks(0).waiters(0).wait_remaining_ms(), 10000 - 1500);

  // The delay ends: the waiter holds the lock.
  cell_.Advance(3500);
  listed = Locks();
  ASSERT_EQ(listed.locks_size(), 1);
  EXPECT_EQ(listed.locks(0).lock_delay_remaining_ms(), 0);
  ASSERT_EQ(listed.locks(0).holders_size(), 1);
  EXPECT_EQ(listed.locks(0).holders(0).session_id(), waiter);
  EXPECT_THAT(listed.locks(0).waiters(), IsEmpty());
  EXPECT_THAT(cell_.sm().ListSessions().sessions(0).locks(), ElementsAre("/d"));
}

TEST_F(ListingTest, DelayedLockWithoutWaitersIsListedUntilTheDelayEnds) {
  const uint64_t holder = NewSession("holder", 1000);
  Lock(holder, "/d", v1::EXCLUSIVE, /*lock_delay_ms=*/3000);
  cell_.Advance(1000);
  EXPECT_THAT(Paths(Locks()), ElementsAre("/d"));
  cell_.Advance(2999);
  ASSERT_THAT(Paths(Locks()), ElementsAre("/d"));
  EXPECT_EQ(Locks().locks(0).lock_delay_remaining_ms(), 1);
  cell_.Advance(1);
  EXPECT_THAT(Paths(Locks()), IsEmpty());
}

TEST_F(ListingTest, PrefixCoversWholeNamesOnly) {
  const uint64_t a = NewSession("a");
  const uint64_t b = NewSession("b");
  for (const char* path : {"/a", "/a/b", "/ab", "/a-b", "/b", "/a/b/c"}) {
    Lock(a, path);
  }
  Park(b, AcquireCommand("/ab", v1::EXCLUSIVE, 1000));
  // Byte order: '-' (0x2d) sorts before '/' (0x2f), '/' before 'b'.
  EXPECT_THAT(Paths(Locks("/")),
              ElementsAre("/a", "/a-b", "/a/b", "/a/b/c", "/ab", "/b"));
  EXPECT_THAT(Paths(Locks("")),
              ElementsAre("/a", "/a-b", "/a/b", "/a/b/c", "/ab", "/b"));
  EXPECT_THAT(Paths(Locks("/a")), ElementsAre("/a", "/a/b", "/a/b/c"));
  EXPECT_THAT(Paths(Locks("/a/b")), ElementsAre("/a/b", "/a/b/c"));
  EXPECT_THAT(Paths(Locks("/a/b/c")), ElementsAre("/a/b/c"));
  EXPECT_THAT(Paths(Locks("/ab")), ElementsAre("/ab"));
  EXPECT_THAT(Paths(Locks("/a-")), IsEmpty());
  EXPECT_THAT(Paths(Locks("/a/bc")), IsEmpty());
  EXPECT_THAT(Paths(Locks("/missing")), IsEmpty());
  // Only the waiter of "/ab" shows under "/ab".
  ASSERT_EQ(Locks("/ab").locks(0).waiters_size(), 1);
  EXPECT_EQ(Locks("/ab").locks(0).waiters(0).session_id(), b);
  EXPECT_THAT(Locks("/a").locks(0).waiters(), IsEmpty());

  // A node without a lock in use is not listed, whatever the prefix.
  Ok(a, CreateNodeCommand("/a/plain"));
  EXPECT_THAT(Paths(Locks("/a/plain")), IsEmpty());
}

TEST_F(ListingTest, BadPrefixIsInvalidArgument) {
  for (const std::string& prefix :
       {std::string("a"), std::string("/a/"), std::string("//"),
        std::string("/a/../b"), std::string("/a\0b", 4)}) {
    EXPECT_EQ(cell_.sm().ListLocks(prefix).status().code(),
              absl::StatusCode::kInvalidArgument)
        << prefix;
  }
  EXPECT_EQ(
      cell_.sm()
          .ListLocks(
              std::string(Limits().max_path_bytes + 1, 'x').replace(0, 1, "/"))
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

// --- Bounds of one answer.

Limits ListLimits(size_t max_entries, size_t max_bytes, size_t max_locks) {
  Limits limits;
  limits.max_list_entries = max_entries;
  limits.max_list_bytes = max_bytes;
  limits.max_listed_locks_per_session = max_locks;
  return limits;
}

TEST(ListingBoundsTest, SessionListsTheFirstLockPathsAndTheirNumber) {
  Cell cell(ListLimits(10000, 2 << 20, 2));
  const uint64_t a = cell.NewSession();
  for (const char* path : {"/c", "/a", "/b"}) {
    ASSERT_EQ(cell.Run(a, AcquireCommand(path, v1::EXCLUSIVE))->code(), kOk);
  }
  const v1::ListSessionsResponse listed = cell.sm().ListSessions();
  ASSERT_EQ(listed.sessions_size(), 1);
  EXPECT_THAT(listed.sessions(0).locks(), ElementsAre("/a", "/b"));
  EXPECT_EQ(listed.sessions(0).num_locks(), 3u);
  // Shortening one session's paths does not make the answer truncated.
  EXPECT_FALSE(listed.truncated());
}

TEST(ListingBoundsTest, EntryLimitTruncatesBothListings) {
  Cell cell(ListLimits(2, 2 << 20, 100));
  const uint64_t a = cell.NewSession();
  const uint64_t b = cell.NewSession();
  ASSERT_EQ(cell.Run(a, AcquireCommand("/x", v1::EXCLUSIVE))->code(), kOk);
  ASSERT_EQ(cell.Run(b, AcquireCommand("/y", v1::EXCLUSIVE))->code(), kOk);
  // Exactly at the limit: everything, not truncated.
  EXPECT_THAT(Ids(cell.sm().ListSessions()), ElementsAre(a, b));
  EXPECT_FALSE(cell.sm().ListSessions().truncated());
  EXPECT_THAT(Paths(*cell.sm().ListLocks("/")), ElementsAre("/x", "/y"));
  EXPECT_FALSE(cell.sm().ListLocks("/")->truncated());

  cell.NewSession();
  ASSERT_EQ(cell.Run(a, AcquireCommand("/w", v1::EXCLUSIVE))->code(), kOk);
  EXPECT_THAT(Ids(cell.sm().ListSessions()), ElementsAre(a, b));
  EXPECT_TRUE(cell.sm().ListSessions().truncated());
  EXPECT_THAT(Paths(*cell.sm().ListLocks("/")), ElementsAre("/w", "/x"));
  EXPECT_TRUE(cell.sm().ListLocks("/")->truncated());
  // A narrower prefix lists what was left out.
  EXPECT_THAT(Paths(*cell.sm().ListLocks("/y")), ElementsAre("/y"));
  EXPECT_FALSE(cell.sm().ListLocks("/y")->truncated());
}

// The byte bound counts exactly the serialized entries: an answer fits
// max_list_bytes precisely when its serialization (without the flag) does.
TEST(ListingBoundsTest, ByteLimitCountsTheSerializedEntries) {
  auto fill = [](Cell& cell) {
    const uint64_t a = cell.NewSession(10000);
    const uint64_t b = cell.NewSession(10000);
    const std::string long_name(200, 'n');
    ASSERT_EQ(cell.Run(a, CreateNodeCommand("/" + long_name))->code(), kOk);
    for (const std::string& path :
         {"/" + long_name + "/l1", "/" + long_name + "/l2",
          std::string("/s")}) {
      ASSERT_EQ(cell.Run(a, AcquireCommand(path, v1::SHARED))->code(), kOk);
      ASSERT_EQ(cell.Run(b, AcquireCommand(path, v1::SHARED))->code(), kOk);
    }
  };
  Cell reference;
  fill(reference);
  const v1::ListSessionsResponse all_sessions = reference.sm().ListSessions();
  const v1::ListLocksResponse all_locks = *reference.sm().ListLocks("/");
  ASSERT_EQ(all_sessions.sessions_size(), 2);
  ASSERT_EQ(all_locks.locks_size(), 3);
  ASSERT_FALSE(all_sessions.truncated());
  ASSERT_FALSE(all_locks.truncated());
  const size_t session_bytes = all_sessions.ByteSizeLong();
  const size_t lock_bytes = all_locks.ByteSizeLong();
  // The long paths need a two-byte length prefix: the count must include it.
  ASSERT_GT(all_sessions.sessions(0).ByteSizeLong(), 127u);

  {
    Cell cell(ListLimits(10000, session_bytes, 100));
    fill(cell);
    EXPECT_EQ(cell.sm().ListSessions().SerializeAsString(),
              all_sessions.SerializeAsString());
  }
  {
    Cell cell(ListLimits(10000, session_bytes - 1, 100));
    fill(cell);
    const v1::ListSessionsResponse listed = cell.sm().ListSessions();
    EXPECT_EQ(listed.sessions_size(), 1);
    EXPECT_TRUE(listed.truncated());
  }
  {
    Cell cell(ListLimits(10000, lock_bytes, 100));
    fill(cell);
    EXPECT_EQ(cell.sm().ListLocks("/")->SerializeAsString(),
              all_locks.SerializeAsString());
  }
  {
    Cell cell(ListLimits(10000, lock_bytes - 1, 100));
    fill(cell);
    const v1::ListLocksResponse listed = *cell.sm().ListLocks("/");
    EXPECT_EQ(listed.locks_size(), 2);
    EXPECT_TRUE(listed.truncated());
  }
  {
    // An entry larger than the whole budget ends the listing before it.
    Cell cell(ListLimits(10000, 10, 100));
    fill(cell);
    EXPECT_THAT(Paths(*cell.sm().ListLocks("/")), IsEmpty());
    EXPECT_TRUE(cell.sm().ListLocks("/")->truncated());
  }
}

// With the default limits the largest entries the state allows fit one
// answer on their own (so a listing always makes progress): a shared lock
// held by max_sessions sessions with max_waiters_per_lock waiters on a
// longest path, and a session with a longest name and max-length lock
// paths; every number at its widest encoding.
TEST(ListingBoundsTest, DefaultLimitsFitTheLargestEntries) {
  const Limits limits;
  constexpr uint64_t kWidest = UINT64_MAX;
  v1::ListLocksResponse locks;
  v1::LockInfo* lock = locks.add_locks();
  lock->set_path(std::string(limits.max_path_bytes, 'p'));
  lock->set_lock_generation(kWidest);
  for (size_t i = 0; i < limits.max_sessions; ++i) {
    v1::LockHolder* holder = lock->add_holders();
    holder->set_session_id(kWidest);
    holder->set_mode(v1::SHARED);
  }
  for (size_t i = 0; i < limits.max_waiters_per_lock; ++i) {
    v1::LockWaiter* waiter = lock->add_waiters();
    waiter->set_session_id(kWidest);
    waiter->set_mode(v1::EXCLUSIVE);
    waiter->set_wait_remaining_ms(limits.max_wait_timeout_ms);
    waiter->set_campaign(true);
  }
  lock->set_lock_delay_remaining_ms(limits.max_lock_delay_ms);
  EXPECT_LE(locks.ByteSizeLong(), limits.max_list_bytes);

  v1::ListSessionsResponse sessions;
  v1::SessionInfo* session = sessions.add_sessions();
  session->set_session_id(kWidest);
  session->set_client_name(std::string(limits.max_client_name_bytes, 'n'));
  session->set_ttl_ms(limits.max_ttl_ms);
  session->set_lease_remaining_ms(2 * limits.max_ttl_ms);
  for (size_t i = 0; i < limits.max_listed_locks_per_session; ++i) {
    session->add_locks(std::string(limits.max_path_bytes, 'p'));
  }
  session->set_num_locks(kWidest);
  session->set_ephemeral_nodes(limits.max_ephemeral_nodes_per_session);
  EXPECT_LE(sessions.ByteSizeLong(), limits.max_list_bytes);
  // And the 4 MiB that gRPC clients accept by default holds a full answer.
  EXPECT_LT(limits.max_list_bytes + 16, size_t{4} << 20);
}

}  // namespace
}  // namespace lockd::sessions
