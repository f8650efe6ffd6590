#include "child_functions.hpp"

#include <unistd.h>

#include <cstdio>
#include <exception>
#include <map>
#include <stdexcept>
#include <string_view>

namespace losslens::testing {

namespace {

constexpr std::string_view child_flag = "--losslens-child";

std::map<std::string, child_function>& registry() {
  static std::map<std::string, child_function> functions;
  return functions;
}

/// This executable's path, resolved once (not the /proc link: the child's argv[0] and `ps`
/// show the real binary).
std::string self_path() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw std::runtime_error("cannot read /proc/self/exe");
  return std::string(buf, std::size_t(n));
}

}  // namespace

child_function_entry::child_function_entry(const char* name, child_function fn) {
  registry().emplace(name, fn);
}

std::optional<int> run_child_function(int argc, char** argv) {
  if (argc < 3 || argv[1] != child_flag) return std::nullopt;
  const auto it = registry().find(argv[2]);
  if (it == registry().end()) {
    std::fprintf(stderr, "%s: no child function '%s'\n", argv[0], argv[2]);
    return 127;
  }
  try {
    return it->second(std::vector<std::string>(argv + 3, argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child function %s: %s\n", argv[2], e.what());
    return 125;
  }
}

child_process spawn_child_function(const std::string& name, const std::vector<std::string>& args,
                                   child_options options) {
  std::vector<std::string> all{std::string(child_flag), name};
  all.insert(all.end(), args.begin(), args.end());
  return child_process(self_path(), std::move(all), std::move(options));
}

}  // namespace losslens::testing
