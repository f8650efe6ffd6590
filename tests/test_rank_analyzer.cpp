// rank_analyzer on synthetic per-rank summaries: rank_divergence, straggler and desync, each
// with the offending rank as evidence, and silence on a healthy data-parallel run.

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "losslens/error.hpp"
#include "losslens/rank_analyzer.hpp"

using namespace losslens;

namespace {

/// A healthy data-parallel run: every rank's loss falls with its own batch noise, step times
/// jitter by a few percent, grad norms are identical (all-reduced).
struct synthetic_run {
  explicit synthetic_run(int world, unsigned seed = 1) : world(world), rng(seed) {}

  std::vector<rank_summary> at(int sync) {
    std::normal_distribution<double> noise(0, 1);
    const double base = 2.0 * std::exp(-0.01 * sync) + 0.1;
    const double grad = 1.0 + 0.1 * noise(rng);
    std::vector<rank_summary> out(static_cast<std::size_t>(world));
    for (auto& r : out) {
      r.loss = base * (1 + 0.1 * noise(rng));
      r.grad_norm = grad;
      r.has_grad = true;
      r.step_time = 0.050 * (1 + 0.05 * noise(rng));
    }
    return out;
  }

  int world;
  std::mt19937 rng;
};

std::vector<finding> of_kind(const std::vector<finding>& all, const std::string& kind) {
  std::vector<finding> out;
  for (const auto& f : all)
    if (f.kind == kind) out.push_back(f);
  return out;
}

constexpr int every = 10;  // steps per sync
constexpr double bad = std::numeric_limits<double>::quiet_NaN();

/// Feeds `syncs` syncs of a healthy run (sync k at step k * stride), after inject(k, ranks).
template <class Inject>
void feed(rank_analyzer& a, synthetic_run& run, int syncs, Inject inject, int stride = every) {
  for (int k = 0; k < syncs; ++k) {
    auto ranks = run.at(k);
    inject(k, ranks);
    a.observe(std::int64_t(k) * stride, ranks);
  }
}

}  // namespace

TEST_CASE("a healthy multi-rank run gives no rank findings") {
  for (int world : {2, 4, 64}) {
    rank_analyzer a(world);
    synthetic_run run(world, unsigned(world));
    for (int k = 0; k < 300; ++k) {
      const auto ranks = run.at(k);
      a.observe(std::int64_t(k) * every, ranks);
    }
    INFO("world " << world);
    CHECK(a.findings().empty());
    CHECK(a.syncs() == 300);
  }
}

TEST_CASE("rank_divergence: a NaN on one rank only names that rank at once") {
  rank_analyzer a(2);
  std::vector<std::pair<finding, bool>> seen;
  a.on_finding([&](const finding& f, bool is_new) { seen.emplace_back(f, is_new); });
  synthetic_run run(2);
  feed(a, run, 20, [&](int k, std::vector<rank_summary>& ranks) {
    if (k == 7) {
      ranks[1].loss = bad;
      ranks[1].loss_non_finite = true;
      ranks[1].non_finite_step = 66;  // between the syncs of steps 60 and 70
      // After the all-reduce the NaN reaches every rank's gradients.
      for (auto& r : ranks) {
        r.grad_norm = bad;
        r.grad_non_finite = true;
      }
    }
  });
  const auto fs = of_kind(a.findings(), "rank_divergence");
  REQUIRE(fs.size() == 1);
  const finding& f = fs[0];
  CHECK(f.level == severity::error);
  CHECK(f.evidence_value("rank") == 1);
  CHECK(f.series == "rank/1/loss");
  CHECK(f.first_step == 66);
  CHECK(f.last_step == 70);
  CHECK(f.evidence_value("non_finite_step") == 66);
  CHECK(f.evidence_value("non_finite_ranks") == 1);
  CHECK(f.evidence_value("world_size") == 2);
  CHECK(f.evidence_value("loss_non_finite") == 1);
  CHECK(f.rule.name == "non_finite_on_some_ranks");
  CHECK(f.id == 1);
  CHECK(f.message.find("rank 1") != std::string::npos);
  CHECK(f.advice.find("rank 1") != std::string::npos);
  REQUIRE(!seen.empty());
  CHECK(seen[0].second);
  CHECK(seen[0].first.id == f.id);
}

TEST_CASE("rank_divergence: NaN on every rank is not a rank finding") {
  rank_analyzer a(4);
  synthetic_run run(4);
  feed(
      a, run, 10,
      [&](int k, std::vector<rank_summary>& ranks) {
        if (k >= 5)
          for (auto& r : ranks) r.loss = bad, r.loss_non_finite = true;
      },
      1);
  CHECK(a.findings().empty());
}

