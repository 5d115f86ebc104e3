// Restarts of a real 3-replica cell on its data directories: the whole cell
// (SIGTERM, and kill -9), and a follower that missed enough entries to need
// the leader's snapshot.

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/cell_fixture.h"

namespace lockd::integration {
namespace {

using v1::EXCLUSIVE;

class RestartTest : public CellTest {
 protected:
  // Everything the state below must still show after the restart.
  struct Written {
    v1::Sequencer lock;
    std::vector<std::string> queue;
    uint64_t epoch = 0;
    uint64_t keep_alives = 0;
  };

  // Writes nodes, a sequential queue, an ephemeral node and a lock.
  void WriteState(TestClient* c, Written* written) {
    LOCKD_ASSERT_OK(c->Create("/cfg", "hello"));
    LOCKD_ASSERT_OK(c->Set("/cfg", "world"));
    LOCKD_ASSERT_OK(c->Create("/cfg/eph", "e", /*ephemeral=*/true));
    for (int i = 0; i < 3; ++i) {
      absl::StatusOr<v1::CreateNodeResponse> item =
          c->Create("/cfg/q-", "", false, /*sequential=*/true);
      LOCKD_ASSERT_OK(item);
      written->queue.push_back(item->path());
    }
    absl::StatusOr<v1::AcquireResponse> lock =
        c->Acquire("/cfg/lock", EXCLUSIVE);
    LOCKD_ASSERT_OK(lock);
    written->lock = lock->sequencer();
    LOCKD_ASSERT_OK(c->Create("/cfg/counter", "0"));
    for (int i = 1; i <= 50; ++i) {
      LOCKD_ASSERT_OK(c->Set("/cfg/counter", absl::StrCat(i)));
    }
    written->epoch = c->last_keep_alive_epoch();
    written->keep_alives = c->keep_alive_responses();
  }

  void CheckState(TestClient* c, TestClient* other, const Written& written) {
    absl::StatusOr<v1::GetNodeResponse> cfg = other->Get("/cfg");
    LOCKD_ASSERT_OK(cfg);
    EXPECT_EQ(cfg->content(), "world");
    EXPECT_EQ(cfg->meta().content_generation(), 2u);
    absl::StatusOr<v1::GetNodeResponse> counter = other->Get("/cfg/counter");
    LOCKD_ASSERT_OK(counter);
    EXPECT_EQ(counter->content(), "50");
    EXPECT_EQ(counter->meta().content_generation(), 51u);
    absl::StatusOr<v1::StatNodeResponse> eph = other->Stat("/cfg/eph");
    LOCKD_ASSERT_OK(eph);
    EXPECT_EQ(eph->meta().ephemeral_owner(), c->session_id());
    for (const std::string& path : written.queue) {
      LOCKD_EXPECT_OK(other->Stat(path));
    }
    absl::StatusOr<v1::CheckSequencerResponse> check =
        other->CheckSequencer(written.lock);
    LOCKD_ASSERT_OK(check);
    EXPECT_TRUE(check->valid()) << check->reason();
    EXPECT_EQ(CodeOf(other->Acquire("/cfg/lock", EXCLUSIVE)),
              absl::StatusCode::kFailedPrecondition);
    // The session lives on: keep-alives reach the new leadership and the
    // session can still write.
    EXPECT_TRUE(PollUntil(
        [&] {
          return c->keep_alive_responses() > written.keep_alives &&
                 c->last_keep_alive_epoch() > written.epoch;
        },
        absl::Seconds(10)))
        << "no keep-alive answered after the restart";
    EXPECT_FALSE(c->session_lost());
    LOCKD_EXPECT_OK(c->Set("/cfg", "after restart"));
    LOCKD_EXPECT_OK(c->Release("/cfg/lock"));
  }
};

TEST_F(RestartTest, WholeCellRestartRecoversNodesSessionsAndLocks) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* c = NewClient();
  ASSERT_NE(c, nullptr);
  Written written;
  ASSERT_NO_FATAL_FAILURE(WriteState(c, &written));

