#pragma once
/// \file server.hpp
/// The live dashboard: an HTTP + websocket server (Boost.Beast) that serves the embedded web
/// page, a JSON API over a run-history database and live deltas of runs being written.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace losslens::dashboard::detail {
class server_impl;
}  // namespace losslens::dashboard::detail

namespace losslens::dashboard {

/// How the dashboard server behaves. Defaults suit `losslens serve` on a workstation.
struct server_options {
  std::string db_path = "runs.db";  ///< run-history database (must exist; read-only use)
  std::string host = "127.0.0.1";   ///< address to bind; non-loopback addresses need a token
  std::uint16_t port = 8080;        ///< 0: an ephemeral port (see server::port())
  /// When set, every request must carry it (see docs): at least min_token_length visible ASCII
  /// characters (see generate_token()).
  std::string token{};
  /// Origins (e.g. "https://dash.example.com") allowed besides the page's own, i.e. besides
  /// "http://" or "https://" followed by the request's Host. A request whose Origin header is
  /// neither gets 403 (websocket upgrades included). Compared exactly, case-insensitively.
  std::vector<std::string> allowed_origins;
  int threads = 1;  ///< I/O threads (the poller has its own thread)
  /// How often the DB is polled for news (notify() asks for a poll at once).
  std::chrono::milliseconds poll_interval{20};
  std::chrono::milliseconds min_send_interval{100};  ///< per client: at most one frame per this
  std::chrono::milliseconds runs_interval{1000};     ///< how often the run list is refreshed
  std::size_t max_queue_messages = 256;  ///< queued behind a pending write; beyond: dropped
  std::size_t max_queue_bytes = std::size_t{8} << 20;   ///< likewise, in bytes
  std::size_t max_frame_bytes = std::size_t{64} << 10;  ///< largest websocket message accepted
  std::size_t max_request_body = 4096;                  ///< largest HTTP request body accepted
  std::size_t max_header_bytes = 8192;                  ///< largest HTTP request header accepted
  std::size_t max_subscriptions = 16;                   ///< runs one client may subscribe to
  std::size_t max_clients = 4096;                       ///< open connections; beyond: refused
  /// Open connections from one client address (an IPv6 /64 counts as one); 0: no limit. At the
  /// limit, the address's connection that has waited longest for a request is closed to make
  /// room; when none is waiting, the new connection is refused.
  std::size_t max_connections_per_address = 1024;
  /// The last connections below max_clients (at most a quarter of it): once that few are
  /// left, connections waiting for a request are closed after pressure_timeout.
  std::size_t reserve_connections = 64;
  std::chrono::milliseconds pressure_timeout{2000};  ///< see reserve_connections
  std::chrono::seconds http_timeout{30};             ///< idle HTTP connection timeout
  std::chrono::seconds ws_idle_timeout{60};          ///< websocket idle timeout (pings sent)
};

/// Counters of a server (a snapshot).
struct server_stats {
  std::size_t clients = 0;           ///< open websocket sessions
  std::size_t open_connections = 0;  ///< open TCP connections (HTTP and websocket)
  std::uint64_t connections = 0;     ///< TCP connections accepted
  std::uint64_t refused = 0;         ///< connections refused (max_clients, or per address)
  std::uint64_t evicted = 0;         ///< waiting connections closed to make room (per address)
  std::uint64_t shed = 0;            ///< waiting connections closed early near max_clients
  std::uint64_t forbidden = 0;       ///< requests answered 403 (Host or Origin not allowed)
  std::uint64_t accept_errors = 0;   ///< failed accepts (e.g. out of file descriptors; retried)
  std::uint64_t slow_drops = 0;      ///< websocket clients disconnected for not keeping up
  std::uint64_t frames_sent = 0;     ///< websocket frames written
  std::uint64_t polls = 0;           ///< poll cycles run
  std::uint64_t poll_errors = 0;     ///< poll cycles that failed (logged once)
};

/// The dashboard server. Serves the page and /api/... over HTTP and pushes live deltas over
/// the /ws websocket (protocol: docs/dashboard.md). It reads the database with its own SQLite
/// connections, so it can run as a separate process (`losslens serve`) or inside the trainer.
///
/// Thread model: start() starts `threads` I/O threads and one poller thread; all of them are
/// owned by the server and stopped and joined by stop() or the destructor. Slow clients never
/// block the poller or other clients (bounded per-client queue; disconnected beyond it).
///
/// Access: on a loopback bind only requests whose Host names loopback are served (DNS
/// rebinding); a request whose Origin is not the page's own (or allowed_origins) gets 403.
///
/// Thread-safety: start(), stop(), port() and stats() may be called from any thread, but
/// start()/stop() not concurrently with each other.
class server {
 public:
  /// Stores the options; nothing is opened until start(). Never throws on bad options.
  explicit server(server_options options);
  /// stop(). Never throws.
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Validates the options, opens the database, binds and listens, and starts the threads.
  /// Throws losslens::error with advice: database missing or unreadable, address not local
  /// and no token, token too short, port in use, bad host. Throws if already started.
  void start();
  /// The port actually bound (useful with port 0); 0 before start().
  std::uint16_t port() const noexcept;
  /// Closes every connection, stops and joins the threads. Idempotent; never throws.
  void stop() noexcept;
  /// A snapshot of the counters.
  server_stats stats() const;
  /// Reads the database for news now instead of at the next poll_interval (the process that
  /// writes it knows when it committed: see live_dashboard). Any thread; never throws.
  void notify() noexcept;

 private:
  server_options options_;
  std::unique_ptr<detail::server_impl> impl_;
};

/// True when host names a loopback address ("localhost", 127.x.x.x, ::1).
bool is_loopback(const std::string& host) noexcept;

/// The shortest server_options::token accepted.
inline constexpr std::size_t min_token_length = 16;

/// A random token for server_options::token: 32 hex digits (128 bits from getrandom(2)).
/// Throws losslens::error when the system gives no randomness.
std::string generate_token();

}  // namespace losslens::dashboard
