// TLS on a real cell, with certificates the test makes (`dev certs`): TLS
// clients are served and plaintext ones refused, and a peer without the
// cell CA's certificate, or with a certificate naming another member than
// the one it claims to be, cannot disturb the cell.

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "lockd/client.h"
#include "lockd/lock.h"
#include "lockd/session.h"
#include "protos/peer.grpc.pb.h"
#include "tests/integration/cell_fixture.h"
#include "tests/integration/peer_messages.h"
#include "tests/integration/process.h"

namespace lockd::integration {
namespace {

class TlsTest : public CellTest {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/tls-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    // The cell's CA signs replicas 1-3, a ninth "replica" outside the
    // membership and the client alice; another CA signs an impostor of
    // replica 2.
    LOCKD_ASSERT_OK(MakeCertificates(dir_ + "/cell", {1, 2, 3, 9}, {"alice"}));
    LOCKD_ASSERT_OK(MakeCertificates(dir_ + "/other", {2}, {"mallory"}));
    CellOptions options = DefaultOptions();
    options.tls_dir = dir_ + "/cell";
    ASSERT_NO_FATAL_FAILURE(StartCell(options));
  }

  std::string Cert(const std::string& name) const {
    return dir_ + "/" + name + ".pem";
  }
  std::string Key(const std::string& name) const {
    return dir_ + "/" + name + ".key";
  }

  // A mutual-TLS channel to replica `id`'s peer port presenting `name`'s
  // certificate and verifying the replica against `ca`.
  std::shared_ptr<grpc::Channel> PeerChannel(int id, const std::string& ca,
                                             const std::string& name) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadWholeFile(ca);
    ssl.pem_cert_chain = ReadWholeFile(Cert(name));
    ssl.pem_private_key = ReadWholeFile(Key(name));
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride(absl::StrCat("lockd-replica-", id));
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(cell_->peer_address(id),
                                     grpc::SslCredentials(ssl), args);
  }

  std::string dir_;
};

