// ACLs in the state machine: each right denies and allows exactly as
// docs/security.md says, names are inherited on creation, and snapshots
// keep them.

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessions/state_machine.h"
#include "tests/sessions/test_util.h"

namespace lockd::sessions {
namespace {

using ::testing::HasSubstr;

Access As(const std::string& principal) { return {principal, false}; }

// /data guarded by readers (alice, bob), writers (alice) and admins (root);
// set up by an admin.
class AclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cell_.set_access({"operator", true});
    session_ = cell_.NewSession();
    for (const auto& [path, content] :
         {std::pair<std::string, std::string>{"/acl", ""},
          {"/acl/readers", "alice bob"},
          {"/acl/writers", "alice\n"},
          {"/acl/admins", "root"},
          {"/data", "v1"}}) {
      ASSERT_EQ(Run(CreateNodeCommand(path, content)).code(), kOk) << path;
    }
    const statepb::Result set =
        Run(SetAclCommand("/data", "readers", "writers", "admins"));
    ASSERT_EQ(set.code(), kOk) << set.message();
    EXPECT_EQ(set.set_acl().meta().acl_generation(), 2u);
  }

  statepb::Result Run(statepb::Command command) {
    return *cell_.Run(session_, std::move(command));
  }
  statepb::Result RunAs(const std::string& principal,
                        statepb::Command command) {
    cell_.set_access(As(principal));
    return Run(std::move(command));
  }
  absl::StatusCode Check(const std::string& principal, const std::string& path,
                         Right right) {
    return cell_.sm().CheckAccess(path, right, As(principal)).code();
  }

  Cell cell_;
  uint64_t session_ = 0;
};

