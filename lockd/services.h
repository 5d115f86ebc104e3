#ifndef LOCKD_SERVICES_H_
#define LOCKD_SERVICES_H_

#include <atomic>
#include <cstddef>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lockd/replica_loop.h"
#include "protos/lockd.grpc.pb.h"
#include "sessions/state_machine.h"

namespace lockd {

// Who may do what (docs/security.md). With ACLs enforced (the client port
// verifies client certificates), a call's principal is its certificate's
// identity and only `admins` skip the ACLs; otherwise every caller is an
// admin, as in a cell without TLS.
class AccessPolicy {
 public:
  AccessPolicy(bool enforce, std::set<std::string> admins)
      : enforce_(enforce), admins_(std::move(admins)) {}

  sessions::Access AccessOf(grpc::CallbackServerContext* context) const;
  // OK for an admin; else PERMISSION_DENIED naming `what` and the caller.
  absl::Status RequireAdmin(const sessions::Access& access,
                            absl::string_view what) const;

 private:
  const bool enforce_;
  const std::set<std::string> admins_;
};

// The public lockd.v1 services: each call becomes a command submitted to
// the replica loop or a read run there under the leader lease. Callback
// (reactor) API throughout: a parked blocking acquire or an open KeepAlive
// stream holds no thread.
//
// Requests larger than `max_request_bytes` are refused with
// RESOURCE_EXHAUSTED before anything is proposed. Every call is checked
// against `policy` (which must outlive the service): commands carry the
// caller's principal into the log, reads check the read right first, and
// the operator listings need an admin.

class SessionsService : public v1::Sessions::CallbackService {
 public:
  // At most `max_keep_alive_streams` KeepAlive streams are open at once;
  // more are refused with RESOURCE_EXHAUSTED (docs/server.md, "Limits").
  SessionsService(ReplicaLoop* loop, size_t max_request_bytes,
                  int max_keep_alive_streams, const AccessPolicy* policy)
      : loop_(loop),
        max_request_bytes_(max_request_bytes),
        max_keep_alive_streams_(max_keep_alive_streams),
        policy_(policy) {}

  grpc::ServerUnaryReactor* CreateSession(
      grpc::CallbackServerContext* context,
      const v1::CreateSessionRequest* request,
      v1::CreateSessionResponse* response) override;
  grpc::ServerBidiReactor<v1::KeepAliveRequest, v1::KeepAliveResponse>*
  KeepAlive(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* CloseSession(
      grpc::CallbackServerContext* context,
      const v1::CloseSessionRequest* request,
      v1::CloseSessionResponse* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const v1::ListSessionsRequest* request,
                                 v1::ListSessionsResponse* response) override;

 private:
  ReplicaLoop* const loop_;
  const size_t max_request_bytes_;
  const int max_keep_alive_streams_;
  const AccessPolicy* const policy_;
  std::atomic<int> keep_alive_streams_{0};
};

class NodesService : public v1::Nodes::CallbackService {
 public:
  NodesService(ReplicaLoop* loop, size_t max_request_bytes,
               const AccessPolicy* policy)
      : loop_(loop), max_request_bytes_(max_request_bytes), policy_(policy) {}

  grpc::ServerUnaryReactor* Create(grpc::CallbackServerContext* context,
                                   const v1::CreateNodeRequest* request,
                                   v1::CreateNodeResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const v1::GetNodeRequest* request,
                                v1::GetNodeResponse* response) override;
  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* context,
                                const v1::SetNodeRequest* request,
                                v1::SetNodeResponse* response) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* context,
                                   const v1::DeleteNodeRequest* request,
                                   v1::DeleteNodeResponse* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const v1::ListChildrenRequest* request,
                                 v1::ListChildrenResponse* response) override;
  grpc::ServerUnaryReactor* Stat(grpc::CallbackServerContext* context,
                                 const v1::StatNodeRequest* request,
                                 v1::StatNodeResponse* response) override;
  grpc::ServerUnaryReactor* Watch(grpc::CallbackServerContext* context,
                                  const v1::WatchRequest* request,
                                  v1::WatchResponse* response) override;
  grpc::ServerUnaryReactor* SetAcl(grpc::CallbackServerContext* context,
                                   const v1::SetAclRequest* request,
                                   v1::SetAclResponse* response) override;

 private:
  ReplicaLoop* const loop_;
  const size_t max_request_bytes_;
  const AccessPolicy* const policy_;
};

class LocksService : public v1::Locks::CallbackService {
 public:
  LocksService(ReplicaLoop* loop, size_t max_request_bytes,
               const AccessPolicy* policy)
      : loop_(loop), max_request_bytes_(max_request_bytes), policy_(policy) {}

