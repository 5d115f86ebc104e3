// lockd::Client is the connection of an application to a lockd cell: it
// knows the cell's replicas, finds the leader, retries calls across leader
// changes and serves the calls that need no session (reads, CheckSequencer).
// State-changing calls belong to a session: see lockd/session.h.
//
// Every call returns the server's status codes (protos/lockd.proto); a call
// that keeps failing with UNAVAILABLE or ABORTED (no leader, leader change)
// is retried with capped exponential backoff and jitter until its deadline
// (ClientOptions::call_timeout) and then returns the last such status.
//
// Thread-safety: a Client is thread-safe; calls may come from any number of
// threads at once. It must outlive every Session created on it.
//
// Example:
//   lockd::ClientOptions options;
//   options.endpoints = {"127.0.0.1:7001", "127.0.0.1:7002"};
//   absl::StatusOr<std::unique_ptr<lockd::Client>> client =
//       lockd::Client::Create(options);
//   if (!client.ok()) ...
//   absl::StatusOr<lockd::v1::GetNodeResponse> node = (*client)->Get("/a");

#ifndef LOCKD_CLIENT_INCLUDE_LOCKD_CLIENT_H_
#define LOCKD_CLIENT_INCLUDE_LOCKD_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "protos/lockd.grpc.pb.h"

namespace lockd {

class Lock;
class Session;

struct ClientOptions {
  // Replica addresses ("host:port"). Required. Any replica will do: the
  // client follows the leader address a follower names and otherwise tries
  // the next endpoint.
  std::vector<std::string> endpoints;
  // How long one call keeps retrying UNAVAILABLE, ABORTED and CANCELLED (a
  // replica shutting down cancels the calls it holds) before it gives up (a
  // blocking acquire gets its wait on top).
  absl::Duration call_timeout = absl::Seconds(30);
  // Deadline of one attempt; an attempt that runs into it is retried at the
  // next endpoint (the replica may be paused or cut off).
  absl::Duration attempt_timeout = absl::Seconds(5);
  // Retry backoff: starts at initial_backoff, doubles up to max_backoff;
  // each sleep is drawn uniformly from [backoff / 2, backoff] (jitter).
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Seconds(1);
  // TLS (docs/security.md): PEM files. An empty field takes $LOCKD_CA,
  // $LOCKD_CERT or $LOCKD_KEY. With a CA every channel is TLS and each
  // replica's certificate must verify against it (and name the host
  // dialled); a certificate and key, both or neither, identify the client
  // to a cell that checks client certificates. No CA: plaintext.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
};

class Client {
 public:
  // Checks the options and reads the TLS files; connects lazily on the
  // first call. INVALID_ARGUMENT if there are no endpoints or a certificate
  // lacks its key, NOT_FOUND if a TLS file cannot be read.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }

  // --- Reads (served by the leader under its lease; no session needed).
  absl::StatusOr<v1::GetNodeResponse> Get(const std::string& path);
  absl::StatusOr<v1::StatNodeResponse> Stat(const std::string& path);
  // Child names (not paths) in byte order.
  absl::StatusOr<std::vector<std::string>> List(const std::string& path);

  // For a downstream server handed a sequencer: OK with valid == true iff
  // the sequencer's session still holds the lock in that mode, at that lock
  // generation and node instance.
  absl::StatusOr<v1::CheckSequencerResponse> CheckSequencer(
      const v1::Sequencer& sequencer);

  // Cluster.Status of the replica calls currently go to (not retried at
  // other replicas; for status displays).
  absl::StatusOr<v1::StatusResponse> Status();
  // Cluster.Status of the replica at `address` (any address, not only the
  // configured endpoints; one attempt, not retried).
  absl::StatusOr<v1::StatusResponse> StatusOf(const std::string& address);

  // Membership changes at the leader (admins only; see the Cluster service
  // in protos/lockd.proto and docs/operations.md). Each returns the
  // configuration once the change is chosen and applied; a retry of a
  // change already made returns the configuration unchanged.
  absl::StatusOr<v1::MembershipResponse> AddMember(
      uint32_t id, const std::string& address, const std::string& peer_address);
  absl::StatusOr<v1::MembershipResponse> PromoteMember(uint32_t id);
  absl::StatusOr<v1::MembershipResponse> RemoveMember(uint32_t id);
  // One chunk of a backup snapshot at the leader (Cluster.SaveSnapshot):
  // index 0 takes a new snapshot, else continue that one from `offset`.
  absl::StatusOr<v1::SaveSnapshotResponse> SaveSnapshotChunk(uint64_t index,
                                                             uint64_t offset);
  // Hands leadership to voter `to` (0: the most up-to-date one).
  absl::StatusOr<v1::TransferLeadershipResponse> TransferLeadership(
      uint32_t to);

