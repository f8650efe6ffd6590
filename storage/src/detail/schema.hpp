#pragma once
// Opening a run-history database: path checks, validation of the file, the schema and its
// migrations. Every failure becomes a losslens::error that says what to do.

#include <string>

#include "detail/sqlite.hpp"

namespace losslens::storage::detail {

/// The layout this build writes (PRAGMA user_version); see docs/storage.md.
inline constexpr int schema_version = 2;
/// PRAGMA application_id of a losslens database ("LsLn").
inline constexpr int application_id = 0x4c734c6e;

enum class open_mode {
  write,  ///< create the file and schema if needed, migrate, refuse read-only files
  read    ///< the file must exist and hold a losslens schema
};

/// Opens and validates path; throws losslens::error with advice (missing directory, missing,
/// read-only, corrupt or foreign file, schema written by a newer losslens, disk full).
db_handle open_database(const std::string& path, open_mode mode, int busy_timeout_ms);

/// Turns a SQLite failure during setup of path into a losslens::error with advice.
[[noreturn]] void throw_setup_error(const std::string& path, const sqlite_error& e);

}  // namespace losslens::storage::detail
