#pragma once
/// \file server.hpp
/// The live dashboard: an HTTP + websocket server (Boost.Beast) that serves the embedded web
/// page, a JSON API over a run-history database and live deltas of runs being written.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace losslens::detail {
class server_impl;
}  // namespace losslens::detail

namespace losslens::dashboard {

/// How the dashboard server behaves. Defaults suit `losslens serve` on a workstation.
struct server_options {
  std::string db_path = "runs.db";  ///< run-history database (must exist; read-only use)
  std::string host = "127.0.0.1";   ///< address to bind; non-loopback addresses need a token
  std::uint16_t port = 8080;        ///< 0: an ephemeral port (see server::port())
  std::string token;                ///< when set, every request must carry it (see docs)
  int threads = 1;                  ///< I/O threads (the poller has its own thread)
  /// How often the DB is polled for news (notify() asks for a poll at once).
  std::chrono::milliseconds poll_interval{20};
  std::chrono::milliseconds min_send_interval{100}; ///< per client: at most one frame per this
  std::chrono::milliseconds runs_interval{1000};    ///< how often the run list is refreshed
  std::size_t max_queue_messages = 256;  ///< queued behind a pending write; beyond: dropped
  std::size_t max_queue_bytes = std::size_t{8} << 20;  ///< likewise, in bytes
  std::size_t max_frame_bytes = std::size_t{64} << 10;  ///< largest websocket message accepted
  std::size_t max_request_body = 4096;              ///< largest HTTP request body accepted
  std::size_t max_header_bytes = 8192;              ///< largest HTTP request header accepted
  std::size_t max_subscriptions = 16;               ///< runs one client may subscribe to
  std::size_t max_clients = 4096;                   ///< open connections; beyond: refused
  std::chrono::seconds http_timeout{30};            ///< idle HTTP connection timeout
  std::chrono::seconds ws_idle_timeout{60};         ///< websocket idle timeout (pings sent)
};

/// Counters of a server (a snapshot).
struct server_stats {
  std::size_t clients = 0;          ///< open websocket sessions
  std::size_t open_connections = 0; ///< open TCP connections (HTTP and websocket)
  std::uint64_t connections = 0;    ///< TCP connections accepted
  std::uint64_t refused = 0;        ///< connections refused (max_clients)
  std::uint64_t accept_errors = 0;  ///< failed accepts (e.g. out of file descriptors; retried)
  std::uint64_t slow_drops = 0;     ///< websocket clients disconnected for not keeping up
  std::uint64_t frames_sent = 0;    ///< websocket frames written
  std::uint64_t polls = 0;          ///< poll cycles run
  std::uint64_t poll_errors = 0;    ///< poll cycles that failed (logged once)
};

/// The dashboard server. Serves the page and /api/... over HTTP and pushes live deltas over
/// the /ws websocket (protocol: docs/dashboard.md). It reads the database with its own SQLite
/// connections, so it can run as a separate process (`losslens serve`) or inside the trainer.
///
/// Thread model: start() starts `threads` I/O threads and one poller thread; all of them are
/// owned by the server and stopped and joined by stop() or the destructor. Slow clients never
/// block the poller or other clients (bounded per-client queue; disconnected beyond it).
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
  /// and no token, port in use, bad host. Throws if already started.
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

}  // namespace losslens::dashboard
