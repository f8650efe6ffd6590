// Fixture for the browser test: writes a finished run and then a live run into a fresh
// database while an embedded dashboard server (port 0) serves it. Prints {"port":N,"run":ID}
// on stdout, then streams until `seconds` have passed or stdin closes. The line "restart" on
// stdin stops the server and starts it again on the same port 1.5 s later (then prints
// "restarted"); points keep streaming meanwhile. Two monitor "drops" events (queue overflow)
// are recorded, at steps 350 (12,345 samples) and 700 (20,000 in all).

#include <poll.h>
#include <unistd.h>

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

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: dashboard_live_writer DB SECONDS\n\n"
      "Fixture of the browser test: writes a finished and then a live run into DB while an\n"
      "embedded dashboard serves it; prints {\"port\":N,\"run\":ID}, streams for SECONDS or\n"
      "until stdin closes; the line \"restart\" on stdin restarts the server.\n",
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
  storage::writer_options wo;
  wo.flush_interval = 50ms;
  storage::run_writer w(db, test::dashboard_run("resnet-lr0.1"), wo);
  // The server runs inside the "trainer", on its own threads.
  dashboard::server_options so;
  so.db_path = db;
  so.port = 0;
  auto server = std::make_unique<dashboard::server>(so);
  server->start();
  std::printf("{\"port\":%u,\"run\":%lld}\n", unsigned(server->port()), (long long)w.run_id());
  std::fflush(stdout);
  so.port = server->port();  // a restart binds the same port
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
    if (s == 350)
      w.record_event("drops", R"({"source":"monitor","count":12345,"total":12345})", s);
    if (s == 700)
      w.record_event("drops", R"({"source":"monitor","count":7655,"total":20000})", s);
    if (s < 300) continue;  // some history before the page opens
    std::this_thread::sleep_for(20ms);  // 50 steps/s
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds)
      break;
    if (restarting && std::chrono::steady_clock::now() >= restart_at) {
      restarting = false;
      server = std::make_unique<dashboard::server>(so);
      server->start();
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
