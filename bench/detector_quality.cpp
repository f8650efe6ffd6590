// Detection rate, delay (steps from the injected onset to the report) and onset error
// (first_step - onset) of every detector over N generated traces each, and the false-positive
// rate on healthy traces. Prints JSON. Usage: bench_detector_quality [N=200]

#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "program_args.hpp"
#include "quality.hpp"

using namespace losslens::traces;

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: bench_detector_quality [N]\n\n"
      "Detection rate, delay and onset error of every detector over N generated traces each\n"
      "(default 200), and the false-positive rate on N healthy traces. Prints JSON.\n",
      {}, {}, 1);
  const int n = int(args.positional_integer(0, 200, 1, 1 << 20));
  nlohmann::json out;
  out["traces_per_detector"] = n;
  for (const auto& c : all_cases()) {
    const auto st = measure_detection(c, n);
    out["detectors"][c.kind] = {{"detected", st.detected},
                                {"detection_rate", double(st.detected) / st.traces},
                                {"delay_steps",
                                 {{"p50", quantile(st.delays, 0.5)},
                                  {"p95", quantile(st.delays, 0.95)},
                                  {"max", quantile(st.delays, 1)}}},
                                {"onset_error_steps",
                                 {{"min", quantile(st.onset_errors, 0)},
                                  {"p50", quantile(st.onset_errors, 0.5)},
                                  {"max", quantile(st.onset_errors, 1)}}}};
  }
  const auto h = measure_healthy(n);
  out["healthy"] = {{"traces", h.traces},
                    {"with_warning_or_error", h.with_warning},
                    {"false_positive_rate", double(h.with_warning) / h.traces},
                    {"warnings_by_kind", h.by_kind},
                    {"info_by_kind", h.info_by_kind}};
  std::printf("%s\n", out.dump(2).c_str());
}
