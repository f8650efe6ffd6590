#include "detail/connection_table.hpp"

#include <algorithm>

namespace losslens::dashboard::detail {

std::string address_key(const boost::asio::ip::address& a) {
  if (a.is_v4()) return a.to_v4().to_string();
  auto v6 = a.to_v6();
  if (v6.is_v4_mapped())
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return boost::asio::ip::address_v6(bytes).to_string() + "/64";
}

namespace {
std::size_t reserve_of(const connection_limits& l) {
  return std::min(l.reserve, l.max_clients / 4);
}
}  // namespace

connection_table::connection_table(connection_limits limits)
    : limits_(limits),
      pressure_at_(limits.max_clients - reserve_of(limits)),
      relief_at_(pressure_at_ - reserve_of(limits)) {}

bool connection_table::under_pressure_locked() const noexcept { return open_ >= pressure_at_; }

bool connection_table::under_pressure() const {
  std::lock_guard lock(mutex_);
  return under_pressure_locked();
}

bool connection_table::shedding() const {
  std::lock_guard lock(mutex_);
  return shedding_;
}

std::size_t connection_table::open() const {
  std::lock_guard lock(mutex_);
  return open_;
}

void connection_table::forget_locked(std::map<std::uint64_t, waiting>::iterator it) noexcept {
  auto a = addresses_.find(it->second.address);
  if (a != addresses_.end()) a->second.waiting.erase(it->first);
  waiting_.erase(it);
}

connection_table::admission connection_table::admit(const std::string& address) {
  std::lock_guard lock(mutex_);
  admission out;
  if (open_ >= limits_.max_clients) return out;
  auto& a = addresses_[address];
  if (limits_.per_address > 0 && a.open >= limits_.per_address) {
    if (a.waiting.empty()) return out;
    auto it = waiting_.find(*a.waiting.begin());
    out.evict = {it->second.who.lock(), it->first};
    forget_locked(it);
  }
  ++a.open;
  ++open_;
  if (under_pressure_locked()) shedding_ = true;
  out.accepted = true;
  out.ticket = next_ticket_++;
  waiting_.emplace(out.ticket, waiting{address, clock::now(), {}});
  a.waiting.insert(out.ticket);
  return out;
}

void connection_table::set_waiter(std::uint64_t ticket, std::weak_ptr<idle_connection> who) {
  std::lock_guard lock(mutex_);
  if (auto it = waiting_.find(ticket); it != waiting_.end()) it->second.who = std::move(who);
}

void connection_table::release(const std::string& address) noexcept {
  std::lock_guard lock(mutex_);
  if (open_ > 0) --open_;
  auto a = addresses_.find(address);
  if (a == addresses_.end()) return;
  if (a->second.open > 0) --a->second.open;
  if (a->second.open == 0 && a->second.waiting.empty()) addresses_.erase(a);
}

std::uint64_t connection_table::start_waiting(const std::string& address,
                                              std::weak_ptr<idle_connection> who) {
  std::lock_guard lock(mutex_);
  const std::uint64_t ticket = next_ticket_++;
  waiting_.emplace(ticket, waiting{address, clock::now(), std::move(who)});
  addresses_[address].waiting.insert(ticket);
  return ticket;
}

void connection_table::stop_waiting(std::uint64_t ticket) noexcept {
  std::lock_guard lock(mutex_);
  auto it = waiting_.find(ticket);
  if (it != waiting_.end()) forget_locked(it);
}

std::vector<connection_table::victim> connection_table::overdue(clock::time_point cutoff) {
  std::lock_guard lock(mutex_);
  std::vector<victim> out;
  if (open_ < relief_at_) shedding_ = false;
  if (!shedding_) return out;
  // Tickets grow with time: the overdue ones are a prefix of the map.
  while (!waiting_.empty() && waiting_.begin()->second.since < cutoff) {
    auto it = waiting_.begin();
    out.emplace_back(it->second.who.lock(), it->first);
    forget_locked(it);
  }
  return out;
}

}  // namespace losslens::dashboard::detail
