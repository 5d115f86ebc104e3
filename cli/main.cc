// lockctl: the command line of lockd. `lockctl help` documents it.

#include "absl/synchronization/mutex.h"
#include "cli/commands.h"
#include "glog/logging.h"

int main(int argc, char** argv) {
  // Debian's Abseil checks lock order in a global graph on every
  // absl::Mutex (gRPC's too) unless told not to; see lockd/main.cc.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  google::InitGoogleLogging(argv[0]);
  // Library logs go to stderr only when they matter.
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = google::GLOG_ERROR;
  return lockd::cli::Main(argc, argv);
}
