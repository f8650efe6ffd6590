// Dashboard access and resource limits (issue #18): other web sites (Host on loopback binds,
// Origin everywhere), token strength, the total header size, and idle connections that must
// not lock other clients out. Real sockets on loopback; several client addresses come from
// 127.0.0.0/8 (all loopback on Linux).

#include <catch2/catch.hpp>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "dashboard_client.hpp"
#include "files.hpp"
#include "losslens/dashboard/server.hpp"
#include "losslens/error.hpp"
#include "losslens/storage/run_writer.hpp"

using namespace losslens;
using namespace losslens::test;
using namespace std::chrono_literals;

namespace {

using strings = std::vector<std::string>;
using testing::read_file;

/// A database with one finished run of 100 points, served on an ephemeral port.
struct served {
  temp_dir dir;
  std::string db = dir.file("runs.db");
  dashboard::server srv;
  explicit served(const std::function<void(dashboard::server_options&)>& tweak = {})
      : srv(options(db, tweak)) {
    srv.start();
  }
  static dashboard::server_options options(
      const std::string& db, const std::function<void(dashboard::server_options&)>& tweak) {
    {
      storage::run_options run;
      run.name = "private run";
      run.config_json = R"({"secret": "s3"})";
      storage::run_writer w(db, run);
      for (int s = 0; s < 100; ++s) w.append(0, s, s, 1.0 / (1 + s));
    }
    dashboard::server_options o;
    o.db_path = db;
    o.port = 0;
    if (tweak) tweak(o);
    return o;
  }
};

/// A GET with the given extra header lines (each ending in CRLF).
http_answer get(std::uint16_t port, const std::string& target, const std::string& headers,
                const char* from = "127.0.0.1") {
  return raw_http(port, "GET " + target + " HTTP/1.1\r\n" + headers + "\r\n", 10s, from);
}

/// A websocket upgrade of /ws with the given extra header lines; its status (101: accepted).
unsigned upgrade(std::uint16_t port, const std::string& headers,
                 const std::string& target = "/ws") {
  return get(port, target,
             headers +
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n")
      .status;
}

std::string host_line(const std::string& host) { return "Host: " + host + "\r\n"; }

/// The URL `losslens serve` printed ("... at http://HOST:PORT/..."): its port and the rest.
struct printed_url {
  std::uint16_t port = 0;
  std::string rest;  ///< after "PORT/"
};
std::optional<printed_url> parse_url_line(const std::string& line) {
  auto at = line.find("http://");
  if (at == std::string::npos) return std::nullopt;
  auto colon = line.find(':', at + 7);
  auto slash = line.find('/', colon);
  if (colon == std::string::npos || slash == std::string::npos) return std::nullopt;
  return printed_url{std::uint16_t(std::stoi(line.substr(colon + 1, slash - colon - 1))),
                     line.substr(slash + 1)};
}

/// n idle connections to port from the loopback address `from`.
std::vector<std::unique_ptr<raw_conn>> idle_connections(net::io_context& ioc, std::uint16_t port,
                                                        int n, const char* from) {
  std::vector<std::unique_ptr<raw_conn>> conns;
  for (int i = 0; i < n; ++i) conns.push_back(std::make_unique<raw_conn>(ioc, port, from));
  return conns;
}

/// How many of conns the server has not closed.
int still_open(std::vector<std::unique_ptr<raw_conn>>& conns) {
  int open = 0;
  for (auto& c : conns) open += c->poll();
  return open;
}

}  // namespace

TEST_CASE("dashboard answers 403 to another site's Host and Origin", "[dashboard][security]") {
  served h;
  const auto p = h.srv.port();
  const std::string port = std::to_string(p);

  // DNS rebinding: the attacker's name resolves to 127.0.0.1; the browser sends its Host.
  for (const std::string& bad :
       strings{"attacker.example:" + port, std::string("attacker.example"),
               "127.0.0.1.attacker.example:" + port, "localhost.attacker.example:" + port,
               "localhost.:" + port, "127.0.0.1:" + port + "x", "[::1]x:" + port,
               "0x7f000001:" + port, "10.0.0.1:" + port}) {
    INFO(bad);
    for (const char* target : {"/api/runs", "/", "/app.js", "/api/runs/1/points?series=loss"}) {
      auto a = get(p, target, host_line(bad));
      CHECK(a.status == 403);
      CHECK(a.body.find("private run") == std::string::npos);
      CHECK(a.body.find("secret") == std::string::npos);
    }
    CHECK(upgrade(p, host_line(bad)) == 403);
  }
  // Names of loopback, with any port (an ssh -L tunnel changes it), and no Host at all.
  for (const std::string& good :
       strings{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port,
               "127.0.0.2:" + port, std::string("localhost"), "localhost:9999"}) {
    INFO(good);
    auto a = get(p, "/api/runs", host_line(good));
    CHECK(a.status == 200);
    CHECK(a.json()["runs"].size() == 1);
  }
  CHECK(get(p, "/api/runs", "").status == 200);

  // Cross-site websockets (browsers apply no CORS to them) and cross-site fetches.
  const std::string self = host_line("127.0.0.1:" + port);
  for (const std::string& origin :
       strings{std::string("http://evil.example"), std::string("null"), "http://localhost:" + port,
               "http://127.0.0.1:" + port + ".evil.example", "http://127.0.0.1",
               "ftp://127.0.0.1:" + port, "http://127.0.0.1:" + port + "/"}) {
    INFO(origin);
    CHECK(upgrade(p, self + "Origin: " + origin + "\r\n") == 403);
    CHECK(get(p, "/api/runs", self + "Origin: " + origin + "\r\n").status == 403);
  }
  // The page's own origin (scheme and host compared without case), or none: accepted.
  CHECK(upgrade(p, self + "Origin: http://127.0.0.1:" + port + "\r\n") == 101);
  CHECK(upgrade(p, self + "Origin: HTTP://127.0.0.1:" + port + "\r\n") == 101);
  CHECK(upgrade(p, self) == 101);
  CHECK(upgrade(p, host_line("localhost:" + port) + "Origin: http://localhost:" + port + "\r\n") ==
        101);
  CHECK(get(p, "/api/runs", self + "Origin: http://127.0.0.1:" + port + "\r\n").status == 200);
  CHECK(h.srv.stats().forbidden == 9 * 5 + 7 * 2);
  CHECK(eventually([&] { return h.srv.stats().open_connections == 0; }));

  SECTION("allowed_origins adds origins, exactly") {
    served a([](dashboard::server_options& o) {
      o.allowed_origins = {"https://dash.example.com", "http://10.1.2.3:8080"};
    });
    const auto q = a.srv.port();
    const std::string mine = host_line("127.0.0.1:" + std::to_string(q));
    CHECK(upgrade(q, mine + "Origin: https://dash.example.com\r\n") == 101);
    CHECK(upgrade(q, mine + "Origin: HTTPS://DASH.example.com\r\n") == 101);
    CHECK(upgrade(q, mine + "Origin: http://10.1.2.3:8080\r\n") == 101);
    CHECK(upgrade(q, mine + "Origin: https://dash.example.com.evil\r\n") == 403);
    CHECK(upgrade(q, mine + "Origin: http://dash.example.com\r\n") == 403);
  }
  SECTION("off loopback the token guards, and Origin is still checked") {
    const std::string token = "0123456789abcdef-token";
    served a([&](dashboard::server_options& o) {
      o.host = "0.0.0.0";
      o.token = token;
    });
    const auto q = a.srv.port();
    const std::string named = host_line("trainbox.example:" + std::to_string(q));
    CHECK(get(q, "/api/runs?token=" + token, named).status == 200);
    CHECK(get(q, "/api/runs", named).status == 401);
    CHECK(upgrade(q, named + "Origin: http://trainbox.example:" + std::to_string(q) + "\r\n",
                  "/ws?token=" + token) == 101);
    CHECK(upgrade(q, named + "Origin: http://evil.example\r\n", "/ws?token=" + token) == 403);
  }
}

TEST_CASE("losslens serve --allow-origin", "[dashboard][security][cli]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  (void)served::options(db, {});
  testing::child_process serve(LOSSLENS_CLI,
                               {"serve", "--db", db, "--port", "0", "--allow-origin",
                                "https://a.example,https://b.example:8443"},
                               dir.file("serve.err"));
  auto line = serve.wait_for("losslens: dashboard", 30s);
  REQUIRE(line);
  auto url = parse_url_line(*line);
  REQUIRE(url);
  const std::string self = host_line("127.0.0.1:" + std::to_string(url->port));
  CHECK(upgrade(url->port, self + "Origin: https://b.example:8443\r\n") == 101);
  CHECK(upgrade(url->port, self + "Origin: https://a.example\r\n") == 101);
  CHECK(upgrade(url->port, self + "Origin: https://c.example\r\n") == 403);
  serve.kill(SIGTERM);
  CHECK(serve.wait() == 0);

  testing::child_process bad(LOSSLENS_CLI, {"serve", "--db", db, "--allow-origin", "a.example"},
                             dir.file("bad.err"));
  CHECK(bad.wait() == 2);
  CHECK_THAT(read_file(dir.file("bad.err")), Catch::Contains("--allow-origin"));
}

TEST_CASE("tokens shorter than 16 characters are refused, losslens serve generates one",
          "[dashboard][security][token]") {
  ::unsetenv("LOSSLENS_TOKEN");
  temp_dir dir;
  const auto db = dir.file("runs.db");
  (void)served::options(db, {});
  for (const std::string& weak :
       strings{std::string("a"), std::string(" "), std::string(15, 'k'), std::string(16, ' '),
               std::string("0123456789abcdef\n"), std::string("0123456789 abcdef")}) {
    INFO(weak);
    for (const char* host : {"0.0.0.0", "127.0.0.1"}) {
      dashboard::server_options o;
      o.db_path = db;
      o.port = 0;
      o.host = host;
      o.token = weak;
      dashboard::server s(o);
      CHECK_THROWS_AS(s.start(), losslens::error);
    }
  }
  {
    dashboard::server_options o;
    o.db_path = db;
    o.port = 0;
    o.host = "0.0.0.0";
    o.token = std::string(16, 'k');
    dashboard::server s(o);
    CHECK_NOTHROW(s.start());
  }
  const auto t1 = dashboard::generate_token(), t2 = dashboard::generate_token();
  CHECK(t1.size() == 32);
  CHECK(t1 != t2);
  for (char c : t1) CHECK(std::isxdigit(static_cast<unsigned char>(c)));

  SECTION("losslens serve refuses a weak token (exit 1)") {
    testing::child_process serve(
        LOSSLENS_CLI, {"serve", "--db", db, "--port", "0", "--host", "0.0.0.0", "--token", "a"},
        dir.file("serve.err"));
    CHECK(serve.wait() == 1);
    CHECK_THAT(read_file(dir.file("serve.err")), Catch::Contains("16"));
  }
  SECTION("without a token off loopback, losslens serve generates one and prints it") {
    testing::child_process serve(LOSSLENS_CLI,
                                 {"serve", "--db", db, "--port", "0", "--host", "0.0.0.0"},
                                 dir.file("serve.err"));
    auto line = serve.wait_for("losslens: dashboard", 30s);
    REQUIRE(line);
    INFO(*line);
    auto url = parse_url_line(*line);
    REQUIRE(url);
    REQUIRE(url->rest.rfind("?token=", 0) == 0);
    const std::string token = url->rest.substr(7, 32);
    CHECK(token.size() == 32);
    const std::string local = host_line("127.0.0.1:" + std::to_string(url->port));
    CHECK(get(url->port, "/api/runs", local).status == 401);
    CHECK(get(url->port, "/api/runs?token=" + token, local).status == 200);
    serve.kill(SIGTERM);
    CHECK(serve.wait() == 0);
  }
}

TEST_CASE("dashboard limits the whole request header, not what one read holds",
          "[dashboard][security][http]") {
  served h;
  const auto p = h.srv.port();
  // 1500 small fields (14 KB) after the request line: each read is parsed field by field and
  // never holds 8 KiB unparsed, so only a total catches them.
  std::string many;
  for (int i = 0; i < 1500; ++i) many += "X" + std::to_string(i) + ": a\r\n";
  REQUIRE(many.size() > 13000);
  CHECK(raw_http(p, "GET /api/runs HTTP/1.1\r\n" + many + "\r\n").status == 431);
  CHECK(raw_http(p, "GET /api/runs HTTP/1.0\r\n" + many + "\r\n").status == 431);
  CHECK(raw_http(p, "GET /api/runs HTTP/1.1\r\n" + many + "Host: 127.0.0.1\r\n\r\n").status == 431);
  CHECK(upgrade(p, many) == 431);
  // The limit (max_header_bytes, 8 KiB) is the request line plus every field line.
  const std::string line = "GET /api/runs HTTP/1.1\r\n";
  auto fields_of = [](std::size_t bytes) {  // field lines of 10 bytes each
    std::string f;
    for (int i = 0; f.size() + 10 <= bytes; ++i) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "X%04d: a\r\n", i % 10000);
      f += buf;
    }
    return f;
  };
  const auto under = fields_of(8192 - line.size() - 100);
  const auto over = fields_of(8192 - line.size() + 100);
  CHECK(raw_http(p, line + under + "\r\n").status == 200);
  CHECK(raw_http(p, line + over + "\r\n").status == 431);
  CHECK(http_request(p, "/api/runs").status == 200);
  CHECK(eventually([&] { return h.srv.stats().open_connections == 0; }));
}

