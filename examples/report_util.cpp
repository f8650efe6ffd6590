#include "report_util.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "losslens/error.hpp"
#include "losslens/report.hpp"

namespace losslens::examples {

void report_findings(const std::vector<finding>& findings, std::int64_t steps,
                     const std::string& json_path) {
  std::fputs(format_findings_text(findings, steps).c_str(), stdout);
  if (json_path.empty()) return;
  std::FILE* f = std::fopen(json_path.c_str(), "w");
  if (!f) throw error("cannot write " + json_path);
  const std::string text = findings_report_json(findings, steps).dump(2);
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) throw error("cannot write " + json_path);
}

}  // namespace losslens::examples
