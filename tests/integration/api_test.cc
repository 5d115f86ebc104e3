// The public API's contract over the wire on a real 3-replica cell: leader
// redirects, error codes, CreateSession's nonce, wait timeouts and watch
// events.

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/cell_fixture.h"

namespace lockd::integration {
namespace {

using v1::EXCLUSIVE;

class ApiTest : public CellTest {};

std::string TrailingValue(const grpc::ClientContext& context,
                          const std::string& key) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(key);
  if (it == trailers.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

TEST_F(ApiTest, FollowersRedirectToTheLeader) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  ASSERT_NE(leader, 0);
  for (int id = 1; id <= cell_->size(); ++id) {
    absl::StatusOr<v1::StatusResponse> status = cell_->Status(id);
    LOCKD_ASSERT_OK(status);
    EXPECT_EQ(status->id(), static_cast<uint32_t>(id));
    EXPECT_EQ(status->leader_id(), static_cast<uint32_t>(leader));
    EXPECT_EQ(status->leader_address(), cell_->address(leader));
    EXPECT_EQ(status->members_size(), cell_->size());
    if (id == leader) continue;

    auto stub = v1::Sessions::NewStub(NewChannel(cell_->address(id)));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::CreateSessionRequest request;
    request.set_nonce(1000 + id);
    v1::CreateSessionResponse response;
    grpc::Status answer = stub->CreateSession(&context, request, &response);
    EXPECT_EQ(answer.error_code(), grpc::StatusCode::UNAVAILABLE)
        << "follower " << id << " answered " << answer.error_message();
    EXPECT_EQ(TrailingValue(context, "lockd-leader-address"),
              cell_->address(leader))
        << "follower " << id;
    EXPECT_EQ(TrailingValue(context, "lockd-leader-id"), std::to_string(leader))
        << "follower " << id;
  }
}

// Server reflection is on, so tools like grpcurl work without the protos.
// Debian's gRPC ships no reflection client stubs; the request is tiny:
// ServerReflectionRequest{list_services: ""} encodes to 3a 00.
TEST_F(ApiTest, ReflectionListsThePublicServices) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  grpc::GenericStub stub(NewChannel(cell_->address(1)));
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  auto await = [&queue](intptr_t expected) {
    void* tag = nullptr;
    bool ok = false;
    return queue.Next(&tag, &ok) && ok &&
           reinterpret_cast<intptr_t>(tag) == expected;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(await(1));
  grpc::Slice list_services(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&list_services, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(await(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(await(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(await(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(await(5));
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  for (const char* service :
       {"lockd.v1.Sessions", "lockd.v1.Nodes", "lockd.v1.Locks",
        "lockd.v1.Elections", "lockd.v1.Cluster", "grpc.health.v1.Health"}) {
    EXPECT_NE(bytes.find(service), std::string::npos)
        << service << " is not listed";
  }
}

TEST_F(ApiTest, RetriedCreateSessionWithTheSameNonceOpensOneSession) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  const int leader = Leader();
  auto stub = v1::Sessions::NewStub(NewChannel(cell_->address(leader)));
  v1::CreateSessionRequest request;
  request.set_nonce(0x5eed);
  request.set_client_name("nonce test");
  uint64_t first = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::CreateSessionResponse response;
    grpc::Status answer = stub->CreateSession(&context, request, &response);
    ASSERT_TRUE(answer.ok()) << answer.error_message();
    EXPECT_EQ(response.ttl_ms(), 10000);  // The default.
    EXPECT_GT(response.lease_remaining_ms(), 0);
    if (attempt == 0) {
      first = response.session_id();
    } else {
      EXPECT_EQ(response.session_id(), first);
    }
  }
  absl::StatusOr<v1::StatusResponse> status = cell_->Status(leader);
  LOCKD_ASSERT_OK(status);
  EXPECT_EQ(status->sessions(), 1u);
}

TEST_F(ApiTest, ErrorsAreThePromisedStatusCodes) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* c = NewClient();
  TestClient* other = NewClient();
  ASSERT_TRUE(c != nullptr && other != nullptr);
  LOCKD_ASSERT_OK(c->Create("/e", "v"));
  LOCKD_ASSERT_OK(c->Create("/e/child"));
  LOCKD_ASSERT_OK(other->Acquire("/held", EXCLUSIVE));

  struct Case {
    const char* what;
    absl::StatusCode got;
    absl::StatusCode want;
  };
  const Case cases[] = {
      {"relative path", CodeOf(c->Create("e2")),
       absl::StatusCode::kInvalidArgument},
      {"path with ..", CodeOf(c->Create("/e/../x")),
       absl::StatusCode::kInvalidArgument},
      {"trailing slash", CodeOf(c->Get("/e/")),
       absl::StatusCode::kInvalidArgument},
      {"missing parent", CodeOf(c->Create("/no/such")),
       absl::StatusCode::kNotFound},
      {"existing node", CodeOf(c->Create("/e")),
       absl::StatusCode::kAlreadyExists},
      {"get missing", CodeOf(c->Get("/missing")), absl::StatusCode::kNotFound},
      {"set missing", CodeOf(c->Set("/missing", "x")),
       absl::StatusCode::kNotFound},
      {"set with a stale generation", CodeOf(c->Set("/e", "x", 99)),
       absl::StatusCode::kFailedPrecondition},
      {"delete with children", CodeOf(c->Delete("/e")),
       absl::StatusCode::kFailedPrecondition},
      {"delete a held lock's node", CodeOf(c->Delete("/held")),
       absl::StatusCode::kFailedPrecondition},
      {"release not held", CodeOf(c->Release("/e")),
       absl::StatusCode::kFailedPrecondition},
      {"try-acquire held", CodeOf(c->Acquire("/held", EXCLUSIVE)),
       absl::StatusCode::kFailedPrecondition},
      {"no lock mode", CodeOf(c->Acquire("/e", v1::LOCK_MODE_UNSPECIFIED)),
       absl::StatusCode::kInvalidArgument},
      {"content too large",
       CodeOf(c->Set("/e", std::string(64 * 1024 + 1, 'x'))),
       absl::StatusCode::kInvalidArgument},
      {"ephemeral parent", CodeOf(c->Create("/eph", "", true)),
       absl::StatusCode::kOk},
      {"child of an ephemeral node", CodeOf(c->Create("/eph/child")),
       absl::StatusCode::kFailedPrecondition},
  };
  for (const Case& test : cases) {
    EXPECT_EQ(test.got, test.want) << test.what;
  }
  // Compare-and-set with the right generation works.
  absl::StatusOr<v1::GetNodeResponse> node = c->Get("/e");
  LOCKD_ASSERT_OK(node);
  LOCKD_EXPECT_OK(c->Set("/e", "w", node->meta().content_generation()));
  LOCKD_EXPECT_OK(c->Delete("/e/child"));
}

TEST_F(ApiTest, BlockingAcquireEndsAtItsWaitTimeoutAndLeavesTheQueue) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* holder = NewClient();
  TestClient* waiter = NewClient();
  TestClient* third = NewClient();
  ASSERT_TRUE(holder != nullptr && waiter != nullptr && third != nullptr);
  LOCKD_ASSERT_OK(holder->Acquire("/t", EXCLUSIVE));
  const absl::Time start = absl::Now();
  EXPECT_EQ(CodeOf(waiter->Acquire("/t", EXCLUSIVE, absl::Seconds(1))),
            absl::StatusCode::kDeadlineExceeded);
  const absl::Duration waited = absl::Now() - start;
  EXPECT_GE(waited, absl::Milliseconds(900));
  EXPECT_LE(waited, absl::Seconds(3));
  // The timed-out waiter is gone from the queue: after the release the
  // lock is free, not granted to it.
  LOCKD_ASSERT_OK(holder->Release("/t"));
  LOCKD_EXPECT_OK(third->Acquire("/t", EXCLUSIVE));
}

TEST_F(ApiTest, WatchersGetContentChildAndDeletionEvents) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* watcher = NewClient();
  TestClient* writer = NewClient();
  ASSERT_TRUE(watcher != nullptr && writer != nullptr);
  LOCKD_ASSERT_OK(writer->Create("/w", "0"));

  v1::WatchRequest watch;
  *watch.mutable_header() = watcher->NewHeader();
  watch.set_path("/w");
  LOCKD_ASSERT_OK(watcher->Send(watch));

  LOCKD_ASSERT_OK(writer->Set("/w", "1"));
  LOCKD_ASSERT_OK(writer->Create("/w/kid"));
  LOCKD_ASSERT_OK(writer->Delete("/w/kid"));
  LOCKD_ASSERT_OK(writer->Delete("/w"));
  for (v1::Event::Type type :
       {v1::Event::CONTENT_CHANGED, v1::Event::CHILD_ADDED,
        v1::Event::CHILD_REMOVED, v1::Event::NODE_DELETED}) {
    EXPECT_TRUE(watcher->WaitForEvent(
        [type](const v1::Event& event) { return event.type() == type; },
        absl::Seconds(10)))
        << "no " << v1::Event::Type_Name(type) << " event";
  }
  // Consecutive sequence numbers from 1.
  uint64_t expected = 1;
  for (const v1::Event& event : watcher->events()) {
    EXPECT_EQ(event.sequence(), expected++) << event.DebugString();
  }
}

TEST_F(ApiTest, GrantedWaiterGetsALockAcquiredEvent) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* holder = NewClient();
  TestClient* waiter = NewClient();
  ASSERT_TRUE(holder != nullptr && waiter != nullptr);
  LOCKD_ASSERT_OK(holder->Acquire("/ev", EXCLUSIVE));
  absl::StatusOr<v1::AcquireResponse> waited;
  std::thread thread(
      [&] { waited = waiter->Acquire("/ev", EXCLUSIVE, absl::Seconds(30)); });
  EXPECT_TRUE(holder->WaitForEvent(
      [&](const v1::Event& event) {
        return event.type() == v1::Event::LOCK_CONFLICT &&
               event.other_session_id() == waiter->session_id();
      },
      absl::Seconds(10)));
  LOCKD_EXPECT_OK(holder->Release("/ev"));
  thread.join();
  LOCKD_ASSERT_OK(waited);
  EXPECT_TRUE(waiter->WaitForEvent(
      [&](const v1::Event& event) {
        return event.type() == v1::Event::LOCK_ACQUIRED &&
               event.path() == "/ev" &&
               event.sequencer().lock_generation() ==
                   waited->sequencer().lock_generation();
      },
      absl::Seconds(10)))
      << "no LOCK_ACQUIRED event with the granted sequencer";
}

}  // namespace
}  // namespace lockd::integration
