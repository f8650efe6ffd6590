// Live dashboard: the JSON API against the storage reader, errors, path traversal, tokens, and
// the websocket protocol with real Beast clients on loopback (port 0).

#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include <sqlite3.h>

#include <atomic>
#include <cctype>
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
  std::map<std::uint64_t, json> finding_spans;
  std::map<std::uint64_t, std::int64_t> finding_episodes;
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
    for (const auto& f : m["findings"]) {
      finding_last_step[f["id"]] = f["last_step"];
      finding_spans[f["id"]] = f["spans"];
      finding_episodes[f["id"]] = f["episodes"];
    }
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
    CHECK(series[i]["kind"] == std::string(to_string(want_series[i].kind)));  // the page groups by it
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
  served_history h([](dashboard::server_options& o) { o.token = "s3cret-token-0123"; });
  auto& srv = h.srv;
  auto& db = h.db;
  auto p = srv.port();
  CHECK(http_request(p, "/api/runs").status == 401);
  CHECK(http_request(p, "/").status == 401);
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
  CHECK(v.finding_episodes[1] == 3);  // the delta carries the incident's episodes and spans
  REQUIRE(v.finding_spans[1].size() == 2);
  CHECK(v.finding_spans[1][1]["last_step"] == 1600);

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
  // 4 MiB: a few deltas of up to 20,000 points (~0.5 MiB each with wall times) may wait for
  // the healthy client on a loaded machine; the stuck one exceeds it within seconds.
  served_live h("stuck", [](dashboard::server_options& o) { o.max_queue_bytes = 4 << 20; });
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
  // The healthy client reads all the time, on its own thread, as a browser would (reading only
  // between the writer's bursts made it lag behind on a loaded machine and get dropped too).
  std::atomic<bool> streaming{true};
  std::thread reader([&] {
    while (streaming.load())
      if (auto m = healthy.next(20ms)) v.apply(*m);
  });
  while (srv.stats().slow_drops == 0 && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 20000; ++i) {
      while (!w.try_append(loss, s, 0, double(s) * 1.000001)) std::this_thread::yield();
      ++s;
    }
    std::this_thread::sleep_for(20ms);
  }
  streaming = false;
  reader.join();
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
  /// files_limit > 0: the child's RLIMIT_NOFILE (soft and hard).
  explicit serve_process(std::vector<std::string> args, rlim_t files_limit = 0) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      ::unsetenv("LOSSLENS_TOKEN");
      if (files_limit > 0) {
        rlimit files{files_limit, files_limit};
        ::setrlimit(RLIMIT_NOFILE, &files);
      }
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
    serve_process weak({"--db", db, "--port", "0", "--host", "0.0.0.0", "--token", "short"});
    CHECK(weak.wait() == 1);
    serve_process bad_port({"--db", db, "--port", "70000"});
    CHECK(bad_port.wait() == 2);
  }
}

// ---------------------------------------------------------------------------------------------
// Reliability and security (issue #8): queue-overflow drops and events, a sidecar restart under
// a client, hostile HTTP, invalid UTF-8, SQL metacharacters, tokens off loopback.

