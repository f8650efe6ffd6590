// The detectors' streaming statistics against brute force written independently: a sorted copy
// of the window for medians, MADs and quantiles, the closed-form mean for the bias-corrected
// average, and traces with a known break for the change point.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "detail/detector.hpp"
#include "detail/rolling.hpp"

using namespace losslens::core::detail;

namespace {
long double median_of(std::vector<long double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
}  // namespace

TEST_CASE("sorted_window: median, MAD and quantiles equal a sorted copy at every push") {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0, 1);
  for (std::size_t w : {1u, 2u, 3u, 16u, 17u, 64u, 128u, 300u}) {
    sorted_window s(w);
    std::deque<double> window;
    for (int i = 0; i < 3000; ++i) {
      // Ties, huge values and a NaN (ignored) among normal noise.
      double x = i % 7 == 0 ? double(rng() % 3) : normal(rng);
      if (i % 97 == 0) x = 1e300;
      if (i % 101 == 0) x = std::nan("");
      s.push(x);
      if (!std::isfinite(x)) continue;
      window.push_back(x);
      if (window.size() > w) window.pop_front();
      std::vector<long double> v(window.begin(), window.end());
      const long double m = median_of(v);
      std::vector<long double> dev;
      for (long double y : v) dev.push_back(std::fabs(y - m));
      REQUIRE(s.size() == window.size());
      REQUIRE(s.median() == Approx(double(m)).epsilon(1e-15));
      REQUIRE(s.mad() == Approx(double(median_of(dev))).epsilon(1e-12).margin(1e-300));
      // And exactly the median of the distances taken in double, as the window takes them.
      std::vector<double> ddev;
      for (double y : window) ddev.push_back(std::fabs(y - s.median()));
      std::sort(ddev.begin(), ddev.end());
      const std::size_t h = ddev.size() / 2;
      REQUIRE(s.mad() == (ddev.size() % 2 ? ddev[h] : 0.5 * (ddev[h - 1] + ddev[h])));
      std::sort(v.begin(), v.end());
      const auto k = std::size_t(0.99 * double(v.size() - 1) + 0.5);
      REQUIRE(s.quantile(0.99) == double(v[k]));
      // Every order statistic: a push moves the values between two places either way.
      for (std::size_t j = 0; j < v.size(); ++j) REQUIRE(s.at(j) == double(v[j]));
    }
  }
}

TEST_CASE("lazy_median: median and largest value equal a sorted copy at every push") {
  std::mt19937_64 rng(4);
  std::lognormal_distribution<double> lognormal(0, 1);
  for (std::size_t w : {1u, 2u, 3u, 5u, 16u, 17u, 64u}) {
    lazy_median l(w);
    sorted_window s(w);
    std::deque<double> window;
    CHECK(std::isnan(l.median()));
    CHECK(l.max() == -std::numeric_limits<double>::infinity());
    for (int i = 0; i < 2000; ++i) {
      // Ties (a few small integers) among right-skewed values.
      const double x = i % 6 == 0 ? double(rng() % 3) : lognormal(rng);
      l.push(x);
      s.push(x);
      window.push_back(x);
      if (window.size() > w) window.pop_front();
      std::vector<long double> v(window.begin(), window.end());
      REQUIRE(l.count() == window.size());
      REQUIRE(l.median() == Approx(double(median_of(v))).epsilon(1e-15));
      // Bit for bit the sorted window's median: rules may use either for the same numbers.
      REQUIRE(l.median() == s.median());
      REQUIRE(l.max() == *std::max_element(window.begin(), window.end()));
    }
  }
}

