// Dashboard fan-out: commit-to-client latency with 1, 100 and 1000 websocket clients on
// loopback while a writer streams 10k points/s into one run. Prints JSON.
//
// The writer appends a batch every --commit-ms (default 200: 2000 points) and commits it with
// flush(); the time flush() returns is the batch's commit time (an upper bound, so latencies are if
// anything underestimated by the microseconds flush() takes to wake). Every client records when it
// first sees each batch's last step; latency = seen - committed, for every batch and client.
//
// usage: bench_dashboard_fanout [--seconds S] [--threads T] [--max-clients N] [--commit-ms C]
//                               [--poll-ms P] [--send-ms M]

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "bench_util.hpp"
#include "losslens/dashboard/server.hpp"
#include "losslens/storage/run_writer.hpp"

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using losslens::bench::clock_type;

namespace {

constexpr std::int64_t points_per_second = 10000;
// One batch per commit: points_per_second * commit period (set in main).
std::int64_t batch_points = 2000;
std::chrono::milliseconds batch_period{200};

struct seen {
  std::int64_t batch;
  clock_type::time_point at;
};

/// One websocket client reading asynchronously on the shared client io_context.
struct client {
  websocket::stream<beast::tcp_stream> ws;
  beast::flat_buffer buffer;
  std::int64_t max_step = -1;
  std::vector<seen> samples;
  std::uint64_t frames = 0;
  bool closed = false;

  explicit client(net::io_context& ioc) : ws(ioc) {}

  void start() {
    ws.async_read(buffer, [this](beast::error_code ec, std::size_t) {
      if (ec) {
        closed = true;
        return;
      }
      auto now = clock_type::now();
      ++frames;
      auto data = buffer.data();  // a flat_buffer is contiguous
      on_frame(std::string_view(static_cast<const char*>(data.data()), data.size()), now);
      buffer.consume(buffer.size());
      start();
    });
  }

