// evidence_slots (lib/src/detail) against finding::set_evidence and evidence_value, the by-name
// path it stands in for: the same random writes and reads on two copies of a finding give the
// same evidence (names, order, values) and the same values read, also when something else
// appends evidence between two steps, when a read asks for a name that is missing, and when
// the rule's episode moves on to another finding.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "detail/evidence_slots.hpp"

using losslens::finding;
using losslens::core::detail::evidence_slots;

namespace {
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same_evidence(const finding& a, const finding& b) {
  if (a.evidence.size() != b.evidence.size()) return false;
  for (std::size_t i = 0; i < a.evidence.size(); ++i)
    if (a.evidence[i].first != b.evidence[i].first ||
        !same_bits(a.evidence[i].second, b.evidence[i].second))
      return false;
  return true;
}
}  // namespace

TEST_CASE("evidence_slots: writes and reads as set_evidence and evidence_value do") {
  const char* names[] = {"lr", "lr_min", "lr_max", "smoothed", "loss", "ratio"};
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-1, 1);
  evidence_slots<6> slots;
  finding by_slot, by_name;
  std::size_t index = 0, mismatches = 0, reads = 0, missing_reads = 0, appends = 0;
  for (int step = 0; step < 20000; ++step) {
    const auto r = rng() % 100;
    if (r < 2) {  // the episode ends; the next one is another finding, made with two values
      ++index;
      by_slot = finding{};
      by_slot.evidence = {{"best", u(rng)}, {"loss", u(rng)}};
      by_name = by_slot;
    } else if (r < 4) {  // something else appends a value (never one of the slots' names)
      const std::string extra = "extra" + std::to_string(appends++);
      by_slot.evidence.emplace_back(extra, 1.0);
      by_name.evidence.emplace_back(extra, 1.0);
    } else if (r < 30) {
      const std::size_t k = rng() % 6;
      const double a = slots.get(by_slot, index, k, names[k]);
      const double b = by_name.evidence_value(names[k]);
      ++reads;
      missing_reads += std::isnan(b) ? 1 : 0;
      if (!same_bits(a, b) && !(std::isnan(a) && std::isnan(b))) ++mismatches;
    } else {
      const std::size_t k = rng() % 6;
      const double v = u(rng);
      slots.set(by_slot, index, k, names[k], v);
      by_name.set_evidence(names[k], v);
    }
    if (!same_evidence(by_slot, by_name)) ++mismatches;
  }
  CHECK(mismatches == 0);
  CHECK(index > 100);  // many episodes
  CHECK(appends > 100);
  CHECK(missing_reads > 100);
  CHECK(reads - missing_reads > 1000);
}
