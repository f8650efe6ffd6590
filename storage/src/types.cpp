#include "losslens/storage/types.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

#include "losslens/error.hpp"

namespace losslens::storage {

namespace {
constexpr std::string_view status_names[] = {"running", "finished", "crashed"};
}  // namespace

std::string_view to_string(run_status s) noexcept { return status_names[int(s)]; }

run_status parse_run_status(std::string_view s) {
  for (int i = 0; i < 3; ++i)
    if (status_names[i] == s) return run_status(i);
  throw error("unknown run status '" + std::string(s) + "': expected running, finished or crashed");
}

void bucket_summary::add(const point& p) noexcept {
  if (count == 0) {
    first = p;
    from_step = p.step;
  }
  last = p;
  to_step = p.step;
  if (std::isfinite(p.value)) {
    if (finite_count() == 0 || p.value < min.value) min = p;
    if (finite_count() == 0 || p.value > max.value) max = p;
  } else {
    if (non_finite_count() == 0) first_non_finite = p;
    if (std::isnan(p.value))
      ++nan_count;
    else if (p.value > 0)
      ++pos_inf_count;
    else
      ++neg_inf_count;
  }
  ++count;
}

void bucket_summary::append(const bucket_summary& later) noexcept {
  if (later.count == 0) return;
  if (count == 0) {
    *this = later;
    return;
  }
  if (later.finite_count() > 0) {
    if (finite_count() == 0 || later.min.value < min.value) min = later.min;
    if (finite_count() == 0 || later.max.value > max.value) max = later.max;
  }
  if (non_finite_count() == 0 && later.non_finite_count() > 0)
    first_non_finite = later.first_non_finite;
  last = later.last;
  to_step = later.to_step;
  count += later.count;
  nan_count += later.nan_count;
  pos_inf_count += later.pos_inf_count;
  neg_inf_count += later.neg_inf_count;
}

double run_info::duration() const noexcept {
  return (ended_at ? *ended_at : heartbeat) - started_at;
}

nlohmann::json to_json(const run_info& r) {
  nlohmann::json config = nlohmann::json::parse(r.config_json, nullptr, false);
  if (config.is_discarded()) config = r.config_json;
  return {
      {"id", r.id},
      {"name", r.name},
      {"status", std::string(to_string(r.status))},
      {"started_at", json_number(r.started_at)},
      {"ended_at", r.ended_at ? json_number(*r.ended_at) : nlohmann::json()},
      {"heartbeat", json_number(r.heartbeat)},
      {"duration", json_number(r.duration())},
      {"host", r.host},
      {"pid", r.pid},
      {"config", config},
      {"version", r.version},
      {"steps", r.steps},
      {"last_step", r.last_step ? nlohmann::json(*r.last_step) : nlohmann::json()},
      {"findings", r.findings},
      {"worst_severity",
       r.worst_finding ? nlohmann::json(std::string(losslens::to_string(r.worst_finding->level)))
                       : nlohmann::json()},
      {"worst_finding", r.worst_finding ? losslens::to_json(*r.worst_finding) : nlohmann::json()},
      {"dropped", r.dropped_samples + r.dropped_points},
      {"dropped_samples", r.dropped_samples},
      {"dropped_points", r.dropped_points}};
}

nlohmann::json to_json(const event_info& e) {
  nlohmann::json detail = nlohmann::json::parse(e.detail_json, nullptr, false);
  if (detail.is_discarded()) detail = e.detail_json;
  return {{"id", e.id},
          {"run_id", e.run_id},
          {"time", json_number(e.time)},
          {"step", e.step >= 0 ? nlohmann::json(e.step) : nlohmann::json()},
          {"kind", e.kind},
          {"detail", detail}};
}

}  // namespace losslens::storage
