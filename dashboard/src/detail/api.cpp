#include "detail/api.hpp"

#include <charconv>
#include <cstdint>
#include <limits>

#include "detail/assets.hpp"
#include "detail/json.hpp"
#include "losslens/error.hpp"

namespace losslens::dashboard::detail {

reader_pool::lease reader_pool::acquire() {
  {
    std::lock_guard lock(mutex_);
    if (!free_.empty()) {
      auto r = std::move(free_.back());
      free_.pop_back();
      return lease(*this, std::move(r));
    }
  }
  return lease(*this, std::make_unique<storage::run_reader>(path_));
}

void reader_pool::put(std::unique_ptr<storage::run_reader> r) noexcept {
  std::lock_guard lock(mutex_);
  if (free_.size() < 8) free_.push_back(std::move(r));
}

namespace {

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(char(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

/// Whole decimal integer in [lo, hi].
std::optional<std::int64_t> parse_int(std::string_view s, std::int64_t lo, std::int64_t hi) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi)
    return std::nullopt;
  return v;
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    parts.push_back(path.substr(i, j - i));
    i = j;
  }
  return parts;
}

reply json_reply(const nlohmann::json& j) { return reply{200, "application/json", dump_json(j)}; }

constexpr std::int64_t max_step = std::numeric_limits<std::int64_t>::max();

reply points_reply(storage::run_reader& r, std::int64_t run_id, const target& t) {
  auto it = t.params.find("series");
  if (it == t.params.end() || it->second.empty())
    return error_reply(400, "missing parameter 'series' (a series name, see /api/runs/" +
                                std::to_string(run_id) + "/series)");
  storage::series_info s;
  try {
    s = r.find_series(run_id, it->second);
  } catch (const losslens::error& e) {
    return error_reply(404, e.what());
  }
  std::int64_t from = 0, to = max_step;
  std::int64_t max_points = 1000;
  struct param {
    const char* name;
    std::int64_t* v;
    std::int64_t lo, hi;
  };
  for (param p : {param{"from", &from, 0, max_step}, param{"to", &to, 0, max_step},
                  param{"max_points", &max_points, 8, 100000}}) {
    auto f = t.params.find(p.name);
    if (f == t.params.end()) continue;
    auto v = parse_int(f->second, p.lo, p.hi);
    if (!v)
      return error_reply(400, std::string("parameter '") + p.name + "' must be an integer in [" +
                                  std::to_string(p.lo) + ", " + std::to_string(p.hi) + "]");
    *p.v = *v;
  }
  if (from > to) return error_reply(400, "parameter 'from' must not exceed 'to'");
  if (to == max_step) to = s.summary.count > 0 ? s.summary.last.step : from;
  if (from > to) to = from;
  auto w = r.window(s.id, from, to, std::size_t(max_points));
  return json_reply({{"run_id", run_id},
                     {"series", s.name},
                     {"kind", std::string(to_string(s.kind))},
                     {"from", w.from_step},
                     {"to", w.to_step},
                     {"bucket_width", w.bucket_width},
                     {"level", w.level},
                     {"exact", w.exact},
                     {"count", s.summary.count},
                     {"points", points_json(w.points)}});
}

reply api_dispatch(storage::run_reader& r, const std::vector<std::string_view>& parts,
                   const target& t) {
  // parts[0] == "api"
  if (parts.size() < 2 || parts[1] != "runs") return error_reply(404, "no such API: " + t.path);
  if (parts.size() == 2) {
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& info : r.runs()) runs.push_back(run_json(info));
    return json_reply({{"runs", runs}});
  }
  auto id = parse_int(parts[2], 1, max_step);
  if (!id)
    return error_reply(400,
                       "run id must be a positive integer, got '" + std::string(parts[2]) + "'");
  storage::run_info info;
  try {
    info = r.run(*id);
  } catch (const losslens::error& e) {
    return error_reply(404, e.what());
  }
  if (parts.size() == 3) return json_reply(run_json(info));
  if (parts.size() == 4 && parts[3] == "series") {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& s : r.series(*id)) a.push_back(series_json(s));
    return json_reply({{"run_id", *id}, {"series", a}});
  }
  if (parts.size() == 4 && parts[3] == "points") return points_reply(r, *id, t);
  if (parts.size() == 4 && parts[3] == "findings") {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& f : r.findings(*id)) a.push_back(finding_json(f));
    return json_reply({{"run_id", *id}, {"findings", a}});
  }
  if (parts.size() == 4 && parts[3] == "events") {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& e : r.events(*id)) a.push_back(event_json(e));
    return json_reply({{"run_id", *id}, {"events", a}});
  }
  return error_reply(404, "no such API: " + t.path);
}

}  // namespace

std::optional<target> parse_target(std::string_view raw) {
  target t;
  auto q = raw.find('?');
  auto path = percent_decode(raw.substr(0, q), false);
  if (!path) return std::nullopt;
  t.path = std::move(*path);
  if (q == std::string_view::npos) return t;
  std::string_view query = raw.substr(q + 1);
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (item.empty()) continue;
    auto eq = item.find('=');
    auto key = percent_decode(item.substr(0, eq), true);
    auto value = percent_decode(eq == std::string_view::npos ? "" : item.substr(eq + 1), true);
    if (!key || !value) return std::nullopt;
    t.params[*key] = std::move(*value);
  }
  return t;
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  // Compare every byte of the expected length whatever the input; lengths leak only via the
  // final size check.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

bool token_ok(std::string_view expected, std::string_view authorization_header,
              const target& t) noexcept {
  if (expected.empty()) return true;
  constexpr std::string_view bearer = "Bearer ";
  if (authorization_header.substr(0, bearer.size()) == bearer &&
      constant_time_equal(expected, authorization_header.substr(bearer.size())))
    return true;
  auto it = t.params.find("token");
  return it != t.params.end() && constant_time_equal(expected, it->second);
}

reply error_reply(unsigned status, const std::string& message) {
  return reply{status, "application/json", error_json(message)};
}

reply handle_api(reader_pool& readers, const target& t) {
  try {
    auto parts = split_path(t.path);
    auto lease = readers.acquire();
    return api_dispatch(*lease, parts, t);
  } catch (const losslens::error& e) {
    return error_reply(500, e.what());
  } catch (const std::exception& e) {
    return error_reply(500, std::string("internal error: ") + e.what());
  }
}

reply handle_static(const target& t) {
  std::string_view path = t.path == "/" ? std::string_view("/index.html") : t.path;
  // Only exact names of embedded files are served: nothing can escape the page's root.
  for (std::size_t i = 0; i < embedded_asset_count; ++i) {
    const auto& a = embedded_assets[i];
    if (path == a.path)
      return reply{200, a.content_type, std::string(reinterpret_cast<const char*>(a.data), a.size),
                   std::string_view(a.path).find("uPlot") != std::string_view::npos};
  }
  return error_reply(404, "not found: " + t.path);
}

}  // namespace losslens::dashboard::detail