TEST_CASE("lazy_median: the largest value, kept as values come, through NaN and falling runs") {
  // max() is updated by push() and rescans only when its value leaves the window: falling runs
  // (a rescan at every push), rising runs, ties, NaN (skipped, as ring::max skips it) and
  // windows of NaN only (-Inf).
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  const double qnan = std::numeric_limits<double>::quiet_NaN();
  for (std::size_t w : {1u, 2u, 3u, 7u, 16u, 33u}) {
    lazy_median l(w);
    std::deque<double> window;
    double level = 100;
    for (int i = 0; i < 4000; ++i) {
      const int phase = (i / 97) % 5;
      double x = phase == 0   ? (level -= 1)                    // falling
                 : phase == 1 ? (level += 1)                    // rising
                 : phase == 2 ? double(rng() % 3)               // ties
                 : phase == 3 ? (u(rng) < 0.7 ? qnan : u(rng))  // mostly NaN
                 : rng() % 2  ? -std::numeric_limits<double>::infinity()
                              : u(rng);
      if (i >= 3000 && i < 3000 + 2 * int(w)) x = qnan;  // a window of NaN only
      l.push(x);
      window.push_back(x);
      if (window.size() > w) window.pop_front();
      double want = -std::numeric_limits<double>::infinity();
      for (double v : window)
        if (v >= want) want = v;
      REQUIRE(l.max() == want);
    }
  }
}

TEST_CASE("clipped_scale: values beyond 8 robust scales of the last 16 are clipped to them") {
  // The rule written out with a sorted copy of the window (log scale while every value is
  // positive, then linear from the first value <= 0 on, the window restarted).
  std::mt19937_64 rng(9);
  std::normal_distribution<double> normal(0, 1);
  for (double noise : {0.02, 0.1, 0.6}) {
    clipped_scale c;
    std::deque<double> window;
    bool log_scale = true;
    std::size_t clipped = 0;
    for (int i = 0; i < 4000; ++i) {
      // A falling loss with outliers every 37 steps; from step 3000 on it crosses 0.
      double x = (0.2 + std::exp(-i / 800.0)) * std::exp(noise * normal(rng));
      if (i % 37 == 0) x *= i % 2 ? 30 : 0.01;
      if (i >= 3000) x = 0.5 - (i - 3000) / 500.0 + noise * normal(rng);
      bool switched_now = false;
      if (log_scale && !(x > 0)) {
        log_scale = false;
        window.clear();
        switched_now = true;
      }
      const double raw = log_scale ? std::log(x) : x;
      double expected = raw;
      if (window.size() >= 8) {
        std::vector<double> v(window.begin(), window.end());
        std::sort(v.begin(), v.end());
        const std::size_t n = v.size();
        const double m = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
        std::vector<double> d;
        for (double w : v) d.push_back(std::fabs(w - m));
        std::sort(d.begin(), d.end());
        const double mad = n % 2 ? d[n / 2] : 0.5 * (d[n / 2 - 1] + d[n / 2]);
        const double floor = log_scale ? 0.05 : 1e-3 * std::fabs(m) + 1e-12;
        if (std::fabs(raw - m) > 8 * floor) {
          const double r = 8 * std::max(1.4826 * mad, floor);
          expected = std::min(std::max(raw, m - r), m + r);
        }
      }
      double out = 0;
      REQUIRE(c.push(x, out) == switched_now);
      REQUIRE(out == expected);
      REQUIRE(c.log_scale() == log_scale);
      clipped += out != raw;
      window.push_back(raw);
      if (window.size() > 16) window.pop_front();
    }
    CHECK(!log_scale);
    // The outliers of the log-scale part (81), fewer under heavy noise (its wider scale).
    CHECK(clipped >= (noise < 0.5 ? 70u : 30u));
  }
}

