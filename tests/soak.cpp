// Dashboard soak: a writer process (the trainer's side: it times every step's appends)
// streams points (and findings) into a database, a separate `losslens serve` sidecar serves
// it, 100 websocket clients subscribed to the run read everything, one stuck client reads
// nothing, and a reader loop queries the database as the CLI would. Every second the
// sidecar's RSS (/proc/PID/status VmRSS) and the WAL file size are sampled; every
// --sample-seconds (60 by default) a row of the summary's "samples": RSS, WAL size, open file
// descriptors of the sidecar and the writer, the writer's step-time p99 and the reader's
// queries. At the end:
//
//  * every fast client got every point of every series once, in order (compared with
//    run_reader), and none stalled (largest gap between two of its frames while the writer
//    streamed < 5 s);
//  * the stuck client was disconnected by the server (slow-client drop) or, if not, the
//    sidecar's memory stayed bounded anyway;
//  * the sidecar's RSS grew by less than 20 MiB from the end of the warm-up to the end;
//  * the WAL never exceeded the writer's wal_limit_bytes plus 2 MiB (sampled, and the writer's
//    own wal_bytes_max);
//  * the sidecar's and the writer's open file descriptors did not grow by more than 16 after
//    the warm-up, and every query of the reader loop succeeded.
//
// Prints a JSON summary with the measured numbers; exit status 0 when every check holds.
// Usage: see `dashboard_soak --help`. The 30-minute soak is a bench, not a CI test:
// `dashboard_soak --seconds 1800` (or the bench_soak_30min target).

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "losslens/storage/run_reader.hpp"
#include "program_args.hpp"
#include "losslens/storage/run_writer.hpp"
#include "temp_dir.hpp"

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// Bounds checked at the end (see the header comment).
constexpr double max_frame_gap_s = 5.0;
constexpr std::int64_t max_rss_growth_kib = 20 * 1024;
constexpr std::int64_t wal_limit_bytes = 4 << 20;
constexpr std::int64_t wal_margin_bytes = 2 << 20;
constexpr std::int64_t max_fd_growth = 16;

const char* usage =
    "usage: dashboard_soak [--seconds N] [--rate POINTS_PER_S] [--clients N]\n"
    "                      [--sample-seconds S] [--cli PATH]\n\n"
    "A writer process streams RATE points/s (default 5000) for N seconds (default\n"
    "LOSSLENS_SOAK_SECONDS, else 120; at least 10) into a database served by a `losslens\n"
    "serve` sidecar (PATH, default the one built with it) to N websocket clients (default\n"
    "100) and one stuck client, while a reader loop queries the database. Every S seconds\n"
    "(default 60) it records RSS, WAL size, open file descriptors and the writer's step-time\n"
    "p99. Prints a JSON summary; exit status 0 when every check holds, 1 otherwise.\n";

const std::vector<std::string> series_names = {"loss", "loss/cls", "grad_norm", "lr"};

double seconds_since(steady::time_point t) {
  return std::chrono::duration<double>(steady::now() - t).count();
}

// ---- the writer process -----------------------------------------------------------------------

/// p-quantile of v (sorted in place); 0 when empty.
double quantile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, std::size_t(p * double(v.size())))];
}

