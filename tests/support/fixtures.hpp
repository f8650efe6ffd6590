#pragma once
// The shared fixtures written by other tools (../shared/fixtures next to the repository; CMake's
// LOSSLENS_FIXTURES_DIR). Tests that need them say so and pass when they are absent (CI without
// the fixtures), since Catch2 v2 cannot skip a test. Part of the Catch2 main library
// (losslens_catch_main): Catch2 tests only.

#include <filesystem>

namespace losslens::testing {

/// <fixtures>/tensorboard: event files and TensorBoard/W&B exports of three real runs.
std::filesystem::path tensorboard_fixtures();

/// True when the TensorBoard fixtures are there; otherwise a Catch2 warning saying how to point
/// the build at them.
bool have_tensorboard_fixtures();

}  // namespace losslens::testing
