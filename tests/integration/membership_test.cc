// Membership changes on a real cell: a replica is added under a new id as a
// learner, catches up, is promoted, and an old one removed, while the cell
// keeps serving; the leader hands over on SIGTERM and before its own
// removal; a replica with a lost data directory is refused, and retired ids
// never return.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lockd/client.h"
#include "tests/integration/cell_fixture.h"
#include "tests/integration/process.h"

namespace lockd::integration {
namespace {

class MembershipTest : public CellTest {
 protected:
  // A library client (admin: the cell checks no client certificates) that
  // knows every replica the harness started, removed ones included.
  std::unique_ptr<lockd::Client> Admin() {
    lockd::ClientOptions options;
    options.endpoints = cell_->addresses();
    absl::StatusOr<std::unique_ptr<lockd::Client>> client =
        lockd::Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // Polls replica `id` until it has applied at least what `leader` had
  // committed when asked.
  void WaitCaughtUp(int id, int leader) {
    absl::StatusOr<v1::StatusResponse> status = cell_->Status(leader);
    ASSERT_TRUE(status.ok()) << status.status();
    LOCKD_ASSERT_OK(
        cell_->WaitForApplied(id, status->commit_index(), absl::Seconds(30)));
  }

  static std::string Roles(const v1::MembershipResponse& membership) {
    std::vector<std::string> roles;
    for (const v1::Member& member : membership.members()) {
      roles.push_back(
          absl::StrCat(member.id(), member.voter() ? "" : " (learner)"));
    }
    return absl::StrJoin(roles, ",");
  }
};

TEST_F(MembershipTest, AReplicaIsReplacedWhileTheCellServes) {
  CellOptions options = DefaultOptions();
  // Snapshots early, so that the new replica starts from one.
  options.snapshot_interval = 20;
  ASSERT_NO_FATAL_FAILURE(StartCell(options));
  TestClient* client = NewClient();
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 50; ++i) {
    LOCKD_ASSERT_OK(client->Create(absl::StrCat("/before-", i), "v"));
  }
  LOCKD_ASSERT_OK(client->Acquire("/before-0", v1::EXCLUSIVE));
  std::unique_ptr<lockd::Client> admin = Admin();
  ASSERT_NE(admin, nullptr);

  absl::StatusOr<int> added = cell_->AddReplica();
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_EQ(*added, 4);
  LOCKD_ASSERT_OK(cell_->StartReplica(4));
  absl::StatusOr<v1::MembershipResponse> membership =
      admin->AddMember(4, cell_->address(4), cell_->peer_address(4));
  ASSERT_TRUE(membership.ok()) << membership.status();
  EXPECT_EQ(Roles(*membership), "1,2,3,4 (learner)");
  // A retry of the same change answers the same configuration.
  membership = admin->AddMember(4, cell_->address(4), cell_->peer_address(4));
  ASSERT_TRUE(membership.ok()) << membership.status();
  EXPECT_EQ(Roles(*membership), "1,2,3,4 (learner)");

  int leader = Leader();
  ASSERT_NO_FATAL_FAILURE(WaitCaughtUp(4, leader));
  membership = admin->PromoteMember(4);
  ASSERT_TRUE(membership.ok()) << membership.status();
  EXPECT_EQ(Roles(*membership), "1,2,3,4");

  // Replace a follower: remove it, then stop it.
  const int removed = leader == 2 ? 3 : 2;
  membership = admin->RemoveMember(removed);
  ASSERT_TRUE(membership.ok()) << membership.status();
  EXPECT_THAT(membership->retired_ids(), ::testing::ElementsAre(removed));
  LOCKD_ASSERT_OK(cell_->Kill(removed));
  // Its id never returns.
  absl::StatusOr<v1::MembershipResponse> again = admin->AddMember(
      removed, cell_->address(removed), cell_->peer_address(removed));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kInvalidArgument)
      << again.status();
  EXPECT_TRUE(absl::StrContains(again.status().message(), "new id"))
      << again.status();