  grpc::ServerUnaryReactor* Acquire(grpc::CallbackServerContext* context,
                                    const v1::AcquireRequest* request,
                                    v1::AcquireResponse* response) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) override;
  grpc::ServerUnaryReactor* CheckSequencer(
      grpc::CallbackServerContext* context,
      const v1::CheckSequencerRequest* request,
      v1::CheckSequencerResponse* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context,
                                 const v1::ListLocksRequest* request,
                                 v1::ListLocksResponse* response) override;

 private:
  ReplicaLoop* const loop_;
  const size_t max_request_bytes_;
  const AccessPolicy* const policy_;
};

class ElectionsService : public v1::Elections::CallbackService {
 public:
  ElectionsService(ReplicaLoop* loop, size_t max_request_bytes,
                   const AccessPolicy* policy)
      : loop_(loop), max_request_bytes_(max_request_bytes), policy_(policy) {}

  grpc::ServerUnaryReactor* Campaign(grpc::CallbackServerContext* context,
                                     const v1::CampaignRequest* request,
                                     v1::CampaignResponse* response) override;
  grpc::ServerUnaryReactor* Proclaim(grpc::CallbackServerContext* context,
                                     const v1::ProclaimRequest* request,
                                     v1::ProclaimResponse* response) override;
  grpc::ServerUnaryReactor* Leader(grpc::CallbackServerContext* context,
                                   const v1::GetLeaderRequest* request,
                                   v1::GetLeaderResponse* response) override;
  grpc::ServerWriteReactor<v1::GetLeaderResponse>* Observe(
      grpc::CallbackServerContext* context,
      const v1::ObserveRequest* request) override;
  grpc::ServerUnaryReactor* Resign(grpc::CallbackServerContext* context,
                                   const v1::ResignRequest* request,
                                   v1::ResignResponse* response) override;

 private:
  ReplicaLoop* const loop_;
  const size_t max_request_bytes_;
  const AccessPolicy* const policy_;
};

// Cluster status (any replica) and membership changes (the leader, admins
// only; see lockd.proto).
class ClusterService : public v1::Cluster::CallbackService {
 public:
  ClusterService(ReplicaLoop* loop, const AccessPolicy* policy)
      : loop_(loop), policy_(policy) {}

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* context,
                                   const v1::StatusRequest* request,
                                   v1::StatusResponse* response) override;
  grpc::ServerUnaryReactor* AddMember(
      grpc::CallbackServerContext* context, const v1::AddMemberRequest* request,
      v1::MembershipResponse* response) override;
  grpc::ServerUnaryReactor* PromoteMember(
      grpc::CallbackServerContext* context,
      const v1::PromoteMemberRequest* request,
      v1::MembershipResponse* response) override;
  grpc::ServerUnaryReactor* RemoveMember(
      grpc::CallbackServerContext* context,
      const v1::RemoveMemberRequest* request,
      v1::MembershipResponse* response) override;
  grpc::ServerUnaryReactor* TransferLeadership(
      grpc::CallbackServerContext* context,
      const v1::TransferLeadershipRequest* request,
      v1::TransferLeadershipResponse* response) override;
  grpc::ServerUnaryReactor* SaveSnapshot(
      grpc::CallbackServerContext* context,
      const v1::SaveSnapshotRequest* request,
      v1::SaveSnapshotResponse* response) override;

  // Bytes of state per SaveSnapshot answer.
  static constexpr size_t kSnapshotChunkBytes = 1 << 20;

  // A learner is promoted only when at most this many slots behind.
  static constexpr uint64_t kMaxPromotionLag = 1000;

 private:
  grpc::ServerUnaryReactor* Change(grpc::CallbackServerContext* context,
                                   absl::string_view what,
                                   ReplicaNode::MembershipEdit edit,
                                   v1::MembershipResponse* response);

  // Answers one chunk of the held snapshot; FAILED_PRECONDITION if it is
  // not the one asked for.
  absl::Status AnswerChunk(const v1::SaveSnapshotRequest& request,
                           v1::SaveSnapshotResponse* response);

  ReplicaLoop* const loop_;
  const AccessPolicy* const policy_;
  // The snapshot of the last SaveSnapshot with index 0 (one at a time).
  absl::Mutex snapshot_mu_;
  v1::BackupHeader snapshot_header_ ABSL_GUARDED_BY(snapshot_mu_);
  std::string snapshot_state_ ABSL_GUARDED_BY(snapshot_mu_);
};

}  // namespace lockd

#endif  // LOCKD_SERVICES_H_
