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
  explicit temp_dir(const std::string& prefix = "test") {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / ("losslens-" + prefix + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr)
      throw std::filesystem::filesystem_error("mkdtemp", tmpl,
                                              std::error_code(errno, std::generic_category()));
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    // A test may have made the directory read-only; removal must still work.
    std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  std::string file(const char* name) const { return (path / name).string(); }
};

}  // namespace losslens::testing
