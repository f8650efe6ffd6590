// Live dashboard, limits and hostile input (issue #8): path traversal in every encoding,
// oversized and malformed requests, slowloris, connections dropped abruptly, invalid UTF-8 and
// SQL metacharacters everywhere (API, websocket, CLI).

#include <catch2/catch.hpp>

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dashboard_fixtures.hpp"
#include "losslens/storage/run_reader.hpp"

using namespace losslens;
using namespace losslens::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

/// One websocket text frame from a client (masked with a zero key, so the payload is as is).
std::string client_frame(const std::string& text) {
  REQUIRE(text.size() < 126);
  std::string f;
  f += char(0x81);
  f += char(0x80 | text.size());
  f += std::string(4, '\0');
  return f + text;
}

const std::string ws_upgrade_request =
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

}  // namespace

TEST_CASE("dashboard refuses path traversal in every encoding", "[dashboard][http][hostile]") {
  served_history h;
  auto p = h.srv.port();
  for (std::string t : {"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
                        "/.%2e/.%2e/etc/passwd",
                        "/%2e./%2e./etc/passwd",
                        "/%252e%252e/%252e%252e/etc/passwd",
                        "/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
                        "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
                        "/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
                        "/..%c0%af..%c0%afetc/passwd",
                        "/%e0%80%ae%e0%80%ae/etc/passwd",
                        "/..%5c..%5cetc%5cpasswd",
                        "/..\\..\\etc\\passwd",
                        "/index.html%00.js",
                        "/%00",
                        "/./././../etc/passwd",
                        "/app.js/%2e%2e/%2e%2e/etc/passwd",
                        "/api/runs/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                        "/api/runs/1/..%2f..%2f..%2fetc%2fpasswd",
                        "/%u002e%u002e/etc/passwd",
                        "/%2",
                        "/%%32%65",
                        "http://127.0.0.1/../../etc/passwd",
                        "*",
                        "../../etc/passwd",
                        "/etc/passwd",
                        "/proc/self/environ",
                        "//etc//passwd",
                        "/uPlot.iife.min.js/../../../etc/passwd",
                        "/web/../CMakeLists.txt",
                        "/dashboard/web/app.js"}) {
    INFO(t);
    auto a = raw_http(p, "GET " + t + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    CHECK((a.status == 400 || a.status == 404));
    CHECK(valid_json(a.body));
    CHECK(a.body.find("root:") == std::string::npos);
    CHECK(a.body.find("PATH=") == std::string::npos);
  }
  // The page itself is still there.
  CHECK(raw_http(p, "GET /js/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").status == 200);
}

TEST_CASE("dashboard answers 431 and 413 to oversized requests and 400 to malformed ones",
          "[dashboard][http][hostile]") {
  served_history h;
  auto p = h.srv.port();
  const std::string get = "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  // Headers over max_header_bytes (8 KiB): one huge header, many small ones, a huge target.
  CHECK(raw_http(p, get + "X-Big: " + std::string(100000, 'a') + "\r\n\r\n").status == 431);
  std::string many;
  for (int i = 0; i < 400; ++i)
    many += "X-H" + std::to_string(i) + ": " + std::string(40, 'b') + "\r\n";
  CHECK(raw_http(p, get + many + "\r\n").status == 431);
  CHECK(raw_http(p, "GET /api/runs?" + std::string(20000, 'q') + " HTTP/1.1\r\n\r\n").status ==
        431);
  // Bodies over max_request_body (4 KiB): announced, sent, chunked.
  CHECK(raw_http(
            p, "POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\nabc")
            .status == 413);
  CHECK(raw_http(p, "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n" +
                        std::string(5000, 'c'))
            .status == 413);
  std::string chunked =
      "POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 10; ++i) chunked += "400\r\n" + std::string(1024, 'd') + "\r\n";
  CHECK(raw_http(p, chunked + "0\r\n\r\n").status == 413);
  // Malformed requests: a clean 400, never a crash.
  for (std::string bad :
       {std::string("GET /api/runs HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        std::string("GET /api/runs HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
        std::string("GET /api/runs HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        std::string("POST /api/runs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        std::string("GET /api/runs HTTP/9.9\r\n\r\n"), std::string("GET /api/runs\r\n\r\n"),
        std::string("G\x01T /api/runs HTTP/1.1\r\n\r\n"),
        std::string("GET /api/runs HTTP/1.1\r\nBad Header: x\r\n\r\n"),
        std::string("GET /api/runs HTTP/1.1\r\nX: a\x01b\r\n\r\n"), std::string("\r\n\r\n\r\n"),
        std::string("GET /a b c HTTP/1.1\r\n\r\n")}) {
    INFO(bad);
    auto a = raw_http(p, bad);
    CHECK(a.status == 400);
    CHECK(valid_json(a.body));
  }
  // None of it cost the server anything: it answers, and every connection is closed.
  CHECK(http_request(p, "/api/runs").status == 200);
  CHECK(eventually([&] { return h.srv.stats().open_connections == 0; }));
}

TEST_CASE("dashboard closes slowloris connections by its timeout and serves others meanwhile",
          "[dashboard][http][hostile]") {
  served_history h([](dashboard::server_options& o) { o.http_timeout = 1s; });
  auto p = h.srv.port();
  net::io_context ioc;
  std::vector<std::unique_ptr<raw_conn>> slow;
  for (int i = 0; i < 200; ++i) {
    slow.push_back(std::make_unique<raw_conn>(ioc, p));
    if (i % 4) slow.back()->write("GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    // i % 4 == 0: connects and sends nothing at all
  }
  // Trickle one header byte per connection every 50 ms; a normal client is served meanwhile.
  const std::string trickle = "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
  int served = 0, open = 200;
  std::size_t pos = 0;
  auto end = std::chrono::steady_clock::now() + 30s;
  while (open > 0 && std::chrono::steady_clock::now() < end) {
    for (std::size_t i = 0; i < slow.size(); ++i)
      if (i % 4) slow[i]->write(std::string(1, trickle[pos % trickle.size()]));
    ++pos;
    if (pos % 10 == 0 && http_request(p, "/api/runs").status == 200) ++served;
    open = 0;
    for (auto& c : slow) open += c->poll();
    std::this_thread::sleep_for(50ms);
  }
  CHECK(open == 0);    // every slow connection was closed by the server
  CHECK(served >= 1);  // and a normal client was answered while they trickled
  int answered = 0;
  for (auto& c : slow) answered += c->received.find("HTTP/1.1 200") != std::string::npos;
  CHECK(answered == 0);  // none of them ever completed a request
  CHECK(http_request(p, "/api/runs").status == 200);
  CHECK(eventually([&] { return h.srv.stats().open_connections == 0; }));
}

TEST_CASE("dashboard survives 3000 connections dropped abruptly",
          "[dashboard][http][ws][hostile]") {
  served_live h("abrupt");
  auto p = h.srv.port();
  for (int s = 0; s < 2000; ++s) h.w.append(h.loss, s, 0, double(s));
  REQUIRE(h.w.flush());
  const auto run = std::to_string(h.w.run_id());
  const std::string subscribe = client_frame(R"({"type":"subscribe","run":)" + run + "}");
  net::io_context ioc;
  int answered_between = 0;
  for (int wave = 0; wave < 12; ++wave) {
    std::vector<std::unique_ptr<raw_conn>> conns;
    for (int i = 0; i < 250; ++i) {
      auto c = std::make_unique<raw_conn>(ioc, p);
      switch (i % 5) {
        case 0:
          break;  // connect, then reset
        case 1:
          c->write("GET /api/runs/" + run + "/points?se");
          break;  // half a request
        case 2:   // a whole request whose answer is never read
          c->write("GET /api/runs/" + run +
                   "/points?series=loss&max_points=100000 HTTP/1.1\r\n"
                   "Host: 127.0.0.1\r\n\r\n");
          break;
        case 3:
          c->write(ws_upgrade_request);
          break;  // upgrade, then gone
        case 4:
          c->write(ws_upgrade_request + subscribe);
          break;  // subscribed, then gone
      }
      conns.push_back(std::move(c));
    }
    h.w.append(h.loss, 2000 + wave, 0, 1.0);              // deltas for the subscribed ones
    std::this_thread::sleep_for(wave % 2 ? 100ms : 0ms);  // some die before, some after accept
    for (auto& c : conns) c->reset();
    answered_between += http_request(p, "/api/runs").status == 200;
  }
  CHECK(answered_between == 12);
  CHECK(h.srv.stats().connections >= 3000);
  // Every session ends: no connection, websocket client or subscription is left behind.
  CHECK(eventually([&] { return h.srv.stats().open_connections == 0; }));
  CHECK(h.srv.stats().clients == 0);
  CHECK(h.srv.stats().refused == 0);
  REQUIRE(h.w.flush());
  ws_client c(p);
  c.send_json({{"type", "subscribe"}, {"run", h.w.run_id()}});
  auto ack = c.next_of_type("subscribed", 5s);
  REQUIRE(ack);
  CHECK((*ack)["last_steps"]["loss"] == 2011);
}

TEST_CASE("every JSON output stays valid with invalid UTF-8 in names and config and findings",
          "[dashboard][http][ws][cli][utf8]") {
  served_history h;
  auto p = h.srv.port();
  const std::string bad_task = "t\xc3";                 // truncated two-byte sequence
  const std::string bad_extra = "x\xed\xa0\x80y";       // an encoded surrogate
  const std::string bad_name = "run \xff\xfe\xc0\xaf";  // invalid bytes and an overlong '/'
  storage::run_options ro;
  ro.name = bad_name;
  ro.schema = {{bad_task}, {"fc\x80.weight"}};
  ro.extra_series = {{bad_extra, storage::series_kind::other}};
  ro.config_json = R"({"lr": 0.1})";
  storage::writer_options wo;
  wo.flush_interval = 20ms;
  storage::run_writer w(h.db, ro, wo);
  auto extra = *w.find_series(bad_extra);
  auto task = *w.find_series("loss/" + bad_task);
  for (int s = 0; s < 50; ++s) {
    w.append(extra, s, 0, double(s));
    w.append(task, s, 0, s == 10 ? nan_v : 1.0);
  }
  finding f = make_finding(3, 10, 12);
  f.series = "loss/" + bad_task;
  f.message = "bad \xff message";
  w.record_finding(f);
  w.record_event("note\xfe", "{\"a\": \"\xff\"}", 5);
  // The writer stores a finding whose strings are not UTF-8 (it used to fail every commit).
  REQUIRE(w.flush());
  CHECK(!w.stats().degraded);
  CHECK(w.stats().write_failures == 0);
  const auto run = w.run_id();
  {
    // Invalid UTF-8 inside the config JSON (the writer validates config; an older or other
    // program may not have): written directly.
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open_v2(h.db.c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    sqlite3_busy_timeout(raw, 5000);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(raw, "UPDATE runs SET config = ?1 WHERE id = ?2", -1, &st,
                               nullptr) == SQLITE_OK);
    const std::string cfg = "{\"k\": \"\xff\xfe\", \"n\": 1}";
    sqlite3_bind_text(st, 1, cfg.data(), int(cfg.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, run);
    CHECK(sqlite3_step(st) == SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(raw);
  }
  storage::run_reader reader(h.db);
  REQUIRE(reader.findings(run).size() == 1);  // stored, its invalid bytes replaced by U+FFFD
  CHECK(reader.findings(run)[0].f.series == "loss/t\xef\xbf\xbd");

  const auto r = "/api/runs/" + std::to_string(run);
  for (const std::string& t : std::vector<std::string>{
           "/api/runs", r, r + "/series", r + "/findings", r + "/events",
           r + "/points?series=" + pct(bad_extra),
           r + "/points?series=" + pct("loss/" + bad_task) + "&max_points=8",
           r + "/points?series=" + pct("nope\xff"), "/api/runs/1/points?series=%ff"}) {
    INFO(t);
    auto a = http_request(p, t);
    CHECK((a.status == 200 || a.status == 404));
    CHECK(valid_json(a.body));
  }
  CHECK(http_request(p, r + "/points?series=" + pct(bad_extra)).json()["points"].size() == 50);

  // Websocket: the run list, the acknowledgement and deltas with the invalid names.
  ws_client c(p);
  c.send_json({{"type", "watch_runs"}});
  c.send_json({{"type", "subscribe"}, {"run", run}});
  bool runs_seen = false, ack_seen = false;
  int delta_points = 0;
  auto end = std::chrono::steady_clock::now() + 10s;
  bool appended = false;
  while (std::chrono::steady_clock::now() < end && !(runs_seen && ack_seen && delta_points >= 20)) {
    std::optional<json> m;
    REQUIRE_NOTHROW(m = c.next(100ms));  // ws_client parses every frame strictly
    if (!m) continue;
    runs_seen |= (*m)["type"] == "runs";
    if ((*m)["type"] == "subscribed") {
      ack_seen = true;
      for (int s = 50; s < 60; ++s) {
        w.append(extra, s, 0, double(s));
        w.append(task, s, 0, 1.0);
      }
      w.record_event("more\xff", "{}", 55);
      appended = true;
    }
    if ((*m)["type"] == "delta")
      for (const auto& [name, pts] : (*m)["points"].items()) delta_points += int(pts.size());
  }
  CHECK(appended);
  CHECK(runs_seen);
  CHECK(delta_points == 20);

  // The CLI's JSON outputs.
  w.finish();
  for (std::vector<std::string> args :
       {std::vector<std::string>{"runs", "--json"},
        {"findings", "--json"},
        {"findings", "--json", "--run", std::to_string(run)},
        {"export", "--run", std::to_string(run), "--format", "json"},
        {"metrics", "--json", "--run", std::to_string(run), "--series", bad_extra},
        {"compare", "--json", "1", std::to_string(run)}}) {
    args.push_back("--db");
    args.push_back(h.db);
    INFO(args[0]);
    auto out = run_cli(args);
    CHECK(out.status == 0);
    CHECK(valid_json(out.out));
  }
}

TEST_CASE("SQL metacharacters in every parameter are exact matches or clean 4xx",
          "[dashboard][http][ws][cli][sql]") {
  served_history h;
  auto p = h.srv.port();
  const std::vector<std::string> metas = {"'",
                                          "\"",
                                          ";",
                                          "--",
                                          "%",
                                          "_",
                                          std::string("a\0b", 3),
                                          "' OR 1=1 --",
                                          "; DROP TABLE runs;",
                                          "loss' OR '1'='1",
                                          "los_",
                                          "loss%",
                                          "*",
                                          "\\",
                                          "1; DELETE FROM points"};
  // One run per name (run names are parameters too), and one run with a series per name.
  for (const auto& m : metas) storage::run_writer named(h.db, make_run(m));
  storage::run_options ro = make_run("' OR 1=1 --");
  for (const auto& m : metas) ro.extra_series.push_back({m, storage::series_kind::other});
  std::int64_t run = 0;
  {
    storage::run_writer w(h.db, ro);
    run = w.run_id();
    for (std::size_t i = 0; i < metas.size(); ++i) {
      auto s = *w.find_series(metas[i]);
      for (int step = 0; step < 10; ++step) w.append(s, step, 0, double(i * 100 + step));
    }
    auto loss = *w.find_series("loss");
    for (int step = 0; step < 10; ++step) w.append(loss, step, 0, -1.0);
  }
  storage::run_reader reader(h.db);
  const auto runs_before = reader.runs().size();
  const auto rs = "/api/runs/" + std::to_string(run);

  // Run names come back exactly.
  auto listed = http_request(p, "/api/runs").json()["runs"];
  REQUIRE(listed.size() == runs_before);
  for (std::size_t i = 0; i < metas.size(); ++i) CHECK(listed[2 + i]["name"] == metas[i]);

  for (std::size_t i = 0; i < metas.size(); ++i) {
    const auto& m = metas[i];
    INFO("parameter " << json(m).dump());
    // Series name: exactly that series, with its own values.
    auto a = http_request(p, rs + "/points?series=" + pct(m));
    REQUIRE(a.status == 200);
    auto j = a.json();
    CHECK(j["series"] == m);
    REQUIRE(j["points"].size() == 10);
    for (int step = 0; step < 10; ++step) CHECK(j["points"][step][1] == double(i * 100 + step));
    // A near miss matches nothing (no LIKE, no quoting games).
    CHECK(http_request(p, rs + "/points?series=" + pct(m + "x")).status == 404);
    CHECK(http_request(p, rs + "/points?series=" + pct("x" + m)).status == 404);
    // Numbers and run ids: 400.
    for (const char* param : {"from", "to", "max_points"})
      CHECK(http_request(p, rs + "/points?series=loss&" + param + "=" + pct(m)).status == 400);
    CHECK(http_request(p, rs + "/points?series=loss&from=1" + pct(m)).status == 400);
    CHECK(http_request(p, "/api/runs/" + pct(m)).status == 400);
    CHECK(http_request(p, "/api/runs/" + pct("1" + m) + "/series").status == 400);
    // Paths: 404 (or 400 for NUL).
    auto other = http_request(p, rs + "/" + pct(m));
    CHECK((other.status == 404 || other.status == 400));
    CHECK(valid_json(other.body));
    auto top = http_request(p, "/api/" + pct(m));
    CHECK((top.status == 404 || top.status == 400));
    // Websocket: a run id that is not an integer is an error message.
    ws_client c(p);
    c.send(std::string(R"({"type":"subscribe","run":)") + json(m).dump() + "}");
    auto e = c.next(2s);
    REQUIRE(e);
    CHECK((*e)["type"] == "error");
  }
  // Unencoded metacharacters in the query: malformed percent-encoding or an unknown series.
  CHECK(http_request(p, rs + "/points?series=%").status == 400);
  CHECK(http_request(p, rs + "/points?series=%27%20OR%201=1%20--&series=loss").status == 200);
  // The CLI's string parameters are exact too.
  auto kind = run_cli({"findings", "--json", "--db", h.db, "--kind", "' OR 1=1 --"});
  CHECK(kind.status == 0);
  CHECK(json::parse(kind.out)["findings"].empty());
  auto metrics = run_cli(
      {"metrics", "--json", "--db", h.db, "--run", std::to_string(run), "--series", "' OR 1=1 --"});
  REQUIRE(metrics.status == 0);
  CHECK(json::parse(metrics.out)["points"].size() == 10);
  CHECK(run_cli({"metrics", "--db", h.db, "--run", std::to_string(run), "--series", "%"}).status ==
        0);
  CHECK(
      run_cli({"metrics", "--db", h.db, "--run", std::to_string(run), "--series", "lo%"}).status ==
      1);
  CHECK(run_cli({"findings", "--db", h.db, "--run", "1 OR 1=1"}).status == 2);

  // The database is intact.
  CHECK(reader.runs().size() == runs_before);
  CHECK(reader.findings(1).size() == 1);
  CHECK(reader.points(reader.find_series(1, "loss").id, 0, INT64_MAX).size() == 500);
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2(h.db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(raw, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "ok");
  sqlite3_finalize(st);
  REQUIRE(sqlite3_prepare_v2(raw, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", -1,
                             &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(sqlite3_column_int(st, 0) == 6);  // runs, series, points, rollups, findings, events
  sqlite3_finalize(st);
  sqlite3_close(raw);
}
