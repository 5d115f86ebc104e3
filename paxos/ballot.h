#ifndef LOCKD_PAXOS_BALLOT_H_
#define LOCKD_PAXOS_BALLOT_H_

#include <cstdint>
#include <string>

#include "protos/paxos.pb.h"

namespace lockd::paxos {

// Ballots are ordered by (round, replica_id).
inline int CompareBallots(const paxospb::Ballot& a, const paxospb::Ballot& b) {
  if (a.round() != b.round()) return a.round() < b.round() ? -1 : 1;
  if (a.replica_id() != b.replica_id()) {
    return a.replica_id() < b.replica_id() ? -1 : 1;
  }
  return 0;
}

inline bool BallotLess(const paxospb::Ballot& a, const paxospb::Ballot& b) {
  return CompareBallots(a, b) < 0;
}

inline bool BallotEqual(const paxospb::Ballot& a, const paxospb::Ballot& b) {
  return CompareBallots(a, b) == 0;
}

inline paxospb::Ballot MakeBallot(uint64_t round, uint32_t replica_id) {
  paxospb::Ballot ballot;
  ballot.set_round(round);
  ballot.set_replica_id(replica_id);
  return ballot;
}

// Packs a ballot into one integer with the same order: round in the high 48
// bits, replica id in the low 16 (replica ids are limited to 16 bits).
inline uint64_t PackBallot(const paxospb::Ballot& ballot) {
  return (ballot.round() << 16) | (ballot.replica_id() & 0xffff);
}

inline std::string BallotString(const paxospb::Ballot& ballot) {
  return std::to_string(ballot.round()) + "." +
         std::to_string(ballot.replica_id());
}

// An epoch (a leader's packed ballot) written as its ballot: 65539 is "1.3".
inline std::string EpochString(uint64_t epoch) {
  return std::to_string(epoch >> 16) + "." + std::to_string(epoch & 0xffff);
}

}  // namespace lockd::paxos

#endif  // LOCKD_PAXOS_BALLOT_H_
