#include "lockd/services.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"
#include "grpcpp/grpcpp.h"
#include "lockd/crc32c.h"
#include "lockd/tls.h"
#include "paxos/membership.h"

namespace lockd {
namespace {

// absl and gRPC share the canonical status codes.
grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// Adds a leader redirect carried by `status` (see ReplicaNode::NotServing)
// to the call's trailing metadata.
void AddLeaderTrailers(grpc::CallbackServerContext* context,
                       const absl::Status& status) {
  for (const char* key : {kLeaderAddressPayload, kLeaderIdPayload}) {
    auto value = status.GetPayload(key);
    if (value.has_value()) {
      context->AddTrailingMetadata(key, std::string(*value));
    }
  }
}

// Finishes a unary call with `status` and its leader redirect.
void FinishCall(grpc::CallbackServerContext* context,
                grpc::ServerUnaryReactor* reactor, const absl::Status& status) {
  AddLeaderTrailers(context, status);
  reactor->Finish(ToGrpcStatus(status));
}

// The node of election `name` (checked for rights like any node).
std::string ElectionPath(const std::string& name) {
  return absl::StrCat("/election/", name);
}

absl::Status CheckSize(const google::protobuf::Message& request,
                       size_t max_request_bytes) {
  const size_t size = request.ByteSizeLong();
  if (size > max_request_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request of ", size, " bytes exceeds the limit of ",
                     max_request_bytes, " bytes (--max_request_bytes)"));
  }
  return absl::OkStatus();
}

// A unary call answered by a command's result. If the client cancels, its
// callback is withdrawn at once (the call does not stay parked).
class SubmittedCall : public grpc::ServerUnaryReactor {
 public:
  SubmittedCall(ReplicaLoop* loop, grpc::CallbackServerContext* context)
      : loop_(loop), context_(context), caller_(loop->NewCaller()) {}

  // `fill` moves the result's body into the response.
  void Start(statepb::Command command,
             std::function<void(statepb::Result&)> fill) {
    loop_->Submit(
        std::move(command), caller_,
        [this, fill = std::move(fill)](absl::StatusOr<statepb::Result> result) {
          if (!result.ok()) {
            FinishCall(context_, this, result.status());
          } else if (result->code() != 0) {
            if (result->error_time_ms() != 0) {
              context_->AddTrailingMetadata(
                  "lockd-error-time-ms", absl::StrCat(result->error_time_ms()));
            }
            Finish(grpc::Status(static_cast<grpc::StatusCode>(result->code()),
                                result->message()));
          } else {
            fill(*result);
            Finish(grpc::Status::OK);
          }
        });
  }

  void OnCancel() override { loop_->Cancel(caller_); }
  void OnDone() override { delete this; }

 private:
  ReplicaLoop* const loop_;
  grpc::CallbackServerContext* const context_;
  const uint64_t caller_;
};

// Submits `command` and finishes the call with its result; `fill` moves the
// result's body into the response.
grpc::ServerUnaryReactor* SubmitCommand(
    ReplicaLoop* loop, const AccessPolicy* policy,
    grpc::CallbackServerContext* context,
    const google::protobuf::Message& request, size_t max_request_bytes,
    statepb::Command command, std::function<void(statepb::Result&)> fill) {
  const absl::Status size = CheckSize(request, max_request_bytes);
  if (!size.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    FinishCall(context, reactor, size);
    return reactor;
  }
  sessions::Access access = policy->AccessOf(context);
  command.set_principal(std::move(access.principal));
  command.set_admin(access.admin);
  auto* call = new SubmittedCall(loop, context);
  call->Start(std::move(command), std::move(fill));
  return call;
}

// Submits `request` as the command in `command_field` and answers with the
// result's `result_field`.
template <typename Request, typename Response>
grpc::ServerUnaryReactor* Submit(ReplicaLoop* loop, const AccessPolicy* policy,
                                 grpc::CallbackServerContext* context,
                                 size_t max_request_bytes,
                                 const Request& request, Response* response,
                                 Request* (statepb::Command::*command_field)(),
                                 Response* (statepb::Result::*result_field)()) {
  statepb::Command command;
  *(command.*command_field)() = request;
  return SubmitCommand(loop, policy, context, request, max_request_bytes,
                       std::move(command),
                       [response, result_field](statepb::Result& result) {
                         response->Swap((result.*result_field)());
                       });
}

