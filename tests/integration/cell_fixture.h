#ifndef LOCKD_TESTS_INTEGRATION_CELL_FIXTURE_H_
#define LOCKD_TESTS_INTEGRATION_CELL_FIXTURE_H_

// GoogleTest glue for the integration tests: a fixture that starts a cell of
// the `lockd` binary this build produced (LOCKD_BINARY), hands out clients,
// and on failure prints the tail of every replica's log and keeps the cell's
// directory.

#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/integration/cell.h"
#include "tests/integration/test_client.h"

#ifndef LOCKD_BINARY
#error "LOCKD_BINARY must name the lockd binary (see CMakeLists.txt)"
#endif

namespace lockd::integration {

inline absl::Status StatusOf(const absl::Status& status) { return status; }
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

// ASSERT/EXPECT that a Status or StatusOr is OK; more text can be streamed
// in: LOCKD_ASSERT_OK(c->Set(...)) << "round " << round;
#define LOCKD_ASSERT_OK(expr)                     \
  switch (0)                                      \
  case 0:                                         \
  default:                                        \
    if (const absl::Status lockd_status_ =        \
            ::lockd::integration::StatusOf(expr); \
        lockd_status_.ok()) {                     \
    } else                                        \
      FAIL() << #expr << ": " << lockd_status_ << " "

#define LOCKD_EXPECT_OK(expr)                     \
  switch (0)                                      \
  case 0:                                         \
  default:                                        \
    if (const absl::Status lockd_status_ =        \
            ::lockd::integration::StatusOf(expr); \
        lockd_status_.ok()) {                     \
    } else                                        \
      ADD_FAILURE() << #expr << ": " << lockd_status_ << " "

// The canonical code of a Status or StatusOr, for EXPECT_EQ.
template <typename T>
absl::StatusCode CodeOf(const T& status) {
  return StatusOf(status).code();
}

class CellTest : public ::testing::Test {
 protected:
  // Fast timing so that failovers take well under a second: 10 ms ticks,
  // heartbeat every 50 ms, election timeout 300-600 ms.
  static CellOptions DefaultOptions() {
    CellOptions options;
    options.lockd_binary = LOCKD_BINARY;
    options.replicas = 3;
    options.tick_ms = 10;
    options.heartbeat_ticks = 5;
    options.election_ticks = 30;
    return options;
  }

  // Starts the cell and waits for a leader; the test fails (fatally, use
  // ASSERT_NO_FATAL_FAILURE) if either does not happen.
  void StartCell(CellOptions options = DefaultOptions()) {
    absl::StatusOr<std::unique_ptr<Cell>> cell = Cell::Start(options);
    ASSERT_TRUE(cell.ok()) << cell.status();
    cell_ = std::move(*cell);
    absl::StatusOr<int> leader = cell_->WaitForLeader(absl::Seconds(20));
    ASSERT_TRUE(leader.ok()) << leader.status();
  }

  // The id of the leader (waits up to `timeout` for one among `among`).
  int Leader(absl::Duration timeout = absl::Seconds(20),
             std::vector<int> among = {}) {
    absl::StatusOr<int> leader = cell_->WaitForLeader(timeout, among);
    EXPECT_TRUE(leader.ok()) << leader.status();
    return leader.ok() ? *leader : 0;
  }

  ClientOptions DefaultClientOptions() const {
    ClientOptions options;
    options.endpoints = cell_->addresses();
    options.client_name =
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    return options;
  }

  // A client with its own session, owned by the fixture (destroyed before
  // the cell). nullptr and a test failure if it cannot connect.
  TestClient* NewClient() { return NewClient(DefaultClientOptions()); }
  TestClient* NewClient(ClientOptions options) {
    absl::StatusOr<std::unique_ptr<TestClient>> client =
        TestClient::Connect(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return nullptr;
    clients_.push_back(std::move(*client));
    return clients_.back().get();
  }

  // How long a kill -9 of the leader may keep the cell from serving.
  // Followers notice within 2 election timeouts; a candidate must wait out
  // the old leader's lease (<= 1 election timeout) and then holds its own
  // lease only a lease later; a split vote costs up to 2 more timeouts.
  // That is 6 election timeouts, plus a second for the clients' retry
  // backoff and a loaded machine.
  absl::Duration FailoverBound() const {
    return 6 * cell_->election_timeout() + absl::Seconds(1);
  }

  void TearDown() override {
    clients_.clear();
    if (cell_ != nullptr && HasFailure()) {
      cell_->RunningReplicas();  // Notes crashed replicas in their logs.
      cell_->KeepDirectory();
      std::fprintf(stderr, "%s", cell_->AllLogTails(60).c_str());
    }
    cell_.reset();
  }

  std::unique_ptr<Cell> cell_;
  std::vector<std::unique_ptr<TestClient>> clients_;
};

}  // namespace lockd::integration

#endif  // LOCKD_TESTS_INTEGRATION_CELL_FIXTURE_H_
