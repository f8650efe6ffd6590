// The run-history subcommands: `losslens runs`, `findings`, `metrics`, `export`, `compare`.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.hpp"
#include "commands.hpp"
#include "losslens/error.hpp"
#include "losslens/report.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/tfevents/event_writer.hpp"

namespace losslens::cli {

namespace {

using storage::run_info;
using storage::run_reader;

constexpr const char* default_db = "runs.db";

// Shortest text that reads back as the same double; nan, inf, -inf for the others.
std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, p);
}

std::string short_number(double v) {
  if (!std::isfinite(v)) return number_text(v);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string duration_text(double seconds) {
  char buf[32];
  if (!(seconds >= 0)) return "-";
  auto s = std::int64_t(seconds);
  if (seconds < 60)
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm %02llds", (long long)(s / 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lldh %02lldm", (long long)(s / 3600),
                  (long long)(s / 60 % 60));
  return buf;
}

void print_json(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

// Compact JSON; invalid UTF-8 (names are the user's bytes) is replaced, never thrown.
std::string compact_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json run_json(const run_info& r) { return storage::to_json(r); }

std::string worst_text(const run_info& r) {
  if (!r.worst_finding) return "-";
  const auto& f = *r.worst_finding;
  return std::string(to_string(f.level)) + " " + f.kind + " @ step " +
         std::to_string(f.first_step) + " (" + std::to_string(r.findings) +
         (r.findings == 1 ? " finding)" : " findings)");
}

// A table printed with columns padded to their widest cell; below[i], when given, is printed
// as is after row i.
void print_table(const std::vector<std::vector<std::string>>& rows,
                 const std::vector<std::string>& below = {}) {
  std::vector<std::size_t> width;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
    if (r < below.size()) std::fputs(below[r].c_str(), stdout);
  }
}

std::int64_t run_id_arg(const parsed_args& args) {
  if (!args.options.count("run"))
    throw usage_error("missing --run ID (`losslens runs` lists them)");
  return args.get_int("run", 0, 1, INT64_MAX);
}

/// The replay files saved for a run's findings (replay_saved events): finding id -> (step,
/// path), in the order they were saved.
std::multimap<std::uint64_t, std::pair<std::int64_t, std::string>> replay_files(
    run_reader& reader, std::int64_t run_id) {
  std::multimap<std::uint64_t, std::pair<std::int64_t, std::string>> out;
  for (const auto& e : reader.events(run_id)) {
    if (e.kind != "replay_saved") continue;
    const auto d = nlohmann::json::parse(e.detail_json, nullptr, false);
    if (!d.is_object() || !d.contains("path") || !d.contains("finding_id")) continue;
    out.emplace(d["finding_id"].get<std::uint64_t>(),
                std::make_pair(e.step, d["path"].get<std::string>()));
  }
  return out;
}

void no_positionals(const parsed_args& args) {
  if (!args.positional.empty())
    throw usage_error("unexpected argument '" + args.positional[0] + "'");
}

}  // namespace

// ---- runs ---------------------------------------------------------------------------------

int run_runs(int argc, char** argv) {
  auto args = parse_args(argc, argv, 1, {"db"}, {"json"});
  no_positionals(args);
  run_reader reader(args.get("db", default_db));
  auto all = reader.runs();
  if (args.has("json")) {
    auto j = nlohmann::json::array();
    for (const auto& r : all) j.push_back(run_json(r));
    print_json({{"runs", j}});
    return 0;
  }
  if (all.empty()) {
    std::printf("no runs in '%s'\n", args.get("db", default_db).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"id", "name", "status", "steps", "duration", "worst finding"}};
  for (const auto& r : all)
    rows.push_back({std::to_string(r.id), r.name, std::string(to_string(r.status)),
                    std::to_string(r.steps), duration_text(r.duration()), worst_text(r)});
  print_table(rows);
  return 0;
}

// ---- findings -----------------------------------------------------------------------------

