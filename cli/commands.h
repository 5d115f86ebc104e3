// The commands of lockctl, their help texts and the dispatcher.

#ifndef LOCKD_CLI_COMMANDS_H_
#define LOCKD_CLI_COMMANDS_H_

namespace lockd::cli {

// Runs lockctl with its command line; returns the exit code
// (cli/exit_codes.h).
int Main(int argc, char** argv);

}  // namespace lockd::cli

#endif  // LOCKD_CLI_COMMANDS_H_
