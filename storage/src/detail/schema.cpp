#include "detail/schema.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <sqlite3.h>
#include <unistd.h>

namespace losslens::storage::detail {

namespace {

namespace fs = std::filesystem;

struct migration {
  int to_version;
  const char* sql;
};

// Each entry upgrades the schema by one version; never edit a released entry, append one.
constexpr migration migrations[] = {
    {1, R"sql(
CREATE TABLE runs(
  id         INTEGER PRIMARY KEY,
  name       TEXT NOT NULL,
  status     TEXT NOT NULL CHECK(status IN ('running', 'finished', 'crashed')),
  started_at REAL NOT NULL,
  ended_at   REAL,
  heartbeat  REAL NOT NULL,
  host       TEXT NOT NULL,
  pid        INTEGER NOT NULL,
  config     TEXT NOT NULL DEFAULT '{}',
  version    TEXT NOT NULL);
CREATE TABLE series(
  id     INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id),
  name   TEXT NOT NULL,
  kind   TEXT NOT NULL,
  UNIQUE(run_id, name));
CREATE TABLE points(
  series_id INTEGER NOT NULL,
  step      INTEGER NOT NULL,
  wall_time REAL NOT NULL,
  value     REAL,
  PRIMARY KEY(series_id, step)) WITHOUT ROWID;
CREATE TABLE rollups(
  series_id INTEGER NOT NULL, level INTEGER NOT NULL, bucket INTEGER NOT NULL,
  count INTEGER NOT NULL, nan_count INTEGER NOT NULL, pos_inf_count INTEGER NOT NULL,
  neg_inf_count INTEGER NOT NULL,
  first_step INTEGER NOT NULL, first_wall REAL NOT NULL, first_value REAL,
  last_step INTEGER NOT NULL, last_wall REAL NOT NULL, last_value REAL,
  min_step INTEGER, min_wall REAL, min_value REAL,
  max_step INTEGER, max_wall REAL, max_value REAL,
  nf_step INTEGER, nf_wall REAL, nf_value REAL,
  PRIMARY KEY(series_id, level, bucket)) WITHOUT ROWID;
CREATE TABLE findings(
  run_id     INTEGER NOT NULL REFERENCES runs(id),
  finding_id INTEGER NOT NULL,
  kind       TEXT NOT NULL,
  severity   INTEGER NOT NULL,
  series     TEXT NOT NULL,
  first_step INTEGER NOT NULL,
  last_step  INTEGER NOT NULL,
  message    TEXT NOT NULL,
  body       TEXT NOT NULL,
  updated_at REAL NOT NULL,
  PRIMARY KEY(run_id, finding_id));
CREATE INDEX findings_by_kind ON findings(kind);
CREATE TABLE events(
  id     INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id),
  time   REAL NOT NULL,
  step   INTEGER NOT NULL,
  kind   TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '{}');
CREATE INDEX events_by_run ON events(run_id, id);
)sql"},
    // Findings are incidents: the episodes they merged and the incident they follow. Bodies
    // written by version 1 lack both and read as one episode, no cause.
    {2, R"sql(
ALTER TABLE findings ADD COLUMN episodes INTEGER NOT NULL DEFAULT 1;
ALTER TABLE findings ADD COLUMN cause_id INTEGER NOT NULL DEFAULT 0;
)sql"},
};

// Creates or upgrades the schema in one transaction under an exclusive lock: a new file is
// never seen half-made (readers and other writers wait on the lock with their busy timeout),
// and of several processes creating the same file at once, the first creates it and the
// others find it done (the version is read again under the lock).
void migrate(sqlite3* db) {
  transaction t(db, begin_mode::exclusive);
  auto version = int(query_int(db, "PRAGMA user_version"));
  for (const auto& m : migrations) {
    if (m.to_version <= version) continue;
    exec(db, m.sql);
    exec(db, "PRAGMA user_version = " + std::to_string(m.to_version));
    version = m.to_version;
  }
  exec(db, "PRAGMA application_id = " + std::to_string(application_id));
  t.commit();
}

enum class read_access { normal, read_only, immutable };

db_handle connect(const std::string& path, open_mode mode, read_access access,
                  int busy_timeout_ms) {
  int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_READWRITE;
  if (mode == open_mode::write) flags |= SQLITE_OPEN_CREATE;
  if (access != read_access::normal) flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_READONLY;
  std::string name = path;
  if (access == read_access::immutable) {
    flags |= SQLITE_OPEN_URI;
    name = "file:";
    for (char c : fs::absolute(path).string()) {  // percent-encode what a URI reserves
      if (c == '%' || c == '?' || c == '#') {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", unsigned(static_cast<unsigned char>(c)));
        name += buf;
      } else {
        name += c;
      }
    }
    name += "?immutable=1";
  }
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(name.c_str(), &raw, flags, nullptr);
  db_handle db(raw);
  if (rc != SQLITE_OK)
    throw error("cannot open database '" + path +
                "': " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)) +
                "; check the path and its permissions");
  sqlite3_busy_timeout(db.get(), busy_timeout_ms);
  sqlite3_extended_result_codes(db.get(), 0);
  return db;
}

}  // namespace

void throw_setup_error(const std::string& path, const sqlite_error& e) {
  std::string where = "database '" + path + "': ";
  switch (e.code()) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      throw error(where + "not a SQLite database, or corrupt (" + e.what() +
                  "); move the file away or use another database file");
    case SQLITE_FULL:
      throw error(where + "the disk is full (" + e.what() +
                  "); free some space or put the database on another disk");
    case SQLITE_READONLY:
    case SQLITE_PERM:
      throw error(where + "read-only (" + e.what() +
                  "); check the permissions of the file and of its directory, or use another "
                  "database file");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      throw error(where + "locked by another process (" + e.what() +
                  "); retry, or use another database file");
    default:
      throw error(where + e.what() + "; check the file, its directory and the free disk space");
  }
}

