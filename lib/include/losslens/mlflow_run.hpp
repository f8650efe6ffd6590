#pragma once
/// \file mlflow_run.hpp
/// Reads the runs of MLflow's file store (`mlruns/<experiment>/<run>/metrics/<key>`, what
/// `mlflow.log_metric` writes without a tracking server) into per-key series.

#include <string>
#include <vector>

#include "losslens/tag_series.hpp"

namespace losslens {

/// One run of MLflow's file store.
struct mlflow_run {
  std::string dir;                  ///< the run's directory
  std::string name;                 ///< run_name from its meta.yaml, else the directory's name
  std::vector<tag_series> metrics;  ///< one per metric key (a key with '/' is a nested file),
                                    ///< sorted by key; in step order, one point per step
  std::vector<std::string> notes;   ///< repeated steps, lines without a step
};

/// True when `dir` is a run directory of MLflow's file store: it holds `meta.yaml` and a
/// `metrics` directory.
bool is_mlflow_run_dir(const std::string& dir);

/// The run directories at `path` (a run), one level below it (an experiment) or two
/// (`mlruns/` itself), sorted by path; `.trash` (deleted runs) is skipped. Empty when there are
/// none. Throws losslens::error when a directory cannot be listed.
std::vector<std::string> find_mlflow_runs(const std::string& path);

/// The run's name: `run_name` in its meta.yaml, else the directory's name.
std::string mlflow_run_name(const std::string& dir);

/// Reads a run's metrics. Each line of a metric file is `<timestamp ms> <value> [<step>]`
/// (no step: step 0, as MLflow reads it); values as Python writes floats (nan, inf, -inf
/// included). When a step repeats the value written last is kept, with a note.
/// Throws losslens::error ("FILE:LINE: reason") for a malformed line or an unreadable file.
mlflow_run read_mlflow_run(const std::string& dir);

}  // namespace losslens