TEST_F(TlsTest, TlsClientsAreServedAndPlaintextOnesRefused) {
  ClientOptions options;
  options.endpoints = cell_->addresses();
  lockd::ClientOptions library;
  library.endpoints = cell_->addresses();
  library.tls_ca_file = cell_->CaFile();
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(library);
  LOCKD_ASSERT_OK(client);
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::Create(client->get(), SessionOptions());
  LOCKD_ASSERT_OK(session);
  LOCKD_EXPECT_OK((*session)->CreateNode("/over-tls", "x"));

  // With alice's certificate too (the cell accepts client certificates of
  // its CA).
  library.tls_cert_file = Cert("cell/client-alice");
  library.tls_key_file = Key("cell/client-alice");
  absl::StatusOr<std::unique_ptr<Client>> alice = Client::Create(library);
  LOCKD_ASSERT_OK(alice);
  absl::StatusOr<v1::GetNodeResponse> read = (*alice)->Get("/over-tls");
  LOCKD_ASSERT_OK(read);
  EXPECT_EQ(read->content(), "x");

  const int leader = Leader();
  auto call = [&](std::shared_ptr<grpc::Channel> channel) {
    auto stub = v1::Cluster::NewStub(std::move(channel));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(3)));
    v1::StatusResponse response;
    return stub->Status(&context, v1::StatusRequest(), &response);
  };
  // Plaintext, a client that trusts another CA, and a certificate of
  // another CA: all refused during the handshake.
  EXPECT_EQ(call(NewChannel(cell_->address(leader))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(call(NewChannel(cell_->address(leader), dir_ + "/other/ca.pem"))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(call(NewChannel(cell_->address(leader), cell_->CaFile(),
                            Cert("other/client-mallory"),
                            Key("other/client-mallory")))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(call(NewChannel(cell_->address(leader), cell_->CaFile())).ok());
}

TEST_F(TlsTest, PeersWithoutTheRightCertificateCannotDisturbTheCell) {
  const int leader = Leader();
  ASSERT_NE(leader, 0);
  absl::StatusOr<v1::StatusResponse> before = cell_->Status(leader);
  LOCKD_ASSERT_OK(before);
  for (int id = 1; id <= cell_->size(); ++id) {
    const uint32_t other = id == 1 ? 2 : 1;
    // Plaintext: no TLS handshake, no stream.
    EXPECT_FALSE(SendPeerMessage(NewChannel(cell_->peer_address(id)),
                                 HugePrepare(other, id))
                     .ok());
    // A certificate of another CA claiming to be a member: the handshake
    // fails.
    EXPECT_FALSE(
        SendPeerMessage(PeerChannel(id, cell_->CaFile(), "other/replica-2"),
                        HugePrepare(other, id))
            .ok());
    // Certificates of the cell's CA that name someone else than the member
    // the messages claim: the stream is accepted, its messages refused.
    EXPECT_TRUE(
        SendPeerMessage(PeerChannel(id, cell_->CaFile(), "cell/replica-9"),
                        HugePrepare(other, id))
            .ok());
    EXPECT_TRUE(
        SendPeerMessage(PeerChannel(id, cell_->CaFile(), "cell/client-alice"),
                        HugePrepare(other, id))
            .ok());
    const int third = 6 - id - other;
    EXPECT_TRUE(
        SendPeerMessage(PeerChannel(id, cell_->CaFile(),
                                    absl::StrCat("cell/replica-", third)),
                        HugePrepare(other, id))
            .ok());
  }
  // Had any replica taken one of the Prepares, it would have promised the
  // huge ballot and the leader would lose its majority within an election
  // timeout.
  absl::SleepFor(3 * cell_->election_timeout());
  absl::StatusOr<v1::StatusResponse> after = cell_->Status(leader);
  LOCKD_ASSERT_OK(after);
  EXPECT_EQ(after->epoch(), before->epoch());
  EXPECT_EQ(after->role(), "leader");
  EXPECT_TRUE(after->has_lease());
  for (int id = 1; id <= cell_->size(); ++id) {
    EXPECT_TRUE(
        absl::StrContains(cell_->LogTail(id, 400), "its certificate names"))
        << cell_->LogTail(id, 20);
  }
}

// A cell that enforces ACLs: client certificates of its CA name the
// principals; root is the operator.
class AclCellTest : public TlsTest {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/acl-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    LOCKD_ASSERT_OK(
        MakeCertificates(dir_ + "/cell", {1, 2, 3}, {"alice", "bob", "root"}));
    CellOptions options = DefaultOptions();
    options.tls_dir = dir_ + "/cell";
    options.extra_flags = {"--admin_principals=root"};
    // Snapshots every few entries, so that restarts restore ACLs from one.
    options.snapshot_interval = 5;
    ASSERT_NO_FATAL_FAILURE(StartCell(options));
    for (const char* name : {"alice", "bob", "root", ""}) {
      ASSERT_NO_FATAL_FAILURE(Connect(name));
    }
  }

  // A client (and session) presenting `name`'s certificate; "" for none.
  void Connect(const std::string& name) {
    lockd::ClientOptions options;
    options.endpoints = cell_->addresses();
    options.tls_ca_file = cell_->CaFile();
    if (!name.empty()) {
      options.tls_cert_file = Cert("cell/client-" + name);
      options.tls_key_file = Key("cell/client-" + name);
    }
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    LOCKD_ASSERT_OK(client);
    absl::StatusOr<std::unique_ptr<Session>> session =
        Session::Create(client->get(), SessionOptions());
    LOCKD_ASSERT_OK(session);
    sessions_[name] = *std::move(session);
    clients_by_name_[name] = *std::move(client);
  }

  Session& As(const std::string& name) { return *sessions_.at(name); }
  Client& ClientOf(const std::string& name) {
    return *clients_by_name_.at(name);
  }

  // Every right denies and allows as docs/security.md says.
  void ExpectTheRules(const std::string& when) {
    SCOPED_TRACE(when);
    auto expect_denied = [](const absl::Status& status,
                            const std::string& what) {
      EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
      EXPECT_TRUE(absl::StrContains(status.message(), what)) << status;
    };
    // Read.
    LOCKD_EXPECT_OK(ClientOf("bob").Get("/data"));
    expect_denied(ClientOf("").Get("/data").status(),
                  "an anonymous client (no client certificate) lacks the read "
                  "right on \"/data\"");
    // Write.
    expect_denied(As("bob").SetNode("/data", "by bob").status(),
                  "principal \"bob\" lacks the write right on \"/data\": "
                  "its write ACL is \"writers\", and /acl/writers does not "
                  "list it");
    expect_denied(As("bob").CreateNode("/data/bob").status(), "write right");
    LOCKD_EXPECT_OK(As("alice").SetNode("/data", "by alice " + when));
    absl::StatusOr<v1::GetNodeResponse> data = ClientOf("root").Get("/data");
    LOCKD_ASSERT_OK(data);
    EXPECT_EQ(data->content(), "by alice " + when);
    // Locks and elections need write.
    absl::StatusOr<std::unique_ptr<Lock>> bob_lock =
        Lock::TryAcquire(&As("bob"), "/data/lock", v1::EXCLUSIVE);
    expect_denied(bob_lock.status(), "write right");
    absl::StatusOr<std::unique_ptr<Lock>> alice_lock =
        Lock::TryAcquire(&As("alice"), "/data/lock", v1::EXCLUSIVE);
    LOCKD_EXPECT_OK(alice_lock);
    if (alice_lock.ok()) {
      LOCKD_EXPECT_OK((*alice_lock)->Release());
    }
    // Change-ACL.
    expect_denied(
        As("alice").SetAcl("/data", {"", "writers", "admins"}).status(),
        "lacks the change-ACL right on \"/data\"");
    // Listings need the operator.
    expect_denied(ClientOf("alice").ListSessions().status(),
                  "listing sessions needs an operator principal");
    expect_denied(ClientOf("bob").ListLocks("/").status(),
                  "listing locks needs an operator principal");
    LOCKD_EXPECT_OK(ClientOf("root").ListSessions());
  }

  std::map<std::string, std::unique_ptr<Client>> clients_by_name_;
  std::map<std::string, std::unique_ptr<Session>> sessions_;
};

TEST_F(AclCellTest, EveryRightHoldsAcrossFailoverAndSnapshotRestore) {
  Session& root = As("root");
  for (const auto& [path, content] :
       {std::pair<std::string, std::string>{"/acl", ""},
        {"/acl/readers", "alice bob"},
        {"/acl/writers", "alice"},
        {"/acl/admins", "root"},
        {"/data", "v1"}}) {
    LOCKD_ASSERT_OK(root.CreateNode(path, content));
  }
  absl::StatusOr<v1::NodeMeta> set =
      root.SetAcl("/data", {"readers", "writers", "admins"});
  LOCKD_ASSERT_OK(set);
  EXPECT_EQ(set->acl_generation(), 2u);
  ASSERT_NO_FATAL_FAILURE(ExpectTheRules("at first"));

  LOCKD_ASSERT_OK(cell_->Kill(Leader()));
  ASSERT_NE(Leader(), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectTheRules("after a failover"));

  // Every replica restarts from its snapshot (taken every 5 entries).
  for (int id = 1; id <= cell_->size(); ++id) {
    absl::StatusOr<v1::StatusResponse> status = cell_->Status(id);
    if (status.ok()) {  // (not the replica killed above)
      EXPECT_GT(status->snapshot_index(), 0u) << "replica " << id;
    }
    LOCKD_ASSERT_OK(cell_->Restart(id, /*kill=*/true));
  }
  ASSERT_NE(Leader(), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectTheRules("after a restart from snapshots"));
}

// Runs lockd with `args` until it exits; its exit status and output.
std::pair<int, std::string> RunLockd(const std::vector<std::string>& args) {
  ProcessOptions process;
  process.argv = {LOCKD_BINARY};
  process.argv.insert(process.argv.end(), args.begin(), args.end());
  process.output_path =
      absl::StrCat(::testing::TempDir(), "/security-out-", getpid());
  ProcessResult result = RunToExit(process, absl::Seconds(20));
  return {result.exit_code, result.output};
}

TEST(InsecureFlagTest, PlaintextBeyondLoopbackNeedsInsecure) {
  const std::string data = ::testing::TempDir() + "/insecure-data";
  const std::vector<std::string> base = {"--id=1",
                                         "--members=1@127.0.0.1:1/127.0.0.1:2",
                                         "--data_dir=" + data, "--bootstrap"};
  std::vector<std::string> args = base;
  args.push_back("--listen=0.0.0.0:0");
  auto [code, output] = RunLockd(args);
  EXPECT_EQ(code, 2) << output;
  EXPECT_TRUE(
      absl::StrContains(output, "refusing to listen on 0.0.0.0:0 without TLS"))
      << output;
  EXPECT_TRUE(absl::StrContains(output, "--insecure")) << output;

  args = base;
  args.push_back("--tls_cert=/nonexistent.pem");
  std::tie(code, output) = RunLockd(args);
  EXPECT_EQ(code, 2) << output;
  EXPECT_TRUE(absl::StrContains(output, "--tls_ca, --tls_cert and --tls_key"))
      << output;

  args = base;
  for (const char* flag : {"--tls_ca", "--tls_cert", "--tls_key"}) {
    args.push_back(absl::StrCat(flag, "=/nonexistent.pem"));
  }
  std::tie(code, output) = RunLockd(args);
  EXPECT_EQ(code, 2) << output;
  EXPECT_TRUE(absl::StrContains(
      output, "--tls_ca=/nonexistent.pem: cannot read the PEM file"))
      << output;
}

}  // namespace
}  // namespace lockd::integration