TEST_CASE("rank_divergence: one rank's loss far above the others for a few syncs") {
  rank_analyzer a(4);
  synthetic_run run(4);
  feed(a, run, 50, [&](int k, std::vector<rank_summary>& ranks) {
    if (k >= 20 && k < 30) ranks[2].loss *= 5;
  });
  const auto fs = of_kind(a.findings(), "rank_divergence");
  REQUIRE(fs.size() == 1);
  CHECK(fs[0].level == severity::warning);
  CHECK(fs[0].evidence_value("rank") == 2);
  CHECK(fs[0].series == "rank/2/loss");
  CHECK(fs[0].first_step == 200);  // patience 2: confirmed at 210, dated from its start
  CHECK(fs[0].last_step == 290);
  CHECK(fs[0].evidence_value("ratio") > 3);
  CHECK(fs[0].rule.name == "loss_far_from_other_ranks");
}

TEST_CASE("rank_divergence: two ranks' losses apart cannot name an odd one") {
  rank_analyzer a(2);
  synthetic_run run(2);
  feed(
      a, run, 30, [&](int, std::vector<rank_summary>& ranks) { ranks[1].loss *= 10; }, 1);
  CHECK(of_kind(a.findings(), "rank_divergence").empty());
}

TEST_CASE("straggler: one rank's step time consistently above the others") {
  for (int world : {2, 4}) {
    rank_analyzer a(world);
    synthetic_run run(world);
    const int slow = world - 1;
    for (int k = 0; k < 40; ++k) {
      auto ranks = run.at(k);
      if (k >= 10) ranks[std::size_t(slow)].step_time += 0.040;  // 50 ms -> 90 ms
      // A one-off hiccup on rank 0 is not a straggler.
      if (k == 5) ranks[0].step_time *= 3;
      a.observe(std::int64_t(k) * every, ranks);
    }
    INFO("world " << world);
    const auto fs = of_kind(a.findings(), "straggler");
    REQUIRE(fs.size() == 1);
    const finding& f = fs[0];
    CHECK(f.evidence_value("rank") == slow);
    CHECK(f.series == "rank/" + std::to_string(slow) + "/step_time");
    CHECK(f.first_step == 100);
    CHECK(f.last_step == 390);
    CHECK(f.evidence_value("ratio") == Approx(1.8).margin(0.2));
    CHECK(f.evidence_value("wait_per_step") == Approx(0.040).margin(0.01));
    CHECK(f.evidence_value("syncs") == 30);
    CHECK(f.advice.find("rank " + std::to_string(slow)) != std::string::npos);
  }
}

TEST_CASE("straggler: a slowdown shorter than the patience is ignored") {
  rank_analyzer a(4);
  synthetic_run run(4);
  feed(
      a, run, 40,
      [&](int k, std::vector<rank_summary>& ranks) {
        if (k % 10 == 3 || k % 10 == 4) ranks[1].step_time *= 4;  // two syncs at a time
      },
      1);
  CHECK(of_kind(a.findings(), "straggler").empty());
}

TEST_CASE("desync: grad norms that differ after the all-reduce") {
  rank_analyzer a(4);
  synthetic_run run(4);
  feed(a, run, 30, [&](int k, std::vector<rank_summary>& ranks) {
    if (k >= 12) ranks[3].grad_norm *= 1.01;
  });
  const auto fs = of_kind(a.findings(), "desync");
  REQUIRE(fs.size() == 1);
  CHECK(fs[0].level == severity::error);
  CHECK(fs[0].evidence_value("rank") == 3);
  CHECK(fs[0].series == "rank/3/grad_norm");
  CHECK(fs[0].first_step == 120);
  CHECK(fs[0].last_step == 290);
  CHECK(fs[0].evidence_value("relative_spread") == Approx(0.01).epsilon(0.01));
  CHECK(of_kind(a.findings(), "rank_divergence").empty());
}

TEST_CASE("rank_analyzer validates its input") {
  CHECK_THROWS_AS(rank_analyzer(1), error);
  rank_options wrong;
  wrong.straggler.ratio = 1;
  CHECK_THROWS_AS(rank_analyzer(4, wrong), error);
  rank_analyzer a(3);
  std::vector<rank_summary> two(2);
  a.observe(0, two);  // wrong size
  std::vector<rank_summary> three(3);
  a.observe(5, three);
  a.observe(5, three);  // step did not increase
  CHECK(a.ignored() == 2);
  CHECK(a.syncs() == 1);
}
