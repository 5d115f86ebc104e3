#include "lockd/client.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/call.h"

namespace lockd {
namespace {

constexpr char kLeaderAddressKey[] = "lockd-leader-address";

std::shared_ptr<grpc::Channel> NewChannel(
    const std::string& address,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  grpc::ChannelArguments args;
  // A connection of its own per client, so that replacing a broken channel
  // really opens a new connection.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, credentials, args);
}

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the TLS ", what, " file ", path));
  }
  return text.str();
}

// Fills empty TLS fields from the environment and makes the credentials.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> CredentialsFor(
    ClientOptions& options) {
  for (auto [field, variable] :
       {std::make_pair(&options.tls_ca_file, "LOCKD_CA"),
        std::make_pair(&options.tls_cert_file, "LOCKD_CERT"),
        std::make_pair(&options.tls_key_file, "LOCKD_KEY")}) {
    const char* value = std::getenv(variable);
    if (field->empty() && value != nullptr) *field = value;
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client certificate needs its key, and a key its certificate "
        "(--cert and --key, or $LOCKD_CERT and $LOCKD_KEY)");
  }
  if (options.tls_ca_file.empty()) {
    if (!options.tls_cert_file.empty()) {
      return absl::InvalidArgumentError(
          "a TLS client certificate needs the cell's CA (--ca or $LOCKD_CA)");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  absl::StatusOr<std::string> ca = ReadFile(options.tls_ca_file, "CA");
  if (!ca.ok()) return ca.status();
  ssl.pem_root_certs = *std::move(ca);
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadFile(options.tls_cert_file, "certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(options.tls_key_file, "key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

bool IsRetryable(const grpc::Status& status, absl::Time attempt_deadline) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::ABORTED:
      return true;
    case grpc::StatusCode::CANCELLED:
      // Invoke never cancels its own attempts, so this came from the
      // server side: a replica shutting down cancels the calls it still
      // holds (seen in a rolling restart). The retry carries the same
      // request number, so it cannot act twice.
      return true;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      // Our own attempt deadline (no answer in time), not a blocking
      // acquire's wait timeout, which the server reports before it.
      return absl::Now() >= attempt_deadline;
    default:
      return false;
  }
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

Client::Client(ClientOptions options,
               std::shared_ptr<grpc::ChannelCredentials> credentials)
    : options_(std::move(options)), credentials_(std::move(credentials)) {
  std::random_device device;
  absl::MutexLock lock(&mu_);
  address_ = options_.endpoints.front();
  random_state_ = (static_cast<uint64_t>(device()) << 32) ^ device();
}

Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("ClientOptions.endpoints is empty");
  }
  if (options.initial_backoff <= absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff) {
    return absl::InvalidArgumentError(
        "ClientOptions: need 0 < initial_backoff <= max_backoff");
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      CredentialsFor(options);
  if (!credentials.ok()) return credentials.status();
  return std::unique_ptr<Client>(
      new Client(std::move(options), *std::move(credentials)));
}

std::shared_ptr<Client::Endpoint> Client::endpoint(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Endpoint>& slot = endpoints_[address];
  if (slot == nullptr) {
    slot = std::make_shared<Endpoint>();
    slot->address = address;
    slot->channel = NewChannel(address, credentials_);
    slot->sessions = v1::Sessions::NewStub(slot->channel);
    slot->nodes = v1::Nodes::NewStub(slot->channel);
    slot->locks = v1::Locks::NewStub(slot->channel);
    slot->elections = v1::Elections::NewStub(slot->channel);
    slot->cluster = v1::Cluster::NewStub(slot->channel);
  }
  return slot;
}

void Client::DropIfBroken(const std::string& address,
                          const std::shared_ptr<Endpoint>& broken,
                          const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE ||
      broken->channel->GetState(/*try_to_connect=*/false) !=
          GRPC_CHANNEL_TRANSIENT_FAILURE) {
    return;
  }
  absl::MutexLock lock(&mu_);
  auto it = endpoints_.find(address);
  if (it != endpoints_.end() && it->second == broken) endpoints_.erase(it);
}

