#pragma once
// Small helpers shared by the storage bench programs: `--name N` flags, timing, a scratch
// directory.

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "temp_dir.hpp"

namespace losslens::bench {

using clock_type = std::chrono::steady_clock;

/// Value of `--name N` in argv, or fallback.
inline std::int64_t int_arg(int argc, char** argv, const char* name, std::int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::strtoll(argv[i + 1], nullptr, 10);
  return fallback;
}

inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// A fresh directory under the system temp directory, removed on destruction.
struct scratch_dir : testing::temp_dir {
  scratch_dir() : testing::temp_dir("bench") {}
};

}  // namespace losslens::bench
