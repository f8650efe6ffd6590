#pragma once
// Runs an analyzer over a synthetic trace and filters its findings.

#include <algorithm>
#include <string>
#include <vector>

#include "losslens/analyzer.hpp"
#include "traces.hpp"

namespace losslens::traces {

inline std::vector<finding> analyze(const trace& t, detector_options o = {}) {
  analyzer a(t.schema, o);
  for (const auto& s : t.samples) a.observe(s);
  return a.findings();
}

inline std::vector<finding> of_kind(const std::vector<finding>& fs, const std::string& kind) {
  std::vector<finding> out;
  std::copy_if(fs.begin(), fs.end(), std::back_inserter(out),
               [&](const finding& f) { return f.kind == kind; });
  return out;
}

inline std::vector<finding> at_least(const std::vector<finding>& fs, severity level) {
  std::vector<finding> out;
  std::copy_if(fs.begin(), fs.end(), std::back_inserter(out),
               [&](const finding& f) { return f.level >= level; });
  return out;
}

}  // namespace losslens::traces