  // Every live session of the cell with the locks it holds (read at the
  // leader). See Sessions.List in protos/lockd.proto.
  absl::StatusOr<v1::ListSessionsResponse> ListSessions();
  // Every lock held or waited for on a node under `prefix` ("/" for all),
  // with holders and waiters. See Locks.List in protos/lockd.proto.
  absl::StatusOr<v1::ListLocksResponse> ListLocks(const std::string& prefix);

  // --- Calls the library does not wrap, or requests sent exactly as given
  // (tests that replay a request number). Every call above goes through
  // Invoke, so these get the same leader finding and retries.

  // The stubs of one replica, on one channel.
  struct Endpoint {
    std::string address;  // The replica's "host:port".
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Sessions::Stub> sessions;
    std::unique_ptr<v1::Nodes::Stub> nodes;
    std::unique_ptr<v1::Locks::Stub> locks;
    std::unique_ptr<v1::Elections::Stub> elections;
    std::unique_ptr<v1::Cluster::Stub> cluster;
  };
  // One attempt of a call on `endpoint` with `context` (deadline set).
  using Attempt = std::function<grpc::Status(Endpoint&, grpc::ClientContext*)>;
  // Runs `attempt` at the replica calls currently go to, following the
  // leader and retrying UNAVAILABLE, ABORTED, CANCELLED and attempts that
  // ran into
  // attempt_timeout, until it succeeds, fails with a status that is not
  // retried, or call_timeout (+ server_wait) passes. A failure is the last
  // attempt's status, its message prefixed with `method` and the address.
  // `server_wait` is for requests the server may hold (a blocking wait): it
  // extends each attempt's deadline and the call's.
  // The attempt may run several times, at different replicas: it must clear
  // its response, and a state-changing request must carry the same
  // RequestHeader on every attempt (that makes it exactly-once). Request
  // numbers belong to a session (lockd/session.h): a header made by hand
  // for a session whose own calls also number requests collides with them.
  absl::Status Invoke(const char* method, const Attempt& attempt,
                      absl::Duration server_wait = absl::ZeroDuration());

  // The address calls currently go to (the leader, once one answered).
  std::string current_address() const;
  // Attempts that were retried so far (all calls), for reports and tests.
  uint64_t retries() const { return retries_.load(); }

 private:
  friend class Election;
  friend class ElectionObserver;
  friend class Lock;
  friend class Session;

  Client(ClientOptions options,
         std::shared_ptr<grpc::ChannelCredentials> credentials);

  // The endpoint of `address`, created on first use.
  std::shared_ptr<Endpoint> endpoint(const std::string& address);
  // Replaces `broken` if `status` shows its channel cannot connect: gRPC
  // 1.51 waits seconds before it reconnects such a channel, whatever the
  // backoff arguments say, while a restarted replica is reachable at once.
  void DropIfBroken(const std::string& address,
                    const std::shared_ptr<Endpoint>& broken,
                    const grpc::Status& status);
  // After a retryable failure of a call to `address`: moves to the leader
  // named in the trailers or to the next endpoint. Sets *sleep to false if
  // the next attempt should go out at once (a fresh leader hint, or another
  // call moved on already).
  void Redirect(const std::string& address, const grpc::ClientContext& context,
                const grpc::Status& status, bool* sleep);
  // A jittered sleep length for `backoff`.
  absl::Duration Jitter(absl::Duration backoff);

  // How long one attempt of a call the server holds may take beyond
  // attempt_timeout before it is sent again.
  static constexpr absl::Duration kMaxServerWaitPerAttempt = absl::Minutes(1);

  const ClientOptions options_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::atomic<uint64_t> retries_{0};

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Endpoint>> endpoints_
      ABSL_GUARDED_BY(mu_);
  std::string address_ ABSL_GUARDED_BY(mu_);
  uint64_t random_state_ ABSL_GUARDED_BY(mu_);
};

// A gRPC status as an absl::Status (same code and message).
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace lockd

#endif  // LOCKD_CLIENT_INCLUDE_LOCKD_CLIENT_H_
