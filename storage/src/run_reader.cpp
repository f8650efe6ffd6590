#include "losslens/storage/run_reader.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "detail/process.hpp"
#include "detail/rollup.hpp"
#include "detail/schema.hpp"
#include "detail/sqlite.hpp"
#include "losslens/error.hpp"

namespace losslens::storage::detail {

/// The reader's connection and its reused statements.
class reader_connection {
 public:
  reader_connection(const std::string& path, int busy_timeout_ms)
      : db(open_database(path, open_mode::read, busy_timeout_ms)),
        raw(db.get(),
            "SELECT step, wall_time, value FROM points WHERE series_id = ?1 AND step BETWEEN ?2 "
            "AND ?3 ORDER BY step"),
        rollups(db.get(), std::string("SELECT ") + summary_columns +
                              " FROM rollups WHERE series_id = ?1 AND level = ?2 AND bucket "
                              "BETWEEN ?3 AND ?4 ORDER BY bucket") {}

  db_handle db;
  statement raw;
  statement rollups;
};

}  // namespace losslens::storage::detail

namespace losslens::storage {

namespace {

using detail::statement;

constexpr const char* run_columns =
    "SELECT r.id, r.name, r.status, r.started_at, r.ended_at, r.heartbeat, r.host, r.pid, "
    "r.config, r.version, "
    "(SELECT max(u.count) FROM series s JOIN rollups u ON u.series_id = s.id AND u.level = 64 "
    "WHERE s.run_id = r.id), "
    "(SELECT max(u.last_step) FROM series s JOIN rollups u ON u.series_id = s.id AND u.level = 64 "
    "WHERE s.run_id = r.id), "
    // Incidents: a finding that is another sign of one (symptom_of_id in its body) is not
    // counted again. The body, not a column, holds it: files of every version have it.
    "(SELECT count(*) FROM findings f WHERE f.run_id = r.id AND "
    " CASE WHEN json_valid(f.body) THEN coalesce(json_extract(f.body, '$.symptom_of_id'), 0) "
    " ELSE 0 END = 0), "
    "(SELECT f.body FROM findings f WHERE f.run_id = r.id "
    " ORDER BY f.severity DESC, f.first_step, f.finding_id LIMIT 1), "
    // Queue overflow: the monitor's drops events count samples ({"source": "monitor", "count",
    // "total"}; earlier versions {"dropped_total", "new"}), the writer's count points
    // ({"source": "writer", "count", "total"}; earlier without "source"); totals are
    // cumulative, so the largest is the run's.
    "(SELECT max(CAST(CASE WHEN json_extract(e.detail, '$.source') = 'monitor' "
    "   THEN json_extract(e.detail, '$.total') ELSE json_extract(e.detail, '$.dropped_total') "
    "   END AS INTEGER)) FROM events e "
    " WHERE e.run_id = r.id AND e.kind = 'drops' AND json_valid(e.detail)), "
    "(SELECT max(CAST(json_extract(e.detail, '$.total') AS INTEGER)) FROM events e "
    " WHERE e.run_id = r.id AND e.kind = 'drops' AND json_valid(e.detail) "
    "   AND json_extract(e.detail, '$.dropped_total') IS NULL "
    "   AND coalesce(json_extract(e.detail, '$.source'), 'writer') <> 'monitor') "
    "FROM runs r ";

run_info read_run(const statement& st, double stale_after) {
  run_info r;
  r.id = st.int64(0);
  r.name = st.text(1);
  r.status = parse_run_status(st.text(2));
  r.started_at = st.real(3);
  if (!st.is_null(4)) r.ended_at = st.real(4);
  r.heartbeat = st.real(5);
  r.host = st.text(6);
  r.pid = st.int64(7);
  r.config_json = st.text(8);
  r.version = st.text(9);
  r.steps = st.int64(10);
  if (!st.is_null(11)) r.last_step = st.int64(11);
  r.findings = int(st.int64(12));
  if (!st.is_null(13)) r.worst_finding = finding_from_json(nlohmann::json::parse(st.text(13)));
  r.dropped_samples = std::max<std::int64_t>(0, st.int64(14));  // NULL (no event) reads as 0
  r.dropped_points = std::max<std::int64_t>(0, st.int64(15));
  if (r.status == run_status::running &&
      detail::writer_is_dead(r.host, r.pid, r.heartbeat, detail::unix_now(), stale_after))
    r.status = run_status::crashed;  // the writer died; a writer opening the file records it
  return r;
}

point read_point(const statement& st) { return {st.int64(0), st.real(1), st.real(2)}; }

// Appends the summaries of [lo, hi] to out in step order, reading whole buckets of
// rollup_levels[li] where they fit inside the range and finer levels (or raw points, li < 0)
// at the edges.
void collect(detail::reader_connection& c, std::int64_t series_id, std::int64_t lo, std::int64_t hi,
             int li, std::vector<bucket_summary>& out) {
  if (lo > hi) return;
  if (li < 0) {
    auto& st = c.raw;
    st.bind(1, series_id).bind(2, lo).bind(3, hi);
    while (st.step()) {
      bucket_summary s;
      s.add(read_point(st));
      out.push_back(s);
    }
    st.reset();
    return;
  }
  const int level = detail::rollup_levels[std::size_t(li)];
  const std::int64_t b0 = (lo + (std::int64_t{1} << level) - 1) >> level;  // first whole bucket
  const std::int64_t b1 = ((hi + 1) >> level) - 1;                         // last whole bucket
  if (b0 > b1) {
    collect(c, series_id, lo, hi, li - 1, out);
    return;
  }
  collect(c, series_id, lo, (b0 << level) - 1, li - 1, out);
  auto& st = c.rollups;
  st.bind(1, series_id).bind(2, level).bind(3, b0).bind(4, b1);
  while (st.step()) out.push_back(detail::read_summary(st, 0));
  st.reset();
  collect(c, series_id, (b1 + 1) << level, hi, li - 1, out);
}

// Groups consecutive parts into buckets of `width` steps (aligned to multiples of width) and
// picks each bucket's representative points.
void group(const std::vector<bucket_summary>& parts, std::int64_t width, series_window& w) {
  w.buckets.clear();
  w.points.clear();
  w.bucket_width = width;
  for (const auto& p : parts) {
    std::int64_t start = p.from_step / width * width;
    if (w.buckets.empty() || w.buckets.back().from_step != std::max(start, w.from_step)) {
      w.buckets.emplace_back();
      w.buckets.back().from_step = std::max(start, w.from_step);
      w.buckets.back().to_step = std::min(start + width - 1, w.to_step);
    }
    auto& b = w.buckets.back();
    auto from = b.from_step, to = b.to_step;
    b.append(p);
    b.from_step = from;
    b.to_step = to;
  }
  for (const auto& b : w.buckets) {
    point cand[5];
    int n = 0;
    cand[n++] = b.first;
    if (b.finite_count() > 0) {
      cand[n++] = b.min;
      cand[n++] = b.max;
    }
    if (b.non_finite_count() > 0) cand[n++] = b.first_non_finite;
    cand[n++] = b.last;
    for (int i = 1; i < n; ++i)  // insertion sort by step (n <= 5)
      for (int j = i; j > 0 && cand[j].step < cand[j - 1].step; --j)
        std::swap(cand[j], cand[j - 1]);
    for (int i = 0; i < n; ++i)
      if (i == 0 || cand[i].step != cand[i - 1].step) w.points.push_back(cand[i]);
  }
}

}  // namespace

point_cursor::point_cursor(std::unique_ptr<detail::statement> st) : st_(std::move(st)) {}
point_cursor::point_cursor(point_cursor&&) noexcept = default;
point_cursor& point_cursor::operator=(point_cursor&&) noexcept = default;
point_cursor::~point_cursor() = default;

bool point_cursor::next(point& p) {
  if (!st_ || !st_->step()) return false;
  p = read_point(*st_);
  return true;
}

run_reader::run_reader(const std::string& path, reader_options options)
    : path_(path), options_(options) {
  try {
    db_ = std::make_unique<detail::reader_connection>(path, int(options.busy_timeout.count()));
  } catch (const detail::sqlite_error& e) {
    detail::throw_setup_error(path, e);
  }
}

run_reader::~run_reader() = default;
run_reader::run_reader(run_reader&&) noexcept = default;
run_reader& run_reader::operator=(run_reader&&) noexcept = default;

std::vector<run_info> run_reader::runs() {
  statement st(db_->db.get(), std::string(run_columns) + "ORDER BY r.id");
  std::vector<run_info> out;
  while (st.step()) out.push_back(read_run(st, options_.stale_after_seconds));
  return out;
}

run_info run_reader::run(std::int64_t run_id) {
  statement st(db_->db.get(), std::string(run_columns) + "WHERE r.id = ?1");
  st.bind(1, run_id);
  if (!st.step())
    throw error("no run with id " + std::to_string(run_id) + " in '" + path_ +
                "' (`losslens runs` lists them)");
  return read_run(st, options_.stale_after_seconds);
}

std::vector<series_info> run_reader::series(std::int64_t run_id) {
  statement st(db_->db.get(), std::string("SELECT s.id, s.run_id, s.name, s.kind, ") +
                                  "u.count IS NULL, " + detail::summary_columns +
                                  " FROM series s LEFT JOIN rollups u ON u.series_id = s.id AND "
                                  "u.level = 64 AND u.bucket = 0 WHERE s.run_id = ?1 "
                                  "ORDER BY s.id");
  st.bind(1, run_id);
  std::vector<series_info> out;
  while (st.step()) {
    series_info s;
    s.id = st.int64(0);
    s.run_id = st.int64(1);
    s.name = st.text(2);
    s.kind = parse_series_kind(st.text(3));
    if (st.int64(4) == 0) s.summary = detail::read_summary(st, 5);
    out.push_back(std::move(s));
  }
  return out;
}

series_info run_reader::find_series(std::int64_t run_id, std::string_view name) {
  auto all = series(run_id);
  std::string names;
  for (auto& s : all) {
    if (s.name == name) return std::move(s);
    if (s.summary.count > 0) names += (names.empty() ? "" : ", ") + s.name;
  }
  (void)run(run_id);  // an unknown run gets its own message
  throw error("run " + std::to_string(run_id) + " has no series '" + std::string(name) +
              "'; it has: " + (names.empty() ? "(no points yet)" : names));
}

std::vector<stored_finding> run_reader::findings(std::optional<std::int64_t> run_id,
                                                 std::string_view kind) {
  statement st(db_->db.get(),
               "SELECT run_id, body FROM findings WHERE (?1 IS NULL OR run_id = ?1) AND "
               "(?2 IS NULL OR kind = ?2) ORDER BY run_id, first_step, finding_id");
  if (run_id) st.bind(1, *run_id);
  if (!kind.empty()) st.bind(2, kind);
  std::vector<stored_finding> out;
  while (st.step())
    out.push_back({st.int64(0), finding_from_json(nlohmann::json::parse(st.text(1)))});
  return out;
}

std::vector<event_info> run_reader::events(std::int64_t run_id, std::int64_t after_id) {
  statement st(db_->db.get(),
               "SELECT id, run_id, time, step, kind, detail FROM events WHERE run_id = ?1 "
               "AND id > ?2 ORDER BY id");
  st.bind(1, run_id).bind(2, after_id);
  std::vector<event_info> out;
  while (st.step())
    out.push_back({st.int64(0), st.int64(1), st.real(2), st.int64(3), st.text(4), st.text(5)});
  return out;
}

std::vector<point> run_reader::points(std::int64_t series_id, std::int64_t from, std::int64_t to) {
  std::vector<point> out;
  auto& st = db_->raw;
  st.bind(1, series_id).bind(2, from).bind(3, to);
  while (st.step()) out.push_back(read_point(st));
  st.reset();
  return out;
}

point_cursor run_reader::cursor(std::int64_t series_id, std::int64_t from, std::int64_t to) {
  auto st = std::make_unique<statement>(
      db_->db.get(),
      "SELECT step, wall_time, value FROM points WHERE series_id = ?1 AND step BETWEEN ?2 AND ?3 "
      "ORDER BY step");
  st->bind(1, series_id).bind(2, from).bind(3, to);
  return point_cursor(std::move(st));
}

series_window run_reader::window(std::int64_t series_id, std::int64_t from, std::int64_t to,
                                 std::size_t max_points) {
  if (max_points < 8)
    throw error("max_points must be at least 8, got " + std::to_string(max_points));
  if (from > to)
    throw error("empty step range: from (" + std::to_string(from) + ") is after to (" +
                std::to_string(to) + ")");
  series_window w;
  from = std::max<std::int64_t>(from, 0);
  to = std::max<std::int64_t>(to, 0);
  w.from_step = from;
  w.to_step = to;
  const auto budget = std::int64_t(max_points);
  const std::int64_t span = to - from + 1;
  // The finest source whose units in the range number at most 4x max_points (raw points when
  // li < 0): the work is O(max_points) whatever the range.
  int li = -1;
  std::int64_t units = span;
  while (units > 4 * budget && li + 1 < int(detail::rollup_levels.size())) {
    ++li;
    const int level = detail::rollup_levels[std::size_t(li)];
    units = (to >> level) - (from >> level) + 1;
  }
  const std::int64_t unit = li < 0 ? 1 : std::int64_t{1} << detail::rollup_levels[std::size_t(li)];
  w.level = li < 0 ? 0 : detail::rollup_levels[std::size_t(li)];

  std::vector<bucket_summary> parts;
  collect(*db_, series_id, from, to, li, parts);

  if (li < 0 && span <= budget) {
    w.exact = true;
    group(parts, 1, w);
    return w;
  }
  // Up to 4 points per bucket (first, min, max, last), plus a non-finite one where present:
  // widen the buckets until the points fit.
  const std::int64_t target = std::max<std::int64_t>(2, budget / 4);
  std::int64_t k = std::max<std::int64_t>(1, (units + target - 2) / (target - 1));
  for (;;) {
    group(parts, unit * k, w);
    if (std::int64_t(w.points.size()) <= budget) break;
    k *= 2;
  }
  return w;
}

}  // namespace losslens::storage
