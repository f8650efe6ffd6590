// Writes CSVs of generated training runs (one healthy, several with a known pathology) in the
// format `losslens analyze` reads. Usage: synthetic_runs OUT_DIR [SEED]

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "program_args.hpp"
#include "traces.hpp"

using namespace losslens::traces;

namespace {
const char* usage =
    "usage: synthetic_runs OUT_DIR [SEED]\n\n"
    "Writes CSVs of generated training runs (one healthy, seven with a known pathology:\n"
    "NaN, spike, divergence, oscillation, chance level, task dominance, vanishing\n"
    "gradients) into OUT_DIR (created if needed), for `losslens analyze`. SEED (default 1)\n"
    "picks the noise.\n";

bool write_csv(const std::filesystem::path& path, const trace& t) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  std::fputs("step", f);
  if (!t.samples.empty() && t.samples[0].loss) std::fputs(",loss", f);
  for (const auto& task : t.schema.tasks) std::fprintf(f, ",loss/%s", task.c_str());
  std::fputs(",grad_norm", f);
  for (const auto& p : t.schema.params) std::fprintf(f, ",grad_norm/%s", p.c_str());
  std::fputs(",lr\n", f);
  auto num = [&](const std::optional<double>& v) {
    if (v)
      std::fprintf(f, ",%.9g", *v);  // %g prints nan/inf as the reader expects
    else
      std::fputc(',', f);
  };
  for (const auto& s : t.samples) {
    std::fprintf(f, "%lld", static_cast<long long>(s.step));
    if (t.samples[0].loss) num(s.loss);
    for (std::size_t i = 0; i < t.schema.tasks.size(); ++i)
      num(i < s.task_losses.size() ? s.task_losses[i] : std::nullopt);
    num(s.grad_norm);
    for (std::size_t i = 0; i < t.schema.params.size(); ++i)
      num(i < s.param_grad_norms.size() ? s.param_grad_norms[i] : std::nullopt);
    num(s.lr);
    std::fputc('\n', f);
  }
  return std::fclose(f) == 0;
}
}  // namespace

int main(int argc, char** argv) {
  const losslens::testing::program_args args(argc, argv, usage, {}, {}, 2);
  if (args.positional().empty()) args.fail("OUT_DIR is required");
  const std::filesystem::path dir = args.positional()[0];
  const auto seed = std::uint64_t(args.positional_integer(1, 1, 0, INT64_MAX));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "synthetic_runs: cannot create %s: %s\n", dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  generator g(seed);
  const std::pair<const char*, trace> runs[] = {
      {"healthy_cosine.csv", g.healthy(healthy_shape::cosine)},
      {"nan.csv", nan_trace(seed)},
      {"spike.csv", spike_trace(seed)},
      {"divergence.csv", divergence_trace(seed)},
      {"oscillation.csv", oscillation_trace(seed)},
      {"chance_level.csv", chance_trace(seed)},
      {"multitask_unweighted.csv", dominance_trace(seed)},
      {"vanishing.csv", vanishing_trace(seed)},
  };
  for (const auto& [name, t] : runs) {
    if (!write_csv(dir / name, t)) {
      std::fprintf(stderr, "synthetic_runs: cannot write %s\n", (dir / name).c_str());
      return 1;
    }
    std::printf("%s  (%zu steps%s)\n", (dir / name).c_str(), t.samples.size(),
                t.onset >= 0 ? (", pathology from step " + std::to_string(t.onset)).c_str() : "");
  }
  return 0;
}
