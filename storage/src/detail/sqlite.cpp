#include "detail/sqlite.hpp"

#include <cmath>

#include <sqlite3.h>

namespace losslens::storage::detail {

void sqlite_closer::operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }

void check(sqlite3* db, int rc, std::string_view context) {
  if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE) return;
  std::string msg = "sqlite: ";
  msg += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  msg += " (while ";
  msg += context;
  msg += ")";
  throw sqlite_error(rc & 0xff, msg);
}

void exec(sqlite3* db, std::string_view sql) {
  std::string s(sql);
  check(db, sqlite3_exec(db, s.c_str(), nullptr, nullptr, nullptr), s.substr(0, 60));
}

std::int64_t query_int(sqlite3* db, std::string_view sql) {
  statement st(db, sql);
  return st.step() ? st.int64(0) : 0;
}

void statement::finalizer::operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }

statement::statement(sqlite3* db, std::string_view sql) {
  sqlite3_stmt* s = nullptr;
  check(db,
        sqlite3_prepare_v3(db, sql.data(), int(sql.size()), SQLITE_PREPARE_PERSISTENT, &s, nullptr),
        "preparing " + std::string(sql.substr(0, 60)));
  stmt_.reset(s);
}

statement& statement::bind(int index, std::int64_t v) {
  sqlite3_bind_int64(stmt_.get(), index, v);
  return *this;
}

statement& statement::bind(int index, double v) {
  if (std::isnan(v))
    sqlite3_bind_null(stmt_.get(), index);
  else
    sqlite3_bind_double(stmt_.get(), index, v);
  return *this;
}

statement& statement::bind(int index, std::string_view v) {
  sqlite3_bind_text(stmt_.get(), index, v.data(), int(v.size()), SQLITE_TRANSIENT);
  return *this;
}

statement& statement::bind_null(int index) {
  sqlite3_bind_null(stmt_.get(), index);
  return *this;
}

bool statement::step() {
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3* db = sqlite3_db_handle(stmt_.get());
  std::string sql = sqlite3_sql(stmt_.get());
  sqlite3_reset(stmt_.get());
  check(db, rc, "running " + sql.substr(0, 60));
  return false;
}

void statement::run() {
  while (step()) {
  }
  sqlite3_reset(stmt_.get());
}

void statement::reset() noexcept {
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
}

bool statement::is_null(int col) const noexcept {
  return sqlite3_column_type(stmt_.get(), col) == SQLITE_NULL;
}

std::int64_t statement::int64(int col) const noexcept {
  return sqlite3_column_int64(stmt_.get(), col);
}

double statement::real(int col) const noexcept {
  if (is_null(col)) return std::nan("");
  return sqlite3_column_double(stmt_.get(), col);
}

std::string statement::text(int col) const { return std::string(text_view(col)); }

std::string_view statement::text_view(int col) const noexcept {
  const auto* p = sqlite3_column_text(stmt_.get(), col);
  return p ? std::string_view(reinterpret_cast<const char*>(p),
                              std::size_t(sqlite3_column_bytes(stmt_.get(), col)))
           : std::string_view();
}

transaction::transaction(sqlite3* db, begin_mode mode) : db_(db) {
  exec(db_, mode == begin_mode::exclusive   ? "BEGIN EXCLUSIVE"
            : mode == begin_mode::immediate ? "BEGIN IMMEDIATE"
                                            : "BEGIN");
}

transaction::~transaction() {
  if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void transaction::commit() {
  exec(db_, "COMMIT");
  open_ = false;
}

}  // namespace losslens::storage::detail
