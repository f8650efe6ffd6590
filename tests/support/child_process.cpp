#include "child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace losslens::testing {

namespace {

using std::chrono::milliseconds;

milliseconds left_until(std::chrono::steady_clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
  return std::max(left, milliseconds(0));
}

std::chrono::steady_clock::time_point deadline_in(milliseconds timeout) {
  // Long enough for "forever" without overflowing the clock.
  return std::chrono::steady_clock::now() +
         std::min(timeout, milliseconds(std::chrono::hours(24 * 365)));
}

/// The parent's environment with options' removals and additions.
std::vector<std::string> child_environment(const child_options& o) {
  auto overridden = [&](std::string_view name) {
    return std::find(o.unset_env.begin(), o.unset_env.end(), name) != o.unset_env.end() ||
           std::any_of(o.set_env.begin(), o.set_env.end(),
                       [&](const auto& kv) { return kv.first == name; });
  };
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view kv = *e;
    if (!overridden(kv.substr(0, kv.find('=')))) env.emplace_back(kv);
  }
  for (const auto& [name, value] : o.set_env) env.push_back(name + "=" + value);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

/// posix_spawn's file actions and attributes, destroyed on every path out.
struct spawn_setup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  std::vector<int> parent_fds;  // closed on failure
  std::vector<int> child_fds;   // the child's ends: closed in the parent after the spawn
  spawn_setup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
    // Default dispositions and an empty mask whatever the test did (Catch2's handlers, an
    // ignored SIGPIPE).
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  }
  ~spawn_setup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    for (int fd : child_fds) ::close(fd);
  }
  void fail() {
    for (int fd : parent_fds) ::close(fd);
  }

  /// A pipe whose child end becomes fd `target`; returns the parent's end.
  int pipe_to(int target) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    const int child_end = target == 0 ? fds[0] : fds[1];
    const int parent_end = target == 0 ? fds[1] : fds[0];
    posix_spawn_file_actions_adddup2(&actions, child_end, target);
    child_fds.push_back(child_end);
    parent_fds.push_back(parent_end);
    return parent_end;
  }
  /// stdin: a socket rather than a pipe, so that writing after the child died is an error
  /// (MSG_NOSIGNAL), not a SIGPIPE that kills the test.
  int socket_to_stdin() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
      throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
    ::shutdown(fds[0], SHUT_RD);
    ::shutdown(fds[1], SHUT_WR);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 0);
    child_fds.push_back(fds[1]);
    parent_fds.push_back(fds[0]);
    return fds[0];
  }
  void open_to(int target, const std::string& path, int flags) {
    posix_spawn_file_actions_addopen(&actions, target, path.c_str(), flags, 0644);
  }
};

constexpr int write_flags = O_WRONLY | O_CREAT | O_TRUNC;

}  // namespace

child_process::child_process(std::string exe, std::vector<std::string> args,
                             child_options options) {
  if (options.in == stream::file || options.in == stream::merge || options.out == stream::merge)
    throw std::invalid_argument("child_process: stdin from a file or merged, or stdout merged");
  if (options.files_limit > 0) {
    args.insert(
        args.begin(),
        {"-c", "ulimit -n " + std::to_string(options.files_limit) + " && exec \"$0\" \"$@\"", exe});
    exe = "/bin/sh";
  }
  spawn_setup setup;
  // The actions run in order: stdout is in place before stderr may be merged into it.
  switch (options.in) {
    case stream::pipe:
      in_ = setup.socket_to_stdin();
      break;
    case stream::null:
      setup.open_to(0, "/dev/null", O_RDONLY);
      break;
    default:
      break;
  }
  switch (options.out) {
    case stream::pipe:
      out_ = setup.pipe_to(1);
      break;
    case stream::file:
      setup.open_to(1, options.out_path, write_flags);
      break;
    case stream::null:
      setup.open_to(1, "/dev/null", O_WRONLY);
      break;
    default:
      break;
  }
  switch (options.err) {
    case stream::pipe:
      err_fd_ = setup.pipe_to(2);
      break;
    case stream::file:
      setup.open_to(2, options.err_path, write_flags);
      break;
    case stream::null:
      setup.open_to(2, "/dev/null", O_WRONLY);
      break;
    case stream::merge:
      posix_spawn_file_actions_adddup2(&setup.actions, 1, 2);
      break;
    default:
      break;
  }
  std::vector<std::string> argv_strings{exe};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  auto env_strings = child_environment(options);
  const auto argv = c_strings(argv_strings);
  const auto envp = c_strings(env_strings);
  const auto spawn = options.search_path ? ::posix_spawnp : ::posix_spawn;
  const int rc = spawn(&pid_, exe.c_str(), &setup.actions, &setup.attr, argv.data(), envp.data());
  if (rc != 0) {
    setup.fail();
    in_ = out_ = err_fd_ = -1;
    throw std::runtime_error("posix_spawn " + exe + ": " + std::strerror(rc));
  }
  reaped_ = false;
#ifdef SYS_pidfd_open
  pidfd_ = int(::syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd_ >= 0) ::fcntl(pidfd_, F_SETFD, FD_CLOEXEC);
#endif
}

child_process::child_process(std::string exe, std::vector<std::string> args,
                             const std::string& stderr_path)
    : child_process(std::move(exe), std::move(args), [&] {
        child_options o;
        o.err = stream::file;
        o.err_path = stderr_path;
        return o;
      }()) {}

