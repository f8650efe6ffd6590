#include "losslens/report.hpp"

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace losslens {

namespace {
std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}
}  // namespace

std::string format_findings_text(const std::vector<finding>& findings, std::int64_t steps) {
  std::string out;
  if (findings.empty()) {
    out = "no findings in " + std::to_string(steps) + " steps\n";
    return out;
  }
  out = std::to_string(findings.size()) + " finding" + (findings.size() == 1 ? "" : "s") +
        " in " + std::to_string(steps) + " steps\n";
  for (const auto& f : findings) {
    out += "\n";
    std::string level(to_string(f.level));
    for (auto& c : level) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    out += level + "  " + f.kind + "  steps " + std::to_string(f.first_step);
    if (f.last_step != f.first_step) out += "-" + std::to_string(f.last_step);
    out += "  " + f.series + "\n";
    out += "  " + f.message + "\n";
    if (!f.evidence.empty()) {
      out += "  evidence:";
      for (const auto& [k, v] : f.evidence) out += " " + k + "=" + number_text(v);
      out += "\n";
    }
    out += "  rule: " + f.rule.name;
    for (const auto& [k, v] : f.rule.params) out += " " + k + "=" + number_text(v);
    out += "\n";
    out += "  fix: " + f.advice + "\n";
  }
  return out;
}

nlohmann::json findings_report_json(const std::vector<finding>& findings, std::int64_t steps) {
  auto arr = nlohmann::json::array();
  for (const auto& f : findings) arr.push_back(to_json(f));
  return {{"findings", std::move(arr)}, {"steps", steps}};
}

int worst_severity(const std::vector<finding>& findings) noexcept {
  int worst = -1;
  for (const auto& f : findings) worst = std::max(worst, static_cast<int>(f.level));
  return worst;
}

}  // namespace losslens
