#ifndef LOCKD_TLS_H_
#define LOCKD_TLS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"

namespace lockd {

// A replica's TLS material and the credentials made from it: TLS on the
// client port (optionally verifying client certificates) and mutual TLS on
// every peer link. docs/security.md has the rules; in short, the peer
// certificate of replica N must name "lockd-replica-N" as a DNS SAN (or, if
// it has no DNS SAN, as its CN), and be signed by the cell CA.

// Paths of PEM files, as given by the flags. All empty: no TLS.
struct TlsFiles {
  // The cell CA: signs every replica's certificate.
  std::string ca;
  // This replica's certificate (chain) and private key, presented on both
  // ports and to peers.
  std::string cert;
  std::string key;
  // If set, clients may present certificates signed by this CA; their
  // identity is the request's principal. Empty: clients are not asked.
  std::string client_ca;
};

// The files' contents.
struct TlsConfig {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
  std::string client_ca_pem;
};

// nullopt if no file is named. INVALID_ARGUMENT if ca, cert and key are not
// all named (or client_ca is named without them), NOT_FOUND if a file
// cannot be read; the message names the flag.
absl::StatusOr<std::optional<TlsConfig>> LoadTls(const TlsFiles& files);

// The name replica `id` presents to its peers.
std::string PeerName(uint32_t id);

// Credentials; `tls` null means plaintext.
std::shared_ptr<grpc::ServerCredentials> ClientPortCredentials(
    const TlsConfig* tls);
std::shared_ptr<grpc::ServerCredentials> PeerServerCredentials(
    const TlsConfig* tls);
std::shared_ptr<grpc::ChannelCredentials> PeerChannelCredentials(
    const TlsConfig* tls);

// The member ids the verified certificate of a call's peer names (see
// PeerName): usually one, none for a certificate that names no replica.
std::set<uint32_t> PeerIdsOf(const grpc::AuthContext& auth);

// The identity of a verified client certificate: its first DNS SAN, else
// its CN; "" if the call presented no certificate.
std::string PrincipalOf(const grpc::AuthContext& auth);

// True iff `address` ("host:port") names a loopback host: localhost,
// 127.0.0.0/8 or [::1].
bool IsLoopbackAddress(absl::string_view address);

}  // namespace lockd

#endif  // LOCKD_TLS_H_
