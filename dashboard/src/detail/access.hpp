#pragma once
// Who may use the dashboard: the Host and Origin checks that keep other web sites out (DNS
// rebinding, cross-site websockets), and what makes a token strong enough.

#include <string>
#include <string_view>
#include <vector>

namespace losslens::dashboard::detail {

/// True when a Host header value names a loopback host: "localhost", an IPv4 literal in
/// 127.0.0.0/8 or "[::1]", with or without a port (case-insensitive). The port is not
/// compared with the bound one: `ssh -L 9000:127.0.0.1:8080` keeps the name and changes the
/// port, while a rebinding page can never make a browser send a loopback name.
bool host_names_loopback(std::string_view host) noexcept;

/// True when an Origin header value is the origin of the page the request's Host names
/// ("http://" or "https://" followed by host) or one of allowed; case-insensitive, exact.
/// "null" and an empty host never match the page's own origin.
bool origin_allowed(std::string_view origin, std::string_view host,
                    const std::vector<std::string>& allowed) noexcept;

/// Why token cannot protect a server ("" when it can): fewer than min_token_length
/// characters, or characters outside visible ASCII (spaces and control characters do not
/// survive headers and URLs).
std::string token_problem(std::string_view token);

}  // namespace losslens::dashboard::detail