// Runs a read under the leader lease and finishes the call with its status.
grpc::ServerUnaryReactor* ReadState(
    ReplicaLoop* loop, grpc::CallbackServerContext* context,
    std::function<absl::Status(const sessions::StateMachine&)> read) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  loop->Read(
      [read = std::move(read)](const sessions::StateMachine& state,
                               const paxos::Replica&) { return read(state); },
      [context, reactor](absl::Status status) {
        FinishCall(context, reactor, status);
      });
  return reactor;
}

// Runs `read` under the leader lease and answers with its response.
template <typename Response, typename ReadFn>
grpc::ServerUnaryReactor* ReadInto(ReplicaLoop* loop,
                                   grpc::CallbackServerContext* context,
                                   Response* response, ReadFn read) {
  return ReadState(loop, context,
                   [response, read = std::move(read)](
                       const sessions::StateMachine& state) -> absl::Status {
                     absl::StatusOr<Response> answer = read(state);
                     if (!answer.ok()) return answer.status();
                     *response = *std::move(answer);
                     return absl::OkStatus();
                   });
}

// As ReadInto, once the caller's `right` on `path` checks.
template <typename Response, typename ReadFn>
grpc::ServerUnaryReactor* ReadChecked(ReplicaLoop* loop,
                                      const AccessPolicy* policy,
                                      grpc::CallbackServerContext* context,
                                      Response* response, std::string path,
                                      sessions::Right right, ReadFn read) {
  return ReadInto(
      loop, context, response,
      [access = policy->AccessOf(context), path = std::move(path), right,
       read = std::move(read)](
          const sessions::StateMachine& state) -> absl::StatusOr<Response> {
        // A bad path or name is left to `read`, whose error names it.
        if (absl::Status allowed = state.CheckAccess(path, right, access);
            !allowed.ok() && !absl::IsInvalidArgument(allowed)) {
          return allowed;
        }
        return read(state);
      });
}

// Serializes the writes of one server stream: at most one write in flight,
// Finish only after the last write completed, nothing after Finish. Send()
// and End() may be called from any thread.
template <typename Reactor, typename Response>
class WriteQueue {
 public:
  WriteQueue(Reactor* reactor, grpc::CallbackServerContext* context)
      : reactor_(reactor), context_(context) {}

  void Send(Response response) {
    const Response* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return;
      queue_.push_back(std::move(response));
      if (writing_) return;
      writing_ = true;
      next = &queue_.front();
    }
    reactor_->StartWrite(next);
  }

  // Finishes once the queued writes are out, with a leader redirect in the
  // trailers if `status` carries one. Later calls are ignored.
  void End(const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return;
      finishing_ = true;
      AddLeaderTrailers(context_, status);
      finish_status_ = ToGrpcStatus(status);
      if (writing_) return;
    }
    reactor_->Finish(finish_status_);
  }

  // From the reactor's OnWriteDone.
  void WriteDone(bool ok) {
    const Response* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) {
        queue_.clear();
        if (!finishing_) {
          finishing_ = true;
          finish_status_ = grpc::Status(grpc::StatusCode::CANCELLED,
                                        "the stream broke while writing");
        }
      }
      if (!queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        if (!finishing_) return;
      }
    }
    if (next != nullptr) {
      reactor_->StartWrite(next);
    } else {
      reactor_->Finish(finish_status_);
    }
  }

 private:
  Reactor* const reactor_;
  grpc::CallbackServerContext* const context_;
  absl::Mutex mu_;
  // The front element is the write in flight (if writing_). Elements keep
  // their address while others are appended.
  std::deque<Response> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_;
};

using KeepAliveReactorBase =
    grpc::ServerBidiReactor<v1::KeepAliveRequest, v1::KeepAliveResponse>;

