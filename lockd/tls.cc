#include "lockd/tls.h"

#include <fstream>
#include <sstream>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace lockd {
namespace {

constexpr char kPeerNamePrefix[] = "lockd-replica-";

absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::NotFoundError(
        absl::StrCat("--", flag, "=", path, ": cannot read the PEM file"));
  }
  return text.str();
}

std::vector<std::string> Property(const grpc::AuthContext& auth,
                                  const char* name) {
  std::vector<std::string> values;
  for (const grpc::string_ref& value : auth.FindPropertyValues(name)) {
    values.emplace_back(value.data(), value.size());
  }
  return values;
}

// DNS SANs if there are any, else the CN (the rule of RFC 6125).
std::vector<std::string> Names(const grpc::AuthContext& auth) {
  if (!auth.IsPeerAuthenticated()) return {};
  std::vector<std::string> names = Property(auth, GRPC_PEER_DNS_PROPERTY_NAME);
  if (names.empty()) names = Property(auth, GRPC_X509_CN_PROPERTY_NAME);
  return names;
}

grpc::SslServerCredentialsOptions ServerOptions(
    const TlsConfig& tls, const std::string& client_ca,
    grpc_ssl_client_certificate_request_type request) {
  grpc::SslServerCredentialsOptions options(request);
  options.pem_root_certs = client_ca;
  options.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_pem});
  return options;
}

}  // namespace

absl::StatusOr<std::optional<TlsConfig>> LoadTls(const TlsFiles& files) {
  if (files.ca.empty() && files.cert.empty() && files.key.empty() &&
      files.client_ca.empty()) {
    return std::nullopt;
  }
  if (files.ca.empty() || files.cert.empty() || files.key.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs --tls_ca, --tls_cert and --tls_key together (the cell CA, "
        "this replica's certificate and its key; --client_ca is optional)");
  }
  TlsConfig tls;
  for (auto [path, flag, pem] :
       {std::make_tuple(&files.ca, "tls_ca", &tls.ca_pem),
        std::make_tuple(&files.cert, "tls_cert", &tls.cert_pem),
        std::make_tuple(&files.key, "tls_key", &tls.key_pem),
        std::make_tuple(&files.client_ca, "client_ca", &tls.client_ca_pem)}) {
    if (path->empty()) continue;
    absl::StatusOr<std::string> text = ReadPem(*path, flag);
    if (!text.ok()) return text.status();
    *pem = *std::move(text);
  }
  return tls;
}

std::string PeerName(uint32_t id) { return absl::StrCat(kPeerNamePrefix, id); }

std::shared_ptr<grpc::ServerCredentials> ClientPortCredentials(
    const TlsConfig* tls) {
  if (tls == nullptr) return grpc::InsecureServerCredentials();
  if (tls->client_ca_pem.empty()) {
    return grpc::SslServerCredentials(
        ServerOptions(*tls, "", GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE));
  }
  // A client without a certificate is served as the anonymous principal; a
  // certificate that does not verify is refused.
  return grpc::SslServerCredentials(
      ServerOptions(*tls, tls->client_ca_pem,
                    GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY));
}

std::shared_ptr<grpc::ServerCredentials> PeerServerCredentials(
    const TlsConfig* tls) {
  if (tls == nullptr) return grpc::InsecureServerCredentials();
  return grpc::SslServerCredentials(ServerOptions(
      *tls, tls->ca_pem,
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY));
}

std::shared_ptr<grpc::ChannelCredentials> PeerChannelCredentials(
    const TlsConfig* tls) {
  if (tls == nullptr) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls->ca_pem;
  options.pem_private_key = tls->key_pem;
  options.pem_cert_chain = tls->cert_pem;
  return grpc::SslCredentials(options);
}

std::set<uint32_t> PeerIdsOf(const grpc::AuthContext& auth) {
  std::set<uint32_t> ids;
  for (absl::string_view name : Names(auth)) {
    uint32_t id = 0;
    // Canonical numbers only: "lockd-replica-01" names no replica.
    if (absl::ConsumePrefix(&name, kPeerNamePrefix) &&
        absl::SimpleAtoi(name, &id) && absl::StrCat(id) == name) {
      ids.insert(id);
    }
  }
  return ids;
}

std::string PrincipalOf(const grpc::AuthContext& auth) {
  std::vector<std::string> names = Names(auth);
  return names.empty() ? std::string() : names.front();
}

bool IsLoopbackAddress(absl::string_view address) {
  absl::string_view host = address;
  if (absl::ConsumePrefix(&host, "[")) {
    return absl::StartsWith(host, "::1]");
  }
  const size_t colon = host.rfind(':');
  if (colon != absl::string_view::npos) host = host.substr(0, colon);
  return host == "localhost" || absl::StartsWith(host, "127.");
}

}  // namespace lockd
