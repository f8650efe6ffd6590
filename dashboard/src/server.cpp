// The Beast side: listener, HTTP sessions (page, API, upgrade) and websocket sessions.
// Structure follows Beast's advanced_server and websocket chat-multi examples: one serialized
// message shared by all sessions, a per-session queue touched only on the session's strand,
// and a cap beyond which a slow client is disconnected.

#include "losslens/dashboard/server.hpp"

#include <array>
#include <atomic>
#include <deque>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "detail/access.hpp"
#include "detail/api.hpp"
#include "detail/connection_table.hpp"
#include "detail/hub.hpp"
#include "detail/json.hpp"
#include "detail/poller.hpp"
#include "detail/request_parser.hpp"
#include "detail/ws_protocol.hpp"
#include "losslens/error.hpp"

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace losslens::dashboard::detail {

/// State shared by every session of one server.
struct server_state {
  dashboard::server_options options;
  hub subscribers;
  reader_pool readers;
  connection_table table;
  bool loopback_bind = true;  ///< Host must name loopback (set before the threads start)
  std::atomic<std::uint64_t> connections{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> evicted{0};
  std::atomic<std::uint64_t> shed{0};
  std::atomic<std::uint64_t> forbidden{0};
  std::atomic<std::uint64_t> accept_errors{0};
  std::atomic<std::uint64_t> slow_drops{0};
  std::atomic<std::uint64_t> frames_sent{0};

  explicit server_state(dashboard::server_options o)
      : options(std::move(o)),
        readers(options.db_path),
        table(connection_limits{options.max_clients, options.max_connections_per_address,
                                options.reserve_connections, options.pressure_timeout}) {}
};

namespace {

/// An admitted connection, counted in the connection table (per address) for its lifetime.
struct connection_slot {
  std::shared_ptr<server_state> state;
  std::string address;  ///< connection_table's key of the client
  connection_slot(std::shared_ptr<server_state> s, std::string a)
      : state(std::move(s)), address(std::move(a)) {}
  connection_slot(const connection_slot&) = delete;
  connection_slot& operator=(const connection_slot&) = delete;
  ~connection_slot() { state->table.release(address); }
};

http::response<http::string_body> make_response(const reply& r, unsigned version, bool keep_alive,
                                                bool head) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "losslens");
  res.set(http::field::content_type, r.content_type);
  res.set(http::field::cache_control, r.cache ? "max-age=86400" : "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.keep_alive(keep_alive);
  if (head) {
    res.content_length(r.body.size());
  } else {
    res.body() = r.body;
    res.prepare_payload();
  }
  return res;
}

class ws_session : public subscriber, public std::enable_shared_from_this<ws_session> {
 public:
  ws_session(tcp::socket&& socket, std::shared_ptr<server_state> state,
             std::unique_ptr<connection_slot> slot)
      : ws_(std::move(socket)),
        timer_(ws_.get_executor()),
        state_(std::move(state)),
        slot_(std::move(slot)) {}

  ~ws_session() override { state_->subscribers.leave(this); }

  void run(http::request<http::string_body> req) {
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds(10);
    t.idle_timeout = state_->options.ws_idle_timeout;
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.read_message_max(state_->options.max_frame_bytes);
    ws_.auto_fragment(false);  // one frame per message: one gathered write, not 4 KiB pieces
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "losslens"); }));
    ws_.async_accept(req, beast::bind_front_handler(&ws_session::on_accept, shared_from_this()));
  }

  // Called from any thread (the poller); the queue is touched on the strand only.
  void send(shared_message message) override {
    net::post(
        ws_.get_executor(),
        beast::bind_front_handler(&ws_session::on_send, shared_from_this(), std::move(message)));
  }

 private:
  void on_accept(beast::error_code ec) {
    if (ec) return;
    state_->subscribers.join(shared_from_this());
    do_read();
  }

  void do_read() {
    ws_.async_read(buffer_, beast::bind_front_handler(&ws_session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) {  // closed, timed out, or a protocol violation (e.g. a frame over the limit)
      close_now();
      return;
    }
    std::string text = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    handle(ws_.got_text(), text);
    do_read();
  }

  void reply(nlohmann::json j) { on_send(std::make_shared<const std::string>(dump_json(j))); }

  void handle(bool is_text, const std::string& text) {
    auto bad = [&](const std::string& why) {
      on_send(std::make_shared<const std::string>(ws_error_json(why)));
    };
    const client_message m = parse_client_message(is_text, text);
    switch (m.type) {
      case client_message::kind::error:
        return bad(m.error);
      case client_message::kind::ping:
        return reply({{"type", "pong"}});
      case client_message::kind::watch_runs:
        return state_->subscribers.watch_runs(shared_from_this());
      case client_message::kind::unsubscribe:
        state_->subscribers.unsubscribe(m.run, this);
        return reply({{"type", "unsubscribed"}, {"run", m.run}});
      case client_message::kind::subscribe:
        if (!state_->subscribers.subscribe(m.run, shared_from_this(),
                                           state_->options.max_subscriptions))
          return bad("too many subscriptions (at most " +
                     std::to_string(state_->options.max_subscriptions) + ")");
        return;  // the poller acknowledges with "subscribed"
    }
  }

  void on_send(shared_message message) {
    if (closed_) return;
    queued_bytes_ += message->size();
    queue_.push_back(std::move(message));
    // Messages wait here for the rate limit (min_send_interval) and while a frame is being
    // written. A client whose write is still pending with the queue over the cap does not keep
    // up: disconnect it rather than buffer without bound. It can reconnect and reload.
    if (writing_ && (queue_.size() > state_->options.max_queue_messages ||
                     queued_bytes_ > state_->options.max_queue_bytes)) {
      ++state_->slow_drops;
      close_now();
      return;
    }
    if (!writing_ && !timer_armed_) schedule_write();
  }

  // At most one frame per min_send_interval: everything queued meanwhile goes in one frame.
  void schedule_write() {
    auto next = last_send_ + state_->options.min_send_interval;
    if (std::chrono::steady_clock::now() >= next) return do_write();
    timer_armed_ = true;
    timer_.expires_at(next);
    timer_.async_wait(beast::bind_front_handler(&ws_session::on_timer, shared_from_this()));
  }

  void on_timer(beast::error_code ec) {
    timer_armed_ = false;
    if (ec || closed_ || writing_ || queue_.empty()) return;
    do_write();
  }

  void do_write() {
    // A frame is a JSON array of messages; the shared message texts are not copied.
    static const char open[] = "[", comma[] = ",", close[] = "]";
    writing_batch_.assign(std::make_move_iterator(queue_.begin()),
                          std::make_move_iterator(queue_.end()));
    queue_.clear();
    queued_bytes_ = 0;
    buffers_.clear();
    buffers_.emplace_back(open, 1);
    for (std::size_t i = 0; i < writing_batch_.size(); ++i) {
      if (i) buffers_.emplace_back(comma, 1);
      buffers_.emplace_back(writing_batch_[i]->data(), writing_batch_[i]->size());
    }
    buffers_.emplace_back(close, 1);
    writing_ = true;
    last_send_ = std::chrono::steady_clock::now();
    ws_.text(true);
    ws_.async_write(buffers_, beast::bind_front_handler(&ws_session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    writing_ = false;
    writing_batch_.clear();
    if (ec) return close_now();
    ++state_->frames_sent;
    if (!queue_.empty() && !timer_armed_) schedule_write();
  }

  void close_now() {
    if (closed_) return;
    closed_ = true;
    state_->subscribers.leave(this);
    queue_.clear();
    timer_.cancel();
    beast::get_lowest_layer(ws_).close();  // cancels pending reads and writes
  }

  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
  net::steady_timer timer_;
  std::shared_ptr<server_state> state_;
  std::unique_ptr<connection_slot> slot_;
  std::deque<shared_message> queue_;
  std::size_t queued_bytes_ = 0;
  std::vector<shared_message> writing_batch_;
  std::vector<net::const_buffer> buffers_;
  std::chrono::steady_clock::time_point last_send_{};
  bool writing_ = false;
  bool timer_armed_ = false;
  bool closed_ = false;
};

class http_session : public idle_connection, public std::enable_shared_from_this<http_session> {
 public:
  /// ticket: the connection_table ticket it waits under since it was admitted.
  http_session(tcp::socket&& socket, std::shared_ptr<server_state> state,
               std::unique_ptr<connection_slot> slot, std::uint64_t ticket)
      : stream_(std::move(socket)),
        state_(std::move(state)),
        slot_(std::move(slot)),
        ticket_(ticket) {}

  ~http_session() override {
    if (ticket_) state_->table.stop_waiting(ticket_);
  }

  void run() {
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&http_session::do_read, shared_from_this()));
  }

  // From the listener's thread: the table chose this waiting connection to make room.
  void close_if_waiting(std::uint64_t ticket) noexcept override {
    try {
      net::post(stream_.get_executor(), [self = shared_from_this(), ticket] {
        if (self->ticket_ != ticket) return;  // its request arrived meanwhile
        self->ticket_ = 0;
        beast::error_code ec;
        self->stream_.socket().close(ec);  // the pending read ends with an error
      });
    } catch (...) {  // out of memory: the connection stays until its own timeout
    }
  }

 private:
  void do_read() {
    parser_.emplace(state_->options.max_header_bytes, state_->options.max_request_body);
    // Near max_clients a connection gets pressure_timeout, not http_timeout, for its request.
    const auto& o = state_->options;
    stream_.expires_after(
        state_->table.under_pressure()
            ? std::min<std::chrono::steady_clock::duration>(o.http_timeout, o.pressure_timeout)
            : std::chrono::steady_clock::duration(o.http_timeout));
    if (!ticket_) ticket_ = state_->table.start_waiting(slot_->address, weak_from_this());
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&http_session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    state_->table.stop_waiting(ticket_);
    ticket_ = 0;
    if (ec == http::error::end_of_stream) return shutdown();
    if (ec == http::error::body_limit || ec == http::error::header_limit ||
        ec == http::error::buffer_overflow)
      return send(
          make_response(error_reply(ec == http::error::body_limit ? 413 : 431, "request too large"),
                        11, false, false));
    // Any other parse error (bad method, target, field, chunk, content length, ...) is a 400;
    // socket errors, timeouts and a message cut short close the connection without an answer.
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::partial_message && ec != http::error::need_more)
      return send(make_response(error_reply(400, "malformed HTTP request"), 11, false, false));
    if (ec) return;

    auto req = parser_->release();
    auto t = parse_target(std::string_view(req.target().data(), req.target().size()));
    bool head = req.method() == http::verb::head;
    auto answer = [&](const detail::reply& r) {
      return send(make_response(r, req.version(), req.keep_alive(), head));
    };
    if (!t) return answer(error_reply(400, "malformed percent-encoding in the URL"));
    // Other web sites: a DNS-rebinding page reaches a loopback server under its own name;
    // a page's websocket (no CORS) carries its origin.
    const auto host = req[http::field::host];
    const std::string_view host_view(host.data(), host.size());
    if (state_->loopback_bind && !host_view.empty() && !host_names_loopback(host_view)) {
      ++state_->forbidden;
      return answer(error_reply(403,
                                "this server on a loopback address answers only requests "
                                "for localhost, 127.0.0.1 or [::1] (Host header)"));
    }
    if (auto origin = req[http::field::origin];
        !origin.empty() && !origin_allowed(std::string_view(origin.data(), origin.size()),
                                           host_view, state_->options.allowed_origins)) {
      ++state_->forbidden;
      return answer(error_reply(403,
                                "requests from another web site (Origin header) are "
                                "refused; allow its origin with --allow-origin"));
    }
    // The token guards the run data (the API and the websocket). The page's own files are the
    // same for everyone and hold no data; they are served without it, because a browser does not
    // pass the page's ?token= on to the scripts and styles that the page loads.
    const bool is_api = t->path == "/api" || t->path.rfind("/api/", 0) == 0;
    auto auth = req[http::field::authorization];
    if ((is_api || websocket::is_upgrade(req)) &&
        !token_ok(state_->options.token, std::string_view(auth.data(), auth.size()), *t))
      return answer(error_reply(401,
                                "missing or wrong token: send 'Authorization: Bearer "
                                "<token>' or add ?token=<token> to the URL"));
    if (websocket::is_upgrade(req)) {
      if (t->path != "/ws") return answer(error_reply(404, "websockets live at /ws"));
      stream_.expires_never();
      std::make_shared<ws_session>(stream_.release_socket(), state_, std::move(slot_))
          ->run(std::move(req));
      return;
    }
    if (req.method() != http::verb::get && !head) {
      auto r = error_reply(405, "only GET and HEAD are supported");
      auto res = make_response(r, req.version(), req.keep_alive(), false);
      res.set(http::field::allow, "GET, HEAD");
      return send(std::move(res));
    }
    if (t->path.find("..") != std::string::npos || t->path.find('\\') != std::string::npos ||
        t->path.find('\0') != std::string::npos)
      return answer(error_reply(400, "invalid path"));
    if (is_api) return answer(handle_api(state_->readers, *t));
    answer(handle_static(*t));
  }

  void send(http::response<http::string_body> res) {
    auto sp = std::make_shared<http::response<http::string_body>>(std::move(res));
    http::async_write(stream_, *sp,
                      [self = shared_from_this(), sp](beast::error_code ec, std::size_t) {
                        if (ec) return;
                        if (sp->need_eof()) return self->shutdown();
                        self->do_read();
                      });
  }

  void shutdown() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    // Lingering close: read and discard what the client still sends (e.g. the rest of a body
    // refused with 413) for a moment before closing. Closing with unread data would send a
    // reset, which can destroy the answer before the client has read it.
    stream_.expires_after(std::chrono::seconds(1));
    drain(0);
  }

  void drain(std::size_t drained) {
    if (drained > (std::size_t{1} << 20)) return;
    stream_.async_read_some(net::buffer(discard_), [self = shared_from_this(), drained](
                                                       beast::error_code ec, std::size_t n) {
      if (!ec) self->drain(drained + n);
    });
  }

  beast::tcp_stream stream_;
  std::array<char, 4096> discard_{};
  beast::flat_buffer buffer_;
  std::optional<request_parser> parser_;
  std::shared_ptr<server_state> state_;
  std::unique_ptr<connection_slot> slot_;
  std::uint64_t ticket_ = 0;  ///< connection_table ticket while waiting for a request
};

