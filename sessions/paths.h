// Node path and name helpers of the state machine. ValidatePath itself is
// declared in sessions/state_machine.h (part of the front end's contract).
//
// A path is "/" (the root) or "/" followed by names separated by "/". A name
// is 1..max_name_bytes bytes of valid UTF-8, not "." or "..", without "/" or
// NUL. Paths are compared and listed in byte order.
//
// Thread-safety: pure functions, safe to call concurrently.
#ifndef LOCKD_SESSIONS_PATHS_H_
#define LOCKD_SESSIONS_PATHS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sessions/limits.h"

namespace lockd::sessions {

// Debian's Abseil has its own absl::string_view, distinct from
// std::string_view (used by the public header): converts at that boundary.
inline absl::string_view ToAbsl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

// Checks that `path` is a valid path (ValidatePath of state_machine.h).
absl::Status ValidatePathImpl(absl::string_view path, const Limits& limits);

// Checks that `name` is one valid node name (see above). INVALID_ARGUMENT
// naming the problem otherwise; `what` names the value in the message
// ("name", "election name").
absl::Status ValidateName(absl::string_view name, absl::string_view what,
                          const Limits& limits);

// True iff `text` is well-formed UTF-8 (no overlong forms, no surrogates,
// nothing above U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// The parent of a valid path other than "/": ParentPath("/a/b") == "/a",
// ParentPath("/a") == "/".
absl::string_view ParentPath(absl::string_view path);

// The last name of a valid path other than "/": BaseName("/a/b") == "b".
absl::string_view BaseName(absl::string_view path);

// The path of child `name` under `parent`: ChildPath("/", "a") == "/a".
std::string ChildPath(absl::string_view parent, absl::string_view name);

// `text` in double quotes with non-printable and non-ASCII bytes escaped, for
// error messages (which must stay valid UTF-8 whatever a client sent).
std::string Quote(absl::string_view text);

}  // namespace lockd::sessions

#endif  // LOCKD_SESSIONS_PATHS_H_
