#pragma once
// What the test_dashboard sources share (test_dashboard_api, _ws, _hostile, _sidecar): a
// history of two runs (NaN/Inf points, a finding, an invalid UTF-8 name) served in-process on
// an ephemeral port, a live run beside it, percent-encoding, and the `losslens` CLI
// (LOSSLENS_CLI) run as a child process.

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "child_process.hpp"
#include "dashboard_client.hpp"
#include "losslens/dashboard/server.hpp"
#include "losslens/finding.hpp"
#include "losslens/storage/run_writer.hpp"

namespace losslens::test {

inline constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
inline constexpr double inf_v = std::numeric_limits<double>::infinity();

/// A finding whose evidence holds Inf and NaN.
finding make_finding(std::uint64_t id, std::int64_t first, std::int64_t last);

/// Run options: tasks cls and rec, one layer.
storage::run_options make_run(const std::string& name);

/// A finished run with NaN/Inf points and a finding, and a run with an invalid UTF-8 name.
void write_history(const std::string& db);

/// Serving db on 127.0.0.1, port 0.
dashboard::server_options options_for(const std::string& db);

using tweak_options = std::function<void(dashboard::server_options&)>;

/// The history of write_history() in a fresh database, served on an ephemeral port.
struct served_history {
  temp_dir dir;
  std::string db = dir.file("runs.db");
  dashboard::server srv;
  explicit served_history(const tweak_options& tweak = {});
  static dashboard::server_options options(const std::string& db, const tweak_options& tweak);
};

/// Plus a run being written (committing every 20 ms).
struct served_live : served_history {
  storage::run_writer w;
  storage::run_writer::series_handle loss;
  explicit served_live(const char* name, const tweak_options& tweak = {});
  static storage::writer_options fast_commits();
};

/// Every byte but the unreserved ones percent-encoded.
std::string pct(std::string_view s);

/// `losslens ARGS`: exit status and stdout (stderr goes to the test's).
using cli_result = testing::process_result;
cli_result run_cli(const std::vector<std::string>& args);

/// True when text is one valid JSON document (nlohmann also rejects invalid UTF-8).
bool valid_json(const std::string& text);

}  // namespace losslens::test
