#include "mlflow_store.hpp"

#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>

#include <sqlite3.h>

namespace losslens::testing {
namespace {

// The tables of MLflow's schema that a run with metrics fills (column names, types, keys and
// indexes as its migrations create them; the tables for models, traces and datasets left out).
constexpr const char* schema = R"sql(
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
CREATE TABLE experiments (
  experiment_id INTEGER NOT NULL, name VARCHAR(256) NOT NULL, artifact_location VARCHAR(256),
  lifecycle_stage VARCHAR(32), creation_time BIGINT, last_update_time BIGINT,
  CONSTRAINT experiment_pk PRIMARY KEY (experiment_id), UNIQUE (name));
CREATE TABLE runs (
  run_uuid VARCHAR(32) NOT NULL, name VARCHAR(250), source_type VARCHAR(20),
  source_name VARCHAR(500), entry_point_name VARCHAR(50), user_id VARCHAR(256),
  status VARCHAR(9), start_time BIGINT, end_time BIGINT, source_version VARCHAR(50),
  lifecycle_stage VARCHAR(20), artifact_uri VARCHAR(200), experiment_id INTEGER,
  deleted_time BIGINT, CONSTRAINT run_pk PRIMARY KEY (run_uuid),
  FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id));
CREATE TABLE metrics (
  key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT NOT NULL,
  run_uuid VARCHAR(32) NOT NULL, step BIGINT DEFAULT '0' NOT NULL,
  is_nan BOOLEAN DEFAULT '0' NOT NULL,
  CONSTRAINT metric_pk PRIMARY KEY (key, timestamp, step, run_uuid, value, is_nan),
  FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid));
CREATE TABLE latest_metrics (
  key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT, step BIGINT NOT NULL,
  is_nan BOOLEAN NOT NULL, run_uuid VARCHAR(32) NOT NULL,
  CONSTRAINT latest_metric_pk PRIMARY KEY (key, run_uuid));
CREATE TABLE params (
  key VARCHAR(250) NOT NULL, value VARCHAR(8000) NOT NULL, run_uuid VARCHAR(32) NOT NULL,
  CONSTRAINT param_pk PRIMARY KEY (key, run_uuid));
CREATE TABLE tags (
  key VARCHAR(250) NOT NULL, value VARCHAR(5000), run_uuid VARCHAR(32) NOT NULL,
  CONSTRAINT tag_pk PRIMARY KEY (key, run_uuid));
CREATE INDEX index_metrics_run_uuid ON metrics (run_uuid);
CREATE INDEX index_latest_metrics_run_uuid ON latest_metrics (run_uuid);
CREATE INDEX index_params_run_uuid ON params (run_uuid);
CREATE INDEX index_tags_run_uuid ON tags (run_uuid);
INSERT INTO alembic_version VALUES ('1b5f0d9ad7c1');
)sql";

struct closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct finalizer {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using statement = std::unique_ptr<sqlite3_stmt, finalizer>;

void check(sqlite3* db, int rc) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
    throw std::runtime_error(std::string("sqlite: ") + sqlite3_errmsg(db));
}

statement prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  check(db, sqlite3_prepare_v2(db, sql, -1, &s, nullptr));
  return statement(s);
}

void insert(sqlite3* db, const statement& st) {
  check(db, sqlite3_step(st.get()));
  sqlite3_reset(st.get());
  sqlite3_clear_bindings(st.get());
}

void text(sqlite3_stmt* st, int i, const std::string& s) {
  sqlite3_bind_text(st, i, s.c_str(), int(s.size()), SQLITE_TRANSIENT);
}

}  // namespace

void write_mlflow_store(const std::string& path,
                        const std::vector<mlflow_store_experiment>& experiments,
                        const std::vector<mlflow_store_run>& runs) {
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  std::unique_ptr<sqlite3, closer> db(raw);
  check(raw, rc);
  auto has_tables = prepare(raw, "SELECT count(*) FROM sqlite_master WHERE name = 'metrics'");
  check(raw, sqlite3_step(has_tables.get()));
  if (sqlite3_column_int(has_tables.get(), 0) == 0)
    check(raw, sqlite3_exec(raw, schema, nullptr, nullptr, nullptr));
  check(raw, sqlite3_exec(raw, "BEGIN", nullptr, nullptr, nullptr));
  auto exp = prepare(raw, "INSERT INTO experiments VALUES (?1, ?2, ?3, ?4, 0, 0)");
  for (const auto& e : experiments) {
    sqlite3_bind_int(exp.get(), 1, e.id);
    text(exp.get(), 2, e.name);
    text(exp.get(), 3, "mlflow-artifacts:/" + std::to_string(e.id));
    text(exp.get(), 4, e.deleted ? "deleted" : "active");
    insert(raw, exp);
  }
  auto r = prepare(raw,
                   "INSERT INTO runs VALUES (?1, ?2, 'UNKNOWN', '', '', 'tester', 'FINISHED', ?3, "
                   "?3 + 1000, '', ?4, '', ?5, NULL)");
  auto m = prepare(raw, "INSERT INTO metrics VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  for (const auto& run : runs) {
    text(r.get(), 1, run.id);
    text(r.get(), 2, run.name);
    sqlite3_bind_int64(r.get(), 3, run.start_time);
    text(r.get(), 4, run.deleted ? "deleted" : "active");
    sqlite3_bind_int(r.get(), 5, run.experiment);
    insert(raw, r);
    for (const auto& x : run.metrics) {
      // As the store's log_metric: SQL has no NaN or Inf.
      const bool is_nan = std::isnan(x.value);
      double v = x.value;
      if (is_nan) v = 0;
      if (std::isinf(v)) v = std::copysign(std::numeric_limits<double>::max(), v);
      text(m.get(), 1, x.key);
      sqlite3_bind_double(m.get(), 2, v);
      sqlite3_bind_int64(m.get(), 3, x.timestamp_ms);
      text(m.get(), 4, run.id);
      sqlite3_bind_int64(m.get(), 5, x.step);
      sqlite3_bind_int(m.get(), 6, is_nan ? 1 : 0);
      insert(raw, m);
    }
  }
  check(raw, sqlite3_exec(raw, "COMMIT", nullptr, nullptr, nullptr));
}

}  // namespace losslens::testing
