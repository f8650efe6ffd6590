#pragma once
// What every example prints at the end.

#include <cstdint>
#include <string>
#include <vector>

#include "losslens/finding.hpp"

namespace losslens::examples {

/// Prints the readable report of the findings and, when json_path is not empty, writes
/// {"findings":[...],"steps":N} there. Throws losslens::error when the file cannot be written.
void report_findings(const std::vector<finding>& findings, std::int64_t steps,
                     const std::string& json_path);

}  // namespace losslens::examples
