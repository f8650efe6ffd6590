// `losslens serve`: the live dashboard over a run-history database.

#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "losslens/dashboard/server.hpp"
#include "losslens/error.hpp"
#include "losslens/storage/run_reader.hpp"

namespace losslens::cli {

const std::string_view serve_usage =
    "usage: losslens serve [--db PATH] [--port N] [--host ADDR] [--token T]\n"
    "                      [--allow-origin ORIGINS] [--wait]\n\n"
    "Serves the live dashboard: the run list, charts of any run (live runs update as they\n"
    "are written), findings and comparisons, at http://ADDR:N/. Reads the database while\n"
    "trainers write it. Stops cleanly on Ctrl-C (SIGINT) or SIGTERM.\n\noptions:\n"
    "  --db PATH        run-history database (default runs.db)\n"
    "  --port N         TCP port (default 8080; 0 picks a free one)\n"
    "  --host ADDR      address to bind (default 127.0.0.1). Any other address needs a\n"
    "                   token: without --token one is generated and printed in the URL\n"
    "  --token T        require this token (header 'Authorization: Bearer T' or ?token=T),\n"
    "                   at least 16 visible ASCII characters (e.g. `openssl rand -hex 16`);\n"
    "                   default: the LOSSLENS_TOKEN environment variable\n"
    "  --allow-origin ORIGINS\n"
    "                   comma-separated origins (e.g. https://dash.example.com) whose pages\n"
    "                   may use the server besides its own (a reverse proxy's public name).\n"
    "                   Requests with any other Origin header get 403; on a loopback --host\n"
    "                   so do requests whose Host is not localhost, 127.0.0.1 or [::1]\n"
    "  --wait           if the database does not exist yet, wait for a trainer to create it\n"
    "                   (otherwise that is an error)\n\n"
    "exit status: 0 stopped by a signal, 1 cannot start (database, port, weak token),\n"
    "2 usage error\n";

int run_serve(int argc, char** argv) {
  auto args = parse_args(argc, argv, 1, {"db", "port", "host", "token", "allow-origin"}, {"wait"});
  if (!args.positional.empty())
    throw usage_error("unexpected argument '" + args.positional.front() + "'");
  dashboard::server_options options;
  options.db_path = args.get("db", "runs.db");
  options.port = static_cast<std::uint16_t>(args.get_int("port", 8080, 0, 65535));
  options.host = args.get("host", "127.0.0.1");
  const char* env_token = std::getenv("LOSSLENS_TOKEN");
  options.token = args.get("token", env_token ? env_token : "");
  // Off loopback a token is required: make one rather than refuse, and show it in the URL.
  const bool generated = options.token.empty() && !dashboard::is_loopback(options.host);
  if (generated) options.token = dashboard::generate_token();
  const std::string allow = args.get("allow-origin");
  for (std::string_view rest = allow; !rest.empty();) {
    const auto comma = rest.find(',');
    const auto origin = rest.substr(0, comma);
    if (origin.empty() || origin.find("://") == std::string_view::npos)
      throw usage_error("--allow-origin expects origins such as https://dash.example.com, got '" +
                        std::string(origin) + "'");
    options.allowed_origins.emplace_back(origin);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }

  // Block the stop signals in every thread (the server's threads inherit the mask) and
  // wait for them here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  if (args.has("wait") && !std::filesystem::exists(options.db_path)) {
    std::printf("losslens: waiting for %s to be created (by a trainer with attach_options::db)\n",
                options.db_path.c_str());
    std::fflush(stdout);
    const timespec poll{0, 200 * 1000 * 1000};
    while (!std::filesystem::exists(options.db_path))
      if (sigtimedwait(&stop_signals, nullptr, &poll) > 0) return 0;  // stopped while waiting
    // The trainer creates the file, then its tables: give it a few seconds to finish.
    for (int tries = 0;; ++tries) {
      try {
        storage::run_reader probe(options.db_path);
        break;
      } catch (const losslens::error&) {
        if (tries >= 50) throw;
      }
      if (sigtimedwait(&stop_signals, nullptr, &poll) > 0) return 0;
    }
  }

  // Every client is a file descriptor: raise the soft limit (often 1024) towards the hard one
  // so that max_clients (4096) connections fit.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < 8192 &&
      files.rlim_cur < files.rlim_max) {
    files.rlim_cur = std::min<rlim_t>(files.rlim_max, 8192);
    setrlimit(RLIMIT_NOFILE, &files);
  }

  dashboard::server server(options);
  server.start();
  std::string shown =
      options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host;
  const std::string query = options.token.empty() ? ""
                            : generated           ? "?token=" + options.token + " (generated token)"
                                                  : "?token=<token>";
  std::printf("losslens: dashboard for %s at http://%s:%u/%s\n", options.db_path.c_str(),
              shown.c_str(), unsigned(server.port()), query.c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::printf("losslens: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
  server.stop();
  return 0;
}

}  // namespace losslens::cli
