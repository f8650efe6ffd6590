#include "detail/process.hpp"

#include <cerrno>
#include <chrono>

#include <signal.h>
#include <unistd.h>

namespace losslens::storage::detail {

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return {};
  return buf;
}

std::int64_t process_id() noexcept { return ::getpid(); }

double unix_now() noexcept {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

bool writer_is_dead(const std::string& host, std::int64_t pid, double heartbeat, double now,
                    double stale_after) {
  if (now - heartbeat > stale_after) return true;
  if (host == host_name() && pid > 0 && ::kill(pid_t(pid), 0) != 0 && errno == ESRCH) return true;
  return false;
}

}  // namespace losslens::storage::detail
