#pragma once
// The one way tests, bench and examples start another program: posix_spawn (a parent with
// threads never forks), stdout and stderr on pipes or in files, a deadline on every read and
// wait, signals. Code that must run in a separate process without being a program of its own
// runs as a child function of the test binary (child_functions.hpp). The exit is waited for on
// a pidfd (no polling: a bench times children to the millisecond), and the child's CPU time and
// peak RSS come from wait4.

#include <sys/types.h>

#include <chrono>
#include <csignal>  // the signals kill() sends and -status names
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace losslens::testing {

/// Where one of a child's standard streams goes.
enum class stream {
  pipe,     ///< a pipe to the parent: stdin written with write_stdin(), stdout/stderr read back
  inherit,  ///< the parent's own
  file,     ///< stdout/stderr only: a file, truncated (child_options::out_path / err_path)
  null,     ///< /dev/null
  merge,    ///< stderr only: wherever stdout goes (2>&1)
};

/// How to start a child.
struct child_options {
  stream in = stream::null;
  stream out = stream::pipe;
  stream err = stream::pipe;
  std::string out_path;                                      ///< for out == stream::file
  std::string err_path;                                      ///< for err == stream::file
  std::vector<std::string> unset_env;                        ///< removed from its environment
  std::vector<std::pair<std::string, std::string>> set_env;  ///< set in its environment
  /// > 0: the child's RLIMIT_NOFILE, soft and hard. posix_spawn cannot set limits: the child
  /// is started through /bin/sh (`ulimit -n`, then exec), with the same process id.
  int files_limit = 0;
  /// Look exe up in PATH when it has no '/' (posix_spawnp), as a shell would.
  bool search_path = false;
};

/// How a child ended and what it wrote.
struct process_result {
  int status = -1;         ///< exit status, or -signal when a signal ended it
  std::string out;         ///< stdout, when it was a pipe
  std::string err;         ///< stderr, when it was a pipe
  bool timed_out = false;  ///< killed with SIGKILL at the deadline
  double cpu_seconds = 0;  ///< the child's user + system CPU time (its own waited-for children too)
  long max_rss_kb = 0;     ///< its peak resident set size
};

/// A running child. Not thread-safe (one thread drives it). Destruction kills (SIGKILL) and
/// reaps a child that is still running.
class child_process {
 public:
  /// Starts exe (a path; a PATH search with options.search_path) with args. Throws
  /// std::runtime_error when it cannot (std::invalid_argument for options that make no sense, e.g.
  /// stdin from stream::file).
  child_process(std::string exe, std::vector<std::string> args, child_options options = {});
  /// stdout on a pipe, stderr into the file stderr_path.
  child_process(std::string exe, std::vector<std::string> args, const std::string& stderr_path);
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) = delete;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process();

  pid_t pid() const noexcept { return pid_; }

  /// The next stdout line (without '\n'), or nullopt at the end of the output or after timeout
  /// (0 ms: only what has arrived already). stderr on a pipe is read meanwhile (err()).
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  /// Reads stdout lines until one starts with prefix and returns it; nullopt at timeout or at
  /// the end of the output. The lines before it go to *skipped when given.
  std::optional<std::string> wait_for(const std::string& prefix, std::chrono::milliseconds timeout,
                                      std::vector<std::string>* skipped = nullptr);
  /// What the child wrote to stderr (stream::pipe) so far.
  const std::string& err() const noexcept { return err_; }

  /// Writes to the child's stdin (stream::pipe); false when the child no longer reads it.
  bool write_stdin(std::string_view bytes);
  /// Closes the child's stdin: it reads end of file.
  void close_stdin();

  /// Sends a signal (nothing once the child is reaped).
  void kill(int sig);
  /// Waits for the exit (reading stdout and stderr pipes meanwhile, so a child that writes much
  /// never blocks): the exit status, or -signal.
  int wait();
  /// The same, or nullopt when the child is still running after timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  /// Reads stdout and stderr to their end and waits for the exit; at the deadline kills the
  /// child with SIGKILL (timed_out). out holds what read_line() has not returned.
  process_result finish(std::chrono::milliseconds timeout);
  /// After the exit (wait() or finish()): the child's user + system CPU time in seconds and its
  /// peak RSS in KiB (0 before).
  double cpu_seconds() const noexcept { return cpu_seconds_; }
  long max_rss_kb() const noexcept { return max_rss_kb_; }

 private:
  bool pump(std::chrono::milliseconds timeout);
  bool reap(bool block);
  void close_fds() noexcept;

  pid_t pid_ = -1;
  bool reaped_ = true;
  int status_ = -1;
  int in_ = -1, out_ = -1, err_fd_ = -1;
  int pidfd_ = -1;  // readable once the child exits (-1: kernel without pidfd_open; then polled)
  double cpu_seconds_ = 0;
  long max_rss_kb_ = 0;
  std::string buffer_;  // stdout read but not yet returned
  std::string err_;
};

/// Runs exe with args to its end (stdout and stderr captured unless options say otherwise);
/// SIGKILL at the deadline. Throws std::runtime_error when exe cannot be started.
process_result run_process(const std::string& exe, const std::vector<std::string>& args,
                           child_options options = {},
                           std::chrono::milliseconds timeout = std::chrono::minutes(10));

/// `/bin/sh -c cmd` (quoting, pipes, redirections) to its end, stdout and stderr captured.
process_result run_shell(const std::string& cmd,
                         std::chrono::milliseconds timeout = std::chrono::minutes(10));

}  // namespace losslens::testing
