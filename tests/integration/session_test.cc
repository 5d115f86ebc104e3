// Sessions on a real 3-replica cell: keep-alives hold a short lease, an
// expired session loses its locks and ephemeral nodes (with lock-delay), a
// closed one loses them at once, and retried request numbers are answered
// from the record instead of acting twice.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/cell_fixture.h"

namespace lockd::integration {
namespace {

using v1::EXCLUSIVE;

constexpr int64_t kShortTtlMs = 1000;  // The smallest TTL the cell accepts.

class SessionTest : public CellTest {
 protected:
  TestClient* NewShortLivedClient() {
    ClientOptions options = DefaultClientOptions();
    options.ttl_ms = kShortTtlMs;
    return NewClient(options);
  }

  // Polls until `path` does not exist.
  bool WaitUntilGone(TestClient* c, const std::string& path,
                     absl::Duration timeout) {
    return PollUntil(
        [&] { return CodeOf(c->Stat(path)) == absl::StatusCode::kNotFound; },
        timeout);
  }
};

TEST_F(SessionTest, KeepAlivesHoldAShortLease) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewShortLivedClient();
  ASSERT_NE(a, nullptr);
  LOCKD_ASSERT_OK(a->Create("/alive", "", /*ephemeral=*/true));
  // Several TTLs' worth of keep-alives (one every third of the TTL).
  const uint64_t start = a->keep_alive_responses();
  ASSERT_TRUE(PollUntil([&] { return a->keep_alive_responses() >= start + 10; },
                        absl::Seconds(20)))
      << "keep-alive responses: " << a->keep_alive_responses();
  EXPECT_FALSE(a->session_lost());
  EXPECT_GT(a->last_keep_alive_epoch(), 0u);
  LOCKD_EXPECT_OK(a->Stat("/alive"));
  LOCKD_EXPECT_OK(a->Set("/alive", "still here"));
}

TEST_F(SessionTest, ExpiredSessionReleasesLocksAndDeletesEphemeralNodes) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewShortLivedClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  LOCKD_ASSERT_OK(b->Create("/dir"));
  absl::StatusOr<v1::CreateNodeResponse> ephemeral =
      a->Create("/dir/eph", "mine", /*ephemeral=*/true);
  LOCKD_ASSERT_OK(ephemeral);
  EXPECT_EQ(ephemeral->meta().ephemeral_owner(), a->session_id());
  absl::StatusOr<v1::AcquireResponse> held = a->Acquire("/dir/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(held);
  EXPECT_EQ(CodeOf(b->Acquire("/dir/lock", EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition);

  a->StopKeepAlive();
  const absl::Time stopped = absl::Now();
  // The lease runs out within a TTL of the last keep-alive; allow for the
  // leader's expiry tick and a loaded machine.
  ASSERT_TRUE(WaitUntilGone(b, "/dir/eph", absl::Seconds(10)))
      << "ephemeral node of an expired session still there";
  EXPECT_LE(absl::Now() - stopped, absl::Seconds(10));
  // Expired without lock-delay: the lock is free at once.
  absl::StatusOr<v1::AcquireResponse> taken =
      b->Acquire("/dir/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(taken);
  EXPECT_GT(taken->sequencer().lock_generation(),
            held->sequencer().lock_generation());
  absl::StatusOr<v1::CheckSequencerResponse> check =
      b->CheckSequencer(held->sequencer());
  LOCKD_ASSERT_OK(check);
  EXPECT_FALSE(check->valid());

  // The expired session can do nothing any more.
  absl::Status late = a->Set("/dir", "x").status();
  EXPECT_TRUE(late.code() == absl::StatusCode::kFailedPrecondition ||
              late.code() == absl::StatusCode::kNotFound)
      << late;
  absl::StatusOr<v1::ListChildrenResponse> children = b->List("/dir");
  LOCKD_ASSERT_OK(children);
  for (const std::string& name : children->names()) EXPECT_NE(name, "eph");
}

TEST_F(SessionTest, LockDelayKeepsAnExpiredHoldersLockUngrantable) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewShortLivedClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  constexpr absl::Duration kLockDelay = absl::Seconds(3);
  LOCKD_ASSERT_OK(a->Create("/marker", "", /*ephemeral=*/true));
  LOCKD_ASSERT_OK(
      a->Acquire("/delayed", EXCLUSIVE, absl::ZeroDuration(), kLockDelay));

  a->StopKeepAlive();
  // The ephemeral node goes in the same step as the session.
  ASSERT_TRUE(WaitUntilGone(b, "/marker", absl::Seconds(10)));
  const absl::Time expired_seen = absl::Now();
  EXPECT_EQ(CodeOf(b->Acquire("/delayed", EXCLUSIVE)),
            absl::StatusCode::kFailedPrecondition)
      << "lock of an expired holder granted during its lock-delay";
  absl::StatusOr<v1::AcquireResponse> later =
      b->Acquire("/delayed", EXCLUSIVE, absl::Seconds(20));
  LOCKD_ASSERT_OK(later);
  // Granted once the delay ended: not much earlier (we saw the expiry within
  // a few polls of it), not much later.
  const absl::Duration waited = absl::Now() - expired_seen;
  EXPECT_GE(waited, kLockDelay - absl::Seconds(1));
  EXPECT_LE(waited, kLockDelay + absl::Seconds(3));
}

TEST_F(SessionTest, CloseSessionReleasesLocksAndEphemeralNodesAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  LOCKD_ASSERT_OK(a->Create("/gone", "", /*ephemeral=*/true));
  LOCKD_ASSERT_OK(
      a->Acquire("/kept", EXCLUSIVE, absl::ZeroDuration(), absl::Seconds(30)));
  LOCKD_ASSERT_OK(a->CloseSession());
  // Close goes through the log before it is answered: no polling needed.
  EXPECT_EQ(CodeOf(b->Stat("/gone")), absl::StatusCode::kNotFound);
  // A clean close has no lock-delay.
  LOCKD_EXPECT_OK(b->Acquire("/kept", EXCLUSIVE));
  // The lock node itself is permanent.
  LOCKD_EXPECT_OK(b->Stat("/kept"));
  EXPECT_NE(CodeOf(a->Create("/after-close")), absl::StatusCode::kOk);
}

TEST_F(SessionTest, RetriedRequestNumbersAreAnsweredFromTheRecord) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  ClientOptions options = DefaultClientOptions();
  options.report_answered = false;  // We replay old numbers below.
  TestClient* c = NewClient(options);
  TestClient* other = NewClient();
  ASSERT_TRUE(c != nullptr && other != nullptr);
  LOCKD_ASSERT_OK(c->Create("/once", "v0"));

  v1::CreateNodeRequest create;
  *create.mutable_header() = c->NewHeader();
  create.set_path("/once/item-");
  create.set_sequential(true);
  absl::StatusOr<v1::CreateNodeResponse> created = c->Send(create);
  LOCKD_ASSERT_OK(created);
  EXPECT_TRUE(absl::StartsWith(created->path(), "/once/item-"))
      << created->path();

  v1::SetNodeRequest set;
  *set.mutable_header() = c->NewHeader();
  set.set_path("/once");
  set.set_content("v1");
  absl::StatusOr<v1::SetNodeResponse> written = c->Send(set);
  LOCKD_ASSERT_OK(written);

  v1::AcquireRequest acquire;
  *acquire.mutable_header() = c->NewHeader();
  acquire.set_path("/once/lock");
  acquire.set_mode(EXCLUSIVE);
  absl::StatusOr<v1::AcquireResponse> granted = c->Send(acquire);
  LOCKD_ASSERT_OK(granted);
  LOCKD_ASSERT_OK(c->Release("/once/lock"));

  // Replays.
  absl::StatusOr<v1::CreateNodeResponse> created_again = c->Send(create);
  LOCKD_ASSERT_OK(created_again);
  EXPECT_EQ(created_again->path(), created->path());
  absl::StatusOr<v1::SetNodeResponse> written_again = c->Send(set);
  LOCKD_ASSERT_OK(written_again);
  EXPECT_EQ(written_again->meta().content_generation(),
            written->meta().content_generation());
  absl::StatusOr<v1::AcquireResponse> granted_again = c->Send(acquire);
  LOCKD_ASSERT_OK(granted_again);
  EXPECT_EQ(granted_again->sequencer().lock_generation(),
            granted->sequencer().lock_generation());

  // Nothing happened twice.
  absl::StatusOr<v1::ListChildrenResponse> children = other->List("/once");
  LOCKD_ASSERT_OK(children);
  int items = 0;
  for (const std::string& name : children->names()) {
    if (absl::StartsWith(name, "item-")) ++items;
  }
  EXPECT_EQ(items, 1);
  absl::StatusOr<v1::GetNodeResponse> node = other->Get("/once");
  LOCKD_ASSERT_OK(node);
  EXPECT_EQ(node->content(), "v1");
  EXPECT_EQ(node->meta().content_generation(),
            written->meta().content_generation());
  // The replayed acquire did not take the lock again.
  absl::StatusOr<v1::AcquireResponse> others =
      other->Acquire("/once/lock", EXCLUSIVE);
  LOCKD_ASSERT_OK(others);
  EXPECT_EQ(others->sequencer().lock_generation(),
            granted->sequencer().lock_generation() + 1);
}

TEST_F(SessionTest, StatusCountsLiveSessionsOnEveryReplica) {
  ASSERT_NO_FATAL_FAILURE(StartCell());
  TestClient* a = NewClient();
  TestClient* b = NewClient();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  LOCKD_ASSERT_OK(b->Create("/sync"));  // Something to apply everywhere.
  for (int id = 1; id <= cell_->size(); ++id) {
    std::string last;
    EXPECT_TRUE(PollUntil(
        [&] {
          absl::StatusOr<v1::StatusResponse> status = cell_->Status(id);
          if (!status.ok()) return false;
          last = status->DebugString();
          return status->sessions() == 2;
        },
        absl::Seconds(10)))
        << "replica " << id << ": " << last;
  }
  LOCKD_ASSERT_OK(a->CloseSession());
  absl::StatusOr<v1::StatusResponse> status = cell_->Status(Leader());
  LOCKD_ASSERT_OK(status);
  EXPECT_EQ(status->sessions(), 1u);
}

}  // namespace
}  // namespace lockd::integration