int run_findings(int argc, char** argv) {
  auto args = parse_args(argc, argv, 1, {"db", "run", "kind"}, {"json", "all"});
  no_positionals(args);
  run_reader reader(args.get("db", default_db));
  std::optional<std::int64_t> run;
  if (args.options.count("run")) {
    run = run_id_arg(args);
    (void)reader.run(*run);  // unknown run: a clear error
  }
  auto all = reader.findings(run, args.get("kind"));
  // Replay files by run (read once per run listed).
  std::map<std::int64_t, std::multimap<std::uint64_t, std::pair<std::int64_t, std::string>>>
      replays;
  auto replays_of = [&](const storage::stored_finding& s) {
    auto [r, added] = replays.try_emplace(s.run_id);
    if (added) r->second = replay_files(reader, s.run_id);
    std::vector<std::pair<std::int64_t, std::string>> files;
    for (auto [it, end] = r->second.equal_range(s.f.id); it != end; ++it)
      files.push_back(it->second);
    return files;
  };
  if (args.has("json")) {
    auto j = nlohmann::json::array();
    for (const auto& s : all) {
      auto f = to_json(s.f);
      f["run"] = s.run_id;
      auto files = nlohmann::json::array();
      for (const auto& [step, path] : replays_of(s))
        files.push_back({{"step", step}, {"path", path}});
      if (!files.empty()) f["replay"] = files;
      j.push_back(f);
    }
    print_json({{"findings", j}});
    return 0;
  }
  if (all.empty()) {
    std::printf("no findings\n");
    return 0;
  }
  // One row per incident; below it, indented, the incident it follows, the findings that are
  // other signs of it (listed there, not as rows of their own) and (--all) its episodes.
  std::vector<finding_ref> refs;
  refs.reserve(all.size());
  for (const auto& s : all) refs.push_back({s.run_id, s.f.id, s.f.symptom_of_id});
  const finding_nesting nest = nest_findings(refs);
  std::vector<std::vector<std::string>> rows = {
      {"run", "id", "severity", "kind", "steps", "episodes", "series", "message"}};
  std::vector<std::string> below = {""};
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (nest.host[i] != finding_nesting::none) continue;
    const auto& s = all[i];
    rows.push_back({std::to_string(s.run_id), std::to_string(s.f.id),
                    std::string(to_string(s.f.level)), s.f.kind,
                    std::to_string(s.f.first_step) + "-" + std::to_string(s.f.last_step),
                    std::to_string(s.f.episodes), s.f.series, s.f.message});
    std::string lines = format_relations_text(s.f, "    ");
    for (std::size_t j : nest.signs[i]) {
      const finding& g = all[j].f;
      lines += "    also: (id " + std::to_string(g.id) + ") " + symptom_line(g) + "\n";
      if (args.has("all")) lines += format_episodes_text(g, "      ");
    }
    for (const auto& [step, path] : replays_of(s))
      lines += "    replay: " + path + " (the batch of step " + std::to_string(step) + ")\n";
    if (args.has("all")) lines += format_episodes_text(s.f, "    ");
    below.push_back(std::move(lines));
  }
  print_table(rows, below);
  return 0;
}

// ---- metrics ------------------------------------------------------------------------------

