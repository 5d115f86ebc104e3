// The external check: tests/python/lockd_check.py uses the public API from
// Python (Debian's grpcio), generated from the protos alone, over TLS with
// a client certificate, against a real cell.

#include <sys/wait.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/cell_fixture.h"
#include "tests/integration/process.h"

namespace lockd::integration {
namespace {

class PythonClientTest : public CellTest {};

TEST_F(PythonClientTest, UsesTheApiOverTlsFromTheProtos) {
  const std::string dir = ::testing::TempDir() + "/python-client";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/generated");
  LOCKD_ASSERT_OK(MakeCertificates(dir + "/certs", {1, 2, 3}, {"py"}));
  CellOptions options = DefaultOptions();
  options.tls_dir = dir + "/certs";
  ASSERT_NO_FATAL_FAILURE(StartCell(options));

  ProcessOptions process;
  process.argv = {PYTHON3,
                  LOCKD_CHECK_SCRIPT,
                  "--endpoints=" + cell_->endpoints(),
                  "--ca=" + cell_->CaFile(),
                  "--cert=" + dir + "/certs/client-py.pem",
                  "--key=" + dir + "/certs/client-py.key",
                  std::string("--protos=") + PROTO_DIR,
                  "--out=" + dir + "/generated"};
  process.output_path = dir + "/out";
  const ProcessResult result = RunToExit(process, absl::Seconds(60));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  const std::string& output = result.output;
  EXPECT_TRUE(absl::StrContains(output, "python client: ok")) << output;
}

}  // namespace
}  // namespace lockd::integration
