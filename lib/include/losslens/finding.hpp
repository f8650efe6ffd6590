#pragma once
/// \file finding.hpp
/// A diagnosed pathology: what, where, the numbers behind it and what to change.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace losslens {

/// How bad a finding is. Healthy runs produce no warning or error.
enum class severity { info = 0, warning = 1, error = 2 };

/// "info", "warning" or "error".
std::string_view to_string(severity s) noexcept;
/// Parses "info", "warning" or "error"; throws losslens::error otherwise.
severity parse_severity(std::string_view s);

/// A named number, as used for rule parameters and evidence.
using named_number = std::pair<std::string, double>;

/// The rule that produced a finding: its name and the parameter values it ran with.
struct rule_info {
  std::string name;
  std::vector<named_number> params;
};

/// One episode of one pathology. An episode is reported once and then grows: last_step and the
/// evidence are updated while the condition persists, and the id stays the same.
struct finding {
  std::uint64_t id = 0;          ///< unique within one analyzer (or run), stable across updates
  std::string kind;              ///< e.g. "loss_spike"; see docs/detectors.md
  losslens::severity level = severity::warning;
  std::int64_t first_step = 0;   ///< first step the episode covers
  std::int64_t last_step = 0;    ///< last step the episode covers (grows)
  std::string series;            ///< e.g. "loss", "loss/cls", "grad_norm/fc1.weight"
  rule_info rule;
  std::vector<named_number> evidence;  ///< the numbers that triggered it (NaN/Inf allowed)
  std::string message;           ///< what happened, with numbers
  std::string advice;            ///< the concrete remedy

  /// Evidence value by name, or NaN if absent.
  double evidence_value(std::string_view name) const noexcept;
  /// Sets (adds or replaces) an evidence value.
  void set_evidence(std::string_view name, double value);
};

/// JSON for a finding: {"id","kind","severity","first_step","last_step","series",
/// "rule":{"name","params":{..}},"evidence":{..},"message","advice"}. Non-finite numbers are
/// written as the strings "nan", "inf" and "-inf" so the JSON stays valid.
nlohmann::json to_json(const finding& f);
/// Inverse of to_json; throws losslens::error on a malformed object.
finding finding_from_json(const nlohmann::json& j);
/// A number as JSON: finite numbers as numbers, others as "nan", "inf", "-inf".
nlohmann::json json_number(double v);
/// Inverse of json_number (accepts numbers and those three strings); throws losslens::error.
double number_from_json(const nlohmann::json& j);

}  // namespace losslens