TEST_CASE("idle connections near max_clients are closed so that new clients get in",
          "[dashboard][security][hostile]") {
  // max_clients 64: the reserve is its last quarter (16). Idle connections fill it from one
  // address; a client from another address must be served within a few seconds, not after
  // http_timeout (30 s).
  served h([](dashboard::server_options& o) { o.max_clients = 64; });
  const auto p = h.srv.port();
  net::io_context ioc;
  auto idle = idle_connections(ioc, p, 80, "127.0.0.2");
  REQUIRE(eventually([&] { return h.srv.stats().connections >= 80; }, 10s));
  const auto start = std::chrono::steady_clock::now();
  const std::string req = "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  CHECK(eventually([&] { return raw_http(p, req, 2s, "127.0.0.3").status == 200; }, 15s));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO("waited " << waited << " s");
  CHECK(waited < 15);
  // Every idle one goes: those that came near the cap after pressure_timeout (2 s), the
  // others by the sweep that runs until a whole reserve is free again.
  CHECK(eventually([&] { return still_open(idle) == 0; }));
  const auto st = h.srv.stats();
  CHECK(st.refused >= 16);  // over max_clients: refused at once
  CHECK(st.shed >= 32);
  CHECK(eventually([&] { return h.srv.stats().open_connections == 0; }));
}