// One KeepAlive stream. The loop holds the Listener (shared), the reactor
// holds the queue; OnDone unregisters before the reactor goes away.
class KeepAliveReactor : public KeepAliveReactorBase {
 public:
  // Decrements `*open_streams` when done.
  KeepAliveReactor(ReplicaLoop* loop, grpc::CallbackServerContext* context,
                   std::atomic<int>* open_streams)
      : loop_(loop),
        open_streams_(open_streams),
        queue_(std::make_shared<Queue>(this, context)),
        listener_(std::make_shared<Listener>(queue_)) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      queue_->End(absl::OkStatus());
      return;
    }
    loop_->KeepAlive(listener_, request_);
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override { queue_->WriteDone(ok); }

  void OnDone() override {
    loop_->RemoveSessionListener(listener_.get());
    open_streams_->fetch_sub(1);
    delete this;
  }

 private:
  using Queue = WriteQueue<KeepAliveReactorBase, v1::KeepAliveResponse>;

  class Listener : public SessionListener {
   public:
    explicit Listener(std::shared_ptr<Queue> queue)
        : queue_(std::move(queue)) {}
    void Send(v1::KeepAliveResponse response) override {
      queue_->Send(std::move(response));
    }
    void End(absl::Status status) override { queue_->End(status); }

   private:
    const std::shared_ptr<Queue> queue_;
  };

  ReplicaLoop* const loop_;
  std::atomic<int>* const open_streams_;
  const std::shared_ptr<Queue> queue_;
  const std::shared_ptr<Listener> listener_;
  v1::KeepAliveRequest request_;
};

// A KeepAlive stream refused at once (the stream limit).
class RefusedKeepAlive : public KeepAliveReactorBase {
 public:
  explicit RefusedKeepAlive(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

using ObserveReactorBase = grpc::ServerWriteReactor<v1::GetLeaderResponse>;

class ObserveReactor : public ObserveReactorBase {
 public:
  // The caller (`access`) needs the read right on the election's node when
  // the stream opens.
  ObserveReactor(ReplicaLoop* loop, grpc::CallbackServerContext* context,
                 const std::string& name, sessions::Access access)
      : loop_(loop),
        queue_(std::make_shared<Queue>(this, context)),
        listener_(std::make_shared<Listener>(queue_)) {
    loop_->Read(
        [name, access = std::move(access)](const sessions::StateMachine& state,
                                           const paxos::Replica&) {
          const absl::Status allowed = state.CheckAccess(
              ElectionPath(name), sessions::Right::kRead, access);
          return absl::IsInvalidArgument(allowed) ? absl::OkStatus() : allowed;
        },
        [loop, name, queue = queue_,
         listener = listener_](absl::Status status) {
          if (status.ok()) {
            loop->Observe(name, listener);
          } else {
            queue->End(status);
          }
        });
  }

  void OnWriteDone(bool ok) override { queue_->WriteDone(ok); }

  void OnCancel() override {
    queue_->End(absl::CancelledError("cancelled by the client"));
  }

  void OnDone() override {
    loop_->RemoveElectionListener(listener_.get());
    delete this;
  }

 private:
  using Queue = WriteQueue<ObserveReactorBase, v1::GetLeaderResponse>;

  class Listener : public ElectionListener {
   public:
    explicit Listener(std::shared_ptr<Queue> queue)
        : queue_(std::move(queue)) {}
    void Send(v1::GetLeaderResponse response) override {
      queue_->Send(std::move(response));
    }
    void End(absl::Status status) override { queue_->End(status); }

   private:
    const std::shared_ptr<Queue> queue_;
  };

  ReplicaLoop* const loop_;
  const std::shared_ptr<Queue> queue_;
  const std::shared_ptr<Listener> listener_;
};

}  // namespace

// -------------------------------------------------------------- AccessPolicy

sessions::Access AccessPolicy::AccessOf(
    grpc::CallbackServerContext* context) const {
  if (!enforce_) return {"", true};
  sessions::Access access;
  access.principal = PrincipalOf(*context->auth_context());
  access.admin = admins_.count(access.principal) > 0;
  return access;
}

absl::Status AccessPolicy::RequireAdmin(const sessions::Access& access,
                                        absl::string_view what) const {
  if (access.admin) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      what,
      " needs an operator principal (--admin_principals); this call "
      "comes from ",
      access.principal.empty()
          ? std::string("an anonymous client (no client certificate)")
          : absl::StrCat("principal \"", access.principal, "\"")));
}

