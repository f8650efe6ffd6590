#pragma once
/// \file event_writer.hpp
/// Writes TensorBoard event files of scalars.

#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>

namespace losslens::tfevents {

/// The TFRecord framing of one record: u64 length, u32 masked CRC32C of the length, the data,
/// u32 masked CRC32C of the data (all little-endian).
std::string frame_record(std::string_view data);

/// The serialized `tensorflow.Event` of one scalar: wall_time, step (omitted at 0, as proto3
/// does) and a Summary with one Value {tag, simple_value}: what PyTorch's SummaryWriter and
/// other writers produce for `add_scalar`.
std::string scalar_event(std::string_view tag, std::int64_t step, double wall_time, float value);

/// The serialized `Event{wall_time, file_version: "brain.Event:2"}` that starts a file.
std::string file_version_event(double wall_time);

/// Writes an event file that TensorBoard reads: a file_version event, then one event per
/// scalar (values as float32 `simple_value`, which is what TensorBoard's scalar charts show).
///
/// Thread-safety: one thread at a time. Throws losslens::error from the constructor and close().
class event_writer {
 public:
  /// Creates the file, which must not exist yet, and writes the file_version event stamped
  /// `wall_time`. Throws losslens::error (existing file, missing directory, no permission).
  event_writer(const std::string& path, double wall_time);
  /// Closes the file; never throws (call close() to see write errors).
  ~event_writer();
  event_writer(const event_writer&) = delete;
  event_writer& operator=(const event_writer&) = delete;

  /// Appends one scalar event. Write errors surface in close().
  void write_scalar(std::string_view tag, std::int64_t step, double wall_time, float value);
  /// Flushes and closes; throws losslens::error when anything could not be written.
  void close();
  /// Records written so far, the file_version event included.
  std::uint64_t records() const noexcept { return records_; }

 private:
  void write(const std::string& payload);

  std::string path_;
  std::ofstream out_;
  std::uint64_t records_ = 0;
};

}  // namespace losslens::tfevents
