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
  // Booleans map to "true". A flag given twice keeps its last value.
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;
  // Everything after "--" (empty if there was no "--").
  std::vector<std::string> exec;
  bool has_exec = false;

  bool Has(const std::string& name) const { return flags.count(name) != 0; }
  std::string Get(const std::string& name, const std::string& fallback) const;
  // For commands that run no command: what came after "--" are more
  // positional arguments (so they may start with '-': `put /x -- -5`).
  void ExecToPositional();
  // INVALID_ARGUMENT naming the flag unless the value is "0" or numbers
  // each followed by a unit ("500ms", "1.5s", "1h30m"; units ns, us, ms,
  // s, m, h) that add up to a finite duration.
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

// The value of the last --output flag (`-o X`, `-oX`, `--output=X`,
// `--output X`) before any "--", found without parsing the rest, so that
// errors in the rest can be reported in that format; nullopt if none.
std::optional<std::string> ScanOutputFlag(int argc, char** argv);

}  // namespace lockd::cli

#endif  // LOCKD_CLI_ARGS_H_
