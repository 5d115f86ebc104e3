// Replays the README's tour ("## A tour with lockctl") against a real cell:
// every `$ ` line of its code blocks runs in one bash script, in order,
// with the real lockctl on the PATH. A command must exit 0 unless the
// README shows its exit code (`; echo $?`), and every output line the
// README shows must appear in the output, with numbers, times, ids and
// column widths free ("..." stands for anything). So the README's commands,
// exit codes and output cannot drift from the program again.

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/integration/cell.h"
#include "tests/integration/process.h"

namespace lockd::cli_test {
namespace {

using ::lockd::integration::Cell;
using ::lockd::integration::CellOptions;
using ::lockd::integration::ProcessOptions;
using ::lockd::integration::ProcessResult;
using ::lockd::integration::ReadWholeFile;
using ::lockd::integration::RunToExit;

struct Step {
  std::string command;
  std::vector<std::string> expected;
  bool background = false;
  // The README shows the exit code (`; echo $?`).
  bool shows_exit_code = false;
};

// The `$ ` commands of the tour's code blocks with the lines after each.
std::vector<Step> TourSteps(const std::string& readme) {
  const size_t start = readme.find("## A tour with lockctl");
  const size_t end = readme.find("\n## ", start + 1);
  const std::string tour = readme.substr(start, end - start);
  std::vector<Step> steps;
  bool in_code = false;
  for (absl::string_view line : absl::StrSplit(tour, '\n')) {
    if (absl::StartsWith(line, "```")) {
      in_code = !in_code;
      continue;
    }
    if (!in_code) continue;
    if (absl::ConsumePrefix(&line, "$ ")) {
      Step step;
      step.command = std::string(line);
      step.background = absl::EndsWith(line, " &");
      step.shows_exit_code = absl::EndsWith(line, "; echo $?");
      steps.push_back(step);
    } else if (!steps.empty() && !line.empty()) {
      steps.back().expected.emplace_back(line);
    }
  }
  return steps;
}

// A README output line as an extended regex: digits, ids and widths free.
std::string Pattern(const std::string& line) {
  std::string escaped;
  for (char c : line) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) {
      escaped += '\\';
    }
    escaped += c;
  }
  escaped = absl::StrReplaceAll(escaped, {{"\\.\\.\\.", ".*"}});
  escaped = std::regex_replace(escaped, std::regex("[0-9]+"), "[0-9]+");
  escaped = std::regex_replace(escaped, std::regex("  +"), " +");
  return escaped;
}

std::string Quoted(const std::string& text) {
  return absl::StrCat("'", absl::StrReplaceAll(text, {{"'", "'\\''"}}), "'");
}

TEST(ReadmeTourTest, EveryCommandRunsAsTheReadmeShows) {
  const std::vector<Step> steps =
      TourSteps(ReadWholeFile(std::string(LOCKD_SOURCE_DIR) + "/README.md"));
  ASSERT_GE(steps.size(), 10u) << "the tour was not found in README.md";

  CellOptions options;
  options.lockd_binary = LOCKD_BINARY;
  absl::StatusOr<std::unique_ptr<Cell>> cell = Cell::Start(options);
  ASSERT_TRUE(cell.ok()) << cell.status();
  ASSERT_TRUE((*cell)->WaitForLeader(absl::Seconds(20)).ok());
  const std::string dir = (*cell)->directory() + "/tour";
  std::filesystem::create_directories(dir);

  std::string script = absl::StrCat(
      "set -u\n", "export PATH=",
      Quoted(std::filesystem::path(LOCKCTL_BINARY).parent_path().string()),
      ":$PATH\n", "export LOCKD_ENDPOINTS=", Quoted((*cell)->endpoints()),
      "\ncd ", Quoted(dir), "\n",
      // Waits (up to 30 s) until a background command printed its first
      // line, as a person waits before typing the next command.
      "wait_for() { for i in $(seq 600); do grep -qE -- \"$2\" \"$1\" && "
      "return 0; sleep 0.05; done; echo \"### timed out waiting for $2\"; }\n");
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& step = steps[i];
    if (step.background) {
      std::string command = step.command.substr(0, step.command.size() - 2);
      absl::StrAppend(&script, "( ", command, " ) > bg", i, ".out 2>&1 &\n");
      if (!step.expected.empty()) {
        absl::StrAppend(&script, "wait_for bg", i, ".out ",
                        Quoted(Pattern(step.expected.front())), "\n");
      }
    } else {
      // (The newline ends output that does not end in one, as `get`'s.)
      absl::StrAppend(&script, "echo '### step ", i, "'\n", step.command,
                      " 2>&1\nprintf '\\n### rc ", i, " %d\\n' $?\n");
    }
  }
  absl::StrAppend(&script, "wait\ncat bg*.out\n");
  std::ofstream(dir + "/tour.sh") << script;

  ProcessOptions process;
  process.argv = {"/bin/bash", dir + "/tour.sh"};
  process.output_path = dir + "/tour.out";
  const ProcessResult result = RunToExit(process, absl::Seconds(120));
  const std::string& output = result.output;
  const std::string context =
      absl::StrCat("script:\n", script, "\noutput:\n", output);
  EXPECT_EQ(result.exit_code, 0) << context;
  EXPECT_FALSE(absl::StrContains(output, "### timed out")) << context;

  const std::vector<std::string> lines = absl::StrSplit(output, '\n');
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& step = steps[i];
    if (!step.background && !step.shows_exit_code) {
      EXPECT_TRUE(absl::StrContains(output, absl::StrCat("### rc ", i, " 0\n")))
          << "`" << step.command << "` did not exit 0\n"
          << context;
    }
    std::vector<std::string> expected_lines = step.expected;
    if (step.shows_exit_code) {
      ASSERT_FALSE(expected_lines.empty()) << step.command;
      EXPECT_TRUE(absl::StrContains(
          output,
          absl::StrCat("\n", expected_lines.back(), "\n\n### rc ", i, " 0\n")))
          << "`" << step.command << "` did not exit " << expected_lines.back()
          << "\n"
          << context;
      expected_lines.pop_back();
    }
    for (const std::string& expected : expected_lines) {
      const std::regex pattern(Pattern(expected), std::regex::extended);
      bool found = false;
      for (const std::string& line : lines) {
        if (std::regex_match(line, pattern)) found = true;
      }
      EXPECT_TRUE(found) << "`" << step.command << "`: no output line like\n  "
                         << expected << "\n"
                         << context;
    }
  }
}

}  // namespace
}  // namespace lockd::cli_test
