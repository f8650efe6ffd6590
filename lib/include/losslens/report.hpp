#pragma once
/// \file report.hpp
/// Human-readable and JSON renderings of a list of findings.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "losslens/finding.hpp"

namespace losslens {

/// A readable report: one block per finding (severity, kind, steps, series, message, evidence,
/// advice), or a line saying there are none. `steps` is the number of samples analysed.
std::string format_findings_text(const std::vector<finding>& findings, std::int64_t steps);

/// {"findings":[to_json(f)...],"steps":steps}
nlohmann::json findings_report_json(const std::vector<finding>& findings, std::int64_t steps);

/// The most severe level among the findings, or -1 when there are none.
int worst_severity(const std::vector<finding>& findings) noexcept;

}  // namespace losslens
