// lockctl: the command line of lockd. `lockctl help` documents it.

#include "cli/commands.h"
#include "glog/logging.h"

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  // Library logs go to stderr only when they matter.
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = google::GLOG_ERROR;
  return lockd::cli::Main(argc, argv);
}