int writer_main(const std::string& db, const std::string& go_file, double seconds, double rate,
                double sample_seconds) {
  losslens::storage::run_options run;
  run.name = "soak";
  run.config_json = R"({"soak": true})";
  run.schema = {{"cls"}, {}};
  losslens::storage::writer_options wo;
  wo.wal_limit_bytes = wal_limit_bytes;
  losslens::storage::run_writer w(db, run, wo);
  std::vector<losslens::storage::run_writer::series_handle> handles;
  for (const auto& n : series_names) handles.push_back(*w.find_series(n));
  std::printf("{\"run\":%lld}\n", (long long)w.run_id());
  std::fflush(stdout);
  while (!std::filesystem::exists(go_file)) std::this_thread::sleep_for(10ms);

  // Paced: every 10 ms, the steps due by then (rate points/s over the series).
  const double steps_per_s = rate / double(handles.size());
  const auto start = steady::now();
  std::int64_t step = 0;
  std::uint64_t finding_id = 0;
  // What each step costs the training loop (its appends and findings), per sample interval.
  std::vector<double> step_us;
  int sample = 0;
  auto report = [&] {
    const double max_us = step_us.empty() ? 0 : *std::max_element(step_us.begin(), step_us.end());
    const double p99 = quantile(step_us, 0.99);
    std::printf("%s\n", json{{"sample", sample++},
                             {"steps", step_us.size()},
                             {"step_p99_us", std::round(p99 * 100) / 100},
                             {"step_max_us", std::round(max_us * 100) / 100}}
                            .dump()
                            .c_str());
    std::fflush(stdout);
    step_us.clear();
  };
  for (;;) {
    const double t = seconds_since(start);
    if (t >= seconds) break;
    if (t >= sample_seconds * (sample + 1)) report();
    const auto due = std::int64_t(t * steps_per_s);
    for (; step < due; ++step) {
      const auto step_start = steady::now();
      const double s = double(step);
      const double loss = 2.0 * std::exp(-s / 50000.0) + 0.05 * std::sin(s * 0.01);
      w.append(handles[0], step, 0, step % 100000 == 77777 ? std::nan("") : loss);
      w.append(handles[1], step, 0, loss * 0.6);
      w.append(handles[2], step, 0, 1.0 + 0.2 * std::cos(s * 0.003));
      w.append(handles[3], step, 0, 0.1);
      // A finding every 5000 steps; every other one grows over the next 100 steps.
      if (step % 5000 == 0) {
        losslens::finding f;
        f.id = ++finding_id;
        f.kind = "loss_spike";
        f.level = losslens::severity::warning;
        f.first_step = f.last_step = step;
        f.series = "loss";
        f.message = "synthetic spike at step " + std::to_string(step);
        f.advice = "none: this is the soak test";
        w.record_finding(f);
      }
      if (step % 10000 == 100 && finding_id > 0) {
        losslens::finding f;
        f.id = finding_id;
        f.kind = "loss_spike";
        f.level = losslens::severity::warning;
        f.first_step = step - 100;
        f.last_step = step;
        f.series = "loss";
        f.message = "synthetic spike grew";
        f.advice = "none";
        w.record_finding(f);
      }
      step_us.push_back(
          std::chrono::duration<double, std::micro>(steady::now() - step_start).count());
    }
    std::this_thread::sleep_for(10ms);
  }
  if (!step_us.empty()) report();
  w.finish();
  auto st = w.stats();
  std::printf("{\"steps\":%lld,\"written\":%llu,\"dropped\":%llu,\"wal_bytes_max\":%lld}\n",
              (long long)step, (unsigned long long)st.written, (unsigned long long)st.dropped,
              (long long)st.wal_bytes_max);
  std::fflush(stdout);
  return 0;
}

// ---- websocket clients ------------------------------------------------------------------------

struct client_stats {
  std::map<std::string, std::int64_t> next;  // per series, the step expected next
  std::uint64_t points = 0;
  std::uint64_t frames = 0;
  std::uint64_t gaps = 0;  // a point whose step was not the expected one
  bool subscribed = false;
  bool closed = false;
  std::string status;
  double max_gap_s = 0;  // between frames, while the writer streams
  steady::time_point last_frame{};
};

/// Shared by the clients (all on one I/O thread) and the main thread.
struct soak_state {
  std::mutex mutex;
  std::atomic<bool> streaming{false};
  steady::time_point stream_start{};
};

class fast_client : public std::enable_shared_from_this<fast_client> {
 public:
  fast_client(net::io_context& ioc, soak_state& s) : ws_(ioc), state_(s) {}

