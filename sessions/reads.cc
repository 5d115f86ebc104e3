// Reads at the leader: nodes, sequencers, leaders, and operator listings.

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "sessions/paths.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {

namespace {

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

}  // namespace

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
      listed->set_wait_remaining_ms(waiter.deadline_ms == kNoDeadline
                                        ? -1
                                        : waiter.deadline_ms - now_ms_);
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

}  // namespace lockd::sessions