int run_metrics(int argc, char** argv) {
  auto args =
      parse_args(argc, argv, 1, {"db", "run", "series", "from", "to", "max-points"}, {"json"});
  no_positionals(args);
  const auto run = run_id_arg(args);
  if (!args.options.count("series")) throw usage_error("missing --series NAME (e.g. loss)");
  const auto max_points = std::size_t(args.get_int("max-points", 2000, 8, 100'000'000));
  run_reader reader(args.get("db", default_db));
  const auto s = reader.find_series(run, args.get("series"));
  const auto from = args.get_int("from", s.summary.count ? s.summary.first.step : 0, 0, INT64_MAX);
  const auto to = args.get_int("to", s.summary.count ? s.summary.last.step : 0, 0, INT64_MAX);
  if (from > to)
    throw usage_error("--from " + std::to_string(from) + " is after --to " + std::to_string(to));
  const auto w = reader.window(s.id, from, to, max_points);

  if (args.has("json")) {
    auto pts = nlohmann::json::array();
    for (const auto& p : w.points)
      pts.push_back(
          {{"step", p.step}, {"wall_time", p.wall_time}, {"value", json_number(p.value)}});
    auto buckets = nlohmann::json::array();
    for (const auto& b : w.buckets) {
      nlohmann::json o = {{"from", b.from_step},
                          {"to", b.to_step},
                          {"count", b.count},
                          {"nan", b.nan_count},
                          {"pos_inf", b.pos_inf_count},
                          {"neg_inf", b.neg_inf_count},
                          {"first", json_number(b.first.value)},
                          {"last", json_number(b.last.value)}};
      o["min"] = b.finite_count() ? json_number(b.min.value) : nlohmann::json();
      o["max"] = b.finite_count() ? json_number(b.max.value) : nlohmann::json();
      buckets.push_back(o);
    }
    print_json({{"run", run},
                {"series", s.name},
                {"kind", std::string(to_string(s.kind))},
                {"from", w.from_step},
                {"to", w.to_step},
                {"bucket_width", w.bucket_width},
                {"exact", w.exact},
                {"points", pts},
                {"buckets", buckets}});
    return 0;
  }
  std::printf(
      "# run %lld, series %s: %zu points for steps %lld..%lld (%s)\n", (long long)run,
      s.name.c_str(), w.points.size(), (long long)w.from_step, (long long)w.to_step,
      w.exact ? "every point"
              : ("min/max/first/last per " + std::to_string(w.bucket_width) + " steps").c_str());
  std::printf("step\tvalue\n");
  for (const auto& p : w.points)
    std::printf("%lld\t%s\n", (long long)p.step, number_text(p.value).c_str());
  return 0;
}

// ---- export -------------------------------------------------------------------------------

namespace {

// Calls fn(step, at) for every step that any series has, in step order; at[i] is series i's
// point at that step, or null. Reads the points through cursors (not all in memory).
void for_each_step(
    run_reader& reader, const std::vector<storage::series_info>& series,
    const std::function<void(std::int64_t, const std::vector<const storage::point*>&)>& fn) {
  std::vector<storage::point_cursor> cursors;
  std::vector<storage::point> current(series.size());
  std::vector<bool> live;
  for (std::size_t i = 0; i < series.size(); ++i) {
    cursors.push_back(reader.cursor(series[i].id, 0, INT64_MAX));
    live.push_back(cursors.back().next(current[i]));
  }
  std::vector<const storage::point*> at(series.size());
  for (;;) {
    std::int64_t step = INT64_MAX;
    for (std::size_t i = 0; i < cursors.size(); ++i)
      if (live[i]) step = std::min(step, current[i].step);
    if (step == INT64_MAX) break;
    for (std::size_t i = 0; i < cursors.size(); ++i)
      at[i] = live[i] && current[i].step == step ? &current[i] : nullptr;
    fn(step, at);
    for (std::size_t i = 0; i < cursors.size(); ++i)
      if (at[i]) live[i] = cursors[i].next(current[i]);
  }
}

void export_csv(run_reader& reader, const std::vector<storage::series_info>& series) {
  std::string line = "step,wall_time";
  for (const auto& s : series) line += "," + s.name;
  std::printf("%s\n", line.c_str());
  for_each_step(reader, series,
                [&](std::int64_t step, const std::vector<const storage::point*>& at) {
                  line = std::to_string(step) + ",";
                  std::string values;
                  bool wall_done = false;
                  for (const auto* p : at) {
                    values += ",";
                    if (!p) continue;
                    if (!wall_done) {
                      line += number_text(p->wall_time);
                      wall_done = true;
                    }
                    values += number_text(p->value);
                  }
                  line += values;
                  line += '\n';
                  std::fwrite(line.data(), 1, line.size(), stdout);
                });
}

// One event file in dir, scalars tagged with the series names, in step order.
void export_tfevents(run_reader& reader, const run_info& run,
                     const std::vector<storage::series_info>& series, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw error(dir + ": cannot create the directory: " + ec.message());
  // The file's own time: the first point's wall time (an imported run keeps its original
  // times), else the run's start.
  double start = run.started_at;
  for (const auto& s : series)
    if (s.summary.count > 0 && s.summary.first.wall_time > 0) {
      start = s.summary.first.wall_time;
      break;
    }
  char name[96];
  std::snprintf(name, sizeof name, "events.out.tfevents.%lld.losslens.run%lld",
                (long long)std::floor(start), (long long)run.id);
  const std::string path = (std::filesystem::path(dir) / name).string();
  tfevents::event_writer w(path, start);
  std::uint64_t scalars = 0;
  for_each_step(reader, series,
                [&](std::int64_t step, const std::vector<const storage::point*>& at) {
                  for (std::size_t i = 0; i < at.size(); ++i)
                    if (at[i]) {
                      w.write_scalar(series[i].name, step, at[i]->wall_time,
                                     static_cast<float>(at[i]->value));
                      ++scalars;
                    }
                });
  w.close();
  std::printf("wrote %s: %llu scalars of %zu series\n", path.c_str(), (unsigned long long)scalars,
              series.size());
}

void export_json(run_reader& reader, const run_info& run,
                 const std::vector<storage::series_info>& series) {
  std::printf("{\"run\": %s,\n \"series\": [", compact_json(run_json(run)).c_str());
  for (std::size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    std::printf("%s\n  {\"name\": %s, \"kind\": \"%s\", \"points\": [", i ? "," : "",
                compact_json(s.name).c_str(), std::string(to_string(s.kind)).c_str());
    auto c = reader.cursor(s.id, 0, INT64_MAX);
    storage::point p;
    bool first = true;
    std::string buf;
    while (c.next(p)) {
      buf = (first ? "[" : ",[") + std::to_string(p.step) + "," + json_number(p.wall_time).dump() +
            "," + json_number(p.value).dump() + "]";
      std::fwrite(buf.data(), 1, buf.size(), stdout);
      first = false;
    }
    std::printf("]}");
  }
  auto findings = nlohmann::json::array();
  for (const auto& f : reader.findings(run.id)) findings.push_back(to_json(f.f));
  auto events = nlohmann::json::array();
  for (const auto& e : reader.events(run.id))
    events.push_back({{"time", e.time},
                      {"step", e.step},
                      {"kind", e.kind},
                      {"detail", storage::to_json(e)["detail"]}});  // raw string if not JSON
  std::printf("],\n \"findings\": %s,\n \"events\": %s}\n", compact_json(findings).c_str(),
              compact_json(events).c_str());
}

}  // namespace