// ------------------------------------------------------------------ Sessions

grpc::ServerUnaryReactor* SessionsService::CreateSession(
    grpc::CallbackServerContext* context,
    const v1::CreateSessionRequest* request,
    v1::CreateSessionResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_create_session,
                &statepb::Result::mutable_create_session);
}

grpc::ServerBidiReactor<v1::KeepAliveRequest, v1::KeepAliveResponse>*
SessionsService::KeepAlive(grpc::CallbackServerContext* context) {
  // Every open stream costs the process on every completion (see
  // docs/benchmarks.md, "Session load"): beyond the limit a stream is
  // refused rather than slowing every session down.
  if (keep_alive_streams_.fetch_add(1) >= max_keep_alive_streams_) {
    keep_alive_streams_.fetch_sub(1);
    return new RefusedKeepAlive(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("this replica has ", max_keep_alive_streams_,
                     " KeepAlive streams open (--max_keepalive_streams); "
                     "keep many sessions alive on one stream with the batch "
                     "form (KeepAliveRequest.sessions)")));
  }
  return new KeepAliveReactor(loop_, context, &keep_alive_streams_);
}

grpc::ServerUnaryReactor* SessionsService::CloseSession(
    grpc::CallbackServerContext* context,
    const v1::CloseSessionRequest* request,
    v1::CloseSessionResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_close_session,
                &statepb::Result::mutable_close_session);
}

grpc::ServerUnaryReactor* SessionsService::List(
    grpc::CallbackServerContext* context,
    const v1::ListSessionsRequest* /*request*/,
    v1::ListSessionsResponse* response) {
  const absl::Status allowed =
      policy_->RequireAdmin(policy_->AccessOf(context), "listing sessions");
  if (!allowed.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    FinishCall(context, reactor, allowed);
    return reactor;
  }
  return ReadInto(
      loop_, context, response,
      [](const sessions::StateMachine& state) { return state.ListSessions(); });
}

// --------------------------------------------------------------------- Nodes

grpc::ServerUnaryReactor* NodesService::Create(
    grpc::CallbackServerContext* context, const v1::CreateNodeRequest* request,
    v1::CreateNodeResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_create_node,
                &statepb::Result::mutable_create_node);
}

grpc::ServerUnaryReactor* NodesService::Get(
    grpc::CallbackServerContext* context, const v1::GetNodeRequest* request,
    v1::GetNodeResponse* response) {
  return ReadChecked(loop_, policy_, context, response, request->path(),
                     sessions::Right::kRead,
                     [request](const sessions::StateMachine& state) {
                       return state.GetNode(request->path());
                     });
}

grpc::ServerUnaryReactor* NodesService::Set(
    grpc::CallbackServerContext* context, const v1::SetNodeRequest* request,
    v1::SetNodeResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_set_node,
                &statepb::Result::mutable_set_node);
}

grpc::ServerUnaryReactor* NodesService::Delete(
    grpc::CallbackServerContext* context, const v1::DeleteNodeRequest* request,
    v1::DeleteNodeResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_delete_node,
                &statepb::Result::mutable_delete_node);
}

grpc::ServerUnaryReactor* NodesService::List(
    grpc::CallbackServerContext* context,
    const v1::ListChildrenRequest* request,
    v1::ListChildrenResponse* response) {
  return ReadChecked(loop_, policy_, context, response, request->path(),
                     sessions::Right::kRead,
                     [request](const sessions::StateMachine& state) {
                       return state.ListChildren(request->path());
                     });
}

grpc::ServerUnaryReactor* NodesService::Stat(
    grpc::CallbackServerContext* context, const v1::StatNodeRequest* request,
    v1::StatNodeResponse* response) {
  return ReadChecked(loop_, policy_, context, response, request->path(),
                     sessions::Right::kRead,
                     [request](const sessions::StateMachine& state) {
                       return state.StatNode(request->path());
                     });
}

