#ifndef LOCKD_PAXOS_MEMBERSHIP_H_
#define LOCKD_PAXOS_MEMBERSHIP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "protos/paxos.pb.h"

namespace lockd::paxos {

// Helpers for the cell's configuration (paxospb::Membership): who votes,
// what a quorum is, and which changes are allowed.

// The configuration after one change of `current`: `id` added or updated
// (voter or learner, with addresses) ...
paxospb::Membership WithMember(const paxospb::Membership& current,
                               const paxospb::Member& member);
// ... or removed (and retired).
paxospb::Membership WithoutMember(const paxospb::Membership& current,
                                  uint32_t id);

// A configuration of voters `ids` (no addresses, no learners).
paxospb::Membership MembershipOfVoters(const std::vector<uint32_t>& ids);

// The member record of `id`, or nullptr.
const paxospb::Member* FindMember(const paxospb::Membership& membership,
                                  uint32_t id);
bool IsVoter(const paxospb::Membership& membership, uint32_t id);
std::vector<uint32_t> Voters(const paxospb::Membership& membership);

// True iff more than half of the voters of `membership` are in `ids`.
template <typename Set>
bool IsQuorum(const paxospb::Membership& membership, const Set& ids) {
  size_t voters = 0;
  size_t present = 0;
  for (const paxospb::Member& member : membership.members()) {
    if (!member.voter()) continue;
    ++voters;
    if (ids.count(member.id()) > 0) ++present;
  }
  return voters > 0 && present >= voters / 2 + 1;
}

// "1,2,3,4 (learner)".
std::string MembershipString(const paxospb::Membership& membership);

// OK iff `membership` is well formed: ids in [1, 65535], sorted, each once,
// at least one voter. INVALID_ARGUMENT saying what is wrong otherwise.
absl::Status ValidateMembership(const paxospb::Membership& membership);

// OK iff `next` may follow `current` as one configuration change: it is
// well formed and differs in exactly one member (added, removed, promoted
// to voter, demoted to learner, or given new addresses), keeps every
// retired id and brings none back. One voter at a
// time keeps every majority of `current` intersecting every majority of
// `next` (docs/paxos.md, "Membership changes").
absl::Status ValidateChange(const paxospb::Membership& current,
                            const paxospb::Membership& next);

}  // namespace lockd::paxos

#endif  // LOCKD_PAXOS_MEMBERSHIP_H_
