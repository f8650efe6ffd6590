#include "losslens/finding.hpp"

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "losslens/error.hpp"

namespace losslens {

std::string_view to_string(severity s) noexcept {
  switch (s) {
    case severity::info:
      return "info";
    case severity::warning:
      return "warning";
    case severity::error:
      return "error";
  }
  return "unknown";
}

severity parse_severity(std::string_view s) {
  if (s == "info") return severity::info;
  if (s == "warning") return severity::warning;
  if (s == "error") return severity::error;
  throw error("unknown severity '" + std::string(s) + "': use info, warning or error");
}

double finding::evidence_value(std::string_view name) const noexcept {
  // From the back: names are unique, and the values a rule updates at every step of an open
  // episode are the last it added.
  for (auto it = evidence.rbegin(); it != evidence.rend(); ++it)
    if (it->first == name) return it->second;
  return std::numeric_limits<double>::quiet_NaN();
}

void finding::set_evidence(std::string_view name, double value) {
  for (auto it = evidence.rbegin(); it != evidence.rend(); ++it)
    if (it->first == name) {
      it->second = value;
      return;
    }
  evidence.emplace_back(std::string(name), value);
}

nlohmann::json json_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

double number_from_json(const nlohmann::json& j) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  throw error("expected a number or \"nan\"/\"inf\"/\"-inf\" in finding JSON, got " + j.dump());
}

namespace {
nlohmann::json numbers_to_json(const std::vector<named_number>& v) {
  auto o = nlohmann::json::object();
  for (const auto& [k, x] : v) o[k] = json_number(x);
  return o;
}
std::vector<named_number> numbers_from_json(const nlohmann::json& j) {
  std::vector<named_number> out;
  if (!j.is_object()) throw error("finding JSON: expected an object of numbers, got " + j.dump());
  for (const auto& [k, v] : j.items()) out.emplace_back(k, number_from_json(v));
  return out;
}
nlohmann::json spans_to_json(const std::vector<episode_span>& spans) {
  auto a = nlohmann::json::array();
  for (const auto& s : spans)
    a.push_back({{"first_step", s.first_step},
                 {"last_step", s.last_step},
                 {"severity", std::string(to_string(s.level))},
                 {"peak", json_number(s.peak)}});
  return a;
}
std::vector<episode_span> spans_from_json(const nlohmann::json& j) {
  if (!j.is_array()) throw error("finding JSON: \"spans\" must be an array, got " + j.dump());
  std::vector<episode_span> out;
  out.reserve(j.size());
  for (const auto& s : j) {
    episode_span e;
    e.first_step = s.at("first_step").get<std::int64_t>();
    e.last_step = s.at("last_step").get<std::int64_t>();
    e.level = parse_severity(s.at("severity").get<std::string>());
    e.peak =
        s.contains("peak") ? number_from_json(s["peak"]) : std::numeric_limits<double>::quiet_NaN();
    out.push_back(e);
  }
  return out;
}
}  // namespace

nlohmann::json to_json(const finding& f) {
  // ordered_json would keep insertion order; plain json sorts keys, which is stable and fine.
  return {{"id", f.id},
          {"kind", f.kind},
          {"severity", std::string(to_string(f.level))},
          {"first_step", f.first_step},
          {"last_step", f.last_step},
          {"series", f.series},
          {"rule", {{"name", f.rule.name}, {"params", numbers_to_json(f.rule.params)}}},
          {"evidence", numbers_to_json(f.evidence)},
          {"message", f.message},
          {"advice", f.advice},
          {"episodes", f.episodes},
          {"spans", spans_to_json(f.spans)},
          {"cause_id", f.cause_id},
          {"cause", f.cause},
          {"symptom_of_id", f.symptom_of_id},
          {"symptom_of", f.symptom_of}};
}

finding finding_from_json(const nlohmann::json& j) {
  try {
    finding f;
    f.id = j.value("id", std::uint64_t{0});
    f.kind = j.at("kind").get<std::string>();
    f.level = parse_severity(j.at("severity").get<std::string>());
    f.first_step = j.at("first_step").get<std::int64_t>();
    f.last_step = j.at("last_step").get<std::int64_t>();
    f.series = j.value("series", std::string{});
    if (j.contains("rule")) {
      f.rule.name = j["rule"].value("name", std::string{});
      if (j["rule"].contains("params")) f.rule.params = numbers_from_json(j["rule"]["params"]);
    }
    if (j.contains("evidence")) f.evidence = numbers_from_json(j["evidence"]);
    f.message = j.value("message", std::string{});
    f.advice = j.value("advice", std::string{});
    // Written before incidents (schema version 1 bodies): one episode, no spans, no cause.
    f.episodes = j.value("episodes", std::int64_t{1});
    if (f.episodes < 1)
      throw error("finding JSON: \"episodes\" must be at least 1, got " +
                  std::to_string(f.episodes));
    if (j.contains("spans")) f.spans = spans_from_json(j["spans"]);
    f.cause_id = j.value("cause_id", std::uint64_t{0});
    f.cause = j.value("cause", std::string{});
    f.symptom_of_id = j.value("symptom_of_id", std::uint64_t{0});
    f.symptom_of = j.value("symptom_of", std::string{});
    return f;
  } catch (const nlohmann::json::exception& e) {
    throw error(std::string("malformed finding JSON: ") + e.what());
  }
}

}  // namespace losslens
