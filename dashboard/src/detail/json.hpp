#pragma once
// JSON shapes shared by the HTTP API and the websocket deltas (docs/dashboard.md).

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "losslens/storage/types.hpp"

namespace losslens::dashboard::detail {

/// Compact JSON text; invalid UTF-8 in strings is replaced, never thrown.
std::string dump_json(const nlohmann::json& j);
/// {"error": message}.
std::string error_json(const std::string& message);

nlohmann::json run_json(const storage::run_info& r);
nlohmann::json series_json(const storage::series_info& s);
/// A stored finding: to_json(f) plus "run_id".
nlohmann::json finding_json(const storage::stored_finding& f);
/// A stored event: storage::to_json(e) (detail parsed, or the raw string).
nlohmann::json event_json(const storage::event_info& e);
/// [[step, value, wall_time], ...] with non-finite values as "nan", "inf", "-inf" (wall_time:
/// the producer's clock, Unix seconds for losslens::attach).
nlohmann::json points_json(const std::vector<storage::point>& points);

}  // namespace losslens::dashboard::detail
