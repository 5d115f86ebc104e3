// CRC32C (Castagnoli polynomial) checksums for records lockd writes to disk.
//
// A portable table-driven implementation ("slicing by 8": eight table lookups
// per eight bytes), no CPU specific instructions. Values are the standard
// CRC32C of RFC 3720, e.g. Value("123456789", 9) == 0xE3069283.
//
// Mask()/Unmask() transform a checksum before it is stored next to the data
// it covers. Computing the CRC of a string that itself embeds CRCs is prone to
// accidental regularities; storing a masked value avoids that (the same idea as
// LevelDB's masked CRCs).
//
// Thread-safety: all functions are pure and safe to call concurrently.
#ifndef LOCKD_CRC32C_H_
#define LOCKD_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace lockd::crc32c {

// Returns the CRC32C of data[0, n) appended to a byte string whose CRC32C is
// `crc`. Extend(Value(a), b) == Value(a + b).
uint32_t Extend(uint32_t crc, const char* data, size_t n);

// Returns the CRC32C of data[0, n).
inline uint32_t Value(const char* data, size_t n) { return Extend(0, data, n); }

// Returns a masked representation of `crc`, suitable for storing.
uint32_t Mask(uint32_t crc);

// Returns the CRC whose masked representation is `masked_crc`.
// Unmask(Mask(crc)) == crc for every crc.
uint32_t Unmask(uint32_t masked_crc);

}  // namespace lockd::crc32c

#endif  // LOCKD_CRC32C_H_
