#include "lockd/crc32c.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace lockd::crc32c {
namespace {

struct KnownVector {
  const char* name;
  std::string data;
  uint32_t crc;
};

std::string Bytes(int count, int first, int step) {
  std::string bytes;
  for (int i = 0; i < count; ++i) {
    bytes.push_back(static_cast<char>(first + i * step));
  }
  return bytes;
}

// Vectors from RFC 3720 (iSCSI), appendix B.4, and the usual check value.
TEST(Crc32cTest, MatchesKnownVectors) {
  const KnownVector kVectors[] = {
      {"empty", "", 0x00000000},
      {"check string", "123456789", 0xE3069283},
      {"32 zero bytes", std::string(32, '\0'), 0x8A9136AA},
      {"32 0xFF bytes", std::string(32, '\xFF'), 0x62A8AB43},
      {"ascending 0..31", Bytes(32, 0, 1), 0x46DD794E},
      {"descending 31..0", Bytes(32, 31, -1), 0x113FDB5C},
  };
  for (const KnownVector& vector : kVectors) {
    EXPECT_EQ(Value(vector.data.data(), vector.data.size()), vector.crc)
        << vector.name;
  }
}

TEST(Crc32cTest, ExtendEqualsValueOfConcatenation) {
  const std::string data = "The quick brown fox jumps over the lazy dog";
  const uint32_t whole = Value(data.data(), data.size());
  for (size_t split = 0; split <= data.size(); ++split) {
    const uint32_t prefix = Value(data.data(), split);
    EXPECT_EQ(Extend(prefix, data.data() + split, data.size() - split), whole)
        << "split at " << split;
  }
}

// Bit-at-a-time CRC32C straight from the definition.
uint32_t ReferenceCrc32c(const std::string& data) {
  uint32_t reg = 0xFFFFFFFF;
  for (unsigned char byte : data) {
    reg ^= byte;
    for (int bit = 0; bit < 8; ++bit) {
      reg = (reg & 1) != 0 ? (reg >> 1) ^ 0x82F63B78 : reg >> 1;
    }
  }
  return ~reg;
}

TEST(Crc32cTest, MatchesBitwiseReferenceForEveryLengthAndAlignment) {
  std::string buffer;
  uint32_t state = 12345;
  for (int i = 0; i < 300; ++i) {
    state = state * 1103515245 + 12345;
    buffer.push_back(static_cast<char>(state >> 16));
  }
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t length = 0; offset + length <= buffer.size(); ++length) {
      const std::string data = buffer.substr(offset, length);
      ASSERT_EQ(Value(buffer.data() + offset, length), ReferenceCrc32c(data))
          << "offset " << offset << " length " << length;
    }
  }
}

TEST(Crc32cTest, DifferentDataGivesDifferentValues) {
  EXPECT_NE(Value("a", 1), Value("b", 1));
  EXPECT_NE(Value("ab", 2), Value("ba", 2));
  EXPECT_NE(Value("", 0), Value(std::string(1, '\0').data(), 1));
}

TEST(Crc32cTest, MaskChangesValueAndUnmaskRestoresIt) {
  const uint32_t kCrcs[] = {0x00000000, 0xFFFFFFFF, 0xE3069283, 0x8A9136AA,
                            0x00000001, 0x80000000, 0x12345678};
  for (uint32_t crc : kCrcs) {
    const uint32_t masked = Mask(crc);
    EXPECT_NE(masked, crc) << std::hex << crc;
    EXPECT_NE(Mask(masked), masked) << std::hex << crc;
    EXPECT_EQ(Unmask(masked), crc) << std::hex << crc;
    EXPECT_EQ(Unmask(Unmask(Mask(masked))), crc) << std::hex << crc;
  }
}

}  // namespace
}  // namespace lockd::crc32c
