#include "lockd/secrets.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "glog/logging.h"

namespace lockd {

std::string NewSessionSecret() {
  std::string secret(kSessionSecretBytes, '\0');
  CHECK_EQ(RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()),
                      static_cast<int>(secret.size())),
           1)
      << "the cryptographic random generator failed";
  return secret;
}

std::string SecretDigest(absl::string_view secret) {
  std::string digest(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
         reinterpret_cast<unsigned char*>(digest.data()));
  return digest;
}

}  // namespace lockd
