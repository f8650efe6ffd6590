#pragma once
// CRC32C (Castagnoli) as TFRecord framing uses it. Debian has no C/C++ crc32c library package;
// the portable path is Boost.CRC (Debian's libboost-dev, already a losslens dependency), which
// computes any CRC from its parameters, so no CRC table is written here. x86-64 CPUs with
// SSE4.2 have this very CRC as an instruction (crc32), used where the CPU has it: a byte at a
// time through Boost's table was a seventh of `losslens analyze` on an event file.

#include <cstddef>
#include <cstdint>

namespace losslens::tfevents::detail {

/// CRC-32C: polynomial 0x1EDC6F41, reflected, initial and final XOR 0xFFFFFFFF. Thread-safe.
std::uint32_t crc32c(const void* data, std::size_t size) noexcept;

/// TFRecord's masked CRC: rotated right by 15 bits plus a constant, so that a CRC of data that
/// itself holds CRCs is not trivially related to them.
inline std::uint32_t masked_crc32c(const void* data, std::size_t size) {
  const std::uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

/// Little-endian fixed-width integers of the framing.
inline std::uint64_t load_le64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline std::uint32_t load_le32(const unsigned char* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
         std::uint32_t(p[3]) << 24;
}
inline void store_le(unsigned char* p, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

}  // namespace losslens::tfevents::detail
