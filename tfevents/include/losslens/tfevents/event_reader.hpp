#pragma once
/// \file event_reader.hpp
/// Reads the scalars of a TensorBoard event file.

#include <cstdint>
#include <istream>
#include <map>
#include <memory>
#include <string>

#include "losslens/tfevents/record_reader.hpp"

namespace losslens::tfevents {

/// One scalar of an event file.
struct scalar_value {
  std::string tag;
  std::int64_t step = 0;  ///< a missing step (proto3 omits 0) is 0
  double wall_time = 0;   ///< seconds since the Unix epoch
  double value = 0;       ///< NaN and Inf kept as they were stored
};

/// What a reader has seen so far.
struct event_stats {
  std::uint64_t records = 0;  ///< records (events) read
  std::uint64_t scalars = 0;  ///< scalars returned
  std::uint64_t skipped = 0;  ///< summary values that are not scalars (images, histograms,
                              ///< text, tensors with more than one element...)
  std::string file_version;   ///< of the file_version event ("brain.Event:2"); empty if none
};

/// What a reader knows of a tag's plugin. TensorBoard's writers name it on a tag's first value
/// only, so a reader that starts in the middle of a file may return values of a tag whose
/// plugin was named before its start (see scalar_run's reading in parts).
struct tag_plugin {
  bool named = false;   ///< a value read so far named the tag's plugin
  bool scalars = true;  ///< the plugin last named is TensorBoard's scalars (or has no name)
  std::uint64_t unnamed_values = 0;  ///< values returned before the plugin was named
};

/// Reads `tensorflow.Event` records and returns their scalars: `Summary.Value.simple_value`
/// (float32) and scalar tensors (one element, DT_FLOAT or DT_DOUBLE, in `tensor_content` or in
/// `float_val` / `double_val`), in file order. Values whose tag carries another plugin's metadata
/// (histograms, images, text...) are skipped and counted. A file with or without a
/// `file_version` event is accepted.
///
/// Every error is a losslens::error whose message starts with "NAME: offset N: " (N: the byte
/// offset of the record at fault): a CRC mismatch, a record that is not an Event, a tensor whose
/// content does not fit its type. Thread-safety: one thread at a time.
class event_reader {
 public:
  /// Opens the file. Throws losslens::error.
  explicit event_reader(const std::string& path);
  /// Reads the events whose records start in [start, end) of the file; `start` must be where a
  /// record starts (see record_reader). Throws losslens::error.
  event_reader(const std::string& path, std::uint64_t start, std::uint64_t end);
  /// Reads from a stream that outlives the reader; `name` appears in messages.
  event_reader(std::istream& in, std::string name);
  ~event_reader();

  /// Reads the next scalar into v; false at the end. Throws losslens::error.
  bool next(scalar_value& v);
  /// Counters so far.
  const event_stats& stats() const noexcept { return stats_; }
  /// The note of a cut-short last record (see record_reader::truncated, `earlier`: records of
  /// the file before this reader's start); empty if none.
  std::string truncated(std::uint64_t earlier = 0) const { return records_.truncated(earlier); }
  /// Bytes of the file consumed (record_reader::offset).
  std::uint64_t offset() const noexcept { return records_.offset(); }
  /// Per tag seen so far: what this reader knows of its plugin.
  const std::map<std::string, tag_plugin, std::less<>>& plugins() const noexcept {
    return plugins_;
  }

 private:
  bool next_record();
  [[noreturn]] void fail(const std::string& reason) const;

  struct parsed;  // the protobuf message of the current record and the arena it lives in
  record_reader records_;
  std::string buffer_;
  std::unique_ptr<parsed> parsed_;
  int value_index_ = 0;  // next Summary.Value of event_
  std::map<std::string, tag_plugin, std::less<>> plugins_;
  event_stats stats_;
};

}  // namespace losslens::tfevents