namespace lockd::integration {
namespace {

// Raw calls at the leader for the batch-form test.
class BatchKeepAliveTest : public CellTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StartCell());
    leader_ = cell_->address(Leader());
    channel_ = NewChannel(leader_);
    sessions_ = v1::Sessions::NewStub(channel_);
    nodes_ = v1::Nodes::NewStub(channel_);
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    return context;
  }

  uint64_t OpenSession(uint64_t nonce) {
    v1::CreateSessionRequest request;
    request.set_ttl_ms(10000);
    request.set_nonce(nonce);
    v1::CreateSessionResponse response;
    const grpc::Status status =
        sessions_->CreateSession(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    secrets_[response.session_id()] = response.session_secret();
    return response.session_id();
  }

  // A header of `session` with its secret (if it was opened here).
  template <typename Request>
  void WithHeader(Request& request, uint64_t session, uint64_t number) {
    request.mutable_header()->set_session_id(session);
    request.mutable_header()->set_session_secret(secrets_[session]);
    request.mutable_header()->set_request_id(number);
  }

  v1::KeepAliveRequest Batch(const std::vector<uint64_t>& ids) {
    v1::KeepAliveRequest request;
    for (uint64_t id : ids) {
      v1::KeepAliveRequest* entry = request.add_sessions();
      entry->set_session_id(id);
      entry->set_session_secret(secrets_[id]);
    }
    return request;
  }

  // Reads until an entry for `session` satisfying `match` arrives.
  template <typename Match>
  bool ReadUntil(grpc::ClientReaderWriter<v1::KeepAliveRequest,
                                          v1::KeepAliveResponse>& stream,
                 uint64_t session, Match match) {
    v1::KeepAliveResponse response;
    while (stream.Read(&response)) {
      EXPECT_EQ(response.session_id(), 0u);
      EXPECT_GT(response.epoch(), 0u);
      for (const v1::KeepAliveResponse& entry : response.sessions()) {
        if (entry.session_id() == session && match(entry)) return true;
      }
    }
    return false;
  }

  std::string leader_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Sessions::Stub> sessions_;
  std::unique_ptr<v1::Nodes::Stub> nodes_;
  std::map<uint64_t, std::string> secrets_;
};

