#include "losslens/storage/run_writer.hpp"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "detail/point_queue.hpp"
#include "detail/writer_connection.hpp"
#include "losslens/error.hpp"

namespace losslens::storage {

std::vector<series_spec> standard_series(const sample_schema& schema) {
  std::vector<series_spec> out;
  const series_layout layout(schema);  // named: a temporary's keys() would dangle in the loop
  for (const auto& k : layout.keys()) out.push_back({k.name(), k.kind});
  return out;
}

namespace {
void validate(const run_options& run, const writer_options& o,
              const std::vector<series_spec>& series) {
  if (o.queue_capacity < 2 || o.batch_rows < 1 || o.max_pending_rows < o.batch_rows)
    throw error(
        "writer_options: queue_capacity must be >= 2, batch_rows >= 1 and "
        "max_pending_rows >= batch_rows");
  if (o.flush_interval.count() <= 0 || o.heartbeat_interval.count() <= 0 ||
      o.retry_interval.count() <= 0 || o.wal_limit_bytes < (1 << 20))
    throw error("writer_options: intervals must be positive and wal_limit_bytes at least 1 MiB");
  try {
    auto parsed = nlohmann::json::parse(run.config_json);
    (void)parsed;
  } catch (const nlohmann::json::exception& e) {
    throw error("run config is not valid JSON (" + std::string(e.what()) +
                "); pass a JSON object such as {\"lr\": 0.001}");
  }
  std::set<std::string_view> names;
  for (const auto& s : series) {
    if (s.name.empty()) throw error("a series needs a non-empty name");
    if (!names.insert(s.name).second)
      throw error("series '" + s.name + "' is declared twice; give each series its own name");
  }
}
}  // namespace

struct run_writer::impl {
  impl(const std::string& path, run_options run, writer_options options)
      : path_(path),
        options_(options),
        layout_(run.schema),
        series_(standard_series(run.schema)),
        tasks_(run.schema.tasks.size()),
        params_(run.schema.params.size()) {
    for (auto& s : run.extra_series) series_.push_back(std::move(s));
    validate(run, options_, series_);
    queue_ = std::make_unique<detail::point_queue>(options_.queue_capacity);
    connection_ = std::make_unique<detail::writer_connection>(path_, options_);
    run_id_ = connection_->start_run(run, series_);
    thread_ = std::jthread([this] { loop(); });
  }