TEST_CASE(
    "robust_baseline: z against the median and MAD of a sorted copy, upward_z = max(z, 0), and its "
    "medians") {
  std::mt19937_64 rng(5);
  std::lognormal_distribution<double> lognormal(0, 0.5);
  robust_baseline b(64);
  std::deque<long double> logs, lins;
  bool log_scale = true;
  for (int i = 0; i < 3000; ++i) {
    // Positive (log scale) for 2000 pushes, then a 0 switches it to the linear scale for good.
    const double x = i == 2000 ? 0.0 : (i > 2000 ? 1.0 - lognormal(rng) : lognormal(rng));
    const double lx = x > 0 ? std::log(x) : x;
    if (i >= 10) {
      std::vector<long double> v(log_scale ? logs.begin() : lins.begin(),
                                 log_scale ? logs.end() : lins.end());
      const long double m = median_of(v);
      std::vector<long double> dev;
      for (long double y : v) dev.push_back(std::fabs(y - m));
      const long double scale = std::max({1.4826L * median_of(dev), 1e-3L * std::fabs(m), 1e-9L});
      const long double t = log_scale ? std::log((long double)x) : (long double)x;
      const long double z = log_scale && !(x > 0) ? 0 : (t - m) / scale;
      REQUIRE(b.z(x, lx) == Approx(double(z)).epsilon(1e-9).margin(1e-9));
      REQUIRE(b.upward_z(x, lx) == (z > 1e-12 ? Approx(double(z)).epsilon(1e-9) : Approx(0.0)));
      REQUIRE(b.upward_z(x, lx) >= 0);
      // The median on the working scale (log units while log_scale) and in the series' units.
      REQUIRE(b.working_median() == Approx(double(m)).epsilon(1e-12).margin(1e-15));
      REQUIRE(b.median() ==
              Approx(double(log_scale ? std::exp(m) : m)).epsilon(1e-12).margin(1e-15));
    }
    b.push(x, lx);
    if (log_scale && !(x > 0)) {
      log_scale = false;
      lins.clear();
    }
    if (log_scale) logs.push_back(std::log((long double)x));
    lins.push_back(x);
    if (logs.size() > 64) logs.pop_front();
    if (lins.size() > 64) lins.pop_front();
  }
  CHECK(!b.log_scale());
}

TEST_CASE("lagged_tail: the 99th percentile of the lagged window equals a full sort") {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(0, 1);
  // Windows whose percentile is near the top (one pass) and small ones (a selection), with
  // ties and infinities; whole numbers of strides (kept as the stretches' largest values: 100
  // of 5, and the detectors' 512 of 64) and not (the window itself: 7 and 512 of 5, 2000 of 5
  // is too many stretches, 96 of 1 asks for too many of the largest).
  const std::pair<std::size_t, std::size_t> shapes[] = {
      {1, 5}, {7, 5}, {100, 5}, {512, 5}, {2000, 5}, {64, 64}, {512, 64}, {1024, 64}, {96, 1}};
  for (auto [w, stride] : shapes) {
    const std::size_t lag = stride == 64 ? 64 : 3;
    lagged_tail t(w, lag, stride);
    std::deque<double> pushed;
    double expected = 0;
    std::size_t since = 0, seen = 0;
    for (int i = 0; i < 6000; ++i) {
      double x = i % 5 == 0 ? double(rng() % 4) : normal(rng);
      if (i % 499 == 0) x = i % 2 ? 1e308 * 10 : -1e308 * 10;
      if (i > 3000 && i < 3300) x += 10;  // a burst that fills the tail, then leaves it
      t.push(x);
      pushed.push_back(x);
      if (pushed.size() <= lag) continue;
      ++seen;
      if (++since >= stride || seen <= 1) {
        since = 0;
        // The window: pushes lag + 1 .. lag + w ago.
        const std::size_t end = pushed.size() - lag;
        const std::size_t begin = end > w ? end - w : 0;
        std::vector<double> v(pushed.begin() + std::ptrdiff_t(begin),
                              pushed.begin() + std::ptrdiff_t(end));
        std::sort(v.begin(), v.end());
        expected = v[std::min(v.size() - 1, std::size_t(0.99 * double(v.size() - 1) + 0.5))];
      }
      REQUIRE(t.count() == seen);
      REQUIRE(t.upper() == expected);
    }
  }
}

