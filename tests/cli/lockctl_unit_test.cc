// lockctl's pure parts: argument parsing, JSON output, exit codes, and the
// sequencer's text form (client library).

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

absl::StatusOr<ParsedArgs> Parse(std::vector<std::string> words) {
  std::vector<char*> argv = {const_cast<char*>("lockctl")};
  for (std::string& word : words) argv.push_back(word.data());
  return ParseArgs(static_cast<int>(argv.size()), argv.data(), kGlobal,
                   [](const std::string& name) -> const std::vector<FlagSpec>* {
                     return name == "lock" ? &kLockFlags : nullptr;
                   });
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
  for (const char* bad : {"10", "ten", "-1s"}) {
    absl::StatusOr<ParsedArgs> args =
        Parse({"lock", std::string("--wait=") + bad});
    ASSERT_TRUE(args.ok());
    EXPECT_THAT(args->Duration("wait", absl::ZeroDuration()).status().message(),
                HasSubstr("use a number with a unit"))
        << bad;
  }
  EXPECT_EQ(*Parse({"lock", "--wait=0"})->Duration("wait", absl::Seconds(1)),
            absl::ZeroDuration());
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
