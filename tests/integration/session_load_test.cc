// A cell under a session load this machine carries keeps its leader: many
// sessions opened at once and kept alive, each on its own KeepAlive stream,
// with a connection each and many to a connection, and many more sessions
// sharing a stream per connection in the batch form. Nothing may be lost: no
// leadership, no session, no open. (The full load, 10,000 to 100,000
// sessions for 60 s, is bench/lockd_session_bench; docs/benchmarks.md.)

#include "tests/integration/session_load.h"

#include <string>

#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/integration/cell_fixture.h"

namespace lockd::integration {
namespace {

class SessionLoadTest : public CellTest {
 protected:
  // The server's default timing (the fixture's is the same), since that is
  // what a new user runs.
  void RunLoad(int sessions, int per_connection, absl::Duration hold,
               bool batch_streams = false) {
    ASSERT_NO_FATAL_FAILURE(StartCell());
    SessionLoadOptions options;
    options.endpoints = cell_->addresses();
    options.sessions = sessions;
    options.sessions_per_connection = per_connection;
    options.batch_streams = batch_streams;
    options.open_concurrency = 256;
    options.ttl = absl::Seconds(10);
    options.client_name = "session-load-test";
    SessionLoad load(options);
    LOCKD_ASSERT_OK(load.Open());
    load.Hold(hold);
    const SessionLoadReport report = load.report();

    EXPECT_EQ(report.sessions_opened, sessions);
    EXPECT_EQ(report.sessions_not_opened, 0);
    EXPECT_EQ(report.sessions_lost, 0);
    EXPECT_EQ(report.leader_changes, 0)
        << absl::StrJoin(report.leaderships, "; ");
    // A session whose answers stop for a TTL is as good as lost.
    EXPECT_LT(report.max_answer_gap, options.ttl);
    // Every open needed at most a redirect; none timed out.
    EXPECT_EQ(report.failed_open_attempts.count("DEADLINE_EXCEEDED"), 0u);
    absl::StatusOr<v1::StatusResponse> status = cell_->Status(Leader());
    LOCKD_ASSERT_OK(status);
    EXPECT_EQ(status->sessions(), static_cast<uint64_t>(sessions));
    EXPECT_EQ(load.Close(), 0);
  }
};

TEST_F(SessionLoadTest, AConnectionPerSessionKeepsTheLeader) {
  RunLoad(/*sessions=*/2000, /*per_connection=*/1, absl::Seconds(15));
}

TEST_F(SessionLoadTest, ManySessionsPerConnectionKeepTheLeader) {
  RunLoad(/*sessions=*/10000, /*per_connection=*/100, absl::Seconds(15));
}

TEST_F(SessionLoadTest, BatchStreamsKeepManyMoreSessions) {
  RunLoad(/*sessions=*/30000, /*per_connection=*/100, absl::Seconds(15),
          /*batch_streams=*/true);
}

}  // namespace
}  // namespace lockd::integration
