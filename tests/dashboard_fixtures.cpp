#include "dashboard_fixtures.hpp"

#include <cctype>

#include <nlohmann/json.hpp>

#include "dashboard_trace.hpp"

namespace losslens::test {

finding make_finding(std::uint64_t id, std::int64_t first, std::int64_t last) {
  finding f = dashboard_finding(id, first, last);
  f.evidence = {{"value", inf_v}, {"median", nan_v}};
  f.episodes = 3;  // an incident: two spans kept, one not
  f.spans = {{first, first, severity::warning, 7.5}, {last, last, severity::warning, inf_v}};
  f.cause_id = 4;
  f.cause = "task_dominance at step 0 (rec is 99.98% of the loss)";
  return f;
}

storage::run_options make_run(const std::string& name) {
  storage::run_options o;
  o.name = name;
  o.schema = {{"cls", "rec"}, {"fc1.weight"}};
  return o;
}

void write_history(const std::string& db) {
  {
    storage::run_writer w(db, make_run("first"));
    auto loss = *w.find_series("loss");
    auto cls = *w.find_series("loss/cls");
    for (int s = 0; s < 500; ++s) {
      double v = s == 100 ? nan_v : s == 200 ? inf_v : s == 300 ? -inf_v : 1.0 / (1 + s);
      w.append(loss, s, s * 0.1, v);
      w.append(cls, s, s * 0.1, 0.5 / (1 + s));
    }
    w.record_finding(make_finding(7, 200, 210));
  }
  storage::run_writer w(db, make_run("bad\xff\xfe name"));
  w.append(0, 0, 0, 1.0);
}

dashboard::server_options options_for(const std::string& db) {
  dashboard::server_options o;
  o.db_path = db;
  o.port = 0;
  return o;
}

served_history::served_history(const tweak_options& tweak) : srv(options(db, tweak)) {
  srv.start();
}

dashboard::server_options served_history::options(const std::string& db,
                                                  const tweak_options& tweak) {
  write_history(db);
  auto o = options_for(db);
  if (tweak) tweak(o);
  return o;
}

served_live::served_live(const char* name, const tweak_options& tweak)
    : served_history(tweak), w(db, make_run(name), fast_commits()), loss(*w.find_series("loss")) {}

storage::writer_options served_live::fast_commits() {
  storage::writer_options wo;
  wo.flush_interval = std::chrono::milliseconds(20);
  return wo;
}

std::string pct(std::string_view s) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += char(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

cli_result run_cli(const std::vector<std::string>& args) {
  testing::child_options o;
  o.err = testing::stream::inherit;
  return testing::run_process(LOSSLENS_CLI, args, o);
}

bool valid_json(const std::string& text) {
  try {
    auto j = nlohmann::json::parse(text);
    return !j.is_discarded();
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

}  // namespace losslens::test
