#pragma once
// Runs a shell command line and captures its exit status, stdout and stderr: for the tests that
// run the `losslens` CLI (and other programs) the way a user does.

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

namespace losslens::testing {

struct shell_result {
  int status = -1;  ///< exit status; -1 when killed by a signal
  std::string out;  ///< stdout
  std::string err;  ///< stderr
};

/// Runs `cmd` through /bin/sh (it may hold pipes); stderr goes through `dir`/stderr.txt.
inline shell_result run_shell(const std::string& cmd, const std::filesystem::path& dir) {
  const auto err_file = dir / "stderr.txt";
  FILE* p = popen((cmd + " 2>" + err_file.string()).c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + cmd);
  shell_result r;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) r.out.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream e(err_file, std::ios::binary);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  return r;
}

/// The whole file as bytes; throws when it cannot be read.
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace losslens::testing
