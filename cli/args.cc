#include "cli/args.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace lockd::cli {
namespace {

const FlagSpec* Find(const std::vector<FlagSpec>* specs,
                     const std::string& name) {
  if (specs == nullptr) return nullptr;
  for (const FlagSpec& spec : *specs) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

// Whether `text` is one or more numbers ("10", "1.5", ".5"), each followed
// by a unit of absl::ParseDuration.
bool IsNumbersWithUnits(absl::string_view text) {
  if (text.empty()) return false;
  while (!text.empty()) {
    size_t digits = 0;
    size_t i = 0;
    bool dot = false;
    for (; i < text.size(); ++i) {
      if (absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) {
        ++digits;
      } else if (text[i] == '.' && !dot) {
        dot = true;
      } else {
        break;
      }
    }
    if (digits == 0) return false;
    text.remove_prefix(i);
    bool unit = false;
    // Two-letter units first: "ms" is not "m" followed by "s".
    for (absl::string_view name : {"ns", "us", "ms", "s", "m", "h"}) {
      if (absl::ConsumePrefix(&text, name)) {
        unit = true;
        break;
      }
    }
    if (!unit) return false;
  }
  return true;
}

}  // namespace

void ParsedArgs::ExecToPositional() {
  positional.insert(positional.end(), exec.begin(), exec.end());
  exec.clear();
  has_exec = false;
}

std::string ParsedArgs::Get(const std::string& name,
                            const std::string& fallback) const {
  auto it = flags.find(name);
  return it == flags.end() ? fallback : it->second;
}

absl::StatusOr<absl::Duration> ParsedArgs::Duration(
    const std::string& name, absl::Duration fallback) const {
  auto it = flags.find(name);
  if (it == flags.end()) return fallback;
  absl::Duration duration;
  if ((it->second != "0" && !IsNumbersWithUnits(it->second)) ||
      !absl::ParseDuration(it->second, &duration) ||
      duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, "=", it->second,
                     " is not a duration; use a number with a unit, e.g. "
                     "500ms, 10s or 2m"));
  }
  return duration;
}

absl::StatusOr<uint64_t> ParsedArgs::Uint(const std::string& name,
                                          uint64_t fallback) const {
  auto it = flags.find(name);
  if (it == flags.end()) return fallback;
  uint64_t value;
  if (!absl::SimpleAtoi(it->second, &value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, "=", it->second, " is not a non-negative integer"));
  }
  return value;
}

absl::StatusOr<ParsedArgs> ParseArgs(
    int argc, char** argv, const std::vector<FlagSpec>& global_flags,
    const std::function<const std::vector<FlagSpec>*(const std::string&)>&
        command_flags) {
  ParsedArgs parsed;
  const std::vector<FlagSpec>* own_flags = nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      parsed.has_exec = true;
      parsed.exec.assign(argv + i + 1, argv + argc);
      break;
    }
    if (arg == "-h") arg = "--help";
    if (arg == "-o") arg = "--output";
    if (absl::StartsWith(arg, "-o") && arg.size() > 2 && arg[2] != '-') {
      arg = "--output=" + arg.substr(2);
    }
    if (!absl::StartsWith(arg, "--") || arg == "-") {
      if (!arg.empty() && arg[0] == '-' && arg != "-") {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag ", arg,
                         " (flags are --name=value; an argument that starts "
                         "with '-' goes after --)"));
      }
      if (parsed.command.empty()) {
        parsed.command = arg;
        own_flags = command_flags(arg);
      } else {
        parsed.positional.push_back(arg);
      }
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const FlagSpec* spec = Find(&global_flags, name);
    if (spec == nullptr) spec = Find(own_flags, name);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(
          parsed.command.empty() ? absl::StrCat("unknown flag --", name)
                                 : absl::StrCat("unknown flag --", name,
                                                " for '", parsed.command, "'"));
    }
    if (spec->value_name.empty()) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " takes no value"));
      }
      if (value != "false") parsed.flags[name] = "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value (--", name, "=",
                         spec->value_name, ")"));
      }
      value = argv[++i];
    }
    parsed.flags[name] = value;
  }
  return parsed;
}

std::optional<std::string> ScanOutputFlag(int argc, char** argv) {
  std::optional<std::string> output;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "-o" || arg == "--output") {
      if (i + 1 < argc) output = argv[++i];
    } else if (absl::StartsWith(arg, "--output=")) {
      output = std::string(arg.substr(9));
    } else if (absl::StartsWith(arg, "-o") && arg.size() > 2 && arg[2] != '-') {
      output = std::string(arg.substr(2));
    }
  }
  return output;
}

}  // namespace lockd::cli
