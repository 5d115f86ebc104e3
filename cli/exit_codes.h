// The exit codes of lockctl, which scripts may rely on (docs/lockctl.md).

#ifndef LOCKD_CLI_EXIT_CODES_H_
#define LOCKD_CLI_EXIT_CODES_H_

#include "absl/status/status.h"

namespace lockd::cli {

enum ExitCode {
  kExitOk = 0,
  // Anything not listed below (e.g. a limit was exceeded).
  kExitError = 1,
  // The command line is wrong, or the cell rejected an argument
  // (INVALID_ARGUMENT).
  kExitUsage = 2,
  // The node, election leader or session does not exist.
  kExitNotFound = 3,
  // A precondition failed: compare-and-set mismatch, the node exists
  // (--create), the node has children (rm).
  kExitCasMismatch = 4,
  // The lock or leadership was not acquired before --wait ran out (or was
  // held, with --wait=0).
  kExitNotAcquired = 5,
  // The session was lost (expired, or in jeopardy past the recovery
  // window): locks it held must be assumed gone.
  kExitSessionLost = 6,
  // No leader answered within --timeout.
  kExitUnavailable = 7,
  // check-sequencer: the sequencer is not (or no longer) valid.
  kExitSequencerInvalid = 8,
};

// The exit code for a failed call. `acquiring` is true for lock and
// election campaigns, where FAILED_PRECONDITION and DEADLINE_EXCEEDED mean
// "not acquired".
ExitCode ExitCodeFor(const absl::Status& status, bool acquiring);

}  // namespace lockd::cli

#endif  // LOCKD_CLI_EXIT_CODES_H_
