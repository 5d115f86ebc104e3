#include "lockd/replica_loop.h"

#include <chrono>
#include <utility>

#include "glog/logging.h"
#include "lockd/secrets.h"

namespace lockd {
namespace {

absl::Time SteadyNow() {
  return absl::FromUnixNanos(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

int64_t WallNowMs() { return absl::ToUnixMillis(absl::Now()); }

constexpr absl::Duration kSlowTurn = absl::Milliseconds(100);

}  // namespace

namespace {

// Times every synced write of the storage it wraps.
class TimedStorage : public paxos::Storage {
 public:
  TimedStorage(std::unique_ptr<paxos::Storage> storage, Metrics* metrics)
      : storage_(std::move(storage)), metrics_(metrics) {}
  absl::StatusOr<paxos::DurableState> Load() override {
    return storage_->Load();
  }
  absl::Status Save(const paxos::PersistBatch& batch) override {
    const absl::Time start = absl::Now();
    absl::Status saved = storage_->Save(batch);
    metrics_->ObserveSync(absl::Now() - start);
    return saved;
  }

 private:
  const std::unique_ptr<paxos::Storage> storage_;
  Metrics* const metrics_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ReplicaLoop>> ReplicaLoop::Create(
    const ReplicaNodeOptions& options, absl::Duration tick,
    std::unique_ptr<paxos::Storage> storage, PeerSender* sender,
    Metrics* metrics) {
  if (tick <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the tick must be positive");
  }
  if (metrics != nullptr) {
    storage = std::make_unique<TimedStorage>(std::move(storage), metrics);
  }
  absl::StatusOr<std::unique_ptr<ReplicaNode>> node =
      ReplicaNode::Create(options, storage.get(), sender);
  if (!node.ok()) return node.status();
  return std::unique_ptr<ReplicaLoop>(
      new ReplicaLoop(tick, std::move(storage), *std::move(node), metrics));
}

ReplicaLoop::ReplicaLoop(absl::Duration tick,
                         std::unique_ptr<paxos::Storage> storage,
                         std::unique_ptr<ReplicaNode> node, Metrics* metrics)
    : tick_(tick),
      storage_(std::move(storage)),
      node_(std::move(node)),
      metrics_(metrics) {}

ReplicaLoop::~ReplicaLoop() { Stop(); }

void ReplicaLoop::Start() {
  CHECK(!thread_.joinable());
  next_tick_ = SteadyNow() + tick_;
  thread_ = std::thread([this] { Run(); });
}

void ReplicaLoop::Drain() {
  Post([this] {
    node_->Drain();
    UpdateServing();
  });
}

void ReplicaLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    inbox_.stop = true;
  }
  if (thread_.joinable()) thread_.join();
}

void ReplicaLoop::Deliver(paxospb::Message message) {
  absl::MutexLock lock(&mu_);
  inbox_.messages.push_back(std::move(message));
}

void ReplicaLoop::Post(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopped_) {
    // The node is drained: the task only refuses.
    task();
    return;
  }
  inbox_.tasks.push_back(std::move(task));
}

void ReplicaLoop::Submit(statepb::Command command, uint64_t caller,
                         ResultCallback done) {
  // A secret is drawn only for a new session (outside the loop thread).
  std::string new_secret =
      command.has_create_session() ? NewSessionSecret() : std::string();
  Post([this, caller, command = std::move(command),
        new_secret = std::move(new_secret), done = std::move(done)]() mutable {
    node_->Submit(std::move(command), WallNowMs(),
                  absl::Uniform<uint64_t>(nonce_generator_),
                  std::move(new_secret), caller, std::move(done));
  });
}

void ReplicaLoop::Cancel(uint64_t caller) {
  Post([this, caller] { node_->Cancel(caller); });
}

void ReplicaLoop::Read(ReadFunction read, StatusCallback done) {
  Post([this, read = std::move(read), done = std::move(done)] {
    // The lease is judged against the current time, not the turn's start.
    DeliverElapsedTicks();
    done(node_->Read(read));
  });
}

void ReplicaLoop::Inspect(ReadFunction read, StatusCallback done) {
  Post([this, read = std::move(read), done = std::move(done)] {
    done(node_->Inspect(read));
  });
}

void ReplicaLoop::ChangeMembership(ReplicaNode::MembershipEdit edit,
                                   ReplicaNode::ChangeCallback done) {
  Post([this, edit = std::move(edit), done = std::move(done)]() mutable {
    DeliverElapsedTicks();
    node_->ChangeMembership(edit, std::move(done));
  });
}

void ReplicaLoop::HandOver(uint32_t target,
                           std::function<void(absl::StatusOr<uint32_t>)> done) {
  Post([this, target, done = std::move(done)] {
    DeliverElapsedTicks();
    done(node_->HandOver(target));
    UpdateServing();
  });
}

void ReplicaLoop::InspectNode(std::function<void(const ReplicaNode&)> read) {
  Post([this, read = std::move(read)] {
    DeliverElapsedTicks();
    read(*node_);
  });
}

void ReplicaLoop::SetMembershipObserver(
    std::function<void(const paxospb::Membership&)> observer) {
  node_->SetMembershipObserver(std::move(observer));
}

void ReplicaLoop::KeepAlive(std::shared_ptr<SessionListener> listener,
                            v1::KeepAliveRequest request) {
  if (metrics_ != nullptr) metrics_->CountKeepAlive();
  Post([this, listener = std::move(listener), request = std::move(request)] {
    DeliverElapsedTicks();
    node_->KeepAlive(listener, request, WallNowMs());
  });
}

void ReplicaLoop::RemoveSessionListener(SessionListener* listener) {
  Post([this, listener] { node_->RemoveSessionListener(listener); });
}

void ReplicaLoop::Observe(std::string name,
                          std::shared_ptr<ElectionListener> listener) {
  Post([this, name = std::move(name), listener = std::move(listener)] {
    node_->Observe(name, listener);
  });
}

void ReplicaLoop::RemoveElectionListener(ElectionListener* listener) {
  Post([this, listener] { node_->RemoveElectionListener(listener); });
}

void ReplicaLoop::SetServingCallback(std::function<void(bool)> callback) {
  Post([this, callback = std::move(callback)] {
    serving_callback_ = callback;
    serving_callback_(serving_);
  });
}

void ReplicaLoop::Run() {
  while (Turn()) {
  }
  node_->Drain();
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  for (std::function<void()>& task : inbox_.tasks) task();
  inbox_.tasks.clear();
}

bool ReplicaLoop::Turn() {
  Inbox inbox;
  {
    absl::MutexLock lock(&mu_);
    auto has_work = [this] {
      mu_.AssertHeld();
      return inbox_.stop || !inbox_.messages.empty() || !inbox_.tasks.empty();
    };
    const absl::Duration until_tick = next_tick_ - SteadyNow();
    if (until_tick > absl::ZeroDuration()) {
      mu_.AwaitWithTimeout(absl::Condition(&has_work), until_tick);
    }
    // On stop, posted tasks stay in the inbox for Run() to refuse.
    if (inbox_.stop) return false;
    std::swap(inbox, inbox_);
  }
  const absl::Time start = SteadyNow();
  DeliverElapsedTicks();
  for (const paxospb::Message& message : inbox.messages) node_->Step(message);
  // Reads see every entry handed out so far (the last turn ended with
  // ProcessReady; Step hands out nothing). Proposals of these tasks and the
  // effects of the messages above share one Ready: one synced write.
  for (std::function<void()>& task : inbox.tasks) task();
  const absl::Time tasks_done = SteadyNow();
  node_->Housekeeping(WallNowMs());
  node_->ProcessReady(WallNowMs());
  UpdateServing();
  const absl::Time end = SteadyNow();
  // A turn longer than a few ticks delays heartbeats and lease renewals.
  if (end - start > kSlowTurn) {
    LOG(WARNING) << "replica " << node_->replica().id() << ": a loop turn took "
                 << absl::FormatDuration(end - start) << " ("
                 << inbox.messages.size() << " peer messages and "
                 << inbox.tasks.size() << " requests in "
                 << absl::FormatDuration(tasks_done - start)
                 << ", persist/send/apply "
                 << absl::FormatDuration(end - tasks_done) << ")";
  }
  return true;
}

void ReplicaLoop::DeliverElapsedTicks() {
  const absl::Time now = SteadyNow();
  while (next_tick_ <= now) {
    node_->Tick();
    next_tick_ += tick_;
  }
}

void ReplicaLoop::UpdateServing() {
  const bool serving = node_->Serving();
  if (serving == serving_) return;
  serving_ = serving;
  LOG(INFO) << "replica " << node_->replica().id()
            << (serving ? " serves clients" : " stopped serving clients");
  if (serving_callback_) serving_callback_(serving);
}

}  // namespace lockd