grpc::ServerUnaryReactor* NodesService::Watch(
    grpc::CallbackServerContext* context, const v1::WatchRequest* request,
    v1::WatchResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_watch,
                &statepb::Result::mutable_watch);
}

grpc::ServerUnaryReactor* NodesService::SetAcl(
    grpc::CallbackServerContext* context, const v1::SetAclRequest* request,
    v1::SetAclResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_set_acl,
                &statepb::Result::mutable_set_acl);
}

// --------------------------------------------------------------------- Locks

grpc::ServerUnaryReactor* LocksService::Acquire(
    grpc::CallbackServerContext* context, const v1::AcquireRequest* request,
    v1::AcquireResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_acquire,
                &statepb::Result::mutable_acquire);
}

grpc::ServerUnaryReactor* LocksService::Release(
    grpc::CallbackServerContext* context, const v1::ReleaseRequest* request,
    v1::ReleaseResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_release,
                &statepb::Result::mutable_release);
}

grpc::ServerUnaryReactor* LocksService::CheckSequencer(
    grpc::CallbackServerContext* context,
    const v1::CheckSequencerRequest* request,
    v1::CheckSequencerResponse* response) {
  return ReadState(loop_, context,
                   [request, response](const sessions::StateMachine& state) {
                     *response = state.CheckSequencer(request->sequencer());
                     return absl::OkStatus();
                   });
}

grpc::ServerUnaryReactor* LocksService::List(
    grpc::CallbackServerContext* context, const v1::ListLocksRequest* request,
    v1::ListLocksResponse* response) {
  const absl::Status allowed =
      policy_->RequireAdmin(policy_->AccessOf(context), "listing locks");
  if (!allowed.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    FinishCall(context, reactor, allowed);
    return reactor;
  }
  return ReadInto(loop_, context, response,
                  [request](const sessions::StateMachine& state) {
                    return state.ListLocks(request->prefix());
                  });
}

// ----------------------------------------------------------------- Elections

grpc::ServerUnaryReactor* ElectionsService::Campaign(
    grpc::CallbackServerContext* context, const v1::CampaignRequest* request,
    v1::CampaignResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_campaign,
                &statepb::Result::mutable_campaign);
}

grpc::ServerUnaryReactor* ElectionsService::Proclaim(
    grpc::CallbackServerContext* context, const v1::ProclaimRequest* request,
    v1::ProclaimResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_proclaim,
                &statepb::Result::mutable_proclaim);
}

grpc::ServerUnaryReactor* ElectionsService::Leader(
    grpc::CallbackServerContext* context, const v1::GetLeaderRequest* request,
    v1::GetLeaderResponse* response) {
  return ReadChecked(loop_, policy_, context, response,
                     ElectionPath(request->name()), sessions::Right::kRead,
                     [request](const sessions::StateMachine& state) {
                       return state.GetLeader(request->name());
                     });
}

grpc::ServerWriteReactor<v1::GetLeaderResponse>* ElectionsService::Observe(
    grpc::CallbackServerContext* context, const v1::ObserveRequest* request) {
  return new ObserveReactor(loop_, context, request->name(),
                            policy_->AccessOf(context));
}

grpc::ServerUnaryReactor* ElectionsService::Resign(
    grpc::CallbackServerContext* context, const v1::ResignRequest* request,
    v1::ResignResponse* response) {
  return Submit(loop_, policy_, context, max_request_bytes_, *request, response,
                &statepb::Command::mutable_resign,
                &statepb::Result::mutable_resign);
}

// ------------------------------------------------------------------- Cluster

