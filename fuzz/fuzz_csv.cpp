// Fuzz target: `losslens analyze` end to end on arbitrary bytes as the CSV: csv_reader, then
// the analyzer (every detector) and both reports.
// Invariants: the reader parses or throws losslens::error ("NAME:LINE: reason"), nothing else
// escapes; parsed rows have increasing steps and one slot per task/parameter of the header;
// the JSON report is valid JSON.

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "losslens/analyzer.hpp"
#include "losslens/csv_reader.hpp"
#include "losslens/error.hpp"
#include "losslens/report.hpp"

using losslens::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    losslens::csv_reader reader(in, "fuzz.csv");
    losslens::detector_options opts;
    opts.chance_level.num_classes = 10;  // as `--classes 10`: the chance-level rule runs too
    losslens::analyzer a(reader.schema(), opts);
    losslens::sample s;
    bool have_prev = false;
    std::int64_t prev = 0, prev_line = reader.line();
    while (reader.next(s)) {
      require(!have_prev || s.step > prev, "steps must increase");
      require(s.task_losses.size() == reader.schema().tasks.size(), "one slot per task");
      require(s.param_grad_norms.size() == reader.schema().params.size(), "one slot per param");
      require(reader.line() > prev_line, "line numbers increase");
      have_prev = true;
      prev = s.step;
      prev_line = reader.line();
      a.observe(s);
    }
    a.flush();
    const auto report = losslens::findings_report_json(a.findings(), a.steps());
    losslens::fuzz::require_json(
        report.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "analyze --json");
    (void)losslens::format_findings_text(a.findings(), a.steps(), /*all_episodes=*/true);
    // Every finding survives its JSON: what storage and the dashboard read back.
    for (const auto& f : a.findings()) (void)losslens::finding_from_json(losslens::to_json(f));
  } catch (const losslens::error& e) {
    // "fuzz.csv:LINE: reason", LINE >= 1
    const std::string_view what = e.what(), name = "fuzz.csv:";
    std::size_t i = name.size();
    while (i < what.size() && what[i] >= '0' && what[i] <= '9') ++i;
    require(what.substr(0, name.size()) == name && i > name.size() &&
                what[name.size()] != '0' && what.substr(i, 2) == ": ",
            "errors start with NAME:LINE: ");
  }
  return 0;
}
