// Determinism and snapshot tests of the state machine: identical logs give
// identical results and Snapshot() bytes, a restored snapshot continues
// exactly like the original, Restore refuses damaged snapshots and keeps the
// state then, and state invariants hold after every command of seeded random
// logs (including: the operators' listings agree with the snapshot).

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "protos/state.pb.h"
#include "sessions/state_machine.h"
#include "tests/sessions/test_util.h"

namespace lockd::sessions {
namespace {

// Every session's secret digest in the random logs.
constexpr char kDigest[] = "digest";

using ::testing::HasSubstr;

// Small limits so that the random logs also run into them.
Limits SmallLimits() {
  Limits limits;
  limits.max_nodes = 12;
  limits.max_children_per_node = 6;
  limits.max_sessions = 6;
  limits.max_ephemeral_nodes_per_session = 2;
  limits.max_watches_per_session = 3;
  limits.max_waiters_per_lock = 3;
  limits.max_events_per_session = 5;
  limits.max_retained_results_per_session = 8;
  return limits;
}

// Generates a random command log from a seed: sessions come and go,
// clients retry, time jumps, leaders change. It applies what it generates to
// its own state machine to address mostly live sessions.
class LogGenerator {
 public:
  explicit LogGenerator(uint64_t seed)
      : rng_(seed), reference_(SmallLimits()) {}

  statepb::Command Next() {
    statepb::Command command = NextOp();
    now_ += Pick(60);
    command.set_time_ms(now_);
    command.set_epoch(epoch_);
    if (epoch_ > 1 && Pick(30) == 0) command.set_epoch(epoch_ - 1);
    reference_.Apply(command);
    return command;
  }

 private:
  uint64_t Pick(uint64_t n) { return rng_() % n; }

  template <typename T>
  const T& PickOf(const std::vector<T>& options) {
    return options[Pick(options.size())];
  }

  statepb::Command NextOp() {
    statepb::Command command;
    const uint64_t roll = Pick(100);
    if (roll < 6) {
      now_ += Pick(2500);
      command.mutable_tick();
      return command;
    }
    if (roll < 8) {
      ++epoch_;
      command.mutable_start_epoch();
      return command;
    }
    if (roll < 14) {
      for (uint64_t i = Pick(3); i > 0; --i) {
        auto* renewal = command.mutable_renew_sessions()->add_renewals();
        renewal->set_session_id(SessionId());
        renewal->set_acked_event_sequence(Pick(8));
      }
      return command;
    }
    if (roll < 18) {
      v1::CreateSessionRequest* request = command.mutable_create_session();
      request->set_ttl_ms(PickOf<int64_t>({0, 1000, 2500, 6000, 999}));
      request->set_nonce(Pick(5));
      request->set_client_name("client");
      command.set_secret_digest(kDigest);
      return command;
    }
    const std::vector<std::string> paths = {
        "/a",     "/b",           "/a/x", "/a/y", "/b/z",  "/q",
        "/a/x/w", "/election/e1", "bad/", "/acl", "/acl/r"};
    const std::string path = PickOf(paths);
    const std::string content(Pick(3), static_cast<char>('a' + Pick(3)));
    switch (Pick(12)) {
      case 0:
        command = CreateNodeCommand(path, content, Pick(3) == 0, Pick(4) == 0);
        break;
      case 1:
        command = SetNodeCommand(path, content, Pick(3));
        break;
      case 2:
        command = DeleteNodeCommand(path, Pick(2));
        break;
      case 3:
        command = WatchCommand(path, Pick(4) == 0);
        break;
      case 4:
      case 5:
        command = AcquireCommand(
            path,
            PickOf<v1::LockMode>({v1::EXCLUSIVE, v1::SHARED, v1::SHARED,
                                  v1::LOCK_MODE_UNSPECIFIED}),
            PickOf<int64_t>({0, 0, 500, 3000}), PickOf<int64_t>({0, 0, 1500}));
        break;
      case 6:
        command = ReleaseCommand(path);
        break;
      case 7:
        command = CampaignCommand(PickOf<std::string>({"e1", "e2", ".."}),
                                  content, PickOf<int64_t>({0, 2000}));
        break;
      case 8:
        command = ProclaimCommand(PickOf<std::string>({"e1", "e2"}), content);
        break;
      case 9:
        command = ResignCommand(PickOf<std::string>({"e1", "e2"}));
        break;
      case 10: {
        const std::vector<std::string> acls = {"", "", "r", "missing"};
        command = SetAclCommand(path, PickOf(acls), PickOf(acls), PickOf(acls),
                                Pick(3));
        break;
      }
      default:
        command = Pick(3) == 0 ? CloseSessionCommand()
                               : CreateNodeCommand(path, content);
        break;
    }
    const uint64_t session_id = SessionId();
    uint64_t& next = next_request_[session_id];
    v1::RequestHeader* header = MutableHeader(command);
    header->set_session_id(session_id);
    // Mostly new requests, sometimes a retry of an earlier number.
    header->set_request_id(next > 0 && Pick(8) == 0 ? 1 + Pick(next) : ++next);
    if (Pick(3) == 0) {
      header->set_first_unanswered_request_id(Pick(header->request_id() + 1));
    }
    // Now and then a request without the session's secret.
    command.set_secret_digest(Pick(20) == 0 ? "forged" : kDigest);
    // Principals that /acl/r may or may not list ("p1 *" or "p2" as the
    // random content goes), and mostly an admin.
    command.set_principal(PickOf<std::string>({"", "p1", "p2"}));
    command.set_admin(Pick(3) != 0);
    return command;
  }