TEST_F(BatchKeepAliveTest, OneStreamKeepsManySessionsAlive) {
  const uint64_t a = OpenSession(1), b = OpenSession(2), c = OpenSession(3);
  ASSERT_TRUE(a != 0 && b != 0 && c != 0);
  std::unique_ptr<grpc::ClientContext> context = Context();
  auto stream = sessions_->KeepAlive(context.get());

  // One message renews all three; an unknown session is answered NOT_FOUND
  // without ending the stream.
  ASSERT_TRUE(stream->Write(Batch({a, b, c, 999999})));
  v1::KeepAliveResponse answer;
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.session_id(), 0u);
  ASSERT_EQ(answer.sessions_size(), 4);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(answer.sessions(i).code(), 0) << answer.sessions(i).message();
    EXPECT_GT(answer.sessions(i).lease_remaining_ms(), 0);
    EXPECT_EQ(answer.sessions(i).epoch(), answer.epoch());
  }
  EXPECT_EQ(answer.sessions(3).session_id(), 999999u);
  EXPECT_EQ(answer.sessions(3).code(),
            static_cast<int>(grpc::StatusCode::NOT_FOUND));

  // Events of one session arrive on the shared stream, named by session.
  v1::CreateNodeRequest create;
  WithHeader(create, b, 1);
  create.set_path("/watched");
  v1::CreateNodeResponse created;
  ASSERT_TRUE(nodes_->Create(Context().get(), create, &created).ok());
  v1::WatchRequest watch;
  WithHeader(watch, b, 2);
  watch.set_path("/watched");
  v1::WatchResponse watching;
  ASSERT_TRUE(nodes_->Watch(Context().get(), watch, &watching).ok());
  v1::SetNodeRequest set;
  WithHeader(set, a, 1);
  set.set_path("/watched");
  set.set_content("new");
  v1::SetNodeResponse was_set;
  ASSERT_TRUE(nodes_->Set(Context().get(), set, &was_set).ok());
  EXPECT_TRUE(ReadUntil(*stream, b, [](const v1::KeepAliveResponse& entry) {
    return entry.events_size() == 1 &&
           entry.events(0).type() == v1::Event::CONTENT_CHANGED &&
           entry.events(0).path() == "/watched";
  }));

  // A session that ends leaves the stream with NOT_FOUND; the others stay.
  v1::CloseSessionRequest close;
  WithHeader(close, c, 1);
  v1::CloseSessionResponse closed;
  ASSERT_TRUE(sessions_->CloseSession(Context().get(), close, &closed).ok());
  EXPECT_TRUE(ReadUntil(*stream, c, [](const v1::KeepAliveResponse& entry) {
    return entry.code() == static_cast<int>(grpc::StatusCode::NOT_FOUND);
  }));
  ASSERT_TRUE(stream->Write(Batch({a, b})));
  EXPECT_TRUE(ReadUntil(*stream, a, [](const v1::KeepAliveResponse& entry) {
    return entry.code() == 0 && entry.lease_remaining_ms() > 0;
  }));

  // The single form on a batch stream is refused.
  v1::KeepAliveRequest single;
  single.set_session_id(a);
  single.set_session_secret(secrets_[a]);
  ASSERT_TRUE(stream->Write(single));
  v1::KeepAliveResponse rest;
  while (stream->Read(&rest)) {
  }
  const grpc::Status ended = stream->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << ended.error_message();
  EXPECT_TRUE(absl::StrContains(ended.error_message(), "batch form"))
      << ended.error_message();
}

