// A small real training loop with a monitor attached, run as a child process by test_faults:
// it gets killed, its disk fills, its database is read-only or corrupt, or its monitor thread
// stalls. It reports on stdout, one line per event, flushed at once, so the parent can act
// while it runs:
//   step <i> <monotonic ns>        after every step (--trace)
//   degraded <step> <error>        stats().storage_degraded turned on
//   healthy <step>                 ... and off again
//   done <json>                    the final stats (after detach)
//
// Usage: losslens_fault_trainer --db PATH [--steps N (0: until killed)] [--trace]
//          [--nan-at STEP] [--step-sleep-us US] [--db-retry-ms MS] [--flush-ms MS]
//          [--fsize-at STEP] [--fsize-restore-ms MS] [--until-healthy-steps N]
//          [--burst-seconds S] [--stall-ms MS] [--queue N]

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <nlohmann/json.hpp>

#include "losslens/torch/monitor.hpp"
#include "program_args.hpp"

namespace {

struct options {
  std::string db;
  long steps = 2000;
  bool trace = false;
  long nan_at = -1;
  long step_sleep_us = 0;
  long db_retry_ms = 200;
  long flush_ms = 200;
  long fsize_at = -1;             // at this step, cap the size of files this process writes
  long fsize_restore_ms = 1000;   // ... and lift the cap this long after degraded shows
  long until_healthy_steps = -1;  // stop this many steps after storage turned healthy again
  double burst_seconds = 0;
  long stall_ms = 0;
  long queue = 1024;
};

const char* usage =
    "usage: losslens_fault_trainer --db PATH [--steps N] [--trace] [--nan-at STEP]\n"
    "         [--step-sleep-us US] [--db-retry-ms MS] [--flush-ms MS] [--fsize-at STEP]\n"
    "         [--fsize-restore-ms MS] [--until-healthy-steps N] [--burst-seconds S]\n"
    "         [--stall-ms MS] [--queue N]\n\n"
    "A small training loop with a monitor recording into PATH, for test_faults: N steps\n"
    "(default 2000; 0: until killed). Reports step / degraded / healthy / done lines on\n"
    "stdout (see tests/fault_trainer.cpp).\n";

options parse(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv, usage,
      {"db", "steps", "nan-at", "step-sleep-us", "db-retry-ms", "flush-ms", "fsize-at",
       "fsize-restore-ms", "until-healthy-steps", "burst-seconds", "stall-ms", "queue"},
      {"trace"});
  constexpr std::int64_t big = std::int64_t{1} << 40;
  options o;
  o.db = args.text("db");
  o.steps = long(args.integer("steps", o.steps, 0, big));
  o.trace = args.has("trace");
  o.nan_at = long(args.integer("nan-at", o.nan_at, -1, big));
  o.step_sleep_us = long(args.integer("step-sleep-us", o.step_sleep_us, 0, big));
  o.db_retry_ms = long(args.integer("db-retry-ms", o.db_retry_ms, 0, big));
  o.flush_ms = long(args.integer("flush-ms", o.flush_ms, 1, big));
  o.fsize_at = long(args.integer("fsize-at", o.fsize_at, -1, big));
  o.fsize_restore_ms = long(args.integer("fsize-restore-ms", o.fsize_restore_ms, 0, big));
  o.until_healthy_steps = long(args.integer("until-healthy-steps", o.until_healthy_steps, -1, big));
  o.burst_seconds = args.number("burst-seconds", o.burst_seconds, 0, 1e6);
  o.stall_ms = long(args.integer("stall-ms", o.stall_ms, 0, big));
  o.queue = long(args.integer("queue", o.queue, 1, big));
  if (o.db.empty()) args.fail("--db is required");
  return o;
}

long long mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::uintmax_t size_or_zero(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : n;
}

void set_fsize_limit(rlim_t soft) {
  rlimit r{};
  getrlimit(RLIMIT_FSIZE, &r);
  r.rlim_cur = std::min(soft, r.rlim_max);
  setrlimit(RLIMIT_FSIZE, &r);
}

