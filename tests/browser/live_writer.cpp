// Fixture for the browser test: writes a finished run and then a live run into a fresh
// database while an embedded dashboard server (port 0) serves it. Prints {"port":N,"run":ID}
// on stdout, then streams until `seconds` have passed or stdin closes. The line "restart" on
// stdin stops the server and starts it again on the same port 1.5 s later (then prints
// "restarted"); points keep streaming meanwhile. Two monitor "drops" events (queue overflow)
// are recorded, at steps 350 (12,345 samples) and 700 (20,000 in all).
//
// With --big STEPS FINDINGS: one run of STEPS steps written at once (FINDINGS findings, most
// of them incidents of several episodes), then streamed live at 500 steps/s with one more
// finding every 100 steps; after each commit (every 40 ms) it prints {"commit":STEP,"t":UNIX_MS},
// the step committed and when the commit returned, for the page's commit-to-pixel latency.

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "dashboard_trace.hpp"
#include "program_args.hpp"
#include "losslens/dashboard/server.hpp"
#include "losslens/storage/run_writer.hpp"

using namespace losslens;
using namespace std::chrono_literals;

namespace {

/// The dashboard embedded in this "trainer", on its own threads, started (port 0: any free one).
std::unique_ptr<dashboard::server> serve(const std::string& db, unsigned short port = 0) {
  dashboard::server_options so;
  so.db_path = db;
  so.port = port;
  auto server = std::make_unique<dashboard::server>(so);
  server->start();
  return server;
}

storage::writer_options commit_every(std::chrono::milliseconds interval) {
  storage::writer_options wo;
  wo.flush_interval = interval;
  return wo;
}

double unix_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(system_clock::now().time_since_epoch()).count();
}

/// Finding i of the big run: five kinds on five series, severities mixed, episodes of a few
/// steps every 40 steps (the incident spans them).
finding big_finding(std::uint64_t i, std::int64_t at) {
  static const char* kinds[] = {"loss_spike", "exploding_gradients", "plateau", "oscillation",
                                "non_finite"};
  static const char* series[] = {"loss", "grad_norm/conv1.weight", "loss/cls", "loss/box", "loss"};
  auto f = test::dashboard_finding(i, at, at);
  const int k = int(i % 5);
  f.kind = kinds[k];
  f.series = series[k];
  f.level = k == 4 ? severity::error : k % 2 ? severity::warning : severity::info;
  f.episodes = 1 + std::int64_t(i % 4);
  for (std::int64_t e = 0; e < f.episodes; ++e)
    f.spans.push_back({at + 40 * e, at + 40 * e + 3, f.level, 7.5});
  f.last_step = f.spans.back().last_step;
  f.message = std::string(kinds[k]) + " incident " + std::to_string(i);
  return f;
}

