#pragma once
/// \file run_recorder.hpp
/// The run history as a sink of the monitor: creates the run when it starts, streams its
/// numbers, incidents and events into the database, and keeps training going when the
/// database cannot be used (says so once, holds or counts what it could not write, retries).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "losslens/sink.hpp"
#include "losslens/storage/run_writer.hpp"

namespace losslens::storage {

/// How a run_recorder behaves.
struct recorder_options {
  std::string db;  ///< the SQLite run-history file (created if missing)
  /// When db cannot be used at construction (missing directory, read-only, corrupt or newer
  /// database): false (default) says so once through the log sink, reports storage_degraded
  /// and retries opening every retry_interval (the run is then recorded from that step on);
  /// true makes the constructor throw losslens::error instead.
  bool require_db = false;
  std::chrono::milliseconds retry_interval{5000};  ///< 0: never retry opening db
  writer_options writer;  ///< flush interval, memory held while writes fail, ...
};

/// Records a monitored run into a run-history database (see run_writer). Add it to a
/// losslens::pipeline (attach() does so for attach_options::db).
///
/// Thread-safety: the sink methods run on the monitor thread; add_stats() on any thread.
class run_recorder final : public sink {
 public:
  /// Checks that db can be written. Throws losslens::error with what to do when it cannot
  /// and require_db is set; otherwise the failure is reported at on_start and retried.
  explicit run_recorder(recorder_options options);
  ~run_recorder() override;

  void on_start(const run_start& run, sink_context& ctx) override;
  void on_sample(const sample& s) override;
  void on_point(std::size_t series, std::int64_t step, double wall_time, double value) override;
  void on_finding(const finding& incident, bool is_new) override;
  void on_event(const run_event& e) override;
  clock::time_point next_timer() const override;
  void on_timer(clock::time_point now) override;
  void on_finish(std::uint64_t steps, std::int64_t last_step) override;
  void add_stats(sink_stats& out) const override;

  /// Checks, without writing, that `path` can hold a run history: an existing file is a
  /// readable losslens database and writable, a new one's directory exists and is writable.
  /// Throws losslens::error with what to do.
  static void preflight(const std::string& path);

 private:
  void open(std::int64_t from_step) noexcept;
  void report_failure(const std::string& what) noexcept;
  void watch(clock::time_point now) noexcept;
  /// Counts points that arrive while the database is not open (monitor thread).
  void count_unrecorded(std::uint64_t points) noexcept;
  static std::uint64_t points_in(const sample& s) noexcept;

  recorder_options options_;
  run_start run_;
  sink_context* ctx_ = nullptr;
  std::unique_ptr<run_writer> writer_;  // set on the monitor thread under mutex_
  std::atomic<std::int64_t> run_id_{0};
  std::atomic<bool> failed_{false};    // could not be opened (yet)
  std::atomic<bool> degraded_{false};  // nothing reaches db right now
  bool said_failure_ = false;
  std::uint64_t unrecorded_points_ = 0;  // points of samples seen while db was not open
  std::uint64_t written_seen_ = 0;       // points committed, as of the last check
  clock::time_point next_check_{}, next_retry_ = clock::time_point::max();
  mutable std::mutex mutex_;  // guards writer_ (the pointer) and the fields stats() reads
  std::string error_;
  std::uint64_t points_written_ = 0, points_lost_ = 0, write_failures_ = 0;
};

}  // namespace losslens::storage
