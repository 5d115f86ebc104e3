#ifndef LOCKD_SECRETS_H_
#define LOCKD_SECRETS_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace lockd {

// Session secrets: the leader draws a new secret for every CreateSession
// and the log carries only its digest (docs/security.md).

// Bytes of a session secret (256 bits).
inline constexpr size_t kSessionSecretBytes = 32;

// A new secret from OpenSSL's cryptographically secure generator (seeded
// by the operating system). Aborts if the generator fails: a guessable
// secret would be worse than no replica.
std::string NewSessionSecret();

// SHA-256 of `secret`, as the state machine stores and compares it.
std::string SecretDigest(absl::string_view secret);

}  // namespace lockd

#endif  // LOCKD_SECRETS_H_
