#pragma once
/// \file run_writer.hpp
/// Records one training run into a SQLite run-history database from a background thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/finding.hpp"
#include "losslens/run_event.hpp"
#include "losslens/sample.hpp"
#include "losslens/series_key.hpp"
#include "losslens/storage/types.hpp"

namespace losslens::storage {

/// A series to create when the run starts.
struct series_spec {
  std::string name;
  series_kind kind = series_kind::other;
};

/// The series that run_writer::append(const sample&) fills, in handle order (see
/// losslens::series_layout): "loss", "loss/<task>"..., "grad_norm", "grad_norm/<param>"...,
/// "task_grad_norm/<task>"..., "lr", "accuracy", and with schema.classes > 0
/// "balanced_accuracy", "recall/<class>"... Names match the columns of `losslens analyze` CSV
/// input.
std::vector<series_spec> standard_series(const sample_schema& schema);

/// What the run is.
struct run_options {
  std::string name = "run";        ///< shown by `losslens runs`
  std::string config_json = "{}";  ///< the user's config, stored as given (must be valid JSON)
  sample_schema schema;            ///< names behind append(const sample&)
  std::vector<series_spec> extra_series;  ///< more series; handles follow the standard ones
};

/// How the writer behaves. Defaults suit a training loop.
struct writer_options {
  std::size_t queue_capacity = 1 << 18;  ///< points buffered between producer and writer
  std::size_t batch_rows = 100000;       ///< commit once this many points are pending ...
  /// ... or this long after the last commit. Each commit writes every database page it changed
  /// (a few per series) to the WAL whole, so shorter intervals cost disk writes: about 290
  /// bytes a point at 200 ms against 120 at 1 s (bench_ingest --live, docs/storage.md). A
  /// finding seen for the first time is committed at once whatever this is.
  std::chrono::milliseconds flush_interval{1000};
  std::chrono::milliseconds heartbeat_interval{1000};     ///< liveness update while idle
  std::chrono::milliseconds busy_timeout{5000};           ///< wait for other connections' locks
  std::chrono::milliseconds retry_interval{1000};         ///< retry period while degraded
  std::int64_t wal_limit_bytes = std::int64_t{64} << 20;  ///< WAL is checkpointed below this
  std::int64_t max_database_bytes = 0;     ///< refuse to grow past this (0: no limit); writes then
                                           ///< fail as on a full disk
  std::size_t max_pending_rows = 1 << 20;  ///< points kept in memory while writes fail
  bool report_errors = true;  ///< print a line on stderr when writes start failing (each time)
};

/// Counters of a writer (a snapshot). Every point given to append() ends up in exactly one
/// of dropped, written, rejected or lost; until then it is held.
struct writer_stats {
  std::uint64_t enqueued = 0;  ///< points accepted by append
  std::uint64_t dropped = 0;   ///< points refused because the queue was full
  std::uint64_t written = 0;   ///< points committed
  std::uint64_t rejected = 0;  ///< points whose step did not increase (or was negative)
  std::uint64_t lost = 0;      ///< points given up when writes kept failing at the end
  /// Points accepted but not committed yet (queued, or held in memory while writes fail):
  /// enqueued - written - rejected - lost. 0 once the writer has finished.
  std::uint64_t held = 0;
  std::uint64_t lost_findings = 0;  ///< findings (updates) given up when the last commit failed
  std::uint64_t lost_events = 0;    ///< events given up when the last commit failed
  std::uint64_t batches = 0;        ///< committed transactions
  std::uint64_t write_failures = 0;
  std::uint64_t failure_episodes = 0;  ///< times writes started failing after working
  std::uint64_t checkpoints = 0;       ///< TRUNCATE checkpoints run
  std::int64_t wal_bytes_max = 0;      ///< largest WAL size seen after a commit
  bool degraded = false;               ///< the last write failed; data is held and retried
  std::string last_error;              ///< message of the last write failure

  /// Points that did not reach the database: dropped + rejected + lost. Final once the writer
  /// has finished (finish() or the destructor); before that, held points may still be lost.
  std::uint64_t not_stored() const noexcept { return dropped + rejected + lost; }
};

/// Records one run: creates it (status `running`) on construction, streams points, findings and
/// events to the database from one background thread that owns the SQLite connection, and marks
/// the run `finished` on finish() or destruction. A run whose process dies shows as `crashed`.
///
/// Thread-safety: every method may be called from any thread. append() never blocks, never
/// allocates and never touches SQLite: it copies four numbers into a preallocated lock-free
/// queue and drops (and counts) the point when the queue is full. Write failures after
/// construction never throw: the writer turns degraded (stats(), one line on stderr) and retries.
///
/// The writer thread sleeps until something is due: the commit of pending points
/// (flush_interval after the previous one, or at once with a finding seen for the first time),
/// a heartbeat, a retry, a flush() or finish(), a queue half full, or the first point after an
/// idle sleep. An idle run wakes it once per heartbeat_interval.
class run_writer {
 public:
  using series_handle = std::uint32_t;

  /// Opens (creating if needed) the database at path and starts the run. Throws losslens::error
  /// with advice when the directory is missing, the file is read-only, corrupt or written by a
  /// newer losslens, the disk is full, or the options/config are invalid.
  run_writer(const std::string& path, run_options run, writer_options options = {});
  /// finish(run_status::finished) unless finished already. Never throws.
  ~run_writer();
  run_writer(const run_writer&) = delete;
  run_writer& operator=(const run_writer&) = delete;

  /// The run's id in the database.
  std::int64_t run_id() const noexcept;
  /// All series of the run; a series' handle is its index here.
  const std::vector<series_spec>& series() const noexcept;
  /// Handle of the series with this name, if any.
  std::optional<series_handle> find_series(std::string_view name) const noexcept;

  /// Queues one point (steps must increase per series; NaN/Inf are kept). Returns false, and
  /// counts a drop, when the queue is full or the handle is unknown. Never blocks.
  bool append(series_handle series, std::int64_t step, double wall_time, double value) noexcept;
  /// Like append, but a full queue is not counted as a drop (for callers that retry).
  bool try_append(series_handle series, std::int64_t step, double wall_time, double value) noexcept;
  /// Queues every number present in s into the standard series. Never blocks.
  void append(const sample& s) noexcept;

  /// Stores a finding, or updates it when one with the same id was stored (an episode that
  /// grew). Copies f; thread-safe; takes a short lock. Repeated updates are coalesced. A
  /// finding whose id is new is committed at once, with every point appended before it.
  void record_finding(const finding& f);
  /// Stores an event (kind e.g. "note"; detail_json an object). Takes a short lock.
  void record_event(std::string_view kind, std::string detail_json = "{}", std::int64_t step = -1);
  /// Stores a typed event: its kind's name, its numbers and texts as one JSON object.
  void record_event(const run_event& e);

  /// Blocks until everything queued before the call is committed. Returns false when the
  /// writer is degraded (the data is still held and retried). Not for the training loop.
  bool flush();
  /// Drains, commits, marks the run with status (finished or crashed) and stops the thread.
  /// Idempotent; later appends are dropped. Never throws.
  void finish(run_status status = run_status::finished) noexcept;

  /// A snapshot of the counters.
  writer_stats stats() const;

 private:
  struct impl;  // the queue, the connection, the writer thread and their state
  std::unique_ptr<impl> impl_;
};

}  // namespace losslens::storage
