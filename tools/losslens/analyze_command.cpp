// `losslens analyze`: run the detectors offline over a CSV of training numbers.

#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "args.hpp"
#include "commands.hpp"
#include "losslens/analyzer.hpp"
#include "losslens/csv_reader.hpp"
#include "losslens/error.hpp"
#include "losslens/report.hpp"

namespace losslens::cli {

// The --all text below names the spans kept per incident.
static_assert(finding::max_spans == 64, "update the --all text of analyze_usage and findings_usage");

const std::string_view analyze_usage =
    "usage: losslens analyze FILE.csv [--classes C] [--all] [--json] [--fail-on LEVEL]\n"
    "\n"
    "Runs every detector over a CSV of per-step training numbers and prints the findings.\n"
    "FILE may be - for standard input. A finding is an incident (every episode of one kind\n"
    "on one series), printed as one block; its first line counts the episodes when there are\n"
    "several, e.g.\n"
    "  WARNING  loss_spike  steps 377-15020  loss  (12 episodes)\n"
    "and a `preceded by:` line names the earlier incident it follows.\n"
    "\n"
    "CSV: a header row naming `step` (required, strictly increasing whole numbers) and any of\n"
    "  loss, loss/<task>, grad_norm, grad_norm/<name>, lr, accuracy, wall_time.\n"
    "  Empty cells are missing; nan, inf and -inf are values. Other columns are ignored.\n"
    "\n"
    "options:\n"
    "  --classes C      number of classes of a classification loss (2 = binary); enables the\n"
    "                   chance_level rule (loss stuck near ln C)\n"
    "  --all            also list each incident's episodes, one line each:\n"
    "                     episode 3: steps 900-912 warning peak 14.2\n"
    "                   (the first 32 and the latest 32 are kept; a line counts the others)\n"
    "  --json           print {\"findings\":[...],\"steps\":N} instead of the readable report\n"
    "                   (each finding with episodes, spans, cause_id and cause)\n"
    "  --fail-on LEVEL  exit 3 when a finding of LEVEL (info, warning, error) or worse exists\n"
    "\n"
    "exit status: 0 analysed, 1 unreadable or malformed file, 2 bad usage, 3 --fail-on hit\n";

int run_analyze(int argc, char** argv) {
  const auto args = parse_args(argc, argv, 1, {"classes", "fail-on"}, {"json", "all"});
  if (args.positional.size() != 1)
    throw usage_error(args.positional.empty() ? "missing FILE.csv" : "expected one FILE.csv");
  int fail_on = -1;
  if (auto lvl = args.get("fail-on"); !lvl.empty()) {
    try {
      fail_on = static_cast<int>(parse_severity(lvl));
    } catch (const error& e) {
      throw usage_error(std::string("--fail-on: ") + e.what());
    }
  }
  detector_options opts;
  opts.chance_level.num_classes =
      static_cast<int>(args.get_int("classes", 0, 2, 1'000'000'000));

  const std::string& path = args.positional[0];
  std::unique_ptr<csv_reader> reader = path == "-" ? std::make_unique<csv_reader>(std::cin, "<stdin>")
                                                   : std::make_unique<csv_reader>(path);
  for (const auto& w : reader->warnings()) std::fprintf(stderr, "losslens analyze: %s\n", w.c_str());

  analyzer a(reader->schema(), opts);
  sample s;
  while (reader->next(s)) a.observe(s);

  if (args.has("json")) {
    const auto j = findings_report_json(a.findings(), a.steps());
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fputs(format_findings_text(a.findings(), a.steps(), args.has("all")).c_str(), stdout);
  }
  if (fail_on >= 0 && worst_severity(a.findings()) >= fail_on) return 3;
  return 0;
}

}  // namespace losslens::cli
