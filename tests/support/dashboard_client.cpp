#include "dashboard_client.hpp"

namespace losslens::test {

http_answer http_request(std::uint16_t port, const std::string& target,
                         const std::string& authorization, http::verb method) {
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

ws_client::ws_client(std::uint16_t port, const std::string& target, int receive_buffer)
    : ws_(ioc_) {
  auto& sock = beast::get_lowest_layer(ws_).socket();
  sock.open(tcp::v4());
  if (receive_buffer > 0) sock.set_option(net::socket_base::receive_buffer_size(receive_buffer));
  beast::get_lowest_layer(ws_).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  ws_.read_message_max(256 << 20);
  ws_.handshake("127.0.0.1", target);
}

void ws_client::send(const std::string& text) { ws_.write(net::buffer(text)); }

void ws_client::send_binary(const std::string& bytes) {
  ws_.binary(true);
  ws_.write(net::buffer(bytes));
  ws_.text(true);
}

std::optional<nlohmann::json> ws_client::next(std::chrono::milliseconds timeout) {
  if (pending_.empty() && !closed_) read_frame(timeout);
  if (pending_.empty()) return std::nullopt;
  auto m = std::move(pending_.front());
  pending_.pop_front();
  return m;
}

std::optional<nlohmann::json> ws_client::next_of_type(const std::string& type,
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

// One read stays in flight across calls, so a timeout loses nothing.
void ws_client::read_frame(std::chrono::milliseconds timeout) {
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

tcp::socket connect_from(net::io_context& ioc, std::uint16_t port, const char* from) {
  tcp::socket sock(ioc);
  sock.open(tcp::v4());
  if (std::string_view(from) != "127.0.0.1")
    sock.bind(tcp::endpoint(net::ip::make_address(from), 0));
  sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  return sock;
}

http_answer raw_http(std::uint16_t port, const std::string& bytes,
                     std::chrono::milliseconds timeout, const char* from) {
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

raw_conn::raw_conn(net::io_context& io, std::uint16_t port, const char* from)
    : ioc(io), sock(connect_from(io, port, from)) {
  sock.non_blocking(true);
}

void raw_conn::write(std::string_view bytes) {
  if (closed) return;
  beast::error_code ec;
  sock.write_some(net::buffer(bytes.data(), bytes.size()), ec);
  if (ec && ec != net::error::would_block) closed = true;
}

bool raw_conn::poll() {
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

void raw_conn::reset() {
  beast::error_code ec;
  sock.set_option(net::socket_base::linger(true, 0), ec);
  sock.close(ec);
  closed = true;
}

}  // namespace losslens::test
