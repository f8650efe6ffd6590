#pragma once
// Thin RAII wrappers over the SQLite C API: a connection handle and a reusable prepared
// statement. Internal to losslens::storage.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "losslens/error.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace losslens::storage::detail {

/// A failed SQLite call. Derives from losslens::error so that query APIs can let it through;
/// setup code catches it and rethrows with advice.
class sqlite_error : public losslens::error {
 public:
  sqlite_error(int code, const std::string& what) : losslens::error(what), code_(code) {}
  /// The primary SQLite result code (SQLITE_FULL, SQLITE_READONLY, ...).
  int code() const noexcept { return code_; }

 private:
  int code_;
};

struct sqlite_closer {
  void operator()(sqlite3* db) const noexcept;
};
/// An open connection; closing it is the deleter's job.
using db_handle = std::unique_ptr<sqlite3, sqlite_closer>;

/// Throws sqlite_error for rc unless it is SQLITE_OK, SQLITE_ROW or SQLITE_DONE.
void check(sqlite3* db, int rc, std::string_view context);
/// Runs one or more statements that return no rows; throws sqlite_error.
void exec(sqlite3* db, std::string_view sql);
/// Runs a statement returning one integer (e.g. a PRAGMA); throws sqlite_error.
std::int64_t query_int(sqlite3* db, std::string_view sql);

/// A prepared statement, reset and reused between executions. NaN binds as NULL and NULL reads
/// back as NaN (the storage encoding of NaN); infinities are stored as SQLite REALs.
class statement {
 public:
  statement() = default;
  /// Prepares sql on db; throws sqlite_error.
  statement(sqlite3* db, std::string_view sql);

  statement& bind(int index, std::int64_t v);
  statement& bind(int index, int v) { return bind(index, std::int64_t{v}); }
  statement& bind(int index, double v);
  statement& bind(int index, std::string_view v);
  statement& bind_null(int index);

  /// Steps once: true when a row is available, false when done; throws sqlite_error.
  bool step();
  /// Steps to completion (for statements without rows) and resets; throws sqlite_error.
  void run();
  /// Resets and clears bindings (never throws).
  void reset() noexcept;

  bool is_null(int col) const noexcept;
  std::int64_t int64(int col) const noexcept;
  double real(int col) const noexcept;  ///< NULL reads as NaN
  std::string text(int col) const;
  /// The column's text without a copy, valid until the next step() or reset(); "" for NULL.
  std::string_view text_view(int col) const noexcept;

  explicit operator bool() const noexcept { return stmt_ != nullptr; }

 private:
  struct finalizer {
    void operator()(sqlite3_stmt* s) const noexcept;
  };
  std::unique_ptr<sqlite3_stmt, finalizer> stmt_;
};

/// How a transaction takes its locks (SQLite's BEGIN DEFERRED / IMMEDIATE / EXCLUSIVE).
enum class begin_mode { deferred, immediate, exclusive };

/// A transaction that rolls back unless committed (never throws from the destructor).
class transaction {
 public:
  /// Begins (IMMEDIATE by default: the write lock at once, waiting up to the busy timeout);
  /// throws sqlite_error.
  explicit transaction(sqlite3* db, begin_mode mode = begin_mode::immediate);
  ~transaction();
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;
  /// Commits; throws sqlite_error (the destructor then rolls back).
  void commit();

 private:
  sqlite3* db_;
  bool open_ = true;
};

}  // namespace losslens::storage::detail
