// Unit tests of the state machine's namespace: paths, nodes, metadata,
// compare-and-set, sequential and ephemeral nodes, watches and events, and
// the namespace limits. Sessions, locks, elections and determinism have their
// own files.

#include "sessions/state_machine.h"

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessions/checksum.h"
#include "tests/sessions/test_util.h"

namespace lockd::sessions {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(Crc32cTest, MatchesStandardVectors) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
}

struct BadPath {
  std::string path;
  std::string message;
};

class ValidatePathBadTest : public ::testing::TestWithParam<BadPath> {};

TEST_P(ValidatePathBadTest, IsInvalidArgumentNamingTheProblem) {
  Limits limits;
  limits.max_path_bytes = 40;
  limits.max_path_depth = 3;
  limits.max_name_bytes = 8;
  const absl::Status status = ValidatePath(GetParam().path, limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Paths, ValidatePathBadTest,
    ::testing::Values(
        BadPath{"", "not absolute"}, BadPath{"a/b", "not absolute"},
        BadPath{"/a/", "ends with"}, BadPath{"//", "ends with"},
        BadPath{"/a//b", "name is empty"}, BadPath{"/.", "not allowed"},
        BadPath{"/a/../b", "not allowed"},
        BadPath{std::string("/a\0b", 4), "NUL"}, BadPath{"/\xff", "UTF-8"},
        BadPath{"/\xc0\x80", "UTF-8"}, BadPath{"/abcdefghi", "max_name_bytes"},
        BadPath{"/a/b/c/d", "max_path_depth"},
        BadPath{"/" + std::string(40, 'a'), "max_path_bytes"}));

TEST(ValidatePathTest, AcceptsNormalizedAbsolutePaths) {
  for (const char* path : {"/", "/a", "/a/b", "/svc/db/primary", "/.a", "/a..",
                           "/\xc3\xa9t\xc3\xa9", "/with space"}) {
    EXPECT_TRUE(ValidatePath(path, Limits()).ok()) << path;
  }
}

class NodesTest : public ::testing::Test {
 protected:
  statepb::Result Run(statepb::Command command) {
    std::optional<statepb::Result> result = cell_.Run(s_, std::move(command));
    EXPECT_TRUE(result.has_value());
    return result.value_or(statepb::Result());
  }

  Cell cell_;
  const uint64_t s_ = cell_.NewSession();
};

TEST_F(NodesTest, RootAlwaysExistsAsInstanceOne) {
  auto root = cell_.sm().StatNode("/");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->meta().instance(), 1u);
  EXPECT_EQ(root->meta().content_generation(), 1u);
  EXPECT_EQ(root->meta().ephemeral_owner(), 0u);
  EXPECT_EQ(Run(CreateNodeCommand("/")).code(), kAlreadyExists);
  const statepb::Result deleted = Run(DeleteNodeCommand("/"));
  EXPECT_EQ(deleted.code(), kInvalidArgument);
  EXPECT_THAT(deleted.message(), HasSubstr("root"));
  EXPECT_TRUE(cell_.sm().StatNode("/").ok());
}

