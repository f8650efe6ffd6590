#pragma once
/// \file sink.hpp
/// Where a monitored run goes besides the detectors: the run history (storage::run_recorder),
/// the live dashboard (dashboard::live_dashboard), or a sink of your own. The monitor thread
/// (losslens::pipeline) hands every sink the run's samples, incidents and events.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/finding.hpp"
#include "losslens/run_event.hpp"
#include "losslens/sample.hpp"
#include "losslens/series_key.hpp"

namespace losslens {

/// What sinks learn when a run starts: the first step has arrived, so its tasks are known.
struct run_start {
  std::string name = "run";              ///< the run's name (attach_options::run)
  std::string config_json = "{}";        ///< the trainer's configuration, as given
  sample_schema schema;                  ///< tasks and parameters; series_layout(schema) names the
                                         ///< series a sample fills
  std::vector<series_key> extra_series;  ///< further series (one per rank and measure in a
                                         ///< multi-rank run), whose points come via on_point
  std::size_t parameters = 0;            ///< parameters the hooks watch
  std::string db;                        ///< the run-history file a run recorder writes ("": none)
};

/// What sinks add to monitor::stats().
struct sink_stats {
  std::int64_t run_id = 0;           ///< the run's id in the run history (0: none yet)
  bool storage_failed = false;       ///< the run history could not be opened (yet)
  bool storage_degraded = false;     ///< nothing reaches the run history right now
  std::uint64_t points_written = 0;  ///< points committed
  std::uint64_t points_lost = 0;     ///< points the run history never got
  std::uint64_t write_failures = 0;  ///< failed commits
  std::string storage_error;         ///< the last storage error ("" when none)
  int dashboard_port = 0;            ///< port the live dashboard listens on (0: none)
};

/// What the monitor thread offers its sinks, from on_start until on_finish returns.
class sink_context {
 public:
  /// Hands an event to every sink (on the monitor thread, soon). Any thread; never throws.
  virtual void post(run_event e) noexcept = 0;
  /// A library message through the monitor's log sink. Any thread; never throws.
  virtual void log(severity level, std::string_view line) const noexcept = 0;
  /// Every incident so far (monitor thread only).
  virtual const std::vector<finding>& incidents() const noexcept = 0;
  /// The step of the last sample processed, -1 before the first (monitor thread only).
  virtual std::int64_t last_step() const noexcept = 0;

 protected:
  ~sink_context() = default;
};

/// A consumer of a monitored run. Every method but add_stats() and the destructor runs on the
/// monitor thread, in step order, and must not block for long (the queue from the training
/// thread fills meanwhile; overflow is dropped and counted). Exceptions are caught and
/// reported through the log sink. The defaults do nothing.
class sink {
 public:
  using clock = std::chrono::steady_clock;
  virtual ~sink() = default;

  /// The run starts (or, for a sink added later, has started). `ctx` stays valid until
  /// on_finish() returns.
  virtual void on_start(const run_start& run, sink_context& ctx) {
    (void)run;
    (void)ctx;
  }
  /// One step's numbers.
  virtual void on_sample(const sample& s) { (void)s; }
  /// A point of run_start::extra_series[series].
  virtual void on_point(std::size_t series, std::int64_t step, double wall_time, double value) {
    (void)series, (void)step, (void)wall_time, (void)value;
  }
  /// An incident opened (is_new) or grew.
  virtual void on_finding(const finding& incident, bool is_new) {
    (void)incident;
    (void)is_new;
  }
  /// An event (see event_kind), including the ones other sinks post.
  virtual void on_event(const run_event& e) { (void)e; }
  /// When the monitor thread should call on_timer() next (max(): never). Asked after every
  /// wake-up; an idle monitor sleeps until the earliest one.
  virtual clock::time_point next_timer() const { return clock::time_point::max(); }
  virtual void on_timer(clock::time_point now) { (void)now; }
  /// The run ended (detach): `steps` step() calls, the last sample's step. Called once, in
  /// the reverse order the sinks were added.
  virtual void on_finish(std::uint64_t steps, std::int64_t last_step) {
    (void)steps;
    (void)last_step;
  }
  /// Adds the sink's counters to a stats() snapshot. Any thread: keep it thread-safe.
  virtual void add_stats(sink_stats& out) const { (void)out; }
};

}  // namespace losslens
