#pragma once
// Small ASCII text helpers shared by the readers (CSV headers, tag names).

#include <algorithm>
#include <cctype>
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

}  // namespace losslens::core::detail