TEST_F(NodesTest, CreateSetsMetadata) {
  const statepb::Result a = Run(CreateNodeCommand("/a", "hello"));
  ASSERT_EQ(a.code(), kOk) << a.message();
  const v1::NodeMeta& meta = a.create_node().meta();
  EXPECT_EQ(meta.instance(), 2u);
  EXPECT_EQ(meta.content_generation(), 1u);
  EXPECT_EQ(meta.lock_generation(), 0u);
  EXPECT_EQ(meta.checksum(), Crc32c("hello"));
  EXPECT_EQ(meta.content_size(), 5u);
  EXPECT_EQ(meta.created_ms(), cell_.now());
  EXPECT_EQ(meta.modified_ms(), cell_.now());
  EXPECT_EQ(meta.ephemeral_owner(), 0u);
  EXPECT_EQ(meta.num_children(), 0u);

  const statepb::Result b = Run(CreateNodeCommand("/a/b"));
  ASSERT_EQ(b.code(), kOk);
  EXPECT_EQ(b.create_node().meta().instance(), 3u);
  EXPECT_EQ(cell_.sm().StatNode("/a")->meta().num_children(), 1u);
  auto got = cell_.sm().GetNode("/a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->content(), "hello");
}

TEST_F(NodesTest, CreateRefusesBadRequests) {
  EXPECT_EQ(Run(CreateNodeCommand("relative")).code(), kInvalidArgument);
  EXPECT_EQ(Run(CreateNodeCommand("/a/")).code(), kInvalidArgument);
  EXPECT_EQ(Run(CreateNodeCommand("/a/../b")).code(), kInvalidArgument);
  EXPECT_EQ(Run(CreateNodeCommand("/a//b")).code(), kInvalidArgument);
  const statepb::Result orphan = Run(CreateNodeCommand("/missing/child"));
  EXPECT_EQ(orphan.code(), kNotFound);
  EXPECT_THAT(orphan.message(), HasSubstr("/missing"));
  ASSERT_EQ(Run(CreateNodeCommand("/a")).code(), kOk);
  EXPECT_EQ(Run(CreateNodeCommand("/a")).code(), kAlreadyExists);
  const statepb::Result big = Run(CreateNodeCommand(
      "/big", std::string(Limits().max_content_bytes + 1, 'x')));
  EXPECT_EQ(big.code(), kInvalidArgument);
  EXPECT_THAT(big.message(), HasSubstr("max_content_bytes"));
  EXPECT_FALSE(cell_.sm().StatNode("/big").ok());
  EXPECT_EQ(Run(CreateNodeCommand("/exact",
                                  std::string(Limits().max_content_bytes, 'x')))
                .code(),
            kOk);
}

TEST_F(NodesTest, SetBumpsContentGenerationAndModifiedTime) {
  ASSERT_EQ(Run(CreateNodeCommand("/a", "1")).code(), kOk);
  const int64_t created = cell_.now();
  cell_.Advance(5);
  const statepb::Result set = Run(SetNodeCommand("/a", "22"));
  ASSERT_EQ(set.code(), kOk);
  EXPECT_EQ(set.set_node().meta().content_generation(), 2u);
  EXPECT_EQ(set.set_node().meta().created_ms(), created);
  EXPECT_EQ(set.set_node().meta().modified_ms(), created + 5);
  EXPECT_EQ(set.set_node().meta().checksum(), Crc32c("22"));
  EXPECT_EQ(set.set_node().meta().content_size(), 2u);
  EXPECT_EQ(Run(SetNodeCommand("/missing", "")).code(), kNotFound);
  EXPECT_EQ(Run(SetNodeCommand(
                    "/a", std::string(Limits().max_content_bytes + 1, 'x')))
                .code(),
            kInvalidArgument);
  EXPECT_EQ(cell_.sm().GetNode("/a")->content(), "22");
}

TEST_F(NodesTest, SetCompareAndSetOnContentGeneration) {
  ASSERT_EQ(Run(CreateNodeCommand("/a", "v1")).code(), kOk);
  EXPECT_EQ(Run(SetNodeCommand("/a", "v2", 1)).code(), kOk);
  const statepb::Result stale = Run(SetNodeCommand("/a", "v3", 1));
  EXPECT_EQ(stale.code(), kFailedPrecondition);
  EXPECT_THAT(stale.message(), HasSubstr("expected content generation 1"));
  EXPECT_THAT(stale.message(), HasSubstr("is at 2"));
  EXPECT_EQ(cell_.sm().GetNode("/a")->content(), "v2");
}

TEST_F(NodesTest, DeleteCompareAndSetOnContentGeneration) {
  ASSERT_EQ(Run(CreateNodeCommand("/a")).code(), kOk);
  ASSERT_EQ(Run(SetNodeCommand("/a", "x")).code(), kOk);
  const statepb::Result stale = Run(DeleteNodeCommand("/a", 1));
  EXPECT_EQ(stale.code(), kFailedPrecondition);
  EXPECT_THAT(stale.message(), HasSubstr("is at 2"));
  EXPECT_TRUE(cell_.sm().StatNode("/a").ok());
  EXPECT_EQ(Run(DeleteNodeCommand("/a", 2)).code(), kOk);
  EXPECT_EQ(cell_.sm().StatNode("/a").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Run(DeleteNodeCommand("/a")).code(), kNotFound);
}

TEST_F(NodesTest, DeleteRefusesNodeWithChildren) {
  ASSERT_EQ(Run(CreateNodeCommand("/a")).code(), kOk);
  ASSERT_EQ(Run(CreateNodeCommand("/a/b")).code(), kOk);
  const statepb::Result refused = Run(DeleteNodeCommand("/a"));
  EXPECT_EQ(refused.code(), kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("children"));
  EXPECT_EQ(Run(DeleteNodeCommand("/a/b")).code(), kOk);
  EXPECT_EQ(Run(DeleteNodeCommand("/a")).code(), kOk);
}

TEST_F(NodesTest, DeleteRefusesNodeWithHeldLock) {
  ASSERT_EQ(Run(AcquireCommand("/l", v1::SHARED)).code(), kOk);
  const statepb::Result held = Run(DeleteNodeCommand("/l"));
  EXPECT_EQ(held.code(), kFailedPrecondition);
  EXPECT_THAT(held.message(), HasSubstr("held by session"));
  ASSERT_EQ(Run(ReleaseCommand("/l")).code(), kOk);
  EXPECT_EQ(Run(DeleteNodeCommand("/l")).code(), kOk);
}

TEST_F(NodesTest, DeleteRefusesNodeWithWaitersOrInLockDelay) {
  const uint64_t holder = cell_.NewSession(/*ttl_ms=*/1000);
  const uint64_t waiter = cell_.NewSession();
  ASSERT_EQ(
      cell_.Run(holder, AcquireCommand("/l", v1::EXCLUSIVE, 0, 5000))->code(),
      kOk);
  EXPECT_FALSE(cell_.Run(waiter, AcquireCommand("/l", v1::EXCLUSIVE, 60000))
                   .has_value());
  cell_.Advance(1000);  // the holder expires: lock-delay until now + 5000
  ASSERT_EQ(cell_.sm().session_count(), 2u);
  const statepb::Result waiting = Run(DeleteNodeCommand("/l"));
  EXPECT_EQ(waiting.code(), kFailedPrecondition);
  EXPECT_THAT(waiting.message(), HasSubstr("waiters"));

  const uint64_t second_holder = cell_.NewSession(1000);
  ASSERT_EQ(
      cell_.Run(second_holder, AcquireCommand("/m", v1::EXCLUSIVE, 0, 5000))
          ->code(),
      kOk);
  cell_.Advance(1000);  // the new holder expires too
  const statepb::Result delayed = Run(DeleteNodeCommand("/m"));
  EXPECT_EQ(delayed.code(), kFailedPrecondition);
  EXPECT_THAT(delayed.message(), HasSubstr("lock-delay"));
  cell_.Advance(5000);
  EXPECT_EQ(Run(DeleteNodeCommand("/m")).code(), kOk);
}

TEST_F(NodesTest, RecreatedNodeGetsNewInstance) {
  const uint64_t first =
      Run(CreateNodeCommand("/a")).create_node().meta().instance();
  ASSERT_EQ(Run(DeleteNodeCommand("/a")).code(), kOk);
  const uint64_t second =
      Run(CreateNodeCommand("/a")).create_node().meta().instance();
  EXPECT_GT(second, first);
}

TEST_F(NodesTest, SequentialNamesUsePerParentCounter) {
  ASSERT_EQ(Run(CreateNodeCommand("/q")).code(), kOk);
  ASSERT_EQ(Run(CreateNodeCommand("/r")).code(), kOk);
  EXPECT_EQ(
      Run(CreateNodeCommand("/q/job-", "", false, true)).create_node().path(),
      "/q/job-0000000000");
  EXPECT_EQ(
      Run(CreateNodeCommand("/q/job-", "", false, true)).create_node().path(),
      "/q/job-0000000001");
  EXPECT_EQ(
      Run(CreateNodeCommand("/q/other", "", false, true)).create_node().path(),
      "/q/other0000000002");
  EXPECT_EQ(
      Run(CreateNodeCommand("/r/job-", "", false, true)).create_node().path(),
      "/r/job-0000000000");
  // A failed sequential create does not consume a number.
  EXPECT_EQ(
      Run(CreateNodeCommand("/q/x", std::string(1 << 20, 'x'), false, true))
          .code(),
      kInvalidArgument);
  EXPECT_EQ(
      Run(CreateNodeCommand("/q/x", "", false, true)).create_node().path(),
      "/q/x0000000003");
  auto children = cell_.sm().ListChildren("/q");
  ASSERT_TRUE(children.ok());
  EXPECT_THAT(children->names(), ElementsAre("job-0000000000", "job-0000000001",
                                             "other0000000002", "x0000000003"));
}

TEST_F(NodesTest, SequentialNameMustFitTheNameLimit) {
  Limits limits;
  limits.max_name_bytes = 12;
  Cell cell(limits);
  const uint64_t s = cell.NewSession();
  EXPECT_EQ(cell.Run(s, CreateNodeCommand("/ab", "", false, true))
                ->create_node()
                .path(),
            "/ab0000000000");
  const statepb::Result long_name =
      *cell.Run(s, CreateNodeCommand("/abcd", "", false, true));
  EXPECT_EQ(long_name.code(), kInvalidArgument);
  EXPECT_THAT(long_name.message(), HasSubstr("max_name_bytes"));
}

TEST_F(NodesTest, ListChildrenInByteOrder) {
  for (const char* name : {"/b", "/a", "/B", "/a0", "/\xc3\xa9"}) {
    ASSERT_EQ(Run(CreateNodeCommand(name)).code(), kOk);
  }
  auto children = cell_.sm().ListChildren("/");
  ASSERT_TRUE(children.ok());
  EXPECT_THAT(children->names(), ElementsAre("B", "a", "a0", "b", "\xc3\xa9"));
  EXPECT_EQ(cell_.sm().ListChildren("/zz").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(cell_.sm().ListChildren("zz").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cell_.sm().GetNode("/a/").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(NodesTest, EphemeralNodesCannotHaveChildren) {
  const statepb::Result e = Run(CreateNodeCommand("/e", "", true));
  ASSERT_EQ(e.code(), kOk);
  EXPECT_EQ(e.create_node().meta().ephemeral_owner(), s_);
  const statepb::Result child = Run(CreateNodeCommand("/e/c"));
  EXPECT_EQ(child.code(), kFailedPrecondition);
  EXPECT_THAT(child.message(), HasSubstr("ephemeral"));
  EXPECT_EQ(Run(AcquireCommand("/e/c", v1::EXCLUSIVE)).code(),
            kFailedPrecondition);
}

TEST_F(NodesTest, EphemeralNodesDeletedWhenSessionCloses) {
  const uint64_t watcher = cell_.NewSession();
  ASSERT_EQ(Run(CreateNodeCommand("/dir")).code(), kOk);
  ASSERT_EQ(Run(CreateNodeCommand("/dir/e", "", true)).code(), kOk);
  ASSERT_EQ(Run(CreateNodeCommand("/dir/p")).code(), kOk);
  ASSERT_EQ(cell_.Run(watcher, WatchCommand("/dir"))->code(), kOk);
  ASSERT_EQ(cell_.Run(watcher, WatchCommand("/dir/e"))->code(), kOk);
  ApplyResult applied;
  ASSERT_EQ(cell_.Run(s_, CloseSessionCommand(), nullptr, &applied)->code(),
            kOk);
  EXPECT_THAT(applied.ended_sessions, ElementsAre(s_));
  EXPECT_THAT(applied.sessions_with_events, ElementsAre(watcher));
  EXPECT_FALSE(cell_.sm().StatNode("/dir/e").ok());
  EXPECT_TRUE(cell_.sm().StatNode("/dir/p").ok());
  const std::vector<v1::Event> events = cell_.sm().PendingEvents(watcher, 0);
  EXPECT_THAT(EventTypes(events),
              ElementsAre(v1::Event::NODE_DELETED, v1::Event::CHILD_REMOVED));
  EXPECT_EQ(events[0].path(), "/dir/e");
  EXPECT_EQ(events[1].path(), "/dir/e");
}

TEST_F(NodesTest, WatchDeliversNodeEventsNumberedFromOne) {
  const uint64_t w = cell_.NewSession();
  ASSERT_EQ(Run(CreateNodeCommand("/a")).code(), kOk);
  ASSERT_EQ(cell_.Run(w, WatchCommand("/a"))->code(), kOk);
  ApplyResult applied;
  ASSERT_EQ(cell_.Run(s_, SetNodeCommand("/a", "x"), nullptr, &applied)->code(),
            kOk);
  EXPECT_THAT(applied.sessions_with_events, ElementsAre(w));
  ASSERT_EQ(Run(CreateNodeCommand("/a/b")).code(), kOk);
  ASSERT_EQ(Run(DeleteNodeCommand("/a/b")).code(), kOk);
  ASSERT_EQ(Run(DeleteNodeCommand("/a")).code(), kOk);
  const std::vector<v1::Event> events = cell_.sm().PendingEvents(w, 0);
  EXPECT_THAT(EventTypes(events),
              ElementsAre(v1::Event::CONTENT_CHANGED, v1::Event::CHILD_ADDED,
                          v1::Event::CHILD_REMOVED, v1::Event::NODE_DELETED));
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), i + 1);
    EXPECT_EQ(events[i].time_ms(), cell_.now());
  }
  EXPECT_EQ(events[0].path(), "/a");
  EXPECT_EQ(events[1].path(), "/a/b");
  EXPECT_EQ(events[2].path(), "/a/b");
  EXPECT_EQ(events[3].path(), "/a");
  EXPECT_THAT(EventTypes(cell_.sm().PendingEvents(w, 2)),
              ElementsAre(v1::Event::CHILD_REMOVED, v1::Event::NODE_DELETED));
  // The watch ended with the node: a recreated node is not watched.
  ASSERT_EQ(Run(CreateNodeCommand("/a")).code(), kOk);
  ASSERT_EQ(Run(SetNodeCommand("/a", "y")).code(), kOk);
  EXPECT_EQ(cell_.sm().PendingEvents(w, 0).size(), 4u);
  EXPECT_EQ(cell_.sm().EventsLost(w), 0u);
}

TEST_F(NodesTest, WatchRemoveStopsEvents) {
  const uint64_t w = cell_.NewSession();
  ASSERT_EQ(Run(CreateNodeCommand("/a")).code(), kOk);
  ASSERT_EQ(cell_.Run(w, WatchCommand("/a"))->code(), kOk);
  ASSERT_EQ(cell_.Run(w, WatchCommand("/a"))->code(), kOk);  // idempotent
  ASSERT_EQ(Run(SetNodeCommand("/a", "1")).code(), kOk);
  EXPECT_EQ(cell_.sm().PendingEvents(w, 0).size(), 1u);
  ASSERT_EQ(cell_.Run(w, WatchCommand("/a", /*remove=*/true))->code(), kOk);
  ASSERT_EQ(Run(SetNodeCommand("/a", "2")).code(), kOk);
  EXPECT_EQ(cell_.sm().PendingEvents(w, 0).size(), 1u);
  EXPECT_EQ(cell_.Run(w, WatchCommand("/missing"))->code(), kNotFound);
  EXPECT_EQ(cell_.Run(w, WatchCommand("/missing", true))->code(), kOk);
  EXPECT_EQ(cell_.Run(w, WatchCommand("bad"))->code(), kInvalidArgument);
}

TEST_F(NodesTest, RenewAcknowledgesEvents) {
  const uint64_t w = cell_.NewSession();
  ASSERT_EQ(Run(CreateNodeCommand("/a")).code(), kOk);
  ASSERT_EQ(cell_.Run(w, WatchCommand("/a"))->code(), kOk);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(Run(SetNodeCommand("/a", "x")).code(), kOk);
  cell_.Renew(w, 2);
  const std::vector<v1::Event> events = cell_.sm().PendingEvents(w, 0);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].sequence(), 3u);
  ASSERT_EQ(Run(SetNodeCommand("/a", "x")).code(), kOk);
  EXPECT_EQ(cell_.sm().PendingEvents(w, 0).back().sequence(), 4u);
}