// Accepts connections and decides which may stay (connection_table). Its handlers and
// timers run on one strand.
class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(net::io_context& ioc, tcp::acceptor acceptor, std::shared_ptr<server_state> state)
      : ioc_(ioc),
        strand_(net::make_strand(ioc)),
        acceptor_(std::move(acceptor)),
        retry_(strand_),
        sweep_(strand_),
        state_(std::move(state)) {}

  void run() {
    net::dispatch(strand_, beast::bind_front_handler(&listener::do_accept, shared_from_this()));
  }
  void stop() {
    net::post(strand_, [self = shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
      self->retry_.cancel();
      self->sweep_.cancel();
    });
  }

 private:
  void do_accept() {
    acceptor_.async_accept(
        net::make_strand(ioc_),
        net::bind_executor(strand_,
                           beast::bind_front_handler(&listener::on_accept, shared_from_this())));
  }

  // Near max_clients, connections that have waited pressure_timeout for a request are closed,
  // checked every quarter of it for as long as the table sheds.
  void sweep() {
    if (sweeping_ || !state_->table.shedding()) return;
    sweeping_ = true;
    const auto period = std::max<std::chrono::steady_clock::duration>(
        std::chrono::milliseconds(20), state_->options.pressure_timeout / 4);
    sweep_.expires_after(period);
    sweep_.async_wait([self = shared_from_this()](beast::error_code ec) {
      self->sweeping_ = false;
      if (ec || !self->acceptor_.is_open()) return;
      const auto cutoff = std::chrono::steady_clock::now() - self->state_->options.pressure_timeout;
      for (auto& [who, ticket] : self->state_->table.overdue(cutoff))
        if (who) {
          ++self->state_->shed;
          who->close_if_waiting(ticket);
        }
      self->sweep();
    });
  }

  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // Out of file descriptors (EMFILE/ENFILE) or a transient error: accepting again at once
      // would fail again in a busy loop. Wait a little; pending connections stay queued.
      ++state_->accept_errors;
      retry_.expires_after(std::chrono::milliseconds(50));
      retry_.async_wait([self = shared_from_this()](beast::error_code e) {
        if (!e && self->acceptor_.is_open()) self->do_accept();
      });
      return;
    }
    ++state_->connections;
    auto peer = socket.remote_endpoint(ec);
    std::string address = ec ? std::string("?") : address_key(peer.address());
    auto admission = state_->table.admit(address);
    if (!admission.accepted) {
      ++state_->refused;
      socket.close(ec);
    } else {
      if (auto& [who, ticket] = admission.evict; who) {
        ++state_->evicted;
        who->close_if_waiting(ticket);
      }
      socket.set_option(tcp::no_delay(true), ec);  // frames are latency-bound, not bulk
      auto slot = std::make_unique<connection_slot>(state_, std::move(address));
      auto session = std::make_shared<http_session>(std::move(socket), state_, std::move(slot),
                                                    admission.ticket);
      state_->table.set_waiter(admission.ticket, session);
      session->run();
    }
    sweep();
    do_accept();
  }

  net::io_context& ioc_;
  net::strand<net::io_context::executor_type> strand_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_;  ///< delays the next accept after an accept error
  net::steady_timer sweep_;  ///< closes overdue waiting connections under pressure
  bool sweeping_ = false;
  std::shared_ptr<server_state> state_;
};

}  // namespace