  // Mostly a live session.
  uint64_t SessionId() {
    const std::vector<uint64_t> live = reference_.SessionIds();
    if (live.empty() || Pick(10) == 0) return 1 + Pick(8);
    return PickOf(live);
  }

  std::mt19937_64 rng_;
  int64_t now_ = 1'000'000;
  uint64_t epoch_ = 1;
  StateMachine reference_;
  std::map<uint64_t, uint64_t> next_request_;
};

std::vector<statepb::Command> RandomLog(uint64_t seed, int length) {
  LogGenerator generator(seed);
  std::vector<statepb::Command> log;
  for (int i = 0; i < length; ++i) log.push_back(generator.Next());
  return log;
}

// Everything an ApplyResult says, as one comparable string.
std::string Describe(const ApplyResult& result) {
  std::string out;
  for (const Completion& completion : result.completions) {
    absl::StrAppend(&out, "C", completion.key.session_id, "/",
                    completion.key.request_id, ":",
                    completion.result.ShortDebugString(), ";");
  }
  for (uint64_t id : result.sessions_with_events) {
    absl::StrAppend(&out, "E", id, ";");
  }
  for (uint64_t id : result.ended_sessions) absl::StrAppend(&out, "X", id, ";");
  for (const std::string& name : result.changed_elections) {
    absl::StrAppend(&out, "L", name, ";");
  }
  return out;
}

// The lock listing computed the slow way, from a snapshot: every node
// whose lock is held, waited for or delayed, at or below `prefix` by whole
// names.
v1::ListLocksResponse LocksFromSnapshot(const statepb::StateSnapshot& snapshot,
                                        const std::string& prefix) {
  v1::ListLocksResponse response;
  for (const statepb::NodeState& node : snapshot.nodes()) {
    const std::string& path = node.path();
    const bool covered =
        prefix == "/" || path == prefix ||
        (path.size() > prefix.size() &&
         path.compare(0, prefix.size() + 1, prefix + "/") == 0);
    if (!covered || (node.holders_size() == 0 && node.waiters_size() == 0 &&
                     node.lock_delay_until_ms() == 0)) {
      continue;
    }
    v1::LockInfo* lock = response.add_locks();
    lock->set_path(path);
    lock->set_lock_generation(node.meta().lock_generation());
    for (const statepb::LockHolderState& holder : node.holders()) {
      v1::LockHolder* listed = lock->add_holders();
      listed->set_session_id(holder.session_id());
      listed->set_mode(holder.mode());
    }
    for (const statepb::LockWaiterState& waiter : node.waiters()) {
      v1::LockWaiter* listed = lock->add_waiters();
      listed->set_session_id(waiter.session_id());
      listed->set_mode(waiter.mode());
      listed->set_wait_remaining_ms(waiter.deadline_ms() - snapshot.now_ms());
      listed->set_campaign(waiter.campaign());
    }
    if (node.lock_delay_until_ms() != 0) {
      lock->set_lock_delay_remaining_ms(node.lock_delay_until_ms() -
                                        snapshot.now_ms());
    }
  }
  return response;
}

// The session listing computed from a snapshot (default list limits).
v1::ListSessionsResponse SessionsFromSnapshot(
    const statepb::StateSnapshot& snapshot) {
  std::map<uint64_t, std::vector<std::string>> held;
  std::map<uint64_t, uint64_t> ephemeral;
  for (const statepb::NodeState& node : snapshot.nodes()) {
    for (const statepb::LockHolderState& holder : node.holders()) {
      held[holder.session_id()].push_back(node.path());
    }
    if (node.meta().ephemeral_owner() != 0) {
      ++ephemeral[node.meta().ephemeral_owner()];
    }
  }
  v1::ListSessionsResponse response;
  for (const statepb::SessionState& session : snapshot.sessions()) {
    v1::SessionInfo* info = response.add_sessions();
    info->set_session_id(session.session_id());
    info->set_client_name(session.client_name());
    info->set_ttl_ms(session.ttl_ms());
    info->set_lease_remaining_ms(session.expires_at_ms() - snapshot.now_ms());
    for (const std::string& path : held[session.session_id()]) {
      info->add_locks(path);
    }
    info->set_num_locks(held[session.session_id()].size());
    info->set_ephemeral_nodes(ephemeral[session.session_id()]);
  }
  return response;
}

// The listings agree with `snapshot` of `sm` (the indexes they use are
// right).
void CheckListings(const StateMachine& sm,
                   const statepb::StateSnapshot& snapshot,
                   const std::string& where) {
  EXPECT_EQ(sm.ListSessions().DebugString(),
            SessionsFromSnapshot(snapshot).DebugString())
      << where;
  for (const char* prefix :
       {"/", "/a", "/a/x", "/b", "/q", "/election", "/election/e1"}) {
    absl::StatusOr<v1::ListLocksResponse> locks = sm.ListLocks(prefix);
    ASSERT_TRUE(locks.ok()) << where << " " << locks.status();
    EXPECT_EQ(locks->DebugString(),
              LocksFromSnapshot(snapshot, prefix).DebugString())
        << where << " prefix " << prefix;
  }
}

// Checks the state invariants visible in a snapshot.
void CheckInvariants(const StateMachine& sm, const std::string& where) {
  statepb::StateSnapshot snapshot;
  ASSERT_TRUE(snapshot.ParseFromString(sm.Snapshot())) << where;
  CheckListings(sm, snapshot, where);
  const int64_t now = snapshot.now_ms();
  for (const statepb::SessionState& session : snapshot.sessions()) {
    // Due expirations ran before the command.
    EXPECT_GT(session.expires_at_ms(), now) << where;
    uint64_t previous = 0;
    for (const v1::Event& event : session.events()) {
      EXPECT_GT(event.sequence(), previous) << where;
      previous = event.sequence();
    }
  }
  for (const statepb::NodeState& node : snapshot.nodes()) {
    bool exclusive = false;
    for (const statepb::LockHolderState& holder : node.holders()) {
      exclusive |= holder.mode() == v1::EXCLUSIVE;
    }
    if (exclusive) {
      EXPECT_EQ(node.holders_size(), 1) << where << node.path();
    }
    if (node.lock_delay_until_ms() != 0) {
      EXPECT_GT(node.lock_delay_until_ms(), now) << where;
      EXPECT_EQ(node.holders_size(), 0) << where;
    }
    for (const statepb::LockWaiterState& waiter : node.waiters()) {
      EXPECT_GT(waiter.deadline_ms(), now) << where;
    }
    if (node.waiters_size() > 0) {
      // The head waits only if the lock is not free for it (no barging
      // means the others wait behind it).
      const statepb::LockWaiterState& head = node.waiters(0);
      const bool free = node.lock_delay_until_ms() == 0 &&
                        (node.holders_size() == 0 ||
                         (head.mode() == v1::SHARED && !exclusive));
      EXPECT_FALSE(free) << where << " " << node.path();
    }
  }
}

TEST(DeterminismTest, SameLogGivesSameResultsAndSnapshotBytes) {
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    const std::vector<statepb::Command> log = RandomLog(seed, 1500);
    StateMachine first(SmallLimits());
    StateMachine second(SmallLimits());
    for (size_t i = 0; i < log.size(); ++i) {
      ASSERT_EQ(Describe(first.Apply(log[i])), Describe(second.Apply(log[i])))
          << "seed " << seed << " command " << i;
    }
    EXPECT_EQ(first.Snapshot(), second.Snapshot()) << "seed " << seed;
  }
}

TEST(DeterminismTest, RandomLogsKeepInvariantsAndExerciseTheRules) {
  int grants_after_wait = 0;
  int expirations = 0;
  int timeouts = 0;
  int retries_answered = 0;
  int denied = 0;
  for (uint64_t seed = 100; seed < 120; ++seed) {
    const std::vector<statepb::Command> log = RandomLog(seed, 2000);
    StateMachine sm(SmallLimits());
    for (size_t i = 0; i < log.size(); ++i) {
      const ApplyResult result = sm.Apply(log[i]);
      expirations += static_cast<int>(result.ended_sessions.size());
      for (const Completion& completion : result.completions) {
        if (completion.result.code() == kDeadlineExceeded) ++timeouts;
        if (completion.result.code() == kPermissionDenied) ++denied;
        if (completion.result.has_acquire() && !log[i].has_acquire()) {
          ++grants_after_wait;
        }
      }
      if (log[i].op_case() == statepb::Command::kSetNode &&
          !result.completions.empty() &&
          result.completions[0].result.code() == kOk &&
          result.completions[0].result.set_node().meta().modified_ms() <
              log[i].time_ms()) {
        ++retries_answered;  // an old answer repeated
      }
      CheckInvariants(sm, absl::StrCat("seed ", seed, " command ", i));
      if (::testing::Test::HasFailure()) return;
    }
  }
  // The logs are only useful if they reach the interesting cases.
  EXPECT_GT(grants_after_wait, 20);
  EXPECT_GT(expirations, 100);
  EXPECT_GT(timeouts, 20);
  EXPECT_GT(retries_answered, 10);
  EXPECT_GT(denied, 50);  // wrong secrets and missing rights
}

TEST(DeterminismTest, RestoredSnapshotContinuesIdentically) {
  for (uint64_t seed = 200; seed < 210; ++seed) {
    const std::vector<statepb::Command> log = RandomLog(seed, 1200);
    StateMachine original(SmallLimits());
    for (size_t i = 0; i < 600; ++i) original.Apply(log[i]);
    const std::string snapshot = original.Snapshot();
    StateMachine restored(SmallLimits());
    ASSERT_TRUE(restored.Restore(snapshot).ok());
    ASSERT_EQ(restored.Snapshot(), snapshot) << "seed " << seed;
    EXPECT_EQ(restored.now_ms(), original.now_ms());
    EXPECT_EQ(restored.epoch(), original.epoch());
    EXPECT_EQ(restored.NextDeadline(), original.NextDeadline());
    EXPECT_EQ(restored.SessionIds(), original.SessionIds());
    EXPECT_EQ(restored.ListSessions().SerializeAsString(),
              original.ListSessions().SerializeAsString());
    EXPECT_EQ(restored.ListLocks("/")->SerializeAsString(),
              original.ListLocks("/")->SerializeAsString());
    statepb::StateSnapshot parsed;
    ASSERT_TRUE(parsed.ParseFromString(snapshot));
    CheckListings(restored, parsed, absl::StrCat("restored seed ", seed));
    for (size_t i = 600; i < log.size(); ++i) {
      ASSERT_EQ(Describe(original.Apply(log[i])),
                Describe(restored.Apply(log[i])))
          << "seed " << seed << " command " << i;
    }
    EXPECT_EQ(restored.Snapshot(), original.Snapshot()) << "seed " << seed;
  }
}

TEST(DeterminismTest, SnapshotRoundTripsAtEveryStep) {
  const std::vector<statepb::Command> log = RandomLog(300, 800);
  StateMachine sm(SmallLimits());
  for (size_t i = 0; i < log.size(); ++i) {
    sm.Apply(log[i]);
    const std::string snapshot = sm.Snapshot();
    StateMachine copy(SmallLimits());
    ASSERT_TRUE(copy.Restore(snapshot).ok()) << "command " << i;
    ASSERT_EQ(copy.Snapshot(), snapshot) << "command " << i;
  }
}

class RestoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const uint64_t s = cell_.NewSession();
    ASSERT_EQ(cell_.Run(s, CreateNodeCommand("/a", "x"))->code(), kOk);
    ASSERT_EQ(cell_.Run(s, AcquireCommand("/a", v1::EXCLUSIVE))->code(), kOk);
    ASSERT_TRUE(snapshot_.ParseFromString(cell_.sm().Snapshot()));
    const uint64_t t = target_cell_.NewSession();
    ASSERT_EQ(target_cell_.Run(t, CreateNodeCommand("/kept"))->code(), kOk);
  }

  // Restores `snapshot` into target_cell_ and checks that a failure left it
  // unchanged.
  absl::Status RestoreDamaged(const std::string& data) {
    const std::string before = target_cell_.sm().Snapshot();
    absl::Status status = target_cell_.sm().Restore(data);
    EXPECT_FALSE(status.ok());
    EXPECT_EQ(target_cell_.sm().Snapshot(), before);
    EXPECT_TRUE(target_cell_.sm().StatNode("/kept").ok());
    return status;
  }

  Cell cell_;
  Cell target_cell_;
  statepb::StateSnapshot snapshot_;
};

