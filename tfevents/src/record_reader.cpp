#include "losslens/tfevents/record_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "detail/crc32c.hpp"
#include "losslens/error.hpp"

namespace losslens::tfevents {
namespace {

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

}  // namespace

record_reader::record_reader(const std::string& path) : name_(path) {
  file_ = std::make_unique<std::ifstream>(path, std::ios::binary);
  if (!*file_)
    throw error(path + ": cannot open: " + std::strerror(errno) +
                " (give an event file, events.out.tfevents.*, or a directory of runs)");
  in_ = file_.get();
}

record_reader::record_reader(const std::string& path, std::uint64_t start, std::uint64_t end)
    : record_reader(path) {
  if (start > 0 && !file_->seekg(std::streamoff(start)))
    throw error(path + ": cannot seek to offset " + std::to_string(start));
  offset_ = start;
  end_ = end;
}

record_reader::record_reader(std::istream& in, std::string name)
    : in_(&in), name_(std::move(name)) {}

record_reader::~record_reader() = default;

void record_reader::fail(std::uint64_t offset, const std::string& reason) const {
  throw error(name_ + ": offset " + std::to_string(offset) + ": " + reason);
}

std::size_t record_reader::read(char* out, std::size_t n) {
  std::size_t got = 0;
  while (got < n && (buffer_pos_ < buffer_end_ || refill())) {
    const std::size_t k = std::min(n - got, buffer_end_ - buffer_pos_);
    std::memcpy(out + got, buffer_.data() + buffer_pos_, k);
    buffer_pos_ += k;
    got += k;
  }
  offset_ += got;
  return got;
}

bool record_reader::refill() {
  if (stream_ended_) return false;
  if (buffer_.empty()) buffer_.resize(std::size_t(1) << 16);
  in_->read(buffer_.data(), std::streamsize(buffer_.size()));
  const auto got = std::size_t(in_->gcount());
  if (got < buffer_.size()) {
    if (in_->bad()) fail(offset_, std::string("read error: ") + std::strerror(errno));
    stream_ended_ = true;
  }
  buffer_pos_ = 0;
  buffer_end_ = got;
  return got > 0;
}

std::string record_reader::truncated(std::uint64_t earlier) const {
  if (cut_.empty()) return {};
  return name_ + ": offset " + std::to_string(cut_at_) + ": the last record is cut short (" + cut_ +
         "): read the " + std::to_string(earlier + records_) +
         " complete records before it (a run still being written?)";
}

bool record_reader::next(std::string& data) {
  if (done_) return false;
  const std::uint64_t start = offset_;
  if (start >= end_) {
    done_ = true;
    return false;
  }
  unsigned char header[12];
  const std::size_t got = read(reinterpret_cast<char*>(header), sizeof header);
  auto cut = [&](std::string what) {
    done_ = true;
    cut_at_ = start;
    cut_ = std::move(what);
    return false;
  };
  if (got == 0) {
    done_ = true;
    return false;
  }
  if (got < sizeof header) return cut(std::to_string(got) + " of its 12 header bytes");
  const std::uint64_t length = detail::load_le64(header);
  const std::uint32_t length_crc = detail::load_le32(header + 8);
  if (const auto want = detail::masked_crc32c(header, 8); want != length_crc)
    fail(start, "corrupt record header: the length's CRC is " + hex32(length_crc) + ", expected " +
                    hex32(want) + " (not an event file, or damaged here)");
  // Read in steps so that a large length in a short file never allocates more than the file.
  data.clear();
  constexpr std::uint64_t step = 1 << 20;
  while (data.size() < length) {
    const std::size_t want = std::size_t(std::min<std::uint64_t>(step, length - data.size()));
    const std::size_t old = data.size();
    data.resize(old + want);
    const std::size_t n = read(data.data() + old, want);
    if (n < want)
      return cut(std::to_string(old + n) + " of its " + std::to_string(length) + " data bytes");
  }
  unsigned char crc_bytes[4];
  if (const std::size_t n = read(reinterpret_cast<char*>(crc_bytes), 4); n < 4)
    return cut(std::to_string(n) + " of its 4 data-CRC bytes");
  const std::uint32_t data_crc = detail::load_le32(crc_bytes);
  if (const auto want = detail::masked_crc32c(data.data(), data.size()); want != data_crc)
    fail(start, "corrupt record: the CRC of its " + std::to_string(length) + " data bytes is " +
                    hex32(data_crc) + ", expected " + hex32(want));
  record_offset_ = start;
  ++records_;
  return true;
}

}  // namespace losslens::tfevents