TEST(EventLimitTest, OverflowDropsOldestAndCountsLost) {
  Limits limits;
  limits.max_events_per_session = 3;
  Cell cell(limits);
  const uint64_t s = cell.NewSession();
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/a"))->code(), kOk);
  ASSERT_EQ(cell.Run(s, WatchCommand("/a"))->code(), kOk);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(cell.Run(s, SetNodeCommand("/a", std::to_string(i)))->code(),
              kOk);
  }
  const std::vector<v1::Event> events = cell.sm().PendingEvents(s, 0);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].sequence(), 3u);
  EXPECT_EQ(events[2].sequence(), 5u);
  EXPECT_EQ(cell.sm().EventsLost(s), 2u);
}

TEST(NamespaceLimitTest, MaxNodes) {
  Limits limits;
  limits.max_nodes = 3;  // the root and two more
  Cell cell(limits);
  const uint64_t s = cell.NewSession();
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/a"))->code(), kOk);
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/b"))->code(), kOk);
  const statepb::Result full = *cell.Run(s, CreateNodeCommand("/c"));
  EXPECT_EQ(full.code(), kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("max_nodes"));
  EXPECT_EQ(cell.Run(s, AcquireCommand("/c", v1::EXCLUSIVE))->code(),
            kResourceExhausted);
  ASSERT_EQ(cell.Run(s, DeleteNodeCommand("/b"))->code(), kOk);
  EXPECT_EQ(cell.Run(s, CreateNodeCommand("/c"))->code(), kOk);
}

