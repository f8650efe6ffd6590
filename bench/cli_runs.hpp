#pragma once
// Timing the losslens CLI (and other programs) as whole processes, for the bench programs that
// compare `losslens analyze` with baselines run in turn: wall time, CPU time and peak RSS of a
// child, and the best of several runs.

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "child_process.hpp"

namespace losslens::bench {

struct child_result {
  double seconds = 0;
  double cpu_seconds = 0;  // user + system: what the run costs when other processes share the CPU
  long max_rss_kb = 0;
  int status = -1;
  std::string out;  // stdout, when asked for
};

/// Runs argv (the program looked up in PATH) with stderr to /dev/null and stdout too unless
/// `keep_stdout`: wall time, and CPU time and peak RSS from wait4 (tests/support's
/// child_process). Status -1 when it cannot be started (python3 missing).
inline child_result run_child(const std::vector<std::string>& argv, bool keep_stdout = false) {
  testing::child_options o;
  o.out = keep_stdout ? testing::stream::pipe : testing::stream::null;
  o.err = testing::stream::null;
  o.search_path = true;
  child_result r;
  const auto t0 = clock_type::now();
  try {
    auto p = testing::run_process(argv[0], {argv.begin() + 1, argv.end()}, o);
    r.seconds = seconds_since(t0);
    r.cpu_seconds = p.cpu_seconds;
    r.max_rss_kb = p.max_rss_kb;
    r.status = p.status;
    r.out = std::move(p.out);
  } catch (const std::exception&) {
  }
  return r;
}

/// Best (smallest) wall and CPU time over runs.
struct best {
  double wall = 1e30, cpu = 1e30;
  void add(const child_result& r) {
    wall = std::min(wall, r.seconds);
    cpu = std::min(cpu, r.cpu_seconds);
  }
};

/// The directory of this program (argv[0]), to find the CLI built beside it.
inline std::string self_dir(const char* argv0) {
  const std::string p = argv0;
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

/// The losslens CLI a bench runs: --losslens PATH, else ../tools/losslens/losslens next to
/// the bench program. Exits (status 1, saying what to do) when it is not an executable.
inline std::string cli_or_exit(const testing::program_args& args, const char* argv0,
                               const char* bench_name) {
  const std::string cli = args.text("losslens", self_dir(argv0) + "/../tools/losslens/losslens");
  if (access(cli.c_str(), X_OK) != 0) {
    std::fprintf(stderr,
                 "%s: %s is not an executable (build losslens_cli or give --losslens PATH)\n",
                 bench_name, cli.c_str());
    std::exit(1);
  }
  return cli;
}

}  // namespace losslens::bench