// The attack of issue 9: a second client that knows only a session's id
// sends requests on its behalf.
using SessionSecretTest = BatchKeepAliveTest;

TEST_F(SessionSecretTest, RequestsWithoutTheSecretAreDeniedAndChangeNothing) {
  const uint64_t victim = OpenSession(11);
  ASSERT_NE(victim, 0u);
  EXPECT_EQ(secrets_[victim].size(), 32u);
  auto locks = v1::Locks::NewStub(channel_);
  v1::AcquireRequest acquire;
  WithHeader(acquire, victim, 1);
  acquire.set_path("/held");
  acquire.set_mode(v1::EXCLUSIVE);
  v1::AcquireResponse acquired;
  ASSERT_TRUE(locks->Acquire(Context().get(), acquire, &acquired).ok());

  auto expect_denied = [&](const grpc::Status& status) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << status.error_message();
    EXPECT_TRUE(absl::StrContains(
        status.error_message(),
        absl::StrCat("wrong or missing secret for session ", victim)))
        << status.error_message();
  };
  for (const std::string& forged :
       {std::string(), std::string("guess"), secrets_[OpenSession(12)]}) {
    v1::ReleaseRequest release;
    release.mutable_header()->set_session_id(victim);
    release.mutable_header()->set_request_id(2);
    release.mutable_header()->set_session_secret(forged);
    release.set_path("/held");
    v1::ReleaseResponse released;
    expect_denied(locks->Release(Context().get(), release, &released));
    v1::CloseSessionRequest close;
    close.mutable_header()->set_session_id(victim);
    close.mutable_header()->set_request_id(2);
    close.mutable_header()->set_session_secret(forged);
    v1::CloseSessionResponse closed;
    expect_denied(sessions_->CloseSession(Context().get(), close, &closed));
  }

  // The lock is still the victim's, and request number 2 was not used up.
  v1::ListLocksRequest list;
  v1::ListLocksResponse listed;
  ASSERT_TRUE(locks->List(Context().get(), list, &listed).ok());
  ASSERT_EQ(listed.locks_size(), 1);
  ASSERT_EQ(listed.locks(0).holders_size(), 1);
  EXPECT_EQ(listed.locks(0).holders(0).session_id(), victim);
  v1::ReleaseRequest release;
  WithHeader(release, victim, 2);
  release.set_path("/held");
  v1::ReleaseResponse released;
  const grpc::Status own = locks->Release(Context().get(), release, &released);
  EXPECT_TRUE(own.ok()) << own.error_message();
}

