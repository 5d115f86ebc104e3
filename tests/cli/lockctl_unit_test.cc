// lockctl's pure parts: argument parsing, JSON output, exit codes, and the
// sequencer's text form (client library).

#include <optional>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/exit_codes.h"
#include "cli/output.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lockd/sequencer.h"

namespace lockd::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::vector<FlagSpec> kGlobal = {{"output", "FORMAT", ""},
                                       {"help", "", ""}};
const std::vector<FlagSpec> kLockFlags = {{"shared", "", ""},
                                          {"wait", "DURATION", ""}};

// argv for `lockctl WORDS...`; the pointers point into `words`.
std::vector<char*> Argv(std::vector<std::string>& words) {
  std::vector<char*> argv = {const_cast<char*>("lockctl")};
  for (std::string& word : words) argv.push_back(word.data());
  return argv;
}

absl::StatusOr<ParsedArgs> Parse(std::vector<std::string> words) {
  std::vector<char*> argv = Argv(words);
  return ParseArgs(static_cast<int>(argv.size()), argv.data(), kGlobal,
                   [](const std::string& name) -> const std::vector<FlagSpec>* {
                     return name == "lock" ? &kLockFlags : nullptr;
                   });
}

std::optional<std::string> ScanOutput(std::vector<std::string> words) {
  std::vector<char*> argv = Argv(words);
  return ScanOutputFlag(static_cast<int>(argv.size()), argv.data());
}

// The error message of --wait=`value`, or "" if it is a duration.
std::string WaitError(const std::string& value) {
  absl::StatusOr<ParsedArgs> args = Parse({"lock", "--wait=" + value});
  if (!args.ok()) return std::string(args.status().message());
  return std::string(
      args->Duration("wait", absl::ZeroDuration()).status().message());
}

TEST(ArgsTest, FlagsCommandArgumentsAndCommand) {
  absl::StatusOr<ParsedArgs> args =
      Parse({"-o", "json", "lock", "/x", "--shared", "--wait", "5s", "--", "sh",
             "-c", "--wait=1"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->command, "lock");
  EXPECT_EQ(args->Get("output", ""), "json");
  EXPECT_TRUE(args->Has("shared"));
  EXPECT_EQ(*args->Duration("wait", absl::ZeroDuration()), absl::Seconds(5));
  EXPECT_THAT(args->positional, ElementsAre("/x"));
  EXPECT_TRUE(args->has_exec);
  EXPECT_THAT(args->exec, ElementsAre("sh", "-c", "--wait=1"));
  EXPECT_EQ(Parse({"-ojson", "lock"})->Get("output", ""), "json");
  EXPECT_FALSE(Parse({"lock", "/x"})->has_exec);
}

TEST(ArgsTest, ErrorsNameTheFlag) {
  EXPECT_THAT(Parse({"lock", "--bogus"}).status().message(),
              HasSubstr("unknown flag --bogus for 'lock'"));
  EXPECT_THAT(Parse({"--shared", "lock"}).status().message(),
              HasSubstr("unknown flag --shared"));
  EXPECT_THAT(Parse({"lock", "--wait"}).status().message(),
              HasSubstr("--wait needs a value"));
  EXPECT_THAT(Parse({"lock", "--shared=yes"}).status().message(),
              HasSubstr("takes no value"));
  EXPECT_THAT(Parse({"lock", "-x"}).status().message(),
              HasSubstr("unknown flag -x"));
  EXPECT_THAT(Parse({"lock", "/x", "-5"}).status().message(),
              HasSubstr("an argument that starts with '-' goes after --"));
}

TEST(ArgsTest, DurationsAreNumbersWithUnits) {
  for (const char* bad :
       {"10", "ten", "-1s", "inf", "-inf", "+1s", "s", ".s", "1s2", "1 s", "",
        "00", "1d", "9223372036854775807h"}) {
    EXPECT_THAT(WaitError(bad), HasSubstr("use a number with a unit")) << bad;
  }
  for (const char* good : {"0", "500ms", "10s", "2m", "1.5s", ".5s", "1h30m",
                           "250us", "7ns", "0s"}) {
    EXPECT_EQ(WaitError(good), "") << good;
  }
  EXPECT_EQ(*Parse({"lock", "--wait=0"})->Duration("wait", absl::Seconds(1)),
            absl::ZeroDuration());
  EXPECT_EQ(*Parse({"lock", "--wait=1h30m"})->Duration("wait", {}),
            absl::Minutes(90));
}

TEST(ArgsTest, TheLastOfAFlagGivenTwiceWins) {
  absl::StatusOr<ParsedArgs> args =
      Parse({"lock", "--wait=1s", "/x", "--wait", "2s", "-o", "json"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(*args->Duration("wait", {}), absl::Seconds(2));
}

TEST(ArgsTest, WhatFollowsTheDashesCanBeArguments) {
  absl::StatusOr<ParsedArgs> args = Parse({"put", "/x", "--", "-5", "--y"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_THAT(args->exec, ElementsAre("-5", "--y"));
  args->ExecToPositional();
  EXPECT_THAT(args->positional, ElementsAre("/x", "-5", "--y"));
  EXPECT_FALSE(args->has_exec);
  EXPECT_TRUE(args->exec.empty());
}

TEST(ArgsTest, TheOutputFlagIsFoundBeforeParsing) {
  EXPECT_EQ(ScanOutput({"-o", "json", "get", "--bogus"}), "json");
  EXPECT_EQ(ScanOutput({"get", "-ojson", "/x"}), "json");
  EXPECT_EQ(ScanOutput({"--output=json", "frob"}), "json");
  EXPECT_EQ(ScanOutput({"get", "--output", "json"}), "json");
  EXPECT_EQ(ScanOutput({"-o", "json", "--output=table", "get"}), "table");
  EXPECT_EQ(ScanOutput({"get", "/x"}), std::nullopt);
  EXPECT_EQ(ScanOutput({"get", "-o"}), std::nullopt);
  // After "--" it belongs to the command lockctl runs.
  EXPECT_EQ(ScanOutput({"lock", "/x", "--", "ls", "-o", "json"}), std::nullopt);
}

TEST(OutputTest, Utf8IsValidatedStrictly) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii\n"));
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));  // NUL is UTF-8.
  EXPECT_TRUE(IsValidUtf8("h\xc3\xa9"));             // U+00E9
  EXPECT_TRUE(IsValidUtf8("\xe2\x82\xac"));          // U+20AC
  EXPECT_TRUE(IsValidUtf8("\xf0\x9f\x98\x80"));      // U+1F600
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));      // U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("ok\x80"));                // Lone continuation.
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));              // Truncated.
  EXPECT_FALSE(IsValidUtf8("\xe2\x82x"));             // Broken sequence.
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));              // Overlong "/".
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\xaf"));          // Overlong, 3 bytes.
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));          // Surrogate U+D800.
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));      // Above U+10FFFF.
  EXPECT_FALSE(IsValidUtf8("\xf8\x88\x80\x80\x80"));  // 5-byte form.
}