TEST_F(AclTest, ReadRight) {
  EXPECT_EQ(Check("alice", "/data", Right::kRead), absl::StatusCode::kOk);
  EXPECT_EQ(Check("bob", "/data", Right::kRead), absl::StatusCode::kOk);
  const absl::Status mallory =
      cell_.sm().CheckAccess("/data", Right::kRead, As("mallory"));
  EXPECT_EQ(mallory.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(mallory.message(),
            "principal \"mallory\" lacks the read right on \"/data\": its "
            "read ACL is \"readers\", and /acl/readers does not list it");
  EXPECT_THAT(
      std::string(
          cell_.sm().CheckAccess("/data", Right::kRead, As("")).message()),
      HasSubstr("an anonymous client (no client certificate)"));
  // Watch needs read.
  EXPECT_EQ(RunAs("mallory", WatchCommand("/data")).code(), kPermissionDenied);
  EXPECT_EQ(RunAs("bob", WatchCommand("/data")).code(), kOk);
}

TEST_F(AclTest, WriteRight) {
  const statepb::Result denied = RunAs("bob", SetNodeCommand("/data", "v2"));
  EXPECT_EQ(denied.code(), kPermissionDenied);
  EXPECT_THAT(denied.message(),
              HasSubstr("lacks the write right on \"/data\""));
  EXPECT_EQ(cell_.sm().GetNode("/data")->content(), "v1");
  EXPECT_EQ(RunAs("bob", CreateNodeCommand("/data/b")).code(),
            kPermissionDenied);
  EXPECT_EQ(RunAs("bob", AcquireCommand("/data", v1::EXCLUSIVE)).code(),
            kPermissionDenied);
  EXPECT_EQ(RunAs("bob", DeleteNodeCommand("/data")).code(), kPermissionDenied);
  EXPECT_TRUE(cell_.sm().StatNode("/data").ok());

  EXPECT_EQ(RunAs("alice", SetNodeCommand("/data", "v2")).code(), kOk);
  const statepb::Result child = RunAs("alice", CreateNodeCommand("/data/a"));
  ASSERT_EQ(child.code(), kOk) << child.message();
  // A new node inherits its parent's names.
  const v1::NodeMeta& meta = child.create_node().meta();
  EXPECT_EQ(meta.read_acl(), "readers");
  EXPECT_EQ(meta.write_acl(), "writers");
  EXPECT_EQ(meta.change_acl(), "admins");
  EXPECT_EQ(meta.acl_generation(), 1u);
  // A lock on a node that does not exist yet needs write where it would be
  // created.
  EXPECT_EQ(RunAs("bob", AcquireCommand("/data/new", v1::EXCLUSIVE)).code(),
            kPermissionDenied);
  EXPECT_EQ(RunAs("alice", AcquireCommand("/data/new", v1::EXCLUSIVE)).code(),
            kOk);
}

TEST_F(AclTest, ChangeAclRight) {
  EXPECT_EQ(RunAs("alice", SetAclCommand("/data", "", "", "")).code(),
            kPermissionDenied);
  const statepb::Result stale =
      RunAs("root", SetAclCommand("/data", "", "writers", "admins", 1));
  EXPECT_EQ(stale.code(), kFailedPrecondition);
  EXPECT_THAT(stale.message(), HasSubstr("ACL generation of \"/data\" is 2"));
  const statepb::Result opened =
      RunAs("root", SetAclCommand("/data", "", "writers", "admins", 2));
  ASSERT_EQ(opened.code(), kOk) << opened.message();
  EXPECT_EQ(opened.set_acl().meta().acl_generation(), 3u);
  EXPECT_EQ(Check("mallory", "/data", Right::kRead), absl::StatusCode::kOk);
  EXPECT_EQ(RunAs("root", SetAclCommand("/data", "", "no/such", "")).code(),
            kInvalidArgument);
}

TEST_F(AclTest, MissingAclNodeDeniesAndStarGrantsEveryone) {
  ASSERT_EQ(RunAs("root", SetAclCommand("/data", "everyone", "ghost", "admins"))
                .code(),
            kOk);
  EXPECT_THAT(std::string(cell_.sm()
                              .CheckAccess("/data", Right::kWrite, As("alice"))
                              .message()),
              HasSubstr("/acl/ghost does not exist"));
  EXPECT_EQ(Check("", "/data", Right::kRead),
            absl::StatusCode::kPermissionDenied);
  cell_.set_access({"operator", true});
  ASSERT_EQ(Run(CreateNodeCommand("/acl/everyone", "*")).code(), kOk);
  EXPECT_EQ(Check("", "/data", Right::kRead), absl::StatusCode::kOk);
}

TEST_F(AclTest, ElectionsNeedWriteOnTheirNode) {
  cell_.set_access({"operator", true});
  ASSERT_EQ(Run(CreateNodeCommand("/election")).code(), kOk);
  ASSERT_EQ(Run(SetAclCommand("/election", "", "writers", "admins")).code(),
            kOk);
  EXPECT_EQ(RunAs("bob", CampaignCommand("e", "bob")).code(),
            kPermissionDenied);
  EXPECT_EQ(RunAs("alice", CampaignCommand("e", "alice")).code(), kOk);
  EXPECT_EQ(RunAs("alice", ProclaimCommand("e", "alice-2")).code(), kOk);
}

TEST_F(AclTest, AnAdminHasEveryRight) {
  for (Right right : {Right::kRead, Right::kWrite, Right::kChangeAcl}) {
    EXPECT_TRUE(cell_.sm().CheckAccess("/data", right, {"anyone", true}).ok());
  }
}

TEST_F(AclTest, SnapshotsKeepTheNames) {
  StateMachine restored;
  ASSERT_TRUE(restored.Restore(cell_.sm().Snapshot()).ok());
  EXPECT_EQ(restored.Snapshot(), cell_.sm().Snapshot());
  EXPECT_EQ(restored.CheckAccess("/data", Right::kWrite, As("bob")).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(restored.CheckAccess("/data", Right::kWrite, As("alice")).ok());
  EXPECT_EQ(restored.StatNode("/data")->meta().acl_generation(), 2u);
}

}  // namespace
}  // namespace lockd::sessions