  // The newest step of the frame: the last point of the last "loss" array (deltas are in
  // order). Avoids parsing every frame in full.
  void on_frame(std::string_view f, clock_type::time_point now) {
    auto key = f.rfind("\"loss\":[[");
    if (key == std::string_view::npos) return;
    auto end = f.find("]]", key);
    if (end == std::string_view::npos) return;
    auto open = f.rfind('[', end);
    std::int64_t step = 0;
    auto [p, ec] = std::from_chars(f.data() + open + 1, f.data() + end, step);
    if (ec != std::errc()) return;
    for (std::int64_t b = (max_step + 1) / batch_points; b <= step / batch_points; ++b)
      if ((b + 1) * batch_points - 1 <= step) samples.push_back({b, now});
    max_step = std::max(max_step, step);
  }
};

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::size_t k = std::min(v.size() - 1, std::size_t(q * double(v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(k), v.end());
  return v[k];
}

nlohmann::json run_phase(int clients, double seconds, int threads, int poll_ms, int send_ms) {
  losslens::bench::scratch_dir dir;
  auto db = dir.file("runs.db");
  losslens::storage::writer_options wo;
  wo.flush_interval = 10s;  // commits happen at our flush() calls only
  wo.heartbeat_interval = 10s;
  losslens::storage::run_options ro;
  ro.name = "fanout";
  losslens::storage::run_writer writer(db, ro, wo);
  auto loss = *writer.find_series("loss");

  losslens::dashboard::server_options so;
  so.db_path = db;
  so.port = 0;
  so.threads = threads;
  so.poll_interval = std::chrono::milliseconds(poll_ms);
  so.min_send_interval = std::chrono::milliseconds(send_ms);
  losslens::dashboard::server server(so);
  server.start();

  net::io_context ioc;
  std::vector<std::unique_ptr<client>> cs;
  int connected = 0;
  for (int i = 0; i < clients; ++i) {
    auto c = std::make_unique<client>(ioc);
    beast::error_code ec;
    beast::get_lowest_layer(c->ws).connect(
        tcp::endpoint(net::ip::make_address("127.0.0.1"), server.port()), ec);
    if (!ec) c->ws.handshake("127.0.0.1", "/ws", ec);
    if (!ec) {
      std::string sub = "{\"type\":\"subscribe\",\"run\":" + std::to_string(writer.run_id()) + "}";
      c->ws.write(net::buffer(sub), ec);
    }
    if (ec) continue;
    ++connected;
    c->ws.read_message_max(64 << 20);
    c->start();
    cs.push_back(std::move(c));
  }
  std::thread reader([&] { ioc.run(); });
  std::this_thread::sleep_for(500ms);  // acknowledgements

  // Stream: a batch every commit period, each committed and its commit time recorded.
  auto batches = std::int64_t(seconds * 1000 / double(batch_period.count()));
  std::vector<clock_type::time_point> committed(std::size_t(batches) + 1);
  auto t = clock_type::now();
  std::int64_t step = 0;
  for (std::int64_t b = 0; b < batches; ++b) {
    for (std::int64_t i = 0; i < batch_points; ++i, ++step)
      while (!writer.try_append(loss, step, 0, 1.0 + double(step % 1000) * 1e-3))
        std::this_thread::yield();
    writer.flush();
    committed[std::size_t(b)] = clock_type::now();
    t += batch_period;
    std::this_thread::sleep_until(t);
  }
  std::this_thread::sleep_for(1s);  // let the last batches arrive
  auto stats = server.stats();
  ioc.stop();
  reader.join();

  // Latencies, skipping the first second (warm-up).
  auto warmup = std::int64_t(1000 / batch_period.count());
  std::vector<double> ms;
  std::uint64_t frames = 0;
  int complete = 0, closed = 0;
  for (const auto& c : cs) {
    frames += c->frames;
    closed += c->closed;
    complete += c->max_step == step - 1;
    for (const auto& s : c->samples)
      if (s.batch >= warmup && s.batch < batches)
        ms.push_back(std::max(
            0.0, std::chrono::duration<double, std::milli>(s.at - committed[std::size_t(s.batch)])
                     .count()));
  }
  nlohmann::json r = {{"clients", clients},   {"connected", connected},
                      {"complete", complete}, {"closed", closed},
                      {"points", step},       {"samples", ms.size()},
                      {"frames", frames},     {"slow_drops", stats.slow_drops}};
  r["p50_ms"] = percentile(ms, 0.50);
  r["p95_ms"] = percentile(ms, 0.95);
  r["p99_ms"] = percentile(ms, 0.99);
  r["max_ms"] = ms.empty() ? 0.0 : *std::max_element(ms.begin(), ms.end());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: bench_dashboard_fanout [--seconds S] [--threads T] [--max-clients N]\n"
      "                              [--commit-ms C] [--poll-ms P] [--send-ms M]\n\n"
      "Commit-to-client latency of the dashboard with 1, 100 and 1000 websocket clients\n"
      "(up to --max-clients, default 1000) while a writer streams 10,000 points/s and\n"
      "commits every C ms (default 200). S seconds per client count (default 15); T server\n"
      "I/O threads (default 2); the server's poll interval P and per-client frame interval M\n"
      "in ms (default 20 and 100). Prints JSON.\n",
      {"seconds", "threads", "max-clients", "commit-ms", "poll-ms", "send-ms"});
  losslens::dashboard::server_options defaults;
  double seconds = double(args.integer("seconds", 15, 2, 86400));
  int threads = int(args.integer("threads", 2, 1, 64));
  int max_clients = int(args.integer("max-clients", 1000, 1, 4000));
  int poll_ms = int(args.integer("poll-ms", defaults.poll_interval.count(), 1, 10000));
  int send_ms = int(args.integer("send-ms", defaults.min_send_interval.count(), 0, 10000));
  int commit_ms = int(args.integer("commit-ms", 200, 1, 60000));
  batch_period = std::chrono::milliseconds(std::max(1, commit_ms));
  batch_points = std::max<std::int64_t>(1, points_per_second * batch_period.count() / 1000);
  // Two descriptors per client on loopback.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  nlohmann::json results = nlohmann::json::array();
  bool pass = true;
  for (int n : {1, 100, 1000}) {
    if (n > max_clients) break;
    auto r = run_phase(n, seconds, threads, poll_ms, send_ms);
    double target = n >= 1000 ? 250 : n >= 100 ? 100 : 100;
    r["target_p95_ms"] = target;
    r["pass"] = r["p95_ms"].get<double>() <= target && r["complete"] == n;
    pass = pass && r["pass"].get<bool>();
    results.push_back(r);
    std::fprintf(stderr, "%s\n", r.dump().c_str());
  }
  nlohmann::json out = {{"bench", "dashboard_fanout"},
                        {"points_per_second", points_per_second},
                        {"commit_interval_ms", batch_period.count()},
                        {"seconds_per_phase", seconds},
                        {"server_threads", threads},
                        {"poll_interval_ms", poll_ms},
                        {"min_send_interval_ms", send_ms},
                        {"results", results},
                        {"pass", pass}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
