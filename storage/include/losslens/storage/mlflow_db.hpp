#pragma once
/// \file mlflow_db.hpp
/// Reads the runs of an MLflow tracking database in SQLite (`mlflow.db`, MLflow's default
/// backend store since 3.7; `mlflow server --backend-store-uri sqlite:///...`) into per-key
/// series, as mlflow_run.hpp reads those of the file store.

#include <cstdint>
#include <string>
#include <vector>

#include "losslens/mlflow_run.hpp"

namespace losslens::storage {

/// A run listed in an MLflow database.
struct mlflow_db_run {
  std::string id;          ///< runs.run_uuid
  std::string name;        ///< runs.name, else the run's id
  std::string experiment;  ///< experiments.name, else the experiment's id
};

/// How read_mlflow_db_run reads a run.
struct mlflow_db_read_options {
  /// A run is read in rowid ranges, one per thread, when each gets at least this many rowids.
  std::int64_t rows_per_part = std::int64_t(1) << 18;
  /// Threads at most; 0: as many as the machine has CPUs.
  unsigned threads = 0;
};

/// True when `path` is an SQLite file, whatever its tables (by its first 16 bytes); never throws.
bool is_sqlite_file(const std::string& path) noexcept;

/// The runs that are not deleted, in experiments that are not deleted, by experiment and start
/// time. Opens the file read-only (a running tracking server may keep writing it). Throws
/// losslens::error when it cannot be opened or read, or has no MLflow tables (saying so when it
/// is a losslens run history).
std::vector<mlflow_db_run> find_mlflow_db_runs(const std::string& path);

/// Reads one run's metrics: one series per key, sorted by key, in step order with one point
/// per step (the value written last is kept, with a note). MLflow stores a NaN as 0 with
/// `is_nan` set and ±Inf as ±1.7976931348623157e308 (the largest double): both are read back
/// as NaN and ±Inf. `run.dir` is the database's path. Throws losslens::error (unreadable file,
/// no such run).
///
/// A long run is read in rowid ranges, one per thread (options), each on its own read-only
/// connection, and joined in rowid order: the same series as one reader's.
mlflow_run read_mlflow_db_run(const std::string& path, const std::string& run_id,
                              const mlflow_db_read_options& options = {});

}  // namespace losslens::storage
