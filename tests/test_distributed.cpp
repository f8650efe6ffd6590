// 2 and 4 real processes (dist_worker) training over Gloo on loopback with losslens attached
// through the process group: a NaN on one rank, a sleep on another (and, with 4, a replica
// whose gradients differ after the all-reduce); rank 0's database must hold every rank's points
// and the multi-rank findings with the right rank. This process does not load LibTorch.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "temp_dir.hpp"
#include <map>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "losslens/storage/run_reader.hpp"
#include "spawn_ranks.hpp"

using namespace losslens;
namespace fs = std::filesystem;

namespace {

using testing::temp_dir;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), {}};
}

struct dist_result {
  std::vector<finding> findings;               // stored by rank 0
  std::map<std::string, std::int64_t> points;  // per series name
  std::vector<nlohmann::json> outputs;         // each rank's --json
};

constexpr int steps = 60;
constexpr int sync_every = 5;

dist_result run_world(int world, const std::vector<std::string>& extra, const temp_dir& dir) {
  std::vector<std::vector<std::string>> args;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> a{
        "--store",      (dir.path / "store").string(),
        "--rank",       std::to_string(r),
        "--world",      std::to_string(world),
        "--db",         (dir.path / "runs.db").string(),
        "--steps",      std::to_string(steps),
        "--sync-every", std::to_string(sync_every),
        "--json",       (dir.path / ("out" + std::to_string(r) + ".json")).string()};
    a.insert(a.end(), extra.begin(), extra.end());
    args.push_back(std::move(a));
  }
  const auto status = testing::run_ranks(LOSSLENS_DIST_WORKER, args, (dir.path / "rank").string(),
                                         std::chrono::seconds(50));
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r << " log:\n" << slurp(dir.path / ("rank" + std::to_string(r) + ".log")));
    REQUIRE(status[std::size_t(r)] == 0);
  }
  dist_result out;
  for (int r = 0; r < world; ++r)
    out.outputs.push_back(
        nlohmann::json::parse(slurp(dir.path / ("out" + std::to_string(r) + ".json"))));
  // Only rank 0 wrote the database: one run.
  storage::run_reader reader((dir.path / "runs.db").string());
  const auto runs = reader.runs();
  REQUIRE(runs.size() == 1);
  for (const auto& s : reader.series(runs[0].id)) out.points[s.name] = s.summary.count;
  for (const auto& sf : reader.findings(runs[0].id)) out.findings.push_back(sf.f);
  return out;
}

std::vector<finding> of_kind(const std::vector<finding>& all, const std::string& kind) {
  std::vector<finding> out;
  for (const auto& f : all)
    if (f.kind == kind) out.push_back(f);
  return out;
}

void check_every_rank_recorded(const dist_result& res, int world) {
  for (int r = 0; r < world; ++r)
    for (const char* what : {"loss", "grad_norm", "step_time"}) {
      const std::string name = "rank/" + std::to_string(r) + "/" + what;
      INFO(name);
      REQUIRE(res.points.count(name) == 1);
      CHECK(res.points.at(name) == steps / sync_every);
    }
  CHECK(res.points.at("loss") == steps);  // rank 0's own standard series
}

}  // namespace

TEST_CASE("attach through a process group: setup errors, and a world of one is plain attach") {
  temp_dir dir("dist1");
  const auto status = testing::run_ranks(LOSSLENS_DIST_WORKER,
                                         {{"--store", (dir.path / "store").string(), "--rank", "0",
                                           "--world", "1", "--mode", "errors"}},
                                         (dir.path / "rank").string(), std::chrono::seconds(50));
  INFO(slurp(dir.path / "rank0.log"));
  CHECK(status[0] == 0);
}

TEST_CASE("2 ranks over Gloo: NaN on rank 1, a slow loader on rank 0") {
  temp_dir dir("dist2");
  const auto res = run_world(
      2, {"--nan-rank", "1", "--nan-step", "12", "--slow-rank", "0", "--sleep-ms", "25"}, dir);
  check_every_rank_recorded(res, 2);

  const auto div = of_kind(res.findings, "rank_divergence");
  REQUIRE(div.size() == 1);
  CHECK(div[0].evidence_value("rank") == 1);
  CHECK(div[0].series == "rank/1/loss");
  CHECK(div[0].level == severity::error);
  CHECK(div[0].first_step == 12);  // the NaN step, reported at the sync of step 14
  CHECK(div[0].last_step == 14);
  CHECK(div[0].evidence_value("loss_non_finite") == 1);

  const auto slow = of_kind(res.findings, "straggler");
  REQUIRE(slow.size() == 1);
  CHECK(slow[0].evidence_value("rank") == 0);
  CHECK(slow[0].series == "rank/0/step_time");
  CHECK(slow[0].evidence_value("step_time") >= 0.025);
  CHECK(slow[0].evidence_value("wait_per_step") > 0.015);

  CHECK(of_kind(res.findings, "desync").empty());
  // Rank 1 keeps its own, per-process findings (the NaN loss), not the multi-rank ones.
  bool rank1_non_finite = false;
  for (const auto& f : res.outputs[1]["findings"]) {
    CHECK(f["kind"] != "straggler");
    rank1_non_finite = rank1_non_finite || f["kind"] == "non_finite";
  }
  CHECK(rank1_non_finite);
}

TEST_CASE("4 ranks over Gloo: NaN on rank 2, slow rank 3, replica 1 out of sync") {
  temp_dir dir("dist4");
  const auto res = run_world(4,
                             {"--nan-rank", "2", "--nan-step", "7", "--slow-rank", "3",
                              "--sleep-ms", "25", "--desync-rank", "1", "--desync-step", "30"},
                             dir);
  check_every_rank_recorded(res, 4);

  const auto div = of_kind(res.findings, "rank_divergence");
  REQUIRE(div.size() >= 1);
  CHECK(div[0].evidence_value("rank") == 2);
  CHECK(div[0].first_step == 7);
  CHECK(div[0].evidence_value("non_finite_ranks") == 1);

  const auto slow = of_kind(res.findings, "straggler");
  REQUIRE(slow.size() == 1);
  CHECK(slow[0].evidence_value("rank") == 3);

  const auto ds = of_kind(res.findings, "desync");
  REQUIRE(ds.size() == 1);
  CHECK(ds[0].evidence_value("rank") == 1);
  CHECK(ds[0].first_step == 34);  // the first sync after step 30
  CHECK(ds[0].evidence_value("relative_spread") > 0.01);
}

TEST_CASE("4 healthy ranks over Gloo: no multi-rank findings") {
  temp_dir dir("dist4ok");
  const auto res = run_world(4, {}, dir);
  check_every_rank_recorded(res, 4);
  for (const char* kind : {"rank_divergence", "straggler", "desync"}) {
    INFO(kind);
    CHECK(of_kind(res.findings, kind).empty());
  }
}
