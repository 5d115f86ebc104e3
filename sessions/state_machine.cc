#include "sessions/state_machine.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "google/protobuf/io/coded_stream.h"
#include "sessions/checksum.h"
#include "sessions/paths.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {
namespace {

using v1::LockMode;

// Elections live under this node: election N is the lock on /election/N.
constexpr absl::string_view kElectionDir = "/election";

statepb::Result ErrorResult(const absl::Status& status) {
  statepb::Result result;
  result.set_code(static_cast<int32_t>(status.code()));
  result.set_message(std::string(status.message()));
  return result;
}

// A successful result carrying `response` in the body field selected by
// `body` (e.g. &statepb::Result::mutable_set_node), or the error.
template <typename Response>
statepb::Result MakeResult(absl::StatusOr<Response> response,
                           Response* (statepb::Result::*body)()) {
  if (!response.ok()) return ErrorResult(response.status());
  statepb::Result result;
  *(result.*body)() = *std::move(response);
  return result;
}

// As MakeResult, for requests that may park (an empty optional).
template <typename Response>
std::optional<statepb::Result> MakeParkableResult(
    absl::StatusOr<std::optional<Response>> response,
    Response* (statepb::Result::*body)()) {
  if (!response.ok()) return ErrorResult(response.status());
  if (!response->has_value()) return std::nullopt;
  return MakeResult<Response>(**std::move(response), body);
}

absl::string_view ModeName(LockMode mode) {
  return mode == v1::EXCLUSIVE ? "EXCLUSIVE" : "SHARED";
}

v1::Event MakeEvent(v1::Event::Type type, absl::string_view path) {
  v1::Event event;
  event.set_type(type);
  event.set_path(std::string(path));
  return event;
}

// The election name if `path` is /election/<name>.
std::optional<absl::string_view> ElectionName(absl::string_view path) {
  if (path.size() <= kElectionDir.size() + 1 ||
      path.substr(0, kElectionDir.size()) != kElectionDir ||
      path[kElectionDir.size()] != '/') {
    return std::nullopt;
  }
  absl::string_view name = path.substr(kElectionDir.size() + 1);
  if (name.find('/') != absl::string_view::npos) return std::nullopt;
  return name;
}

// True iff `path` is `prefix` or below it by whole names. `prefix` is a
// valid path: "/" covers everything, "/a" covers "/a/b" but not "/ab".
bool Covers(absl::string_view prefix, absl::string_view path) {
  if (prefix == "/") return true;
  if (path.size() < prefix.size() || path.substr(0, prefix.size()) != prefix) {
    return false;
  }
  return path.size() == prefix.size() || path[prefix.size()] == '/';
}

// Counts the entries of a listing answer against the list limits.
class ListBudget {
 public:
  explicit ListBudget(const Limits& limits) : limits_(limits) {}

  // True (and counted) if `entry`, an element of a repeated message field
  // numbered below 16, still fits in the answer.
  bool Take(const google::protobuf::Message& entry) {
    const size_t size = entry.ByteSizeLong();
    const size_t listed =
        1 + google::protobuf::io::CodedOutputStream::VarintSize64(size) + size;
    if (entries_ >= limits_.max_list_entries ||
        bytes_ + listed > limits_.max_list_bytes) {
      return false;
    }
    ++entries_;
    bytes_ += listed;
    return true;
  }

 private:
  const Limits& limits_;
  size_t entries_ = 0;
  size_t bytes_ = 0;
};

bool SameLeader(const std::optional<v1::LeaderInfo>& a,
                const std::optional<v1::LeaderInfo>& b) {
  if (!a.has_value() || !b.has_value()) return a.has_value() == b.has_value();
  return a->session_id() == b->session_id() &&
         a->lock_generation() == b->lock_generation() &&
         a->value() == b->value();
}

}  // namespace

StateMachine::Impl::Impl(const Limits& limits) : limits_(limits) {
  Node& root = nodes_["/"];
  root.meta.set_instance(kRootInstance);
  root.meta.set_content_generation(1);
  root.meta.set_checksum(Crc32c(""));
}

// ---------------------------------------------------------------- Apply

ApplyResult StateMachine::Impl::Apply(const statepb::Command& command) {
  out_ = ApplyResult();
  sessions_with_events_.clear();
  elections_before_.clear();
  if (command.epoch() < epoch_) {
    RefuseStale(command);
  } else {
    now_ms_ = std::max(now_ms_, command.time_ms());
    // A new leader's fresh TTLs come before anything may expire.
    if (command.has_start_epoch() && command.epoch() > epoch_) {
      StartEpoch(command.epoch());
    }
    RunDueExpirations();
    Execute(command);
  }
  for (const auto& [name, before] : elections_before_) {
    if (!SameLeader(before, LeaderOf(name))) {
      out_.changed_elections.push_back(name);
    }
  }
  for (uint64_t session_id : sessions_with_events_) {
    if (sessions_.count(session_id) != 0) {
      out_.sessions_with_events.push_back(session_id);
    }
  }
  return std::move(out_);
}

void StateMachine::Impl::RefuseStale(const statepb::Command& command) {
  switch (command.op_case()) {
    case statepb::Command::kStartEpoch:
    case statepb::Command::kRenewSessions:
    case statepb::Command::kTick:
    case statepb::Command::OP_NOT_SET:
      return;
    default:
      break;
  }
  Complete(RequestKeyOf(command),
           ErrorResult(absl::AbortedError(absl::StrCat(
               "overtaken by a leader change (epoch ", command.epoch(), " < ",
               epoch_, "); retry with the same request number"))));
}

void StateMachine::Impl::Execute(const statepb::Command& command) {
  switch (command.op_case()) {
    case statepb::Command::kStartEpoch:
    case statepb::Command::kTick:
    case statepb::Command::OP_NOT_SET:
      return;
    case statepb::Command::kRenewSessions:
      RenewSessions(command.renew_sessions());
      return;
    case statepb::Command::kCreateSession:
      Complete(
          {0, command.create_session().nonce()},
          CreateSession(command.create_session(), command.secret_digest()));
      return;
    case statepb::Command::kCloseSession:
      CloseSession(command.close_session(), command.secret_digest());
      return;
    case statepb::Command::kCreateNode: {
      const auto& request = command.create_node();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(CreateNode(session, request),
                                       &statepb::Result::mutable_create_node);
                   });
      return;
    }
    case statepb::Command::kSetNode: {
      const auto& request = command.set_node();
      ApplyRequest(request.header(), command.secret_digest(), [&](Session&) {
        return MakeResult(SetNode(request), &statepb::Result::mutable_set_node);
      });
      return;
    }
    case statepb::Command::kDeleteNode: {
      const auto& request = command.delete_node();
      ApplyRequest(request.header(), command.secret_digest(), [&](Session&) {
        return MakeResult(DeleteNode(request),
                          &statepb::Result::mutable_delete_node);
      });
      return;
    }
    case statepb::Command::kWatch: {
      const auto& request = command.watch();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(Watch(session, request),
                                       &statepb::Result::mutable_watch);
                   });
      return;
    }
    case statepb::Command::kAcquire: {
      const auto& request = command.acquire();
      ApplyRequest(
          request.header(), command.secret_digest(), [&](Session& session) {
            return MakeParkableResult(
                Acquire(session, request.header().request_id(), request),
                &statepb::Result::mutable_acquire);
          });
      return;
    }
    case statepb::Command::kRelease: {
      const auto& request = command.release();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(Release(session, request),
                                       &statepb::Result::mutable_release);
                   });
      return;
    }
    case statepb::Command::kCampaign: {
      const auto& request = command.campaign();
      ApplyRequest(
          request.header(), command.secret_digest(), [&](Session& session) {
            return MakeParkableResult(
                Campaign(session, request.header().request_id(), request),
                &statepb::Result::mutable_campaign);
          });
      return;
    }
    case statepb::Command::kProclaim: {
      const auto& request = command.proclaim();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(Proclaim(session, request),
                                       &statepb::Result::mutable_proclaim);
                   });
      return;
    }
    case statepb::Command::kResign: {
      const auto& request = command.resign();
      ApplyRequest(request.header(), command.secret_digest(),
                   [&](Session& session) {
                     return MakeResult(Resign(session, request),
                                       &statepb::Result::mutable_resign);
                   });
      return;
    }
  }
}