  void connect(std::uint16_t port, std::int64_t run) {
    beast::get_lowest_layer(ws_).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    ws_.read_message_max(256 << 20);
    ws_.handshake("127.0.0.1", "/ws");
    ws_.write(net::buffer(json{{"type", "subscribe"}, {"run", run}}.dump()));
  }
  void start() { read(); }
  client_stats stats() {
    std::lock_guard lock(state_.mutex);
    return stats_;
  }

 private:
  void read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_read(ec);
    });
  }
  void on_read(beast::error_code ec) {
    std::lock_guard lock(state_.mutex);
    if (ec) {
      stats_.closed = true;
      return;
    }
    auto now = steady::now();
    if (state_.streaming && stats_.last_frame != steady::time_point{})
      stats_.max_gap_s = std::max(
          stats_.max_gap_s,
          std::chrono::duration<double>(now - std::max(stats_.last_frame, state_.stream_start))
              .count());
    stats_.last_frame = now;
    ++stats_.frames;
    auto frame = json::parse(beast::buffers_to_string(buffer_.data()), nullptr, false);
    buffer_.consume(buffer_.size());
    if (frame.is_array())
      for (const auto& m : frame) handle(m);
    read();
  }
  void handle(const json& m) {
    const auto& type = m["type"];
    if (type == "subscribed") {
      stats_.subscribed = true;
      stats_.status = m["status"];
      for (const auto& [name, last] : m["last_steps"].items())
        stats_.next[name] = last.get<std::int64_t>() + 1;
    } else if (type == "delta") {
      stats_.status = m["status"];
      for (const auto& [name, pts] : m["points"].items()) {
        auto& next = stats_.next[name];
        for (const auto& p : pts) {
          auto step = p[0].get<std::int64_t>();
          if (step != next) ++stats_.gaps;
          next = step + 1;
          ++stats_.points;
        }
      }
    }
  }

  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
  soak_state& state_;
  client_stats stats_;
};

/// Subscribes and then reads nothing (a tiny receive buffer), until drain() at the end.
class stuck_client : public std::enable_shared_from_this<stuck_client> {
 public:
  explicit stuck_client(net::io_context& ioc) : ws_(ioc) {}
  void connect(std::uint16_t port, std::int64_t run) {
    auto& sock = beast::get_lowest_layer(ws_).socket();
    sock.open(tcp::v4());
    sock.set_option(net::socket_base::receive_buffer_size(4096));
    beast::get_lowest_layer(ws_).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    ws_.read_message_max(256 << 20);
    ws_.handshake("127.0.0.1", "/ws");
    ws_.write(net::buffer(json{{"type", "subscribe"}, {"run", run}}.dump()));
  }
  /// Reads what is left; the connection ends with an error when the server dropped it.
  void drain() {
    beast::get_lowest_layer(ws_).expires_after(20s);
    read();
  }
  bool closed() const { return closed_; }
  std::uint64_t bytes() const { return bytes_; }

 private:
  void read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t n) {
      if (ec) {
        self->closed_ = ec != beast::error::timeout;
        self->timed_out_ = ec == beast::error::timeout;
        return;
      }
      self->bytes_ += n;
      self->buffer_.consume(self->buffer_.size());
      self->read();
    });
  }
  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> timed_out_{false};
  std::atomic<std::uint64_t> bytes_{0};
};

// ---- sampling ---------------------------------------------------------------------------------