  // Everything written before is there, and the lock still held.
  for (int i = 0; i < 50; ++i) {
    LOCKD_EXPECT_OK(client->Get(absl::StrCat("/before-", i)));
  }
  LOCKD_EXPECT_OK(client->Set("/before-1", "after"));
  EXPECT_FALSE(client->session_lost());

  // The new configuration survives the loss of its leader: 2 of 3 remain.
  leader = Leader();
  LOCKD_ASSERT_OK(cell_->Kill(leader));
  std::vector<int> survivors;
  for (int id : {1, 2, 3, 4}) {
    if (id != leader && id != removed) survivors.push_back(id);
  }
  const int next = Leader(absl::Seconds(20), survivors);
  ASSERT_NE(next, 0);
  LOCKD_EXPECT_OK(client->Set("/before-2", "after failover"));
  absl::StatusOr<v1::StatusResponse> status = cell_->Status(next);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->members_size(), 3);
}

TEST_F(MembershipTest, RemovingTheLeaderHandsLeadershipOverFirst) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* client = NewClient();
  ASSERT_NE(client, nullptr);
  LOCKD_ASSERT_OK(client->Create("/kept", "v"));
  const int leader = Leader();
  std::unique_ptr<lockd::Client> admin = Admin();
  ASSERT_NE(admin, nullptr);
  absl::StatusOr<v1::MembershipResponse> membership =
      admin->RemoveMember(leader);
  ASSERT_TRUE(membership.ok()) << membership.status();
  EXPECT_EQ(membership->members_size(), 2);
  EXPECT_TRUE(absl::StrContains(cell_->LogTail(leader, 400),
                                "hands leadership at ballot"))
      << cell_->LogTail(leader, 40);
  std::vector<int> others;
  for (int id : {1, 2, 3}) {
    if (id != leader) others.push_back(id);
  }
  const int next = Leader(absl::Seconds(20), others);
  ASSERT_NE(next, 0);
  EXPECT_NE(next, leader);
  LOCKD_EXPECT_OK(client->Get("/kept"));
  // The removed replica still runs but never leads again.
  absl::StatusOr<v1::StatusResponse> old = cell_->Status(leader);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_NE(old->role(), "leader");
}

TEST_F(MembershipTest, SigtermOnTheLeaderHandsOver) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* client = NewClient();
  ASSERT_NE(client, nullptr);
  LOCKD_ASSERT_OK(client->Create("/x", "1"));
  const int leader = Leader();
  LOCKD_ASSERT_OK(cell_->Stop(leader));
  const std::string log = cell_->LogTail(leader, 60);
  EXPECT_TRUE(absl::StrContains(log, "handed leadership to replica")) << log;
  std::vector<int> others;
  for (int id : {1, 2, 3}) {
    if (id != leader) others.push_back(id);
  }
  const int next = Leader(absl::Seconds(20), others);
  ASSERT_NE(next, 0);
  EXPECT_TRUE(absl::StrContains(cell_->LogTail(next, 400),
                                "which handed leadership over"))
      << cell_->LogTail(next, 40);
  LOCKD_EXPECT_OK(client->Set("/x", "2"));
  EXPECT_FALSE(client->session_lost());
}

TEST_F(MembershipTest, AReplicaThatLostItsDataIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  const int victim = leader == 1 ? 2 : 1;
  LOCKD_ASSERT_OK(cell_->Kill(victim));
  const std::string data =
      absl::StrCat(cell_->directory(), "/replica-", victim);
  std::filesystem::remove_all(data);
  ProcessOptions process;
  process.argv = {LOCKD_BINARY, absl::StrCat("--id=", victim),
                  absl::StrCat("--members=", cell_->members_flag()),
                  absl::StrCat("--data_dir=", data)};
  process.output_path = absl::StrCat(cell_->directory(), "/refused.out");
  const ProcessResult result = RunToExit(process, absl::Seconds(20));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_TRUE(absl::StrContains(
      result.output, absl::StrCat("must not come back as member ", victim)))
      << result.output;
  EXPECT_TRUE(absl::StrContains(result.output, "lockctl member remove"))
      << result.output;
}

}  // namespace
}  // namespace lockd::integration
