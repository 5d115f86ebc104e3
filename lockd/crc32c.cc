#include "lockd/crc32c.h"

#include <array>

namespace lockd::crc32c {
namespace {

// The Castagnoli polynomial 0x1EDC6F41 with its bits reversed, since CRC32C
// processes the least significant bit of each byte first.
constexpr uint32_t kReversedPolynomial = 0x82F63B78;

// Added after the rotation in Mask(); any constant with a mix of bits works.
constexpr uint32_t kMaskDelta = 0xA282EAD8;
constexpr int kMaskRotateBits = 15;

using Table = std::array<std::array<uint32_t, 256>, 8>;

// Tables for "slicing by 8": kTables[0][b] is the register update for the
// input byte b; kTables[k][b] is the update for byte b followed by k zero
// bytes, which lets the loop below consume eight bytes per step.
constexpr Table MakeTables() {
  Table tables{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t reg = byte;
    for (int bit = 0; bit < 8; ++bit) {
      reg = (reg & 1) != 0 ? (reg >> 1) ^ kReversedPolynomial : reg >> 1;
    }
    tables[0][byte] = reg;
  }
  for (size_t k = 1; k < tables.size(); ++k) {
    for (uint32_t byte = 0; byte < 256; ++byte) {
      const uint32_t previous = tables[k - 1][byte];
      tables[k][byte] = (previous >> 8) ^ tables[0][previous & 0xFF];
    }
  }
  return tables;
}

constexpr Table kTables = MakeTables();

uint32_t LoadLittleEndian32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

}  // namespace

uint32_t Extend(uint32_t crc, const char* data, size_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  const unsigned char* const end = p + n;
  // The register holds the complement of the CRC between calls.
  uint32_t reg = ~crc;
  for (; end - p >= 8; p += 8) {
    const uint32_t low = reg ^ LoadLittleEndian32(p);
    const uint32_t high = LoadLittleEndian32(p + 4);
    reg = kTables[7][low & 0xFF] ^ kTables[6][(low >> 8) & 0xFF] ^
          kTables[5][(low >> 16) & 0xFF] ^ kTables[4][low >> 24] ^
          kTables[3][high & 0xFF] ^ kTables[2][(high >> 8) & 0xFF] ^
          kTables[1][(high >> 16) & 0xFF] ^ kTables[0][high >> 24];
  }
  for (; p < end; ++p) {
    reg = kTables[0][(reg ^ *p) & 0xFF] ^ (reg >> 8);
  }
  return ~reg;
}

uint32_t Mask(uint32_t crc) {
  const uint32_t rotated =
      (crc >> kMaskRotateBits) | (crc << (32 - kMaskRotateBits));
  return rotated + kMaskDelta;
}

uint32_t Unmask(uint32_t masked_crc) {
  const uint32_t rotated = masked_crc - kMaskDelta;
  return (rotated << kMaskRotateBits) | (rotated >> (32 - kMaskRotateBits));
}

}  // namespace lockd::crc32c
