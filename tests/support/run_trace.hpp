#pragma once
// Runs an analyzer over a synthetic trace and filters its findings.

#include <algorithm>
#include <string>
#include <vector>

#include "losslens/analyzer.hpp"
#include "traces.hpp"

namespace losslens::traces {

/// The findings of an analyzer with options o after every sample of t.
std::vector<finding> analyze(const trace& t, detector_options o = {});

/// The findings of that kind.
std::vector<finding> of_kind(const std::vector<finding>& fs, const std::string& kind);

/// The findings of that severity or worse.
std::vector<finding> at_least(const std::vector<finding>& fs, severity level);

}  // namespace losslens::traces