TEST(OutputTest, ZeroTimesAreNullInJson) {
  EXPECT_EQ(JsonObject().TimeMs("t", 0).Null("n").str(),
            "{\"t\":null,\"n\":null}");
  EXPECT_EQ(JsonObject().TimeMs("t", 1000).str(),
            "{\"t\":\"1970-01-01T00:00:01.000Z\"}");
  EXPECT_EQ(FormatTimeMs(0), "-");  // Tables keep the dash.
}

TEST(OutputTest, JsonStringsAreAlwaysValid) {
  EXPECT_EQ(JsonString("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
  EXPECT_EQ(JsonString(std::string("\x01\x7f", 2)), "\"\\u0001\\u007f\"");
  EXPECT_EQ(JsonString("h\xc3\xa9"), "\"h\xc3\xa9\"");  // Valid UTF-8 stays.
  // Invalid UTF-8 (a lone continuation byte, a truncated sequence, an
  // overlong encoding) is escaped byte by byte.
  EXPECT_EQ(JsonString("\x80"), "\"\\u0080\"");
  EXPECT_EQ(JsonString("\xe2\x82"), "\"\\u00e2\\u0082\"");
  EXPECT_EQ(JsonString("\xc0\xaf"), "\"\\u00c0\\u00af\"");
  EXPECT_EQ(JsonObject()
                .String("a", "x")
                .Uint("b", 18446744073709551615u)
                .Int("c", -1)
                .Bool("d", false)
                .Raw("e", JsonArray({"1", "\"2\""}))
                .str(),
            "{\"a\":\"x\",\"b\":18446744073709551615,\"c\":-1,\"d\":false,"
            "\"e\":[1,\"2\"]}");
}

TEST(ExitCodesTest, EachFailureHasItsCode) {
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError(""), false), kExitNotFound);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError(""), false),
            kExitCasMismatch);
  EXPECT_EQ(ExitCodeFor(absl::AlreadyExistsError(""), false), kExitCasMismatch);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError(""), true),
            kExitNotAcquired);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError(""), true),
            kExitNotAcquired);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError(""), false),
            kExitUnavailable);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError(""), true), kExitUnavailable);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError(""), false), kExitUsage);
  EXPECT_EQ(ExitCodeFor(absl::ResourceExhaustedError(""), false), kExitError);
}

TEST(SequencerTextTest, RoundTripsAndRejectsMalformedText) {
  v1::Sequencer sequencer;
  sequencer.set_path("/jobs/a:b");
  sequencer.set_mode(v1::SHARED);
  sequencer.set_lock_generation(7);
  sequencer.set_session_id(12);
  sequencer.set_instance(3);
  const std::string text = EncodeSequencer(sequencer);
  EXPECT_EQ(text, "lockd1:shared:7:12:3:/jobs/a:b");
  absl::StatusOr<v1::Sequencer> decoded = DecodeSequencer(text);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->SerializeAsString(), sequencer.SerializeAsString());
  for (const char* bad : {"", "lockd1:shared:7:12:3", "lockd2:shared:7:12:3:/a",
                          "lockd1:read:7:12:3:/a", "lockd1:shared:x:12:3:/a",
                          "lockd1:shared:7:12:3:a"}) {
    EXPECT_EQ(DecodeSequencer(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace lockd::cli
