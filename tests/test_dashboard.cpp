// Live dashboard: the JSON API against the storage reader, errors, path traversal, tokens, and
// the websocket protocol with real Beast clients on loopback (port 0).

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <thread>

#include "dashboard_client.hpp"
#include "dashboard_trace.hpp"
#include "losslens/dashboard/server.hpp"
#include "losslens/error.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/storage/run_writer.hpp"

using namespace losslens;
using namespace losslens::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

const double nan_v = std::numeric_limits<double>::quiet_NaN();
const double inf_v = std::numeric_limits<double>::infinity();

/// A finding whose evidence holds Inf and NaN.
finding make_finding(std::uint64_t id, std::int64_t first, std::int64_t last) {
  finding f = dashboard_finding(id, first, last);
  f.evidence = {{"value", inf_v}, {"median", nan_v}};
  return f;
}

storage::run_options make_run(const std::string& name) {
  storage::run_options o;
  o.name = name;
  o.schema = {{"cls", "rec"}, {"fc1.weight"}};
  return o;
}

/// A finished run with NaN/Inf points and a finding, and a run with an invalid UTF-8 name.
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

using tweak_options = std::function<void(dashboard::server_options&)>;

/// The history of write_history() in a fresh database, served on an ephemeral port.
struct served_history {
  temp_dir dir;
  std::string db = dir.file("runs.db");
  dashboard::server srv;
  explicit served_history(const tweak_options& tweak = {}) : srv(options(db, tweak)) {
    srv.start();
  }
  static dashboard::server_options options(const std::string& db, const tweak_options& tweak) {
    write_history(db);
    auto o = options_for(db);
    if (tweak) tweak(o);
    return o;
  }
};

/// Plus a run being written (committing every 20 ms).
struct served_live : served_history {
  storage::run_writer w;
  storage::run_writer::series_handle loss;
  explicit served_live(const char* name, const tweak_options& tweak = {})
      : served_history(tweak), w(db, make_run(name), fast_commits()),
        loss(*w.find_series("loss")) {}
  static storage::writer_options fast_commits() {
    storage::writer_options wo;
    wo.flush_interval = 20ms;
    return wo;
  }
};

std::string bearer(const std::string& t) { return "Bearer " + t; }

/// What a subscriber has seen of a run: points per series (checked to arrive in step order
/// with no gap or repeat), the latest version of each finding, the status.
struct live_view {
  std::map<std::string, std::int64_t> next_step;  ///< per series, the step expected next
  std::map<std::string, int> non_finite;
  std::map<std::uint64_t, std::int64_t> finding_last_step;
  std::string status;
  bool in_order = true;

  void apply(const json& m) {
    if (m["type"] != "delta" && m["type"] != "subscribed") return;
    status = m["status"];
    if (m["type"] == "subscribed") {
      for (const auto& [name, last] : m["last_steps"].items()) next_step[name] = last.get<std::int64_t>() + 1;
      return;
    }
    for (const auto& [name, pts] : m["points"].items())
      for (const auto& pt : pts) {
        if (pt[0] != next_step[name]) in_order = false;
        next_step[name] = pt[0].get<std::int64_t>() + 1;
        if (pt[1].is_string()) ++non_finite[name];
      }
    for (const auto& f : m["findings"]) finding_last_step[f["id"]] = f["last_step"];
  }
};

/// Reads messages into v until pred(v) holds or the time is up.
template <class Pred>
bool wait_for(ws_client& c, live_view& v, Pred pred, std::chrono::milliseconds timeout = 10s) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred(v)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0 || c.closed()) return false;
    if (auto m = c.next(left)) v.apply(*m);
  }
  return true;
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
  }

  auto pts = http_request(srv.port(), "/api/runs/1/points?series=loss&from=0&to=499&max_points=40");
  REQUIRE(pts.status == 200);
  auto pj = pts.json();
  auto w = reader.window(reader.find_series(1, "loss").id, 0, 499, 40);
  REQUIRE(pj["points"].size() == w.points.size());
  for (std::size_t i = 0; i < w.points.size(); ++i) {
    CHECK(pj["points"][i][0] == w.points[i].step);
    CHECK(pj["points"][i][1] == json_number(w.points[i].value));
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

  auto page = http_request(srv.port(), "/");
  CHECK(page.status == 200);
  CHECK(page.content_type.find("text/html") == 0);
  CHECK(http_request(srv.port(), "/uPlot.iife.min.js").status == 200);
  CHECK(http_request(srv.port(), "/app.js").status == 200);
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
                 bad{"/api/runs/1/points?series=loss&from=x", 400},
                 bad{"/api/runs/1/nothing", 404}, bad{"/api/other", 404},
                 bad{"/nope.html", 404}, bad{"/api/runs/1/points?series=%zz", 400}}) {
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
                        "/..%2f..%2fetc%2fpasswd", "/app.js/../../etc/passwd",
                        "//etc/passwd", "/index.html%00", "/%5c..%5c..%5cetc%5cpasswd",
                        "/api/../../etc/passwd"}) {
    INFO(t);
    auto a = http_request(srv.port(), t);
    CHECK((a.status == 400 || a.status == 404));
    CHECK(a.body.find("root:") == std::string::npos);
  }
}

