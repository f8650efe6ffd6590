#pragma once
// Loopback HTTP and websocket clients (Boost.Beast) for the dashboard tests and bench.

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "temp_dir.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

namespace losslens::test {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

using temp_dir = losslens::testing::temp_dir;

struct http_answer {
  unsigned status = 0;
  std::string body;
  std::string content_type;
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

/// One GET (or other method) on 127.0.0.1:port; throws on connection errors.
http_answer http_request(std::uint16_t port, const std::string& target,
                         const std::string& authorization = {},
                         http::verb method = http::verb::get);

/// A websocket client that reads with timeouts. Messages of a frame (a JSON array) are
/// returned one by one. One thread uses it.
class ws_client {
 public:
  /// Connects to 127.0.0.1:port and upgrades target; receive_buffer > 0 sets SO_RCVBUF.
  /// Throws on connection and handshake errors.
  explicit ws_client(std::uint16_t port, const std::string& target = "/ws", int receive_buffer = 0);

  void send(const std::string& text);
  void send_json(const nlohmann::json& j) { send(j.dump()); }
  void send_binary(const std::string& bytes);

  /// The next message, or nullopt when none came within timeout (the client stays usable) or
  /// the connection failed (then closed() is true).
  std::optional<nlohmann::json> next(std::chrono::milliseconds timeout);

  /// Reads until a message of this type arrives (others are dropped) or the time is up.
  std::optional<nlohmann::json> next_of_type(const std::string& type,
                                             std::chrono::milliseconds timeout);

  bool closed() const noexcept { return closed_; }
  std::uint64_t frames() const noexcept { return frames_; }
  /// Time the last frame arrived.
  std::chrono::system_clock::time_point last_frame_time() const { return last_frame_time_; }

 private:
  void read_frame(std::chrono::milliseconds timeout);

  net::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_;
  std::deque<nlohmann::json> pending_;
  beast::flat_buffer buffer_;
  beast::error_code ec_;
  bool in_flight_ = false;
  bool got_ = false;
  bool closed_ = false;
  std::uint64_t frames_ = 0;
  std::chrono::system_clock::time_point last_frame_time_{};
};

/// A socket connected to 127.0.0.1:port from the loopback address `from` (e.g. "127.0.0.2":
/// the whole of 127.0.0.0/8 is loopback on Linux), so that a test can play several clients.
tcp::socket connect_from(net::io_context& ioc, std::uint16_t port, const char* from = "127.0.0.1");

/// Sends raw bytes on a fresh connection (from the loopback address `from`) and reads one
/// HTTP response. status 0: the server closed the connection (or the time ran out) without a
/// complete answer.
http_answer raw_http(std::uint16_t port, const std::string& bytes,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10),
                     const char* from = "127.0.0.1");

/// A plain TCP connection for hostile clients: writes without blocking, notices when the
/// server closes it, and can end with a reset (SO_LINGER 0) instead of a FIN.
struct raw_conn {
  net::io_context& ioc;
  tcp::socket sock;
  bool closed = false;   ///< the server closed it (EOF or reset)
  std::string received;  ///< whatever the server sent
  raw_conn(net::io_context& io, std::uint16_t port, const char* from = "127.0.0.1");
  void write(std::string_view bytes);
  /// Reads what is there without blocking; true while the connection is open.
  bool poll();
  void reset();
};

/// Waits (polling) until pred() holds; false after timeout.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace losslens::test
