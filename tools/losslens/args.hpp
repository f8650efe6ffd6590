#pragma once
// Command-line parsing shared by the losslens subcommands.

#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace losslens::cli {

/// Bad command-line usage; main() prints it with the command's usage and exits 2.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Arguments after the subcommand name: positionals, `--name value` (or `--name=value`) options,
/// and `--flag` switches. Unknown options are usage errors.
struct parsed_args {
  std::vector<std::string> positional;
  std::map<std::string, std::string, std::less<>> options;
  std::set<std::string, std::less<>> flags;
  /// Every option in command-line order, repeats included (options keeps the last of each).
  std::vector<std::pair<std::string, std::string>> ordered;

  bool has(std::string_view flag) const { return flags.count(flag) != 0; }
  /// The option's value, or fallback when absent.
  std::string get(std::string_view name, std::string_view fallback = {}) const;
  /// Every value given to the option, in order (for options that may repeat).
  std::vector<std::string> all(std::string_view name) const;
  /// The option as an integer in [lo, hi], or fallback when absent; throws usage_error.
  std::int64_t get_int(std::string_view name, std::int64_t fallback, std::int64_t lo,
                       std::int64_t hi) const;
};

/// Parses argv[first..argc). value_options take a value; flag_options do not.
parsed_args parse_args(int argc, char** argv, int first,
                       const std::vector<std::string_view>& value_options,
                       const std::vector<std::string_view>& flag_options);

/// Parses a whole decimal integer in [lo, hi]; throws usage_error naming `what`.
std::int64_t parse_int(std::string_view text, std::string_view what, std::int64_t lo,
                       std::int64_t hi);

}  // namespace losslens::cli
