#include "detail/access.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/ip/address.hpp>

#include "losslens/dashboard/server.hpp"
#include "losslens/error.hpp"

namespace losslens::dashboard::detail {

namespace {

bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool all_digits(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

bool host_names_loopback(std::string_view host) noexcept {
  std::string_view name = host;
  if (!host.empty() && host.front() == '[') {  // [IPv6]:port
    auto close = host.find(']');
    if (close == std::string_view::npos) return false;
    name = host.substr(1, close - 1);
    auto rest = host.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !all_digits(rest.substr(1)))) return false;
    boost::system::error_code ec;
    auto a = boost::asio::ip::make_address_v6(std::string(name), ec);
    return !ec && a.is_loopback();
  }
  if (auto colon = host.find(':'); colon != std::string_view::npos) {
    if (!all_digits(host.substr(colon + 1))) return false;
    name = host.substr(0, colon);
  }
  if (equal_ignoring_case(name, "localhost")) return true;
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address_v4(std::string(name), ec);
  return !ec && a.is_loopback();
}

bool origin_allowed(std::string_view origin, std::string_view host,
                    const std::vector<std::string>& allowed) noexcept {
  for (const auto& a : allowed)
    if (equal_ignoring_case(origin, a)) return true;
  if (host.empty()) return false;
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")})
    if (origin.size() == scheme.size() + host.size() &&
        equal_ignoring_case(origin.substr(0, scheme.size()), scheme) &&
        equal_ignoring_case(origin.substr(scheme.size()), host))
      return true;
  return false;
}

std::string token_problem(std::string_view token) {
  for (unsigned char c : token)
    if (c <= 0x20 || c >= 0x7f)
      return "the token holds a space, a control character or a non-ASCII byte; use visible "
             "ASCII characters only";
  if (token.size() < dashboard::min_token_length)
    return "the token has " + std::to_string(token.size()) + " characters, fewer than " +
           std::to_string(dashboard::min_token_length) +
           "; use a longer one (e.g. `openssl rand -hex 16`), or leave it out on a "
           "non-loopback --host and `losslens serve` generates one";
  return {};
}

}  // namespace losslens::dashboard::detail

namespace losslens::dashboard {

std::string generate_token() {
  unsigned char bytes[16];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw losslens::error(std::string("dashboard: cannot generate a token: getrandom: ") +
                            std::strerror(errno) + "; pass one with --token");
    got += std::size_t(n);
  }
  static const char hex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token += hex[b >> 4];
    token += hex[b & 15];
  }
  return token;
}

}  // namespace losslens::dashboard