int run_export(int argc, char** argv) {
  auto args = parse_args(argc, argv, 1, {"db", "run", "format", "out"}, {"json"});
  no_positionals(args);
  const auto run = run_id_arg(args);
  std::string format = args.get("format", args.has("json") ? "json" : "csv");
  if (format != "csv" && format != "json" && format != "tfevents")
    throw usage_error("--format must be csv, json or tfevents, got '" + format + "'");
  if ((format == "tfevents") != args.options.count("out"))
    throw usage_error(
        format == "tfevents"
            ? "--format tfevents needs --out DIR (the event file's directory)"
            : "--out DIR is for --format tfevents (csv and json go to standard output)");
  run_reader reader(args.get("db", default_db));
  const auto info = reader.run(run);
  std::vector<storage::series_info> series;
  for (auto& s : reader.series(run))
    if (s.summary.count > 0) series.push_back(std::move(s));
  if (format == "csv")
    export_csv(reader, series);
  else if (format == "tfevents")
    export_tfevents(reader, info, series, args.get("out"));
  else
    export_json(reader, info, series);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// ---- compare ------------------------------------------------------------------------------

namespace {

struct series_result {
  double final_value, best_value;
  std::int64_t final_step, best_step;
};

// Final and best value of a series; best is the lowest finite value of a loss, the highest of
// an accuracy.
std::optional<series_result> result_of(const storage::series_info& s) {
  if (s.summary.count == 0) return std::nullopt;
  series_result r{s.summary.last.value, std::nan(""), s.summary.last.step, -1};
  if (s.summary.finite_count() > 0) {
    const auto& best = s.kind == storage::series_kind::accuracy ? s.summary.max : s.summary.min;
    r.best_value = best.value;
    r.best_step = best.step;
  }
  return r;
}

bool compared_kind(storage::series_kind k) {
  return k == storage::series_kind::loss || k == storage::series_kind::task_loss ||
         k == storage::series_kind::accuracy;
}

}  // namespace

int run_compare(int argc, char** argv) {
  auto args = parse_args(argc, argv, 1, {"db"}, {"json"});
  if (args.positional.size() != 2) throw usage_error("expected two run ids: compare RUN RUN");
  run_reader reader(args.get("db", default_db));
  std::vector<run_info> runs;
  std::map<std::string, std::vector<std::optional<series_result>>> results;  // by series
  std::map<std::string, std::vector<std::pair<int, int>>> kinds;  // count, worst severity
  for (std::size_t i = 0; i < 2; ++i) {
    runs.push_back(reader.run(parse_int(args.positional[i], "RUN", 1, INT64_MAX)));
    for (const auto& s : reader.series(runs.back().id)) {
      if (!compared_kind(s.kind) || s.summary.count == 0) continue;
      results[s.name].resize(2);
      results[s.name][i] = result_of(s);
    }
    for (const auto& f : reader.findings(runs.back().id)) {
      auto& v = kinds[f.f.kind];
      v.resize(2, {0, -1});
      v[i].first += 1;
      v[i].second = std::max(v[i].second, int(f.f.level));
    }
  }
  if (args.has("json")) {
    auto series = nlohmann::json::array();
    for (const auto& [name, rs] : results) {
      auto per_run = nlohmann::json::array();
      for (const auto& r : rs)
        per_run.push_back(r ? nlohmann::json{{"final", json_number(r->final_value)},
                                             {"final_step", r->final_step},
                                             {"best", json_number(r->best_value)},
                                             {"best_step", r->best_step}}
                            : nlohmann::json());
      series.push_back({{"name", name}, {"runs", per_run}});
    }
    auto findings = nlohmann::json::array();
    for (const auto& [kind, v] : kinds) {
      auto counts = nlohmann::json::array(), worst = nlohmann::json::array();
      for (const auto& [n, sev] : v) {
        counts.push_back(n);
        worst.push_back(sev < 0 ? nlohmann::json() : nlohmann::json(to_string(severity(sev))));
      }
      findings.push_back({{"kind", kind}, {"counts", counts}, {"worst", worst}});
    }
    print_json({{"runs", {run_json(runs[0]), run_json(runs[1])}},
                {"series", series},
                {"findings", findings}});
    return 0;
  }
  auto at = [](double v, std::int64_t step) {
    return step < 0 ? std::string("-") : short_number(v) + " @ " + std::to_string(step);
  };
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"", "run " + std::to_string(runs[0].id) + " (" + runs[0].name + ")",
                  "run " + std::to_string(runs[1].id) + " (" + runs[1].name + ")"});
  rows.push_back(
      {"status", std::string(to_string(runs[0].status)), std::string(to_string(runs[1].status))});
  rows.push_back({"steps", std::to_string(runs[0].steps), std::to_string(runs[1].steps)});
  rows.push_back(
      {"duration", duration_text(runs[0].duration()), duration_text(runs[1].duration())});
  for (const auto& [name, rs] : results) {
    rows.push_back({name + " final", rs[0] ? at(rs[0]->final_value, rs[0]->final_step) : "-",
                    rs[1] ? at(rs[1]->final_value, rs[1]->final_step) : "-"});
    rows.push_back({name + " best", rs[0] ? at(rs[0]->best_value, rs[0]->best_step) : "-",
                    rs[1] ? at(rs[1]->best_value, rs[1]->best_step) : "-"});
  }
  if (kinds.empty()) rows.push_back({"findings", "0", "0"});
  for (const auto& [kind, v] : kinds) {
    auto cell = [](std::pair<int, int> c) {
      return c.first == 0 ? std::string("0")
                          : std::to_string(c.first) + " (" +
                                std::string(to_string(severity(c.second))) + ")";
    };
    rows.push_back({"finding " + kind, cell(v[0]), cell(v[1])});
  }
  print_table(rows);
  return 0;
}