// ---------------------------------------------------------------- sessions

void StateMachine::Impl::StartEpoch(uint64_t epoch) {
  epoch_ = epoch;
  for (auto& [id, session] : sessions_) {
    SetExpiry(session,
              std::max(session.expires_at_ms,
                       std::min(now_ms_ + session.ttl_ms,
                                session.last_renewed_ms + 2 * session.ttl_ms)));
  }
}

void StateMachine::Impl::RenewSessions(const statepb::RenewSessions& renew) {
  for (const auto& renewal : renew.renewals()) {
    auto it = sessions_.find(renewal.session_id());
    if (it == sessions_.end()) continue;
    Session& session = it->second;
    session.last_renewed_ms = now_ms_;
    SetExpiry(session,
              std::max(session.expires_at_ms, now_ms_ + session.ttl_ms));
    while (!session.events.empty() && session.events.front().sequence() <=
                                          renewal.acked_event_sequence()) {
      session.events.pop_front();
    }
  }
}

statepb::Result StateMachine::Impl::CreateSession(
    const v1::CreateSessionRequest& request, absl::string_view secret_digest) {
  auto respond = [this](const Session& session) {
    statepb::Result result;
    v1::CreateSessionResponse* response = result.mutable_create_session();
    response->set_session_id(session.id);
    response->set_ttl_ms(session.ttl_ms);
    response->set_lease_remaining_ms(session.expires_at_ms - now_ms_);
    response->set_epoch(epoch_);
    return result;
  };
  if (request.nonce() != 0) {
    auto it = session_by_nonce_.find(request.nonce());
    if (it != session_by_nonce_.end()) {
      // The client lost the first answer, and with it the secret: the
      // retry's secret replaces it.
      Session& session = sessions_.at(it->second);
      session.secret_digest = std::string(secret_digest);
      return respond(session);
    }
  }
  const int64_t ttl_ms =
      request.ttl_ms() == 0 ? limits_.default_ttl_ms : request.ttl_ms();
  if (ttl_ms < limits_.min_ttl_ms || ttl_ms > limits_.max_ttl_ms) {
    return ErrorResult(absl::InvalidArgumentError(
        absl::StrCat("ttl_ms ", ttl_ms, " is outside [", limits_.min_ttl_ms,
                     ", ", limits_.max_ttl_ms, "]")));
  }
  if (request.client_name().size() > limits_.max_client_name_bytes) {
    return ErrorResult(absl::InvalidArgumentError(
        absl::StrCat("client_name has ", request.client_name().size(),
                     " bytes, above max_client_name_bytes (",
                     limits_.max_client_name_bytes, ")")));
  }
  if (!IsValidUtf8(request.client_name())) {
    return ErrorResult(
        absl::InvalidArgumentError("client_name is not valid UTF-8"));
  }
  if (sessions_.size() >= limits_.max_sessions) {
    return ErrorResult(absl::ResourceExhaustedError(absl::StrCat(
        "max_sessions (", limits_.max_sessions, ") sessions are open")));
  }
  const uint64_t id = next_session_id_++;
  Session& session = sessions_[id];
  session.id = id;
  session.ttl_ms = ttl_ms;
  session.client_name = request.client_name();
  session.nonce = request.nonce();
  session.secret_digest = std::string(secret_digest);
  session.last_renewed_ms = now_ms_;
  SetExpiry(session, now_ms_ + ttl_ms);
  if (session.nonce != 0) session_by_nonce_[session.nonce] = id;
  return respond(session);
}

void StateMachine::Impl::CloseSession(const v1::CloseSessionRequest& request,
                                      absl::string_view secret_digest) {
  Session* session = Admit(request.header(), secret_digest);
  if (session == nullptr) return;
  EndSession(session->id, /*expired=*/false);
  statepb::Result result;
  result.mutable_close_session();
  Complete({request.header().session_id(), request.header().request_id()},
           std::move(result));
}

void StateMachine::Impl::SetExpiry(Session& session, int64_t expires_at_ms) {
  session_expiries_.erase({session.expires_at_ms, session.id});
  session.expires_at_ms = expires_at_ms;
  session_expiries_.insert({expires_at_ms, session.id});
}

void StateMachine::Impl::EndSession(uint64_t session_id, bool expired) {
  Session& session = sessions_.at(session_id);
  const std::string why =
      absl::StrCat(expired ? "session expired" : "session closed", " (session ",
                   session_id, ")");
  // Parked requests first, so none of them is granted below.
  const std::map<uint64_t, std::string> parked = session.parked;
  for (const auto& [request_id, path] : parked) {
    RemoveWaiter(NodeAt(path), session_id, request_id);
    Complete({session_id, request_id},
             ErrorResult(absl::FailedPreconditionError(why)));
  }
  const std::set<std::string> held = session.held_locks;
  for (const std::string& path : held) ReleaseLock(path, session, expired);
  // A removed waiter may have been the head that blocked others.
  for (const auto& [request_id, path] : parked) {
    if (FindNode(path) != nullptr) GrantWaiters(path);
  }
  for (const std::string& path : session.watches) {
    NodeAt(path).watchers.erase(session_id);
  }
  session.watches.clear();
  const std::set<std::string> ephemeral = session.ephemeral_nodes;
  for (const std::string& path : ephemeral) ForceDeleteNode(path);
  if (session.nonce != 0) session_by_nonce_.erase(session.nonce);
  session_expiries_.erase({session.expires_at_ms, session_id});
  sessions_.erase(session_id);
  out_.ended_sessions.push_back(session_id);
}

// ---------------------------------------------------------------- time

