#pragma once
// Starts the ranks of a multi-process run (separate executables, posix_spawn) and waits for
// them with a deadline. Used by test_distributed and bench_distributed; no LibTorch here, so
// the parent never forks a process with LibTorch threads.

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace losslens::testing {

/// Exit status of each rank (-1: killed at the deadline or by a signal).
inline std::vector<int> run_ranks(const std::string& exe,
                                  const std::vector<std::vector<std::string>>& rank_args,
                                  const std::string& log_prefix,
                                  std::chrono::seconds deadline) {
  std::vector<pid_t> pids;
  for (std::size_t r = 0; r < rank_args.size(); ++r) {
    std::vector<std::string> args{exe};
    args.insert(args.end(), rank_args[r].begin(), rank_args[r].end());
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = log_prefix + std::to_string(r) + ".log";
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      for (pid_t p : pids) ::kill(p, SIGKILL), ::waitpid(p, nullptr, 0);
      throw std::runtime_error("posix_spawn " + exe + ": " + std::strerror(rc));
    }
    pids.push_back(pid);
  }
  std::vector<int> status(pids.size(), -2);
  const auto end = std::chrono::steady_clock::now() + deadline;
  std::size_t left = pids.size();
  while (left > 0) {
    for (std::size_t r = 0; r < pids.size(); ++r) {
      if (status[r] != -2) continue;
      int st = 0;
      if (::waitpid(pids[r], &st, WNOHANG) == pids[r]) {
        status[r] = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        --left;
      }
    }
    if (left == 0) break;
    if (std::chrono::steady_clock::now() > end) {
      for (std::size_t r = 0; r < pids.size(); ++r)
        if (status[r] == -2) {
          ::kill(pids[r], SIGKILL);
          ::waitpid(pids[r], nullptr, 0);
          status[r] = -1;
        }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return status;
}

}  // namespace losslens::testing