TEST_F(SessionSecretTest, KeepAliveWithoutTheSecretIsDenied) {
  const uint64_t victim = OpenSession(21);
  ASSERT_NE(victim, 0u);
  // Batch form: the forged entry is answered PERMISSION_DENIED, the
  // stream goes on.
  std::unique_ptr<grpc::ClientContext> context = Context();
  auto stream = sessions_->KeepAlive(context.get());
  v1::KeepAliveRequest batch = Batch({victim});
  batch.mutable_sessions(0)->set_session_secret("forged");
  ASSERT_TRUE(stream->Write(batch));
  EXPECT_TRUE(
      ReadUntil(*stream, victim, [](const v1::KeepAliveResponse& entry) {
        return entry.code() ==
               static_cast<int>(grpc::StatusCode::PERMISSION_DENIED);
      }));
  ASSERT_TRUE(stream->Write(Batch({victim})));
  EXPECT_TRUE(
      ReadUntil(*stream, victim, [](const v1::KeepAliveResponse& entry) {
        return entry.code() == 0 && entry.lease_remaining_ms() > 0;
      }));
  // A right secret once does not let a wrong one through later.
  ASSERT_TRUE(stream->Write(batch));
  EXPECT_TRUE(
      ReadUntil(*stream, victim, [](const v1::KeepAliveResponse& entry) {
        return entry.code() ==
               static_cast<int>(grpc::StatusCode::PERMISSION_DENIED);
      }));
  stream->WritesDone();

  // Single form: the stream ends with PERMISSION_DENIED.
  std::unique_ptr<grpc::ClientContext> single_context = Context();
  auto single = sessions_->KeepAlive(single_context.get());
  v1::KeepAliveRequest forged;
  forged.set_session_id(victim);
  ASSERT_TRUE(single->Write(forged));
  v1::KeepAliveResponse answer;
  EXPECT_FALSE(single->Read(&answer));
  const grpc::Status ended = single->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << ended.error_message();
}