std::int64_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return -1;
  // Fields after the command: state(3) ... utime(14) stime(15).
  std::vector<std::string> f;
  std::size_t i = close + 2;
  while (i < text.size()) {
    auto j = text.find(' ', i);
    f.push_back(text.substr(i, j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  if (f.size() < 13) return -1;
  return double(std::atoll(f[11].c_str()) + std::atoll(f[12].c_str())) /
         double(sysconf(_SC_CLK_TCK));
}

std::int64_t open_fds(pid_t pid) {
  std::error_code ec;
  std::int64_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return ec ? -1 : n;
}

std::int64_t file_size(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : std::int64_t(n);
}

/// Queries the database in a loop as `losslens runs` / `metrics` would, on its own thread:
/// the run list, the series, a 1000-point window of the loss, the findings. Counts the
/// queries, their failures and the slowest, per interval.
class reader_loop {
 public:
  reader_loop(std::string db, std::int64_t run)
      : thread_([this, db = std::move(db), run](std::stop_token stop) { loop(stop, db, run); }) {}

  struct counts {
    std::uint64_t queries = 0;
    std::uint64_t errors = 0;
    double max_ms = 0;
    std::string last_error;
  };
  /// The counts since the last call (and the totals in all).
  counts take(counts* all = nullptr) {
    std::lock_guard lock(mutex_);
    counts c = interval_;
    interval_ = {};
    interval_.last_error = c.last_error;
    if (all) *all = total_;
    return c;
  }

 private:
  void loop(std::stop_token stop, const std::string& db, std::int64_t run) {
    std::optional<losslens::storage::run_reader> reader;
    while (!stop.stop_requested()) {
      const auto t0 = steady::now();
      try {
        if (!reader) reader.emplace(db);
        (void)reader->runs();
        for (const auto& s : reader->series(run))
          if (s.name == "loss" && s.summary.count > 0)
            (void)reader->window(s.id, 0, s.summary.last.step, 1000);
        (void)reader->findings(run);
        add(seconds_since(t0) * 1000, {});
      } catch (const std::exception& e) {
        reader.reset();
        add(seconds_since(t0) * 1000, e.what());
      }
      std::this_thread::sleep_for(50ms);
    }
  }
  void add(double ms, const std::string& error) {
    std::lock_guard lock(mutex_);
    for (counts* c : {&interval_, &total_}) {
      ++c->queries;
      c->max_ms = std::max(c->max_ms, ms);
      if (!error.empty()) {
        ++c->errors;
        c->last_error = error;
      }
    }
  }

  std::mutex mutex_;
  counts interval_, total_;
  std::jthread thread_;  // last: stopped and joined before the counters go
};

}  // namespace

int main(int argc, char** argv) {
  // Internal: the writer process (not a user-facing mode).
  if (argc == 7 && std::string(argv[1]) == "--writer")
    return writer_main(argv[2], argv[3], std::atof(argv[4]), std::atof(argv[5]),
                       std::atof(argv[6]));

  const losslens::testing::program_args args(
      argc, argv, usage, {"seconds", "rate", "clients", "sample-seconds", "cli"});
  double default_seconds = 120;
  if (const char* env = std::getenv("LOSSLENS_SOAK_SECONDS")) default_seconds = std::atof(env);
  const double seconds = args.number("seconds", default_seconds, 10, 1e7);
  const double rate = args.number("rate", 5000, 100, 1e8);
  const int n_clients = int(args.integer("clients", 100, 1, 4000));
  const double sample_seconds = args.number("sample-seconds", 60, 1, 1e7);
  const std::string cli = args.text("cli", LOSSLENS_CLI);
  const double warmup = std::min(20.0, seconds / 4);

  losslens::testing::temp_dir dir("soak");
  const std::string db = dir.file("runs.db");
  const std::string go = dir.file("go");
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<std::string> failures;
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "dashboard_soak: FAIL: %s\n", why.c_str());
    failures.push_back(why);
  };

  // 1. The writer creates the run, then waits for the go file.
  losslens::testing::child_process writer(self,
                                          {"--writer", db, go, std::to_string(seconds),
                                           std::to_string(rate), std::to_string(sample_seconds)},
                                          dir.file("writer.err"));
  auto first = writer.read_line(30s);
  if (!first) {
    std::fprintf(stderr, "dashboard_soak: the writer did not start\n");
    return 1;
  }
  const std::int64_t run = json::parse(*first)["run"];

  // 2. The sidecar.
  losslens::testing::child_process sidecar(cli, {"serve", "--db", db, "--port", "0"},
                                           dir.file("serve.err"));
  auto line = sidecar.wait_for("losslens: dashboard", 30s);
  auto at = line ? line->find("http://127.0.0.1:") : std::string::npos;
  if (at == std::string::npos) {
    std::fprintf(stderr, "dashboard_soak: losslens serve did not start\n");
    return 1;
  }
  const auto port = std::uint16_t(std::stoi(line->substr(at + 17)));

  // 3. The clients, on one I/O thread.
  net::io_context ioc;
  soak_state state;
  std::vector<std::shared_ptr<fast_client>> clients;
  for (int i = 0; i < n_clients; ++i) {
    clients.push_back(std::make_shared<fast_client>(ioc, state));
    clients.back()->connect(port, run);
  }
  auto stuck = std::make_shared<stuck_client>(ioc);
  stuck->connect(port, run);
  for (auto& c : clients) c->start();
  auto work = net::make_work_guard(ioc);
  std::thread io([&] { ioc.run(); });

  const auto subscribe_deadline = steady::now() + 30s;
  for (;;) {
    int subscribed = 0;
    for (auto& c : clients) subscribed += c->stats().subscribed;
    if (subscribed == n_clients) break;
    if (steady::now() > subscribe_deadline) {
      fail("only " + std::to_string(subscribed) + " clients were subscribed after 30 s");
      break;
    }
    std::this_thread::sleep_for(20ms);
  }

  // 4. Go; sample every second while the writer streams.
  {
    std::lock_guard lock(state.mutex);
    state.stream_start = steady::now();
    state.streaming = true;
  }
  reader_loop reader_queries(db, run);
  std::ofstream(go).put('\n');
  const auto start = steady::now();
  const double cpu0 = cpu_seconds(sidecar.pid());
  std::int64_t rss_start = rss_kib(sidecar.pid()), rss_warm = -1, rss_max = rss_start, wal_max = 0;
  std::int64_t fds_warm_sidecar = -1, fds_warm_writer = -1, fds_max_sidecar = 0, fds_max_writer = 0;
  std::optional<std::string> writer_done;
  json samples = json::array(), writer_samples = json::array();
  std::int64_t interval_wal_max = 0;
  while (!writer_done) {
    if (auto line = writer.read_line(1s)) {
      auto j = json::parse(*line, nullptr, false);
      if (j.is_object() && j.contains("sample"))
        writer_samples.push_back(j);
      else
        writer_done = line;
    }
    auto rss = rss_kib(sidecar.pid());
    rss_max = std::max(rss_max, rss);
    const auto wal = file_size(db + "-wal");
    wal_max = std::max(wal_max, wal);
    interval_wal_max = std::max(interval_wal_max, wal);
    const auto fds_sidecar = open_fds(sidecar.pid());
    const auto fds_writer = writer_done ? fds_max_writer : open_fds(writer.pid());
    fds_max_sidecar = std::max(fds_max_sidecar, fds_sidecar);
    fds_max_writer = std::max(fds_max_writer, fds_writer);
    if (rss_warm < 0 && seconds_since(start) >= warmup) {
      rss_warm = rss;
      fds_warm_sidecar = fds_sidecar;
      fds_warm_writer = fds_writer;
    }
    // One row per sample interval (the writer reports its step times on the same clock).
    const double now_s = seconds_since(start);
    if (now_s >= sample_seconds * double(samples.size() + 1) ||
        (writer_done && now_s >= sample_seconds * double(samples.size()) + 1)) {
      auto q = reader_queries.take();
      samples.push_back({{"t_s", std::round(seconds_since(start))},
                         {"sidecar_rss_kib", rss},
                         {"wal_bytes", wal},
                         {"wal_bytes_max", interval_wal_max},
                         {"sidecar_fds", fds_sidecar},
                         {"writer_fds", fds_writer},
                         {"reader_queries", q.queries},
                         {"reader_errors", q.errors},
                         {"reader_max_ms", std::round(q.max_ms * 10) / 10}});
      interval_wal_max = 0;
    }
    if (seconds_since(start) > seconds + 60) break;
  }
  const double streamed_s = seconds_since(start);
  // The writer's step times, joined to the rows by interval.
  for (std::size_t i = 0; i < samples.size() && i < writer_samples.size(); ++i) {
    samples[i]["step_p99_us"] = writer_samples[i]["step_p99_us"];
    samples[i]["step_max_us"] = writer_samples[i]["step_max_us"];
    samples[i]["steps"] = writer_samples[i]["steps"];
  }
  {
    std::lock_guard lock(state.mutex);
    state.streaming = false;
  }
  // Gaps up to the end of streaming count too (a client that got nothing at the end stalled).
  auto stream_end = steady::now();
  if (!writer_done) {
    fail("the writer did not finish");
    writer_done = "{}";
  }
  auto wj = json::parse(*writer_done, nullptr, false);
  const std::int64_t steps = wj.value("steps", std::int64_t{0});
  if (writer.wait() != 0) fail("the writer exited with an error");

  // 5. Fast clients catch up with the end (the run's status turns to finished).
  const auto catchup_deadline = steady::now() + 60s;
  for (;;) {
    int done = 0;
    for (auto& c : clients) {
      auto s = c->stats();
      bool all = s.status == "finished";
      for (const auto& n : series_names) all = all && s.next[n] == steps;
      done += all;
    }
    if (done == n_clients || steady::now() > catchup_deadline) break;
    std::this_thread::sleep_for(100ms);
  }
  auto rss_end = rss_kib(sidecar.pid());
  const auto fds_end_sidecar = open_fds(sidecar.pid());
  const double cpu1 = cpu_seconds(sidecar.pid());
  reader_loop::counts reader_total;
  (void)reader_queries.take(&reader_total);
  stuck->drain();
  std::this_thread::sleep_for(100ms);
  auto drain_deadline = steady::now() + 25s;
  while (!stuck->closed() && steady::now() < drain_deadline) std::this_thread::sleep_for(100ms);

  // 6. Compare with the database.
  losslens::storage::run_reader reader(db);
  std::map<std::string, std::int64_t> db_count, db_last;
  for (const auto& s : reader.series(run)) {
    db_count[s.name] = s.summary.count;
    db_last[s.name] = s.summary.count ? s.summary.last.step : -1;
  }
  std::int64_t db_points = 0;
  for (const auto& n : series_names) {
    db_points += db_count[n];
    if (db_count[n] != steps || db_last[n] != steps - 1)
      fail("series " + n + " holds " + std::to_string(db_count[n]) + " points, the writer wrote " +
           std::to_string(steps) + " steps");
  }
  int complete = 0, stalled = 0, closed = 0;
  std::uint64_t frames = 0, gaps = 0;
  double max_gap = 0;
  for (auto& c : clients) {
    auto s = c->stats();
    double gap = s.max_gap_s;
    if (s.last_frame < stream_end)
      gap = std::max(gap, std::chrono::duration<double>(stream_end -
                                                        std::max(s.last_frame, state.stream_start))
                              .count());
    max_gap = std::max(max_gap, gap);
    stalled += gap >= max_frame_gap_s;
    frames += s.frames;
    gaps += s.gaps;
    closed += s.closed;
    bool all = s.gaps == 0 && std::int64_t(s.points) == db_points;
    for (const auto& n : series_names) all = all && s.next[n] == db_last[n] + 1;
    complete += all;
  }
  if (complete != n_clients)
    fail(std::to_string(n_clients - complete) + " fast clients missed points (gaps " +
         std::to_string(gaps) + ")");
  if (stalled > 0)
    fail(std::to_string(stalled) + " fast clients went " + std::to_string(max_frame_gap_s) +
         " s or more without a frame");
  if (closed > 0) fail(std::to_string(closed) + " fast clients were disconnected");
  const std::int64_t growth = rss_end - rss_warm;
  if (growth >= max_rss_growth_kib)
    fail("sidecar RSS grew by " + std::to_string(growth) + " KiB after the warm-up");
  if (wal_max > wal_limit_bytes + wal_margin_bytes)
    fail("WAL reached " + std::to_string(wal_max) + " bytes");
  if (wj.value("wal_bytes_max", std::int64_t{0}) > wal_limit_bytes + wal_margin_bytes)
    fail("the writer saw the WAL at " + std::to_string(wj.value("wal_bytes_max", 0)) + " bytes");
  if (wj.value("dropped", 0) != 0) fail("the writer dropped points");
  if (fds_end_sidecar - fds_warm_sidecar > max_fd_growth)
    fail("the sidecar's open file descriptors grew from " + std::to_string(fds_warm_sidecar) +
         " to " + std::to_string(fds_end_sidecar));
  if (fds_max_writer - fds_warm_writer > max_fd_growth)
    fail("the writer's open file descriptors grew from " + std::to_string(fds_warm_writer) +
         " to " + std::to_string(fds_max_writer));
  if (reader_total.errors > 0 || reader_total.queries == 0)
    fail("the reader loop failed " + std::to_string(reader_total.errors) + " of " +
         std::to_string(reader_total.queries) + " times: " + reader_total.last_error);

  // 7. Stop the sidecar cleanly.
  sidecar.kill(SIGTERM);
  const int serve_exit = sidecar.wait();
  if (serve_exit != 0) fail("losslens serve exited with " + std::to_string(serve_exit));
  work.reset();
  ioc.stop();
  io.join();

  json summary = {
      {"seconds", seconds},
      {"streamed_s", std::round(streamed_s * 10) / 10},
      {"rate_points_per_s", rate},
      {"fast_clients", n_clients},
      {"steps", steps},
      {"points_in_db", db_points},
      {"fast_clients_complete", complete},
      {"gaps", gaps},
      {"frames", frames},
      {"max_frame_gap_s", std::round(max_gap * 1000) / 1000},
      {"max_frame_gap_bound_s", max_frame_gap_s},
      {"slow_client", {{"dropped", stuck->closed()}, {"bytes_read", stuck->bytes()}}},
      {"rss_kib",
       {{"start", rss_start},
        {"warmup_end", rss_warm},
        {"end", rss_end},
        {"max", rss_max},
        {"growth_after_warmup", growth},
        {"growth_bound", max_rss_growth_kib}}},
      {"warmup_s", warmup},
      {"wal_bytes",
       {{"max_sampled", wal_max},
        {"writer_max", wj.value("wal_bytes_max", 0)},
        {"limit", wal_limit_bytes},
        {"bound", wal_limit_bytes + wal_margin_bytes}}},
      {"sidecar_cpu_s", std::round((cpu1 - cpu0) * 10) / 10},
      {"fds",
       {{"sidecar",
         {{"warmup_end", fds_warm_sidecar}, {"max", fds_max_sidecar}, {"end", fds_end_sidecar}}},
        {"writer", {{"warmup_end", fds_warm_writer}, {"max", fds_max_writer}}},
        {"growth_bound", max_fd_growth}}},
      {"reader_loop",
       {{"queries", reader_total.queries},
        {"errors", reader_total.errors},
        {"max_ms", std::round(reader_total.max_ms * 10) / 10}}},
      {"sample_seconds", sample_seconds},
      {"samples", samples},
      {"serve_exit", serve_exit},
      {"failures", failures},
      {"pass", failures.empty()}};
  std::printf("%s\n", summary.dump(2).c_str());
  return failures.empty() ? 0 : 1;
}
