// Live dashboard, HTTP API: answers against the storage reader, errors, static files, tokens
// (on loopback and off it), a run's events and drops. Real Beast clients on loopback (port 0).

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "dashboard_fixtures.hpp"
#include "losslens/error.hpp"
#include "losslens/storage/run_reader.hpp"

using namespace losslens;
using namespace losslens::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

std::string bearer(const std::string& t) { return "Bearer " + t; }

/// The status of a websocket upgrade request (101 accepted, 401 refused, ...).
unsigned ws_upgrade_status(std::uint16_t port, const std::string& target,
                           const std::string& authorization = {}) {
  return raw_http(port,
                  "GET " + target +
                      " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n" +
                      (authorization.empty() ? "" : "Authorization: " + authorization + "\r\n") +
                      "\r\n")
      .status;
}

}  // namespace

TEST_CASE("dashboard API answers match the storage reader", "[dashboard][http]") {
  served_history h;
  auto& srv = h.srv;
  auto& db = h.db;
  REQUIRE(srv.port() != 0);
  storage::run_reader reader(db);

  auto runs = http_request(srv.port(), "/api/runs");
  REQUIRE(runs.status == 200);
  REQUIRE(runs.content_type == "application/json");
  auto rj = runs.json()["runs"];
  auto want = reader.runs();
  REQUIRE(rj.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    CHECK(rj[i]["id"] == want[i].id);
    CHECK(rj[i]["status"] == std::string(to_string(want[i].status)));
    CHECK(rj[i]["steps"] == want[i].steps);
    CHECK(rj[i]["findings"] == want[i].findings);
  }
  CHECK(rj[0]["name"] == "first");
  CHECK(rj[0]["worst_severity"] == "warning");
  // Invalid UTF-8 is replaced, the JSON stays valid.
  CHECK(rj[1]["name"].get<std::string>().find("name") != std::string::npos);

  auto one = http_request(srv.port(), "/api/runs/1").json();
  CHECK(one["name"] == "first");
  CHECK(one["last_step"] == 499);

  auto series = http_request(srv.port(), "/api/runs/1/series").json()["series"];
  auto want_series = reader.series(1);
  REQUIRE(series.size() == want_series.size());
  for (std::size_t i = 0; i < want_series.size(); ++i) {
    CHECK(series[i]["name"] == want_series[i].name);
    CHECK(series[i]["count"] == want_series[i].summary.count);
    CHECK(series[i]["nan_count"] == want_series[i].summary.nan_count);
    CHECK(series[i]["kind"] ==
          std::string(to_string(want_series[i].kind)));  // the page groups by it
  }
  CHECK(series[0]["kind"] == "loss");
  CHECK(series[1]["kind"] == "task_loss");

  auto pts = http_request(srv.port(), "/api/runs/1/points?series=loss&from=0&to=499&max_points=40");
  REQUIRE(pts.status == 200);
  auto pj = pts.json();
  auto w = reader.window(reader.find_series(1, "loss").id, 0, 499, 40);
  REQUIRE(pj["points"].size() == w.points.size());
  for (std::size_t i = 0; i < w.points.size(); ++i) {
    CHECK(pj["points"][i][0] == w.points[i].step);
    CHECK(pj["points"][i][1] == json_number(w.points[i].value));
    // The wall time the writer stored with that step (s * 0.1 above), for the page's time axis.
    CHECK(pj["points"][i][2].get<double>() == Approx(pj["points"][i][0].get<double>() * 0.1));
  }
  CHECK(pj["bucket_width"] == w.bucket_width);
  // Non-finite values stay visible, as strings.
  std::string text = pts.body;
  CHECK(text.find("\"nan\"") != std::string::npos);
  CHECK(text.find("\"inf\"") != std::string::npos);
  CHECK(text.find("\"-inf\"") != std::string::npos);

  auto exact = http_request(srv.port(), "/api/runs/1/points?series=loss%2Fcls").json();
  CHECK(exact["series"] == "loss/cls");
  CHECK(exact["points"].size() == 500);  // the default max_points (1000) covers the run

  auto findings = http_request(srv.port(), "/api/runs/1/findings").json()["findings"];
  auto want_findings = reader.findings(1);
  REQUIRE(findings.size() == want_findings.size());
  CHECK(findings[0]["id"] == 7);
  CHECK(findings[0]["kind"] == "loss_spike");
  CHECK(findings[0]["evidence"]["value"] == "inf");
  CHECK(findings[0]["evidence"]["median"] == "nan");
  CHECK(findings[0]["episodes"] == 3);  // the incident's fields arrive as stored
  REQUIRE(findings[0]["spans"].size() == 2);
  CHECK(findings[0]["spans"][0] ==
        json({{"first_step", 200}, {"last_step", 200}, {"severity", "warning"}, {"peak", 7.5}}));
  CHECK(findings[0]["spans"][1]["first_step"] == 210);
  CHECK(findings[0]["spans"][1]["peak"] == "inf");
  CHECK(findings[0]["cause_id"] == 4);
  CHECK(findings[0]["cause"] == "task_dominance at step 0 (rec is 99.98% of the loss)");

  auto page = http_request(srv.port(), "/");
  CHECK(page.status == 200);
  CHECK(page.content_type.find("text/html") == 0);
  CHECK(http_request(srv.port(), "/uPlot.iife.min.js").status == 200);
  // The page's ES modules: browsers run them only with a JavaScript content type.
  for (const char* js : {"/js/app.js", "/js/util.js", "/js/charts.js", "/js/theme.js"}) {
    auto m = http_request(srv.port(), js);
    CHECK(m.status == 200);
    CHECK(m.content_type.find("text/javascript") == 0);
  }
}