#define LOSSLENS_DB_OPTION "  --db PATH        run-history database (default runs.db)\n"
#define LOSSLENS_JSON_OPTION "  --json           print JSON instead of a table\n"
#define LOSSLENS_EXIT_STATUS \
  "\nexit status: 0 done, 1 missing/unreadable database or unknown run, 2 bad usage\n"

const std::string_view runs_usage =
    "usage: losslens runs [--db PATH] [--json]\n\n"
    "Lists the recorded runs: id, name, status (running, finished, crashed), steps,\n"
    "duration and the worst finding.\n\noptions:\n" LOSSLENS_DB_OPTION LOSSLENS_JSON_OPTION
        LOSSLENS_EXIT_STATUS;

const std::string_view findings_usage =
    "usage: losslens findings [--run ID] [--kind KIND] [--all] [--db PATH] [--json]\n\n"
    "Lists stored findings, of one run or of all runs, optionally of one kind\n"
    "(e.g. loss_spike, non_finite). A finding is an incident (every episode of one kind on\n"
    "one series), one row each: run, id, severity, kind, steps (first-last), episodes,\n"
    "series, message; an indented `preceded by:` line below names the earlier incident it\n"
    "follows, `also:` lines the findings that are other signs of the same state (e.g.\n"
    "chance_level beside the vanishing_gradients of one collapse; listed there instead of\n"
    "as rows of their own), and a `replay:` line the file the batch behind it was saved to\n"
    "(monitor::capture; JSON: \"replay\": [{\"step\", \"path\"}]).\n\noptions:\n"
    "  --run ID         only this run\n"
    "  --kind KIND      only this kind\n"
    "  --all            also list each incident's episodes, one indented line each:\n"
    "                     episode 3: steps 900-912 warning peak 14.2\n"
    "                   (the first 32 and the latest 32 are kept; a line counts the "
    "others)\n" LOSSLENS_DB_OPTION
    "  --json           print JSON instead of a table (each finding with episodes, spans,\n"
    "                   cause_id, cause, symptom_of_id and symptom_of)\n" LOSSLENS_EXIT_STATUS;

