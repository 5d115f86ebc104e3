#ifndef LOCKD_TESTS_SIM_CELL_SIMULATOR_H_
#define LOCKD_TESTS_SIM_CELL_SIMULATOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

// Deterministic simulation of a whole lockd cell: N lockd::ReplicaNode
// instances (the production replica: Paxos, state machine, leader duties)
// over in-memory disks, a seeded virtual network and virtual clocks, driven
// by simulated clients that open sessions, keep them alive and take locks.
// docs/simulation.md describes the world, the faults and the checks.

namespace lockd::sim {

// Deliberately wrong behaviours that prove the checkers bite. None of them
// touches the production code: they change a simulated client, or what the
// checker is shown.
enum class Bug {
  kNone,
  // The client keeps believing it holds its locks after its local lease ran
  // out (it ignores its lease, like a process that wakes from a pause and
  // carries on).
  kClientIgnoresLease,
  // The checker is shown, now and then, a replica state with a second
  // exclusive holder on a held lock.
  kViewDoubleGrant,
  // The checker is shown, now and then, a replica state whose lock
  // generation went back by one.
  kViewGenerationRollback,
};

// Parses a --bug flag value ("none", "client_ignores_lease",
// "view_double_grant", "view_generation_rollback").
absl::StatusOr<Bug> ParseBug(const std::string& name);
std::string BugName(Bug bug);

struct Options {
  uint64_t seed = 1;
  int replicas = 3;
  int clients = 6;
  // Events processed before the healing phase.
  int steps = 20000;
  Bug bug = Bug::kNone;
  // Let seeds change the membership among their faults: two spare machines
  // join as learners and are promoted, voters are removed (the leader hands
  // over instead), leadership is handed over.
  bool membership = true;
  // Print the simulation's notable events (leaders, faults, client actions)
  // as they happen, to follow a failing seed.
  bool trace = false;
};

// What one simulated run did and found.
struct Result {
  uint64_t steps = 0;
  // Virtual time simulated, in ms.
  int64_t virtual_ms = 0;
  uint64_t violations = 0;
  // Human-readable descriptions, first violation first (at most 20).
  std::vector<std::string> violation_messages;
  // Faults injected, by kind ("crash", "partition", "client_pause", ...).
  std::map<std::string, uint64_t> faults;
  // Grants the clients received and believed (exclusive, shared).
  uint64_t exclusive_grants = 0;
  uint64_t shared_grants = 0;
  uint64_t releases = 0;
  // Releases of a held lock sent with a forged session secret, each refused
  // with PERMISSION_DENIED (one accepted is a violation).
  uint64_t forgeries_refused = 0;
  // Times client 0 completed the ACL setup (every later grant then passes
  // the ACL checks; a listed client denied is a violation).
  uint64_t acl_setups = 0;
  uint64_t sessions_created = 0;
  // Sessions that ended without CloseSession (their lease ran out).
  uint64_t sessions_expired = 0;
  // Client requests re-sent with the same request number (or nonce).
  uint64_t retries = 0;
  uint64_t keepalives_answered = 0;
  // Distinct leaderships (Paxos epochs) that served clients.
  uint64_t leader_changes = 0;
  uint64_t snapshots_installed = 0;
  // Largest excess of a session's replicated expires_at over its last
  // answered keep-alive + 2 x TTL (the documented bound allows the
  // checkpoint interval plus slack).
  int64_t max_expiry_overshoot_ms = 0;
  // Virtual ms from the start of healing until every live client was
  // granted a lock and every abandoned session was gone (0 if never).
  int64_t heal_ms = 0;
};

// Runs one seeded world. The same options always produce the same result.
Result Run(const Options& options);

}  // namespace lockd::sim

#endif  // LOCKD_TESTS_SIM_CELL_SIMULATOR_H_
