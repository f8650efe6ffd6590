#pragma once
// Invariant checks for the fuzz targets: a broken invariant aborts, which libFuzzer reports as a
// crash (and the replay tests as a failed test) with the input that caused it.

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

namespace losslens::fuzz {

/// Aborts with `what` when ok is false.
inline void require(bool ok, std::string_view what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz invariant broken: %.*s\n", int(what.size()), what.data());
  std::abort();
}

/// Aborts unless text is valid JSON (strict: nlohmann's parser also rejects invalid UTF-8).
inline void require_json(std::string_view text, std::string_view what) {
  if (nlohmann::json::accept(text.begin(), text.end())) return;
  std::fprintf(stderr, "not valid JSON (%.*s): %.*s\n", int(what.size()), what.data(),
               int(text.size() > 2000 ? 2000 : text.size()), text.data());
  std::abort();
}

/// True when s is valid UTF-8 (what nlohmann's strict dump accepts).
inline bool valid_utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace losslens::fuzz