std::string Client::current_address() const {
  absl::MutexLock lock(&mu_);
  return address_;
}

absl::Duration Client::Jitter(absl::Duration backoff) {
  absl::MutexLock lock(&mu_);
  // xorshift64*: good enough to spread retries of many clients.
  random_state_ ^= random_state_ >> 12;
  random_state_ ^= random_state_ << 25;
  random_state_ ^= random_state_ >> 27;
  const uint64_t r = random_state_ * 2685821657736338717ULL;
  const double fraction = static_cast<double>(r >> 11) / 9007199254740992.0;
  return backoff / 2 + (backoff / 2) * fraction;
}

void Client::Redirect(const std::string& address,
                      const grpc::ClientContext& context,
                      const grpc::Status& status, bool* sleep) {
  *sleep = true;
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return;  // ABORTED (leader change in progress): same replica again.
  }
  std::string hint;
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    const auto& trailers = context.GetServerTrailingMetadata();
    auto it = trailers.find(kLeaderAddressKey);
    if (it != trailers.end()) hint.assign(it->second.data(), it->second.size());
  }
  absl::MutexLock lock(&mu_);
  if (address_ != address) {
    *sleep = false;  // Another call moved on already.
    return;
  }
  if (!hint.empty() && hint != address) {
    address_ = hint;
    *sleep = false;
    return;
  }
  // No usable hint (no leader known, or the replica is down): next endpoint.
  const std::vector<std::string>& all = options_.endpoints;
  auto it = std::find(all.begin(), all.end(), address);
  address_ = (it == all.end() || it + 1 == all.end()) ? all.front() : *(it + 1);
}

absl::Status Client::Invoke(const char* method, const Attempt& attempt,
                            absl::Duration server_wait) {
  const absl::Time give_up = absl::Now() + options_.call_timeout + server_wait;
  absl::Duration backoff = options_.initial_backoff;
  while (true) {
    const std::string address = current_address();
    std::shared_ptr<Endpoint> target = endpoint(address);
    grpc::ClientContext context;
    // A request the server holds is sent again at least every minute (the
    // same request number, so it keeps its place): a leader that went
    // silent is noticed, and a wait without a deadline needs no end.
    const absl::Time attempt_deadline =
        std::min(give_up, absl::Now() + options_.attempt_timeout +
                              std::min(server_wait, kMaxServerWaitPerAttempt));
    context.set_deadline(absl::ToChronoTime(attempt_deadline));
    const grpc::Status status = attempt(*target, &context);
    if (status.ok()) return absl::OkStatus();
    DropIfBroken(address, target, status);
    const bool retryable = IsRetryable(status, attempt_deadline);
    if (!retryable || absl::Now() >= give_up) {
      std::string message =
          absl::StrCat(method, " at ", address, ": ", status.error_message());
      if (retryable) {
        message = absl::StrCat("gave up after retrying for ",
                               absl::FormatDuration(options_.call_timeout),
                               "; last: ", message);
      }
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          message);
    }
    retries_.fetch_add(1);
    bool sleep = true;
    Redirect(address, context, status, &sleep);
    if (sleep) {
      absl::SleepFor(std::min(Jitter(backoff), give_up - absl::Now()));
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }
}

absl::StatusOr<v1::GetNodeResponse> Client::Get(const std::string& path) {
  v1::GetNodeRequest request;
  request.set_path(path);
  return Call(*this, "Nodes.Get", &Endpoint::nodes, &v1::Nodes::Stub::Get,
              request);
}

absl::StatusOr<v1::StatNodeResponse> Client::Stat(const std::string& path) {
  v1::StatNodeRequest request;
  request.set_path(path);
  return Call(*this, "Nodes.Stat", &Endpoint::nodes, &v1::Nodes::Stub::Stat,
              request);
}

