#include "args.hpp"

#include <algorithm>
#include <charconv>

namespace losslens::cli {

std::string parsed_args::get(std::string_view name, std::string_view fallback) const {
  auto it = options.find(name);
  return it == options.end() ? std::string(fallback) : it->second;
}

std::vector<std::string> parsed_args::all(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [n, v] : ordered)
    if (n == name) out.push_back(v);
  return out;
}

std::int64_t parsed_args::get_int(std::string_view name, std::int64_t fallback, std::int64_t lo,
                                  std::int64_t hi) const {
  auto it = options.find(name);
  if (it == options.end()) return fallback;
  return parse_int(it->second, "--" + std::string(name), lo, hi);
}

std::int64_t parse_int(std::string_view text, std::string_view what, std::int64_t lo,
                       std::int64_t hi) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || p != text.data() + text.size() || text.empty())
    throw usage_error(std::string(what) + " expects a whole number, got '" + std::string(text) +
                      "'");
  if (v < lo || v > hi)
    throw usage_error(std::string(what) + " must be between " + std::to_string(lo) + " and " +
                      std::to_string(hi) + ", got " + std::to_string(v));
  return v;
}

parsed_args parse_args(int argc, char** argv, int first,
                       const std::vector<std::string_view>& value_options,
                       const std::vector<std::string_view>& flag_options) {
  parsed_args out;
  auto known = [](const std::vector<std::string_view>& v, std::string_view n) {
    return std::find(v.begin(), v.end(), n) != v.end();
  };
  bool only_positional = false;
  for (int i = first; i < argc; ++i) {
    std::string_view a = argv[i];
    if (only_positional || a.size() < 2 || a.substr(0, 2) != "--") {
      out.positional.emplace_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }
    std::string_view name = a.substr(2);
    std::string_view value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (known(flag_options, name)) {
      if (has_value) throw usage_error("--" + std::string(name) + " takes no value");
      out.flags.emplace(name);
    } else if (known(value_options, name)) {
      if (!has_value) {
        if (i + 1 >= argc) throw usage_error("--" + std::string(name) + " needs a value");
        value = argv[++i];
      }
      out.options[std::string(name)] = std::string(value);
      out.ordered.emplace_back(std::string(name), std::string(value));
    } else {
      throw usage_error("unknown option --" + std::string(name));
    }
  }
  return out;
}

}  // namespace losslens::cli
