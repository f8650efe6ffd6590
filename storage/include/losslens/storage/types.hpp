#pragma once
/// \file types.hpp
/// The values that the run history stores and returns: runs, series, points, bucket summaries,
/// stored findings and events.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "losslens/finding.hpp"
#include "losslens/series_key.hpp"

namespace losslens::storage {

/// Life cycle of a run. `crashed`: the writing process died (no heartbeat) before finishing.
enum class run_status { running = 0, finished = 1, crashed = 2 };
/// "running", "finished" or "crashed".
std::string_view to_string(run_status s) noexcept;
/// Inverse of to_string; throws losslens::error on anything else.
run_status parse_run_status(std::string_view s);

/// What a series measures (losslens/series_key.hpp): one definition for every layer.
using losslens::parse_series_kind;
using losslens::series_kind;
using losslens::to_string;

/// One stored number. value may be NaN or +-Inf (kept, never dropped).
struct point {
  std::int64_t step = 0;
  double wall_time = 0;  ///< seconds since the Unix epoch, or any origin the producer used
  double value = 0;
};

/// M4 summary of the points of one step range: first, last, min, max (finite values only) and
/// the first non-finite point, with counts. Used for the stored rollups and for query buckets.
struct bucket_summary {
  std::int64_t from_step = 0;  ///< range covered (inclusive); the points lie inside it
  std::int64_t to_step = 0;
  std::int64_t count = 0;  ///< points in the range, finite or not
  std::int64_t nan_count = 0;
  std::int64_t pos_inf_count = 0;
  std::int64_t neg_inf_count = 0;
  point first;
  point last;
  point min;               ///< smallest finite value (earliest on ties); valid if finite_count()
  point max;               ///< largest finite value (earliest on ties); valid if finite_count()
  point first_non_finite;  ///< valid if non_finite_count()

  std::int64_t non_finite_count() const noexcept {
    return nan_count + pos_inf_count + neg_inf_count;
  }
  std::int64_t finite_count() const noexcept { return count - non_finite_count(); }
  /// Adds a point whose step is after every point already added.
  void add(const point& p) noexcept;
  /// Appends a summary whose points all come after this one's; widens the range.
  void append(const bucket_summary& later) noexcept;
};

/// One run as listed by run_reader.
struct run_info {
  std::int64_t id = 0;
  std::string name;
  run_status status = run_status::running;  ///< `crashed` when the writer died (see docs)
  double started_at = 0;                    ///< Unix seconds
  std::optional<double> ended_at;           ///< set when finished or marked crashed
  double heartbeat = 0;                     ///< last time the writer was alive (Unix seconds)
  std::string host;
  std::int64_t pid = 0;
  std::string config_json;                ///< the user's config, as given
  std::string version;                    ///< losslens version that wrote the run
  std::int64_t steps = 0;                 ///< largest number of points in any series
  std::optional<std::int64_t> last_step;  ///< largest step in any series
  int findings = 0;  ///< number of incidents (findings that are not another sign of one)
  std::optional<finding> worst_finding;  ///< highest severity, earliest first
  /// Samples the monitor dropped because its queue (attach_options::queue_capacity) was full:
  /// the largest `total` of the run's monitor `drops` events (`"source": "monitor"`).
  std::int64_t dropped_samples = 0;
  /// Points the writer dropped because its queue (writer_options::queue_capacity) was full:
  /// the largest `total` of the run's writer `drops` events.
  std::int64_t dropped_points = 0;

  /// ended_at (or the last heartbeat while running) minus started_at, in seconds.
  double duration() const noexcept;
};

/// One series of a run, with its whole-run summary.
struct series_info {
  std::int64_t id = 0;
  std::int64_t run_id = 0;
  std::string name;  ///< e.g. "loss", "loss/cls", "grad_norm/fc1.weight"
  series_kind kind = series_kind::other;
  bucket_summary summary;  ///< all points of the series (count 0 when empty)
};

/// A finding as stored with its run.
struct stored_finding {
  std::int64_t run_id = 0;
  finding f;
};

/// Something that happened to a run: "attach", "detach", "drops" (the writer's:
/// {"source": "writer", "count", "total"} points; the monitor's: {"source": "monitor", "count",
/// "total"} samples), "out_of_order", "recovered", or a kind of the user's.
struct event_info {
  std::int64_t id = 0;
  std::int64_t run_id = 0;
  double time = 0;         ///< Unix seconds
  std::int64_t step = -1;  ///< -1 when not tied to a step
  std::string kind;
  std::string detail_json;  ///< an object with the event's numbers
};

/// JSON for a run as the CLI (--json) and the dashboard API show it: id, name, status, times
/// (Unix seconds), host, pid, config (parsed; the raw string if it is not JSON), version, steps,
/// last_step, findings, worst_severity, worst_finding, dropped (dropped_samples +
/// dropped_points), dropped_samples, dropped_points.
nlohmann::json to_json(const run_info& r);

/// JSON for an event: id, run_id, time, step (null when -1), kind, detail (parsed; the raw
/// string if it is not JSON).
nlohmann::json to_json(const event_info& e);

}  // namespace losslens::storage