absl::StatusOr<std::vector<std::string>> Client::List(const std::string& path) {
  v1::ListChildrenRequest request;
  request.set_path(path);
  absl::StatusOr<v1::ListChildrenResponse> response = Call(
      *this, "Nodes.List", &Endpoint::nodes, &v1::Nodes::Stub::List, request);
  if (!response.ok()) return response.status();
  return std::vector<std::string>(response->names().begin(),
                                  response->names().end());
}

absl::StatusOr<v1::CheckSequencerResponse> Client::CheckSequencer(
    const v1::Sequencer& sequencer) {
  v1::CheckSequencerRequest request;
  *request.mutable_sequencer() = sequencer;
  return Call(*this, "Locks.CheckSequencer", &Endpoint::locks,
              &v1::Locks::Stub::CheckSequencer, request);
}

absl::StatusOr<v1::StatusResponse> Client::Status() {
  return StatusOf(current_address());
}

absl::StatusOr<v1::StatusResponse> Client::StatusOf(
    const std::string& address) {
  std::shared_ptr<Endpoint> target = endpoint(address);
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + options_.attempt_timeout));
  v1::StatusResponse response;
  const grpc::Status status =
      target->cluster->Status(&context, v1::StatusRequest(), &response);
  if (!status.ok()) {
    DropIfBroken(address, target, status);
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("Cluster.Status at ", address, ": ",
                                     status.error_message()));
  }
  return response;
}

absl::StatusOr<v1::MembershipResponse> Client::AddMember(
    uint32_t id, const std::string& address, const std::string& peer_address) {
  v1::AddMemberRequest request;
  request.set_id(id);
  request.set_address(address);
  request.set_peer_address(peer_address);
  return Call(*this, "Cluster.AddMember", &Endpoint::cluster,
              &v1::Cluster::Stub::AddMember, request);
}

absl::StatusOr<v1::MembershipResponse> Client::PromoteMember(uint32_t id) {
  v1::PromoteMemberRequest request;
  request.set_id(id);
  return Call(*this, "Cluster.PromoteMember", &Endpoint::cluster,
              &v1::Cluster::Stub::PromoteMember, request);
}

absl::StatusOr<v1::MembershipResponse> Client::RemoveMember(uint32_t id) {
  v1::RemoveMemberRequest request;
  request.set_id(id);
  return Call(*this, "Cluster.RemoveMember", &Endpoint::cluster,
              &v1::Cluster::Stub::RemoveMember, request);
}

absl::StatusOr<v1::SaveSnapshotResponse> Client::SaveSnapshotChunk(
    uint64_t index, uint64_t offset) {
  v1::SaveSnapshotRequest request;
  request.set_index(index);
  request.set_offset(offset);
  return Call(*this, "Cluster.SaveSnapshot", &Endpoint::cluster,
              &v1::Cluster::Stub::SaveSnapshot, request);
}

absl::StatusOr<v1::TransferLeadershipResponse> Client::TransferLeadership(
    uint32_t to) {
  v1::TransferLeadershipRequest request;
  request.set_to(to);
  return Call(*this, "Cluster.TransferLeadership", &Endpoint::cluster,
              &v1::Cluster::Stub::TransferLeadership, request);
}

absl::StatusOr<v1::ListSessionsResponse> Client::ListSessions() {
  return Call(*this, "Sessions.List", &Endpoint::sessions,
              &v1::Sessions::Stub::List, v1::ListSessionsRequest());
}

absl::StatusOr<v1::ListLocksResponse> Client::ListLocks(
    const std::string& prefix) {
  v1::ListLocksRequest request;
  request.set_prefix(prefix);
  return Call(*this, "Locks.List", &Endpoint::locks, &v1::Locks::Stub::List,
              request);
}

}  // namespace lockd
