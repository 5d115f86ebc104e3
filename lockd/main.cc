// lockd: one replica of a lockd cell. See README.md and docs/server.md.

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "lockd/admin_http.h"
#include "lockd/crc32c.h"
#include "lockd/leveldb_storage.h"
#include "lockd/metrics.h"
#include "lockd/peer_transport.h"
#include "lockd/replica_loop.h"
#include "lockd/services.h"
#include "lockd/tls.h"
#include "paxos/ballot.h"
#include "paxos/membership.h"

ABSL_FLAG(uint32_t, id, 0, "This replica's id (one of --members).");
ABSL_FLAG(std::string, members, "",
          "Every replica of the cell as id@client_host:port/peer_host:port, "
          "comma separated, e.g. 1@127.0.0.1:7001/127.0.0.1:7101,"
          "2@127.0.0.1:7002/127.0.0.1:7102,3@127.0.0.1:7003/127.0.0.1:7103. "
          "The same list on every replica. Clients use the first address, "
          "the other replicas the second (Paxos never travels on the client "
          "port). It founds the cell (--bootstrap) or names whom a joining "
          "replica learns from (--join); afterwards the membership lives in "
          "the replicated log and changes with `lockctl member`.");
ABSL_FLAG(std::string, data_dir, "",
          "Directory of this replica's durable state (created if missing).");
ABSL_FLAG(bool, bootstrap, false,
          "Start a new cell: with an empty --data_dir, this replica becomes a "
          "member of the cell --members describes. Give it to every replica "
          "of a new cell; ignored once the data directory holds state. "
          "Never give it to a replica whose data was lost: it would come back "
          "with forgotten promises (docs/operations.md).");
ABSL_FLAG(std::string, restore, "",
          "Found a NEW cell from a backup made by `lockctl snapshot save`: "
          "with an empty --data_dir, this replica starts from the backup's "
          "state as a member of the cell --members describes. Give every "
          "replica of the new cell the same file and --members. The new cell "
          "gets an identity of its own, so its replicas never take messages "
          "from the cell the backup came from. Ignored once the data "
          "directory holds state.");
ABSL_FLAG(bool, join, false,
          "Join a running cell under a new id, with an empty --data_dir: "
          "--members lists the cell's replicas and this one (for its own "
          "addresses). Then add it with `lockctl member add` and promote it "
          "once it has caught up.");
ABSL_FLAG(std::string, listen, "",
          "Address to accept clients on; default: this replica's client "
          "address in --members. Use 0.0.0.0:PORT to accept clients on every "
          "interface.");
ABSL_FLAG(std::string, peer_listen, "",
          "Address to accept peers on; default: this replica's peer address "
          "in --members.");
ABSL_FLAG(int32_t, tick_ms, 10, "Length of one Paxos tick in milliseconds.");
ABSL_FLAG(int32_t, heartbeat_ticks, 5, "Leader heartbeat interval in ticks.");
ABSL_FLAG(int32_t, election_ticks, 30,
          "A follower that hears no leader for a random time in "
          "[election_ticks, 2 * election_ticks) ticks starts an election.");
ABSL_FLAG(int32_t, lease_ticks, 0,
          "Leader lease in ticks (at most election_ticks); 0 means "
          "election_ticks.");
ABSL_FLAG(int32_t, max_drift_ticks, 3,
          "Allowance in ticks for clock rate differences over one lease.");
ABSL_FLAG(uint64_t, snapshot_interval, 10000,
          "Applied log entries between two snapshots of the state machine "
          "(the log below a snapshot is deleted).");
ABSL_FLAG(int32_t, checkpoint_interval_ms, 500,
          "How often the leader records the keep-alives it answered in the "
          "log (one entry for all sessions).");
ABSL_FLAG(uint64_t, max_request_bytes, 256 << 10,
          "Largest client request accepted; larger ones get "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int32_t, max_keepalive_streams, 20000,
          "KeepAlive streams open at once; more are refused with "
          "RESOURCE_EXHAUSTED (clients with many sessions use one stream in "
          "the batch form).");
