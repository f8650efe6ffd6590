#pragma once
// Whole files as bytes, for tests that check what a program wrote.

#include <filesystem>
#include <string>

namespace losslens::testing {

/// The whole file as bytes; throws std::runtime_error when it cannot be read.
std::string read_file(const std::filesystem::path& p);

}  // namespace losslens::testing