TEST_CASE("dashboard token is required when set", "[dashboard][http][ws]") {
  served_history h([](dashboard::server_options& o) { o.token = "s3cret-token"; });
  auto& srv = h.srv;
  auto& db = h.db;
  auto p = srv.port();
  CHECK(http_request(p, "/api/runs").status == 401);
  CHECK(http_request(p, "/").status == 401);
  CHECK(http_request(p, "/api/runs", bearer("wrong")).status == 401);
  CHECK(http_request(p, "/api/runs", bearer("s3cret-token-and-more")).status == 401);
  CHECK(http_request(p, "/api/runs?token=s3cret-toke").status == 401);
  CHECK(http_request(p, "/api/runs", bearer("s3cret-token")).status == 200);
  CHECK(http_request(p, "/api/runs?token=s3cret-token").status == 200);
  CHECK_THROWS(ws_client(p, "/ws"));
  CHECK_THROWS(ws_client(p, "/ws?token=nope"));
  ws_client c(p, "/ws?token=s3cret-token");
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

TEST_CASE("dashboard websocket streams deltas and findings of a live run", "[dashboard][ws]") {
  served_live h("live");
  auto& srv = h.srv;
  auto& w = h.w;
  auto& loss = h.loss;
  for (int s = 0; s < 10; ++s) w.append(loss, s, 0, 1.0);
  REQUIRE(w.flush());
  ws_client c(srv.port());
  c.send_json({{"type", "subscribe"}, {"run", w.run_id()}});
  auto ack = c.next_of_type("subscribed", 3s);
  REQUIRE(ack);
  CHECK((*ack)["run"] == w.run_id());
  CHECK((*ack)["status"] == "running");
  CHECK((*ack)["last_steps"]["loss"] == 9);
  live_view v;
  v.apply(*ack);

  // Stream points; every step after the acknowledged one arrives once, in order.
  const std::int64_t last = 2000;
  std::thread producer([&] {
    for (std::int64_t s = 10; s <= last; ++s) {
      w.append(loss, s, 0, s == 1500 ? nan_v : double(s));
      if (s % 100 == 0) std::this_thread::sleep_for(10ms);
    }
    w.record_finding(make_finding(1, 1500, 1500));
    w.flush();
  });
  bool all = wait_for(c, v, [&](const live_view& x) {
    return x.next_step.at("loss") == last + 1 && x.finding_last_step.count(1);
  });
  producer.join();
  CHECK(all);
  CHECK(v.in_order);
  CHECK(v.non_finite["loss"] == 1);
  CHECK(v.finding_last_step[1] == 1500);

  // An update of the finding (same id, grown episode) is pushed too.
  w.record_finding(make_finding(1, 1500, 1600));
  w.flush();
  CHECK(wait_for(c, v, [](const live_view& x) { return x.finding_last_step.at(1) == 1600; }));

  SECTION("at most about 10 frames per second per client") {
    auto frames0 = c.frames();
    auto t0 = std::chrono::steady_clock::now();
    std::int64_t s = last + 1;
    while (std::chrono::steady_clock::now() - t0 < 1500ms) {
      w.append(loss, s++, 0, 1.0);
      std::this_thread::sleep_for(2ms);
      while (auto m = c.next(1ms)) v.apply(*m);
    }
    auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(double(c.frames() - frames0) / seconds <= 12);
    CHECK(c.frames() - frames0 >= 5);
    CHECK(v.in_order);
  }
  SECTION("the run's end is pushed") {
    w.finish();
    CHECK(wait_for(c, v, [](const live_view& x) { return x.status == "finished"; }));
  }
}

TEST_CASE("dashboard websocket rejects malformed and oversized messages", "[dashboard][ws]") {
  served_history h([](dashboard::server_options& o) { o.max_frame_bytes = 1024; });
  auto& srv = h.srv;

  ws_client c(srv.port());
  for (const char* bad : {"not json", "[]", "{\"type\":42}", "{\"type\":\"subscribe\"}",
                          "{\"type\":\"subscribe\",\"run\":\"1\"}",
                          "{\"type\":\"subscribe\",\"run\":-4}", "{\"type\":\"dance\"}"}) {
    INFO(bad);
    c.send(bad);
    auto m = c.next(2s);
    REQUIRE(m);
    CHECK((*m)["type"] == "error");
    CHECK((*m)["error"].is_string());
  }
  c.send_binary("\x01\x02");
  auto m = c.next(2s);
  REQUIRE(m);
  CHECK((*m)["type"] == "error");
  c.send_json({{"type", "subscribe"}, {"run", 999}});
  m = c.next_of_type("error", 2s);
  REQUIRE(m);
  CHECK((*m)["run"] == 999);
  c.send_json({{"type", "ping"}});
  m = c.next(2s);
  REQUIRE(m);
  CHECK((*m)["type"] == "pong");  // still usable

  // A message over the limit closes that connection, and only that one.
  ws_client big(srv.port());
  big.send(std::string(4096, 'x'));
  CHECK(!big.next(3s));
  CHECK(big.closed());
  c.send_json({{"type", "ping"}});
  m = c.next(2s);
  REQUIRE(m);
  CHECK((*m)["type"] == "pong");
  // Oversized HTTP requests are refused.
  CHECK(http_request(srv.port(), "/api/runs?" + std::string(10000, 'a')).status == 431);
}

TEST_CASE("dashboard serves 200 concurrent websocket clients", "[dashboard][ws]") {
  served_live h("many");
  auto& srv = h.srv;
  auto& w = h.w;
  auto& loss = h.loss;

  std::vector<std::unique_ptr<ws_client>> clients;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(std::make_unique<ws_client>(srv.port()));
    clients.back()->send_json({{"type", "subscribe"}, {"run", w.run_id()}});
  }
  for (auto& c : clients) REQUIRE(c->next_of_type("subscribed", 5s));
  for (int s = 0; s < 1000; ++s) {
    w.append(loss, s, 0, double(s));
    if (s % 100 == 0) std::this_thread::sleep_for(5ms);
  }
  REQUIRE(w.flush());
  int complete = 0;
  for (auto& c : clients) {
    live_view v;
    v.next_step["loss"] = 0;
    complete += wait_for(*c, v, [](const live_view& x) { return x.next_step.at("loss") == 1000; }) &&
                v.in_order;
  }
  CHECK(complete == 200);
  CHECK(srv.stats().clients == 200);
  CHECK(srv.stats().slow_drops == 0);
}

