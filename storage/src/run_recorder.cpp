#include "losslens/storage/run_recorder.hpp"

#include <filesystem>

#include <unistd.h>

#include "losslens/error.hpp"
#include "losslens/storage/run_reader.hpp"

namespace losslens::storage {

void run_recorder::preflight(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    run_reader probe(path);  // throws on corrupt, foreign or newer databases
    if (::access(path.c_str(), W_OK) != 0)
      throw error("cannot write the run database " + path +
                  " (read-only); choose a writable path for the run history");
    return;
  }
  const fs::path dir = fs::absolute(fs::path(path)).parent_path();
  if (!fs::is_directory(dir, ec))
    throw error("the directory of the run database " + path +
                " does not exist; create it or choose another path for the run history");
  if (::access(dir.c_str(), W_OK) != 0)
    throw error("cannot create the run database in " + dir.string() +
                " (not writable); choose another path for the run history");
}

run_recorder::run_recorder(recorder_options options) : options_(std::move(options)) {
  if (options_.db.empty()) throw error("run_recorder: no database path given");
  try {
    preflight(options_.db);
  } catch (const error& e) {
    if (options_.require_db) throw;
    // A monitor must not end a long run over its history: said at on_start, then retried.
    failed_ = true;
    degraded_ = true;
    error_ = e.what();
  }
}

run_recorder::~run_recorder() = default;

void run_recorder::on_start(const run_start& run, sink_context& ctx) {
  run_ = run;
  ctx_ = &ctx;
  if (failed_) {
    std::string what;
    {
      std::lock_guard lock(mutex_);
      what = error_;
    }
    report_failure(what);
  }
  open(-1);
}

void run_recorder::open(std::int64_t from_step) noexcept {
  const bool late = failed_;
  try {
    run_options ro;
    ro.name = run_.name;
    ro.config_json = run_.config_json;
    ro.schema = run_.schema;
    for (const auto& k : run_.extra_series) ro.extra_series.push_back({k.name(), k.kind});
    auto w = std::make_unique<run_writer>(options_.db, std::move(ro), options_.writer);
    w->record_event(events::attach(run_.parameters));
    if (late) {
      // Opened late: what the run found so far goes in too; its points start here.
      w->record_event(events::storage_opened(from_step + 1));
      for (const auto& f : ctx_->incidents()) w->record_finding(f);
      ctx_->log(severity::info, "the run database " + options_.db +
                                    " works now; recording the run from step " +
                                    std::to_string(from_step + 1) + " on");
    }
    w->flush();  // the run row exists before a dashboard looks for it
    run_id_ = w->run_id();
    {
      std::lock_guard lock(mutex_);
      writer_ = std::move(w);
      error_.clear();
    }
    failed_ = false;
    degraded_ = false;
    next_retry_ = clock::time_point::max();
    ctx_->post(events::run_created(run_id_, options_.db));
  } catch (const std::exception& e) {
    report_failure(e.what());
    if (options_.retry_interval.count() > 0) next_retry_ = clock::now() + options_.retry_interval;
  }
}

void run_recorder::report_failure(const std::string& what) noexcept {
  try {
    std::lock_guard lock(mutex_);
    error_ = what;
  } catch (...) {
  }
  failed_ = true;
  degraded_ = true;
  if (said_failure_) return;
  said_failure_ = true;
  try {
    ctx_->log(severity::warning,
              "cannot record the run in " + options_.db + ": " + what +
                  "; training goes on without a history (findings still reach stderr and "
                  "on_finding)" +
                  (options_.retry_interval.count() > 0 ? "; retrying to open it" : ""));
  } catch (...) {
  }
}

std::uint64_t run_recorder::points_in(const sample& s) noexcept {
  std::uint64_t n = 0;
  auto count = [&](const auto& v) {
    for (const auto& x : v) n += x.has_value();
  };
  n += s.loss.has_value() + s.grad_norm.has_value() + s.lr.has_value() + s.accuracy.has_value();
  n += s.balanced_accuracy.has_value();
  count(s.class_recall);
  count(s.task_losses);
  count(s.param_grad_norms);
  count(s.task_grad_norms);
  return n;
}