TEST_CASE("ema: bias-corrected, so early values are the mean of what was seen") {
  ema e(0.01);
  CHECK(e.push(4.0) == Approx(4.0).epsilon(1e-14));
  // Weights (1 - a)^k normalised: for two values 4 and 2 -> (0.99 * 4 + 2) / 1.99.
  CHECK(e.push(2.0) == Approx((0.99 * 4.0 + 2.0) / 1.99).epsilon(1e-14));
  ema c(0.05);
  for (int i = 0; i < 1000; ++i) c.push(7.25);
  CHECK(c.value() == Approx(7.25).epsilon(1e-14));
}

TEST_CASE("change_point: finds a bend and a jump where they were put") {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> noise(0, 0.05);
  auto any = [](double before, double after, double jump) { return jump > 0 || after > before; };
  SECTION("a flat line that bends upward at 300 (the log of an exponential divergence)") {
    std::vector<double> y(500);
    for (std::size_t i = 0; i < y.size(); ++i)
      y[i] = -1.0 + (i >= 300 ? 0.01 * double(i - 300) : 0.0) + noise(rng);
    const std::size_t tau = change_point(y.data(), 0, y.size(), 16, any);
    CHECK(std::abs(double(tau) - 300) <= 10);
  }
  SECTION("a jump up at 200 on a falling line (an LR jump at the floor)") {
    std::vector<double> y(400);
    for (std::size_t i = 0; i < y.size(); ++i)
      y[i] = -0.001 * double(i) + (i >= 200 ? 2.0 : 0.0) + noise(rng);
    CHECK(change_point(y.data(), 0, y.size(), 16, any) == 200);
  }
  SECTION("nothing acceptable: the start") {
    std::vector<double> y(100);
    for (std::size_t i = 0; i < y.size(); ++i) y[i] = -0.01 * double(i);
    CHECK(change_point(y.data(), 10, y.size(), 16,
                       [](double, double, double jump) { return jump > 1; }) == 10);
  }
}

TEST_CASE("quotient_surely_below: never says below when the double quotient reaches the bar") {
  std::mt19937_64 rng(8);
  std::uniform_real_distribution<double> unit(0.5, 2), expo(-300, 300);
  int below = 0, clear = 0, clear_said = 0;
  for (int i = 0; i < 200000; ++i) {
    const double m = unit(rng) * std::pow(10.0, expo(rng) / 2);
    const double bar = unit(rng) * std::pow(10.0, expo(rng) / 20);
    // Around the bar (a few ulps to a relative 1e-11 either way) and far from it.
    double x = bar * m;
    switch (i % 4) {
      case 0:
        for (int k = int(rng() % 8); k > 0; --k) x = std::nextafter(x, -1.0);
        break;
      case 1:
        x *= 1 - 1e-11 * unit(rng);
        break;
      case 2:
        x *= 1 - 1e-12 * unit(rng);
        break;
      default:
        x *= unit(rng) / 2;
    }
    const bool surely = losslens::core::detail::quotient_surely_below(x, bar, m);
    // The double quotient, and the exact one in long double.
    if (surely) {
      REQUIRE(x / m < bar);
      REQUIRE((long double)x / (long double)m < (long double)bar);
      ++below;
    }
    // Well under the bar, with a normal product: said (what saves the division).
    if (x / m < 0.99 * bar && bar * m > 1e-290) {
      ++clear;
      clear_said += surely ? 1 : 0;
    }
  }
  CHECK(below > 50000);
  CHECK(clear > 40000);
  CHECK(clear_said == clear);
  // Products near or below the smallest normal double: no claim.
  CHECK(!losslens::core::detail::quotient_surely_below(1e-320, 2.0, 1e-310));
  CHECK(!losslens::core::detail::quotient_surely_below(0.0, 1.0, 1e-301));
  CHECK(losslens::core::detail::quotient_surely_below(0.5, 1.0, 1.0));
  CHECK(!losslens::core::detail::quotient_surely_below(std::nan(""), 1.0, 1.0));
  CHECK(!losslens::core::detail::quotient_surely_below(1.0, std::nan(""), 1.0));
}