  bool try_append(series_handle series, std::int64_t step, double wall_time, double value) noexcept;
  void append(series_handle series, std::int64_t step, double wall_time, double value) noexcept {
    if (!try_append(series, step, wall_time, value))
      dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  /// Wakes the writer thread for `reason` (set under the lock, so the wake-up is not lost).
  void nudge() noexcept;
  void loop() noexcept;

  std::string path_;
  writer_options options_;
  series_layout layout_;
  std::vector<series_spec> series_;
  std::size_t tasks_ = 0;
  std::size_t params_ = 0;
  std::int64_t run_id_ = 0;
  std::unique_ptr<detail::point_queue> queue_;
  std::unique_ptr<detail::writer_connection> connection_;  // used by the writer thread only

  std::atomic<std::uint64_t> enqueued_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<bool> accepting_{true};
  // The writer sleeps with idle_ set when nothing is pending: the next point wakes it. pressure_
  // is set once the queue is half full until the writer drained it.
  std::atomic<bool> idle_{false};
  std::atomic<bool> pressure_{false};

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  std::condition_variable flushed_cv_;
  std::map<std::uint64_t, finding> pending_findings_;
  std::vector<event_info> pending_events_;
  std::uint64_t flush_requested_ = 0;
  std::uint64_t flushed_ = 0;
  bool nudged_ = false;
  std::set<std::uint64_t> known_findings_;  // ids given to record_finding so far
  bool finding_opened_ = false;             // one of them is new since the last look: commit now
  bool stop_ = false;
  bool exited_ = false;
  run_status final_status_ = run_status::finished;
  writer_stats stats_;  // updated by the writer thread after each commit

  std::mutex finish_mutex_;
  std::jthread thread_;  // joined by finish() (the destructor calls it)
};

run_writer::run_writer(const std::string& path, run_options run, writer_options options)
    : impl_(std::make_unique<impl>(path, std::move(run), options)) {}

run_writer::~run_writer() { finish(run_status::finished); }

std::int64_t run_writer::run_id() const noexcept { return impl_->run_id_; }
const std::vector<series_spec>& run_writer::series() const noexcept { return impl_->series_; }

std::optional<run_writer::series_handle> run_writer::find_series(
    std::string_view name) const noexcept {
  const auto& series = impl_->series_;
  for (std::size_t i = 0; i < series.size(); ++i)
    if (series[i].name == name) return series_handle(i);
  return std::nullopt;
}

bool run_writer::impl::try_append(series_handle series, std::int64_t step, double wall_time,
                                  double value) noexcept {
  if (series >= series_.size() || !accepting_.load(std::memory_order_relaxed)) return false;
  if (!queue_->try_push({series, step, wall_time, value})) return false;
  enqueued_.fetch_add(1, std::memory_order_relaxed);
  // Pairs with the fence in loop(): the writer either sees this point before it sleeps, or is
  // seen sleeping and woken.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (idle_.load(std::memory_order_relaxed) && idle_.exchange(false)) nudge();
  if (queue_->size_approx() >= queue_->capacity() / 2 && !pressure_.exchange(true)) nudge();
  return true;
}

void run_writer::impl::nudge() noexcept {
  {
    std::lock_guard lock(mutex_);
    nudged_ = true;
  }
  wake_.notify_one();
}

bool run_writer::try_append(series_handle series, std::int64_t step, double wall_time,
                            double value) noexcept {
  return impl_->try_append(series, step, wall_time, value);
}

bool run_writer::append(series_handle series, std::int64_t step, double wall_time,
                        double value) noexcept {
  if (impl_->try_append(series, step, wall_time, value)) return true;
  impl_->dropped_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void run_writer::append(const sample& s) noexcept {
  auto put = [&](std::size_t index, const std::optional<double>& v) {
    if (v) impl_->append(series_handle(index), s.step, s.wall_time, *v);
  };
  auto put_all = [&](std::size_t first, std::size_t count,
                     const std::vector<std::optional<double>>& v) {
    for (std::size_t i = 0; i < count && i < v.size(); ++i) put(first + i, v[i]);
  };
  // Handles follow standard_series(), i.e. the layout.
  const series_layout& l = impl_->layout_;
  const std::size_t tasks = impl_->tasks_;
  put(l.loss(), s.loss);
  put_all(l.task(0), tasks, s.task_losses);
  put(l.grad_norm(), s.grad_norm);
  put_all(l.param(0), impl_->params_, s.param_grad_norms);
  put_all(l.task_grad_norm(0), tasks, s.task_grad_norms);
  put(l.lr(), s.lr);
  put(l.accuracy(), s.accuracy);
  if (!l.has_class_metrics()) return;
  put(l.balanced_accuracy(), s.balanced_accuracy);
  for (std::size_t c = 0; c < l.recalls() && c < s.class_recall.size(); ++c)
    put(l.class_recall(c), s.class_recall[c]);
}

void run_writer::record_finding(const finding& f) {
  std::lock_guard lock(impl_->mutex_);
  impl_->pending_findings_.insert_or_assign(f.id, f);
  // A finding seen for the first time is committed at once, with the points queued before
  // it, not flush_interval later: a process killed right after a NaN keeps what it found.
  // Updates of a known one wait for the next commit; an idle writer commits them at once
  // rather than at the next heartbeat.
  const bool opened = impl_->known_findings_.insert(f.id).second;
  if (opened) impl_->finding_opened_ = true;
  if (opened || impl_->idle_.load()) {
    impl_->nudged_ = true;
    impl_->wake_.notify_one();
  }
}

void run_writer::record_event(const run_event& e) {
  nlohmann::json detail = nlohmann::json::object();
  for (const auto& [k, v] : e.numbers) detail[k] = json_number(v);
  for (const auto& [k, v] : e.texts) detail[k] = v;
  record_event(to_string(e.kind),
               detail.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), e.step);
}

void run_writer::record_event(std::string_view kind, std::string detail_json, std::int64_t step) {
  event_info e;
  e.kind = std::string(kind);
  e.detail_json = std::move(detail_json);
  e.step = step;
  std::lock_guard lock(impl_->mutex_);
  impl_->pending_events_.push_back(std::move(e));
  if (impl_->idle_.load()) {
    impl_->nudged_ = true;
    impl_->wake_.notify_one();
  }
}

bool run_writer::flush() {
  auto& m = *impl_;
  std::unique_lock lock(m.mutex_);
  if (m.exited_) return !m.stats_.degraded;
  auto target = ++m.flush_requested_;
  m.wake_.notify_all();
  m.flushed_cv_.wait(lock, [&] { return m.flushed_ >= target || m.exited_; });
  return !m.stats_.degraded;
}

void run_writer::finish(run_status status) noexcept {
  auto& m = *impl_;
  std::lock_guard finishing(m.finish_mutex_);
  if (!m.thread_.joinable()) return;
  m.accepting_.store(false);
  {
    std::lock_guard lock(m.mutex_);
    m.final_status_ = status;
    m.stop_ = true;
  }
  m.wake_.notify_all();
  m.thread_.join();
}

writer_stats run_writer::stats() const {
  auto& m = *impl_;
  std::lock_guard lock(m.mutex_);
  writer_stats s = m.stats_;
  s.enqueued = m.enqueued_.load(std::memory_order_relaxed);
  s.dropped = m.dropped_.load(std::memory_order_relaxed);
  const auto settled = s.written + s.rejected + s.lost;
  s.held = s.enqueued > settled ? s.enqueued - settled : 0;
  return s;
}

void run_writer::impl::loop() noexcept {
  using clock = std::chrono::steady_clock;
  auto& conn = *connection_;
  auto& batch = conn.batch();
  auto last_commit = clock::now();
  auto next_retry = last_commit;
  writer_stats local;  // the connection updates it; copied to stats_ under the lock
  bool degraded = false;
  std::uint64_t flushed = 0;

  for (;;) {
    std::uint64_t flush_target = 0;
    bool stopping = false, opened = false;
    {
      std::lock_guard lock(mutex_);
      conn.add(std::move(pending_findings_), std::move(pending_events_));
      pending_findings_.clear();
      pending_events_.clear();
      flush_target = flush_requested_;
      stopping = stop_;
      opened = std::exchange(finding_opened_, false);
    }
    // Drain the queue into the batch (up to one batch, or more while writes fail).
    const std::size_t limit = degraded ? options_.max_pending_rows : options_.batch_rows;
    detail::point_record r;
    bool drained = true;
    while (batch.size() < limit) {
      if (!queue_->try_pop(r)) break;
      batch.push_back(r);
    }
    if (batch.size() >= limit) drained = queue_->size_approx() == 0;
    if (stopping && (drained || degraded)) break;  // the last commits below write the rest

    const bool forced = stopping || flush_target > flushed || opened;
    auto now = clock::now();
    bool due = batch.size() >= options_.batch_rows || forced ||
               (conn.has_pending() && now - last_commit >= options_.flush_interval) ||
               now - last_commit >= options_.heartbeat_interval;
    if (degraded && now < next_retry) due = false;
    if (due) {
      degraded = !conn.commit(dropped_.load(), std::nullopt, local);
      last_commit = now;
      if (degraded) next_retry = now + options_.retry_interval;
      std::lock_guard lock(mutex_);
      stats_ = local;
    }
    if (flush_target > flushed && (degraded || (drained && batch.empty()))) {
      flushed = flush_target;
      std::lock_guard lock(mutex_);
      flushed_ = flushed;
      flushed_cv_.notify_all();
    }
    if ((drained || degraded) && !(forced && !degraded)) {
      // Sleep until the next thing that is due: the commit of what is pending, the heartbeat,
      // a retry; or until woken (stop, flush, new findings or events while idle, a queue half
      // full, the first point after an idle sleep).
      if (drained) pressure_.store(false);
      const bool pending = conn.has_pending() || !batch.empty();
      auto until = last_commit + (pending ? options_.flush_interval : options_.heartbeat_interval);
      if (degraded) until = next_retry;
      std::unique_lock lock(mutex_);
      if (!pending && !degraded) {
        idle_.store(true, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with try_append()
      }
      wake_.wait_until(lock, until, [&] {
        return stop_ || flush_requested_ > flushed || nudged_ ||
               (idle_.load(std::memory_order_relaxed) && queue_->size_approx() > 0);
      });
      nudged_ = false;
      idle_.store(false, std::memory_order_relaxed);
    }
  }

  // Last commits: everything still queued, then the run's end and a detach event.
  auto drain = [&] {
    detail::point_record r;
    while (batch.size() < options_.batch_rows && queue_->try_pop(r)) batch.push_back(r);
  };
  bool ok = true;
  for (drain(); ok && queue_->size_approx() > 0; drain())
    ok = conn.commit(dropped_.load(), std::nullopt, local);
  if (ok) ok = conn.commit(dropped_.load(), final_status_, local);
  if (!ok) {
    detail::point_record r;
    while (queue_->try_pop(r)) batch.push_back(r);
    local.lost += batch.size();
    batch.clear();
    local.lost_findings += conn.pending_findings();
    local.lost_events += conn.pending_events();
  }
  connection_.reset();  // the writer thread owns the connection: it closes it too
  std::lock_guard lock(mutex_);
  stats_ = local;
  exited_ = true;
  flushed_cv_.notify_all();
}

}  // namespace losslens::storage
