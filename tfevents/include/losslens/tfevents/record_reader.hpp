#pragma once
/// \file record_reader.hpp
/// Reads the records of a TFRecord file (the framing of TensorBoard event files), checking the
/// CRC32C of every length and every payload.

#include <cstdint>
#include <fstream>
#include <istream>
#include <memory>
#include <string>
#include <vector>

namespace losslens::tfevents {

/// Reads records framed as: u64 length (little-endian), u32 masked CRC32C of those 8 bytes,
/// `length` bytes of data, u32 masked CRC32C of the data.
///
/// A file that ends inside a record (a run still being written) is read up to the last
/// complete record and truncated() says so; a record whose CRC does not match is an error.
/// Every error is a losslens::error whose message starts with "NAME: offset N: " (N: the byte
/// offset of the record at fault). Memory: one record and a 64 KiB read buffer.
/// Thread-safety: one thread at a time.
class record_reader {
 public:
  /// Opens the file. Throws losslens::error when it cannot be opened.
  explicit record_reader(const std::string& path);
  /// Reads from a stream that outlives the reader; `name` appears in messages.
  record_reader(std::istream& in, std::string name);
  ~record_reader();

  /// Reads the next record's data; false at the end of the file (or at a cut-short last
  /// record). Throws losslens::error on a CRC mismatch or a read failure.
  bool next(std::string& data);
  /// Byte offset of the record last returned by next().
  std::uint64_t record_offset() const noexcept { return record_offset_; }
  /// Records returned so far.
  std::uint64_t records() const noexcept { return records_; }
  /// When the file ended inside a record: "NAME: offset N: ..." saying what was cut and that
  /// the records before it were read; empty otherwise.
  const std::string& truncated() const noexcept { return truncated_; }
  /// The name used in messages.
  const std::string& name() const noexcept { return name_; }

 private:
  [[noreturn]] void fail(std::uint64_t offset, const std::string& reason) const;
  std::size_t read(char* out, std::size_t n);
  bool refill();

  std::unique_ptr<std::ifstream> file_;
  std::istream* in_;
  // The file is read in large pieces: a stream read per framing field (three per record, and an
  // event is often a few dozen bytes) cost more than checking the record.
  std::vector<char> buffer_;
  std::size_t buffer_pos_ = 0, buffer_end_ = 0;
  bool stream_ended_ = false;
  std::string name_;
  std::uint64_t offset_ = 0;         // bytes consumed
  std::uint64_t record_offset_ = 0;  // start of the record last returned
  std::uint64_t records_ = 0;
  std::string truncated_;
  bool done_ = false;
};

}  // namespace losslens::tfevents
