#include "lockd/peer_transport.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "grpcpp/grpcpp.h"

namespace lockd {

namespace {

// Channel settings shared by every peer link: reconnect quickly to a
// restarted peer, and notice a dead connection within a couple of seconds.
grpc::ChannelArguments PeerChannelArguments(size_t max_message_bytes) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxSendMessageSize(static_cast<int>(
      std::min<size_t>(max_message_bytes + (1 << 20), INT32_MAX)));
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  return arguments;
}

}  // namespace

class PeerTransport::Link {
 public:
  Link(uint32_t peer, const std::string& address, size_t max_message_bytes,
       const TlsConfig* tls)
      : peer_(peer),
        address_(address),
        max_message_bytes_(max_message_bytes),
        max_queued_bytes_(2 * max_message_bytes),
        credentials_(PeerChannelCredentials(tls)),
        arguments_(PeerChannelArguments(max_message_bytes)),
        thread_([this] { Run(); }) {
    // The peer's certificate must name the member dialled, whatever host
    // name its address uses.
    if (tls != nullptr) {
      arguments_.SetSslTargetNameOverride(PeerName(peer));
    }
  }

  ~Link() { Stop(); }

  void Enqueue(paxospb::Message message) {
    const size_t bytes = message.ByteSizeLong();
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    queue_.push_back(std::move(message));
    queued_bytes_ += bytes;
    // Keep the newest: Paxos retransmits what matters, and old heartbeats
    // or fetch replies are worthless.
    while (queue_.size() > 1 && (queue_.size() > kMaxQueuedMessages ||
                                 queued_bytes_ > max_queued_bytes_)) {
      queued_bytes_ -= queue_.front().ByteSizeLong();
      queue_.pop_front();
      if (++dropped_ % 1000 == 1) {
        LOG(WARNING) << "replica " << peer_ << " at " << address_
                     << " is not keeping up: dropped " << dropped_
                     << " queued messages so far";
      }
    }
  }

  const std::string& address() const { return address_; }

  size_t queued_bytes() {
    absl::MutexLock lock(&mu_);
    return queued_bytes_;
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      stop_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
    thread_.join();
  }

 private:
  void Run() {
    absl::Duration backoff = absl::Milliseconds(20);
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientWriter<paxospb::Message>> writer;
    peerpb::SendResponse response;
    while (true) {
      std::deque<paxospb::Message> batch;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this] {
          mu_.AssertHeld();
          return stop_ || !queue_.empty();
        };
        mu_.Await(absl::Condition(&ready));
        if (stop_) break;
        std::swap(batch, queue_);
        queued_bytes_ = 0;
        if (writer == nullptr) {
          context = std::make_unique<grpc::ClientContext>();
          context_ = context.get();
        }
      }
      if (writer == nullptr) {
        // Debian's gRPC 1.51 waits seconds before reconnecting a channel in
        // TRANSIENT_FAILURE whatever the backoff arguments say, so a broken
        // channel is replaced: a restarted peer is reached at once.
        if (channel_ == nullptr ||
            channel_->GetState(false) == GRPC_CHANNEL_TRANSIENT_FAILURE) {
          channel_ =
              grpc::CreateCustomChannel(address_, credentials_, arguments_);
          stub_ = peerpb::Peer::NewStub(channel_);
        }
        writer = stub_->Send(context.get(), &response);
      }
      bool failed = false;
      for (const paxospb::Message& message : batch) {
        if (!writer->Write(message)) {
          failed = true;
          break;
        }
      }
      if (!failed) {
        backoff = absl::Milliseconds(20);
        continue;
      }
      const grpc::Status status = writer->Finish();
      LOG_EVERY_N(WARNING, 20)
          << "stream to replica " << peer_ << " at " << address_
          << " broke: " << status.error_message();
      {
        absl::MutexLock lock(&mu_);
        writer.reset();
        context_ = nullptr;
        context.reset();
        // Wait before reconnecting; messages queued meanwhile are stale
        // anyway and the queue bound drops the oldest.
        auto stopping = [this] {
          mu_.AssertHeld();
          return stop_;
        };
        mu_.AwaitWithTimeout(absl::Condition(&stopping), backoff);
        if (stop_) break;
      }
      backoff = std::min(backoff * 2, absl::Seconds(1));
    }
    if (writer != nullptr) {
      writer->WritesDone();
      writer->Finish();
    }
  }

  const uint32_t peer_;
  const std::string address_;
  const size_t max_message_bytes_;
  const size_t max_queued_bytes_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  // Set before the thread starts.
  grpc::ChannelArguments arguments_;
  // Used by the sender thread only.
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<peerpb::Peer::Stub> stub_;
  absl::Mutex mu_;
  std::deque<paxospb::Message> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;
};

PeerTransport::PeerTransport(uint32_t self,
                             const std::map<uint32_t, std::string>& addresses,
                             size_t max_message_bytes, const TlsConfig* tls)
    : self_(self), max_message_bytes_(max_message_bytes), tls_(tls) {
  SetMembers(addresses);
}

PeerTransport::~PeerTransport() { Stop(); }

void PeerTransport::Send(paxospb::Message message) {
  absl::MutexLock lock(&mu_);
  auto link = links_.find(message.to());
  if (link == links_.end()) return;
  link->second->Enqueue(std::move(message));
}

