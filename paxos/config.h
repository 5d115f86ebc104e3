#ifndef LOCKD_PAXOS_CONFIG_H_
#define LOCKD_PAXOS_CONFIG_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "protos/paxos.pb.h"

namespace lockd::paxos {

#ifdef LOCKD_PAXOS_SIMULATION_BUGS
// Deliberately unsafe variants, compiled only into the simulator so that it
// can show its checkers catch them. Never present in a production build.
struct InjectedBugs {
  // The acceptor accepts phase 2 messages without comparing ballots.
  bool accept_ignores_ballot = false;
  // A new leader ignores the values reported in promises and fills every
  // unchosen slot with a no-op.
  bool leader_ignores_promised_values = false;
  // A follower treats any entry it holds as chosen once the leader's commit
  // point covers its slot, even one accepted at an older ballot.
  bool learner_ignores_ballot = false;
  // The leader dates a lease acknowledgement by when the reply arrived
  // rather than by when the acknowledged message was sent.
  bool lease_from_ack_receipt = false;
  // Acceptors promise to any candidate even right after acknowledging a
  // live leader (no stickiness).
  bool acceptor_ignores_leader_lease = false;
  // A new leader claims its lease before the slots it took over are chosen.
  bool lease_before_takeover = false;
  // Configuration changes may replace any number of voters at once, govern
  // the leader's slots as soon as proposed (no wait until chosen), and a
  // candidate needs a majority of its committed configuration only (no
  // quorum of the configurations it finds in the promises).
  bool membership_without_joint_quorums = false;
};

// LOCKD_INJECTED_BUG(config, name) is true iff the simulator enabled that
// variant; in every other build it is the constant false.
#define LOCKD_INJECTED_BUG(config, name) ((config).bugs.name)
#else
#define LOCKD_INJECTED_BUG(config, name) false
#endif

// Static configuration of one replica. Time is counted in ticks; the driver
// decides how long a tick is (lockd uses 10 ms).
//
// The cell's membership is replicated state (configuration changes are log
// entries); `members` and `initial_membership` only bootstrap a new cell.
// Once the durable state records a configuration, they are ignored.
struct Config {
  // This replica's id. Ids are non-zero.
  uint32_t id = 0;
  // The voters of a new cell, this one included (unless `join`).
  std::vector<uint32_t> members;
  // If not empty, used instead of `members`: the first configuration with
  // addresses and learners (ids sorted, each once).
  paxospb::Membership initial_membership;
  // A replica added to a running cell under a new id: it need not be listed
  // in `members` (which names replicas it may learn from), it learns the
  // configuration from the cell and never campaigns before it is a voter.
  bool join = false;

  // A leader sends a heartbeat (and retransmits unacknowledged accepts)
  // every `heartbeat_ticks`.
  int heartbeat_ticks = 2;
  // A follower that hears nothing from a leader for a random number of ticks
  // in [election_ticks, 2 * election_ticks) starts an election.
  int election_ticks = 10;
  // A replica that heard from a live leader within `lease_ticks` refuses to
  // promise to another candidate; a leader holds a read lease for
  // `lease_ticks - max_drift_ticks` after a majority acknowledged it.
  // Requires lease_ticks <= election_ticks.
  int lease_ticks = 10;
  // Allowance for clock rate differences between replicas over one lease,
  // plus one tick of quantization. See docs/paxos.md for the bound.
  int max_drift_ticks = 2;

  // Pipelining: at most this many slots proposed but not yet chosen.
  int max_inflight_slots = 64;
  // Batching: at most this many commands and bytes in one slot. A single
  // command larger than max_batch_bytes is refused.
  int max_batch_commands = 1024;
  size_t max_batch_bytes = 1 << 20;
  // Accepts, fetch replies and promises are kept under max_message_bytes / 2
  // (serialized). A candidate whose promise would be larger is refused as
  // BEHIND; it catches up by fetching in pages, or the refusing replica
  // leads itself. A snapshot larger than this is sent whole (chunked
  // transfer is future work). The transport must carry messages of
  // max_message_bytes. Must be at least 4 * max_batch_bytes.
  size_t max_message_bytes = 64 << 20;
  // Proposals queued at the leader waiting for a slot; beyond this Propose()
  // fails with RESOURCE_EXHAUSTED.
  size_t max_pending_proposals = 100000;
  // At most this many entries in one fetch reply or retransmitted accept.
  int max_entries_per_message = 256;
  // An acceptor whose commit point is this many slots ahead of a candidate
  // refuses it (BEHIND) so that promises stay small; the candidate catches
  // up by fetching first.
  uint64_t max_candidate_lag_slots = 4096;

  // Seeds the replica's own random generator (election timeouts).
  uint64_t random_seed = 1;

#ifdef LOCKD_PAXOS_SIMULATION_BUGS
  InjectedBugs bugs;
#endif

  // Returns OK iff the configuration is usable, else INVALID_ARGUMENT saying
  // which field is wrong and why.
  absl::Status Validate() const;
  // `initial_membership` if set, else `members` as voters.
  paxospb::Membership InitialMembership() const;
};

}  // namespace lockd::paxos

#endif  // LOCKD_PAXOS_CONFIG_H_
