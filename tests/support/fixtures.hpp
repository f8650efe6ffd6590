#pragma once
// The shared fixtures written by other tools (../shared/fixtures next to the repository; CMake's
// LOSSLENS_FIXTURES_DIR). Tests that need them say so and pass when they are absent (CI without
// the fixtures), since Catch2 v2 cannot skip a test.

#include <catch2/catch.hpp>

#include <filesystem>

namespace losslens::testing {

/// <fixtures>/tensorboard: event files and TensorBoard/W&B exports of three real runs.
inline std::filesystem::path tensorboard_fixtures() {
  return std::filesystem::path(LOSSLENS_FIXTURES_DIR) / "tensorboard";
}

/// True when the TensorBoard fixtures are there; otherwise a warning saying how to point the
/// build at them.
inline bool have_tensorboard_fixtures() {
  if (std::filesystem::exists(tensorboard_fixtures() / "expected.json")) return true;
  WARN("fixtures not found at " << tensorboard_fixtures().string()
                                << ": configure with -DLOSSLENS_FIXTURES_DIR=<shared>/fixtures; "
                                   "skipped");
  return false;
}

}  // namespace losslens::testing