void StateMachine::Impl::RunDueExpirations() {
  // Earliest first; at equal times sessions expire first, then lock-delays
  // end, then waits time out (so a lock freed at the instant a waiter would
  // give up goes to the waiter).
  while (true) {
    enum { kNone, kSession, kLockDelay, kWait } kind = kNone;
    int64_t at = now_ms_;
    if (!session_expiries_.empty() && session_expiries_.begin()->first <= at) {
      kind = kSession;
      at = session_expiries_.begin()->first;
    }
    if (!lock_delay_ends_.empty() && lock_delay_ends_.begin()->first <= at &&
        (kind == kNone || lock_delay_ends_.begin()->first < at)) {
      kind = kLockDelay;
      at = lock_delay_ends_.begin()->first;
    }
    if (!wait_deadlines_.empty() &&
        std::get<0>(*wait_deadlines_.begin()) <= at &&
        (kind == kNone || std::get<0>(*wait_deadlines_.begin()) < at)) {
      kind = kWait;
    }
    switch (kind) {
      case kNone:
        return;
      case kSession:
        EndSession(session_expiries_.begin()->second, /*expired=*/true);
        break;
      case kLockDelay:
        EndLockDelay();
        break;
      case kWait:
        TimeOutWaiter();
        break;
    }
  }
}

void StateMachine::Impl::TimeOutWaiter() {
  const auto [deadline_ms, session_id, request_id] = *wait_deadlines_.begin();
  Session& session = sessions_.at(session_id);
  const std::string path = session.parked.at(request_id);
  RemoveWaiter(NodeAt(path), session_id, request_id);
  Record(session, request_id,
         ErrorResult(absl::DeadlineExceededError(
             absl::StrCat("the lock on ", Quote(path),
                          " was not granted by the wait "
                          "deadline (",
                          deadline_ms, ")"))));
  GrantWaiters(path);
}

void StateMachine::Impl::EndLockDelay() {
  const std::string path = lock_delay_ends_.begin()->second;
  lock_delay_ends_.erase(lock_delay_ends_.begin());
  NodeAt(path).lock_delay_until_ms = 0;
  GrantWaiters(path);
}

std::optional<int64_t> StateMachine::Impl::NextDeadline() const {
  std::optional<int64_t> next;
  auto consider = [&next](int64_t at) {
    if (!next.has_value() || at < *next) next = at;
  };
  if (!session_expiries_.empty()) consider(session_expiries_.begin()->first);
  if (!lock_delay_ends_.empty()) consider(lock_delay_ends_.begin()->first);
  if (!wait_deadlines_.empty()) consider(std::get<0>(*wait_deadlines_.begin()));
  return next;
}

// ---------------------------------------------------------------- exactly-once

void StateMachine::Impl::ApplyRequest(
    const v1::RequestHeader& header, absl::string_view secret_digest,
    const std::function<std::optional<statepb::Result>(Session&)>& execute) {
  Session* session = Admit(header, secret_digest);
  if (session == nullptr) return;
  std::optional<statepb::Result> result = execute(*session);
  if (result.has_value()) {
    Record(*session, header.request_id(), *std::move(result));
  }
}

Session* StateMachine::Impl::Admit(const v1::RequestHeader& header,
                                   absl::string_view secret_digest) {
  const RequestKey key{header.session_id(), header.request_id()};
  auto refuse = [&](const absl::Status& status) {
    Complete(key, ErrorResult(status));
    return nullptr;
  };
  if (header.request_id() == 0) {
    return refuse(absl::InvalidArgumentError(
        "request_id must be positive (requests are numbered from 1)"));
  }
  auto it = sessions_.find(header.session_id());
  if (it == sessions_.end()) {
    return refuse(absl::NotFoundError(
        absl::StrCat("session ", header.session_id(),
                     " does not exist (expired or closed)")));
  }
  Session& session = it->second;
  if (session.secret_digest != secret_digest) {
    return refuse(WrongSecret(session.id));
  }
  if (header.first_unanswered_request_id() > header.request_id()) {
    return refuse(absl::InvalidArgumentError(absl::StrCat(
        "first_unanswered_request_id ", header.first_unanswered_request_id(),
        " is above request_id ", header.request_id())));
  }
  if (header.first_unanswered_request_id() > session.forgotten_below) {
    session.forgotten_below = header.first_unanswered_request_id();
    session.results.erase(session.results.begin(),
                          session.results.lower_bound(session.forgotten_below));
  }
  if (header.request_id() < session.forgotten_below) {
    return refuse(absl::FailedPreconditionError(
        absl::StrCat("request ", header.request_id(),
                     " is too old: results of requests below ",
                     session.forgotten_below, " are no longer retained")));
  }
  auto recorded = session.results.find(header.request_id());
  if (recorded != session.results.end()) {
    Complete(key, recorded->second);
    return nullptr;
  }
  if (session.parked.count(header.request_id()) != 0) return nullptr;
  if (session.results.size() + session.parked.size() >=
      limits_.max_retained_results_per_session) {
    return refuse(absl::ResourceExhaustedError(absl::StrCat(
        "session ", session.id, " has max_retained_results_per_session (",
        limits_.max_retained_results_per_session,
        ") unacknowledged requests; raise first_unanswered_request_id")));
  }
  return &session;
}

void StateMachine::Impl::Record(Session& session, uint64_t request_id,
                                statepb::Result result) {
  session.results[request_id] = result;
  Complete({session.id, request_id}, std::move(result));
}

void StateMachine::Impl::Complete(RequestKey key, statepb::Result result) {
  out_.completions.push_back({key, std::move(result)});
}

// ---------------------------------------------------------------- nodes

const Node* StateMachine::Impl::FindNode(absl::string_view path) const {
  auto it = nodes_.find(path);
  return it == nodes_.end() ? nullptr : &it->second;
}

Node* StateMachine::Impl::FindNode(absl::string_view path) {
  auto it = nodes_.find(path);
  return it == nodes_.end() ? nullptr : &it->second;
}

Node& StateMachine::Impl::NodeAt(absl::string_view path) {
  Node* node = FindNode(path);
  CHECK(node != nullptr) << "no node " << path;
  return *node;
}

v1::NodeMeta StateMachine::Impl::MetaOf(const Node& node) const {
  v1::NodeMeta meta = node.meta;
  meta.set_num_children(static_cast<uint32_t>(node.children.size()));
  return meta;
}

absl::Status StateMachine::Impl::CheckContentSize(
    absl::string_view content) const {
  if (content.size() > limits_.max_content_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "content has ", content.size(), " bytes, above max_content_bytes (",
        limits_.max_content_bytes, ")"));
  }
  return absl::OkStatus();
}

