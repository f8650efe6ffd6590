#pragma once
/// \file evidence_slots.hpp
/// Where a rule's per-step evidence values sit in the finding of its open episode.

#include <array>
#include <cstddef>
#include <limits>
#include <string_view>

#include "losslens/finding.hpp"

namespace losslens::core::detail {

/// A rule that writes the same N named evidence values at every step of an open episode finds
/// them once by name and then by place: finding::set_evidence compares the names of the whole
/// list from the back at every call (for a long divergence, eight lookups per step).
/// The places hold while the finding (its finding_log index) and its evidence count are the
/// ones last seen: evidence is only ever appended to, and only its rule writes it. Same
/// results as set_evidence / evidence_value. Not thread-safe (one per rule, as the rule).
template <std::size_t N>
class evidence_slots {
 public:
  evidence_slots() { at_.fill(npos); }

  /// f.set_evidence(name, value); f is the finding at log index `index`, `slot` < N stands for
  /// `name` (always the same name for the same slot).
  void set(finding& f, std::size_t index, std::size_t slot, std::string_view name, double value) {
    sync(f, index);
    std::size_t& at = at_[slot];
    if (at == npos) {
      f.set_evidence(name, value);  // finds it, or adds it last
      at = find(f, name);
      size_ = f.evidence.size();
      return;
    }
    f.evidence[at].second = value;
  }

  /// f.evidence_value(name) (NaN when f has no such value).
  double get(const finding& f, std::size_t index, std::size_t slot, std::string_view name) {
    sync(f, index);
    std::size_t& at = at_[slot];
    if (at == npos) at = find(f, name);
    return at == npos ? std::numeric_limits<double>::quiet_NaN() : f.evidence[at].second;
  }

 private:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  void sync(const finding& f, std::size_t index) noexcept {
    if (index == index_ && f.evidence.size() == size_) return;
    index_ = index;
    size_ = f.evidence.size();
    at_.fill(npos);
  }
  static std::size_t find(const finding& f, std::string_view name) noexcept {
    // From the back, as set_evidence (names are unique).
    for (std::size_t i = f.evidence.size(); i-- > 0;)
      if (f.evidence[i].first == name) return i;
    return npos;
  }

  std::size_t index_ = npos, size_ = 0;
  std::array<std::size_t, N> at_;
};

}  // namespace losslens::core::detail
