#include "tests/sessions/test_util.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace lockd::sessions {

statepb::Command CreateNodeCommand(const std::string& path,
                                   const std::string& content, bool ephemeral,
                                   bool sequential) {
  statepb::Command command;
  v1::CreateNodeRequest* request = command.mutable_create_node();
  request->set_path(path);
  request->set_content(content);
  request->set_ephemeral(ephemeral);
  request->set_sequential(sequential);
  return command;
}

statepb::Command SetNodeCommand(const std::string& path,
                                const std::string& content,
                                uint64_t expected_generation) {
  statepb::Command command;
  v1::SetNodeRequest* request = command.mutable_set_node();
  request->set_path(path);
  request->set_content(content);
  request->set_expected_content_generation(expected_generation);
  return command;
}

statepb::Command DeleteNodeCommand(const std::string& path,
                                   uint64_t expected_generation) {
  statepb::Command command;
  v1::DeleteNodeRequest* request = command.mutable_delete_node();
  request->set_path(path);
  request->set_expected_content_generation(expected_generation);
  return command;
}

statepb::Command WatchCommand(const std::string& path, bool remove) {
  statepb::Command command;
  command.mutable_watch()->set_path(path);
  command.mutable_watch()->set_remove(remove);
  return command;
}

statepb::Command AcquireCommand(const std::string& path, v1::LockMode mode,
                                int64_t wait_timeout_ms,
                                int64_t lock_delay_ms) {
  statepb::Command command;
  v1::AcquireRequest* request = command.mutable_acquire();
  request->set_path(path);
  request->set_mode(mode);
  request->set_wait_timeout_ms(wait_timeout_ms);
  request->set_lock_delay_ms(lock_delay_ms);
  return command;
}

statepb::Command ReleaseCommand(const std::string& path) {
  statepb::Command command;
  command.mutable_release()->set_path(path);
  return command;
}

statepb::Command CampaignCommand(const std::string& name,
                                 const std::string& value,
                                 int64_t wait_timeout_ms,
                                 int64_t lock_delay_ms) {
  statepb::Command command;
  v1::CampaignRequest* request = command.mutable_campaign();
  request->set_name(name);
  request->set_value(value);
  request->set_wait_timeout_ms(wait_timeout_ms);
  request->set_lock_delay_ms(lock_delay_ms);
  return command;
}

statepb::Command ProclaimCommand(const std::string& name,
                                 const std::string& value) {
  statepb::Command command;
  command.mutable_proclaim()->set_name(name);
  command.mutable_proclaim()->set_value(value);
  return command;
}

statepb::Command ResignCommand(const std::string& name) {
  statepb::Command command;
  command.mutable_resign()->set_name(name);
  return command;
}

statepb::Command CloseSessionCommand() {
  statepb::Command command;
  command.mutable_close_session();
  return command;
}

statepb::Command SetAclCommand(const std::string& path,
                               const std::string& read_acl,
                               const std::string& write_acl,
                               const std::string& change_acl,
                               uint64_t expected_acl_generation) {
  statepb::Command command;
  v1::SetAclRequest* request = command.mutable_set_acl();
  request->set_path(path);
  request->set_read_acl(read_acl);
  request->set_write_acl(write_acl);
  request->set_change_acl(change_acl);
  request->set_expected_acl_generation(expected_acl_generation);
  return command;
}

v1::RequestHeader* MutableHeader(statepb::Command& command) {
  v1::RequestHeader* header = MutableHeaderOf(command);
  CHECK(header != nullptr) << "not a client command: "
                           << command.ShortDebugString();
  return header;
}

std::vector<v1::Event::Type> EventTypes(const std::vector<v1::Event>& events) {
  std::vector<v1::Event::Type> types;
  for (const v1::Event& event : events) types.push_back(event.type());
  return types;
}

std::optional<statepb::Result> FindCompletion(const ApplyResult& result,
                                              RequestKey key) {
  for (const Completion& completion : result.completions) {
    if (completion.key == key) return completion.result;
  }
  return std::nullopt;
}

Cell::Cell(const Limits& limits) : sm_(limits) {
  statepb::Command command;
  command.mutable_start_epoch();
  Apply(std::move(command));
}

ApplyResult Cell::Apply(statepb::Command command) {
  command.set_epoch(epoch_);
  command.set_time_ms(now_);
  return sm_.Apply(command);
}

ApplyResult Cell::Advance(int64_t ms) {
  now_ += ms;
  statepb::Command command;
  command.mutable_tick();
  return Apply(std::move(command));
}

ApplyResult Cell::NewEpoch() {
  ++epoch_;
  statepb::Command command;
  command.mutable_start_epoch();
  return Apply(std::move(command));
}

ApplyResult Cell::Renew(uint64_t session_id, uint64_t acked_event_sequence) {
  statepb::Command command;
  auto* renewal = command.mutable_renew_sessions()->add_renewals();
  renewal->set_session_id(session_id);
  renewal->set_acked_event_sequence(acked_event_sequence);
  return Apply(std::move(command));
}

statepb::Result Cell::CreateSession(int64_t ttl_ms, uint64_t nonce,
                                    const std::string& client_name) {
  statepb::Command command;
  v1::CreateSessionRequest* request = command.mutable_create_session();
  request->set_ttl_ms(ttl_ms);
  request->set_nonce(nonce);
  request->set_client_name(client_name);
  // Stands in for the digest of the secret a leader draws.
  const std::string digest = absl::StrCat("digest-", ++secrets_drawn_);
  command.set_secret_digest(digest);
  std::optional<statepb::Result> result =
      FindCompletion(Apply(std::move(command)), {0, nonce});
  CHECK(result.has_value());
  // A retry by nonce names an existing session, whose digest stays.
  if (result->code() == 0) {
    digests_.emplace(result->create_session().session_id(), digest);
  }
  return *result;
}

uint64_t Cell::NewSession(int64_t ttl_ms, uint64_t nonce) {
  statepb::Result result = CreateSession(ttl_ms, nonce);
  CHECK_EQ(result.code(), 0) << result.message();
  return result.create_session().session_id();
}

std::optional<statepb::Result> Cell::Run(uint64_t session_id,
                                         statepb::Command command,
                                         uint64_t* request_id,
                                         ApplyResult* apply_result) {
  const uint64_t id = ++next_request_[session_id];
  if (request_id != nullptr) *request_id = id;
  return RunAs(session_id, id, std::move(command), 0, apply_result);
}

std::optional<statepb::Result> Cell::RunAs(uint64_t session_id,
                                           uint64_t request_id,
                                           statepb::Command command,
                                           uint64_t first_unanswered,
                                           ApplyResult* apply_result) {
  v1::RequestHeader* header = MutableHeader(command);
  header->set_session_id(session_id);
  header->set_request_id(request_id);
  header->set_first_unanswered_request_id(first_unanswered);
  if (command.secret_digest().empty()) {
    command.set_secret_digest(digests_[session_id]);
  }
  command.set_principal(access_.principal);
  command.set_admin(access_.admin);
  ApplyResult result = Apply(std::move(command));
  std::optional<statepb::Result> completion =
      FindCompletion(result, {session_id, request_id});
  if (apply_result != nullptr) *apply_result = std::move(result);
  return completion;
}

}  // namespace lockd::sessions
