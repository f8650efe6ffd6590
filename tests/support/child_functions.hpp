#pragma once
// Code a test runs in a process of its own without it being a program of its own (a writer
// killed mid-commit, a process that drops its privileges): the test binary started again as
// `<binary> --losslens-child NAME ARGS...`, whose main (tests/catch_main.cpp) runs the function
// registered under NAME instead of Catch2. A spawned process, never a fork of the threaded test.

#include <optional>
#include <string>
#include <vector>

#include "child_process.hpp"

namespace losslens::testing {

/// A child function: its arguments in, the process's exit status out. It runs before any test,
/// without Catch2 (no REQUIRE): it reports through its exit status, stdout and stderr.
using child_function = int (*)(const std::vector<std::string>& args);

/// Registers a child function at static initialisation, in the test source that uses it:
/// `const testing::child_function_entry writer{"storage-writer", &writer_main};`
struct child_function_entry {
  child_function_entry(const char* name, child_function fn);
};

/// When argv is `--losslens-child NAME ARGS...`: runs that function and returns its exit status
/// (127 for an unknown name, 125 when it throws). Otherwise nullopt.
std::optional<int> run_child_function(int argc, char** argv);

/// Starts this executable again running the child function `name` with args. Throws
/// std::runtime_error when it cannot start.
child_process spawn_child_function(const std::string& name, const std::vector<std::string>& args,
                                   child_options options = {});

}  // namespace losslens::testing