nlohmann::json to_json(const losslens::monitor_stats& s) {
  return {{"steps", s.steps},
          {"queued", s.queued},
          {"processed", s.processed},
          {"dropped", s.dropped},
          {"rejected", s.rejected},
          {"findings", s.findings},
          {"run_id", s.run_id},
          {"storage_failed", s.storage_failed},
          {"storage_degraded", s.storage_degraded},
          {"points_written", s.points_written},
          {"points_lost", s.points_lost},
          {"write_failures", s.write_failures},
          {"storage_error", s.storage_error}};
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  std::signal(SIGXFSZ, SIG_IGN);  // past RLIMIT_FSIZE: write() fails with EFBIG, as on a full disk
  torch::set_num_threads(1);
  torch::manual_seed(0);

  torch::nn::Linear model(16, 4);
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto x = torch::randn({32, 16});
  auto y = x.slice(1, 0, 4).argmax(1);

  losslens::attach_options ao;
  ao.run = "fault";
  ao.db = o.db;
  ao.db_retry_interval = std::chrono::milliseconds(o.db_retry_ms);
  ao.db_writer.flush_interval = std::chrono::milliseconds(o.flush_ms);
  ao.db_writer.wal_limit_bytes = std::int64_t{1} << 20;
  ao.db_writer.retry_interval = std::chrono::milliseconds(100);
  ao.queue_capacity = std::size_t(o.queue);
  ao.log_findings = true;
  if (o.stall_ms > 0) {
    const auto stall = std::chrono::milliseconds(o.stall_ms);
    ao.on_sample = [stall](const losslens::sample&) { std::this_thread::sleep_for(stall); };
  }
  auto lens = losslens::attach(model, opt, ao);

  bool degraded = false;
  long healthy_since = -1;
  auto degraded_at = std::chrono::steady_clock::time_point{};
  bool capped = false;
  double max_step_us = 0;
  long burst_steps = 0;
  long slow_steps = 0;  // step() calls over 1 ms (the OS preempting a loaded machine)
  double bare_max_us = 0;
  long bare_slow = 0;
  double burst_elapsed = 0;

  auto watch = [&](long i) {
    auto s = lens.stats();
    if (s.storage_degraded && !degraded) {
      degraded = true;
      degraded_at = std::chrono::steady_clock::now();
      std::printf("degraded %ld %s\n", i, s.storage_error.c_str());
      std::fflush(stdout);
    } else if (!s.storage_degraded && degraded) {
      degraded = false;
      healthy_since = i;
      std::printf("healthy %ld\n", i);
      std::fflush(stdout);
    }
    if (capped && degraded &&
        std::chrono::steady_clock::now() - degraded_at >=
            std::chrono::milliseconds(o.fsize_restore_ms)) {
      set_fsize_limit(RLIM_INFINITY);  // "space returns"
      capped = false;
    }
  };
  watch(-1);

  if (o.burst_seconds > 0) {
    // As many steps as the monitor accepts: one loss tensor, no backward, for burst_seconds.
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y).detach();
    // Baseline: the same loop without step(), to tell the OS's own pauses (a loaded machine
    // preempts us) from anything step() does.
    {
      const auto end =
          std::chrono::steady_clock::now() + std::chrono::duration<double>(o.burst_seconds);
      auto prev = std::chrono::steady_clock::now();
      while (prev < end) {
        const auto now = std::chrono::steady_clock::now();
        const double us = std::chrono::duration<double, std::micro>(now - prev).count();
        bare_max_us = std::max(bare_max_us, us);
        if (us > 1000) ++bare_slow;
        prev = now;
      }
    }
    const auto start = std::chrono::steady_clock::now();
    const auto end = start + std::chrono::duration<double>(o.burst_seconds);
    for (;;) {
      const auto t0 = std::chrono::steady_clock::now();
      if (t0 >= end) break;
      lens.step(loss);
      const double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      max_step_us = std::max(max_step_us, us);
      if (us > 1000) ++slow_steps;
      ++burst_steps;
    }
    burst_elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } else {
    for (long i = 0; o.steps == 0 || i < o.steps; ++i) {
      opt.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      opt.step();
      const auto t0 = std::chrono::steady_clock::now();
      if (i == o.nan_at)
        lens.step(loss * std::numeric_limits<float>::quiet_NaN());
      else
        lens.step(loss);
      max_step_us = std::max(
          max_step_us,
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      if (o.trace) {
        std::printf("step %ld %lld\n", i, mono_ns());
        std::fflush(stdout);
      }
      if (i == o.fsize_at) {
        // Cap every file this process writes just above the database's current size: the
        // next growth of the database or its WAL fails (EFBIG) as on a full disk.
        const auto biggest = std::max(size_or_zero(o.db), size_or_zero(o.db + "-wal"));
        set_fsize_limit(rlim_t(biggest + 4096));
        capped = true;
      }
      watch(i);
      if (o.until_healthy_steps >= 0 && healthy_since >= 0 &&
          i - healthy_since >= o.until_healthy_steps)
        break;
      if (o.step_sleep_us > 0)
        std::this_thread::sleep_for(std::chrono::microseconds(o.step_sleep_us));
    }
  }

  lens.wait_idle();
  lens.detach();
  auto j = to_json(lens.stats());
  j["max_step_us"] = max_step_us;
  j["burst_steps"] = burst_steps;
  j["slow_steps"] = slow_steps;
  j["bare_max_us"] = bare_max_us;
  j["bare_slow"] = bare_slow;
  j["burst_seconds"] = burst_elapsed;
  std::printf("done %s\n", j.dump().c_str());
  std::fflush(stdout);
  return 0;
}
