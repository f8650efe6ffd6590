#pragma once
/// \file run_reader.hpp
/// Reads the run history: runs, series, findings, events, raw points and downsampled windows.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/storage/types.hpp"

namespace losslens::storage::detail {
class reader_connection;
class statement;
}  // namespace losslens::storage::detail

namespace losslens::storage {

/// How a reader behaves.
struct reader_options {
  std::chrono::milliseconds busy_timeout{5000};
  /// A `running` run whose heartbeat is older than this (seconds), or whose process on this
  /// host is gone, is reported as `crashed`.
  double stale_after_seconds = 30;
};

/// A step range of one series reduced to at most max_points points, M4 style: per bucket the
/// first, smallest, largest and last point and the first non-finite point, so that no spike,
/// NaN or Inf is ever hidden, whatever the zoom.
struct series_window {
  std::int64_t from_step = 0;  ///< the range asked
  std::int64_t to_step = 0;
  std::int64_t bucket_width = 1;        ///< steps per bucket (aligned to multiples of the width)
  int level = 0;                        ///< stored rollup level read (0: raw points)
  bool exact = false;                   ///< points are every point of the range
  std::vector<bucket_summary> buckets;  ///< non-empty buckets in step order, bounds clipped
                                        ///< to the range
  std::vector<point> points;            ///< the buckets' representative points, in step order
};

/// Iterates over the raw points of one series in step order, without loading them all.
/// Thread-safety: like its reader (it uses the reader's connection; the reader must outlive it).
class point_cursor {
 public:
  point_cursor(point_cursor&&) noexcept;
  point_cursor& operator=(point_cursor&&) noexcept;
  ~point_cursor();
  /// Reads the next point into p; false at the end. Throws losslens::error on a read failure.
  bool next(point& p);

 private:
  friend class run_reader;
  explicit point_cursor(std::unique_ptr<detail::statement> st);
  std::unique_ptr<detail::statement> st_;
};

/// A read-only view of a run-history database with its own SQLite connection; it can read
/// while a run_writer (in this or another process) writes.
///
/// Thread-safety: one thread at a time; use one reader per thread. Every query throws
/// losslens::error (a read failure, an unknown run or series, bad arguments).
class run_reader {
 public:
  /// Opens an existing database. Throws losslens::error with advice when the file is missing,
  /// corrupt, not a losslens database, or written by a newer losslens.
  explicit run_reader(const std::string& path, reader_options options = {});
  ~run_reader();
  run_reader(run_reader&&) noexcept;
  run_reader& operator=(run_reader&&) noexcept;

  /// Every run, oldest first.
  std::vector<run_info> runs();
  /// One run; throws losslens::error when there is none with this id.
  run_info run(std::int64_t run_id);
  /// The series of a run, in creation order.
  std::vector<series_info> series(std::int64_t run_id);
  /// One series of a run by name; throws losslens::error (listing the names) when absent.
  series_info find_series(std::int64_t run_id, std::string_view name);
  /// Findings of one run (or of all runs), optionally of one kind, by run then first step.
  std::vector<stored_finding> findings(std::optional<std::int64_t> run_id = std::nullopt,
                                       std::string_view kind = {});
  /// Events of a run with an id above after_id (all by default), oldest first.
  std::vector<event_info> events(std::int64_t run_id, std::int64_t after_id = 0);
  /// Raw points of a series with from <= step <= to, in step order.
  std::vector<point> points(std::int64_t series_id, std::int64_t from, std::int64_t to);
  /// A cursor over the same points, for series too long to hold in memory.
  point_cursor cursor(std::int64_t series_id, std::int64_t from, std::int64_t to);
  /// Downsampled view of from <= step <= to with at most max_points points (max_points >= 8).
  /// Reads O(max_points) stored rows whatever the run length.
  series_window window(std::int64_t series_id, std::int64_t from, std::int64_t to,
                       std::size_t max_points);

 private:
  std::string path_;
  reader_options options_;
  std::unique_ptr<detail::reader_connection> db_;
};

}  // namespace losslens::storage
