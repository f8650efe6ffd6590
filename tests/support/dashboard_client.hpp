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

#include <stdlib.h>

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
inline http_answer http_request(std::uint16_t port, const std::string& target,
                                const std::string& authorization = {},
                                http::verb method = http::verb::get) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!authorization.empty()) req.set(http::field::authorization, authorization);
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(stream, buffer, parser);
  auto res = parser.release();
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return {res.result_int(), res.body(), std::string(res[http::field::content_type])};
}

/// A websocket client that reads with timeouts. Messages of a frame (a JSON array) are
/// returned one by one.
class ws_client {
 public:
  explicit ws_client(std::uint16_t port, const std::string& target = "/ws",
                     int receive_buffer = 0)
      : ws_(ioc_) {
    auto& sock = beast::get_lowest_layer(ws_).socket();
    sock.open(tcp::v4());
    if (receive_buffer > 0) sock.set_option(net::socket_base::receive_buffer_size(receive_buffer));
    beast::get_lowest_layer(ws_).connect(
        tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    ws_.read_message_max(256 << 20);
    ws_.handshake("127.0.0.1", target);
  }

  void send(const std::string& text) { ws_.write(net::buffer(text)); }
  void send_json(const nlohmann::json& j) { send(j.dump()); }
  void send_binary(const std::string& bytes) {
    ws_.binary(true);
    ws_.write(net::buffer(bytes));
    ws_.text(true);
  }

  /// The next message, or nullopt when none came within timeout (the client stays usable) or
  /// the connection failed (then closed() is true).
  std::optional<nlohmann::json> next(std::chrono::milliseconds timeout) {
    if (pending_.empty() && !closed_) read_frame(timeout);
    if (pending_.empty()) return std::nullopt;
    auto m = std::move(pending_.front());
    pending_.pop_front();
    return m;
  }

  /// Reads until a message of this type arrives (others are dropped) or the time is up.
  std::optional<nlohmann::json> next_of_type(const std::string& type,
                                             std::chrono::milliseconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto m = next(left);
      if (!m) return std::nullopt;
      if ((*m)["type"] == type) return m;
    }
  }

  bool closed() const noexcept { return closed_; }
  std::uint64_t frames() const noexcept { return frames_; }
  /// Time the last frame arrived.
  std::chrono::system_clock::time_point last_frame_time() const { return last_frame_time_; }

 private:
  // One read stays in flight across calls, so a timeout loses nothing.
  void read_frame(std::chrono::milliseconds timeout) {
    if (!in_flight_) {
      in_flight_ = true;
      ws_.async_read(buffer_, [this](beast::error_code e, std::size_t) {
        in_flight_ = false;
        ec_ = e;
        got_ = true;
      });
    }
    ioc_.restart();
    ioc_.run_for(timeout);
    if (!got_) return;
    got_ = false;
    if (ec_) {
      closed_ = true;
      return;
    }
    ++frames_;
    last_frame_time_ = std::chrono::system_clock::now();
    auto j = nlohmann::json::parse(beast::buffers_to_string(buffer_.data()));
    buffer_.consume(buffer_.size());
    if (j.is_array())
      for (auto& m : j) pending_.push_back(std::move(m));
    else
      pending_.push_back(std::move(j));
  }

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
inline tcp::socket connect_from(net::io_context& ioc, std::uint16_t port,
                                const char* from = "127.0.0.1") {
  tcp::socket sock(ioc);
  sock.open(tcp::v4());
  if (std::string_view(from) != "127.0.0.1")
    sock.bind(tcp::endpoint(net::ip::make_address(from), 0));
  sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  return sock;
}

/// Sends raw bytes on a fresh connection (from the loopback address `from`) and reads one
/// HTTP response. status 0: the server closed the connection (or the time ran out) without a
/// complete answer.
inline http_answer raw_http(std::uint16_t port, const std::string& bytes,
                            std::chrono::milliseconds timeout = std::chrono::seconds(10),
                            const char* from = "127.0.0.1") {
  net::io_context ioc;
  tcp::socket sock = connect_from(ioc, port, from);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  bool done = false;
  beast::error_code read_ec;
  net::async_write(sock, net::buffer(bytes), [](beast::error_code, std::size_t) {});
  http::async_read(sock, buffer, parser, [&](beast::error_code e, std::size_t) {
    read_ec = e;
    done = true;
  });
  ioc.run_for(timeout);
  http_answer a;
  if (done && !read_ec) {
    auto res = parser.release();
    a = {res.result_int(), res.body(), std::string(res[http::field::content_type])};
  }
  return a;
}

/// A plain TCP connection for hostile clients: writes without blocking, notices when the
/// server closes it, and can end with a reset (SO_LINGER 0) instead of a FIN.
struct raw_conn {
  net::io_context& ioc;
  tcp::socket sock;
  bool closed = false;     ///< the server closed it (EOF or reset)
  std::string received;    ///< whatever the server sent
  raw_conn(net::io_context& io, std::uint16_t port, const char* from = "127.0.0.1")
      : ioc(io), sock(connect_from(io, port, from)) {
    sock.non_blocking(true);
  }
  void write(std::string_view bytes) {
    if (closed) return;
    beast::error_code ec;
    sock.write_some(net::buffer(bytes.data(), bytes.size()), ec);
    if (ec && ec != net::error::would_block) closed = true;
  }
  /// Reads what is there without blocking; true while the connection is open.
  bool poll() {
    char buf[4096];
    while (!closed) {
      beast::error_code ec;
      auto n = sock.read_some(net::buffer(buf), ec);
      if (ec == net::error::would_block) break;
      if (ec) {
        closed = true;
        break;
      }
      received.append(buf, n);
    }
    return !closed;
  }
  void reset() {
    beast::error_code ec;
    sock.set_option(net::socket_base::linger(true, 0), ec);
    sock.close(ec);
    closed = true;
  }
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
