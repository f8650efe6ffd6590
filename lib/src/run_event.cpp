#include "losslens/run_event.hpp"

#include <array>
#include <limits>

namespace losslens {

std::string_view to_string(event_kind k) noexcept {
  static constexpr std::array<std::string_view, 9> names = {
      "attach",      "detach", "drops", "storage_opened", "points_lost",
      "run_created", "stored", "note",  "replay_saved"};
  return names[std::size_t(k)];
}

double run_event::number(std::string_view name) const noexcept {
  for (const auto& [k, v] : numbers)
    if (k == name) return v;
  return std::numeric_limits<double>::quiet_NaN();
}

std::string_view run_event::text(std::string_view name) const noexcept {
  for (const auto& [k, v] : texts)
    if (k == name) return v;
  return {};
}

namespace events {
run_event attach(std::size_t parameters) {
  return {event_kind::attach, -1, {{"parameters", double(parameters)}}, {}};
}
run_event detach(std::uint64_t steps, std::int64_t last_step) {
  return {event_kind::detach, last_step, {{"steps", double(steps)}}, {}};
}
run_event drops(std::string_view source, std::uint64_t count, std::uint64_t total,
                std::int64_t step) {
  return {event_kind::drops,
          step,
          {{"count", double(count)}, {"total", double(total)}},
          {{"source", std::string(source)}}};
}
run_event storage_opened(std::int64_t first_step) {
  return {event_kind::storage_opened, first_step, {{"first_step", double(first_step)}}, {}};
}
run_event points_lost(std::uint64_t count, std::int64_t step) {
  return {event_kind::points_lost, step, {{"count", double(count)}}, {}};
}
run_event run_created(std::int64_t run_id, std::string_view db) {
  return {event_kind::run_created, -1, {{"run_id", double(run_id)}}, {{"db", std::string(db)}}};
}
run_event stored(std::int64_t run_id) {
  return {event_kind::stored, -1, {{"run_id", double(run_id)}}, {}};
}
run_event replay_saved(std::uint64_t finding_id, std::string_view kind, std::int64_t step,
                       std::string_view path, std::int64_t rows, std::int64_t bytes,
                       std::uint64_t seed) {
  return {event_kind::replay_saved,
          step,
          {{"finding_id", double(finding_id)},
           {"rows", double(rows)},
           {"bytes", double(bytes)},
           {"seed", double(seed)}},
          {{"path", std::string(path)}, {"kind", std::string(kind)}}};
}
}  // namespace events

}  // namespace losslens