ABSL_FLAG(uint64_t, max_message_bytes, 64 << 20,
          "Largest Paxos message between replicas (see paxos/config.h).");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the cell CA. With --tls_cert and --tls_key: TLS on the "
          "client port and mutual TLS between replicas, whose certificates "
          "the CA signs and which name lockd-replica-ID (docs/security.md).");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file of this replica's certificate (chain), presented to "
          "clients and peers.");
ABSL_FLAG(std::string, tls_key, "", "PEM file of --tls_cert's private key.");
ABSL_FLAG(std::string, client_ca, "",
          "PEM file of the CA of client certificates (optional, needs TLS). "
          "Clients may then present a certificate; one that does not verify "
          "is refused.");
ABSL_FLAG(std::vector<std::string>, admin_principals, {},
          "Comma-separated client identities (certificate DNS SAN or CN) "
          "that have every right and may list sessions and locks. ACLs are "
          "enforced only with --client_ca; without it everyone is an admin "
          "(docs/security.md).");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port of the HTTP port for operators: Prometheus /metrics, "
          "/healthz, /readyz and a status page at / (docs/operations.md). "
          "Empty: off. It serves no secrets and needs no TLS; expose it to "
          "your monitoring only.");
ABSL_FLAG(bool, insecure, false,
          "Allow plaintext on addresses other than loopback. Without it, "
          "lockd refuses to listen beyond 127.0.0.1 without TLS.");

namespace lockd {
namespace {

constexpr char kMembersExample[] =
    "--members=1@127.0.0.1:7001/127.0.0.1:7101,"
    "2@127.0.0.1:7002/127.0.0.1:7102,3@127.0.0.1:7003/127.0.0.1:7103";

// Every member's client and peer address, by id.
struct Members {
  std::map<uint32_t, std::string> client;
  std::map<uint32_t, std::string> peer;
};

absl::StatusOr<Members> ParseMembers(const std::string& text) {
  Members members;
  std::set<std::string> addresses;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<std::string> parts =
        absl::StrSplit(item, absl::MaxSplits('@', 1));
    uint32_t id = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &id) || id == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--members: '", item,
                       "' is not id@client_host:port/peer_host:port with id "
                       ">= 1, e.g. ",
                       kMembersExample));
    }
    std::vector<std::string> both = absl::StrSplit(parts[1], '/');
    if (both.size() != 2 || both[0].empty() || both[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--members: '", item,
          "' needs a client and a peer address, as "
          "id@client_host:port/peer_host:port (peers never share the client "
          "port), e.g. ",
          kMembersExample));
    }
    if (!members.client.emplace(id, both[0]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--members: id ", id, " appears twice"));
    }
    members.peer.emplace(id, both[1]);
    for (const std::string& address : both) {
      if (!addresses.insert(address).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("--members: address ", address,
                         " appears twice; every replica "
                         "needs a client and a peer address of its own"));
      }
    }
  }
  if (members.client.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--members is required, e.g. ", kMembersExample));
  }
  return members;
}

// A stable 64-bit identity derived from `seed` (CRC32C twice, salted).
uint64_t CellIdOf(absl::string_view seed) {
  const std::string salted = absl::StrCat("lockd cell ", seed);
  return (uint64_t{crc32c::Value(seed.data(), seed.size())} << 32) |
         crc32c::Value(salted.data(), salted.size());
}

// The members in id order, whatever order --members listed them in: the
// seed of a new cell's identity, the same on every founding replica.
std::string CanonicalMembers(const Members& members) {
  std::string canonical;
  for (const auto& [id, client] : members.client) {
    absl::StrAppend(&canonical, id, "@", client, "/", members.peer.at(id), ",");
  }
  return canonical;
}

