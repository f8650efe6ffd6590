// Fuzz target: the dashboard's HTTP side on arbitrary bytes.
//  1. The bytes as an HTTP request: the server's request_parser with its limits, then what
//     http_session::on_read does (parse_target, the Host and Origin checks, token_ok,
//     upgrade/method/path checks, handle_api against a real database, handle_static) and the
//     response serialized.
//  2. The bytes as a request target: parse_target, then handle_api / handle_static.
// Invariants: nothing throws out; every reply has a status in 200..599 and, when it says
// application/json, a body that is valid JSON (strict UTF-8); decoding never grows a target.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include "detail/access.hpp"
#include "detail/api.hpp"
#include "detail/request_parser.hpp"
#include "fuzz_check.hpp"
#include "losslens/dashboard/server.hpp"
#include "losslens/finding.hpp"
#include "losslens/storage/run_writer.hpp"
#include "temp_dir.hpp"

namespace beast = boost::beast;
namespace http = beast::http;
namespace detail = losslens::dashboard::detail;
using losslens::fuzz::require;

namespace {

constexpr std::string_view token = "s3cret";

/// A small run history, written once: one finished run with NaN/Inf points, a finding with
/// non-finite evidence, and names that are not valid UTF-8 (the API must still emit valid JSON).
struct fixture {
  losslens::testing::temp_dir dir{"fuzz-http"};
  std::unique_ptr<detail::reader_pool> readers;

  fixture() {
    const std::string db = dir.file("runs.db");
    losslens::storage::run_options o;
    o.name = "fuzz \xff\xfe run";
    o.config_json = R"({"lr": 0.1, "note": "caf\u00e9"})";
    o.schema = {{"cls", "bo\xc3x"}, {"fc1.weight"}};
    {
      losslens::storage::run_writer w(db, o);
      const double nan = std::numeric_limits<double>::quiet_NaN();
      const double inf = std::numeric_limits<double>::infinity();
      for (std::int64_t s = 0; s < 300; ++s) {
        losslens::sample x;
        x.step = s * 3;
        x.wall_time = double(s) * 0.01;
        x.loss = s == 100 ? nan : s == 150 ? inf : s == 151 ? -inf : 2.0 / double(s + 1);
        x.task_losses = {0.5, s == 200 ? nan : 1e300};
        x.grad_norm = s % 7 == 0 ? 0.0 : 1.5;
        x.param_grad_norms = {-1e-300};
        x.lr = 0.1;
        w.append(x);
      }
      losslens::finding f;
      f.id = 1;
      f.kind = "non_finite";
      f.level = losslens::severity::error;
      f.first_step = 300;
      f.last_step = 897;
      f.series = "loss";
      f.rule = {"non_finite", {{"window", 8}}};
      f.evidence = {{"value", nan}, {"last_finite", inf}, {"bad\x80key", -inf}};
      f.message = "loss is NaN \xc0\xaf at step 300";
      f.advice = "lower the learning rate";
      w.record_finding(f);
      w.flush();
    }  // finished
    readers = std::make_unique<detail::reader_pool>(db);
  }
};

fixture* the_fixture = nullptr;

void check_reply(const detail::reply& r, unsigned version) {
  require(r.status >= 200 && r.status <= 599, "status in 200..599");
  if (r.content_type == "application/json") losslens::fuzz::require_json(r.body, "reply body");
  // What make_response (server.cpp) does with it.
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::content_type, r.content_type);
  res.body() = r.body;
  res.prepare_payload();
  std::ostringstream out;
  out << res;
  require(!out.str().empty(), "response serializes");
}

void route(const detail::target& t, unsigned version) {
  if (t.path == "/api" || t.path.rfind("/api/", 0) == 0)
    check_reply(detail::handle_api(*the_fixture->readers, t), version);
  // The server only passes paths without "..", "\" or NUL, but handle_static must be safe alone.
  check_reply(detail::handle_static(t), version);
}

void fuzz_request(std::string_view bytes) {
  const losslens::dashboard::server_options defaults;
  detail::request_parser parser(defaults.max_header_bytes, defaults.max_request_body);
  parser.eager(true);
  beast::error_code ec;
  boost::asio::const_buffer buf(bytes.data(), bytes.size());
  while (buf.size() > 0 && !parser.is_done()) {
    const std::size_t n = parser.put(buf, ec);
    if (ec || n == 0) break;
    buf += n;
  }
  if (ec == http::error::need_more) ec = {};
  if (!ec && !parser.is_done()) parser.put_eof(ec);  // the peer closed: all bytes are in
  if (ec || !parser.is_done()) return;  // the server answers 400/413/431 or drops the connection
  require(parser.header_bytes() <= defaults.max_header_bytes, "the header is within its limit");

  auto req = parser.release();
  const unsigned version = req.version();
  const auto t = detail::parse_target(std::string_view(req.target().data(), req.target().size()));
  if (!t) return check_reply(detail::error_reply(400, "malformed percent-encoding"), version);
  // Host and Origin checks (a 403 when refused); the rest goes on as if they passed.
  const auto host = req[http::field::host];
  const std::string_view host_view(host.data(), host.size());
  const auto origin = req[http::field::origin];
  const std::string_view origin_view(origin.data(), origin.size());
  if (!detail::host_names_loopback(host_view) ||
      !detail::origin_allowed(origin_view, host_view, {}))
    check_reply(detail::error_reply(403, "refused"), version);
  if (!host_view.empty())
    require(detail::origin_allowed("http://" + std::string(host_view), host_view, {}),
            "the page's own origin is allowed");
  const auto auth = req[http::field::authorization];
  const std::string_view auth_view(auth.data(), auth.size());
  require(detail::token_ok("", auth_view, *t), "no token configured: everything passes");
  if (!detail::token_ok(token, auth_view, *t))
    check_reply(detail::error_reply(401, "missing or wrong token"), version);
  // Go on as a server without a token would, so the rest is reached without guessing it.
  if (beast::websocket::is_upgrade(req)) return;  // fuzz_ws covers the websocket side
  if (req.method() != http::verb::get && req.method() != http::verb::head) return;
  route(*t, version);
}

void fuzz_target(std::string_view bytes) {
  const auto t = detail::parse_target(bytes);
  if (!t) return;
  std::size_t decoded = t->path.size();
  for (const auto& [k, v] : t->params) decoded += k.size() + v.size();
  require(decoded <= bytes.size(), "decoding never grows the target");
  const std::string header = "Bearer " + std::string(token);
  require(detail::token_ok(token, header, *t), "the right bearer token passes");
  route(*t, 11);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static fixture f;  // destroyed at exit: removes the temporary database
  the_fixture = &f;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  fuzz_request(bytes);
  fuzz_target(bytes);
  return 0;
}
