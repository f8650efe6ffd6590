#pragma once
// Small helpers shared by the bench programs: timing, the load average, a scratch directory.
// Flags: program_args.hpp.

#include <unistd.h>

#include <cstdlib>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "program_args.hpp"
#include "temp_dir.hpp"

namespace losslens::bench {

using clock_type = std::chrono::steady_clock;

inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// The 1-minute load average (-1 when unknown): printed with every figure, since a figure taken
/// on a busy machine is not a result.
inline double load1() {
  double l[3] = {0, 0, 0};
  return getloadavg(l, 3) > 0 ? l[0] : -1.0;
}

/// A fresh directory under the system temp directory, removed on destruction.
struct scratch_dir : testing::temp_dir {
  scratch_dir() : testing::temp_dir("bench") {}
};

}  // namespace losslens::bench
