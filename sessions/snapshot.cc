// The snapshot format: StateMachine::Impl to and from statepb::StateSnapshot
// (see protos/state.proto), with the checks Restore applies.

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "sessions/checksum.h"
#include "sessions/paths.h"
#include "sessions/state_machine.h"
#include "sessions/state_machine_impl.h"

namespace lockd::sessions {
namespace {

constexpr uint32_t kSnapshotFormat = 1;

}  // namespace

statepb::StateSnapshot StateMachine::Impl::ToSnapshot() const {
  statepb::StateSnapshot snapshot;
  snapshot.set_format(kSnapshotFormat);
  snapshot.set_now_ms(now_ms_);
  snapshot.set_epoch(epoch_);
  snapshot.set_next_instance(next_instance_);
  snapshot.set_next_session_id(next_session_id_);
  for (const auto& [path, node] : nodes_) {
    statepb::NodeState* state = snapshot.add_nodes();
    state->set_path(path);
    state->set_content(node.content);
    *state->mutable_meta() = MetaOf(node);
    state->set_next_sequence(node.next_sequence);
    for (const auto& [session_id, holder] : node.holders) {
      statepb::LockHolderState* out = state->add_holders();
      out->set_session_id(session_id);
      out->set_mode(holder.mode);
      out->set_lock_delay_ms(holder.lock_delay_ms);
    }
    for (const Waiter& waiter : node.waiters) {
      statepb::LockWaiterState* out = state->add_waiters();
      out->set_session_id(waiter.session_id);
      out->set_request_id(waiter.request_id);
      out->set_mode(waiter.mode);
      out->set_deadline_ms(waiter.deadline_ms);
      out->set_lock_delay_ms(waiter.lock_delay_ms);
      out->set_campaign(waiter.campaign);
      out->set_campaign_value(waiter.campaign_value);
    }
    state->set_lock_delay_until_ms(node.lock_delay_until_ms);
    for (uint64_t session_id : node.watchers) state->add_watchers(session_id);
  }
  for (const auto& [id, session] : sessions_) {
    statepb::SessionState* state = snapshot.add_sessions();
    state->set_session_id(id);
    state->set_ttl_ms(session.ttl_ms);
    state->set_client_name(session.client_name);
    state->set_nonce(session.nonce);
    state->set_expires_at_ms(session.expires_at_ms);
    state->set_last_renewed_ms(session.last_renewed_ms);
    state->set_forgotten_below(session.forgotten_below);
    for (const auto& [request_id, result] : session.results) {
      statepb::RetainedResult* out = state->add_results();
      out->set_request_id(request_id);
      *out->mutable_result() = result;
    }
    for (const v1::Event& event : session.events) *state->add_events() = event;
    state->set_next_event_sequence(session.next_event_sequence);
    state->set_events_lost(session.events_lost);
    state->set_secret_digest(session.secret_digest);
  }
  return snapshot;
}

absl::StatusOr<std::unique_ptr<StateMachine::Impl>>
StateMachine::Impl::FromSnapshot(const Limits& limits,
                                 const statepb::StateSnapshot& snapshot) {
  if (snapshot.format() != kSnapshotFormat) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot format ", snapshot.format(), " is not ", kSnapshotFormat));
  }
  auto corrupt = [](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("inconsistent snapshot: ", what));
  };
  auto impl = std::make_unique<Impl>(limits);
  impl->nodes_.clear();
  impl->now_ms_ = snapshot.now_ms();
  impl->epoch_ = snapshot.epoch();
  impl->next_instance_ = snapshot.next_instance();
  impl->next_session_id_ = snapshot.next_session_id();

  for (const statepb::SessionState& state : snapshot.sessions()) {
    const uint64_t id = state.session_id();
    if (id == 0 || id >= impl->next_session_id_ ||
        (!impl->sessions_.empty() && id <= impl->sessions_.rbegin()->first)) {
      return corrupt(absl::StrCat("session id ", id));
    }
    if (state.ttl_ms() <= 0 || state.next_event_sequence() == 0) {
      return corrupt(absl::StrCat("session ", id, " ttl or event sequence"));
    }
    Session& session = impl->sessions_[id];
    session.id = id;
    session.ttl_ms = state.ttl_ms();
    session.client_name = state.client_name();
    session.nonce = state.nonce();
    session.secret_digest = state.secret_digest();
    session.last_renewed_ms = state.last_renewed_ms();
    session.forgotten_below = state.forgotten_below();
    for (const statepb::RetainedResult& result : state.results()) {
      if (result.request_id() == 0 ||
          result.request_id() < session.forgotten_below ||
          (!session.results.empty() &&
           result.request_id() <= session.results.rbegin()->first)) {
        return corrupt(absl::StrCat("session ", id, " result order"));
      }
      session.results[result.request_id()] = result.result();
    }
    for (const v1::Event& event : state.events()) {
      if (event.sequence() >= state.next_event_sequence() ||
          (!session.events.empty() &&
           event.sequence() <= session.events.back().sequence())) {
        return corrupt(absl::StrCat("session ", id, " event order"));
      }
      session.events.push_back(event);
    }
    session.next_event_sequence = state.next_event_sequence();
    session.events_lost = state.events_lost();
    if (session.nonce != 0 &&
        !impl->session_by_nonce_.emplace(session.nonce, id).second) {
      return corrupt(absl::StrCat("nonce of session ", id));
    }
    impl->SetExpiry(session, state.expires_at_ms());
  }

  std::set<uint64_t> instances;
  for (const statepb::NodeState& state : snapshot.nodes()) {
    const std::string& path = state.path();
    if (!ValidatePathImpl(path, limits).ok() ||
        (impl->nodes_.empty() != (path == "/")) ||
        (!impl->nodes_.empty() && path <= impl->nodes_.rbegin()->first)) {
      return corrupt(absl::StrCat("node path ", Quote(path)));
    }
    const v1::NodeMeta& meta = state.meta();
    if (meta.instance() == 0 || meta.instance() >= impl->next_instance_ ||
        !instances.insert(meta.instance()).second ||
        meta.checksum() != Crc32c(state.content()) ||
        meta.content_size() != state.content().size()) {
      return corrupt(absl::StrCat("metadata of ", Quote(path)));
    }
    Node* parent = nullptr;
    if (path != "/") {
      parent = impl->FindNode(ParentPath(path));
      if (parent == nullptr || parent->meta.ephemeral_owner() != 0) {
        return corrupt(absl::StrCat("parent of ", Quote(path)));
      }
    }
    Node& node = impl->nodes_[path];
    node.content = state.content();
    node.meta = meta;
    node.next_sequence = state.next_sequence();
    if (parent != nullptr) parent->children.insert(std::string(BaseName(path)));
    auto session_of = [&impl](uint64_t id) -> Session* {
      auto it = impl->sessions_.find(id);
      return it == impl->sessions_.end() ? nullptr : &it->second;
    };
    if (meta.ephemeral_owner() != 0) {
      Session* owner = session_of(meta.ephemeral_owner());
      if (owner == nullptr) return corrupt(absl::StrCat("owner of ", path));
      owner->ephemeral_nodes.insert(path);
    }
    for (const statepb::LockHolderState& holder : state.holders()) {
      Session* session = session_of(holder.session_id());
      const bool exclusive = holder.mode() == v1::EXCLUSIVE;
      if (session == nullptr || (!exclusive && holder.mode() != v1::SHARED) ||
          (exclusive && state.holders_size() != 1) ||
          !node.holders
               .emplace(holder.session_id(),
                        Holder{holder.mode(), holder.lock_delay_ms()})
               .second) {
        return corrupt(absl::StrCat("lock holders of ", Quote(path)));
      }
      session->held_locks.insert(path);
    }
    for (const statepb::LockWaiterState& state_waiter : state.waiters()) {
      Session* session = session_of(state_waiter.session_id());
      if (session == nullptr ||
          (state_waiter.mode() != v1::EXCLUSIVE &&
           state_waiter.mode() != v1::SHARED) ||
          state_waiter.request_id() < session->forgotten_below ||
          state_waiter.request_id() == 0 ||
          session->results.count(state_waiter.request_id()) != 0 ||
          !session->parked.emplace(state_waiter.request_id(), path).second) {
        return corrupt(absl::StrCat("lock waiters of ", Quote(path)));
      }
      node.waiters.push_back(
          Waiter{state_waiter.session_id(), state_waiter.request_id(),
                 state_waiter.mode(), state_waiter.deadline_ms(),
                 state_waiter.lock_delay_ms(), state_waiter.campaign(),
                 state_waiter.campaign_value()});
      if (state_waiter.deadline_ms() != kNoDeadline) {
        impl->wait_deadlines_.insert({state_waiter.deadline_ms(),
                                      state_waiter.session_id(),
                                      state_waiter.request_id()});
      }
    }
    if (state.lock_delay_until_ms() != 0) {
      if (!node.holders.empty()) {
        return corrupt(absl::StrCat("lock-delay of ", Quote(path)));
      }
      node.lock_delay_until_ms = state.lock_delay_until_ms();
      impl->lock_delay_ends_.insert({node.lock_delay_until_ms, path});
    }
    for (uint64_t session_id : state.watchers()) {
      Session* session = session_of(session_id);
      if (session == nullptr || !node.watchers.insert(session_id).second) {
        return corrupt(absl::StrCat("watchers of ", Quote(path)));
      }
      session->watches.insert(path);
    }
  }
  if (impl->nodes_.empty()) return corrupt("no root node");
  return impl;
}

std::string StateMachine::Snapshot() const {
  std::string data;
  google::protobuf::io::StringOutputStream stream(&data);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  CHECK(impl_->ToSnapshot().SerializeToCodedStream(&coded));
  coded.Trim();
  return data;
}

absl::Status StateMachine::Restore(std::string_view data) {
  statepb::StateSnapshot snapshot;
  if (!snapshot.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
    return absl::DataLossError("snapshot does not parse");
  }
  absl::StatusOr<std::unique_ptr<Impl>> impl =
      Impl::FromSnapshot(impl_->limits(), snapshot);
  if (!impl.ok()) return impl.status();
  impl_ = *std::move(impl);
  return absl::OkStatus();
}

}  // namespace lockd::sessions