namespace {

v1::Member PublicMember(const paxospb::Member& member) {
  v1::Member out;
  out.set_id(member.id());
  out.set_address(member.client_address());
  out.set_peer_address(member.peer_address());
  out.set_voter(member.voter());
  return out;
}

// The configuration as this replica holds it; the leader adds how far
// each member has acknowledged.
void FillMembers(const paxos::Replica& replica,
                 google::protobuf::RepeatedPtrField<v1::Member>* members) {
  for (const paxospb::Member& member : replica.membership().members()) {
    v1::Member* out = members->Add();
    *out = PublicMember(member);
    if (replica.role() == paxos::Role::kLeader) {
      out->set_commit_index(replica.PeerCommit(member.id()));
    }
  }
}

void FillChange(const AppliedChange& applied,
                v1::MembershipResponse* response) {
  for (const paxospb::Member& member : applied.membership.members()) {
    *response->add_members() = PublicMember(member);
  }
  *response->mutable_retired_ids() = applied.membership.retired_ids();
  response->set_index(applied.index);
}

// Marks the refusal of a change that removes the leader itself.
constexpr char kHandOverPayload[] = "lockd-hand-over";

// The UNAVAILABLE answer after this leader handed over to `target`, naming
// it so that the client library retries there.
absl::Status HandedOver(uint32_t self, uint32_t target,
                        const std::string& address) {
  absl::Status status = absl::UnavailableError(
      absl::StrCat("replica ", self,
                   " leads and cannot remove itself: it handed "
                   "leadership to replica ",
                   target, "; retry there"));
  if (!address.empty()) {
    status.SetPayload(kLeaderAddressPayload, absl::Cord(address));
    status.SetPayload(kLeaderIdPayload, absl::Cord(absl::StrCat(target)));
  }
  return status;
}

absl::Status CheckMemberId(uint32_t id) {
  if (id == 0 || id > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("member id ", id, " must be in [1, 65535]"));
  }
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* ClusterService::Status(
    grpc::CallbackServerContext* context, const v1::StatusRequest* /*request*/,
    v1::StatusResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  loop_->Inspect(
      [response](const sessions::StateMachine& state,
                 const paxos::Replica& replica) {
        response->set_id(replica.id());
        switch (replica.role()) {
          case paxos::Role::kLeader:
            response->set_role("leader");
            break;
          case paxos::Role::kCandidate:
            response->set_role("candidate");
            break;
          case paxos::Role::kFollower:
            response->set_role("follower");
            break;
        }
        FillMembers(replica, response->mutable_members());
        *response->mutable_retired_ids() = replica.membership().retired_ids();
        response->set_change_in_flight(replica.role() == paxos::Role::kLeader &&
                                       replica.change_in_flight());
        const uint32_t leader = replica.LeaderHint();
        response->set_leader_id(leader);
        if (const paxospb::Member* member =
                paxos::FindMember(replica.membership(), leader)) {
          response->set_leader_address(member->client_address());
        }
        response->set_epoch(replica.epoch());
        response->set_commit_index(replica.commit());
        response->set_applied_index(replica.emitted());
        response->set_snapshot_index(replica.snapshot_index());
        response->set_sessions(state.session_count());
        response->set_has_lease(replica.HasLease());
        return absl::OkStatus();
      },
      [context, reactor](absl::Status status) {
        FinishCall(context, reactor, status);
      });
  return reactor;
}

grpc::ServerUnaryReactor* ClusterService::Change(
    grpc::CallbackServerContext* context, absl::string_view what,
    ReplicaNode::MembershipEdit edit, v1::MembershipResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status admin =
          policy_->RequireAdmin(policy_->AccessOf(context), what);
      !admin.ok()) {
    FinishCall(context, reactor, admin);
    return reactor;
  }
  loop_->ChangeMembership(
      std::move(edit),
      [context, reactor, response](absl::StatusOr<AppliedChange> applied) {
        if (applied.ok()) {
          FillChange(*applied, response);
        }
        FinishCall(context, reactor, applied.status());
      });
  return reactor;
}

