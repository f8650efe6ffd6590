#include "run_trace.hpp"

#include <algorithm>
#include <iterator>

namespace losslens::traces {

std::vector<finding> analyze(const trace& t, detector_options o) {
  analyzer a(t.schema, o);
  for (const auto& s : t.samples) a.observe(s);
  return a.findings();
}

std::vector<finding> of_kind(const std::vector<finding>& fs, const std::string& kind) {
  std::vector<finding> out;
  std::copy_if(fs.begin(), fs.end(), std::back_inserter(out),
               [&](const finding& f) { return f.kind == kind; });
  return out;
}

std::vector<finding> at_least(const std::vector<finding>& fs, severity level) {
  std::vector<finding> out;
  std::copy_if(fs.begin(), fs.end(), std::back_inserter(out),
               [&](const finding& f) { return f.level >= level; });
  return out;
}

}  // namespace losslens::traces