namespace {

/// What a database's header and catalog say about it.
struct database_kind {
  std::int64_t application = 0;  ///< PRAGMA application_id
  std::int64_t version = 0;      ///< PRAGMA user_version
  std::int64_t objects = 0;      ///< tables, indexes, ...
  /// No losslens schema and nothing else either: a new file.
  bool empty() const noexcept {
    return application != application_id && objects == 0 && version == 0;
  }
};

database_kind read_kind(sqlite3* db) {
  // One read transaction: a creator committing between the three reads would otherwise
  // show a mix (no application id yet, but tables) that looks like a foreign database.
  transaction t(db, begin_mode::deferred);
  database_kind kind{query_int(db, "PRAGMA application_id"), query_int(db, "PRAGMA user_version"),
                     query_int(db, "SELECT count(*) FROM sqlite_master")};
  t.commit();
  return kind;
}

/// A reader that finds a file without a schema may have opened it in the moment between a
/// writer creating the file and locking it to create the schema: when the file is recent,
/// look again until busy_timeout_ms has passed.
database_kind wait_for_schema(sqlite3* db, const std::string& path, int busy_timeout_ms) {
  auto kind = read_kind(db);
  std::error_code ec;
  const auto modified = fs::last_write_time(path, ec);
  if (ec || fs::file_time_type::clock::now() - modified > std::chrono::seconds(10)) return kind;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
  while (kind.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    kind = read_kind(db);
  }
  return kind;
}

/// PRAGMA journal_mode = WAL, tried again while another process holds the file (true: WAL).
/// The switch needs the file to itself, and SQLite may answer SQLITE_BUSY at once instead of
/// waiting busy_timeout (when it would otherwise deadlock): several processes creating the same
/// database together got "database is locked" here.
bool switch_to_wal(sqlite3* db, int busy_timeout_ms) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
  for (;;) {
    try {
      statement wal(db, "PRAGMA journal_mode = WAL");
      return wal.step() && wal.text(0) == "wal";
    } catch (const sqlite_error& e) {
      if ((e.code() != SQLITE_BUSY && e.code() != SQLITE_LOCKED) ||
          std::chrono::steady_clock::now() >= deadline)
        throw;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

db_handle open_database(const std::string& path, open_mode mode, int busy_timeout_ms) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw error("database '" + path + "' is a directory; give the path of a file, not a directory");
  bool exists = fs::exists(path, ec);
  if (mode == open_mode::read && !exists)
    throw error("no database at '" + path +
                "': pass --db with the file that a losslens run wrote (the default is runs.db)");
  if (mode == open_mode::write && !exists) {
    auto parent = fs::path(path).parent_path();
    if (!parent.empty() && !fs::is_directory(parent, ec))
      throw error("cannot create database '" + path + "': directory '" + parent.string() +
                  "' does not exist; create it first or choose another path");
  }

  const bool read_only = mode == open_mode::read && ::access(path.c_str(), W_OK) != 0;
  auto db = connect(path, mode, read_only ? read_access::read_only : read_access::normal,
                    busy_timeout_ms);
  if (read_only) {
    // A WAL database in a directory we cannot write lacks its -shm file; nobody can be writing
    // it, so read it as immutable.
    try {
      (void)query_int(db.get(), "PRAGMA user_version");
    } catch (const sqlite_error& e) {
      if (e.code() != SQLITE_READONLY && e.code() != SQLITE_CANTOPEN) throw_setup_error(path, e);
      db = connect(path, mode, read_access::immutable, busy_timeout_ms);
    }
  }
  try {
    const auto kind = mode == open_mode::read ? wait_for_schema(db.get(), path, busy_timeout_ms)
                                              : read_kind(db.get());
    const auto version = kind.version;
    if (kind.application != application_id) {
      if (!kind.empty())
        throw error("database '" + path +
                    "' is a SQLite database but not a losslens one; use another database file");
      if (mode == open_mode::read)
        throw error("database '" + path + "' is empty (no losslens run has written to it yet)");
    } else if (version < 1) {  // the schema and its version are written in one transaction
      throw error("database '" + path + "' is not a losslens database, or its schema version (" +
                  std::to_string(version) + ") is unknown (this build writes version " +
                  std::to_string(schema_version) + "); use another database file");
    }
    if (version > schema_version)
      throw error("database '" + path + "' was written by a newer losslens (schema version " +
                  std::to_string(version) + ", this build understands up to " +
                  std::to_string(schema_version) +
                  "); upgrade losslens, or use another database file");
    if (mode == open_mode::write && sqlite3_db_readonly(db.get(), "main") == 1)
      throw error(
          "database '" + path +
          "' is read-only; check the permissions of the file and of its directory "
          "(SQLite creates '-wal' and '-shm' files next to it), or use another database file");
    if (version < schema_version) {
      if (sqlite3_db_readonly(db.get(), "main") == 1)
        throw error("database '" + path + "' has an older schema (version " +
                    std::to_string(version) +
                    ") and is read-only; open it once with write access to upgrade it");
      migrate(db.get());  // also creates a new file's schema, before it turns to WAL
    }
    if (mode == open_mode::write) {
      // WAL lets readers (the CLI, a dashboard) read while the writer writes.
      if (!switch_to_wal(db.get(), busy_timeout_ms))
        throw error("database '" + path +
                    "': cannot switch to WAL mode (is it on a network file system?); put the "
                    "database on a local disk");
    }
  } catch (const sqlite_error& e) {
    throw_setup_error(path, e);
  }
  return db;
}

}  // namespace losslens::storage::detail
