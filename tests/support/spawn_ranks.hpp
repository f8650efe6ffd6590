#pragma once
// Starts the ranks of a multi-process run (separate executables, child_process) and waits for
// them with a deadline. Used by test_distributed and bench_distributed; no LibTorch here, so
// the parent holds no LibTorch threads while it starts them.

#include <chrono>
#include <string>
#include <vector>

namespace losslens::testing {

/// Runs exe once per entry of rank_args; rank r's stdout and stderr go to
/// <log_prefix><r>.log. Exit status of each rank (-1: killed at the deadline or by a signal).
/// Throws std::runtime_error when a rank cannot be started (the started ones are killed).
std::vector<int> run_ranks(const std::string& exe,
                           const std::vector<std::vector<std::string>>& rank_args,
                           const std::string& log_prefix, std::chrono::seconds deadline);

}  // namespace losslens::testing