absl::Status StateMachine::Impl::CheckCreate(absl::string_view path,
                                             const Session* owner,
                                             size_t extra_nodes) const {
  if (FindNode(path) != nullptr) {
    return absl::AlreadyExistsError(
        absl::StrCat("node ", Quote(path), " already exists"));
  }
  const absl::string_view parent_path = ParentPath(path);
  const Node* parent = FindNode(parent_path);
  if (parent == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("parent ", Quote(parent_path), " does not exist"));
  }
  if (parent->meta.ephemeral_owner() != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("parent ", Quote(parent_path),
                     " is ephemeral; ephemeral nodes have no children"));
  }
  if (nodes_.size() + extra_nodes >= limits_.max_nodes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("max_nodes (", limits_.max_nodes, ") reached"));
  }
  if (parent->children.size() >= limits_.max_children_per_node) {
    return absl::ResourceExhaustedError(
        absl::StrCat(Quote(parent_path), " has max_children_per_node (",
                     limits_.max_children_per_node, ") children"));
  }
  if (owner != nullptr && owner->ephemeral_nodes.size() >=
                              limits_.max_ephemeral_nodes_per_session) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "session ", owner->id, " owns max_ephemeral_nodes_per_session (",
        limits_.max_ephemeral_nodes_per_session, ") nodes"));
  }
  return absl::OkStatus();
}

Node& StateMachine::Impl::AddNode(const std::string& path, std::string content,
                                  uint64_t owner) {
  Node& node = nodes_[path];
  node.meta.set_instance(next_instance_++);
  node.meta.set_content_generation(1);
  node.meta.set_checksum(Crc32c(content));
  node.meta.set_ephemeral_owner(owner);
  node.meta.set_created_ms(now_ms_);
  node.meta.set_modified_ms(now_ms_);
  node.meta.set_content_size(static_cast<uint32_t>(content.size()));
  node.content = std::move(content);
  if (owner != 0) sessions_.at(owner).ephemeral_nodes.insert(path);
  Node& parent = NodeAt(ParentPath(path));
  parent.children.insert(std::string(BaseName(path)));
  EmitToWatchers(parent, v1::Event::CHILD_ADDED, path);
  return node;
}

void StateMachine::Impl::SetContent(const std::string& path, Node& node,
                                    std::string content) {
  NoteElection(path);
  node.meta.set_content_generation(node.meta.content_generation() + 1);
  node.meta.set_checksum(Crc32c(content));
  node.meta.set_modified_ms(now_ms_);
  node.meta.set_content_size(static_cast<uint32_t>(content.size()));
  node.content = std::move(content);
  EmitToWatchers(node, v1::Event::CONTENT_CHANGED, path);
}

void StateMachine::Impl::EraseNode(std::string path) {
  Node& node = NodeAt(path);
  CHECK(node.children.empty() && node.holders.empty() && node.waiters.empty())
      << path;
  NoteElection(path);
  for (uint64_t session_id : node.watchers) {
    Emit(session_id, MakeEvent(v1::Event::NODE_DELETED, path));
    sessions_.at(session_id).watches.erase(path);
  }
  if (node.meta.ephemeral_owner() != 0) {
    sessions_.at(node.meta.ephemeral_owner()).ephemeral_nodes.erase(path);
  }
  if (node.lock_delay_until_ms != 0) {
    lock_delay_ends_.erase({node.lock_delay_until_ms, path});
  }
  nodes_.erase(path);
  Node& parent = NodeAt(ParentPath(path));
  parent.children.erase(std::string(BaseName(path)));
  EmitToWatchers(parent, v1::Event::CHILD_REMOVED, path);
}

void StateMachine::Impl::ForceDeleteNode(std::string path) {
  Node& node = NodeAt(path);
  NoteElection(path);
  for (const auto& [session_id, holder] : node.holders) {
    sessions_.at(session_id).held_locks.erase(path);
    v1::Event event = MakeEvent(v1::Event::LOCK_LOST, path);
    *event.mutable_sequencer() =
        MakeSequencer(path, node, session_id, holder.mode);
    Emit(session_id, std::move(event));
  }
  node.holders.clear();
  while (!node.waiters.empty()) {
    const Waiter waiter = node.waiters.front();
    RemoveWaiter(node, waiter.session_id, waiter.request_id);
    Record(sessions_.at(waiter.session_id), waiter.request_id,
           ErrorResult(absl::FailedPreconditionError(
               absl::StrCat("node ", Quote(path),
                            " was deleted (its ephemeral owner's "
                            "session ended)"))));
  }
  EraseNode(std::move(path));
}

absl::StatusOr<v1::CreateNodeResponse> StateMachine::Impl::CreateNode(
    Session& session, const v1::CreateNodeRequest& request) {
  if (absl::Status status = ValidatePathImpl(request.path(), limits_);
      !status.ok()) {
    return status;
  }
  if (request.path() == "/") {
    return absl::AlreadyExistsError("the root node always exists");
  }
  if (absl::Status status = CheckContentSize(request.content()); !status.ok()) {
    return status;
  }
  std::string path = request.path();
  Node* parent = FindNode(ParentPath(path));
  if (request.sequential() && parent != nullptr) {
    absl::StrAppendFormat(&path, "%010d", parent->next_sequence);
    if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = CheckCreate(
          path, request.ephemeral() ? &session : nullptr, /*extra_nodes=*/0);
      !status.ok()) {
    return status;
  }
  if (request.sequential()) parent->next_sequence++;
  Node& node =
      AddNode(path, request.content(), request.ephemeral() ? session.id : 0);
  v1::CreateNodeResponse response;
  *response.mutable_meta() = MetaOf(node);
  response.set_path(std::move(path));
  return response;
}

absl::StatusOr<v1::SetNodeResponse> StateMachine::Impl::SetNode(
    const v1::SetNodeRequest& request) {
  if (absl::Status status = ValidatePathImpl(request.path(), limits_);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckContentSize(request.content()); !status.ok()) {
    return status;
  }
  Node* node = FindNode(request.path());
  if (node == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("node ", Quote(request.path()), " does not exist"));
  }
  if (request.expected_content_generation() != 0 &&
      request.expected_content_generation() !=
          node->meta.content_generation()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "expected content generation ", request.expected_content_generation(),
        " but ", Quote(request.path()), " is at ",
        node->meta.content_generation()));
  }
  SetContent(request.path(), *node, request.content());
  v1::SetNodeResponse response;
  *response.mutable_meta() = MetaOf(*node);
  return response;
}

absl::StatusOr<v1::DeleteNodeResponse> StateMachine::Impl::DeleteNode(
    const v1::DeleteNodeRequest& request) {
  const std::string& path = request.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  if (path == "/") {
    return absl::InvalidArgumentError("the root node cannot be deleted");
  }
  const Node* node = FindNode(path);
  if (node == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("node ", Quote(path), " does not exist"));
  }
  if (request.expected_content_generation() != 0 &&
      request.expected_content_generation() !=
          node->meta.content_generation()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "expected content generation ", request.expected_content_generation(),
        " but ", Quote(path), " is at ", node->meta.content_generation()));
  }
  if (!node->children.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", Quote(path), " has ", node->children.size(), " children"));
  }
  if (!node->holders.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the lock on ", Quote(path), " is held by session ",
                     node->holders.begin()->first));
  }
  if (!node->waiters.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the lock on ", Quote(path), " has ", node->waiters.size(),
                     " waiters"));
  }
  if (node->lock_delay_until_ms != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("the lock on ", Quote(path), " is in lock-delay until ",
                     node->lock_delay_until_ms));
  }
  EraseNode(path);
  return v1::DeleteNodeResponse();
}

