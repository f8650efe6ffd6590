#include "detail/json.hpp"

#include "losslens/finding.hpp"

namespace losslens::dashboard::detail {

std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string error_json(const std::string& message) {
  return dump_json(nlohmann::json{{"error", message}});
}

nlohmann::json run_json(const storage::run_info& r) { return storage::to_json(r); }

nlohmann::json series_json(const storage::series_info& s) {
  const auto& b = s.summary;
  bool any = b.count > 0;
  bool finite = b.finite_count() > 0;
  return {{"id", s.id},
          {"name", s.name},
          {"kind", std::string(to_string(s.kind))},
          {"count", b.count},
          {"first_step", any ? nlohmann::json(b.first.step) : nlohmann::json()},
          {"last_step", any ? nlohmann::json(b.last.step) : nlohmann::json()},
          {"last_value", any ? json_number(b.last.value) : nlohmann::json()},
          {"min", finite ? json_number(b.min.value) : nlohmann::json()},
          {"max", finite ? json_number(b.max.value) : nlohmann::json()},
          {"nan_count", b.nan_count},
          {"pos_inf_count", b.pos_inf_count},
          {"neg_inf_count", b.neg_inf_count}};
}

nlohmann::json finding_json(const storage::stored_finding& f) {
  nlohmann::json j = to_json(f.f);
  j["run_id"] = f.run_id;
  return j;
}

nlohmann::json event_json(const storage::event_info& e) { return storage::to_json(e); }

nlohmann::json points_json(const std::vector<storage::point>& points) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& p : points)
    a.push_back(nlohmann::json::array({p.step, json_number(p.value), json_number(p.wall_time)}));
  return a;
}

}  // namespace losslens::dashboard::detail
