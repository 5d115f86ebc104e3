// The command line of lockctl: global flags, a command, its flags and
// arguments, and an optional "-- CMD [ARGS...]".

#ifndef LOCKD_CLI_ARGS_H_
#define LOCKD_CLI_ARGS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lockd::cli {

// A flag a command (or lockctl itself) accepts.
struct FlagSpec {
  std::string name;  // Without dashes.
  // "DURATION", "N", "VALUE"...; empty for a boolean flag.
  std::string value_name;
  std::string help;
};

struct ParsedArgs {
  std::string command;
  std::map<std::string, std::string> flags;  // Booleans map to "true".
  std::vector<std::string> positional;
  // Everything after "--" (empty if there was no "--").
  std::vector<std::string> exec;
  bool has_exec = false;

  bool Has(const std::string& name) const { return flags.count(name) != 0; }
  std::string Get(const std::string& name, const std::string& fallback) const;
  // INVALID_ARGUMENT naming the flag if the value is not a duration with a
  // unit ("500ms", "10s", "2m") or is negative.
  absl::StatusOr<absl::Duration> Duration(const std::string& name,
                                          absl::Duration fallback) const;
  absl::StatusOr<uint64_t> Uint(const std::string& name,
                                uint64_t fallback) const;
};

// Parses argv[1..]. Global flags may come before or after the command; the
// command's flags after it. `-o X` is --output=X and `-h` is --help.
// `command_flags` returns the flags of a command, or nullopt for an
// unknown command (then only global flags are accepted after it and the
// caller reports the unknown command). INVALID_ARGUMENT for unknown flags
// and missing values.
absl::StatusOr<ParsedArgs> ParseArgs(
    int argc, char** argv, const std::vector<FlagSpec>& global_flags,
    const std::function<const std::vector<FlagSpec>*(const std::string&)>&
        command_flags);

}  // namespace lockd::cli

#endif  // LOCKD_CLI_ARGS_H_
