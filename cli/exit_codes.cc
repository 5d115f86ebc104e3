#include "cli/exit_codes.h"

namespace lockd::cli {

ExitCode ExitCodeFor(const absl::Status& status, bool acquiring) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return kExitUsage;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      return acquiring ? kExitNotAcquired : kExitCasMismatch;
    case absl::StatusCode::kDeadlineExceeded:
      return acquiring ? kExitNotAcquired : kExitUnavailable;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
      return kExitUnavailable;
    default:
      return kExitError;
  }
}

}  // namespace lockd::cli
