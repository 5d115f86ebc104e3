// Rights: the ACL names on nodes, the ACL nodes under /acl that list
// principals, and SetAcl.

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sessions/paths.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {
namespace {

absl::string_view RightName(Right right) {
  switch (right) {
    case Right::kRead:
      return "read";
    case Right::kWrite:
      return "write";
    case Right::kChangeAcl:
      return "change-ACL";
  }
  return "unknown";
}

const std::string& AclName(const v1::NodeMeta& meta, Right right) {
  switch (right) {
    case Right::kRead:
      return meta.read_acl();
    case Right::kWrite:
      return meta.write_acl();
    case Right::kChangeAcl:
      return meta.change_acl();
  }
  return meta.change_acl();
}

// True iff `listing`, an ACL node's content, names `principal` or "*".
bool Lists(absl::string_view listing, absl::string_view principal) {
  for (absl::string_view entry : absl::StrSplit(
           listing, absl::ByAnyChar(" ,\t\r\n"), absl::SkipEmpty())) {
    if (entry == "*" || (!principal.empty() && entry == principal)) {
      return true;
    }
  }
  return false;
}

}  // namespace

absl::Status StateMachine::Impl::CheckAccess(absl::string_view path,
                                             Right right,
                                             const Access& access) const {
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  if (access.admin) return absl::OkStatus();
  // A missing node has the rights it would inherit; the root always exists.
  absl::string_view at = path;
  const Node* node = FindNode(at);
  while (node == nullptr) {
    at = ParentPath(at);
    node = FindNode(at);
  }
  const std::string& acl = AclName(node->meta, right);
  if (acl.empty()) return absl::OkStatus();
  const std::string acl_path = ChildPath(kAclDir, acl);
  const Node* listing = FindNode(acl_path);
  if (listing != nullptr && Lists(listing->content, access.principal)) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      access.principal.empty()
          ? std::string("an anonymous client (no client certificate)")
          : absl::StrCat("principal ", Quote(access.principal)),
      " lacks the ", RightName(right), " right on ", Quote(at), ": its ",
      RightName(right), " ACL is ", Quote(acl), ", and ", acl_path,
      listing == nullptr ? " does not exist" : " does not list it"));
}

absl::StatusOr<v1::SetAclResponse> StateMachine::Impl::SetAcl(
    const v1::SetAclRequest& request) {
  const std::string& path = request.path();
  if (absl::Status status = ValidatePathImpl(path, limits_); !status.ok()) {
    return status;
  }
  for (const std::string* name :
       {&request.read_acl(), &request.write_acl(), &request.change_acl()}) {
    if (name->empty()) continue;
    if (absl::Status status = ValidateName(*name, "ACL name", limits_);
        !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = CheckAccess(path, Right::kChangeAcl, access_);
      !status.ok()) {
    return status;
  }
  Node* node = FindNode(path);
  if (node == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("node ", Quote(path), " does not exist"));
  }
  if (request.expected_acl_generation() != 0 &&
      request.expected_acl_generation() != node->meta.acl_generation()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ACL generation of ", Quote(path), " is ", node->meta.acl_generation(),
        ", not the expected ", request.expected_acl_generation()));
  }
  node->meta.set_read_acl(request.read_acl());
  node->meta.set_write_acl(request.write_acl());
  node->meta.set_change_acl(request.change_acl());
  node->meta.set_acl_generation(node->meta.acl_generation() + 1);
  v1::SetAclResponse response;
  *response.mutable_meta() = MetaOf(*node);
  return response;
}

}  // namespace lockd::sessions
