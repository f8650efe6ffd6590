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
  /// Reads the records of the file from byte `start` (where a record begins) up to byte `end`:
  /// next() returns false at the first record that starts at or after `end`, and offset() then
  /// says where that is (one part of a file read in parts). Throws losslens::error when the
  /// file cannot be opened or positioned.
  record_reader(const std::string& path, std::uint64_t start, std::uint64_t end);
  /// Reads from a stream that outlives the reader; `name` appears in messages.
  record_reader(std::istream& in, std::string name);
  ~record_reader();

  /// Reads the next record's data; false at the end of the file (or at a cut-short last
  /// record). Throws losslens::error on a CRC mismatch or a read failure.
  bool next(std::string& data);
  /// Byte offset of the record last returned by next().
  std::uint64_t record_offset() const noexcept { return record_offset_; }
  /// Bytes consumed from the start of the file: after next() returned false at the `end` of a
  /// part, the offset of the first record not read.
  std::uint64_t offset() const noexcept { return offset_; }
  /// Records returned so far.
  std::uint64_t records() const noexcept { return records_; }
  /// When the file ended inside a record: "NAME: offset N: ..." saying what was cut and that
  /// the records before it were read (this reader's, plus `earlier` records of the file before
  /// its start); empty otherwise.
  std::string truncated(std::uint64_t earlier = 0) const;
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
  std::uint64_t end_ = UINT64_MAX;  // no record starting here or later is read
  std::uint64_t cut_at_ = 0;        // the cut-short last record: its offset and what was cut
  std::string cut_;
  bool done_ = false;
};

}  // namespace losslens::tfevents
