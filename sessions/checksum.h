// CRC32C (Castagnoli) of node content, reported in NodeMeta.checksum.
//
// sessions/ links only protobuf, Abseil and glog, so it carries its own small
// byte-at-a-time table implementation: node content is at most
// Limits::max_content_bytes, far from where speed matters. Values are the
// standard CRC32C of RFC 3720: Crc32c("123456789") == 0xE3069283.
//
// Thread-safety: pure function, safe to call concurrently.
#ifndef LOCKD_SESSIONS_CHECKSUM_H_
#define LOCKD_SESSIONS_CHECKSUM_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace lockd::sessions {

// Returns the CRC32C of `data`.
uint32_t Crc32c(absl::string_view data);

}  // namespace lockd::sessions

#endif  // LOCKD_SESSIONS_CHECKSUM_H_