absl::StatusOr<ReplicaNodeOptions> OptionsFromFlags(const Members& members) {
  ReplicaNodeOptions options;
  options.addresses = members.client;
  paxos::Config& config = options.paxos;
  config.id = absl::GetFlag(FLAGS_id);
  if (options.addresses.count(config.id) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--id=", config.id, " is not one of --members (",
                     absl::GetFlag(FLAGS_members), ")"));
  }
  config.join = absl::GetFlag(FLAGS_join);
  config.initial_membership.set_cell_id(CellIdOf(CanonicalMembers(members)));
  for (const auto& [id, address] : options.addresses) {
    if (config.join && id == config.id) continue;
    config.members.push_back(id);
    paxospb::Member* member = config.initial_membership.add_members();
    member->set_id(id);
    member->set_client_address(address);
    member->set_peer_address(members.peer.at(id));
    member->set_voter(true);
  }
  config.heartbeat_ticks = absl::GetFlag(FLAGS_heartbeat_ticks);
  config.election_ticks = absl::GetFlag(FLAGS_election_ticks);
  const int lease_ticks = absl::GetFlag(FLAGS_lease_ticks);
  config.lease_ticks = lease_ticks == 0 ? config.election_ticks : lease_ticks;
  config.max_drift_ticks = absl::GetFlag(FLAGS_max_drift_ticks);
  config.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  config.random_seed = absl::ToUnixNanos(absl::Now()) ^ config.id;
  if (absl::Status valid = config.Validate(); !valid.ok()) return valid;
  if (absl::GetFlag(FLAGS_tick_ms) <= 0) {
    return absl::InvalidArgumentError("--tick_ms must be positive");
  }
  options.tick_ms = absl::GetFlag(FLAGS_tick_ms);
  options.snapshot_interval = absl::GetFlag(FLAGS_snapshot_interval);
  if (options.snapshot_interval == 0) {
    return absl::InvalidArgumentError("--snapshot_interval must be positive");
  }
  if (absl::GetFlag(FLAGS_checkpoint_interval_ms) <= 0) {
    return absl::InvalidArgumentError(
        "--checkpoint_interval_ms must be positive");
  }
  const int checkpoint_ms = absl::GetFlag(FLAGS_checkpoint_interval_ms);
  options.checkpoint_ticks =
      std::max<int>(1, checkpoint_ms / static_cast<int>(options.tick_ms));
  if (2 * checkpoint_ms > options.limits.min_ttl_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--checkpoint_interval_ms must be at most half the shortest session "
        "TTL (",
        options.limits.min_ttl_ms, " ms)"));
  }
  return options;
}

// Writes the durable state of a replica of a new cell founded from the
// backup in `file`: the backup's state as a snapshot at its index, the
// configuration from `config` under a new cell identity, and a promise
// floor above the backup's epoch (the state machine refuses commands of
// older epochs).
absl::Status RestoreBackup(const std::string& file,
                           const std::string& members_text,
                           paxos::Config& config, const std::string& data_dir) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read it: ", std::strerror(errno)));
  }
  v1::Backup backup;
  if (!backup.ParseFromIstream(&in) || backup.format() != "lockd-backup-1") {
    return absl::InvalidArgumentError(
        "not a lockd backup (made by `lockctl snapshot save`)");
  }
  const v1::BackupHeader& header = backup.header();
  const uint32_t crc =
      crc32c::Value(backup.state().data(), backup.state().size());
  if (backup.state().size() != header.size_bytes() || crc != header.crc32c()) {
    return absl::DataLossError(absl::StrFormat(
        "the state is damaged: %d bytes with CRC32C %08x, the header says %d "
        "bytes with %08x",
        backup.state().size(), crc, header.size_bytes(), header.crc32c()));
  }
  paxospb::Membership membership = config.InitialMembership();
  membership.set_cell_id(
      CellIdOf(absl::StrCat(members_text, " restored from ", header.cell_id(),
                            " at ", header.index(), " crc ", header.crc32c())));
  config.initial_membership = membership;
  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage =
      LevelDbStorage::Open(data_dir + "/paxos");
  if (!storage.ok()) return storage.status();
  paxos::PersistBatch batch;
  paxospb::HardState hard_state;
  *hard_state.mutable_promised() = paxos::MakeBallot(header.epoch() / 65536, 0);
  hard_state.set_commit(header.index());
  *hard_state.mutable_initial_membership() = membership;
  batch.hard_state = std::move(hard_state);
  paxospb::Snapshot snapshot;
  snapshot.set_index(header.index());
  snapshot.set_data(backup.state());
  *snapshot.mutable_membership() = membership;
  batch.snapshot = std::move(snapshot);
  if (absl::Status saved = (*storage)->Save(batch); !saved.ok()) return saved;
  LOG(INFO) << "restored " << file << ": the state at log index "
            << header.index() << " of cell " << header.cell_id()
            << ", as new cell " << membership.cell_id();
  return absl::OkStatus();
}

