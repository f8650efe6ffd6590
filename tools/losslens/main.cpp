// losslens: diagnose training runs from the command line.

#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

#include "args.hpp"
#include "commands.hpp"
#include "losslens/error.hpp"
#include "losslens/version.hpp"

namespace {

using losslens::cli::command;

const command commands[] = {
    {"analyze", "run the detectors over a CSV, TensorBoard event files or TB/W&B exports",
     losslens::cli::analyze_usage, losslens::cli::run_analyze},
    {"import", "analyse runs logged elsewhere and store them in a run-history database",
     losslens::cli::import_usage, losslens::cli::run_import},
    {"runs", "list the runs in a run-history database", losslens::cli::runs_usage,
     losslens::cli::run_runs},
    {"findings", "list stored findings", losslens::cli::findings_usage,
     losslens::cli::run_findings},
    {"metrics", "print a series of a run, downsampled", losslens::cli::metrics_usage,
     losslens::cli::run_metrics},
    {"export", "write a run as CSV, JSON or a TensorBoard event file", losslens::cli::export_usage,
     losslens::cli::run_export},
    {"compare", "compare two runs side by side", losslens::cli::compare_usage,
     losslens::cli::run_compare},
    {"serve", "serve the live dashboard in a browser", losslens::cli::serve_usage,
     losslens::cli::run_serve},
};

void print_help() {
  std::printf("losslens %s: diagnose training runs\n\nusage: losslens COMMAND [ARGS]\n\n",
              losslens::version_string);
  std::printf("commands:\n");
  for (const auto& c : commands)
    std::printf("  %-10s %.*s\n", std::string(c.name).c_str(), int(c.summary.size()),
                c.summary.data());
  std::printf("\n`losslens COMMAND --help` shows a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_help();
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_help();
    return 0;
  }
  if (name == "--version") {
    std::printf("losslens %s\n", losslens::version_string);
    return 0;
  }
  for (const auto& c : commands) {
    if (c.name != name) continue;
    for (int i = 2; i < argc; ++i) {
      std::string_view a = argv[i];
      if (a == "--help" || a == "-h") {
        std::fwrite(c.usage.data(), 1, c.usage.size(), stdout);
        return 0;
      }
    }
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const losslens::cli::usage_error& e) {
      std::fprintf(stderr, "losslens %s: %s\n\n", argv[1], e.what());
      std::fwrite(c.usage.data(), 1, c.usage.size(), stderr);
      return 2;
    } catch (const losslens::error& e) {
      std::fprintf(stderr, "losslens %s: %s\n", argv[1], e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "losslens %s: unexpected error: %s\n", argv[1], e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "losslens: unknown command '%s' (see losslens --help)\n", argv[1]);
  return 2;
}
