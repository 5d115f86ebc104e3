// The peer listener on a real cell: Paxos travels only on the peer port,
// never on the client port, and messages from outside the membership are
// refused before they reach the Paxos core.

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "protos/peer.grpc.pb.h"
#include "tests/integration/cell_fixture.h"
#include "tests/integration/peer_messages.h"
#include "tests/integration/process.h"

namespace lockd::integration {
namespace {

class PeerTest : public CellTest {};

TEST_F(PeerTest, ClientPortRefusesPaxos) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  ASSERT_NE(leader, 0);
  absl::StatusOr<v1::StatusResponse> before = cell_->Status(leader);
  LOCKD_ASSERT_OK(before);
  for (int id = 1; id <= cell_->size(); ++id) {
    const uint32_t other = id == 1 ? 2 : 1;
    const grpc::Status status =
        SendPeerMessage(NewChannel(cell_->address(id)), HugePrepare(other, id));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED)
        << "replica " << id << "'s client port: " << status.error_message();
  }
  absl::StatusOr<v1::StatusResponse> after = cell_->Status(leader);
  LOCKD_ASSERT_OK(after);
  EXPECT_EQ(after->epoch(), before->epoch());
  EXPECT_EQ(after->role(), "leader");
}

TEST_F(PeerTest, PeerPortServesNoPublicApi) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  auto stub = v1::Cluster::NewStub(NewChannel(cell_->peer_address(1)));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::StatusResponse response;
  const grpc::Status status =
      stub->Status(&context, v1::StatusRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED)
      << status.error_message();
}

TEST_F(PeerTest, MessagesFromOutsideTheMembershipAreRefused) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  ASSERT_NE(leader, 0);
  absl::StatusOr<v1::StatusResponse> before = cell_->Status(leader);
  LOCKD_ASSERT_OK(before);
  for (int id = 1; id <= cell_->size(); ++id) {
    // From an id that is no member, and from a member to the wrong replica.
    EXPECT_TRUE(SendPeerMessage(NewChannel(cell_->peer_address(id)),
                                HugePrepare(99, id))
                    .ok());
    const uint32_t wrong_target = id % cell_->size() + 1;
    EXPECT_TRUE(SendPeerMessage(NewChannel(cell_->peer_address(id)),
                                HugePrepare(wrong_target, wrong_target))
                    .ok());
  }
  // Had any replica taken either Prepare, it would have promised the huge
  // ballot and the leader would lose its majority within an election
  // timeout.
  absl::SleepFor(3 * cell_->election_timeout());
  absl::StatusOr<v1::StatusResponse> after = cell_->Status(leader);
  LOCKD_ASSERT_OK(after);
  EXPECT_EQ(after->epoch(), before->epoch());
  EXPECT_EQ(after->role(), "leader");
  EXPECT_TRUE(after->has_lease());
  for (int id = 1; id <= cell_->size(); ++id) {
    EXPECT_TRUE(absl::StrContains(cell_->LogTail(id, 200),
                                  "refused a peer message from 99"))
        << cell_->LogTail(id, 20);
  }
}

// Runs lockd with `args` and returns its exit status and output.
std::pair<int, std::string> RunLockdWith(std::vector<std::string> args,
                                         const std::string& dir) {
  ProcessOptions process;
  process.argv = {LOCKD_BINARY};
  process.argv.insert(process.argv.end(), args.begin(), args.end());
  // Test binaries run in parallel and share the temporary directory.
  process.output_path = absl::StrCat(dir, "/lockd-out-", getpid());
  ProcessResult result = RunToExit(process, absl::Seconds(20));
  return {result.exit_code, result.output};
}

std::pair<int, std::string> RunLockd(const std::string& members,
                                     const std::string& dir) {
  return RunLockdWith(
      {"--id=1", "--members=" + members, "--data_dir=" + dir + "/data"}, dir);
}

TEST(LockdFlagsTest, HelpListsEveryFlag) {
  auto [code, output] = RunLockdWith({"--help"}, ::testing::TempDir());
  for (const char* flag :
       {"--members", "--peer_listen", "--data_dir", "--election_ticks",
        "--max_keepalive_streams", "--max_request_bytes", "--tls_ca",
        "--tls_cert", "--tls_key", "--client_ca", "--admin_principals",
        "--insecure", "--bootstrap", "--join", "--restore",
        "--metrics_address"}) {
    EXPECT_TRUE(absl::StrContains(output, flag)) << flag << "\n" << output;
  }
  EXPECT_FALSE(absl::StrContains(output, "No flags matched")) << output;
}

TEST(PeerFlagsTest, MembersNeedAPeerAddressOfTheirOwn) {
  const std::string dir = ::testing::TempDir();
  {
    auto [code, output] = RunLockd("1@127.0.0.1:7001", dir);
    EXPECT_EQ(code, 2) << output;
    EXPECT_TRUE(absl::StrContains(output, "needs a client and a peer address"))
        << output;
  }
  {
    auto [code, output] = RunLockd("1@127.0.0.1:7001/127.0.0.1:7001", dir);
    EXPECT_EQ(code, 2) << output;
    EXPECT_TRUE(absl::StrContains(output, "appears twice")) << output;
  }
}

}  // namespace
}  // namespace lockd::integration