child_process::child_process(child_process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      reaped_(std::exchange(other.reaped_, true)),
      status_(other.status_),
      in_(std::exchange(other.in_, -1)),
      out_(std::exchange(other.out_, -1)),
      err_fd_(std::exchange(other.err_fd_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      cpu_seconds_(other.cpu_seconds_),
      max_rss_kb_(other.max_rss_kb_),
      buffer_(std::move(other.buffer_)),
      err_(std::move(other.err_)) {}

child_process::~child_process() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    reap(true);
  }
  close_fds();
}

void child_process::close_fds() noexcept {
  for (int* fd : {&in_, &out_, &err_fd_, &pidfd_})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

bool child_process::pump(std::chrono::milliseconds timeout) {
  pollfd fds[3];
  int* owners[3];
  std::string* into[3];
  int n = 0;
  auto watch = [&](int& fd, std::string* sink) {
    if (fd < 0) return;
    fds[n] = {fd, POLLIN, 0};
    owners[n] = &fd;
    into[n++] = sink;
  };
  watch(out_, &buffer_);
  watch(err_fd_, &err_);
  // The exit wakes the poll (only while it is not reaped: afterwards the pidfd stays readable).
  if (!reaped_) watch(pidfd_, nullptr);
  if (n == 0) {
    std::this_thread::sleep_for(timeout);
    return false;
  }
  const auto ms = std::min<std::chrono::milliseconds::rep>(timeout.count(), 3600 * 1000);
  if (::poll(fds, nfds_t(n), int(ms)) <= 0) return false;
  bool progress = false;
  for (int i = 0; i < n; ++i) {
    if (fds[i].revents == 0) continue;
    if (!into[i]) {  // the pidfd: the child exited, reap() will see it
      progress = true;
      continue;
    }
    char chunk[65536];
    const ssize_t got = ::read(fds[i].fd, chunk, sizeof chunk);
    if (got > 0) {
      into[i]->append(chunk, std::size_t(got));
    } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
      ::close(*owners[i]);
      *owners[i] = -1;
    }
    progress = true;
  }
  return progress;
}

std::optional<std::string> child_process::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = deadline_in(timeout);
  for (;;) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (out_ < 0) return std::nullopt;
    const auto left = left_until(deadline);
    if (!pump(left) && left.count() == 0) return std::nullopt;
  }
}

std::optional<std::string> child_process::wait_for(const std::string& prefix,
                                                   std::chrono::milliseconds timeout,
                                                   std::vector<std::string>* skipped) {
  const auto deadline = deadline_in(timeout);
  for (;;) {
    auto line = read_line(left_until(deadline));
    if (!line) return std::nullopt;
    if (line->rfind(prefix, 0) == 0) return line;
    if (skipped) skipped->push_back(std::move(*line));
  }
}

bool child_process::write_stdin(std::string_view bytes) {
  while (!bytes.empty() && in_ >= 0) {
    const ssize_t n = ::send(in_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(std::size_t(n));
  }
  return bytes.empty();
}

void child_process::close_stdin() {
  if (in_ >= 0) ::close(in_);
  in_ = -1;
}

void child_process::kill(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

bool child_process::reap(bool block) {
  if (reaped_) return true;
  int st = 0;
  rusage ru{};
  const pid_t r = ::wait4(pid_, &st, block ? 0 : WNOHANG, &ru);
  if (r == 0 || (r < 0 && errno == EINTR)) return false;
  auto secs = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  if (r > 0) {
    cpu_seconds_ = secs(ru.ru_utime) + secs(ru.ru_stime);
    max_rss_kb_ = ru.ru_maxrss;
  }
  status_ = r < 0 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? -WTERMSIG(st) : -1;
  reaped_ = true;
  return true;
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = deadline_in(timeout);
  for (;;) {
    if (reap(false)) return status_;
    const auto left = left_until(deadline);
    if (left.count() == 0) return std::nullopt;
    // Woken by the exit through the pidfd (without one, every 10 ms); reads what the child
    // writes meanwhile.
    pump(pidfd_ >= 0 ? left : std::min(left, std::chrono::milliseconds(10)));
  }
}

int child_process::wait() { return *wait(std::chrono::hours(24 * 365)); }

process_result child_process::finish(std::chrono::milliseconds timeout) {
  const auto deadline = deadline_in(timeout);
  process_result r;
  for (;;) {
    const bool exited = reap(false);
    if (exited && out_ < 0 && err_fd_ < 0) break;
    const auto left = left_until(deadline);
    if (left.count() == 0) {
      r.timed_out = !exited;
      if (!exited) {
        ::kill(pid_, SIGKILL);
        reap(true);
      }
      pump(std::chrono::milliseconds(0));  // what was already written, not what never ends
      break;
    }
    pump(pidfd_ >= 0 || exited ? left : std::min(left, std::chrono::milliseconds(10)));
  }
  r.status = status_;
  r.cpu_seconds = cpu_seconds_;
  r.max_rss_kb = max_rss_kb_;
  r.out = std::move(buffer_);
  r.err = std::move(err_);
  buffer_.clear();
  err_.clear();
  return r;
}

process_result run_process(const std::string& exe, const std::vector<std::string>& args,
                           child_options options, std::chrono::milliseconds timeout) {
  child_process child(exe, args, std::move(options));
  child.close_stdin();
  return child.finish(timeout);
}

process_result run_shell(const std::string& cmd, std::chrono::milliseconds timeout) {
  return run_process("/bin/sh", {"-c", cmd}, {}, timeout);
}

}  // namespace losslens::testing