absl::StatusOr<v1::WatchResponse> StateMachine::Impl::Watch(
    Session& session, const v1::WatchRequest& request) {
  const std::string& path = request.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  Node* node = FindNode(path);
  if (request.remove()) {
    if (node != nullptr) node->watchers.erase(session.id);
    session.watches.erase(path);
    return v1::WatchResponse();
  }
  if (node == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("node ", Quote(path), " does not exist"));
  }
  if (session.watches.count(path) == 0 &&
      session.watches.size() >= limits_.max_watches_per_session) {
    return absl::ResourceExhaustedError(
        absl::StrCat("session ", session.id, " has max_watches_per_session (",
                     limits_.max_watches_per_session, ") watches"));
  }
  session.watches.insert(path);
  node->watchers.insert(session.id);
  return v1::WatchResponse();
}

// ---------------------------------------------------------------- locks

bool StateMachine::Impl::IsFree(const Node& node, LockMode mode) {
  if (node.lock_delay_until_ms != 0) return false;
  if (node.holders.empty()) return true;
  return mode == v1::SHARED && node.holders.begin()->second.mode == v1::SHARED;
}

absl::Status StateMachine::Impl::CheckWaitTimeout(
    int64_t wait_timeout_ms) const {
  if (wait_timeout_ms < 0 || wait_timeout_ms > limits_.max_wait_timeout_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("wait_timeout_ms ", wait_timeout_ms, " is outside [0, ",
                     limits_.max_wait_timeout_ms, "]"));
  }
  return absl::OkStatus();
}

absl::Status StateMachine::Impl::CheckLockDelay(int64_t lock_delay_ms) const {
  if (lock_delay_ms < 0 || lock_delay_ms > limits_.max_lock_delay_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("lock_delay_ms ", lock_delay_ms, " is outside [0, ",
                     limits_.max_lock_delay_ms, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<StateMachine::Impl::LockPlan> StateMachine::Impl::PlanLock(
    const Session& session, absl::string_view path, const Node* node,
    LockMode mode, int64_t wait_timeout_ms) const {
  if (node == nullptr) return LockPlan::kGrant;
  auto held = node->holders.find(session.id);
  if (held != node->holders.end()) {
    if (held->second.mode == mode) return LockPlan::kAlreadyHeld;
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session.id, " holds the lock on ", Quote(path),
                     " in ", ModeName(held->second.mode), " mode"));
  }
  for (const Waiter& waiter : node->waiters) {
    if (waiter.session_id == session.id) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", session.id, " already waits for the lock on ",
          Quote(path), " (request ", waiter.request_id, ")"));
    }
  }
  if (IsFree(*node, mode) && node->waiters.empty()) return LockPlan::kGrant;
  if (wait_timeout_ms == 0) {
    const bool conflicts =
        !node->holders.empty() &&
        (mode == v1::EXCLUSIVE ||
         node->holders.begin()->second.mode == v1::EXCLUSIVE);
    if (conflicts) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the lock on ", Quote(path), " is held by session ",
          node->holders.begin()->first,
          node->holders.size() > 1
              ? absl::StrCat(" and ", node->holders.size() - 1, " more")
              : ""));
    }
    if (node->lock_delay_until_ms != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("the lock on ", Quote(path), " is in lock-delay until ",
                       node->lock_delay_until_ms));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("the lock on ", Quote(path), " has ", node->waiters.size(),
                     " earlier waiters (first: session ",
                     node->waiters.front().session_id, ")"));
  }
  if (node->waiters.size() >= limits_.max_waiters_per_lock) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the lock on ", Quote(path), " has max_waiters_per_lock (",
                     limits_.max_waiters_per_lock, ") waiters"));
  }
  return LockPlan::kPark;
}

v1::Sequencer StateMachine::Impl::MakeSequencer(absl::string_view path,
                                                const Node& node,
                                                uint64_t session_id,
                                                LockMode mode) const {
  v1::Sequencer sequencer;
  sequencer.set_path(std::string(path));
  sequencer.set_mode(mode);
  sequencer.set_lock_generation(node.meta.lock_generation());
  sequencer.set_session_id(session_id);
  sequencer.set_instance(node.meta.instance());
  return sequencer;
}

v1::Sequencer StateMachine::Impl::Grant(const std::string& path, Node& node,
                                        Session& session, LockMode mode,
                                        int64_t lock_delay_ms) {
  CHECK(IsFree(node, mode)) << path;
  NoteElection(path);
  if (mode == v1::EXCLUSIVE) {
    node.meta.set_lock_generation(node.meta.lock_generation() + 1);
  }
  node.holders[session.id] = Holder{mode, lock_delay_ms};
  session.held_locks.insert(path);
  return MakeSequencer(path, node, session.id, mode);
}

void StateMachine::Impl::Park(const std::string& path, Node& node,
                              Waiter waiter) {
  for (const auto& [holder_id, holder] : node.holders) {
    v1::Event event = MakeEvent(v1::Event::LOCK_CONFLICT, path);
    *event.mutable_sequencer() =
        MakeSequencer(path, node, holder_id, holder.mode);
    event.set_other_session_id(waiter.session_id);
    Emit(holder_id, std::move(event));
  }
  wait_deadlines_.insert(
      {waiter.deadline_ms, waiter.session_id, waiter.request_id});
  sessions_.at(waiter.session_id).parked[waiter.request_id] = path;
  node.waiters.push_back(std::move(waiter));
}

void StateMachine::Impl::RemoveWaiter(Node& node, uint64_t session_id,
                                      uint64_t request_id) {
  auto it = std::find_if(node.waiters.begin(), node.waiters.end(),
                         [&](const Waiter& waiter) {
                           return waiter.session_id == session_id &&
                                  waiter.request_id == request_id;
                         });
  CHECK(it != node.waiters.end());
  wait_deadlines_.erase({it->deadline_ms, session_id, request_id});
  sessions_.at(session_id).parked.erase(request_id);
  node.waiters.erase(it);
}

void StateMachine::Impl::ReleaseLock(std::string path, Session& session,
                                     bool expired) {
  Node& node = NodeAt(path);
  NoteElection(path);
  auto it = node.holders.find(session.id);
  CHECK(it != node.holders.end());
  const Holder holder = it->second;
  node.holders.erase(it);
  session.held_locks.erase(path);
  if (expired && holder.mode == v1::EXCLUSIVE && holder.lock_delay_ms > 0) {
    CHECK(node.holders.empty() && node.lock_delay_until_ms == 0) << path;
    node.lock_delay_until_ms = now_ms_ + holder.lock_delay_ms;
    lock_delay_ends_.insert({node.lock_delay_until_ms, path});
  }
  GrantWaiters(path);
}