grpc::ServerUnaryReactor* ClusterService::AddMember(
    grpc::CallbackServerContext* context, const v1::AddMemberRequest* request,
    v1::MembershipResponse* response) {
  paxospb::Member member;
  member.set_id(request->id());
  member.set_client_address(request->address());
  member.set_peer_address(request->peer_address());
  member.set_voter(false);
  return Change(
      context, "changing the membership",
      [member](const paxos::Replica& replica)
          -> absl::StatusOr<paxospb::Membership> {
        if (absl::Status id = CheckMemberId(member.id()); !id.ok()) return id;
        if (member.client_address().empty() || member.peer_address().empty()) {
          return absl::InvalidArgumentError(
              "a new member needs a client address and a peer address "
              "(host:port each, the peer one used only between replicas)");
        }
        const paxospb::Membership& current = replica.membership();
        if (const paxospb::Member* existing =
                paxos::FindMember(current, member.id())) {
          if (existing->client_address() == member.client_address() &&
              existing->peer_address() == member.peer_address()) {
            return current;  // a retry
          }
          return absl::AlreadyExistsError(
              absl::StrCat("replica ", member.id(), " is already a member (at ",
                           existing->client_address(), "); pick a new id"));
        }
        for (const paxospb::Member& other : current.members()) {
          if (other.client_address() == member.client_address() ||
              other.peer_address() == member.peer_address() ||
              other.client_address() == member.peer_address() ||
              other.peer_address() == member.client_address()) {
            return absl::AlreadyExistsError(absl::StrCat(
                "replica ", other.id(), " already uses ",
                other.client_address(), "/", other.peer_address()));
          }
        }
        paxospb::Membership next = paxos::WithMember(current, member);
        if (absl::Status valid = paxos::ValidateChange(current, next);
            !valid.ok()) {
          return valid;
        }
        return next;
      },
      response);
}

grpc::ServerUnaryReactor* ClusterService::PromoteMember(
    grpc::CallbackServerContext* context,
    const v1::PromoteMemberRequest* request, v1::MembershipResponse* response) {
  const uint32_t id = request->id();
  return Change(
      context, "changing the membership",
      [id](const paxos::Replica& replica)
          -> absl::StatusOr<paxospb::Membership> {
        const paxospb::Membership& current = replica.membership();
        const paxospb::Member* member = paxos::FindMember(current, id);
        if (member == nullptr) {
          return absl::NotFoundError(
              absl::StrCat("replica ", id,
                           " is not a member; add it first (lockctl "
                           "member add)"));
        }
        if (member->voter()) return current;  // a retry
        const uint64_t lag = replica.commit() -
                             std::min(replica.commit(), replica.PeerCommit(id));
        if (lag > kMaxPromotionLag) {
          return absl::FailedPreconditionError(absl::StrCat(
              "replica ", id, " is ", lag, " slots behind (at ",
              replica.PeerCommit(id), " of ", replica.commit(),
              "); promote it once it has caught up (lockctl member list)"));
        }
        paxospb::Member voter = *member;
        voter.set_voter(true);
        return paxos::WithMember(current, voter);
      },
      response);
}

grpc::ServerUnaryReactor* ClusterService::RemoveMember(
    grpc::CallbackServerContext* context,
    const v1::RemoveMemberRequest* request, v1::MembershipResponse* response) {
  const uint32_t id = request->id();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status admin = policy_->RequireAdmin(policy_->AccessOf(context),
                                                 "changing the membership");
      !admin.ok()) {
    FinishCall(context, reactor, admin);
    return reactor;
  }
  // Removing the leader itself: it hands leadership over instead, and the
  // client retries at the new leader.
  loop_->ChangeMembership(
      [id](const paxos::Replica& replica)
          -> absl::StatusOr<paxospb::Membership> {
        const paxospb::Membership& current = replica.membership();
        if (paxos::FindMember(current, id) == nullptr) {
          for (uint32_t retired : current.retired_ids()) {
            if (retired == id) return current;  // a retry
          }
          return absl::NotFoundError(
              absl::StrCat("replica ", id, " is not a member"));
        }
        if (id == replica.id()) {
          absl::Status hand_over = absl::FailedPreconditionError(
              "the leader must hand leadership over before it is removed");
          hand_over.SetPayload(kHandOverPayload, absl::Cord("1"));
          return hand_over;
        }
        paxospb::Membership next = paxos::WithoutMember(current, id);
        if (paxos::Voters(next).empty()) {
          return absl::FailedPreconditionError(
              "the last voter cannot be removed");
        }
        return next;
      },
      [this, id, context, reactor,
       response](absl::StatusOr<AppliedChange> applied) {
        if (applied.ok()) {
          FillChange(*applied, response);
          FinishCall(context, reactor, absl::OkStatus());
          return;
        }
        if (!applied.status().GetPayload(kHandOverPayload).has_value()) {
          FinishCall(context, reactor, applied.status());
          return;
        }
        loop_->HandOver(
            0, [this, id, context, reactor](absl::StatusOr<uint32_t> target) {
              if (!target.ok()) {
                FinishCall(context, reactor, target.status());
                return;
              }
              loop_->Inspect(
                  [id, target = *target, context, reactor](
                      const sessions::StateMachine&,
                      const paxos::Replica& replica) {
                    const paxospb::Member* member =
                        paxos::FindMember(replica.membership(), target);
                    FinishCall(context, reactor,
                               HandedOver(id, target,
                                          member == nullptr
                                              ? std::string()
                                              : member->client_address()));
                    return absl::OkStatus();
                  },
                  [](absl::Status) {});
            });
      });
  return reactor;
}

