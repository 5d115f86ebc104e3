// A text form of a lock sequencer, for passing it through environments,
// command lines and protocols that carry strings (lockctl exports it as
// LOCKD_SEQUENCER):
//
//   lockd1:<mode>:<lock_generation>:<session_id>:<instance>:<path>
//
// e.g. "lockd1:exclusive:7:12:3:/jobs/reindex". The mode is "exclusive" or
// "shared"; the path comes last and is taken as is (it may contain ':').

#ifndef LOCKD_CLIENT_INCLUDE_LOCKD_SEQUENCER_H_
#define LOCKD_CLIENT_INCLUDE_LOCKD_SEQUENCER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "protos/lockd.pb.h"

namespace lockd {

std::string EncodeSequencer(const v1::Sequencer& sequencer);

// INVALID_ARGUMENT, saying what is wrong, if `text` is not of the form above.
absl::StatusOr<v1::Sequencer> DecodeSequencer(absl::string_view text);

}  // namespace lockd

#endif  // LOCKD_CLIENT_INCLUDE_LOCKD_SEQUENCER_H_