void StateMachine::Impl::GrantWaiters(const std::string& path) {
  Node& node = NodeAt(path);
  while (!node.waiters.empty() && IsFree(node, node.waiters.front().mode)) {
    const Waiter waiter = node.waiters.front();
    RemoveWaiter(node, waiter.session_id, waiter.request_id);
    Session& session = sessions_.at(waiter.session_id);
    const v1::Sequencer sequencer =
        Grant(path, node, session, waiter.mode, waiter.lock_delay_ms);
    statepb::Result result;
    if (waiter.campaign) {
      SetContent(path, node, waiter.campaign_value);
      *result.mutable_campaign() =
          CampaignResponseFor(*ElectionName(path), sequencer);
    } else {
      *result.mutable_acquire()->mutable_sequencer() = sequencer;
    }
    v1::Event event = MakeEvent(v1::Event::LOCK_ACQUIRED, path);
    *event.mutable_sequencer() = sequencer;
    Emit(session.id, std::move(event));
    Record(session, waiter.request_id, std::move(result));
  }
}

absl::StatusOr<std::optional<v1::AcquireResponse>> StateMachine::Impl::Acquire(
    Session& session, uint64_t request_id, const v1::AcquireRequest& request) {
  const std::string& path = request.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  if (request.mode() != v1::EXCLUSIVE && request.mode() != v1::SHARED) {
    return absl::InvalidArgumentError("mode must be EXCLUSIVE or SHARED");
  }
  if (absl::Status status = CheckWaitTimeout(request.wait_timeout_ms());
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckLockDelay(request.lock_delay_ms());
      !status.ok()) {
    return status;
  }
  Node* node = FindNode(path);
  if (node == nullptr) {
    if (absl::Status status = CheckCreate(path, nullptr, 0); !status.ok()) {
      return status;
    }
  }
  absl::StatusOr<LockPlan> plan =
      PlanLock(session, path, node, request.mode(), request.wait_timeout_ms());
  if (!plan.ok()) return plan.status();
  if (node == nullptr) node = &AddNode(path, "", 0);
  v1::AcquireResponse response;
  switch (*plan) {
    case LockPlan::kAlreadyHeld:
      *response.mutable_sequencer() =
          MakeSequencer(path, *node, session.id, request.mode());
      return response;
    case LockPlan::kGrant:
      *response.mutable_sequencer() =
          Grant(path, *node, session, request.mode(), request.lock_delay_ms());
      return response;
    case LockPlan::kPark:
      Park(path, *node,
           Waiter{session.id, request_id, request.mode(),
                  now_ms_ + request.wait_timeout_ms(), request.lock_delay_ms(),
                  /*campaign=*/false, /*campaign_value=*/""});
      return std::nullopt;
  }
  LOG(FATAL) << "unreachable";
}

absl::StatusOr<v1::ReleaseResponse> StateMachine::Impl::Release(
    Session& session, const v1::ReleaseRequest& request) {
  const std::string& path = request.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  if (session.held_locks.count(path) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", session.id, " does not hold the lock on ", Quote(path)));
  }
  ReleaseLock(path, session, /*expired=*/false);
  return v1::ReleaseResponse();
}

v1::CheckSequencerResponse StateMachine::Impl::CheckSequencer(
    const v1::Sequencer& sequencer) const {
  v1::CheckSequencerResponse response;
  auto invalid = [&response](std::string reason) {
    response.set_reason(std::move(reason));
    return response;
  };
  const std::string& path = sequencer.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return invalid(std::string(status.message()));
  }
  const Node* node = FindNode(path);
  if (node == nullptr) {
    return invalid(absl::StrCat("node ", Quote(path), " does not exist"));
  }
  if (node->meta.instance() != sequencer.instance()) {
    return invalid(absl::StrCat("node ", Quote(path), " is instance ",
                                node->meta.instance(), ", not ",
                                sequencer.instance(), " (it was recreated)"));
  }
  if (node->meta.lock_generation() != sequencer.lock_generation()) {
    return invalid(absl::StrCat(
        "the lock on ", Quote(path), " is at generation ",
        node->meta.lock_generation(), ", not ", sequencer.lock_generation()));
  }
  auto holder = node->holders.find(sequencer.session_id());
  if (holder == node->holders.end() ||
      holder->second.mode != sequencer.mode()) {
    return invalid(absl::StrCat(
        "session ", sequencer.session_id(), " does not hold the lock on ",
        Quote(path), " in ", v1::LockMode_Name(sequencer.mode()), " mode"));
  }
  response.set_valid(true);
  return response;
}

// ---------------------------------------------------------------- elections

std::optional<v1::LeaderInfo> StateMachine::Impl::LeaderOf(
    absl::string_view name) const {
  const Node* node = FindNode(ChildPath(kElectionDir, name));
  if (node == nullptr || node->holders.empty() ||
      node->holders.begin()->second.mode != v1::EXCLUSIVE) {
    return std::nullopt;
  }
  v1::LeaderInfo leader;
  leader.set_name(std::string(name));
  leader.set_value(node->content);
  leader.set_session_id(node->holders.begin()->first);
  leader.set_lock_generation(node->meta.lock_generation());
  return leader;
}

v1::CampaignResponse StateMachine::Impl::CampaignResponseFor(
    absl::string_view name, const v1::Sequencer& sequencer) const {
  v1::CampaignResponse response;
  *response.mutable_leader() = *LeaderOf(name);
  *response.mutable_sequencer() = sequencer;
  return response;
}

void StateMachine::Impl::NoteElection(absl::string_view path) {
  std::optional<absl::string_view> name = ElectionName(path);
  if (!name.has_value() || elections_before_.count(*name) != 0) return;
  elections_before_.emplace(std::string(*name), LeaderOf(*name));
}

absl::StatusOr<std::optional<v1::CampaignResponse>>
StateMachine::Impl::Campaign(Session& session, uint64_t request_id,
                             const v1::CampaignRequest& request) {
  if (absl::Status status =
          ValidateName(request.name(), "election name", limits_);
      !status.ok()) {
    return status;
  }
  const std::string path = ChildPath(kElectionDir, request.name());
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckContentSize(request.value()); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckWaitTimeout(request.wait_timeout_ms());
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckLockDelay(request.lock_delay_ms());
      !status.ok()) {
    return status;
  }
  const bool dir_missing = FindNode(kElectionDir) == nullptr;
  Node* node = FindNode(path);
  if (dir_missing) {
    if (absl::Status status =
            CheckCreate(kElectionDir, nullptr, /*extra_nodes=*/1);
        !status.ok()) {
      return status;
    }
  } else if (node == nullptr) {
    if (absl::Status status = CheckCreate(path, nullptr, 0); !status.ok()) {
      return status;
    }
  }
  absl::StatusOr<LockPlan> plan =
      PlanLock(session, path, node, v1::EXCLUSIVE, request.wait_timeout_ms());
  if (!plan.ok()) return plan.status();
  if (dir_missing) AddNode(std::string(kElectionDir), "", 0);
  if (node == nullptr) node = &AddNode(path, "", 0);
  switch (*plan) {
    case LockPlan::kAlreadyHeld:
      return CampaignResponseFor(
          request.name(),
          MakeSequencer(path, *node, session.id, v1::EXCLUSIVE));
    case LockPlan::kGrant: {
      const v1::Sequencer sequencer =
          Grant(path, *node, session, v1::EXCLUSIVE, request.lock_delay_ms());
      SetContent(path, *node, request.value());
      return CampaignResponseFor(request.name(), sequencer);
    }
    case LockPlan::kPark:
      Park(path, *node,
           Waiter{session.id, request_id, v1::EXCLUSIVE,
                  now_ms_ + request.wait_timeout_ms(), request.lock_delay_ms(),
                  /*campaign=*/true, request.value()});
      return std::nullopt;
  }
  LOG(FATAL) << "unreachable";
}