absl::Status ClusterService::AnswerChunk(const v1::SaveSnapshotRequest& request,
                                         v1::SaveSnapshotResponse* response) {
  absl::MutexLock lock(&snapshot_mu_);
  if (snapshot_state_.empty() && snapshot_header_.index() == 0) {
    return absl::FailedPreconditionError(
        "this replica holds no snapshot; start again with index 0");
  }
  if (request.index() != 0 && request.index() != snapshot_header_.index()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this replica holds the snapshot at index ", snapshot_header_.index(),
        ", not ", request.index(),
        " (another save started, or the leader changed); start again"));
  }
  if (request.offset() > snapshot_state_.size()) {
    return absl::OutOfRangeError(
        absl::StrCat("offset ", request.offset(), " is beyond the snapshot's ",
                     snapshot_state_.size(), " bytes"));
  }
  *response->mutable_header() = snapshot_header_;
  response->set_offset(request.offset());
  response->set_data(
      snapshot_state_.substr(request.offset(), kSnapshotChunkBytes));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ClusterService::SaveSnapshot(
    grpc::CallbackServerContext* context,
    const v1::SaveSnapshotRequest* request,
    v1::SaveSnapshotResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status admin = policy_->RequireAdmin(policy_->AccessOf(context),
                                                 "saving a snapshot");
      !admin.ok()) {
    FinishCall(context, reactor, admin);
    return reactor;
  }
  if (request->index() != 0) {
    FinishCall(context, reactor, AnswerChunk(*request, response));
    return reactor;
  }
  loop_->InspectNode(
      [this, response, context, reactor](const ReplicaNode& node) {
        if (!node.Serving()) {
          FinishCall(context, reactor, node.NotServing());
          return;
        }
        std::string state = node.state().Snapshot();
        v1::BackupHeader header;
        header.set_index(node.applied_index());
        header.set_size_bytes(state.size());
        header.set_crc32c(crc32c::Value(state.data(), state.size()));
        header.set_cell_id(node.replica().membership().cell_id());
        for (const paxospb::Member& member :
             node.replica().membership().members()) {
          *header.add_members() = PublicMember(member);
        }
        header.set_cell_time_ms(node.state().now_ms());
        header.set_epoch(node.state().epoch());
        {
          absl::MutexLock lock(&snapshot_mu_);
          snapshot_header_ = std::move(header);
          snapshot_state_ = std::move(state);
        }
        v1::SaveSnapshotRequest first;
        FinishCall(context, reactor, AnswerChunk(first, response));
      });
  return reactor;
}

grpc::ServerUnaryReactor* ClusterService::TransferLeadership(
    grpc::CallbackServerContext* context,
    const v1::TransferLeadershipRequest* request,
    v1::TransferLeadershipResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status admin = policy_->RequireAdmin(policy_->AccessOf(context),
                                                 "handing leadership over");
      !admin.ok()) {
    FinishCall(context, reactor, admin);
    return reactor;
  }
  loop_->HandOver(request->to(), [context, reactor,
                                  response](absl::StatusOr<uint32_t> target) {
    if (target.ok()) response->set_to(*target);
    FinishCall(context, reactor, target.status());
  });
  return reactor;
}

}  // namespace lockd