int run_big(const std::string& db, double seconds, std::int64_t steps, std::int64_t findings) {
  storage::run_writer w(db, test::dashboard_run("long-run"), commit_every(40ms));
  auto server = serve(db);
  // FINDINGS findings in the history, then one more every 100 live steps.
  const std::int64_t history = std::max<std::int64_t>(1, findings);
  const std::int64_t every = std::max<std::int64_t>(1, (steps - 200) / history);
  std::uint64_t next_id = 1;
  for (std::int64_t s = 0; s < steps; ++s) {
    w.append(test::dashboard_sample(s));
    if (s % every == 50 && std::int64_t(next_id) <= history)
      w.record_finding(big_finding(next_id++, s));
    if (s % 2000 == 1999) w.flush();  // keep the writer's queue from overflowing (no drops)
  }
  w.flush();
  std::printf("{\"port\":%u,\"run\":%lld,\"steps\":%lld}\n", unsigned(server->port()),
              (long long)w.run_id(), (long long)steps);
  std::fflush(stdout);
  auto start = std::chrono::steady_clock::now();
  for (std::int64_t s = steps;; s += 20) {  // 20 steps per 40 ms: 500 steps/s
    for (std::int64_t k = s; k < s + 20; ++k) {
      w.append(test::dashboard_sample(k));
      if (k % 100 == 0) w.record_finding(big_finding(next_id++, k));
    }
    w.flush();
    std::printf("{\"commit\":%lld,\"t\":%.3f}\n", (long long)(s + 19), unix_ms());
    std::fflush(stdout);
    std::this_thread::sleep_for(40ms);
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds)
      break;
    pollfd in{0, POLLIN, 0};
    if (::poll(&in, 1, 0) > 0) {
      char c;
      if (::read(0, &c, 1) <= 0) break;  // stdin closed: stop
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The browser test's scale mode first: DB SECONDS --big STEPS FINDINGS.
  if (argc == 6 && std::string(argv[3]) == "--big")
    return run_big(argv[1], std::atof(argv[2]), std::atoll(argv[4]), std::atoll(argv[5]));
  const losslens::testing::program_args args(
      argc, argv,
      "usage: dashboard_live_writer DB SECONDS [--big STEPS FINDINGS]\n\n"
      "Fixture of the browser test: writes a finished and then a live run into DB while an\n"
      "embedded dashboard serves it; prints {\"port\":N,\"run\":ID}, streams for SECONDS or\n"
      "until stdin closes; the line \"restart\" on stdin restarts the server. --big writes a\n"
      "STEPS-step run with FINDINGS findings first, then streams it (the scale test).\n",
      {}, {}, 2);
  if (args.positional().size() != 2) args.fail("DB and SECONDS are required");
  std::string db = args.positional()[0];
  double seconds = double(args.positional_integer(1, 0, 1, 1 << 30));
  {
    storage::run_writer old(db, test::dashboard_run("baseline-lr0.05"));
    for (std::int64_t s = 0; s < 1500; ++s) {
      auto x = test::dashboard_sample(s);
      *x.loss *= 1.1;
      old.append(x);
    }
  }
  storage::run_writer w(db, test::dashboard_run("resnet-lr0.1"), commit_every(50ms));
  auto server = serve(db);
  std::printf("{\"port\":%u,\"run\":%lld}\n", unsigned(server->port()), (long long)w.run_id());
  std::fflush(stdout);
  const auto port = server->port();  // a restart binds the same port
  std::string command;
  bool restarting = false;  // the server is down until restart_at
  std::chrono::steady_clock::time_point restart_at{};

  auto start = std::chrono::steady_clock::now();
  const std::int64_t spike_at = 400, nan_at = 420;
  for (std::int64_t s = 0;; ++s) {
    w.append(test::dashboard_sample(s, spike_at, nan_at));
    if (s == spike_at + 4) w.record_finding(test::dashboard_finding(1, spike_at, spike_at + 4));
    if (s == nan_at) {
      auto f = test::dashboard_finding(2, nan_at, nan_at);
      f.kind = "non_finite";
      f.level = severity::error;
      f.message = "loss is NaN";
      f.advice = "check the data and the loss for log(0) or division by zero; lower the LR";
      f.evidence = {{"value", std::numeric_limits<double>::quiet_NaN()}};
      w.record_finding(f);
    }
    if (s == 350) w.record_event("drops", R"({"source":"monitor","count":12345,"total":12345})", s);
    if (s == 700) w.record_event("drops", R"({"source":"monitor","count":7655,"total":20000})", s);
    if (s < 300) continue;              // some history before the page opens
    std::this_thread::sleep_for(20ms);  // 50 steps/s
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds)
      break;
    if (restarting && std::chrono::steady_clock::now() >= restart_at) {
      restarting = false;
      server = serve(db, port);
      std::printf("restarted\n");
      std::fflush(stdout);
    }
    pollfd in{0, POLLIN, 0};
    if (::poll(&in, 1, 0) > 0) {  // a command line, or stdin closed: stop
      char c;
      if (::read(0, &c, 1) <= 0) break;
      if (c != '\n') {
        command += c;
        continue;
      }
      if (command == "restart" && !restarting) {  // the page must reconnect by itself
        server.reset();
        restarting = true;
        restart_at = std::chrono::steady_clock::now() + 1500ms;
      }
      command.clear();
    }
  }
  return 0;
}