absl::StatusOr<v1::ProclaimResponse> StateMachine::Impl::Proclaim(
    Session& session, const v1::ProclaimRequest& request) {
  if (absl::Status status =
          ValidateName(request.name(), "election name", limits_);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckContentSize(request.value()); !status.ok()) {
    return status;
  }
  const std::optional<v1::LeaderInfo> leader = LeaderOf(request.name());
  if (!leader.has_value() || leader->session_id() != session.id) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session.id, " does not lead election ",
                     Quote(request.name())));
  }
  const std::string path = ChildPath(kElectionDir, request.name());
  SetContent(path, NodeAt(path), request.value());
  v1::ProclaimResponse response;
  *response.mutable_leader() = *LeaderOf(request.name());
  return response;
}

absl::StatusOr<v1::ResignResponse> StateMachine::Impl::Resign(
    Session& session, const v1::ResignRequest& request) {
  if (absl::Status status =
          ValidateName(request.name(), "election name", limits_);
      !status.ok()) {
    return status;
  }
  const std::optional<v1::LeaderInfo> leader = LeaderOf(request.name());
  if (!leader.has_value() || leader->session_id() != session.id) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session.id, " does not lead election ",
                     Quote(request.name())));
  }
  ReleaseLock(ChildPath(kElectionDir, request.name()), session,
              /*expired=*/false);
  return v1::ResignResponse();
}

absl::StatusOr<v1::GetLeaderResponse> StateMachine::Impl::GetLeader(
    absl::string_view name) const {
  if (absl::Status status = ValidateName(name, "election name", limits_);
      !status.ok()) {
    return status;
  }
  std::optional<v1::LeaderInfo> leader = LeaderOf(name);
  if (!leader.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("election ", Quote(name), " has no leader"));
  }
  v1::GetLeaderResponse response;
  *response.mutable_leader() = *std::move(leader);
  return response;
}

// ---------------------------------------------------------------- events

void StateMachine::Impl::Emit(uint64_t session_id, v1::Event event) {
  Session& session = sessions_.at(session_id);
  event.set_sequence(session.next_event_sequence++);
  event.set_time_ms(now_ms_);
  session.events.push_back(std::move(event));
  while (session.events.size() > limits_.max_events_per_session) {
    session.events.pop_front();
    ++session.events_lost;
  }
  sessions_with_events_.insert(session_id);
}

void StateMachine::Impl::EmitToWatchers(const Node& node, v1::Event::Type type,
                                        absl::string_view path) {
  for (uint64_t session_id : node.watchers) {
    Emit(session_id, MakeEvent(type, path));
  }
}

// ---------------------------------------------------------------- reads

absl::StatusOr<v1::GetNodeResponse> StateMachine::Impl::GetNode(
    absl::string_view path) const {
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  const Node* node = FindNode(path);
  if (node == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("node ", Quote(path), " does not exist"));
  }
  v1::GetNodeResponse response;
  response.set_content(node->content);
  *response.mutable_meta() = MetaOf(*node);
  return response;
}

absl::StatusOr<v1::StatNodeResponse> StateMachine::Impl::StatNode(
    absl::string_view path) const {
  absl::StatusOr<v1::GetNodeResponse> node = GetNode(path);
  if (!node.ok()) return node.status();
  v1::StatNodeResponse response;
  *response.mutable_meta() = node->meta();
  return response;
}

absl::StatusOr<v1::ListChildrenResponse> StateMachine::Impl::ListChildren(
    absl::string_view path) const {
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  const Node* node = FindNode(path);
  if (node == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("node ", Quote(path), " does not exist"));
  }
  v1::ListChildrenResponse response;
  for (const std::string& name : node->children) response.add_names(name);
  return response;
}

v1::ListSessionsResponse StateMachine::Impl::ListSessions() const {
  v1::ListSessionsResponse response;
  ListBudget budget(limits_);
  for (const auto& [id, session] : sessions_) {
    v1::SessionInfo info;
    info.set_session_id(id);
    info.set_client_name(session.client_name);
    info.set_ttl_ms(session.ttl_ms);
    info.set_lease_remaining_ms(session.expires_at_ms - now_ms_);
    for (const std::string& path : session.held_locks) {
      if (static_cast<size_t>(info.locks_size()) >=
          limits_.max_listed_locks_per_session) {
        break;
      }
      info.add_locks(path);
    }
    info.set_num_locks(session.held_locks.size());
    info.set_ephemeral_nodes(session.ephemeral_nodes.size());
    if (!budget.Take(info)) {
      response.set_truncated(true);
      break;
    }
    *response.add_sessions() = std::move(info);
  }
  return response;
}

absl::StatusOr<v1::ListLocksResponse> StateMachine::Impl::ListLocks(
    absl::string_view prefix) const {
  if (prefix.empty()) prefix = "/";
  if (absl::Status status = ValidatePathImpl(prefix, limits_); !status.ok()) {
    return status;
  }
  // The nodes whose lock is in use, from the indexes (locks held per
  // session, parked requests, lock-delays) rather than a walk of the
  // namespace.
  std::set<absl::string_view> paths;
  auto consider = [&](absl::string_view path) {
    if (Covers(prefix, path)) paths.insert(path);
  };
  for (const auto& [id, session] : sessions_) {
    for (const std::string& path : session.held_locks) consider(path);
    for (const auto& [request_id, path] : session.parked) consider(path);
  }
  for (const auto& [until_ms, path] : lock_delay_ends_) consider(path);

  v1::ListLocksResponse response;
  ListBudget budget(limits_);
  for (absl::string_view path : paths) {
    const Node& node = *FindNode(path);
    v1::LockInfo info;
    info.set_path(std::string(path));
    info.set_lock_generation(node.meta.lock_generation());
    for (const auto& [session_id, holder] : node.holders) {
      v1::LockHolder* listed = info.add_holders();
      listed->set_session_id(session_id);
      listed->set_mode(holder.mode);
    }
    for (const Waiter& waiter : node.waiters) {
      v1::LockWaiter* listed = info.add_waiters();
      listed->set_session_id(waiter.session_id);
      listed->set_mode(waiter.mode);
      listed->set_wait_remaining_ms(waiter.deadline_ms - now_ms_);
      listed->set_campaign(waiter.campaign);
    }
    if (node.lock_delay_until_ms != 0) {
      info.set_lock_delay_remaining_ms(node.lock_delay_until_ms - now_ms_);
    }
    if (!budget.Take(info)) {
      response.set_truncated(true);
      break;
    }
    *response.add_locks() = std::move(info);
  }
  return response;
}