TEST_CASE("dashboard drops a client that never reads, others are unaffected",
          "[dashboard][ws]") {
  served_live h("stuck", [](dashboard::server_options& o) { o.max_queue_bytes = 1 << 20; });
  auto& srv = h.srv;
  auto& w = h.w;
  auto& loss = h.loss;

  ws_client stuck(srv.port(), "/ws", 4096);
  stuck.send_json({{"type", "subscribe"}, {"run", w.run_id()}});
  ws_client healthy(srv.port());
  healthy.send_json({{"type", "subscribe"}, {"run", w.run_id()}});
  REQUIRE(healthy.next_of_type("subscribed", 3s));

  // Stream until the server gives up on the stuck client (bounded).
  live_view v;
  v.next_step["loss"] = 0;
  std::int64_t s = 0;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (srv.stats().slow_drops == 0 && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 20000; ++i) {
      while (!w.try_append(loss, s, 0, double(s) * 1.000001)) std::this_thread::yield();
      ++s;
    }
    while (auto m = healthy.next(20ms)) v.apply(*m);
  }
  CHECK(srv.stats().slow_drops == 1);
  CHECK(srv.stats().clients == 1);
  // The healthy client received every point, in order.
  REQUIRE(w.flush());
  CHECK(wait_for(healthy, v, [&](const live_view& x) { return x.next_step.at("loss") == s; }, 20s));
  CHECK(v.in_order);
  CHECK(!healthy.closed());
}

namespace {

/// `losslens serve ARGS` as a child process with its stdout on a pipe.
struct serve_process {
  pid_t pid = -1;
  FILE* out = nullptr;
  explicit serve_process(std::vector<std::string> args) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      ::unsetenv("LOSSLENS_TOKEN");
      std::vector<char*> argv{const_cast<char*>(LOSSLENS_CLI), const_cast<char*>("serve")};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(LOSSLENS_CLI, argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out = ::fdopen(fds[0], "r");
  }
  std::string line() {
    char buf[512];
    return std::fgets(buf, sizeof buf, out) ? std::string(buf) : std::string();
  }
  int wait() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  ~serve_process() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      wait();
    }
    if (out) std::fclose(out);
  }
};

}  // namespace

TEST_CASE("losslens serve starts, answers and stops on SIGTERM and SIGINT", "[dashboard][cli]") {
  temp_dir dir;
  auto db = dir.file("runs.db");
  write_history(db);  // not served in-process: the CLI serves it
  for (int sig : {SIGTERM, SIGINT}) {
    serve_process p({"--db", db, "--port", "0"});
    auto first = p.line();
    INFO(first);
    auto at = first.find("http://127.0.0.1:");
    REQUIRE(at != std::string::npos);
    auto port = std::uint16_t(std::stoi(first.substr(at + 17)));
    auto runs = http_request(port, "/api/runs");
    CHECK(runs.status == 200);
    CHECK(runs.json()["runs"].size() == 2);
    ::kill(p.pid, sig);
    CHECK(p.wait() == 0);
  }
  SECTION("setup errors exit 1, usage errors 2") {
    serve_process missing({"--db", dir.file("nope.db"), "--port", "0"});
    CHECK(missing.wait() == 1);
    serve_process open({"--db", db, "--port", "0", "--host", "0.0.0.0"});
    CHECK(open.wait() == 1);
    serve_process bad_port({"--db", db, "--port", "70000"});
    CHECK(bad_port.wait() == 2);
  }
}