TEST_CASE("dashboard API errors are 4xx JSON", "[dashboard][http]") {
  served_history h;
  auto& srv = h.srv;
  auto p = srv.port();

  struct bad {
    const char* target;
    unsigned status;
  };
  for (auto b : {bad{"/api/runs/999", 404}, bad{"/api/runs/abc", 400}, bad{"/api/runs/-1", 400},
                 bad{"/api/runs/1/points", 400}, bad{"/api/runs/1/points?series=nope", 404},
                 bad{"/api/runs/1/points?series=loss&max_points=3", 400},
                 bad{"/api/runs/1/points?series=loss&from=10&to=5", 400},
                 bad{"/api/runs/1/points?series=loss&from=x", 400}, bad{"/api/runs/1/nothing", 404},
                 bad{"/api/other", 404}, bad{"/nope.html", 404},
                 bad{"/api/runs/1/points?series=%zz", 400}}) {
    INFO(b.target);
    auto a = http_request(p, b.target);
    CHECK(a.status == b.status);
    auto j = json::parse(a.body, nullptr, false);
    REQUIRE(!j.is_discarded());
    CHECK(j.contains("error"));
  }
  auto post = http_request(p, "/api/runs", {}, http::verb::post);
  CHECK(post.status == 405);
}

TEST_CASE("dashboard static files cannot escape their root", "[dashboard][http]") {
  served_history h;
  auto& srv = h.srv;
  for (const char* t : {"/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                        "/..%2f..%2fetc%2fpasswd", "/app.js/../../etc/passwd", "//etc/passwd",
                        "/index.html%00", "/%5c..%5c..%5cetc%5cpasswd", "/api/../../etc/passwd"}) {
    INFO(t);
    auto a = http_request(srv.port(), t);
    CHECK((a.status == 400 || a.status == 404));
    CHECK(a.body.find("root:") == std::string::npos);
  }
}

TEST_CASE("dashboard token is required when set", "[dashboard][http][ws]") {
  served_history h([](dashboard::server_options& o) { o.token = "s3cret-token-0123"; });
  auto& srv = h.srv;
  auto& db = h.db;
  auto p = srv.port();
  CHECK(http_request(p, "/api/runs").status == 401);
  // The page's own files hold no data and are served without the token (the browser does not
  // pass the page's ?token= on to the scripts it loads); the data needs it.
  CHECK(http_request(p, "/").status == 200);
  CHECK(http_request(p, "/api/runs", bearer("wrong")).status == 401);
  CHECK(http_request(p, "/api/runs", bearer("s3cret-token-0123-and-more")).status == 401);
  CHECK(http_request(p, "/api/runs?token=s3cret-token-012").status == 401);
  CHECK(http_request(p, "/api/runs", bearer("s3cret-token-0123")).status == 200);
  CHECK(http_request(p, "/api/runs?token=s3cret-token-0123").status == 200);
  CHECK_THROWS(ws_client(p, "/ws"));
  CHECK_THROWS(ws_client(p, "/ws?token=nope"));
  ws_client c(p, "/ws?token=s3cret-token-0123");
  c.send_json({{"type", "ping"}});
  auto m = c.next(2s);
  REQUIRE(m);
  CHECK((*m)["type"] == "pong");

  SECTION("a non-loopback address needs a token") {
    auto open = options_for(db);
    open.host = "0.0.0.0";
    dashboard::server s2(open);
    CHECK_THROWS_AS(s2.start(), losslens::error);
    CHECK(dashboard::is_loopback("127.0.0.1"));
    CHECK(dashboard::is_loopback("::1"));
    CHECK(!dashboard::is_loopback("0.0.0.0"));
  }
  SECTION("a missing database is a setup error") {
    dashboard::server s3(options_for(h.dir.file("missing.db")));
    CHECK_THROWS_AS(s3.start(), losslens::error);
  }
}

