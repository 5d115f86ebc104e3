// What every lockctl command gets: its parsed command line, the output in
// the chosen format, and the connection to the cell.

#ifndef LOCKD_CLI_CONTEXT_H_
#define LOCKD_CLI_CONTEXT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/exit_codes.h"
#include "cli/output.h"
#include "lockd/client.h"
#include "lockd/session.h"
#include "protos/lockd.pb.h"

namespace lockd::cli {

struct Context {
  ParsedArgs args;
  Output out{false};
  ClientOptions client_options;
  std::unique_ptr<Client> client;

  // "put /a", "lock /x": names the command in error messages.
  std::string what;

  // Reports a failed call and returns its exit code (see ExitCodeFor).
  int Fail(const absl::Status& status, bool acquiring = false) const;
  // Reports a usage error (exit code 2) with a pointer to the help.
  int Usage(const std::string& message) const;
  // Opens a session for this command, named after it for `lockctl
  // sessions` ("lockctl watch /x (host pid 12)"). `on_event`, if set,
  // receives the session's events (SessionOptions::on_event).
  absl::StatusOr<std::unique_ptr<Session>> OpenSession(
      absl::Duration ttl, absl::Duration grace_period,
      std::function<void(const v1::Event&)> on_event = nullptr) const;
};

// The commands (one per function; `args.positional` was checked against
// the command's argument count).
int RunStatus(Context& context);
int RunMembers(Context& context);
int RunMember(Context& context);
int RunSnapshot(Context& context);
int RunGet(Context& context);
int RunPut(Context& context);
int RunList(Context& context);
int RunRemove(Context& context);
int RunStat(Context& context);
int RunAcl(Context& context);
int RunCreate(Context& context);
int RunWatch(Context& context);
int RunSessions(Context& context);
int RunLocks(Context& context);
int RunLock(Context& context);
int RunElect(Context& context);
int RunLeader(Context& context);
int RunObserve(Context& context);
int RunCheckSequencer(Context& context);

// JSON and table renderings shared by commands.
std::string NodeMetaJson(const v1::NodeMeta& meta);
std::string LeaderJson(const std::string& name, const v1::LeaderInfo& leader);
std::string ModeName(v1::LockMode mode);

}  // namespace lockd::cli

#endif  // LOCKD_CLI_CONTEXT_H_
