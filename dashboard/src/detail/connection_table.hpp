#pragma once
// The open connections of a server by client address, the ones waiting for a request, and
// which of those to close when the server runs short: idle sockets must not lock others out.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace losslens::dashboard::detail {

/// A connection the table may ask to close: an HTTP session waiting for a request.
class idle_connection {
 public:
  virtual ~idle_connection() = default;
  /// Closes the connection if it still waits under this ticket (it may have received its
  /// request meanwhile). Called from any thread; never throws.
  virtual void close_if_waiting(std::uint64_t ticket) noexcept = 0;
};

/// What the table enforces (from dashboard::server_options).
struct connection_limits {
  std::size_t max_clients = 4096;
  std::size_t per_address = 1024;  ///< 0: no limit
  std::size_t reserve = 64;        ///< at most max_clients / 4 is used
  std::chrono::milliseconds pressure_timeout{2000};
};

/// The key a client is counted under: its IPv4 address (also when IPv4-mapped), or the /64
/// prefix of its IPv6 address (one host usually has a whole /64).
std::string address_key(const boost::asio::ip::address& a);

/// Counts connections per address and keeps the ones waiting for a request in the order they
/// started waiting. Thread-safe (one mutex; every call is short).
class connection_table {
 public:
  using clock = std::chrono::steady_clock;
  using victim = std::pair<std::shared_ptr<idle_connection>, std::uint64_t>;  ///< with ticket

  explicit connection_table(connection_limits limits);

  /// What to do with a new connection.
  struct admission {
    bool accepted = false;
    std::uint64_t ticket = 0;  ///< accepted: it waits for its first request from now on
    victim evict;              ///< close this one to make room (its address was at per_address)
  };
  /// A new connection from address. At max_clients: refused. At per_address: the address's
  /// longest-waiting connection is named for eviction and the new one accepted, or refused
  /// when none of the address's connections waits. Accepted connections are counted until
  /// release() and wait (under the admission's ticket) until stop_waiting(); name the
  /// connection with set_waiter().
  admission admit(const std::string& address);
  /// Names the connection waiting under ticket (from admit()).
  void set_waiter(std::uint64_t ticket, std::weak_ptr<idle_connection> who);
  /// An accepted connection from address has closed.
  void release(const std::string& address) noexcept;

  /// The connection starts waiting for a request; returns its ticket (never 0).
  std::uint64_t start_waiting(const std::string& address, std::weak_ptr<idle_connection> who);
  /// The wait of ticket is over (a request arrived, or the connection closes).
  void stop_waiting(std::uint64_t ticket) noexcept;

  /// True while no more than the reserve is left below max_clients.
  bool under_pressure() const;
  /// True from the moment the table comes under pressure until a whole reserve is free again
  /// (hysteresis: closing the overdue connections must not stop half-way because a few others
  /// closed).
  bool shedding() const;
  /// While shedding: the connections that have waited since before cutoff, taken out of the
  /// table (to be closed). Empty otherwise.
  std::vector<victim> overdue(clock::time_point cutoff);

  std::size_t open() const;
  const connection_limits& limits() const noexcept { return limits_; }

 private:
  struct waiting {
    std::string address;
    clock::time_point since;
    std::weak_ptr<idle_connection> who;
  };
  struct per_address {
    std::size_t open = 0;
    std::set<std::uint64_t> waiting;  ///< tickets; the smallest has waited longest
  };
  bool under_pressure_locked() const noexcept;
  void forget_locked(std::map<std::uint64_t, waiting>::iterator it) noexcept;

  connection_limits limits_;
  std::size_t pressure_at_;  ///< open connections from which on the table is under pressure
  std::size_t relief_at_;    ///< below this many, shedding stops
  mutable std::mutex mutex_;
  std::size_t open_ = 0;
  bool shedding_ = false;
  std::uint64_t next_ticket_ = 1;
  std::map<std::uint64_t, waiting> waiting_;  ///< by ticket: the order they started waiting
  std::unordered_map<std::string, per_address> addresses_;
};

}  // namespace losslens::dashboard::detail
