// The HTTP port for operators on a real cell: Prometheus metrics that move
// with what the cell does, a status page that lists the members and the
// leader, /healthz and /readyz that follow the replica's state.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cell_fixture.h"

namespace lockd::integration {
namespace {

using ::testing::HasSubstr;

struct HttpAnswer {
  int code = 0;
  std::string body;
};

// One GET over a fresh connection; code 0 if the server cannot be reached.
HttpAnswer Get(const std::string& address, const std::string& path) {
  HttpAnswer answer;
  const std::vector<std::string> host_port = absl::StrSplit(address, ':');
  int port = 0;
  if (host_port.size() != 2 || !absl::SimpleAtoi(host_port[1], &port)) {
    return answer;
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in target{};
  target.sin_family = AF_INET;
  target.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host_port[0].c_str(), &target.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) {
    close(fd);
    return answer;
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: ", address,
                   "\r\nConnection: close\r\n\r\n");
  if (write(fd, request.data(), request.size()) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return answer;
  }
  std::string response;
  char buffer[8192];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) {
    response.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  const size_t header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos ||
      !absl::SimpleAtoi(response.substr(9, 3), &answer.code)) {
    return answer;
  }
  answer.body = response.substr(header_end + 4);
  return answer;
}

// Polls `path` of `address` until it answers `code` or `timeout` passes.
HttpAnswer WaitFor(const std::string& address, const std::string& path,
                   int code, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  HttpAnswer answer = Get(address, path);
  while (answer.code != code && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
    answer = Get(address, path);
  }
  return answer;
}

class MetricsTest : public CellTest {
 protected:
  void SetUp() override {
    CellOptions options = DefaultOptions();
    options.metrics = true;
    ASSERT_NO_FATAL_FAILURE(StartCell(options));
  }
};

TEST_F(MetricsTest, MetricsFollowWhatTheCellDoes) {
  const int leader = Leader();
  TestClient* client = NewClient();
  ASSERT_NE(client, nullptr);
  LOCKD_ASSERT_OK(client->Create("/metered", "x"));
  LOCKD_ASSERT_OK(client->Acquire("/metered", v1::EXCLUSIVE));
  const HttpAnswer metrics = Get(cell_->metrics_address(leader), "/metrics");
  ASSERT_EQ(metrics.code, 200) << metrics.body;
  EXPECT_THAT(metrics.body, HasSubstr("lockd_paxos_role{role=\"leader\"} 1"));
  EXPECT_THAT(metrics.body, HasSubstr("lockd_paxos_has_lease 1"));
  EXPECT_THAT(metrics.body, HasSubstr("lockd_cell_members{role=\"voter\"} 3"));
  EXPECT_THAT(metrics.body, HasSubstr("lockd_sessions 1"));
  EXPECT_THAT(metrics.body, HasSubstr("lockd_lock_holders 1"));
  EXPECT_THAT(metrics.body,
              HasSubstr("lockd_rpc_seconds_count{code=\"OK\",method=\"/"
                        "lockd.v1.Nodes/Create\"} 1"));
  EXPECT_THAT(metrics.body, HasSubstr("lockd_storage_sync_seconds_bucket"));
  EXPECT_THAT(metrics.body, HasSubstr("lockd_keepalives_total"));
  const int follower = leader == 1 ? 2 : 1;
  const HttpAnswer follower_metrics =
      Get(cell_->metrics_address(follower), "/metrics");
  EXPECT_THAT(follower_metrics.body,
              HasSubstr("lockd_paxos_role{role=\"follower\"} 1"));
  EXPECT_THAT(follower_metrics.body,
              HasSubstr(absl::StrCat("lockd_paxos_leader_id ", leader)));
  EXPECT_EQ(Get(cell_->metrics_address(leader), "/nope").code, 404);
}

TEST_F(MetricsTest, TheStatusPageListsMembersAndLeader) {
  const int leader = Leader();
  const HttpAnswer page = Get(cell_->metrics_address(leader), "/");
  ASSERT_EQ(page.code, 200) << page.body;
  EXPECT_THAT(page.body, HasSubstr("<h1>lockd replica "));
  const size_t members = page.body.find("<table id=\"members\">");
  ASSERT_NE(members, std::string::npos) << page.body;
  const std::string table =
      page.body.substr(members, page.body.find("</table>", members) - members);
  for (int id = 1; id <= 3; ++id) {
    EXPECT_THAT(table, HasSubstr(absl::StrCat("<tr><td>", id, "</td><td>",
                                              cell_->address(id), "</td><td>",
                                              cell_->peer_address(id))));
  }
  EXPECT_THAT(table, HasSubstr("voter (leader)"));
  EXPECT_THAT(page.body, HasSubstr("<th>role</th><td>leader</td>"));
  EXPECT_THAT(page.body, HasSubstr("<table id=\"leaderships\">"));
}

TEST_F(MetricsTest, ReadinessFollowsTheCellAndHealthTheProcess) {
  for (int id = 1; id <= 3; ++id) {
    const HttpAnswer ready =
        WaitFor(cell_->metrics_address(id), "/readyz", 200, absl::Seconds(10));
    EXPECT_EQ(ready.code, 200) << ready.body;
    EXPECT_THAT(ready.body, HasSubstr("ready: "));
    EXPECT_EQ(Get(cell_->metrics_address(id), "/healthz").code, 200);
  }
  // Alone, a replica is alive but not ready: no leader.
  const int leader = Leader();
  const int alone = leader == 1 ? 2 : 1;
  for (int id = 1; id <= 3; ++id) {
    if (id != alone) {
      LOCKD_ASSERT_OK(cell_->Kill(id));
    }
  }
  const HttpAnswer not_ready =
      WaitFor(cell_->metrics_address(alone), "/readyz", 503, absl::Seconds(10));
  EXPECT_EQ(not_ready.code, 503) << not_ready.body;
  EXPECT_THAT(not_ready.body, HasSubstr("not ready: no leader known"));
  EXPECT_EQ(Get(cell_->metrics_address(alone), "/healthz").code, 200);
}

}  // namespace
}  // namespace lockd::integration
