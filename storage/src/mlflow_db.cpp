#include "losslens/storage/mlflow_db.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>

#include <sqlite3.h>

#include "detail/schema.hpp"
#include "detail/sqlite.hpp"
#include "losslens/error.hpp"
#include "losslens/parallel_for.hpp"
#include "losslens/tag_series.hpp"

namespace losslens::storage {
namespace {

using detail::db_handle;
using detail::statement;

// Read-only: the tracking server may be writing the file; waits out its write locks.
db_handle open_read_only(const std::string& path) {
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  db_handle db(raw);
  if (rc != SQLITE_OK)
    throw error(path + ": cannot open as an SQLite database: " +
                (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  sqlite3_busy_timeout(db.get(), 5000);
  return db;
}

bool has_mlflow_tables(sqlite3* db) {
  statement st(db,
               "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('runs', "
               "'metrics', 'experiments')");
  return st.step() && st.int64(0) == 3;
}

// Wraps SQLite's errors with the file and what to do.
template <class Fn>
auto reading(const std::string& path, Fn&& fn) {
  try {
    return fn();
  } catch (const detail::sqlite_error& e) {
    if (e.code() == SQLITE_CORRUPT || e.code() == SQLITE_NOTADB)
      throw error(path + ": the SQLite file is damaged or incomplete (" + e.what() +
                  "): copy it again once MLflow has stopped writing it, or recover it with "
                  "`sqlite3 " +
                  path + " .recover`");
    throw error(path + ": cannot read MLflow's tables: " + e.what());
  }
}

// The metric rows of a run with rowids in [from, to], in rowid order, each into its key's
// series, on `db` (a connection is used by one thread at a time).
void read_rows(sqlite3* db, const std::string& run_id, std::int64_t from, std::int64_t to,
               tag_series_part& out) {
  statement st(db,
               "SELECT key, value, step, timestamp, is_nan FROM metrics WHERE run_uuid = ?1 AND "
               "rowid BETWEEN ?2 AND ?3 ORDER BY rowid");
  st.bind(1, run_id).bind(2, from).bind(3, to);
  constexpr double largest = std::numeric_limits<double>::max();
  while (st.step()) {
    tag_point p;
    p.value = st.real(1);
    // SQL has no NaN or Inf: MLflow writes 0 with is_nan set, and the largest double.
    if (st.int64(4) != 0) p.value = std::numeric_limits<double>::quiet_NaN();
    if (std::fabs(p.value) == largest) p.value = std::copysign(HUGE_VAL, p.value);
    p.step = st.int64(2);
    p.wall_time = double(st.int64(3)) / 1000.0;
    out.add(st.text_view(0), p);
  }
}

}  // namespace

bool is_sqlite_file(const std::string& path) noexcept {
  std::ifstream in(path, std::ios::binary);
  char head[16] = {};
  return in.read(head, sizeof head) && std::memcmp(head, "SQLite format 3", 16) == 0;
}

std::vector<mlflow_db_run> find_mlflow_db_runs(const std::string& path) {
  const db_handle db = open_read_only(path);
  return reading(path, [&] {
    if (!has_mlflow_tables(db.get()))
      throw error(path +
                  ": an SQLite database without MLflow's tables (experiments, runs, metrics)" +
                  (detail::query_int(db.get(), "PRAGMA application_id") == detail::application_id
                       ? "; it is a losslens run history: see its runs with `losslens runs --db " +
                             path + "`"
                       : std::string()));
    // lifecycle_stage is 'active' or 'deleted' (a deleted run stays until garbage-collected).
    statement st(db.get(),
                 "SELECT r.run_uuid, coalesce(nullif(r.name, ''), r.run_uuid), "
                 "coalesce(e.name, CAST(r.experiment_id AS TEXT), '') FROM runs r LEFT JOIN "
                 "experiments e ON e.experiment_id = r.experiment_id WHERE "
                 "coalesce(r.lifecycle_stage, 'active') <> 'deleted' AND "
                 "coalesce(e.lifecycle_stage, 'active') <> 'deleted' ORDER BY r.experiment_id, "
                 "r.start_time, r.run_uuid");
    std::vector<mlflow_db_run> out;
    while (st.step()) out.push_back({st.text(0), st.text(1), st.text(2)});
    return out;
  });
}

mlflow_run read_mlflow_db_run(const std::string& path, const std::string& run_id,
                              const mlflow_db_read_options& options) {
  const db_handle db = open_read_only(path);
  return reading(path, [&] {
    mlflow_run run;
    run.dir = path;
    statement name(db.get(),
                   "SELECT coalesce(nullif(name, ''), run_uuid) FROM runs WHERE run_uuid = ?1");
    name.bind(1, run_id);
    if (!name.step()) throw error(path + ": no MLflow run '" + run_id + "'");
    run.name = name.text(0);
    // In the order written (rowid), which the index on run_uuid gives without sorting (ORDER
    // BY key sorted every row of the run in a temporary B-tree: most of the read); the rows go
    // to their key's series here, so within a key they stay in the order written and
    // one_point_per_step keeps the last of a step. A long run is read in rowid ranges on the
    // machine's cores, one connection each, joined in rowid order. Then the keys in order, as
    // SQLite compares text (bytes, as std::string does).
    // (Not min() and max(): SQLite takes them by scanning every index entry of the run.)
    statement first(db.get(),
                    "SELECT rowid FROM metrics WHERE run_uuid = ?1 ORDER BY rowid LIMIT 1");
    statement last(db.get(),
                   "SELECT rowid FROM metrics WHERE run_uuid = ?1 ORDER BY rowid DESC LIMIT 1");
    first.bind(1, run_id);
    last.bind(1, run_id);
    if (!first.step() || !last.step()) return run;  // no metrics
    const std::int64_t lo = first.int64(0), hi = last.int64(0);
    const unsigned threads = thread_count(options.threads);
    const std::int64_t parts = std::clamp<std::int64_t>(
        (hi - lo + 1) / std::max<std::int64_t>(1, options.rows_per_part), 1, threads);
    std::vector<tag_series_part> points(static_cast<std::size_t>(parts));
    if (parts == 1) {
      read_rows(db.get(), run_id, lo, hi, points[0]);  // a short run: on this connection
    } else {
      std::vector<std::exception_ptr> errors(points.size());
      parallel_for(points.size(), unsigned(parts), [&](std::size_t i) {
        const std::int64_t from = lo + (hi - lo + 1) / parts * std::int64_t(i);
        const std::int64_t to = i + 1 == points.size() ? hi : from + (hi - lo + 1) / parts - 1;
        try {
          reading(path, [&] {
            const db_handle own = open_read_only(path);  // a connection per thread
            read_rows(own.get(), run_id, from, to, points[i]);
          });
        } catch (...) {
          errors[i] = std::current_exception();
        }
      });
      for (const auto& e : errors)
        if (e) std::rethrow_exception(e);
    }
    tag_series_builder series;
    tag_series_part::join(points, series);
    run.metrics = series.take();
    std::sort(run.metrics.begin(), run.metrics.end(),
              [](const tag_series& a, const tag_series& b) { return a.tag < b.tag; });
    one_point_per_step(run.metrics, run.notes);
    return run;
  });
}

}  // namespace losslens::storage
