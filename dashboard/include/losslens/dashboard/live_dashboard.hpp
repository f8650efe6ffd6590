#pragma once
/// \file live_dashboard.hpp
/// The dashboard inside a trainer: a sink of the monitor that serves the run it records, live.
///
/// \code
/// auto lens = losslens::attach(model, opt, {.run = "fmnist", .db = "runs.db"});
/// lens.add_sink(std::make_unique<losslens::dashboard::live_dashboard>(
///     losslens::dashboard::live_options{.port = 8080}));   // http://127.0.0.1:8080/
/// \endcode

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "losslens/dashboard/server.hpp"
#include "losslens/sink.hpp"

namespace losslens::dashboard {

/// Where and how the live dashboard serves.
struct live_options {
  std::string host = "127.0.0.1";  ///< address to bind; off loopback it needs a token
  std::uint16_t port = 8080;       ///< 0: an ephemeral port (see port())
  std::string token{};             ///< required by every request when set (see docs)
  /// Polls of the database when nothing was committed (the run recorder's commits wake the
  /// dashboard at once; this only catches writes from elsewhere).
  std::chrono::milliseconds idle_poll{1000};
};

/// Starts a dashboard server (see server) once the run exists in the run history (needs a run
/// recorder, i.e. attach_options::db), reads the database only when the recorder committed new
/// points or findings or a client subscribed, and stops serving before the run is marked
/// finished. Its port shows in monitor::stats().dashboard_port. A server that cannot start is
/// reported once through the log sink; training goes on.
///
/// Thread-safety: a sink (monitor thread); port() from any thread.
class live_dashboard final : public sink {
 public:
  /// Throws losslens::error for a host off loopback without a token.
  explicit live_dashboard(live_options options);
  ~live_dashboard() override;

  void on_start(const run_start& run, sink_context& ctx) override;
  void on_event(const run_event& e) override;
  void on_finish(std::uint64_t steps, std::int64_t last_step) override;
  void add_stats(sink_stats& out) const override;

  /// The port served (0: not serving).
  std::uint16_t port() const noexcept { return port_.load(); }

 private:
  live_options options_;
  sink_context* ctx_ = nullptr;
  std::unique_ptr<server> server_;
  std::atomic<std::uint16_t> port_{0};
};

}  // namespace losslens::dashboard