// A leader asked to stop hands leadership to the most up-to-date voter and
// stays an acceptor until a new leader is known (or `timeout`), so the cell
// is without a leader for about one round trip instead of an election
// timeout.
void HandOverBeforeExit(ReplicaLoop* loop, uint32_t self,
                        absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Notification answered;
  absl::StatusOr<uint32_t> target = absl::UnknownError("no answer");
  loop->HandOver(0, [&](absl::StatusOr<uint32_t> result) {
    target = std::move(result);
    answered.Notify();
  });
  if (!answered.WaitForNotificationWithTimeout(timeout) || !target.ok()) {
    if (answered.HasBeenNotified() &&
        target.status().code() != absl::StatusCode::kUnavailable) {
      LOG(WARNING) << "not handing leadership over: " << target.status();
    }
    return;
  }
  LOG(INFO) << "handed leadership to replica " << *target;
  while (absl::Now() < deadline) {
    absl::Notification inspected;
    uint32_t leader = 0;
    loop->Inspect(
        [&leader](const sessions::StateMachine&,
                  const paxos::Replica& replica) {
          leader = replica.LeaderHint();
          return absl::OkStatus();
        },
        [&inspected](absl::Status) { inspected.Notify(); });
    inspected.WaitForNotificationWithTimeout(deadline - absl::Now());
    if (inspected.HasBeenNotified() && leader != 0 && leader != self) {
      LOG(INFO) << "replica " << leader << " leads; stopping";
      return;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

int Run() {
  absl::StatusOr<Members> members = ParseMembers(absl::GetFlag(FLAGS_members));
  if (!members.ok()) {
    std::cerr << "lockd: " << members.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<ReplicaNodeOptions> options = OptionsFromFlags(*members);
  if (!options.ok()) {
    std::cerr << "lockd: " << options.status().message() << "\n";
    return 2;
  }
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) {
    std::cerr << "lockd: --data_dir is required\n";
    return 2;
  }
  std::error_code error;
  std::filesystem::create_directories(data_dir, error);
  if (error) {
    std::cerr << "lockd: cannot create --data_dir " << data_dir << ": "
              << error.message() << "\n";
    return 1;
  }
  const uint32_t id = options->paxos.id;
  const bool has_state =
      std::filesystem::exists(data_dir + "/paxos/CURRENT", error);
  const std::string restore = absl::GetFlag(FLAGS_restore);
  if (!has_state && !absl::GetFlag(FLAGS_bootstrap) &&
      !absl::GetFlag(FLAGS_join) && restore.empty()) {
    std::cerr
        << "lockd: " << data_dir
        << " holds no replica state. If this is a new cell, start each of "
           "its replicas once with --bootstrap. If this replica lost its "
           "data, it must not come back as member "
        << id
        << " (it forgot what it promised): remove it (lockctl member remove "
        << id
        << "), then start a replica under a new id with --join and add it "
           "(lockctl member add); see docs/operations.md\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_join) &&
      (absl::GetFlag(FLAGS_bootstrap) || !restore.empty())) {
    std::cerr << "lockd: --bootstrap and --restore start a new cell and "
                 "--join enters a running one; give one of them\n";
    return 2;
  }
  if (!restore.empty() && !has_state) {
    if (absl::Status restored = RestoreBackup(
            restore, CanonicalMembers(*members), options->paxos, data_dir);
        !restored.ok()) {
      std::cerr << "lockd: --restore=" << restore << ": " << restored.message()
                << "\n";
      return 2;
    }
  } else if (!restore.empty()) {
    LOG(WARNING) << "--restore ignored: " << data_dir << " holds state already";
  }
  std::string listen = absl::GetFlag(FLAGS_listen);
  if (listen.empty()) listen = options->addresses.at(id);
  std::string peer_listen = absl::GetFlag(FLAGS_peer_listen);
  if (peer_listen.empty()) peer_listen = members->peer.at(id);

  absl::StatusOr<std::optional<TlsConfig>> tls =
      LoadTls({absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
               absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_client_ca)});
  if (!tls.ok()) {
    std::cerr << "lockd: " << tls.status().message() << "\n";
    return 2;
  }
  if (!tls->has_value()) {
    for (const std::string& address : {listen, peer_listen}) {
      if (IsLoopbackAddress(address)) continue;
      if (!absl::GetFlag(FLAGS_insecure)) {
        std::cerr << "lockd: refusing to listen on " << address
                  << " without TLS: give --tls_ca, --tls_cert and --tls_key "
                     "(docs/security.md), or --insecure to accept plaintext "
                     "from the network\n";
        return 2;
      }
      LOG(WARNING) << "--insecure: plaintext on " << address
                   << "; anyone who reaches it can act as a client or a peer";
    }
  }
  const TlsConfig* tls_config = tls->has_value() ? &**tls : nullptr;

  // Signals are taken by sigwait() below, so no thread may handle them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<LevelDbStorage>> storage =
      LevelDbStorage::Open(data_dir + "/paxos");
  if (!storage.ok()) {
    LOG(ERROR) << "cannot open storage: " << storage.status();
    return 1;
  }
  PeerTransport transport(id, members->peer, options->paxos.max_message_bytes,
                          tls_config);
  Metrics metrics;
  const size_t max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  absl::StatusOr<std::unique_ptr<ReplicaLoop>> loop =
      ReplicaLoop::Create(*options, absl::Milliseconds(options->tick_ms),
                          *std::move(storage), &transport, &metrics);
  if (!loop.ok()) {
    LOG(ERROR) << "cannot start replica " << id << ": " << loop.status();
    return 1;
  }

  PeerServer::Options peer_options;
  peer_options.listen = peer_listen;
  peer_options.self = id;
  peer_options.members = std::set<uint32_t>(options->paxos.members.begin(),
                                            options->paxos.members.end());
  peer_options.max_message_bytes = options->paxos.max_message_bytes;
  peer_options.tls = *tls;
  absl::StatusOr<std::unique_ptr<PeerServer>> peer_server = PeerServer::Start(
      peer_options, [loop = loop->get()](paxospb::Message message) {
        loop->Deliver(std::move(message));
      });
  if (!peer_server.ok()) {
    LOG(ERROR) << peer_server.status().message();
    return 1;
  }
  if (absl::GetFlag(FLAGS_max_keepalive_streams) <= 0) {
    std::cerr << "lockd: --max_keepalive_streams must be positive\n";
    return 2;
  }
  const std::vector<std::string> admins = absl::GetFlag(FLAGS_admin_principals);
  const bool enforce_acls =
      tls_config != nullptr && !tls_config->client_ca_pem.empty();
  if (!admins.empty() && !enforce_acls) {
    std::cerr << "lockd: --admin_principals needs --client_ca (without "
                 "client certificates there are no principals)\n";
    return 2;
  }
  const AccessPolicy policy(
      enforce_acls, std::set<std::string>(admins.begin(), admins.end()));
  SessionsService sessions_service(loop->get(), max_request_bytes,
                                   absl::GetFlag(FLAGS_max_keepalive_streams),
                                   &policy);
  NodesService nodes_service(loop->get(), max_request_bytes, &policy);
  LocksService locks_service(loop->get(), max_request_bytes, &policy);
  ElectionsService elections_service(loop->get(), max_request_bytes, &policy);
  ClusterService cluster_service(loop->get(), &policy);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen, ClientPortCredentials(tls_config),
                           &bound_port);
  // Requests a little over the limit still reach the services, which
  // refuse them with a message naming the flag; far larger ones are
  // refused by gRPC before they are parsed.
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<uint64_t>(max_request_bytes + (64 << 10), INT32_MAX)));
  builder.RegisterService(&sessions_service);
  builder.RegisterService(&nodes_service);
  builder.RegisterService(&locks_service);
  builder.RegisterService(&elections_service);
  builder.RegisterService(&cluster_service);
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(metrics.NewInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    LOG(ERROR) << "cannot listen on " << listen
               << " (in use, or not a host:port)";
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  (*loop)->SetServingCallback(
      [health](bool serving) { health->SetServingStatus(serving); });
  // The replicated configuration decides whom this replica talks to.
  (*loop)->SetMembershipObserver([&transport, peer_server = peer_server->get(),
                                  id](const paxospb::Membership& membership) {
    std::map<uint32_t, std::string> peers;
    std::set<uint32_t> ids;
    for (const paxospb::Member& member : membership.members()) {
      ids.insert(member.id());
      if (!member.peer_address().empty()) {
        peers[member.id()] = member.peer_address();
      }
    }
    LOG(INFO) << "replica " << id << ": cell members "
              << paxos::MembershipString(membership);
    transport.SetMembers(peers);
    peer_server->SetMembers(std::move(ids));
  });
  (*loop)->Start();
  std::unique_ptr<AdminHttpServer> admin_http;
  if (const std::string address = absl::GetFlag(FLAGS_metrics_address);
      !address.empty()) {
    absl::StatusOr<std::unique_ptr<AdminHttpServer>> started =
        AdminHttpServer::Start(address, loop->get(), &metrics, [&transport] {
          return transport.QueuedBytes();
        });
    if (!started.ok()) {
      LOG(ERROR) << started.status().message();
      (*loop)->Stop();
      return 1;
    }
    admin_http = *std::move(started);
    LOG(INFO) << "metrics, health and status page on " << address << " (port "
              << admin_http->port() << ")";
  }
  LOG(INFO) << "lockd replica " << id << " listening on " << listen
            << " for clients and " << peer_listen << " for peers ("
            << (tls_config == nullptr ? "plaintext" : "TLS") << "), data in "
            << data_dir;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LOG(INFO) << "signal " << signal_number << ": shutting down";
  HandOverBeforeExit(loop->get(), id, absl::Seconds(2));
  admin_http.reset();
  (*loop)->Drain();
  (*peer_server)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  (*loop)->Stop();
  transport.Stop();
  LOG(INFO) << "lockd replica " << id << " stopped";
  return 0;
}

}  // namespace
}  // namespace lockd

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "One replica of a lockd cell.\n"
      "  lockd --id=1 --members=1@127.0.0.1:7001/127.0.0.1:7101,"
      "2@127.0.0.1:7002/127.0.0.1:7102,3@127.0.0.1:7003/127.0.0.1:7103 "
      "--data_dir=DIR");
  // --help lists the flags of this file; Abseil looks only in a file named
  // after the program (lockd.cc) unless told otherwise.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "lockd/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  // Debian builds Abseil without NDEBUG, so absl::Mutex checks every lock
  // order in a global graph by default; gRPC's own locks are absl::Mutex,
  // and under thousands of connections the check took a sixth of the
  // leader's CPU (docs/benchmarks.md, "Session load").
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return lockd::Run();
}