class server_impl {
 public:
  server_impl(const dashboard::server_options& options)
      : state_(std::make_shared<server_state>(options)), ioc_(std::max(1, options.threads)) {}

  void start() {
    const auto& o = state_->options;
    if (o.threads < 1 || o.threads > 64)
      throw losslens::error("dashboard: threads must be in [1, 64], got " +
                            std::to_string(o.threads));
    if (!dashboard::is_loopback(o.host) && o.token.empty())
      throw losslens::error("dashboard: refusing to listen on '" + o.host +
                            "' without a token; set a token (--token or LOSSLENS_TOKEN) or "
                            "bind to 127.0.0.1");
    if (!o.token.empty())
      if (auto why = token_problem(o.token); !why.empty())
        throw losslens::error("dashboard: " + why);
    if (o.max_clients < 1) throw losslens::error("dashboard: max_clients must be at least 1");
    state_->loopback_bind = dashboard::is_loopback(o.host);
    // Open the database first: its errors carry the storage layer's advice.
    storage::run_reader reader(o.db_path);
    beast::error_code ec;
    auto address = net::ip::make_address(o.host == "localhost" ? "127.0.0.1" : o.host, ec);
    if (ec)
      throw losslens::error("dashboard: '" + o.host +
                            "' is not an IP address; use e.g. 127.0.0.1 or 0.0.0.0");
    tcp::endpoint ep{address, o.port};
    tcp::acceptor acceptor(ioc_);
    auto fail = [&](const char* what) {
      throw losslens::error("dashboard: cannot " + std::string(what) + " " + o.host + ":" +
                            std::to_string(o.port) + ": " + ec.message() +
                            (ec == net::error::address_in_use
                                 ? " (another server runs there; pick another --port)"
                                 : ""));
    };
    if (acceptor.open(ep.protocol(), ec); ec) fail("open");
    if (acceptor.set_option(net::socket_base::reuse_address(true), ec); ec) fail("configure");
    if (acceptor.bind(ep, ec); ec) fail("bind");
    if (acceptor.listen(net::socket_base::max_listen_connections, ec); ec) fail("listen on");
    port_ = acceptor.local_endpoint().port();

    poller_ = std::make_unique<poller>(std::move(reader), state_->subscribers,
                                       poller_options{o.poll_interval, o.runs_interval});
    listener_ = std::make_shared<listener>(ioc_, std::move(acceptor), state_);
    listener_->run();
    for (int i = 0; i < o.threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
  }

  ~server_impl() {
    poller_.reset();  // no more messages
    if (listener_) listener_->stop();
    ioc_.stop();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    // Remaining handlers (and the sessions they hold) are destroyed with ioc_.
  }

  std::uint16_t port() const noexcept { return port_; }
  void notify() noexcept {
    if (poller_) poller_->notify();
  }

  dashboard::server_stats stats() const {
    dashboard::server_stats s;
    s.clients = state_->subscribers.size();
    s.connections = state_->connections.load();
    s.refused = state_->refused.load();
    s.evicted = state_->evicted.load();
    s.shed = state_->shed.load();
    s.forbidden = state_->forbidden.load();
    s.accept_errors = state_->accept_errors.load();
    s.open_connections = state_->table.open();
    s.slow_drops = state_->slow_drops.load();
    s.frames_sent = state_->frames_sent.load();
    if (poller_) {
      s.polls = poller_->polls();
      s.poll_errors = poller_->errors();
    }
    return s;
  }

 private:
  std::shared_ptr<server_state> state_;
  net::io_context ioc_;
  std::shared_ptr<listener> listener_;
  std::unique_ptr<poller> poller_;
  std::vector<std::thread> threads_;
  std::uint16_t port_ = 0;
};

}  // namespace losslens::dashboard::detail

namespace losslens::dashboard {

server::server(server_options options) : options_(std::move(options)) {}

server::~server() { stop(); }

void server::start() {
  if (impl_) throw losslens::error("dashboard: server already started");
  auto impl = std::make_unique<detail::server_impl>(options_);
  impl->start();
  impl_ = std::move(impl);
}

std::uint16_t server::port() const noexcept { return impl_ ? impl_->port() : 0; }

void server::stop() noexcept { impl_.reset(); }

void server::notify() noexcept {
  if (impl_) impl_->notify();
}

server_stats server::stats() const { return impl_ ? impl_->stats() : server_stats{}; }

bool is_loopback(const std::string& host) noexcept {
  if (host == "localhost") return true;
  beast::error_code ec;
  auto a = net::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

}  // namespace losslens::dashboard