absl::StatusOr<int64_t> StateMachine::Impl::SessionExpiresAt(
    uint64_t session_id) const {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "session ", session_id, " does not exist (expired or closed)"));
  }
  return it->second.expires_at_ms;
}

absl::Status StateMachine::Impl::CheckSecret(
    uint64_t session_id, absl::string_view secret_digest) const {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "session ", session_id, " does not exist (expired or closed)"));
  }
  if (it->second.secret_digest != secret_digest) {
    return WrongSecret(session_id);
  }
  return absl::OkStatus();
}

std::vector<uint64_t> StateMachine::Impl::SessionIds() const {
  std::vector<uint64_t> ids;
  ids.reserve(sessions_.size());
  for (const auto& [id, session] : sessions_) ids.push_back(id);
  return ids;
}

std::vector<v1::Event> StateMachine::Impl::PendingEvents(
    uint64_t session_id, uint64_t after_sequence) const {
  std::vector<v1::Event> events;
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return events;
  for (const v1::Event& event : it->second.events) {
    if (event.sequence() > after_sequence) events.push_back(event);
  }
  return events;
}

uint64_t StateMachine::Impl::EventsLost(uint64_t session_id) const {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? 0 : it->second.events_lost;
}

// ---------------------------------------------------------------- StateMachine

StateMachine::StateMachine(const Limits& limits)
    : impl_(std::make_unique<Impl>(limits)) {}

StateMachine::~StateMachine() = default;

ApplyResult StateMachine::Apply(const statepb::Command& command) {
  return impl_->Apply(command);
}

absl::StatusOr<v1::GetNodeResponse> StateMachine::GetNode(
    std::string_view path) const {
  return impl_->GetNode(ToAbsl(path));
}

absl::StatusOr<v1::StatNodeResponse> StateMachine::StatNode(
    std::string_view path) const {
  return impl_->StatNode(ToAbsl(path));
}

absl::StatusOr<v1::ListChildrenResponse> StateMachine::ListChildren(
    std::string_view path) const {
  return impl_->ListChildren(ToAbsl(path));
}

v1::CheckSequencerResponse StateMachine::CheckSequencer(
    const v1::Sequencer& sequencer) const {
  return impl_->CheckSequencer(sequencer);
}

absl::StatusOr<v1::GetLeaderResponse> StateMachine::GetLeader(
    std::string_view name) const {
  return impl_->GetLeader(ToAbsl(name));
}

v1::ListSessionsResponse StateMachine::ListSessions() const {
  return impl_->ListSessions();
}

absl::StatusOr<v1::ListLocksResponse> StateMachine::ListLocks(
    std::string_view prefix) const {
  return impl_->ListLocks(ToAbsl(prefix));
}

int64_t StateMachine::now_ms() const { return impl_->now_ms(); }

uint64_t StateMachine::epoch() const { return impl_->epoch(); }

std::optional<int64_t> StateMachine::NextDeadline() const {
  return impl_->NextDeadline();
}

absl::StatusOr<int64_t> StateMachine::SessionExpiresAt(
    uint64_t session_id) const {
  return impl_->SessionExpiresAt(session_id);
}

absl::Status StateMachine::CheckSecret(uint64_t session_id,
                                       std::string_view secret_digest) const {
  return impl_->CheckSecret(session_id, ToAbsl(secret_digest));
}

std::vector<uint64_t> StateMachine::SessionIds() const {
  return impl_->SessionIds();
}

size_t StateMachine::session_count() const { return impl_->session_count(); }

std::vector<v1::Event> StateMachine::PendingEvents(
    uint64_t session_id, uint64_t after_sequence) const {
  return impl_->PendingEvents(session_id, after_sequence);
}

uint64_t StateMachine::EventsLost(uint64_t session_id) const {
  return impl_->EventsLost(session_id);
}

const v1::RequestHeader* HeaderOf(const statepb::Command& command) {
  const v1::RequestHeader* header = nullptr;
  switch (command.op_case()) {
    case statepb::Command::kCreateSession:
    case statepb::Command::kCloseSession:
      header = &command.close_session().header();
      break;
    case statepb::Command::kCreateNode:
      header = &command.create_node().header();
      break;
    case statepb::Command::kSetNode:
      header = &command.set_node().header();
      break;
    case statepb::Command::kDeleteNode:
      header = &command.delete_node().header();
      break;
    case statepb::Command::kWatch:
      header = &command.watch().header();
      break;
    case statepb::Command::kAcquire:
      header = &command.acquire().header();
      break;
    case statepb::Command::kRelease:
      header = &command.release().header();
      break;
    case statepb::Command::kCampaign:
      header = &command.campaign().header();
      break;
    case statepb::Command::kProclaim:
      header = &command.proclaim().header();
      break;
    case statepb::Command::kResign:
      header = &command.resign().header();
      break;
    case statepb::Command::kStartEpoch:
    case statepb::Command::kRenewSessions:
    case statepb::Command::kTick:
    case statepb::Command::OP_NOT_SET:
      break;
  }
  return header;
}

v1::RequestHeader* MutableHeaderOf(statepb::Command& command) {
  // Not HeaderOf() cast: the const accessors of an unset header return the
  // shared default instance.
  switch (command.op_case()) {
    case statepb::Command::kCloseSession:
      return command.mutable_close_session()->mutable_header();
    case statepb::Command::kCreateNode:
      return command.mutable_create_node()->mutable_header();
    case statepb::Command::kSetNode:
      return command.mutable_set_node()->mutable_header();
    case statepb::Command::kDeleteNode:
      return command.mutable_delete_node()->mutable_header();
    case statepb::Command::kWatch:
      return command.mutable_watch()->mutable_header();
    case statepb::Command::kAcquire:
      return command.mutable_acquire()->mutable_header();
    case statepb::Command::kRelease:
      return command.mutable_release()->mutable_header();
    case statepb::Command::kCampaign:
      return command.mutable_campaign()->mutable_header();
    case statepb::Command::kProclaim:
      return command.mutable_proclaim()->mutable_header();
    case statepb::Command::kResign:
      return command.mutable_resign()->mutable_header();
    case statepb::Command::kCreateSession:
    case statepb::Command::kStartEpoch:
    case statepb::Command::kRenewSessions:
    case statepb::Command::kTick:
    case statepb::Command::OP_NOT_SET:
      break;
  }
  return nullptr;
}

RequestKey RequestKeyOf(const statepb::Command& command) {
  if (command.has_create_session()) {
    return {0, command.create_session().nonce()};
  }
  const v1::RequestHeader* header = HeaderOf(command);
  if (header == nullptr) return {};
  return {header->session_id(), header->request_id()};
}

absl::Status WrongSecret(uint64_t session_id) {
  return absl::PermissionDeniedError(absl::StrCat(
      "wrong or missing secret for session ", session_id,
      ": a request must carry the session_secret its CreateSession returned"));
}

}  // namespace lockd::sessions
