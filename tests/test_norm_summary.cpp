// The per-parameter norm summary (lib/src/detail/norm_summary) against its definition written
// out element by element: skip missing norms, note the first present NaN/Inf, take the largest
// and the smallest finite norm, and find the first present norm equal to a value (the largest:
// a later equal one, 0 and -0 alike, does not replace it). Both the scalar and the AVX2 path,
// on lengths around the vector width and on the values that break vector code: ties, signed
// zeros, infinities, NaN, missing norms whose stale bytes hold a value.

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <vector>

#include "detail/norm_summary.hpp"

using namespace losslens::core::detail;

namespace {
struct expected {
  int top = -1, first_bad = -1;
  double min = 0;
};

expected by_definition(const std::vector<std::optional<double>>& v) {
  expected e;
  bool any = false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!v[i].has_value()) continue;
    const double x = v[i].value();
    if (x != x || x == std::numeric_limits<double>::infinity() ||
        x == -std::numeric_limits<double>::infinity()) {
      if (e.first_bad < 0) e.first_bad = int(i);
      continue;
    }
    if (!any || x > v[std::size_t(e.top)].value()) e.top = int(i);
    if (!any || x < e.min) e.min = x;
    any = true;
  }
  return e;
}

void check(const std::vector<std::optional<double>>& v, const norm_summary& got) {
  const expected e = by_definition(v);
  CHECK(got.first_non_finite == e.first_bad);
  if (e.top >= 0) {
    CHECK(got.max_norm == v[std::size_t(e.top)].value());  // a zero's sign may differ
    CHECK(got.min_norm == e.min);
    CHECK(find_norm(v.data(), v.size(), got.max_norm) == std::size_t(e.top));
  } else {
    CHECK(got.max_norm == -std::numeric_limits<double>::infinity());
    CHECK(got.min_norm == std::numeric_limits<double>::infinity());
  }
}

std::size_t find_by_definition(const std::vector<std::optional<double>>& v, double x) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (v[i].has_value() && v[i].value() == x) return i;
  return v.size();
}
}  // namespace

TEST_CASE("summarize_norms and find_norm: largest, smallest, first non-finite, first equal") {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::mt19937_64 rng(20);
  // Few distinct values, so that ties (and ties between 0 and -0) are common.
  const std::vector<double> pool{0.0,    -0.0,  1.0,  2.0, 2.0,  3.5,
                                 1e-300, 1e300, -1.0, inf, -inf, nan};
  std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
  std::uniform_real_distribution<double> frac(0, 1);
  norm_summary avx2{};
  const bool have_avx2 = [] {
    const std::vector<std::optional<double>> probe(4, 1.0);
    norm_summary s{};
    return summarize_norms_avx2(probe.data(), probe.size(), s);
  }();
  for (std::size_t n = 0; n <= 70; ++n) {
    for (int round = 0; round < 200; ++round) {
      // Each case has its own mix: all present and finite, some missing, some non-finite.
      const double missing = round % 4 == 0 ? 0.0 : frac(rng) * 0.5;
      const double special = round % 3 == 0 ? 0.0 : frac(rng) * 0.3;
      std::vector<std::optional<double>> v(n);
      for (auto& x : v) {
        if (frac(rng) < missing) continue;
        double y = pool[pick(rng)];
        if (!std::isfinite(y) && frac(rng) >= special) y = frac(rng) * 4;
        x = y;
      }
      if (round % 5 == 0) {  // disengaged slots whose stale bytes hold a value: the largest
        // of all, or one that ties with the largest present norm
        const double stale[] = {1e308, 3.5, 1e300, 2.0};
        for (auto& x : v)
          if (frac(rng) < 0.3) {
            x = stale[pick(rng) % 4];
            x.reset();
          }
      }
      check(v, summarize_norms(v.data(), v.size()));
      check(v, summarize_norms_scalar(v.data(), v.size()));
      if (have_avx2) {
        REQUIRE(summarize_norms_avx2(v.data(), v.size(), avx2));
        check(v, avx2);
      }
      for (const double x : {2.0, 3.5, 0.0, 1e308, nan})
        CHECK(find_norm(v.data(), v.size(), x) == find_by_definition(v, x));
    }
  }
  // Hand-made cases whose answers are read off directly.
  using opt = std::optional<double>;
  const std::vector<opt> ties{1.0, 3.0, opt{}, 3.0, 2.0, 3.0, -0.0, 0.0};
  for (const auto& s : {summarize_norms(ties.data(), ties.size()),
                        summarize_norms_scalar(ties.data(), ties.size())}) {
    CHECK(s.max_norm == 3.0);
    CHECK(s.min_norm == 0.0);
    CHECK(s.first_non_finite == -1);
  }
  CHECK(find_norm(ties.data(), ties.size(), 3.0) == 1);
  CHECK(find_norm(ties.data(), ties.size(), 0.0) == 6);  // -0 first
  CHECK(find_norm(ties.data(), ties.size(), 5.0) == ties.size());
  const std::vector<opt> bad{1.0, 2.0, 3.0, 4.0, 5.0, inf, 7.0, nan, 0.5};
  const auto b = summarize_norms(bad.data(), bad.size());
  CHECK(b.max_norm == 7.0);
  CHECK(b.min_norm == 0.5);
  CHECK(b.first_non_finite == 5);
  CHECK(find_norm(bad.data(), bad.size(), 7.0) == 6);
  const std::vector<opt> none{opt{}, nan, -inf, opt{}, inf};
  const auto z = summarize_norms(none.data(), none.size());
  CHECK(z.max_norm == -inf);
  CHECK(z.first_non_finite == 1);
#if defined(__x86_64__) && defined(__GNUC__)
  // Where the CPU has AVX2 the vector path must have been the one checked above.
  if (__builtin_cpu_supports("avx2")) CHECK(have_avx2);
#endif
}
