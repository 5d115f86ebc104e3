#ifndef LOCKD_TESTS_PAXOS_SIMULATOR_H_
#define LOCKD_TESTS_PAXOS_SIMULATOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lockd::paxos::sim {

// Deliberately unsafe variants the simulator can enable to prove that its
// checkers bite.
enum class Bug {
  kNone,
  // Acceptor accepts phase 2 messages without comparing ballots.
  kAcceptIgnoresBallot,
  // New leader ignores values reported in promises (fills no-ops).
  kLeaderIgnoresPromisedValues,
  // Storage acknowledges a write before it is synced; a crash loses it.
  kAckBeforeSync,
  // Follower treats an entry from an older ballot as chosen.
  kLearnerIgnoresBallot,
  // Leader dates lease acknowledgements by their arrival.
  kLeaseFromAckReceipt,
  // Acceptors do not refuse candidates while a leader's lease runs.
  kAcceptorIgnoresLeaderLease,
  // New leader claims its lease before its takeover slots are chosen.
  kLeaseBeforeTakeover,
  // Configuration changes replace two voters at once and candidates need a
  // majority of their committed configuration only.
  kMembershipWithoutJointQuorums,
};

// Parses a --bug flag value ("none", "accept_ignores_ballot",
// "leader_ignores_promised_values", "ack_before_sync",
// "learner_ignores_ballot", "lease_from_ack_receipt",
// "acceptor_ignores_leader_lease", "lease_before_takeover",
// "membership_without_joint_quorums").
absl::StatusOr<Bug> ParseBug(const std::string& name);
std::string BugName(Bug bug);

struct Options {
  uint64_t seed = 1;
  int replicas = 3;
  // Events processed before the healing phase.
  int steps = 5000;
  Bug bug = Bug::kNone;
  // Let seeds change the membership (add, promote, remove and replace
  // members, hand leadership over) among their faults.
  bool membership = true;
  // Print every violation as it is found (else only the first per seed).
  bool verbose = false;
};

// What one simulated run did and found.
struct Result {
  uint64_t steps = 0;
  uint64_t violations = 0;
  // Human-readable descriptions, first violation first.
  std::vector<std::string> violation_messages;
  // Faults injected, by kind ("message_loss", "crash", ...).
  std::map<std::string, uint64_t> faults;
  uint64_t chosen_slots = 0;
  uint64_t proposals = 0;
  uint64_t acknowledged = 0;
  uint64_t leader_changes = 0;
  uint64_t snapshots_installed = 0;
  // Configuration changes chosen, and leadership handovers started.
  uint64_t membership_changes = 0;
  uint64_t handovers = 0;
  // Ticks from the start of the healing phase until every replica applied a
  // fresh command (0 if progress was never reached).
  uint64_t heal_ticks = 0;
};

// Runs one seeded world: `replicas` Paxos replicas on a virtual network and
// clock with a fault mix drawn from the seed, clients proposing throughout,
// invariants checked after every event, then a healing phase that demands
// progress. The same options always produce the same result.
Result Run(const Options& options);

}  // namespace lockd::paxos::sim

#endif  // LOCKD_TESTS_PAXOS_SIMULATOR_H_
