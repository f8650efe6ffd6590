#include "detail/ws_protocol.hpp"

#include <limits>

#include <nlohmann/json.hpp>

#include "detail/json.hpp"

namespace losslens::dashboard::detail {

namespace {

constexpr const char* malformed_message =
    "malformed message: expected a JSON object with a \"type\"";

client_message bad(std::string why) {
  return client_message{client_message::kind::error, 0, std::move(why)};
}

}  // namespace

client_message parse_client_message(bool is_text, std::string_view text) {
  if (!is_text) return bad("binary messages are not supported; send JSON text");
  const auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad(malformed_message);
  const auto type_it = j.find("type");
  if (type_it == j.end() || !type_it->is_string()) return bad(malformed_message);
  const auto& type = type_it->get_ref<const std::string&>();
  if (type == "ping") return {client_message::kind::ping, 0, {}};
  if (type == "watch_runs") return {client_message::kind::watch_runs, 0, {}};
  if (type == "subscribe" || type == "unsubscribe") {
    // Positive integers parse as unsigned: one above INT64_MAX is not a run id either.
    std::int64_t run = 0;
    const auto run_it = j.find("run");
    if (run_it != j.end() && run_it->is_number_unsigned()) {
      const auto u = run_it->get<std::uint64_t>();
      if (u <= std::uint64_t(std::numeric_limits<std::int64_t>::max())) run = std::int64_t(u);
    } else if (run_it != j.end() && run_it->is_number_integer()) {
      run = run_it->get<std::int64_t>();
    }
    if (run < 1) return bad("\"" + type + "\" needs \"run\": a positive integer run id");
    return {
        type == "subscribe" ? client_message::kind::subscribe : client_message::kind::unsubscribe,
        run,
        {}};
  }
  return bad("unknown message type \"" + type + "\"");
}

std::string ws_error_json(std::string_view message) {
  return dump_json(nlohmann::json{{"type", "error"}, {"error", std::string(message)}});
}

}  // namespace losslens::dashboard::detail
