// Fuzz target: `losslens analyze` end to end on arbitrary bytes as the CSV: csv_reader in each
// layout it knows (losslens' own, TensorBoard's "download CSV", W&B's export with every run of
// the file, an explicit --loss mapping), then the analyzer (every detector) and both reports.
// Invariants: the reader parses or throws losslens::error ("NAME:LINE: reason"), nothing else
// escapes; parsed rows have increasing steps and one slot per task/parameter of the header;
// the JSON report is valid JSON; warnings and reading notes are one line each (the notes
// start "NAME:LINE: "). The same bytes also go to
// read_trainer_state (a Hugging Face trainer_state.json): read, with each key's steps
// increasing, or a losslens::error naming the file.

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "losslens/analyzer.hpp"
#include "losslens/csv_reader.hpp"
#include "losslens/trainer_state.hpp"
#include "losslens/error.hpp"
#include "losslens/report.hpp"

using losslens::fuzz::require;

namespace {

// "fuzz.csv:LINE: reason", LINE >= 1.
void require_line_prefix(std::string_view what) {
  constexpr std::string_view name = "fuzz.csv:";
  std::size_t i = name.size();
  while (i < what.size() && what[i] >= '0' && what[i] <= '9') ++i;
  require(what.substr(0, name.size()) == name && i > name.size() && what[name.size()] != '0' &&
              what.substr(i, 2) == ": ",
          "errors start with NAME:LINE: ");
}

struct header_info {
  std::vector<std::string> runs;  // W&B runs of the header
  bool tensorboard = false;       // TensorBoard's layout
};

// Reads the whole input with `options`, through every detector when `detectors` (the reader's
// other passes skip them: the detectors are most of the cost). Returns what the header said
// (nothing when it could not be read).
header_info analyze(const std::string& bytes, const losslens::csv_options& options,
                    bool detectors) {
  std::istringstream in(bytes);
  try {
    losslens::csv_reader reader(in, "fuzz.csv", options);
    for (const auto& w : reader.warnings())
      require(w.find('\n') == std::string::npos && w.size() < 4096, "warnings are one short line");
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
      if (detectors) a.observe(s);
    }
    a.flush();
    for (const auto& n : reader.reading_notes()) {
      require(n.find('\n') == std::string::npos, "reading notes are one line");
      require_line_prefix(n);  // "NAME:LINE: ", as errors
    }
    const auto report = losslens::findings_report_json(a.findings(), a.steps());
    losslens::fuzz::require_json(
        report.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "analyze --json");
    (void)losslens::format_findings_text(a.findings(), a.steps(), /*all_episodes=*/true);
    // Every finding survives its JSON: what storage and the dashboard read back.
    for (const auto& f : a.findings()) (void)losslens::finding_from_json(losslens::to_json(f));
    return {reader.runs(), reader.tensorboard_layout()};
  } catch (const losslens::error& e) {
    require_line_prefix(e.what());
  }
  return {};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // As given (the first W&B run); as a TensorBoard download of train/loss (its Value column
  // is unnamed otherwise) ...
  const auto header = analyze(bytes, {}, true);
  losslens::csv_options tensorboard;
  tensorboard.value_tag = "train/loss";
  if (header.tensorboard) analyze(bytes, tensorboard, true);
  // ... every other W&B run of the header (at most a few) ...
  for (std::size_t i = 1; i < header.runs.size() && i < 4; ++i) {
    losslens::csv_options o;
    o.run = header.runs[i];
    analyze(bytes, o, false);
  }
  // ... and with an explicit mapping (`--loss value --grad-norm loss`), which may name a
  // column that is not there.
  losslens::csv_options explicit_tags;
  explicit_tags.mapping.rules = {{"value", {losslens::series_role::loss, ""}},
                                 {"loss", {losslens::series_role::grad_norm, ""}}};
  analyze(bytes, explicit_tags, false);
  // The same bytes as a Hugging Face trainer_state.json (the JSON seeds reach its entries):
  // read or a losslens::error naming the file; each key's steps increase.
  std::istringstream json_in(bytes);
  try {
    const auto log = losslens::read_trainer_state(json_in, "fuzz.json");
    for (const auto& k : log.keys)
      for (std::size_t i = 1; i < k.points.size(); ++i)
        require(k.points[i - 1].step < k.points[i].step, "trainer_state: steps increase");
  } catch (const losslens::error& e) {
    require(std::string_view(e.what()).starts_with("fuzz.json: "),
            "trainer_state: error names the file");
  }
  return 0;
}
