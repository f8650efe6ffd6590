#include "detail/writer_connection.hpp"

#include <array>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <tuple>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "detail/process.hpp"
#include "detail/schema.hpp"
#include "losslens/version.hpp"

namespace losslens::storage::detail {

namespace {
// Rows per point insert, largest first: a statement's fixed cost (its step, halt and reset)
// was a good part of storing a point one row at a time.
constexpr std::size_t insert_sizes[] = {256, 16, 1};
constexpr std::size_t max_insert_rows = insert_sizes[0];

std::string insert_points_sql(std::size_t rows) {
  std::string sql = "INSERT INTO points(series_id, step, wall_time, value) VALUES";
  for (std::size_t i = 0; i < rows; ++i) sql += i == 0 ? "(?,?,?,?)" : ",(?,?,?,?)";
  return sql;
}

constexpr std::int64_t page_size = 4096;
// A run whose heartbeat is this old (seconds) counts as crashed when a writer opens the file.
constexpr double stale_after_seconds = 30;
}  // namespace

int writer_connection::level_at(std::size_t i) noexcept {
  return i < rollup_levels.size() ? rollup_levels[i] : total_level;
}

writer_connection::writer_connection(const std::string& path,
                                     const storage::writer_options& options)
    : path_(path), options_(options) {
  db_ = open_database(path, open_mode::write, int(options.busy_timeout.count()));
  try {
    exec(db_.get(), "PRAGMA synchronous = NORMAL");
    exec(db_.get(), "PRAGMA temp_store = MEMORY");
    exec(db_.get(), "PRAGMA cache_size = -32768");
    exec(db_.get(), "PRAGMA journal_size_limit = " + std::to_string(options.wal_limit_bytes));
    // PASSIVE checkpoints at commit keep the WAL near a quarter of the limit when no reader
    // pins it; maybe_checkpoint() handles the rest.
    auto pages = std::max<std::int64_t>(64, options.wal_limit_bytes / 4 / page_size);
    exec(db_.get(), "PRAGMA wal_autocheckpoint = " + std::to_string(pages));
    if (options.max_database_bytes > 0)
      exec(db_.get(),
           "PRAGMA max_page_count = " +
               std::to_string(std::max<std::int64_t>(
                   1, options.max_database_bytes / query_int(db_.get(), "PRAGMA page_size"))));
    static_assert(std::size(insert_sizes) == std::tuple_size_v<decltype(insert_points_)>);
    for (std::size_t i = 0; i < insert_points_.size(); ++i)
      insert_points_[i] = statement(db_.get(), insert_points_sql(insert_sizes[i]));
    upsert_rollup_ = statement(db_.get(), std::string("INSERT OR REPLACE INTO rollups(series_id, "
                                                      "level, bucket, ") +
                                              summary_columns +
                                              ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                                              "?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, "
                                              "?21, ?22)");
    upsert_finding_ = statement(
        db_.get(),
        "INSERT INTO findings(run_id, finding_id, kind, severity, series, first_step, last_step, "
        "message, body, updated_at, episodes, cause_id) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) "
        "ON CONFLICT(run_id, finding_id) DO UPDATE SET kind = excluded.kind, "
        "severity = excluded.severity, series = excluded.series, "
        "first_step = excluded.first_step, last_step = excluded.last_step, "
        "message = excluded.message, body = excluded.body, updated_at = excluded.updated_at, "
        "episodes = excluded.episodes, cause_id = excluded.cause_id");
    insert_event_ = statement(db_.get(),
                              "INSERT INTO events(run_id, time, step, kind, detail) "
                              "VALUES(?1, ?2, ?3, ?4, ?5)");
    heartbeat_ = statement(db_.get(), "UPDATE runs SET heartbeat = ?2 WHERE id = ?1");
    finish_run_ = statement(db_.get(),
                            "UPDATE runs SET status = ?2, ended_at = ?3, heartbeat = ?3 "
                            "WHERE id = ?1");
  } catch (const sqlite_error& e) {
    throw_setup_error(path, e);
  }
  batch_.reserve(options.batch_rows);
}

writer_connection::~writer_connection() {
  // Finalize statements before the connection closes, then fold the WAL into the database.
  insert_points_ = {};
  upsert_rollup_ = {};
  upsert_finding_ = {};
  insert_event_ = {};
  heartbeat_ = {};
  finish_run_ = {};
  if (!db_) return;
  sqlite3_busy_timeout(db_.get(), 200);  // a busy reader must not hold up the shutdown
  sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
}

std::int64_t writer_connection::start_run(const storage::run_options& run,
                                          const std::vector<storage::series_spec>& series) {
  try {
    transaction t(db_.get());
    double now = unix_now();
    {
      statement running(db_.get(),
                        "SELECT id, host, pid, heartbeat FROM runs WHERE status = 'running'");
      statement crash(db_.get(),
                      "UPDATE runs SET status = 'crashed', ended_at = heartbeat WHERE id = ?1");
      std::vector<std::int64_t> dead;
      while (running.step())
        if (writer_is_dead(running.text(1), running.int64(2), running.real(3), now,
                           stale_after_seconds))
          dead.push_back(running.int64(0));
      for (auto id : dead) crash.bind(1, id).run();
    }
    statement insert_run(db_.get(),
                         "INSERT INTO runs(name, status, started_at, heartbeat, host, pid, "
                         "config, version) VALUES(?1, 'running', ?2, ?2, ?3, ?4, ?5, ?6)");
    insert_run.bind(1, std::string_view(run.name))
        .bind(2, now)
        .bind(3, std::string_view(host_name()))
        .bind(4, process_id())
        .bind(5, std::string_view(run.config_json))
        .bind(6, std::string_view(version_string))
        .run();
    run_id_ = sqlite3_last_insert_rowid(db_.get());
    statement insert_series(db_.get(), "INSERT INTO series(run_id, name, kind) VALUES(?1, ?2, ?3)");
    for (const auto& s : series) {
      insert_series.bind(1, run_id_)
          .bind(2, std::string_view(s.name))
          .bind(3, to_string(s.kind))
          .run();
      series_state st;
      st.db_id = sqlite3_last_insert_rowid(db_.get());
      series_.push_back(st);
    }
    nlohmann::json detail = {
        {"host", host_name()}, {"pid", process_id()}, {"series", series.size()}};
    insert_event("attach", detail.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                 -1);
    t.commit();
  } catch (const sqlite_error& e) {
    throw_setup_error(path_, e);
  }
  return run_id_;
}

void writer_connection::add(std::map<std::uint64_t, finding>&& findings,
                            std::vector<storage::event_info>&& events) {
  for (auto& [id, f] : findings) findings_.insert_or_assign(id, std::move(f));
  for (auto& e : events) events_.push_back(std::move(e));
}

bool writer_connection::has_pending() const noexcept {
  return !batch_.empty() || !findings_.empty() || !events_.empty();
}

void writer_connection::insert_event(std::string_view kind, const std::string& detail,
                                     std::int64_t step) {
  insert_event_.bind(1, run_id_)
      .bind(2, unix_now())
      .bind(3, step)
      .bind(4, kind)
      .bind(5, std::string_view(detail))
      .run();
}

void writer_connection::write_rollup(const series_state& s, std::size_t level, std::int64_t bucket,
                                     const storage::bucket_summary& summary) {
  upsert_rollup_.bind(1, s.db_id).bind(2, level_at(level)).bind(3, bucket);
  bind_summary(upsert_rollup_, 4, summary);
  upsert_rollup_.run();
}

void writer_connection::add_point(series_state& s, const point_record& r) {
  constexpr std::size_t n = series_state::levels;
  if (s.last_step < 0) {
    for (std::size_t i = 0; i < n; ++i) s.open_bucket[i] = bucket_of(r.step, level_at(i));
  } else if (bucket_of(r.step, level_at(0)) != s.open_bucket[0]) {
    // Close every level whose bucket the step leaves, finest first: each closed bucket is
    // final, and is folded into the open bucket one level up (which still contains it).
    std::size_t changed = 0;
    while (changed < n && bucket_of(r.step, level_at(changed)) != s.open_bucket[changed]) ++changed;
    for (std::size_t j = 0; j < changed; ++j) {
      write_rollup(s, j, s.open_bucket[j], s.open[j]);
      s.open[j + 1].append(s.open[j]);
      s.open[j] = {};
      s.open_bucket[j] = bucket_of(r.step, level_at(j));
    }
  }
  s.open[0].add({r.step, r.wall_time, r.value});
  s.last_step = r.step;
  s.dirty = true;
}

void writer_connection::insert_rows(const point_record* const* rows, std::size_t n) {
  for (std::size_t k = 0; k < insert_points_.size(); ++k) {
    statement& st = insert_points_[k];
    for (const std::size_t size = insert_sizes[k]; n >= size; n -= size, rows += size) {
      for (std::size_t i = 0; i < size; ++i) {
        const point_record& p = *rows[i];
        const int c = int(4 * i);
        st.bind(c + 1, series_[p.series].db_id)
            .bind(c + 2, p.step)
            .bind(c + 3, p.wall_time)
            .bind(c + 4, p.value);
      }
      st.run();
    }
  }
}

void writer_connection::write_all(std::optional<storage::run_status> final_status,
                                  std::uint64_t dropped_total, std::uint64_t& written,
                                  std::uint64_t& rejected) {
  transaction t(db_.get());
  std::array<const point_record*, max_insert_rows> rows;
  std::size_t held = 0;
  for (const auto& r : batch_) {
    auto& s = series_[r.series];
    if (r.step < 0 || r.step <= s.last_step) {
      ++rejected;
      continue;
    }
    rows[held++] = &r;
    if (held == rows.size()) {
      insert_rows(rows.data(), held);
      held = 0;
    }
    add_point(s, r);
    ++written;
  }
  insert_rows(rows.data(), held);
  // Open (partial) buckets: level i's open bucket holds everything before level i-1's.
  for (auto& s : series_) {
    if (!s.dirty) continue;
    storage::bucket_summary acc = s.open[0];
    write_rollup(s, 0, s.open_bucket[0], acc);
    for (std::size_t i = 1; i < series_state::levels; ++i) {
      storage::bucket_summary merged = s.open[i];
      merged.append(acc);
      acc = merged;
      write_rollup(s, i, s.open_bucket[i], acc);
    }
  }
  for (const auto& [id, f] : findings_) {
    upsert_finding_.bind(1, run_id_)
        .bind(2, std::int64_t(id))
        .bind(3, std::string_view(f.kind))
        .bind(4, int(f.level))
        .bind(5, std::string_view(f.series))
        .bind(6, f.first_step)
        .bind(7, f.last_step)
        .bind(8, std::string_view(f.message))
        // Invalid UTF-8 (e.g. in a series name) is replaced: dump() would throw, and the
        // commit would fail again on every retry.
        .bind(9, std::string_view(
                     to_json(f).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)))
        .bind(10, unix_now())
        .bind(11, f.episodes)
        .bind(12, std::int64_t(f.cause_id))
        .run();
  }
  for (const auto& e : events_) insert_event(e.kind, e.detail_json, e.step);
  if (dropped_total > dropped_recorded_)
    insert_event("drops",
                 nlohmann::json{{"source", "writer"},
                                {"count", dropped_total - dropped_recorded_},
                                {"total", dropped_total}}
                     .dump(),
                 -1);
  if (rejected_total_ + rejected > rejected_recorded_)
    insert_event("out_of_order",
                 nlohmann::json{{"count", rejected_total_ + rejected - rejected_recorded_},
                                {"total", rejected_total_ + rejected}}
                     .dump(),
                 -1);
  if (failures_since_success_ > 0)
    insert_event("recovered", nlohmann::json{{"failed_attempts", failures_since_success_}}.dump(),
                 -1);
  double now = unix_now();
  if (final_status) {
    insert_event(
        "detach",
        nlohmann::json{{"status", to_string(*final_status)}, {"dropped", dropped_total}}.dump(),
        -1);
    finish_run_.bind(1, run_id_).bind(2, to_string(*final_status)).bind(3, now).run();
  } else {
    heartbeat_.bind(1, run_id_).bind(2, now).run();
  }
  t.commit();
}

