#pragma once
// A fresh directory for a test or bench, removed with everything in it on destruction.

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace losslens::testing {

struct temp_dir {
  std::filesystem::path path;

  /// Creates <temp>/losslens-<prefix>-XXXXXX (unique; safe with tests running in parallel).
  /// Throws std::filesystem::filesystem_error.
  explicit temp_dir(const std::string& prefix = "test");
  /// Removes the directory, also when a test made it read-only.
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  /// path / name as a string.
  std::string file(const char* name) const;
};

}  // namespace losslens::testing
