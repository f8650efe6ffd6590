#include "detail/crc32c.hpp"

#include <boost/crc.hpp>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define LOSSLENS_CRC32C_SSE42 1
#endif

namespace losslens::tfevents::detail {
namespace {

std::uint32_t crc32c_portable(const void* data, std::size_t size) noexcept {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, size);
  return crc.checksum();
}

#if LOSSLENS_CRC32C_SSE42
// The crc32 instruction keeps the reflected CRC-32C state: the initial and final XOR are ours.
// Compiled for SSE4.2 alone, and called only when the CPU says it has it.
__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(const void* data,
                                                             std::size_t size) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t state = 0xFFFFFFFFu;
  for (; size >= 8; size -= 8, p += 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);  // unaligned; the instruction takes the bytes little-endian
    state = _mm_crc32_u64(state, word);
  }
  auto c = static_cast<std::uint32_t>(state);
  for (; size > 0; --size, ++p) c = _mm_crc32_u8(c, *p);
  return ~c;
}
#endif

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t size) noexcept {
#if LOSSLENS_CRC32C_SSE42
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  if (hardware) return crc32c_sse42(data, size);
#endif
  return crc32c_portable(data, size);
}

}  // namespace losslens::tfevents::detail