namespace {

/// Every byte but the unreserved ones percent-encoded.
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

/// `losslens ARGS`: exit status and stdout.
struct cli_result {
  int status = -1;
  std::string out;
};
cli_result run_cli(std::vector<std::string> args) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> argv{const_cast<char*>(LOSSLENS_CLI)};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(LOSSLENS_CLI, argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  cli_result r;
  char buf[65536];
  for (;;) {
    auto n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    r.out.append(buf, std::size_t(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

/// True when text is one valid JSON document (nlohmann also rejects invalid UTF-8).
bool valid_json(const std::string& text) {
  try {
    auto j = json::parse(text);
    return !j.is_discarded();
  } catch (const json::exception&) {
    return false;
  }
}

/// The status of a websocket upgrade request (101 accepted, 401 refused, ...).
unsigned ws_upgrade_status(std::uint16_t port, const std::string& target,
                           const std::string& authorization = {}) {
  return raw_http(port, "GET " + target +
                            " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n" +
                            (authorization.empty() ? "" : "Authorization: " + authorization + "\r\n") +
                            "\r\n")
      .status;
}

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
    if (want[i].step >= 0) CHECK(e["step"] == want[i].step);
    else CHECK(e["step"].is_null());
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

namespace {

/// A websocket client that follows the documented catch-up protocol: subscribe; after
/// `subscribed`, fetch each series' history up to the acknowledged step over HTTP (exact
/// windows of at most 100,000 steps); then keep delta points whose step is larger than the last
/// one held. It reconnects (and catches up again) when the connection is lost.
struct catchup_client {
  std::uint16_t port;
  std::int64_t run;
  std::vector<std::string> names;
  std::map<std::string, std::vector<storage::point>> held;
  std::unique_ptr<ws_client> ws;
  std::string status;
  int gaps = 0;            ///< a step arrived that was not the next one
  int reconnects = 0;
  int http_points = 0;     ///< points that came from HTTP (catch-up)
  int delta_points = 0;    ///< points that came from deltas

  catchup_client(std::uint16_t p, std::int64_t r, std::vector<std::string> n)
      : port(p), run(r), names(std::move(n)) {}

  std::int64_t last(const std::string& n) const {
    auto it = held.find(n);
    return it == held.end() || it->second.empty() ? -1 : it->second.back().step;
  }
  void keep(const std::string& name, std::int64_t step, const json& v, int& counter) {
    auto& pts = held[name];
    std::int64_t prev = pts.empty() ? -1 : pts.back().step;
    if (step <= prev) return;  // already held (HTTP and deltas may overlap)
    if (step != prev + 1) ++gaps;
    pts.push_back({step, 0, v.is_number() ? v.get<double>() : std::nan("")});
    ++counter;
  }
  /// Connects and catches up; false when the server is not there (yet).
  bool connect() {
    try {
      ws = std::make_unique<ws_client>(port);
      ws->send_json({{"type", "subscribe"}, {"run", run}});
      auto ack = ws->next_of_type("subscribed", 5s);
      if (!ack) {
        ws.reset();
        return false;
      }
      status = (*ack)["status"];
      for (const auto& n : names) {
        std::int64_t to = (*ack)["last_steps"].value(n, std::int64_t{-1});
        for (std::int64_t from = last(n) + 1; from <= to; from += 100000) {
          auto hi = std::min(to, from + 99999);
          auto a = http_request(port, "/api/runs/" + std::to_string(run) + "/points?series=" +
                                          pct(n) + "&from=" + std::to_string(from) + "&to=" +
                                          std::to_string(hi) + "&max_points=100000");
          if (a.status != 200) throw std::runtime_error("history: HTTP " + std::to_string(a.status));
          auto j = a.json();
          if (!j["exact"].get<bool>()) throw std::runtime_error("history window not exact");
          for (const auto& pt : j["points"]) keep(n, pt[0], pt[1], http_points);
        }
      }
      return true;
    } catch (const std::exception&) {  // refused: the server is restarting
      ws.reset();
      return false;
    }
  }
  /// Reads for up to `for_ms`; reconnects when the connection is gone.
  void pump(std::chrono::milliseconds for_ms) {
    auto end = std::chrono::steady_clock::now() + for_ms;
    while (std::chrono::steady_clock::now() < end) {
      if (!ws || ws->closed()) {
        if (ws) ++reconnects;
        ws.reset();
        if (!connect()) {
          std::this_thread::sleep_for(50ms);
          continue;
        }
      }
      std::optional<json> m;
      try {
        m = ws->next(50ms);
      } catch (const std::exception&) {
        ws.reset();
        ++reconnects;
        continue;
      }
      if (!m || (*m)["type"] != "delta") continue;
      status = (*m)["status"];
      for (const auto& [name, pts] : (*m)["points"].items())
        for (const auto& pt : pts) keep(name, pt[0], pt[1], delta_points);
    }
  }
};

}  // namespace

TEST_CASE("a client of a restarted losslens serve catches up with every step exactly once",
          "[dashboard][ws][cli][restart]") {
  temp_dir dir;
  auto db = dir.file("runs.db");
  storage::writer_options wo;
  wo.flush_interval = 20ms;
  storage::run_writer w(db, make_run("restarted"), wo);
  auto loss = *w.find_series("loss");
  auto cls = *w.find_series("loss/cls");
  // The trainer: two series, about 2000 steps/s, until told to stop.
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> written{0};
  std::thread trainer([&] {
    for (std::int64_t s = 0; !stop; ++s) {
      w.append(loss, s, 0, double(s));
      w.append(cls, s, 0, s % 997 == 0 ? nan_v : 0.5 * double(s));
      written = s + 1;
      if (s % 20 == 0) std::this_thread::sleep_for(10ms);
    }
  });
  struct stopper {
    std::atomic<bool>& stop;
    std::thread& t;
    ~stopper() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } stop_trainer{stop, trainer};

  auto first = std::make_unique<serve_process>(std::vector<std::string>{"--db", db, "--port", "0"});
  auto line = first->line();
  INFO(line);
  auto at = line.find("http://127.0.0.1:");
  REQUIRE(at != std::string::npos);
  const auto port = std::uint16_t(std::stoi(line.substr(at + 17)));

  catchup_client c(port, w.run_id(), {"loss", "loss/cls"});
  c.pump(1s);
  REQUIRE(c.ws);
  std::unique_ptr<serve_process> server = std::move(first);
  for (int restart = 0; restart < 2; ++restart) {
    auto before = c.last("loss");
    REQUIRE(eventually([&] { c.pump(100ms); return c.last("loss") > before + 500; }));
    // Stop the sidecar mid-stream; the trainer goes on; start it again on the same port.
    ::kill(server->pid, SIGTERM);
    CHECK(server->wait() == 0);
    c.pump(700ms);  // the client notices and retries while the port is closed
    server = std::make_unique<serve_process>(
        std::vector<std::string>{"--db", db, "--port", std::to_string(port)});
    auto again = server->line();
    INFO(again);
    REQUIRE(again.find(":" + std::to_string(port) + "/") != std::string::npos);
    auto resumed = c.last("loss");
    REQUIRE(eventually([&] { c.pump(100ms); return c.last("loss") > resumed + 500; }));
  }
  stop = true;
  trainer.join();
  w.finish();
  const auto total = written.load();
  REQUIRE(eventually([&] {
    c.pump(100ms);
    return c.status == "finished" && c.last("loss") == total - 1 && c.last("loss/cls") == total - 1;
  }));
  CHECK(c.reconnects == 2);
  CHECK(c.gaps == 0);
  CHECK(c.http_points > 0);
  CHECK(c.delta_points > 0);
  // Every committed step exactly once, with its value: the client's view equals the database.
  storage::run_reader reader(db);
  for (const auto& name : c.names) {
    INFO(name);
    auto want = reader.points(reader.find_series(w.run_id(), name).id, 0, INT64_MAX);
    const auto& got = c.held[name];
    REQUIRE(got.size() == want.size());
    REQUIRE(std::int64_t(want.size()) == total);
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      bool same = got[i].step == want[i].step &&
                  (got[i].value == want[i].value ||
                   (std::isnan(got[i].value) && std::isnan(want[i].value)));
      mismatches += !same;
    }
    CHECK(mismatches == 0);
  }
  ::kill(server->pid, SIGTERM);
  CHECK(server->wait() == 0);
}

TEST_CASE("dashboard refuses path traversal in every encoding", "[dashboard][http][hostile]") {
  served_history h;
  auto p = h.srv.port();
  for (std::string t :
       {"/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/.%2e/.%2e/etc/passwd", "/%2e./%2e./etc/passwd", "/%252e%252e/%252e%252e/etc/passwd",
        "/%252e%252e%252f%252e%252e%252fetc%252fpasswd", "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd", "/..%c0%af..%c0%afetc/passwd",
        "/%e0%80%ae%e0%80%ae/etc/passwd", "/..%5c..%5cetc%5cpasswd", "/..\\..\\etc\\passwd",
        "/index.html%00.js", "/%00", "/./././../etc/passwd", "/app.js/%2e%2e/%2e%2e/etc/passwd",
        "/api/runs/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/api/runs/1/..%2f..%2f..%2fetc%2fpasswd",
        "/%u002e%u002e/etc/passwd", "/%2", "/%%32%65", "http://127.0.0.1/../../etc/passwd",
        "*", "../../etc/passwd", "/etc/passwd", "/proc/self/environ", "//etc//passwd",
        "/uPlot.iife.min.js/../../../etc/passwd", "/web/../CMakeLists.txt",
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
  for (int i = 0; i < 400; ++i) many += "X-H" + std::to_string(i) + ": " + std::string(40, 'b') + "\r\n";
  CHECK(raw_http(p, get + many + "\r\n").status == 431);
  CHECK(raw_http(p, "GET /api/runs?" + std::string(20000, 'q') + " HTTP/1.1\r\n\r\n").status == 431);
  // Bodies over max_request_body (4 KiB): announced, sent, chunked.
  CHECK(raw_http(p, "POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\nabc")
            .status == 413);
  CHECK(raw_http(p, "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n" +
                        std::string(5000, 'c'))
            .status == 413);
  std::string chunked = "POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 10; ++i) chunked += "400\r\n" + std::string(1024, 'd') + "\r\n";
  CHECK(raw_http(p, chunked + "0\r\n\r\n").status == 413);
  // Malformed requests: a clean 400, never a crash.
  for (std::string bad : {std::string("GET /api/runs HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
                          std::string("GET /api/runs HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
                          std::string("GET /api/runs HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
                          std::string("POST /api/runs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
                          std::string("GET /api/runs HTTP/9.9\r\n\r\n"),
                          std::string("GET /api/runs\r\n\r\n"),
                          std::string("G\x01T /api/runs HTTP/1.1\r\n\r\n"),
                          std::string("GET /api/runs HTTP/1.1\r\nBad Header: x\r\n\r\n"),
                          std::string("GET /api/runs HTTP/1.1\r\nX: a\x01b\r\n\r\n"),
                          std::string("\r\n\r\n\r\n"),
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
  CHECK(open == 0);      // every slow connection was closed by the server
  CHECK(served >= 1);    // and a normal client was answered while they trickled
  int answered = 0;
  for (auto& c : slow) answered += c->received.find("HTTP/1.1 200") != std::string::npos;
  CHECK(answered == 0);  // none of them ever completed a request
  CHECK(http_request(p, "/api/runs").status == 200);
  CHECK(eventually([&] { return h.srv.stats().open_connections == 0; }));
}

TEST_CASE("dashboard survives 3000 connections dropped abruptly", "[dashboard][http][ws][hostile]") {
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
        case 0: break;  // connect, then reset
        case 1: c->write("GET /api/runs/" + run + "/points?se"); break;  // half a request
        case 2:  // a whole request whose answer is never read
          c->write("GET /api/runs/" + run + "/points?series=loss&max_points=100000 HTTP/1.1\r\n"
                   "Host: 127.0.0.1\r\n\r\n");
          break;
        case 3: c->write(ws_upgrade_request); break;  // upgrade, then gone
        case 4: c->write(ws_upgrade_request + subscribe); break;  // subscribed, then gone
      }
      conns.push_back(std::move(c));
    }
    h.w.append(h.loss, 2000 + wave, 0, 1.0);  // deltas for the subscribed ones
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
  const std::string bad_task = "t\xc3";              // truncated two-byte sequence
  const std::string bad_extra = "x\xed\xa0\x80y";    // an encoded surrogate
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
  for (const std::string& t : std::vector<std::string>{"/api/runs", r, r + "/series", r + "/findings", r + "/events",
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
       {std::vector<std::string>{"runs", "--json"}, {"findings", "--json"},
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
  const std::vector<std::string> metas = {
      "'", "\"", ";", "--", "%", "_", std::string("a\0b", 3), "' OR 1=1 --",
      "; DROP TABLE runs;", "loss' OR '1'='1", "los_", "loss%", "*", "\\", "1; DELETE FROM points"};
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
  auto metrics = run_cli({"metrics", "--json", "--db", h.db, "--run", std::to_string(run),
                          "--series", "' OR 1=1 --"});
  REQUIRE(metrics.status == 0);
  CHECK(json::parse(metrics.out)["points"].size() == 10);
  CHECK(run_cli({"metrics", "--db", h.db, "--run", std::to_string(run), "--series", "%"}).status == 0);
  CHECK(run_cli({"metrics", "--db", h.db, "--run", std::to_string(run), "--series", "lo%"}).status == 1);
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

TEST_CASE("dashboard token off loopback: 401 without it and websocket upgrades refused",
          "[dashboard][http][ws][token]") {
  const std::string token = "t0k-3n_value-4567";
  served_history h([&](dashboard::server_options& o) {
    o.host = "0.0.0.0";  // off loopback: a token is mandatory
    o.token = token;
  });
  auto p = h.srv.port();
  REQUIRE(p != 0);
  for (const std::string& target : {std::string("/api/runs"), std::string("/"),
                                    std::string("/js/app.js"), std::string("/uPlot.iife.min.js"),
                                    std::string("/api/runs/1/events"), std::string("/nope")}) {
    INFO(target);
    auto missing = http_request(p, target);
    CHECK(missing.status == 401);
    CHECK(valid_json(missing.body));
    for (const std::string& auth : std::vector<std::string>{"Bearer wrong", "Bearer " + token.substr(0, token.size() - 1),
                                    "Bearer " + token + "x", "bearer " + token,
                                    "Bearer  " + token, "Basic " + token, token, std::string("Bearer ")})
      CHECK(http_request(p, target, auth).status == 401);
    for (const std::string& q : std::vector<std::string>{"?token=", "?token=x" + token, "?token=" + token + "%00",
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

TEST_CASE("losslens serve keeps answering after running out of file descriptors",
          "[dashboard][cli][hostile]") {
  temp_dir dir;
  auto db = dir.file("runs.db");
  write_history(db);
  serve_process p({"--db", db, "--port", "0"}, 48);  // about 35 connections fit
  auto first = p.line();
  INFO(first);
  auto at = first.find("http://127.0.0.1:");
  REQUIRE(at != std::string::npos);
  auto port = std::uint16_t(std::stoi(first.substr(at + 17)));
  const std::string get = "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  REQUIRE(raw_http(port, get).status == 200);
  // 150 idle connections: the server accepts until it has no descriptor left; the rest (and a
  // real request) wait in the listen backlog while accept fails (retried every 50 ms).
  net::io_context ioc;
  std::vector<std::unique_ptr<raw_conn>> flood;
  for (int i = 0; i < 150; ++i) flood.push_back(std::make_unique<raw_conn>(ioc, port));
  CHECK(raw_http(port, get, 1s).status == 0);  // not served while out of descriptors
  for (auto& c : flood) c->reset();
  // Descriptors come back: the backlog is accepted and requests are answered again.
  CHECK(eventually([&] { return raw_http(port, get, 2s).status == 200; }));
  CHECK(raw_http(port, get).status == 200);
  ::kill(p.pid, SIGTERM);
  CHECK(p.wait() == 0);
}
