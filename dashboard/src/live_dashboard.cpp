#include "losslens/dashboard/live_dashboard.hpp"

#include "losslens/error.hpp"

namespace losslens::dashboard {

live_dashboard::live_dashboard(live_options options) : options_(std::move(options)) {
  if (!is_loopback(options_.host) && options_.token.empty())
    throw error("live_dashboard: serving on " + options_.host +
                " (not loopback) needs a token (live_options::token)");
}

live_dashboard::~live_dashboard() = default;

void live_dashboard::on_start(const run_start& run, sink_context& ctx) {
  ctx_ = &ctx;
  if (run.db.empty())
    ctx.log(severity::warning,
            "the live dashboard needs a run history to serve (set attach_options::db, e.g. "
            "\"runs.db\"); it serves nothing for this run");
}

void live_dashboard::on_event(const run_event& e) {
  if (e.kind == event_kind::stored) {
    if (server_) server_->notify();
    return;
  }
  if (e.kind != event_kind::run_created || server_) return;
  try {
    server_options so;
    so.db_path = std::string(e.text("db"));
    so.host = options_.host;
    so.port = options_.port;
    so.token = options_.token;
    so.poll_interval = options_.idle_poll;
    auto srv = std::make_unique<server>(so);
    srv->start();
    port_.store(srv->port());
    server_ = std::move(srv);
    ctx_->log(severity::info,
              "dashboard at http://" + options_.host + ":" + std::to_string(port_.load()) + "/");
  } catch (const std::exception& ex) {
    ctx_->log(severity::warning,
              std::string("cannot serve the dashboard: ") + ex.what() + "; training goes on");
  }
}

void live_dashboard::on_finish(std::uint64_t, std::int64_t) {
  // Sinks finish in reverse order: this one, added after the recorder, stops serving before
  // the run is marked finished.
  port_.store(0);
  server_.reset();
}

void live_dashboard::add_stats(sink_stats& out) const {
  if (const auto p = port_.load()) out.dashboard_port = p;
}

}  // namespace losslens::dashboard
