#pragma once
// Facts about processes that decide whether a run's writer is still alive.

#include <cstdint>
#include <string>

namespace losslens::storage::detail {

/// This machine's host name ("" if unknown).
std::string host_name();
/// This process's id.
std::int64_t process_id() noexcept;
/// Seconds since the Unix epoch.
double unix_now() noexcept;

/// Whether the writer of a run in state `running` has died: its process is gone (when it ran
/// on this host), or its heartbeat is older than stale_after seconds.
bool writer_is_dead(const std::string& host, std::int64_t pid, double heartbeat, double now,
                    double stale_after);

}  // namespace losslens::storage::detail
