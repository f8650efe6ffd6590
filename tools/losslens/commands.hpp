#pragma once
// The losslens subcommands. Each returns the process exit status: 0 success, 1 a runtime
// failure (bad file, missing database...), 2 a usage error, 3 findings at or above --fail-on.

#include <string_view>

namespace losslens::cli {

struct command {
  std::string_view name;
  std::string_view summary;
  std::string_view usage;             ///< full --help text
  int (*run)(int argc, char** argv);  ///< argv[0] is the subcommand name
};

int run_analyze(int argc, char** argv);
extern const std::string_view analyze_usage;
// import_command.cpp: runs logged elsewhere into the run history.
int run_import(int argc, char** argv);
extern const std::string_view import_usage;

// Run history (storage_commands.cpp): read the SQLite database that monitored runs write.
int run_runs(int argc, char** argv);
extern const std::string_view runs_usage;
int run_findings(int argc, char** argv);
extern const std::string_view findings_usage;
int run_metrics(int argc, char** argv);
extern const std::string_view metrics_usage;
int run_export(int argc, char** argv);
extern const std::string_view export_usage;
int run_compare(int argc, char** argv);
extern const std::string_view compare_usage;

// The live dashboard (serve_command.cpp).
int run_serve(int argc, char** argv);
extern const std::string_view serve_usage;

}  // namespace losslens::cli
