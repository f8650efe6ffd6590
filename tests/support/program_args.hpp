#pragma once
// Command-line flags of the small programs in bench/, examples/, tests/ and fuzz/: `--name
// VALUE` (or `--name=VALUE`) options, `--flag` switches and plain arguments. `--help` or `-h`
// prints the usage on stdout and exits 0; an unknown flag, a missing or malformed value or an
// extra argument prints what is wrong and the usage on stderr and exits 2, before the program
// does anything. (The losslens CLI has its own parser: tools/losslens/args.hpp.)

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace losslens::testing {

class program_args {
 public:
  /// Parses argv[1..argc). options take a value, switches do not (names without "--");
  /// at most max_positional plain arguments. Exits as described above. usage must outlive it.
  program_args(int argc, char** argv, std::string_view usage, std::vector<std::string_view> options,
               std::vector<std::string_view> switches = {}, std::size_t max_positional = 0);

  /// Whether the switch or option was given.
  bool has(std::string_view name) const;
  /// The option's value, or fallback.
  std::string text(std::string_view name, std::string fallback = {}) const;
  /// The option as a whole number in [lo, hi], or fallback; anything else exits 2.
  std::int64_t integer(std::string_view name, std::int64_t fallback, std::int64_t lo,
                       std::int64_t hi) const;
  /// The option as a number in [lo, hi], or fallback; anything else exits 2.
  double number(std::string_view name, double fallback, double lo, double hi) const;
  /// Plain arguments, in order.
  const std::vector<std::string>& positional() const noexcept { return positional_; }
  /// Plain argument i as a whole number in [lo, hi], or fallback when absent.
  std::int64_t positional_integer(std::size_t i, std::int64_t fallback, std::int64_t lo,
                                  std::int64_t hi) const;

  /// A usage error found after parsing (e.g. a required option missing): exits 2.
  [[noreturn]] void fail(const std::string& why) const;

 private:
  std::int64_t parse_integer(const std::string& t, const std::string& what, std::int64_t lo,
                             std::int64_t hi) const;

  std::string program_;
  std::string_view usage_;
  std::map<std::string, std::string> values_;
  std::set<std::string> switches_;
  std::vector<std::string> positional_;
};

}  // namespace losslens::testing
