#include "lockd/sequencer.h"

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace lockd {
namespace {

constexpr absl::string_view kPrefix = "lockd1";

absl::Status Malformed(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "malformed sequencer \"", text, "\": ", why,
      " (expected lockd1:<exclusive|shared>:<generation>:<session>:"
      "<instance>:<path>)"));
}

}  // namespace

std::string EncodeSequencer(const v1::Sequencer& sequencer) {
  return absl::StrCat(
      kPrefix, ":", sequencer.mode() == v1::SHARED ? "shared" : "exclusive",
      ":", sequencer.lock_generation(), ":", sequencer.session_id(), ":",
      sequencer.instance(), ":", sequencer.path());
}

absl::StatusOr<v1::Sequencer> DecodeSequencer(absl::string_view text) {
  const std::vector<absl::string_view> parts =
      absl::StrSplit(text, absl::MaxSplits(':', 5));
  if (parts.size() != 6) return Malformed(text, "too few fields");
  if (parts[0] != kPrefix) return Malformed(text, "unknown version");
  v1::Sequencer sequencer;
  if (parts[1] == "exclusive") {
    sequencer.set_mode(v1::EXCLUSIVE);
  } else if (parts[1] == "shared") {
    sequencer.set_mode(v1::SHARED);
  } else {
    return Malformed(text, "mode is neither exclusive nor shared");
  }
  uint64_t generation = 0, session = 0, instance = 0;
  if (!absl::SimpleAtoi(parts[2], &generation) ||
      !absl::SimpleAtoi(parts[3], &session) ||
      !absl::SimpleAtoi(parts[4], &instance)) {
    return Malformed(text, "generation, session and instance must be numbers");
  }
  if (parts[5].empty() || parts[5][0] != '/') {
    return Malformed(text, "the path must start with '/'");
  }
  sequencer.set_lock_generation(generation);
  sequencer.set_session_id(session);
  sequencer.set_instance(instance);
  sequencer.set_path(std::string(parts[5]));
  return sequencer;
}

}  // namespace lockd
