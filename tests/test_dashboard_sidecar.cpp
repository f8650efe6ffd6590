// Live dashboard as a sidecar: `losslens serve` started, answering and stopped by signals, a
// websocket client following the catch-up protocol across two restarts, and the sidecar out of
// file descriptors.

#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
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

/// `losslens serve ARGS` as a child process: stdout on a pipe, stderr the test's, no
/// LOSSLENS_TOKEN in its environment.
struct serve_process : testing::child_process {
  /// files_limit > 0: the child's RLIMIT_NOFILE (soft and hard).
  explicit serve_process(std::vector<std::string> args, int files_limit = 0)
      : testing::child_process(LOSSLENS_CLI, serve_args(std::move(args)), options(files_limit)) {}
  /// The next line it prints; empty at the end of its output or after 30 s.
  std::string line() { return read_line(30s).value_or(""); }

 private:
  static std::vector<std::string> serve_args(std::vector<std::string> args) {
    args.insert(args.begin(), "serve");
    return args;
  }
  static testing::child_options options(int files_limit) {
    testing::child_options o;
    o.err = testing::stream::inherit;
    o.unset_env = {"LOSSLENS_TOKEN"};
    o.files_limit = files_limit;
    return o;
  }
};

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
  int gaps = 0;  ///< a step arrived that was not the next one
  int reconnects = 0;
  int http_points = 0;   ///< points that came from HTTP (catch-up)
  int delta_points = 0;  ///< points that came from deltas

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
          auto a =
              http_request(port, "/api/runs/" + std::to_string(run) + "/points?series=" + pct(n) +
                                     "&from=" + std::to_string(from) + "&to=" + std::to_string(hi) +
                                     "&max_points=100000");
          if (a.status != 200)
            throw std::runtime_error("history: HTTP " + std::to_string(a.status));
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
    p.kill(sig);
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
    REQUIRE(eventually([&] {
      c.pump(100ms);
      return c.last("loss") > before + 500;
    }));
    // Stop the sidecar mid-stream; the trainer goes on; start it again on the same port.
    server->kill(SIGTERM);
    CHECK(server->wait() == 0);
    c.pump(700ms);  // the client notices and retries while the port is closed
    server = std::make_unique<serve_process>(
        std::vector<std::string>{"--db", db, "--port", std::to_string(port)});
    auto again = server->line();
    INFO(again);
    REQUIRE(again.find(":" + std::to_string(port) + "/") != std::string::npos);
    auto resumed = c.last("loss");
    REQUIRE(eventually([&] {
      c.pump(100ms);
      return c.last("loss") > resumed + 500;
    }));
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
      bool same =
          got[i].step == want[i].step && (got[i].value == want[i].value ||
                                          (std::isnan(got[i].value) && std::isnan(want[i].value)));
      mismatches += !same;
    }
    CHECK(mismatches == 0);
  }
  server->kill(SIGTERM);
  CHECK(server->wait() == 0);
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
  p.kill(SIGTERM);
  CHECK(p.wait() == 0);
}
