#pragma once
/// \file finding.hpp
/// A diagnosed pathology: what, where, the numbers behind it and what to change.

#include <cstddef>
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

/// One stretch of steps over which a detector's condition held (with the detector's own gap
/// allowance). An incident lists the episodes it merged.
struct episode_span {
  std::int64_t first_step = 0;
  std::int64_t last_step = 0;
  losslens::severity level = severity::warning;
  double peak = 0;  ///< the detector's own measure of how bad the episode was (NaN if none)
};

/// One incident of one pathology on one series: every episode of the same kind on the same
/// series within a run is merged into one finding, which grows (last_step, episodes, evidence)
/// while the run goes on; its id stays the same. first_step is the first episode's onset, the
/// evidence, message and advice those of the worst episode so far.
struct finding {
  /// Most spans kept per incident: the first max_spans / 2 and the latest max_spans / 2;
  /// `episodes` still counts every one.
  static constexpr std::size_t max_spans = 64;

  std::uint64_t id = 0;  ///< unique within one run (one router), stable across updates
  std::string kind;      ///< e.g. "loss_spike"; see docs/detectors.md
  losslens::severity level = severity::warning;
  std::int64_t first_step = 0;  ///< first step the episode covers
  std::int64_t last_step = 0;   ///< last step the episode covers (grows)
  std::string series;           ///< e.g. "loss", "loss/cls", "grad_norm/fc1.weight"
  rule_info rule;
  std::vector<named_number> evidence;  ///< the numbers that triggered it (NaN/Inf allowed)
  std::string message;                 ///< what happened, with numbers
  std::string advice;                  ///< the concrete remedy
  std::int64_t episodes = 1;           ///< episodes merged into this incident
  std::vector<episode_span> spans;     ///< those episodes (see max_spans); empty = one episode
                                       ///< covering first_step..last_step
  std::uint64_t cause_id = 0;          ///< id of the earlier incident this one follows (0 = none;
                                       ///< never the incident it is a sign of, symptom_of_id,
                                       ///< nor another sign of it)
  std::string cause;                   ///< that incident in a few words, e.g. "task_dominance at
                                       ///< step 0 (recon is 99.98% of the loss)"; empty = none
  /// id of the incident this one is another sign of (0 = none): the same state of the model
  /// seen by another rule at about the same time, e.g. chance_level and constant_predictions
  /// beside the vanishing_gradients of one collapse (see finding_router). Listings show such
  /// a finding under that incident instead of as an incident of its own.
  std::uint64_t symptom_of_id = 0;
  std::string symptom_of;  ///< that incident in a few words, as `cause`; empty = none

  /// Evidence value by name, or NaN if absent.
  double evidence_value(std::string_view name) const noexcept;
  /// Sets (adds or replaces) an evidence value.
  void set_evidence(std::string_view name, double value);
};

/// JSON for a finding: {"id","kind","severity","first_step","last_step","series",
/// "rule":{"name","params":{..}},"evidence":{..},"message","advice","episodes",
/// "spans":[{"first_step","last_step","severity","peak"}..],"cause_id","cause","symptom_of_id",
/// "symptom_of"}. Non-finite
/// numbers are written as the strings "nan", "inf" and "-inf" so the JSON stays valid.
/// Thread-safe (reads only f); throws nothing but std::bad_alloc.
nlohmann::json to_json(const finding& f);
/// Inverse of to_json; JSON without "episodes", "spans", "cause_id" or "cause" (written
/// before incidents) reads as one episode, no spans, no cause; without "symptom_of_id" as an
/// incident of its own. Throws losslens::error on a
/// malformed object (a missing kind/severity/step, a bad number, episodes < 1).
finding finding_from_json(const nlohmann::json& j);
/// A number as JSON: finite numbers as numbers, others as "nan", "inf", "-inf".
nlohmann::json json_number(double v);
/// Inverse of json_number (accepts numbers and those three strings); throws losslens::error.
double number_from_json(const nlohmann::json& j);

}  // namespace losslens
