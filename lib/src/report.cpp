#include "losslens/report.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <utility>

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

std::string format_episodes_text(const finding& f, std::string_view indent) {
  std::string out;
  if (f.spans.empty() && f.episodes <= 1) return out;  // the finding's own steps, nothing kept
  const auto kept = static_cast<std::int64_t>(f.spans.size());
  const std::int64_t missing = std::max<std::int64_t>(0, f.episodes - kept);
  // Kept: the first max_spans / 2 episodes, then the latest ones.
  const std::int64_t head =
      missing > 0 ? std::min<std::int64_t>(kept, finding::max_spans / 2) : kept;
  for (std::int64_t i = 0; i < kept; ++i) {
    if (i == head && missing > 0) {
      out += std::string(indent) + "... " + std::to_string(missing) + " episode" +
             (missing == 1 ? "" : "s") + " not kept (episode" + (missing == 1 ? " " : "s ") +
             std::to_string(head + 1);
      if (missing > 1) out += "-" + std::to_string(head + missing);
      out += ")\n";
    }
    const auto& s = f.spans[static_cast<std::size_t>(i)];
    const auto number = i < head ? i + 1 : i + 1 + missing;
    out += std::string(indent) + "episode " + std::to_string(number) + ": steps " +
           std::to_string(s.first_step);
    if (s.last_step != s.first_step) out += "-" + std::to_string(s.last_step);
    out += " " + std::string(to_string(s.level));
    if (!std::isnan(s.peak)) out += " peak " + number_text(s.peak);
    out += "\n";
  }
  if (head == kept && missing > 0)  // none, or only the first ones, were kept
    out += std::string(indent) + "... " + std::to_string(missing) + (kept > 0 ? " later" : "") +
           " episode" + (missing == 1 ? "" : "s") + " not kept\n";
  return out;
}

bool report_extent::every_step() const noexcept {
  std::int64_t span = 0;
  // rows == last - first + 1, without overflow on extreme steps
  return rows <= 1 || (!__builtin_sub_overflow(last_step, first_step, &span) && span == rows - 1);
}

std::string extent_text(const report_extent& extent) {
  const std::int64_t n = extent.rows;
  if (extent.every_step()) return std::to_string(n) + (n == 1 ? " step" : " steps");
  return std::to_string(n) + " rows over steps " + std::to_string(extent.first_step) + "-" +
         std::to_string(extent.last_step);
}

std::string format_findings_text(const std::vector<finding>& findings, const report_extent& extent,
                                 bool all_episodes) {
  std::string out;
  const std::string in_steps = " in " + extent_text(extent);
  if (findings.empty()) return "no findings" + in_steps + "\n";
  // A finding that is another sign of a listed incident goes under it, not on its own.
  std::vector<finding_ref> refs;
  refs.reserve(findings.size());
  for (const auto& f : findings) refs.push_back({0, f.id, f.symptom_of_id});
  const finding_nesting nest = nest_findings(refs);
  const std::size_t top = nest.incidents;
  out = std::to_string(top) + " finding" + (top == 1 ? "" : "s") + in_steps;
  if (top != findings.size()) {
    const std::size_t signs = findings.size() - top;
    out += " (and " + std::to_string(signs) + " listed as another sign of one of them)";
  }
  out += "\n";
  for (std::size_t i = 0; i < findings.size(); ++i) {
    if (nest.host[i] != finding_nesting::none) continue;
    const finding& f = findings[i];
    out += "\n";
    std::string level(to_string(f.level));
    for (auto& c : level) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    out += level + "  " + f.kind + "  steps " + std::to_string(f.first_step);
    if (f.last_step != f.first_step) out += "-" + std::to_string(f.last_step);
    out += "  " + f.series;
    if (f.episodes > 1) out += "  (" + std::to_string(f.episodes) + " episodes)";
    out += "\n";
    out += "  " + f.message + "\n";
    out += format_relations_text(f, "  ");
    for (std::size_t j : nest.signs[i]) out += "  also: " + symptom_line(findings[j]) + "\n";
    if (!f.evidence.empty()) {
      out += "  evidence:";
      for (const auto& [k, v] : f.evidence) out += " " + k + "=" + number_text(v);
      out += "\n";
    }
    out += "  rule: " + f.rule.name;
    for (const auto& [k, v] : f.rule.params) out += " " + k + "=" + number_text(v);
    out += "\n";
    out += "  fix: " + f.advice + "\n";
    if (all_episodes) {
      out += format_episodes_text(f, "  ");
      for (std::size_t j : nest.signs[i]) {
        const std::string lines = format_episodes_text(findings[j], "    ");
        if (!lines.empty()) out += "  " + findings[j].kind + ":\n" + lines;
      }
    }
  }
  return out;
}

std::string format_relations_text(const finding& f, std::string_view indent, std::string_view end) {
  std::string out;
  if (!f.cause.empty()) out.append(indent).append("preceded by: ").append(f.cause).append(end);
  if (!f.symptom_of.empty())
    out.append(indent).append("another sign of ").append(f.symptom_of).append(end);
  return out;
}

std::string symptom_line(const finding& f) {
  std::string out =
      std::string(to_string(f.level)) + " " + f.kind + " at steps " + std::to_string(f.first_step);
  if (f.last_step != f.first_step) out += "-" + std::to_string(f.last_step);
  out += " (" + f.series + "): " + f.message;
  return out;
}

nlohmann::json findings_report_json(const std::vector<finding>& findings, std::int64_t steps) {
  auto arr = nlohmann::json::array();
  for (const auto& f : findings) arr.push_back(to_json(f));
  return {{"findings", std::move(arr)}, {"steps", steps}};
}

finding_nesting nest_findings(const std::vector<finding_ref>& refs) {
  finding_nesting n;
  n.host.assign(refs.size(), finding_nesting::none);
  n.signs.resize(refs.size());
  std::map<std::pair<std::int64_t, std::uint64_t>, std::size_t> index;
  for (std::size_t i = 0; i < refs.size(); ++i)
    index.emplace(std::pair(refs[i].group, refs[i].id), i);
  for (std::size_t i = 0; i < refs.size(); ++i) {
    if (refs[i].symptom_of_id == 0) continue;
    const auto it = index.find({refs[i].group, refs[i].symptom_of_id});
    if (it == index.end() || it->second == i) continue;
    n.host[i] = it->second;
    n.signs[it->second].push_back(i);
  }
  for (std::size_t h : n.host) n.incidents += h == finding_nesting::none ? 1 : 0;
  return n;
}

int worst_severity(const std::vector<finding>& findings) noexcept {
  int worst = -1;
  for (const auto& f : findings) worst = std::max(worst, static_cast<int>(f.level));
  return worst;
}

}  // namespace losslens
