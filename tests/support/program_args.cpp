#include "program_args.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>

namespace losslens::testing {

program_args::program_args(int argc, char** argv, std::string_view usage,
                           std::vector<std::string_view> options,
                           std::vector<std::string_view> switches, std::size_t max_positional)
    : program_(argc > 0 ? argv[0] : "program"), usage_(usage) {
  if (auto slash = program_.rfind('/'); slash != std::string::npos) program_.erase(0, slash + 1);
  auto known = [](const std::vector<std::string_view>& names, std::string_view n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fwrite(usage_.data(), 1, usage_.size(), stdout);
      std::exit(0);
    }
  }
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (only_positional || a.size() < 2 || a[0] != '-') {
      if (positional_.size() >= max_positional)
        fail("unexpected argument '" + std::string(a) + "'");
      positional_.emplace_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }
    if (a.substr(0, 2) != "--") fail("unknown option " + std::string(a));
    std::string_view name = a.substr(2), value;
    const auto eq = name.find('=');
    if (eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (known(switches, name)) {
      if (eq != std::string_view::npos) fail("--" + std::string(name) + " takes no value");
      switches_.emplace(name);
    } else if (known(options, name)) {
      if (eq == std::string_view::npos) {
        if (i + 1 >= argc) fail("--" + std::string(name) + " needs a value");
        value = argv[++i];
      }
      values_[std::string(name)] = std::string(value);
    } else {
      fail("unknown option --" + std::string(name));
    }
  }
}

bool program_args::has(std::string_view name) const {
  return switches_.count(std::string(name)) != 0 || values_.count(std::string(name)) != 0;
}

std::string program_args::text(std::string_view name, std::string fallback) const {
  auto it = values_.find(std::string(name));
  return it == values_.end() ? fallback : it->second;
}

std::int64_t program_args::integer(std::string_view name, std::int64_t fallback, std::int64_t lo,
                                   std::int64_t hi) const {
  auto it = values_.find(std::string(name));
  return it == values_.end() ? fallback : parse_integer(it->second, "--" + it->first, lo, hi);
}

double program_args::number(std::string_view name, double fallback, double lo, double hi) const {
  auto it = values_.find(std::string(name));
  if (it == values_.end()) return fallback;
  const std::string& t = it->second;
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (t.empty() || *end != '\0' || !(v >= lo && v <= hi))
    fail("--" + it->first + " expects a number in [" + std::to_string(lo) + ", " +
         std::to_string(hi) + "], got '" + t + "'");
  return v;
}

std::int64_t program_args::positional_integer(std::size_t i, std::int64_t fallback, std::int64_t lo,
                                              std::int64_t hi) const {
  if (i >= positional_.size()) return fallback;
  return parse_integer(positional_[i], "argument " + std::to_string(i + 1), lo, hi);
}

void program_args::fail(const std::string& why) const {
  std::fprintf(stderr, "%s: %s\n\n", program_.c_str(), why.c_str());
  std::fwrite(usage_.data(), 1, usage_.size(), stderr);
  std::exit(2);
}

std::int64_t program_args::parse_integer(const std::string& t, const std::string& what,
                                         std::int64_t lo, std::int64_t hi) const {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc{} || p != t.data() + t.size() || v < lo || v > hi)
    fail(what + " expects a whole number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
         "], got '" + t + "'");
  return v;
}

}  // namespace losslens::testing
