// Internal to the client library: one helper for calls that need no
// session.

#ifndef LOCKD_CLIENT_CALL_H_
#define LOCKD_CLIENT_CALL_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "lockd/client.h"

namespace lockd {

// A call without a session through client.Invoke: `rpc` of the stub
// `Client::Endpoint::*stub`, retried as Invoke retries.
template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Call(Client& client, const char* method,
                              std::unique_ptr<Stub> Client::Endpoint::*stub,
                              grpc::Status (Stub::*rpc)(grpc::ClientContext*,
                                                        const Request&,
                                                        Response*),
                              const Request& request) {
  Response response;
  const absl::Status status = client.Invoke(
      method, [&](Client::Endpoint& e, grpc::ClientContext* context) {
        response.Clear();
        return ((*(e.*stub)).*rpc)(context, request, &response);
      });
  if (!status.ok()) return status;
  return response;
}

}  // namespace lockd

#endif  // LOCKD_CLIENT_CALL_H_
