#pragma once
/// \file pipeline.hpp
/// The monitor thread: takes the samples the training thread queues, runs the detectors, merges
/// every source's findings in one finding_router, and hands samples, incidents and events to
/// the sinks (the run history, the dashboard, the user's callbacks, stderr). Torch-free: the
/// LibTorch step capture (hooks/) feeds it; a program of your own can too.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "losslens/analyzer.hpp"
#include "losslens/detector_options.hpp"
#include "losslens/finding_router.hpp"
#include "losslens/run_event.hpp"
#include "losslens/sample_queue.hpp"
#include "losslens/sink.hpp"

namespace losslens {

/// How a pipeline behaves.
struct pipeline_options {
  std::string run = "run";               ///< the run's name (run_start::name)
  std::string config_json = "{}";        ///< the trainer's configuration (run_start::config_json)
  std::vector<series_key> extra_series;  ///< run_start::extra_series
  std::string db;                        ///< run_start::db: where a run recorder writes ("": none)
  detector_options detectors;            ///< rule parameters
  std::size_t queue_capacity = 1024;     ///< samples buffered for the monitor thread (>= 2)
  bool log_findings = true;              ///< one line per new incident through the log sink
  severity log_level = severity::warning;  ///< lowest severity logged
  /// Called on the monitor thread with every sample, after the detectors (raw numbers for
  /// custom logging or tests); keep it short.
  std::function<void(const sample&)> on_sample;
  /// While samples keep arriving, the monitor thread takes them in batches: after processing
  /// some it sleeps up to this long, and the training thread does not wake it meanwhile (no
  /// system call per step; findings come at most this much later). Once it wakes to an empty
  /// queue it sleeps until the next sample wakes it. The training thread also wakes it when
  /// the queue is half full. 0: woken for every sample. 100 ms: a training step shorter than
  /// that never pays for a wake-up (a futex wake costs 25-30 us on the training thread in a
  /// VM: 0.1% of a 30 ms step; a longer step pays at most 0.03%), and findings and live points
  /// are at most 100 ms late (the dashboard draws 10 frames a second).
  std::chrono::milliseconds batch_interval{100};
};

/// Work the monitor thread does besides samples (the multi-rank gathers): poll() when woken
/// and at least every `interval` while the run is live (true: it did something), finish()
/// once at the end, before the sinks finish.
struct monitor_task {
  std::function<bool()> poll;
  std::function<void()> finish;
  std::chrono::milliseconds interval{50};
};

/// Counters of a pipeline (a snapshot).
struct pipeline_stats {
  std::uint64_t queued = 0;     ///< samples handed over by the training thread
  std::uint64_t dropped = 0;    ///< samples dropped because the queue was full
  std::uint64_t processed = 0;  ///< samples the detectors have seen
  std::uint64_t findings = 0;   ///< incidents opened
  sink_stats sinks;             ///< what the sinks report
};

/// The monitor thread and everything it owns. The thread starts with start() (at the first
/// step, when the tasks are known) and wakes only when the training thread queues a sample
/// after it fell asleep, when another thread posts a finding or event, when a sink's timer is
/// due, or to stop: an idle run costs no wake-ups but the sinks' own timers.
///
/// Thread-safety: start(), queue() and notify_pushed() from the training thread (one thread);
/// post(), log(), findings(), stats(), wait_idle(), add_sink() and on_finding() from any
/// thread; add_source() and add_task() before start().
class pipeline : sink_context {
 public:
  /// Throws losslens::error on invalid options (detector options, queue_capacity < 2).
  explicit pipeline(pipeline_options options);
  /// stop(). Never throws.
  ~pipeline();
  pipeline(const pipeline&) = delete;
  pipeline& operator=(const pipeline&) = delete;

  /// Registers another source of findings (the input red flags, the rank rules). Before
  /// start().
  finding_router::source_id add_source(std::string_view name);
  /// Adds a sink. Before start() it hears the whole run; later, from the next wake-up on.
  void add_sink(std::unique_ptr<sink> s);
  /// Adds work for the monitor thread (see monitor_task). Before start().
  void add_task(monitor_task t);
  /// Calls cb(incident, is_new) on the monitor thread when an incident opens or grows.
  void on_finding(std::function<void(const finding&, bool is_new)> cb);
  /// Replaces the log sink (empty: stderr). Before start().
  void set_log_sink(log_sink sink);

