#pragma once
// Small ASCII text helpers shared by the readers (CSV headers and cells, tag names, MLflow's
// metric files).

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>

namespace losslens::core::detail {

/// ASCII lower case (names and tags are compared case-insensitively).
inline std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

/// ASCII case-insensitive equality.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

/// Parses a number: decimal or exponent notation, or nan/inf/-inf (any case, also "infinity":
/// what Python's str(float) and C's printf write). Out of range: +-Inf or 0, as strtod.
/// Always inlined: it is most of a CSV cell's reading, and the call was 3% of csv_reader's time.
__attribute__((always_inline)) inline bool parse_double(std::string_view s, double& v) {
  // The common cell first: a plain unsigned decimal (from_chars takes no sign, no "inf").
  if (!s.empty() && (std::isdigit(static_cast<unsigned char>(s.front())) || s.front() == '.')) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc{} && p == s.data() + s.size()) return true;
  }
  std::string_view body = s;
  bool neg = false;
  if (!body.empty() && (body.front() == '+' || body.front() == '-')) {
    neg = body.front() == '-';
    body.remove_prefix(1);
  }
  if (iequals(body, "nan")) {
    v = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  if (iequals(body, "inf") || iequals(body, "infinity")) {
    v = neg ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    return true;
  }
  if (body.empty() ||
      !(std::isdigit(static_cast<unsigned char>(body.front())) || body.front() == '.'))
    return false;
  auto [p, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
  if (p != body.data() + body.size()) return false;
  if (ec == std::errc::result_out_of_range) {
    // from_chars leaves v unset on overflow/underflow; strtod gives +-HUGE_VAL (Inf) or 0.
    v = std::strtod(std::string(body).c_str(), nullptr);
  } else if (ec != std::errc{}) {
    return false;
  }
  if (neg) v = -v;
  return true;
}

}  // namespace losslens::core::detail
