// The namespace: create, set, delete and watch nodes.

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "sessions/checksum.h"
#include "sessions/paths.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {

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
  node.meta.set_read_acl(parent.meta.read_acl());
  node.meta.set_write_acl(parent.meta.write_acl());
  node.meta.set_change_acl(parent.meta.change_acl());
  node.meta.set_acl_generation(1);
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
  if (absl::Status status = CheckNotElection(request.path(), "Nodes.Create");
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          CheckAccess(ParentPath(request.path()), Right::kWrite, access_);
      !status.ok()) {
    return status;
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
  if (absl::Status status = CheckNotElection(request.path(), "Nodes.Set");
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckAccess(request.path(), Right::kWrite, access_);
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
  if (absl::Status status = CheckNotElection(path, "Nodes.Delete");
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckAccess(path, Right::kWrite, access_);
      !status.ok()) {
    return status;
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
    return WithErrorTime(
        absl::FailedPreconditionError(absl::StrCat(
            "the lock on ", Quote(path), " is in lock-delay until ",
            CellTimeText(node->lock_delay_until_ms, now_ms_))),
        node->lock_delay_until_ms);
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
  if (absl::Status status = CheckAccess(path, Right::kRead, access_);
      !status.ok() && !request.remove()) {
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

}  // namespace lockd::sessions