  for (int id = 1; id <= cell_->size(); ++id) {
    LOCKD_EXPECT_OK(cell_->Stop(id));  // Clean shutdown: exit status 0.
  }
  for (int id = 1; id <= cell_->size(); ++id) {
    LOCKD_ASSERT_OK(cell_->StartReplica(id));
  }
  ASSERT_NE(Leader(), 0);
  TestClient* other = NewClient();
  ASSERT_NE(other, nullptr);
  CheckState(c, other, written);
}

TEST_F(RestartTest, WholeCellKilledAndRestartedKeepsAcknowledgedWrites) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* c = NewClient();
  ASSERT_NE(c, nullptr);
  Written written;
  ASSERT_NO_FATAL_FAILURE(WriteState(c, &written));

  for (int id = 1; id <= cell_->size(); ++id) {
    LOCKD_ASSERT_OK(cell_->Kill(id));
  }
  for (int id = 1; id <= cell_->size(); ++id) {
    LOCKD_ASSERT_OK(cell_->StartReplica(id));
  }
  ASSERT_NE(Leader(), 0);
  TestClient* other = NewClient();
  ASSERT_NE(other, nullptr);
  CheckState(c, other, written);
}

TEST_F(RestartTest, StoppedFollowerCatchesUpThroughSnapshotAndCanLead) {
  CellOptions options = DefaultOptions();
  options.snapshot_interval = 50;
  ASSERT_NO_FATAL_FAILURE(StartCell(options));
  const int leader = Leader();
  ASSERT_NE(leader, 0);
  const int follower = leader % cell_->size() + 1;
  TestClient* c = NewClient();
  ASSERT_NE(c, nullptr);
  LOCKD_ASSERT_OK(c->Create("/catch", "0"));

  absl::StatusOr<v1::StatusResponse> at_stop = cell_->Status(follower);
  LOCKD_ASSERT_OK(at_stop);
  LOCKD_ASSERT_OK(cell_->Stop(follower));
  constexpr int kWrites = 400;
  for (int i = 1; i <= kWrites; ++i) {
    LOCKD_ASSERT_OK(c->Set("/catch", absl::StrCat(i)));
  }
  absl::StatusOr<v1::StatusResponse> leader_status = cell_->Status(leader);
  LOCKD_ASSERT_OK(leader_status);
  // The leader compacted past what the follower has: it needs the snapshot.
  EXPECT_GT(leader_status->snapshot_index(), at_stop->applied_index())
      << leader_status->DebugString();

  LOCKD_ASSERT_OK(cell_->StartReplica(follower));
  LOCKD_ASSERT_OK(cell_->WaitForApplied(
      follower, leader_status->applied_index(), absl::Seconds(30)));
  absl::StatusOr<v1::StatusResponse> caught_up = cell_->Status(follower);
  LOCKD_ASSERT_OK(caught_up);
  EXPECT_EQ(caught_up->sessions(), leader_status->sessions());

  // Hand leadership around (stop the leader, restart it as a follower)
  // until the caught-up replica leads, then read through it.
  int current = leader;
  for (int round = 0; round < 10 && current != follower; ++round) {
    LOCKD_ASSERT_OK(cell_->Stop(current));
    std::vector<int> running = cell_->RunningReplicas();
    absl::StatusOr<int> next = cell_->WaitForLeader(absl::Seconds(30), running);
    ASSERT_TRUE(next.ok()) << next.status();
    absl::StatusOr<v1::StatusResponse> next_status = cell_->Status(*next);
    LOCKD_ASSERT_OK(next_status);
    LOCKD_ASSERT_OK(cell_->StartReplica(current));
    LOCKD_ASSERT_OK(cell_->WaitForApplied(current, next_status->applied_index(),
                                          absl::Seconds(30)));
    current = *next;
  }
  ASSERT_EQ(current, follower) << "the caught-up replica never led";
  absl::StatusOr<v1::GetNodeResponse> node = c->Get("/catch");
  LOCKD_ASSERT_OK(node);
  EXPECT_EQ(c->current_address(), cell_->address(follower));
  EXPECT_EQ(node->content(), absl::StrCat(kWrites));
  EXPECT_EQ(node->meta().content_generation(), kWrites + 1u);
  LOCKD_EXPECT_OK(c->Set("/catch", "served by the caught-up replica"));
}

}  // namespace
}  // namespace lockd::integration
