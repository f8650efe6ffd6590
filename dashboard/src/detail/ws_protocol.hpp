#pragma once
// The websocket messages clients send (docs/dashboard.md, "Websocket protocol"), parsed and
// validated without Beast so the fuzzer (fuzz/fuzz_ws.cpp) can reach them directly.

#include <cstdint>
#include <string>
#include <string_view>

namespace losslens::dashboard::detail {

/// One message from a client, validated.
struct client_message {
  enum class kind { ping, watch_runs, subscribe, unsubscribe, error };
  kind type = kind::error;
  std::int64_t run = 0;  ///< subscribe / unsubscribe: a positive run id
  std::string error;     ///< kind::error: what is wrong, sent back to the client
};

/// Parses one websocket message. Never throws (except std::bad_alloc): anything malformed,
/// binary or unknown is a kind::error whose text is sent back, and the connection stays open.
client_message parse_client_message(bool is_text, std::string_view text);

/// {"type":"error","error":message}: valid JSON for any bytes in message (invalid UTF-8 is
/// replaced by U+FFFD).
std::string ws_error_json(std::string_view message);

}  // namespace losslens::dashboard::detail