void run_recorder::on_sample(const sample& s) {
  if (!writer_) return count_unrecorded(points_in(s));
  writer_->append(s);
  // The writer's health while the run goes on: stats() at most every 100 ms.
  const auto now = clock::now();
  if (now >= next_check_) watch(now);
}

void run_recorder::count_unrecorded(std::uint64_t points) noexcept {
  unrecorded_points_ += points;
  // stats() shows them while the database stays closed (watch() keeps the count once it opens).
  try {
    std::lock_guard lock(mutex_);
    points_lost_ = unrecorded_points_;
  } catch (...) {
  }
}

void run_recorder::on_point(std::size_t series, std::int64_t step, double wall_time, double value) {
  if (!writer_) return count_unrecorded(1);
  const auto handle = run_writer::series_handle(standard_series(run_.schema).size() + series);
  writer_->append(handle, step, wall_time, value);
}

void run_recorder::on_finding(const finding& incident, bool) {
  if (!writer_) return;  // stored when the database opens (see open)
  try {
    writer_->record_finding(incident);
  } catch (const std::exception& e) {
    ctx_->log(severity::warning, std::string("cannot store a finding: ") + e.what());
  }
}

void run_recorder::on_event(const run_event& e) {
  if (!writer_ || e.kind == event_kind::run_created || e.kind == event_kind::stored ||
      e.kind == event_kind::detach)
    return;  // detach is stored by on_finish, after the last numbers
  writer_->record_event(e);
}

sink::clock::time_point run_recorder::next_timer() const { return next_retry_; }

void run_recorder::on_timer(clock::time_point now) {
  if (!writer_ && failed_ && now >= next_retry_) open(ctx_->last_step());
}

void run_recorder::watch(clock::time_point now) noexcept {
  next_check_ = now + std::chrono::milliseconds(100);
  writer_stats ws;
  try {
    ws = writer_->stats();
  } catch (...) {
    return;
  }
  const bool was = degraded_;
  degraded_ = ws.degraded;
  try {
    std::lock_guard lock(mutex_);
    points_written_ = ws.written;
    points_lost_ = ws.dropped + ws.lost + unrecorded_points_;
    write_failures_ = ws.write_failures;
    if (ws.degraded) error_ = ws.last_error;
  } catch (...) {
  }
  if (ws.written > written_seen_) {
    written_seen_ = ws.written;
    ctx_->post(events::stored(run_id_));
  }
  // The writer says the first failure itself; the way back is said here.
  if (was && !ws.degraded)
    ctx_->log(severity::info, "writing " + options_.db +
                                  " works again; the points held meanwhile are stored (" +
                                  std::to_string(ws.write_failures) + " failed attempts)");
}

void run_recorder::on_finish(std::uint64_t steps, std::int64_t last_step) {
  if (!writer_) {
    if (unrecorded_points_ > 0)
      ctx_->log(severity::warning, std::to_string(unrecorded_points_) +
                                       " points of this run never reached " + options_.db +
                                       " (it could not be opened)");
    return;
  }
  writer_->record_event(events::detach(steps, last_step));
  // The run carries what it lost so far (a full disk that came back, points refused at the
  // start); what the last commit loses cannot be written any more and is only said.
  {
    writer_stats ws;
    try {
      ws = writer_->stats();
    } catch (...) {
    }
    if (const auto lost = ws.dropped + ws.lost + unrecorded_points_; lost > 0)
      writer_->record_event(events::points_lost(lost, last_step));
  }
  writer_->finish(run_status::finished);
  next_check_ = {};
  watch(clock::now());  // the final counters (points given up at the end count as lost)
  std::uint64_t lost = 0;
  {
    std::lock_guard lock(mutex_);
    lost = points_lost_;
  }
  if (lost > 0)
    ctx_->log(severity::warning, std::to_string(lost) + " points of this run never reached " +
                                     options_.db + " (see stats().points_lost)");
}

void run_recorder::add_stats(sink_stats& out) const {
  std::lock_guard lock(mutex_);
  out.run_id = std::max(out.run_id, run_id_.load());
  out.storage_failed = out.storage_failed || (failed_ && !writer_);
  out.storage_degraded = out.storage_degraded || failed_ || degraded_;
  out.points_written += points_written_;
  out.points_lost += points_lost_;
  out.write_failures += write_failures_;
  if (out.storage_error.empty()) out.storage_error = error_;
}

}  // namespace losslens::storage
