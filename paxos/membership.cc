#include "paxos/membership.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lockd::paxos {
namespace {

bool SameMember(const paxospb::Member& a, const paxospb::Member& b) {
  return a.id() == b.id() && a.voter() == b.voter() &&
         a.client_address() == b.client_address() &&
         a.peer_address() == b.peer_address();
}

}  // namespace

paxospb::Membership WithMember(const paxospb::Membership& current,
                               const paxospb::Member& member) {
  paxospb::Membership next = current;
  next.clear_members();
  bool placed = false;
  for (const paxospb::Member& existing : current.members()) {
    if (!placed && member.id() <= existing.id()) {
      *next.add_members() = member;
      placed = true;
    }
    if (existing.id() != member.id()) *next.add_members() = existing;
  }
  if (!placed) *next.add_members() = member;
  return next;
}

paxospb::Membership WithoutMember(const paxospb::Membership& current,
                                  uint32_t id) {
  paxospb::Membership next = current;
  next.clear_members();
  for (const paxospb::Member& existing : current.members()) {
    if (existing.id() != id) *next.add_members() = existing;
  }
  if (FindMember(current, id) != nullptr) next.add_retired_ids(id);
  return next;
}

paxospb::Membership MembershipOfVoters(const std::vector<uint32_t>& ids) {
  std::vector<uint32_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  paxospb::Membership membership;
  for (uint32_t id : sorted) {
    paxospb::Member* member = membership.add_members();
    member->set_id(id);
    member->set_voter(true);
  }
  return membership;
}

const paxospb::Member* FindMember(const paxospb::Membership& membership,
                                  uint32_t id) {
  for (const paxospb::Member& member : membership.members()) {
    if (member.id() == id) return &member;
  }
  return nullptr;
}

bool IsVoter(const paxospb::Membership& membership, uint32_t id) {
  const paxospb::Member* member = FindMember(membership, id);
  return member != nullptr && member->voter();
}

std::vector<uint32_t> Voters(const paxospb::Membership& membership) {
  std::vector<uint32_t> voters;
  for (const paxospb::Member& member : membership.members()) {
    if (member.voter()) voters.push_back(member.id());
  }
  return voters;
}

std::string MembershipString(const paxospb::Membership& membership) {
  return absl::StrJoin(membership.members(), ",",
                       [](std::string* out, const paxospb::Member& member) {
                         absl::StrAppend(out, member.id(),
                                         member.voter() ? "" : " (learner)");
                       });
}

absl::Status ValidateMembership(const paxospb::Membership& membership) {
  uint32_t previous = 0;
  bool any_voter = false;
  for (const paxospb::Member& member : membership.members()) {
    if (member.id() == 0 || member.id() > 0xffff) {
      return absl::InvalidArgumentError(
          absl::StrCat("member id ", member.id(), " must be in [1, 65535]"));
    }
    if (member.id() <= previous) {
      return absl::InvalidArgumentError(
          absl::StrCat("members must be sorted by id and listed once; got ",
                       MembershipString(membership)));
    }
    previous = member.id();
    any_voter = any_voter || member.voter();
  }
  if (!any_voter) {
    return absl::InvalidArgumentError(
        "a configuration needs at least one voter");
  }
  return absl::OkStatus();
}

absl::Status ValidateChange(const paxospb::Membership& current,
                            const paxospb::Membership& next) {
  if (absl::Status valid = ValidateMembership(next); !valid.ok()) return valid;
  int changed = 0;
  for (const paxospb::Member& member : next.members()) {
    const paxospb::Member* before = FindMember(current, member.id());
    if (before == nullptr || !SameMember(*before, member)) ++changed;
  }
  for (const paxospb::Member& member : current.members()) {
    if (FindMember(next, member.id()) == nullptr) ++changed;
  }
  if (next.cell_id() != current.cell_id()) {
    return absl::InvalidArgumentError(
        "a configuration change cannot change the cell's identity");
  }
  for (uint32_t retired : current.retired_ids()) {
    if (FindMember(next, retired) != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "id ", retired,
          " was removed from the cell and cannot return (it may have "
          "forgotten its promises); add the replica under a new id"));
    }
    if (std::find(next.retired_ids().begin(), next.retired_ids().end(),
                  retired) == next.retired_ids().end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the change forgets that id ", retired, " was retired"));
    }
  }
  if (changed == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the configuration is already ", MembershipString(current)));
  }
  if (changed > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a change may add, remove, promote or demote one member at a time; ",
        MembershipString(current), " -> ", MembershipString(next), " changes ",
        changed));
  }
  return absl::OkStatus();
}

}  // namespace lockd::paxos