TEST_F(SessionSecretTest, RetryByNonceNeverChangesTheSecret) {
  const uint64_t first = OpenSession(31);
  const std::string first_secret = secrets_[first];
  ASSERT_EQ(first_secret.size(), 32u);
  // A retry (or a late duplicate) names the same session, without a secret.
  EXPECT_EQ(OpenSession(31), first);
  EXPECT_TRUE(secrets_[first].empty());
  v1::CreateNodeRequest create;
  create.mutable_header()->set_session_id(first);
  create.mutable_header()->set_request_id(1);
  create.mutable_header()->set_session_secret(first_secret);
  create.set_path("/by-first-secret");
  v1::CreateNodeResponse created;
  const grpc::Status status = nodes_->Create(Context().get(), create, &created);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST(KeepAliveLimitTest, StreamsBeyondTheLimitAreRefused) {
  CellOptions options;
  options.lockd_binary = LOCKD_BINARY;
  options.extra_flags = {"--max_keepalive_streams=2"};
  absl::StatusOr<std::unique_ptr<Cell>> cell = Cell::Start(options);
  ASSERT_TRUE(cell.ok()) << cell.status();
  absl::StatusOr<int> leader = (*cell)->WaitForLeader(absl::Seconds(20));
  ASSERT_TRUE(leader.ok()) << leader.status();
  auto stub = v1::Sessions::NewStub(NewChannel((*cell)->address(*leader)));
  v1::CreateSessionRequest create;
  create.set_nonce(7);
  v1::CreateSessionResponse session;
  grpc::ClientContext create_context;
  ASSERT_TRUE(stub->CreateSession(&create_context, create, &session).ok());

  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<
      grpc::ClientReaderWriter<v1::KeepAliveRequest, v1::KeepAliveResponse>>>
      streams;
  v1::KeepAliveRequest request;
  request.set_session_id(session.session_id());
  request.set_session_secret(session.session_secret());
  for (int i = 0; i < 3; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    streams.push_back(stub->KeepAlive(contexts.back().get()));
    streams.back()->Write(request);
    v1::KeepAliveResponse response;
    const bool answered = streams.back()->Read(&response);
    if (i < 2) {
      EXPECT_TRUE(answered) << "stream " << i;
      EXPECT_GT(response.lease_remaining_ms(), 0);
      continue;
    }
    EXPECT_FALSE(answered);
    const grpc::Status refused = streams.back()->Finish();
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_TRUE(
        absl::StrContains(refused.error_message(), "--max_keepalive_streams"))
        << refused.error_message();
  }
  // A closed stream frees its place.
  contexts[0]->TryCancel();
  streams[0]->Finish();
  EXPECT_TRUE(PollUntil(
      [&] {
        grpc::ClientContext context;
        context.set_deadline(
            absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
        auto stream = stub->KeepAlive(&context);
        stream->Write(request);
        v1::KeepAliveResponse response;
        const bool answered = stream->Read(&response);
        context.TryCancel();
        stream->Finish();
        return answered;
      },
      absl::Seconds(10), absl::Milliseconds(100)));
}

}  // namespace
}  // namespace lockd::integration
