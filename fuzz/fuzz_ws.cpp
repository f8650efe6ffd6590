// Fuzz target: websocket messages from clients (detail::parse_client_message, what
// ws_session::handle acts on) and the error replies sent back (detail::ws_error_json).
// Invariants: parsing never throws; a binary message is an error; a run id is positive; an
// accepted message is a JSON object; every error reply is valid JSON (strict UTF-8) of the form
// {"type":"error","error":TEXT}, TEXT being the input when it is valid UTF-8.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "detail/ws_protocol.hpp"
#include "fuzz_check.hpp"
#include "losslens/dashboard/server.hpp"

namespace detail = losslens::dashboard::detail;
using losslens::fuzz::require;
using kind = detail::client_message::kind;

namespace {

void check_error_reply(const std::string& message) {
  const std::string text = detail::ws_error_json(message);
  losslens::fuzz::require_json(text, "ws error reply");
  const auto j = nlohmann::json::parse(text);
  require(j.is_object() && j.size() == 2 && j.at("type") == "error" && j.at("error").is_string(),
          "error reply shape");
  if (losslens::fuzz::valid_utf8(message))
    require(j.at("error").get<std::string>() == message, "valid UTF-8 comes back unchanged");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // Larger messages never reach handle(): Beast closes the connection (code 1009).
  if (size > losslens::dashboard::server_options{}.max_frame_bytes) return 0;

  const auto binary = detail::parse_client_message(false, text);
  require(binary.type == kind::error && !binary.error.empty(), "binary messages are errors");

  const auto m = detail::parse_client_message(true, text);
  switch (m.type) {
    case kind::error:
      require(!m.error.empty(), "an error says what is wrong");
      check_error_reply(m.error);
      break;
    case kind::subscribe:
    case kind::unsubscribe:
      require(m.run >= 1, "run ids are positive");
      [[fallthrough]];
    case kind::ping:
    case kind::watch_runs:
      require(nlohmann::json::accept(text.begin(), text.end()), "accepted messages are JSON");
      break;
  }
  // Error texts may quote what the client sent: any bytes must still give valid JSON.
  check_error_reply(std::string(text));
  return 0;
}