bool writer_connection::commit(std::uint64_t dropped_total,
                               std::optional<storage::run_status> final_status,
                               storage::writer_stats& stats) noexcept {
  // The rollup state advances while the transaction is built; keep a copy to undo a failure.
  std::vector<series_state> saved;
  try {
    saved = series_;
    std::uint64_t written = 0, rejected = 0;
    write_all(final_status, dropped_total, written, rejected);
    for (auto& s : series_) s.dirty = false;
    batch_.clear();
    findings_.clear();
    events_.clear();
    dropped_recorded_ = dropped_total;
    rejected_total_ += rejected;
    rejected_recorded_ = rejected_total_;
    failures_since_success_ = 0;
    stats.written += written;
    stats.rejected = rejected_total_;
    stats.batches += 1;
    stats.degraded = false;
    maybe_checkpoint(stats);
    return true;
  } catch (const std::exception& e) {
    if (saved.size() == series_.size()) series_ = std::move(saved);
    ++failures_since_success_;
    stats.write_failures += 1;
    stats.last_error = e.what();
    // Every episode is reported when it starts, not only the first: the monitor says when
    // writing works again, and each "works again" follows its own "failed".
    if (!stats.degraded) {
      stats.failure_episodes += 1;
      if (options_.report_errors)
        std::fprintf(stderr,
                     "losslens: writing run history '%s' failed: %s; keeping up to %zu points "
                     "in memory and retrying (dropped points are counted)\n",
                     path_.c_str(), e.what(), options_.max_pending_rows);
    }
    stats.degraded = true;
    return false;
  }
}

void writer_connection::maybe_checkpoint(storage::writer_stats& stats) noexcept {
  std::error_code ec;
  auto wal = std::int64_t(std::filesystem::file_size(path_ + "-wal", ec));
  if (ec) return;
  stats.wal_bytes_max = std::max(stats.wal_bytes_max, wal);
  if (wal <= options_.wal_limit_bytes / 2) return;
  // A reader that keeps reading can pin the WAL; TRUNCATE waits briefly for it to move on.
  sqlite3_busy_timeout(db_.get(), 200);
  int rc =
      sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  sqlite3_busy_timeout(db_.get(), int(options_.busy_timeout.count()));
  if (rc == SQLITE_OK) stats.checkpoints += 1;
}

}  // namespace losslens::storage::detail