  /// The first step: makes the queue for `schema` and starts the thread. Once; throws
  /// losslens::error if called twice or on allocation failure.
  void start(sample_schema schema);
  bool started() const noexcept { return queue_.load(std::memory_order_acquire) != nullptr; }
  /// The hand-off queue (null before start()). The training thread fills it.
  sample_queue* queue() const noexcept { return queue_.load(std::memory_order_acquire); }
  /// After sample_queue::commit_push(): wakes the monitor thread if it sleeps until woken, or
  /// if the queue is half full (a lock and a futex wake then, at most once per sleep);
  /// otherwise a fence and a few atomic loads (see pipeline_options::batch_interval).
  void notify_pushed() noexcept;

  /// Publishes a finding of `src` (any thread; merged on the monitor thread).
  void post(finding_router::source_id src, finding f, bool is_new) noexcept;
  /// Hands an event to every sink (any thread).
  void post(run_event e) noexcept override;
  /// Writes a line through the log sink. Any thread; never throws.
  void log(severity level, std::string_view line) const noexcept override;

  /// A copy of the incidents, current as of the last processed sample.
  std::vector<finding> findings() const;
  /// Waits until every sample queued before the call is processed and findings() includes the
  /// updates the detectors hold back. Returns at once before start() and after stop().
  void wait_idle() const;
  pipeline_stats stats() const noexcept;
  /// Drains the queue and what was posted, flushes the detectors, finishes the tasks and the
  /// sinks (in reverse order) and joins the thread. Idempotent; never throws.
  void stop() noexcept;

  /// Only for the monitor thread (a monitor_task): a point of extra_series[series] to every
  /// sink.
  void emit_point(std::size_t series, std::int64_t step, double wall_time, double value) noexcept;

 private:
  using clock = std::chrono::steady_clock;
  struct posted {
    bool is_finding = false;
    finding_router::source_id src = 0;
    finding f;
    bool is_new = false;
    run_event e;
  };

  // sink_context (monitor thread)
  const std::vector<finding>& incidents() const noexcept override;
  std::int64_t last_step() const noexcept override { return last_step_; }

  void run(std::stop_token stop) noexcept;
  bool has_work() const noexcept;  // under mutex_
  void wake() noexcept;
  bool adopt_sinks() noexcept;
  bool drain_posted() noexcept;
  bool drain_samples() noexcept;
  void record(const finding& f, bool is_new) noexcept;
  void deliver(const run_event& e) noexcept;
  template <class F>
  void each_sink(const char* what, F&& f) noexcept;
  void finish_run() noexcept;

  pipeline_options options_;
  run_start start_;
  finding_router router_;
  std::unique_ptr<analyzer> analyzer_;
  std::unique_ptr<sample_queue> queue_owner_;
  std::atomic<sample_queue*> queue_{nullptr};

  // Sinks: the monitor thread iterates sinks_ freely; changes to it and reads from other
  // threads (stats) hold sinks_mutex_.
  mutable std::mutex sinks_mutex_;
  std::vector<std::unique_ptr<sink>> sinks_;
  std::vector<std::unique_ptr<sink>> new_sinks_;  // added after start, not yet started
  std::atomic<bool> has_new_sinks_{false};
  std::vector<monitor_task> tasks_;
  clock::time_point next_task_poll_{};

  mutable std::mutex posted_mutex_;
  std::vector<posted> posted_;
  std::atomic<bool> has_posted_{false};

  mutable std::mutex callback_mutex_;
  std::function<void(const finding&, bool)> callback_;

  mutable std::mutex findings_mutex_;
  std::vector<finding> findings_;  // snapshot for findings()

  // Waking: the monitor thread sleeps on wake_ under mutex_ with sleeping_ set; producers
  // that see sleeping_ take mutex_ and notify (see notify_pushed).
  mutable std::mutex mutex_;
  mutable std::condition_variable_any wake_;
  mutable std::condition_variable idle_;
  std::atomic<bool> sleeping_{false};
  // The monitor thread sleeps with a deadline at most batch_interval away (it will look at the
  // queue by itself): the training thread need not wake it.
  std::atomic<bool> napping_{false};
  clock::time_point last_samples_{};  // monitor thread: when it last processed samples
  mutable std::atomic<std::uint64_t> sync_request_{0};
  std::uint64_t sync_done_ = 0;  // under mutex_
  bool finished_ = false;        // under mutex_: the thread has left its loop

  std::atomic<std::uint64_t> processed_{0}, findings_count_{0};
  std::uint64_t drops_reported_ = 0;
  std::int64_t last_step_ = -1;
  std::once_flag stopped_;
  std::jthread thread_;  // last: joined before the members above go away
};

}  // namespace losslens
