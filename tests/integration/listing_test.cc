// The operators' listings (Sessions.List, Locks.List) on a real 3-replica
// cell: through the client library (lockd::Client::ListSessions/ListLocks,
// which follow the leader from a follower) and through raw stubs (a
// follower answers UNAVAILABLE naming the leader, a bad prefix is
// INVALID_ARGUMENT).

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "lockd/client.h"
#include "tests/integration/cell_fixture.h"

namespace lockd::integration {
namespace {

using v1::EXCLUSIVE;
using v1::SHARED;

class ListingTest : public CellTest {
 protected:
  // A client library Client whose first endpoint is a follower, so that its
  // first call is redirected.
  std::unique_ptr<lockd::Client> NewLibraryClient(int leader) {
    lockd::ClientOptions options;
    for (int id = 1; id <= cell_->size(); ++id) {
      if (id != leader) options.endpoints.push_back(cell_->address(id));
    }
    options.endpoints.push_back(cell_->address(leader));
    absl::StatusOr<std::unique_ptr<lockd::Client>> client =
        lockd::Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
};

const v1::SessionInfo* FindSession(const v1::ListSessionsResponse& listed,
                                   uint64_t session_id) {
  for (const v1::SessionInfo& session : listed.sessions()) {
    if (session.session_id() == session_id) return &session;
  }
  return nullptr;
}

std::vector<std::string> Paths(const v1::ListLocksResponse& listed) {
  std::vector<std::string> paths;
  for (const v1::LockInfo& lock : listed.locks()) paths.push_back(lock.path());
  return paths;
}

std::string TrailingValue(const grpc::ClientContext& context,
                          const std::string& key) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(key);
  if (it == trailers.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

TEST_F(ListingTest, ClientListsSessionsLocksAndWaiters) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  ASSERT_NE(leader, 0);
  TestClient* holder = NewClient();
  TestClient* waiter = NewClient();
  ASSERT_TRUE(holder != nullptr && waiter != nullptr);
  LOCKD_ASSERT_OK(holder->Acquire("/svc", EXCLUSIVE));
  LOCKD_ASSERT_OK(holder->Acquire("/svc/shard", SHARED));
  LOCKD_ASSERT_OK(holder->Acquire("/svcx", EXCLUSIVE));
  LOCKD_ASSERT_OK(holder->Create("/svc/member", "", /*ephemeral=*/true));
  // The waiter parks; the holder's LOCK_CONFLICT event shows it is queued.
  absl::StatusOr<v1::AcquireResponse> waited;
  std::thread thread(
      [&] { waited = waiter->Acquire("/svc", EXCLUSIVE, absl::Seconds(30)); });
  const bool queued = holder->WaitForEvent(
      [&](const v1::Event& event) {
        return event.type() == v1::Event::LOCK_CONFLICT &&
               event.other_session_id() == waiter->session_id();
      },
      absl::Seconds(10));
  std::unique_ptr<lockd::Client> client = NewLibraryClient(leader);
  if (!queued || client == nullptr) {
    LOCKD_EXPECT_OK(holder->Release("/svc"));
    thread.join();
    FAIL() << "the waiter did not queue, or no client";
  }

  absl::StatusOr<v1::ListSessionsResponse> sessions = client->ListSessions();
  LOCKD_ASSERT_OK(sessions);
  // The first endpoint was a follower: the call followed its redirect.
  EXPECT_EQ(client->current_address(), cell_->address(leader));
  EXPECT_FALSE(sessions->truncated());
  for (int i = 1; i < sessions->sessions_size(); ++i) {
    EXPECT_LT(sessions->sessions(i - 1).session_id(),
              sessions->sessions(i).session_id());
  }
  const v1::SessionInfo* listed_holder =
      FindSession(*sessions, holder->session_id());
  const v1::SessionInfo* listed_waiter =
      FindSession(*sessions, waiter->session_id());
  ASSERT_NE(listed_holder, nullptr);
  ASSERT_NE(listed_waiter, nullptr);
  EXPECT_EQ(listed_holder->client_name(), holder->options().client_name);
  EXPECT_EQ(listed_holder->ttl_ms(), holder->options().ttl_ms);
  EXPECT_GT(listed_holder->lease_remaining_ms(), 0);
  EXPECT_LE(listed_holder->lease_remaining_ms(), holder->options().ttl_ms);
  EXPECT_EQ(std::vector<std::string>(listed_holder->locks().begin(),
                                     listed_holder->locks().end()),
            (std::vector<std::string>{"/svc", "/svc/shard", "/svcx"}));
  EXPECT_EQ(listed_holder->num_locks(), 3u);
  EXPECT_EQ(listed_holder->ephemeral_nodes(), 1u);
  EXPECT_EQ(listed_waiter->num_locks(), 0u);

  absl::StatusOr<v1::ListLocksResponse> locks = client->ListLocks("/svc");
  LOCKD_ASSERT_OK(locks);
  ASSERT_EQ(Paths(*locks), (std::vector<std::string>{"/svc", "/svc/shard"}));
  EXPECT_FALSE(locks->truncated());
  const v1::LockInfo& svc = locks->locks(0);
  ASSERT_EQ(svc.holders_size(), 1);
  EXPECT_EQ(svc.holders(0).session_id(), holder->session_id());
  EXPECT_EQ(svc.holders(0).mode(), EXCLUSIVE);
  EXPECT_GE(svc.lock_generation(), 1u);
  ASSERT_EQ(svc.waiters_size(), 1);
  EXPECT_EQ(svc.waiters(0).session_id(), waiter->session_id());
  EXPECT_EQ(svc.waiters(0).mode(), EXCLUSIVE);
  EXPECT_GT(svc.waiters(0).wait_remaining_ms(), 0);
  EXPECT_LE(svc.waiters(0).wait_remaining_ms(), 30000);
  EXPECT_FALSE(svc.waiters(0).campaign());
  EXPECT_EQ(locks->locks(1).holders(0).mode(), SHARED);
  absl::StatusOr<v1::ListLocksResponse> all = client->ListLocks("/");
  LOCKD_ASSERT_OK(all);
  EXPECT_EQ(Paths(*all),
            (std::vector<std::string>{"/svc", "/svc/shard", "/svcx"}));
  absl::StatusOr<v1::ListLocksResponse> none = client->ListLocks("/sv");
  LOCKD_ASSERT_OK(none);
  EXPECT_TRUE(Paths(*none).empty());
  EXPECT_EQ(CodeOf(client->ListLocks("svc")),
            absl::StatusCode::kInvalidArgument);

  // The release grants the waiter; the listings follow.
  LOCKD_ASSERT_OK(holder->Release("/svc"));
  thread.join();
  LOCKD_ASSERT_OK(waited);
  locks = client->ListLocks("/svc");
  LOCKD_ASSERT_OK(locks);
  ASSERT_EQ(Paths(*locks), (std::vector<std::string>{"/svc", "/svc/shard"}));
  ASSERT_EQ(locks->locks(0).holders_size(), 1);
  EXPECT_EQ(locks->locks(0).holders(0).session_id(), waiter->session_id());
  EXPECT_EQ(locks->locks(0).waiters_size(), 0);
  EXPECT_EQ(locks->locks(0).lock_generation(),
            waited->sequencer().lock_generation());

  // A closed session is gone from the listing, its locks and ephemeral
  // node with it.
  LOCKD_ASSERT_OK(holder->CloseSession());
  sessions = client->ListSessions();
  LOCKD_ASSERT_OK(sessions);
  EXPECT_EQ(FindSession(*sessions, holder->session_id()), nullptr);
  ASSERT_NE(FindSession(*sessions, waiter->session_id()), nullptr);
  EXPECT_EQ(FindSession(*sessions, waiter->session_id())->num_locks(), 1u);
  all = client->ListLocks("");
  LOCKD_ASSERT_OK(all);
  EXPECT_EQ(Paths(*all), (std::vector<std::string>{"/svc"}));
}

TEST_F(ListingTest, FollowersRedirectListingsToTheLeader) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  ASSERT_NE(leader, 0);
  for (int id = 1; id <= cell_->size(); ++id) {
    if (id == leader) continue;
    std::shared_ptr<grpc::Channel> channel = NewChannel(cell_->address(id));
    {
      auto stub = v1::Sessions::NewStub(channel);
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      v1::ListSessionsResponse response;
      const grpc::Status answer =
          stub->List(&context, v1::ListSessionsRequest(), &response);
      EXPECT_EQ(answer.error_code(), grpc::StatusCode::UNAVAILABLE)
          << "follower " << id << " answered " << answer.error_message();
      EXPECT_EQ(TrailingValue(context, "lockd-leader-address"),
                cell_->address(leader))
          << "follower " << id;
      EXPECT_EQ(TrailingValue(context, "lockd-leader-id"),
                std::to_string(leader))
          << "follower " << id;
    }
    {
      auto stub = v1::Locks::NewStub(channel);
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      v1::ListLocksRequest request;
      request.set_prefix("/");
      v1::ListLocksResponse response;
      const grpc::Status answer = stub->List(&context, request, &response);
      EXPECT_EQ(answer.error_code(), grpc::StatusCode::UNAVAILABLE)
          << "follower " << id << " answered " << answer.error_message();
      EXPECT_EQ(TrailingValue(context, "lockd-leader-address"),
                cell_->address(leader))
          << "follower " << id;
      EXPECT_EQ(TrailingValue(context, "lockd-leader-id"),
                std::to_string(leader))
          << "follower " << id;
    }
  }
  // The leader answers both.
  std::shared_ptr<grpc::Channel> channel = NewChannel(cell_->address(leader));
  grpc::ClientContext sessions_context;
  sessions_context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::ListSessionsResponse sessions;
  const grpc::Status sessions_answer = v1::Sessions::NewStub(channel)->List(
      &sessions_context, v1::ListSessionsRequest(), &sessions);
  EXPECT_TRUE(sessions_answer.ok()) << sessions_answer.error_message();
  grpc::ClientContext locks_context;
  locks_context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::ListLocksResponse locks;
  const grpc::Status locks_answer = v1::Locks::NewStub(channel)->List(
      &locks_context, v1::ListLocksRequest(), &locks);
  EXPECT_TRUE(locks_answer.ok()) << locks_answer.error_message();
  EXPECT_EQ(locks.locks_size(), 0);
}

}  // namespace
}  // namespace lockd::integration
