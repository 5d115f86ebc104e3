// Paxos messages a test sends to a replica's peer port as an outsider would.
#ifndef LOCKD_TESTS_INTEGRATION_PEER_MESSAGES_H_
#define LOCKD_TESTS_INTEGRATION_PEER_MESSAGES_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "protos/paxos.pb.h"
#include "protos/peer.grpc.pb.h"

namespace lockd::integration {

// A Prepare with a ballot far above anything the cell used: a replica that
// took it would promise it and depose the leader.
inline paxospb::Message HugePrepare(uint32_t from, uint32_t to) {
  paxospb::Message message;
  message.set_from(from);
  message.set_to(to);
  message.mutable_prepare()->mutable_ballot()->set_round(1 << 30);
  message.mutable_prepare()->mutable_ballot()->set_replica_id(from);
  message.mutable_prepare()->set_first_unchosen(1);
  return message;
}

// Writes `message` on a Peer.Send stream over `channel` and returns how the
// stream ended.
inline grpc::Status SendPeerMessage(std::shared_ptr<grpc::Channel> channel,
                                    const paxospb::Message& message) {
  auto stub = peerpb::Peer::NewStub(std::move(channel));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  peerpb::SendResponse response;
  std::unique_ptr<grpc::ClientWriter<paxospb::Message>> writer =
      stub->Send(&context, &response);
  writer->Write(message);
  writer->WritesDone();
  return writer->Finish();
}

}  // namespace lockd::integration

#endif  // LOCKD_TESTS_INTEGRATION_PEER_MESSAGES_H_
