// Fuzz target: `losslens analyze` of a TensorBoard event file on arbitrary bytes: the record
// reader (framing, CRC32C), the Event decoding (simple_value, scalar tensors), the per-tag
// series (sorted, one point per step), the tag mapping, the merge into samples, every detector
// and the JSON report; then each scalar written back with our writer and read again.
// Each input runs twice: as the file's bytes, and as payloads framed with valid CRCs (the input
// read as [length byte][payload]...), so that mutations reach the Event decoding too (random
// bytes almost never carry a right CRC32C).
// Invariants: reading succeeds or throws losslens::error ("fuzz.tfevents: offset N: reason"),
// nothing else escapes; a cut-short note has the same prefix; each tag's steps increase; the
// merged samples' steps increase; the report is valid JSON; a float32 value read back from our
// own record is the same bits, with its tag, step and wall time.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "losslens/analyzer.hpp"
#include "losslens/error.hpp"
#include "losslens/report.hpp"
#include "losslens/sample_merger.hpp"
#include "losslens/tfevents/event_reader.hpp"
#include "losslens/tfevents/event_writer.hpp"
#include "losslens/tfevents/scalar_run.hpp"

using losslens::fuzz::require;

namespace {

// "fuzz.tfevents: offset N: ", N a number without leading zeros (0 itself allowed).
bool has_offset_prefix(std::string_view what) {
  constexpr std::string_view name = "fuzz.tfevents: offset ";
  if (what.substr(0, name.size()) != name) return false;
  std::size_t i = name.size();
  while (i < what.size() && what[i] >= '0' && what[i] <= '9') ++i;
  return i > name.size() && (what[name.size()] != '0' || i == name.size() + 1) &&
         what.substr(i, 2) == ": ";
}

// Our writer's record of v, read back: the same tag, step, wall time and float32 bits.
void round_trip(const losslens::tfevents::scalar_value& v) {
  const float f = static_cast<float>(v.value);
  std::istringstream in(losslens::tfevents::frame_record(
      losslens::tfevents::scalar_event(v.tag, v.step, v.wall_time, f)));
  losslens::tfevents::event_reader reader(in, "round-trip");
  losslens::tfevents::scalar_value back;
  require(reader.next(back), "our record reads back");
  const float g = static_cast<float>(back.value);
  require(std::memcmp(&f, &g, sizeof f) == 0, "float32 bits survive a round trip");
  require(back.tag == v.tag && back.step == v.step, "tag and step survive a round trip");
  // Equal, not the same bits: proto3 writes no zero, so -0.0 reads back as 0.0.
  require(back.wall_time == v.wall_time || (std::isnan(back.wall_time) && std::isnan(v.wall_time)),
          "wall time survives a round trip");
  require(!reader.next(back), "one record, one scalar");
}

void analyze_file(const std::string& bytes) {
  try {
    std::istringstream in(bytes);
    losslens::tfevents::event_reader reader(in, "fuzz.tfevents");
    losslens::tfevents::scalar_value v;
    for (int n = 0; reader.next(v); ++n)
      if (n < 16) round_trip(v);  // the first few: the writer's cost stays small
    require(reader.truncated().empty() || has_offset_prefix(reader.truncated()),
            "a cut-short note starts with NAME: offset N: ");
  } catch (const losslens::error& e) {
    require(has_offset_prefix(e.what()), "errors start with NAME: offset N: ");
    return;  // the same bytes fail below too
  }
  try {
    std::istringstream in(bytes);
    const auto run = losslens::tfevents::read_scalar_run(in, "fuzz.tfevents");
    for (const auto& t : run.tags)
      for (std::size_t i = 1; i < t.points.size(); ++i)
        require(t.points[i].step > t.points[i - 1].step, "one point per step, in step order");
    const auto mapping = losslens::map_tags(run.tag_names());
    losslens::sample_merger merger;
    losslens::tfevents::add_streams(merger, run, mapping);
    losslens::detector_options opts;
    opts.chance_level.num_classes = 10;
    losslens::analyzer a(merger.schema(), opts);
    losslens::sample s;
    bool have_prev = false;
    std::int64_t prev = 0;
    while (merger.next(s)) {
      require(!have_prev || s.step > prev, "merged steps increase");
      require(s.task_losses.size() == merger.schema().tasks.size(), "one slot per task");
      have_prev = true;
      prev = s.step;
      a.observe(s);
    }
    a.flush();
    losslens::fuzz::require_json(
        losslens::findings_report_json(a.findings(), a.steps())
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
        "analyze --json");
  } catch (const losslens::error& e) {
    require(false, std::string("the second read failed where the first did not: ") + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  analyze_file(bytes);
  std::string framed;
  for (std::size_t at = 0; at < size;) {
    const std::size_t length = data[at];
    ++at;
    const std::size_t n = std::min(length, size - at);
    framed += losslens::tfevents::frame_record(bytes.substr(at, n));
    at += n;
  }
  analyze_file(framed);
  return 0;
}
