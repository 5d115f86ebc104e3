#ifndef LOCKD_TESTS_CLIENT_CLIENT_FIXTURE_H_
#define LOCKD_TESTS_CLIENT_CLIENT_FIXTURE_H_

// The fixture shared by the client library's tests (tests/client/): a cell
// (CellTest) plus library clients and sessions owned by the fixture, all
// destroyed before the cell.

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "lockd/client.h"
#include "lockd/session.h"
#include "tests/integration/cell_fixture.h"

namespace lockd {

class LibraryClientTest : public integration::CellTest {
 protected:
  ClientOptions LibraryClientOptions() const {
    ClientOptions options;
    options.endpoints = cell_->addresses();
    options.attempt_timeout = absl::Seconds(2);
    return options;
  }

  // A library client owned by the fixture. nullptr and a test failure if it
  // cannot be created.
  Client* NewLibraryClient(ClientOptions options) {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return nullptr;
    library_clients_.push_back(std::move(*client));
    return library_clients_.back().get();
  }
  Client* NewLibraryClient() {
    return NewLibraryClient(LibraryClientOptions());
  }

  // A session owned by the fixture, named after the test unless `options`
  // names it. nullptr and a test failure if it cannot be created.
  Session* NewSession(Client* client, SessionOptions options = {}) {
    if (options.client_name == SessionOptions().client_name) {
      options.client_name =
          ::testing::UnitTest::GetInstance()->current_test_info()->name();
    }
    absl::StatusOr<std::unique_ptr<Session>> session =
        Session::Create(client, std::move(options));
    EXPECT_TRUE(session.ok()) << session.status();
    if (!session.ok()) return nullptr;
    sessions_.push_back(std::move(*session));
    return sessions_.back().get();
  }

  // Derived fixtures clear what they own (locks, elections, ...) first.
  void TearDown() override {
    sessions_.clear();
    library_clients_.clear();
    CellTest::TearDown();
  }

  std::vector<std::unique_ptr<Client>> library_clients_;
  std::vector<std::unique_ptr<Session>> sessions_;
};

}  // namespace lockd

#endif  // LOCKD_TESTS_CLIENT_CLIENT_FIXTURE_H_