void PeerTransport::SetMembers(
    const std::map<uint32_t, std::string>& addresses) {
  std::vector<std::unique_ptr<Link>> closed;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    for (auto it = links_.begin(); it != links_.end();) {
      auto wanted = addresses.find(it->first);
      if (wanted == addresses.end() ||
          wanted->second != it->second->address()) {
        closed.push_back(std::move(it->second));
        it = links_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [id, address] : addresses) {
      if (id == self_ || address.empty() || links_.count(id) > 0) continue;
      links_[id] =
          std::make_unique<Link>(id, address, max_message_bytes_, tls_);
    }
  }
  // Outside the lock: a closing link joins its thread.
  closed.clear();
}

size_t PeerTransport::QueuedBytes() {
  absl::MutexLock lock(&mu_);
  size_t bytes = 0;
  for (auto& [id, link] : links_) bytes += link->queued_bytes();
  return bytes;
}

void PeerTransport::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  for (auto& [id, link] : links_) link->Stop();
}

// One incoming stream. Exactly one operation is pending at any time (the
// request for a new call, a read, or the finish), and the completion queue
// hands its tag back: the call is driven only by the server's thread.
class PeerServer::Call {
 public:
  Call(PeerServer* server) : server_(server), reader_(&context_) {
    server_->service_.RequestSend(&context_, &reader_, server_->queue_.get(),
                                  server_->queue_.get(), this);
  }

  // Handles the completion of the pending operation; false once the call
  // is over (the caller deletes it).
  bool Proceed(bool ok) {
    // Once shutdown began no operation may start (the queue is shut down
    // right after): the call then simply ends.
    absl::MutexLock lock(&server_->ops_mu_);
    if (!server_->accepting_) return false;
    switch (state_) {
      case State::kRequested:
        if (!ok) return false;  // The server is shutting down.
        new Call(server_);      // Accept the next stream.
        if (server_->options_.tls.has_value()) {
          certified_ids_ = PeerIdsOf(*context_.auth_context());
        }
        state_ = State::kReading;
        reader_.Read(&message_, this);
        return true;
      case State::kReading:
        if (!ok) {
          state_ = State::kFinishing;
          reader_.Finish(peerpb::SendResponse(), grpc::Status::OK, this);
          return true;
        }
        server_->Received(message_, certified_ids_);
        message_.Clear();
        reader_.Read(&message_, this);
        return true;
      case State::kFinishing:
        return false;
    }
    return false;
  }

 private:
  enum class State { kRequested, kReading, kFinishing };
  PeerServer* const server_;
  grpc::ServerContext context_;
  grpc::ServerAsyncReader<peerpb::SendResponse, paxospb::Message> reader_;
  paxospb::Message message_;
  State state_ = State::kRequested;
  // With TLS: the member ids the stream's certificate names.
  std::set<uint32_t> certified_ids_;
};

absl::StatusOr<std::unique_ptr<PeerServer>> PeerServer::Start(
    Options options, std::function<void(paxospb::Message)> deliver) {
  std::unique_ptr<PeerServer> server(
      new PeerServer(std::move(options), std::move(deliver)));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      server->options_.listen,
      PeerServerCredentials(
          server->options_.tls.has_value() ? &*server->options_.tls : nullptr),
      &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<uint64_t>(
      server->options_.max_message_bytes + (1 << 20), INT32_MAX)));
  // Peers ping every second to notice dead connections.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.RegisterService(&server->service_);
  server->queue_ = builder.AddCompletionQueue();
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for peers on ", server->options_.listen,
                     " (in use, or not a host:port)"));
  }
  new Call(server.get());
  server->thread_ = std::thread([raw = server.get()] { raw->Run(); });
  return server;
}

PeerServer::PeerServer(Options options,
                       std::function<void(paxospb::Message)> deliver)
    : options_(std::move(options)),
      members_(options_.members),
      deliver_(std::move(deliver)) {}

PeerServer::~PeerServer() { Shutdown(); }

void PeerServer::SetMembers(std::set<uint32_t> members) {
  absl::MutexLock lock(&members_mu_);
  members_ = std::move(members);
}

void PeerServer::Run() {
  void* tag = nullptr;
  bool ok = false;
  while (queue_->Next(&tag, &ok)) {
    auto* call = static_cast<Call*>(tag);
    if (!call->Proceed(ok)) delete call;
  }
}

void PeerServer::Received(paxospb::Message& message,
                          const std::set<uint32_t>& certified_ids) {
  bool member = false;
  {
    absl::MutexLock lock(&members_mu_);
    member = members_.count(message.from()) > 0;
  }
  const bool addressed = message.to() == options_.self &&
                         message.from() != options_.self && member;
  const bool certified =
      !options_.tls.has_value() || certified_ids.count(message.from()) > 0;
  if (addressed && certified) {
    deliver_(std::move(message));
    return;
  }
  if (refused_.fetch_add(1) % 100 == 0) {
    LOG(WARNING) << "refused a peer message from " << message.from() << " to "
                 << message.to() << " (this is replica " << options_.self << ")"
                 << (addressed
                         ? absl::StrCat(
                               ": its certificate names ",
                               certified_ids.empty()
                                   ? std::string("no replica")
                                   : absl::StrCat(
                                         "replica ",
                                         absl::StrJoin(certified_ids, ", ")))
                         : "")
                 << "; " << refused_.load() << " refused so far";
  }
}

void PeerServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || server_ == nullptr) return;
    shut_down_ = true;
  }
  {
    absl::MutexLock lock(&ops_mu_);
    accepting_ = false;
  }
  // Peers do not hang up by themselves: cancel their streams at once.
  server_->Shutdown(std::chrono::system_clock::now());
  queue_->Shutdown();
  if (thread_.joinable()) thread_.join();
}

}  // namespace lockd
