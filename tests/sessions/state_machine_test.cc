#include "sessions/state_machine.h"

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/sessions/test_util.h"

namespace lockd::sessions {
namespace {

using ::lockd::sessions::testing::AcquireCommand;
using ::lockd::sessions::testing::Cell;
using ::lockd::sessions::testing::CreateNodeCommand;
using ::lockd::sessions::testing::ReleaseCommand;
using ::lockd::sessions::testing::SetNodeCommand;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kOk = 0;
constexpr int kInvalidArgument =
    static_cast<int>(absl::StatusCode::kInvalidArgument);
constexpr int kNotFound = static_cast<int>(absl::StatusCode::kNotFound);
constexpr int kFailedPrecondition =
    static_cast<int>(absl::StatusCode::kFailedPrecondition);

TEST(StateMachineSmokeTest, CreateSetGetAndLock) {
  Cell cell;
  const uint64_t s = cell.NewSession();
  auto created = cell.Run(s, CreateNodeCommand("/a", "x"));
  ASSERT_TRUE(created.has_value());
  EXPECT_EQ(created->code(), kOk) << created->message();
  EXPECT_EQ(created->create_node().path(), "/a");
  auto set = cell.Run(s, SetNodeCommand("/a", "yz", 1));
  ASSERT_EQ(set->code(), kOk) << set->message();
  EXPECT_EQ(set->set_node().meta().content_generation(), 2u);
  auto node = cell.sm().GetNode("/a");
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->content(), "yz");
  auto acquired = cell.Run(s, AcquireCommand("/a", v1::EXCLUSIVE));
  ASSERT_EQ(acquired->code(), kOk) << acquired->message();
  EXPECT_EQ(acquired->acquire().sequencer().lock_generation(), 1u);
  EXPECT_TRUE(
      cell.sm().CheckSequencer(acquired->acquire().sequencer()).valid());
  auto released = cell.Run(s, ReleaseCommand("/a"));
  EXPECT_EQ(released->code(), kOk);
  auto again = cell.Run(s, ReleaseCommand("/a"));
  EXPECT_EQ(again->code(), kFailedPrecondition);
  auto bad = cell.Run(s, CreateNodeCommand("a"));
  EXPECT_EQ(bad->code(), kInvalidArgument);
  auto missing = cell.Run(s, SetNodeCommand("/b", ""));
  EXPECT_EQ(missing->code(), kNotFound);
  EXPECT_THAT(cell.sm().SessionIds(), ElementsAre(s));
  EXPECT_THAT(missing->message(), HasSubstr("/b"));
}

}  // namespace
}  // namespace lockd::sessions