const std::string_view metrics_usage =
    "usage: losslens metrics --run ID --series NAME [--from S] [--to S] [--max-points N]\n"
    "                        [--db PATH] [--json]\n\n"
    "Prints a series over a step range, reduced to at most N points: per bucket the first,\n"
    "smallest, largest and last value and the first NaN/Inf, so no spike is hidden.\n"
    "Every point is printed when the range holds at most N steps.\n\noptions:\n"
    "  --run ID         the run (see losslens runs)\n"
    "  --series NAME    e.g. loss, loss/<task>, grad_norm, lr, accuracy\n"
    "  --from S, --to S step range (default: the whole series)\n"
    "  --max-points N   at most N points (8 or more, default 2000)\n" LOSSLENS_DB_OPTION
    "  --json           print {\"points\":[...],\"buckets\":[...],...}\n" LOSSLENS_EXIT_STATUS;

const std::string_view export_usage =
    "usage: losslens export --run ID [--format csv|json] [--db PATH]\n"
    "       losslens export --run ID --format tfevents --out DIR [--db PATH]\n\n"
    "Writes every point of a run to standard output. CSV uses the columns of\n"
    "`losslens analyze` input (step, wall_time, loss, loss/<task>, grad_norm, grad_norm/<name>,\n"
    "lr, accuracy; nan/inf/-inf as values, empty = missing), so\n"
    "  losslens export --run 3 | losslens analyze -\n"
    "re-runs the detectors. JSON adds the run, its findings and events.\n"
    "tfevents writes a TensorBoard event file into DIR (created if needed), named\n"
    "events.out.tfevents.<start>.losslens.run<ID>: one scalar event per point, tagged with the\n"
    "series name (loss, loss/<task>, grad_norm, lr...), the point's step and wall time, the\n"
    "value as float32 (TensorBoard's simple_value); `tensorboard --logdir DIR` shows it.\n"
    "\noptions:\n"
    "  --run ID         the run\n"
    "  --format F       csv (default), json or tfevents\n"
    "  --out DIR        tfevents: the directory of the event file (an existing file of the\n"
    "                   same name is not overwritten)\n"
    "  --json           same as --format json\n" LOSSLENS_DB_OPTION LOSSLENS_EXIT_STATUS;

const std::string_view compare_usage =
    "usage: losslens compare RUN RUN [--db PATH] [--json]\n\n"
    "Shows two runs side by side: status, steps, duration, final and best value of each\n"
    "loss and accuracy series, and their findings by kind.\n\noptions:\n" LOSSLENS_DB_OPTION
        LOSSLENS_JSON_OPTION LOSSLENS_EXIT_STATUS;

}  // namespace losslens::cli
