#pragma once
// Small helpers shared by the storage bench programs: timing, a scratch directory. Flags:
// program_args.hpp.

#include <unistd.h>

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

/// A fresh directory under the system temp directory, removed on destruction.
struct scratch_dir : testing::temp_dir {
  scratch_dir() : testing::temp_dir("bench") {}
};

}  // namespace losslens::bench
