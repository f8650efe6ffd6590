#include "temp_dir.hpp"

#include <stdlib.h>

#include <cerrno>
#include <system_error>

namespace losslens::testing {

temp_dir::temp_dir(const std::string& prefix) {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / ("losslens-" + prefix + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw std::filesystem::filesystem_error("mkdtemp", tmpl,
                                            std::error_code(errno, std::generic_category()));
  path = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  // A test may have made the directory read-only; removal must still work.
  std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::add, ec);
  std::filesystem::remove_all(path, ec);
}

std::string temp_dir::file(const char* name) const { return (path / name).string(); }

}  // namespace losslens::testing