TEST(NamespaceLimitTest, MaxChildrenPerNode) {
  Limits limits;
  limits.max_children_per_node = 2;
  Cell cell(limits);
  const uint64_t s = cell.NewSession();
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/a"))->code(), kOk);
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/a/1"))->code(), kOk);
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/a/2"))->code(), kOk);
  const statepb::Result full = *cell.Run(s, CreateNodeCommand("/a/3"));
  EXPECT_EQ(full.code(), kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("max_children_per_node"));
}

TEST(NamespaceLimitTest, MaxEphemeralNodesPerSession) {
  Limits limits;
  limits.max_ephemeral_nodes_per_session = 1;
  Cell cell(limits);
  const uint64_t s = cell.NewSession();
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/e1", "", true))->code(), kOk);
  const statepb::Result full = *cell.Run(s, CreateNodeCommand("/e2", "", true));
  EXPECT_EQ(full.code(), kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("max_ephemeral_nodes_per_session"));
  EXPECT_EQ(cell.Run(s, CreateNodeCommand("/p"))->code(), kOk);
  EXPECT_EQ(
      cell.Run(cell.NewSession(), CreateNodeCommand("/e2", "", true))->code(),
      kOk);
}

TEST(NamespaceLimitTest, MaxWatchesPerSession) {
  Limits limits;
  limits.max_watches_per_session = 1;
  Cell cell(limits);
  const uint64_t s = cell.NewSession();
  ASSERT_EQ(cell.Run(s, CreateNodeCommand("/a"))->code(), kOk);
  ASSERT_EQ(cell.Run(s, WatchCommand("/a"))->code(), kOk);
  const statepb::Result full = *cell.Run(s, WatchCommand("/"));
  EXPECT_EQ(full.code(), kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("max_watches_per_session"));
  ASSERT_EQ(cell.Run(s, WatchCommand("/a", true))->code(), kOk);
  EXPECT_EQ(cell.Run(s, WatchCommand("/"))->code(), kOk);
}

}  // namespace
}  // namespace lockd::sessions