TEST_CASE("dashboard shows a run's events and the samples and points it dropped",
          "[dashboard][http][ws][drops]") {
  served_history h;
  // A writer with a tiny queue fed in bursts: some points are dropped (the writer stores
  // "drops" events {"source": "writer", "count", "total"}); the monitor's own drops events are
  // recorded as the monitor does ({"source": "monitor", "count", "total"}).
  storage::writer_options wo;
  wo.queue_capacity = 16;
  wo.flush_interval = 20ms;
  storage::run_writer w(h.db, make_run("overflow"), wo);
  auto loss = *w.find_series("loss");
  for (int s = 0; s < 5000; ++s) w.append(loss, s, 0, 1.0);
  REQUIRE(w.flush());
  const auto dropped_points = w.stats().dropped;
  REQUIRE(dropped_points > 0);  // 5000 appends without waiting into a 16-point queue
  w.record_event("drops", R"({"source":"monitor","count":12000,"total":12000})", 100);
  w.record_event("drops", R"({"source":"monitor","count":345,"total":12345})", 200);
  w.record_event("drops", "not json at all", 300);  // a user's event must not break anything
  REQUIRE(w.flush());
  const auto run = w.run_id();
  auto p = h.srv.port();
  storage::run_reader reader(h.db);

  auto rj = http_request(p, "/api/runs/" + std::to_string(run)).json();
  CHECK(rj["dropped_samples"] == 12345);
  CHECK(rj["dropped_points"] == dropped_points);
  CHECK(rj["dropped"] == 12345 + dropped_points);
  auto info = reader.run(run);
  CHECK(info.dropped_samples == 12345);
  CHECK(info.dropped_points == std::int64_t(dropped_points));
  auto first = http_request(p, "/api/runs/1").json();  // a run without drops
  CHECK(first["dropped"] == 0);
  CHECK(first["dropped_samples"] == 0);
  CHECK(first["dropped_points"] == 0);
  // The run list (and the CLI) show the same numbers.
  auto listed = http_request(p, "/api/runs").json()["runs"];
  REQUIRE(listed.size() == 3);
  CHECK(listed[2]["dropped"] == rj["dropped"]);
  auto cli = run_cli({"runs", "--db", h.db, "--json"});
  REQUIRE(cli.status == 0);
  auto cj = json::parse(cli.out)["runs"];
  REQUIRE(cj.size() == 3);
  CHECK(cj[2]["dropped"] == rj["dropped"]);
  CHECK(cj[2]["dropped_samples"] == 12345);
  CHECK(cj[2]["dropped_points"] == dropped_points);

  // The events endpoint lists exactly the reader's events.
  auto ev = http_request(p, "/api/runs/" + std::to_string(run) + "/events");
  REQUIRE(ev.status == 200);
  auto ej = ev.json();
  CHECK(ej["run_id"] == run);
  auto want = reader.events(run);
  REQUIRE(ej["events"].size() == want.size());
  int drops = 0, writer_drops = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const auto& e = ej["events"][i];
    CHECK(e["id"] == want[i].id);
    CHECK(e["kind"] == want[i].kind);
    CHECK(e["run_id"] == run);
    if (want[i].step >= 0)
      CHECK(e["step"] == want[i].step);
    else
      CHECK(e["step"].is_null());
    if (e["kind"] != "drops") continue;
    ++drops;
    if (e["detail"].is_object() && e["detail"].value("source", "writer") == "writer") {
      ++writer_drops;
      CHECK(e["detail"]["total"].get<std::int64_t>() <= std::int64_t(dropped_points));
    }
  }
  CHECK(drops == writer_drops + 3);
  CHECK(writer_drops >= 1);
  CHECK(ej["events"].back()["detail"] == "not json at all");  // kept as a string
  CHECK(ej["events"][0]["kind"] == "attach");
  CHECK(http_request(p, "/api/runs/999/events").status == 404);

  // Websocket: events recorded after the acknowledgement come in deltas, each once.
  ws_client c(p);
  c.send_json({{"type", "subscribe"}, {"run", run}});
  auto ack = c.next_of_type("subscribed", 5s);
  REQUIRE(ack);
  CHECK((*ack)["last_event"] == want.back().id);
  w.record_event("drops", R"({"source":"monitor","count":55,"total":12400})", 400);
  w.record_event("custom", R"({"note":"hello"})", 401);
  REQUIRE(w.flush());
  std::vector<json> got;
  auto end = std::chrono::steady_clock::now() + 10s;
  while (got.size() < 2 && std::chrono::steady_clock::now() < end) {
    auto m = c.next(200ms);
    if (!m || (*m)["type"] != "delta") continue;
    REQUIRE((*m).contains("events"));
    for (const auto& e : (*m)["events"]) got.push_back(e);
  }
  REQUIRE(got.size() == 2);
  CHECK(got[0]["kind"] == "drops");
  CHECK(got[0]["detail"]["total"] == 12400);
  CHECK(got[0]["step"] == 400);
  CHECK(got[1]["kind"] == "custom");
  CHECK(got[0]["id"].get<std::int64_t>() > want.back().id);
  CHECK(got[1]["id"].get<std::int64_t>() == got[0]["id"].get<std::int64_t>() + 1);
  while (auto m = c.next(300ms))  // nothing is sent twice
    if ((*m)["type"] == "delta") CHECK((*m)["events"].empty());
  CHECK(http_request(p, "/api/runs/" + std::to_string(run)).json()["dropped_samples"] == 12400);
}

