#pragma once
// An MLflow tracking database in SQLite, written as MLflow's SQLAlchemy store writes one
// (`mlflow.db`, the default backend store of MLflow 3.7+): its tables as MLflow's migrations
// leave them (those a run's metrics touch), a NaN stored as 0 with is_nan = 1 and ±Inf as the
// largest double. For tests of losslens' reader of such files.

#include <cstdint>
#include <string>
#include <vector>

namespace losslens::testing {

struct mlflow_store_metric {
  std::string key;
  double value = 0;
  std::int64_t timestamp_ms = 0;
  std::int64_t step = 0;
};

struct mlflow_store_run {
  std::string id;    ///< run_uuid (32 hex digits in MLflow)
  std::string name;  ///< runs.name (may be empty)
  int experiment = 0;
  std::int64_t start_time = 0;
  bool deleted = false;                      ///< lifecycle_stage 'deleted'
  std::vector<mlflow_store_metric> metrics;  ///< inserted in this order
};

struct mlflow_store_experiment {
  int id = 0;
  std::string name;
  bool deleted = false;
};

/// Creates `path` with MLflow's tables unless it exists, then adds the experiments and runs.
/// Throws std::runtime_error on an SQLite failure.
void write_mlflow_store(const std::string& path,
                        const std::vector<mlflow_store_experiment>& experiments,
                        const std::vector<mlflow_store_run>& runs);

}  // namespace losslens::testing
