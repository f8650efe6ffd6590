// tests/support's child processes (the one way tests, bench and examples start programs):
// capture, exit status and signals, deadlines, stdin, environment, file limits, and child
// functions of the test binary. The expected outputs are written by /bin/sh, not by the helper.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "child_functions.hpp"
#include "child_process.hpp"
#include "files.hpp"
#include "temp_dir.hpp"

using namespace losslens::testing;
using namespace std::chrono_literals;

namespace {

/// Child function: prints its arguments one per line, then exits with the status args[0].
int echo_args(const std::vector<std::string>& args) {
  for (const auto& a : args) std::printf("%s\n", a.c_str());
  return std::atoi(args.at(0).c_str());
}
const child_function_entry echo_args_entry{"child-process-echo", &echo_args};

/// Child function: touches args[0] MiB, then spins until its own CPU clock says args[1] s;
/// prints the CPU seconds it measured.
int burn(const std::vector<std::string>& args) {
  std::vector<char> mem(std::size_t(std::atoi(args.at(0).c_str())) << 20);
  for (std::size_t i = 0; i < mem.size(); i += 4096) mem[i] = 1;
  const double want = std::atof(args.at(1).c_str());
  volatile double x = 0;
  while (double(std::clock()) / CLOCKS_PER_SEC < want) x = x + 1;
  std::printf("%.6f\n", double(std::clock()) / CLOCKS_PER_SEC);
  return mem[mem.size() / 2];
}
const child_function_entry burn_entry{"child-process-burn", &burn};

}  // namespace

TEST_CASE("run_shell captures stdout, stderr and the exit status", "[support]") {
  const auto r = run_shell("printf 'a\\nb'; printf 'oops' >&2; exit 3");
  CHECK(r.status == 3);
  CHECK(r.out == "a\nb");
  CHECK(r.err == "oops");
  CHECK(!r.timed_out);
  CHECK(run_shell("kill -TERM $$").status == -SIGTERM);
}

TEST_CASE("a child writing megabytes to both pipes never blocks its parent", "[support]") {
  // 4 MiB on each stream: far more than a pipe holds, read concurrently.
  const auto r = run_shell("head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2", 60s);
  CHECK(r.status == 0);
  CHECK(r.out.size() == 4194304);
  CHECK(r.err.size() == 4194304);
}

TEST_CASE("a child past its deadline is killed with SIGKILL", "[support]") {
  const auto start = std::chrono::steady_clock::now();
  const auto r = run_process("/bin/sleep", {"30"}, {}, 200ms);
  CHECK(r.timed_out);
  CHECK(r.status == -SIGKILL);
  CHECK(std::chrono::steady_clock::now() - start < 10s);

  child_process c("/bin/sleep", {"30"});
  CHECK(!c.wait(100ms));  // still running
  c.kill(SIGTERM);
  CHECK(c.wait() == -SIGTERM);
}

TEST_CASE("lines are read with deadlines, and wait_for skips to a prefix", "[support]") {
  child_process c("/bin/sh", {"-c", "echo one; echo two; echo ready 7; sleep 30"});
  std::vector<std::string> skipped;
  const auto ready = c.wait_for("ready", 10s, &skipped);
  REQUIRE(ready);
  CHECK(*ready == "ready 7");
  CHECK(skipped == std::vector<std::string>{"one", "two"});
  CHECK(!c.read_line(100ms));  // nothing more within the deadline
  CHECK(!c.read_line(0ms));
  c.kill(SIGKILL);
  CHECK(c.wait() == -SIGKILL);
}

TEST_CASE("stdin, environment, files and the descriptor limit", "[support]") {
  temp_dir dir("child");
  child_options o;
  o.in = stream::pipe;
  child_process cat("/bin/cat", {}, o);
  REQUIRE(cat.write_stdin("through stdin\n"));
  cat.close_stdin();
  const auto echoed = cat.finish(10s);
  CHECK(echoed.out == "through stdin\n");
  CHECK(echoed.status == 0);
  child_process gone("/bin/true", {}, o);
  CHECK(gone.wait() == 0);
  CHECK(!gone.write_stdin("nobody reads this"));  // an error, not a SIGPIPE that ends the test

  ::setenv("LOSSLENS_CHILD_TEST_A", "parent", 1);
  child_options env;
  env.unset_env = {"LOSSLENS_CHILD_TEST_A"};
  env.set_env = {{"LOSSLENS_CHILD_TEST_B", "set"}};
  const auto e = run_process(
      "/bin/sh", {"-c", "echo \"[$LOSSLENS_CHILD_TEST_A][$LOSSLENS_CHILD_TEST_B]\""}, env);
  CHECK(e.out == "[][set]\n");
  ::unsetenv("LOSSLENS_CHILD_TEST_A");

  child_options files;
  files.out = stream::file;
  files.out_path = dir.file("out.log");
  files.err = stream::merge;
  CHECK(run_process("/bin/sh", {"-c", "echo to-out; echo to-err >&2"}, files).status == 0);
  CHECK(read_file(dir.file("out.log")) == "to-out\nto-err\n");

  child_options limited;
  limited.files_limit = 48;
  const auto l = run_process("/bin/sh", {"-c", "echo $(ulimit -Sn) $(ulimit -Hn)"}, limited);
  CHECK(l.out == "48 48\n");

  CHECK_THROWS_AS(child_process("/nonexistent/program", {}), std::runtime_error);
}

TEST_CASE("PATH search, and the CPU time and peak RSS of a child", "[support]") {
  child_options o;
  o.search_path = true;
  CHECK(run_process("sh", {"-c", "exit 4"}, o).status == 4);
  CHECK_THROWS_AS(run_process("sh", {"-c", "exit 4"}), std::runtime_error);  // no ./sh

  // The child's own clock against wait4's accounting: CPU within 50 ms (plus what starting a
  // process costs), RSS at least the 64 MiB it touched.
  auto c = spawn_child_function("child-process-burn", {"64", "0.3"});
  const auto r = c.finish(60s);
  REQUIRE(r.status == 1);
  const double own = std::atof(r.out.c_str());
  CHECK(own >= 0.3);
  CHECK(r.cpu_seconds >= own - 0.05);
  CHECK(r.cpu_seconds <= own + 0.5);
  CHECK(r.max_rss_kb >= 64 * 1024);
  CHECK(c.cpu_seconds() == r.cpu_seconds);
  CHECK(c.max_rss_kb() == r.max_rss_kb);
}

TEST_CASE("a child function runs in a spawned copy of the test binary", "[support]") {
  auto c = spawn_child_function("child-process-echo", {"5", "x y", ""});
  const auto r = c.finish(30s);
  CHECK(r.status == 5);
  CHECK(r.out == "5\nx y\n\n");
  CHECK(c.pid() != ::getpid());
  const auto unknown = spawn_child_function("no-such-function", {}).finish(30s);
  CHECK(unknown.status == 127);
  CHECK(unknown.err.find("no-such-function") != std::string::npos);
}