TEST_F(RestoreTest, ReplacesTheWholeState) {
  ASSERT_TRUE(target_cell_.sm().Restore(cell_.sm().Snapshot()).ok());
  EXPECT_FALSE(target_cell_.sm().StatNode("/kept").ok());
  EXPECT_EQ(target_cell_.sm().GetNode("/a")->content(), "x");
  EXPECT_EQ(target_cell_.sm().Snapshot(), cell_.sm().Snapshot());
}

TEST_F(RestoreTest, RefusesGarbage) {
  EXPECT_EQ(RestoreDamaged("\xff\xff\xff not a snapshot").code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(RestoreTest, RefusesOtherFormat) {
  snapshot_.set_format(2);
  EXPECT_EQ(RestoreDamaged(snapshot_.SerializeAsString()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RestoreDamaged("").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RestoreTest, RefusesHolderWithoutSession) {
  snapshot_.mutable_nodes(1)->mutable_holders(0)->set_session_id(99);
  const absl::Status status = RestoreDamaged(snapshot_.SerializeAsString());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("holders"));
}

TEST_F(RestoreTest, RefusesNodeWithoutParent) {
  snapshot_.mutable_nodes(1)->set_path("/missing/a");
  EXPECT_EQ(RestoreDamaged(snapshot_.SerializeAsString()).code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(RestoreTest, RefusesChecksumMismatch) {
  snapshot_.mutable_nodes(1)->set_content("y");
  EXPECT_EQ(RestoreDamaged(snapshot_.SerializeAsString()).code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(RestoreTest, RefusesMissingRoot) {
  snapshot_.mutable_nodes()->DeleteSubrange(0, 1);
  EXPECT_EQ(RestoreDamaged(snapshot_.SerializeAsString()).code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lockd::sessions
