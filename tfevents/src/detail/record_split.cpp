#include "detail/record_split.hpp"

#include <algorithm>
#include <fstream>

#include "detail/crc32c.hpp"

namespace losslens::tfevents::detail {

namespace {

// True when a record of `length` data bytes starting at `at` (its header already checked) fits
// the file and its data CRC matches.
bool data_matches(std::ifstream& in, std::uint64_t at, std::uint64_t length, std::uint64_t size,
                  std::string& data) {
  if (length > size || at + 16 + length > size) return false;
  data.resize(std::size_t(length) + 4);
  in.clear();
  if (!in.seekg(std::streamoff(at + 12)) || !in.read(data.data(), std::streamsize(data.size())))
    return false;
  const auto* crc = reinterpret_cast<const unsigned char*>(data.data()) + length;
  return masked_crc32c(data.data(), std::size_t(length)) == load_le32(crc);
}

}  // namespace

std::vector<std::uint64_t> record_starts_after(const std::string& path, std::uint64_t size,
                                               const std::vector<std::uint64_t>& offsets,
                                               std::uint64_t search_bytes) {
  std::vector<std::uint64_t> out;
  std::ifstream in(path, std::ios::binary);
  if (!in) return out;
  std::vector<unsigned char> window;
  std::string data;
  for (const std::uint64_t from : offsets) {
    if (from == 0 || from >= size || (!out.empty() && from <= out.back())) continue;
    const std::uint64_t n = std::min(search_bytes + 12, size - from);
    window.resize(std::size_t(n));
    in.clear();
    if (!in.seekg(std::streamoff(from)) ||
        !in.read(reinterpret_cast<char*>(window.data()), std::streamsize(n)))
      continue;
    for (std::size_t p = 0; p + 12 <= window.size(); ++p) {
      const unsigned char* h = window.data() + p;
      if (masked_crc32c(h, 8) != load_le32(h + 8)) continue;
      if (!data_matches(in, from + p, load_le64(h), size, data)) continue;
      if (out.empty() || from + p > out.back()) out.push_back(from + p);
      break;
    }
  }
  return out;
}

}  // namespace losslens::tfevents::detail