TEST_CASE("dashboard token off loopback: data and websocket need it, the page files do not",
          "[dashboard][http][ws][token]") {
  const std::string token = "t0k-3n_value-4567";
  served_history h([&](dashboard::server_options& o) {
    o.host = "0.0.0.0";  // off loopback: a token is mandatory
    o.token = token;
  });
  auto p = h.srv.port();
  REQUIRE(p != 0);
  // The page's own files: the same bytes with and without a token, and no data in them.
  for (const std::string& target :
       {std::string("/"), std::string("/js/app.js"), std::string("/js/state.js"),
        std::string("/uPlot.iife.min.js"), std::string("/app.css")}) {
    INFO(target);
    auto open = http_request(p, target);
    CHECK(open.status == 200);
    CHECK(open.body == http_request(p, target + "?token=" + token).body);
    CHECK(open.body.find("\"runs\":") == std::string::npos);  // no API answer
  }
  CHECK(http_request(p, "/nope").status == 404);
  for (const std::string& target : {std::string("/api/runs"), std::string("/api/runs/1/events"),
                                    std::string("/api"), std::string("/api/runs/1/series")}) {
    INFO(target);
    auto missing = http_request(p, target);
    CHECK(missing.status == 401);
    CHECK(valid_json(missing.body));
    for (const std::string& auth :
         std::vector<std::string>{"Bearer wrong", "Bearer " + token.substr(0, token.size() - 1),
                                  "Bearer " + token + "x", "bearer " + token, "Bearer  " + token,
                                  "Basic " + token, token, std::string("Bearer ")})
      CHECK(http_request(p, target, auth).status == 401);
    for (const std::string& q :
         std::vector<std::string>{"?token=", "?token=x" + token, "?token=" + token + "%00",
                                  "?Token=" + token, "?token=" + token.substr(1)})
      CHECK(http_request(p, target + q).status == 401);
    CHECK(http_request(p, target, "Bearer " + token).status != 401);
    CHECK(http_request(p, target + "?token=" + token).status != 401);
  }
  // Websocket upgrades: refused with 401 unless the token comes along.
  CHECK(ws_upgrade_status(p, "/ws") == 401);
  CHECK(ws_upgrade_status(p, "/ws?token=wrong") == 401);
  CHECK(ws_upgrade_status(p, "/ws", "Bearer wrong") == 401);
  CHECK(ws_upgrade_status(p, "/ws?token=" + token.substr(0, 5)) == 401);
  CHECK(ws_upgrade_status(p, "/ws?token=" + token) == 101);
  CHECK(ws_upgrade_status(p, "/ws", "Bearer " + token) == 101);
  CHECK(eventually([&] { return h.srv.stats().open_connections == 0; }));
  CHECK(h.srv.stats().clients == 0);
}