TEST_CASE("one client address holds at most max_connections_per_address connections",
          "[dashboard][security][hostile]") {
  served h([](dashboard::server_options& o) { o.max_connections_per_address = 8; });
  const auto p = h.srv.port();
  net::io_context ioc;
  // 40 idle connections from one address: each one past 8 evicts the longest-waiting one.
  auto idle = idle_connections(ioc, p, 40, "127.0.0.2");
  REQUIRE(eventually([&] { return h.srv.stats().evicted >= 32; }, 10s));
  CHECK(h.srv.stats().refused == 0);
  CHECK(eventually([&] { return still_open(idle) == 8; }, 10s));
  for (int i = 32; i < 40; ++i) CHECK(idle[std::size_t(i)]->poll());  // the newest ones stay
  // The same address and another one are served at once.
  const std::string req = "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  CHECK(raw_http(p, req, 5s, "127.0.0.2").status == 200);
  CHECK(raw_http(p, req, 5s, "127.0.0.5").status == 200);

  SECTION("connections in use are never evicted: beyond them new ones are refused") {
    const std::string up =
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    auto ws = idle_connections(ioc, p, 8, "127.0.0.4");
    for (auto& c : ws) c->write(up);
    REQUIRE(eventually([&] { return h.srv.stats().clients == 8; }, 10s));
    const auto refused = h.srv.stats().refused;
    CHECK(raw_http(p, req, 2s, "127.0.0.4").status == 0);
    CHECK(h.srv.stats().refused == refused + 1);
    CHECK(still_open(ws) == 8);
    CHECK(raw_http(p, req, 5s, "127.0.0.6").status == 200);
  }
}
