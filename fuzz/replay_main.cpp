// main() for the fuzz targets in the ordinary build (no libFuzzer, any compiler): runs
// LLVMFuzzerTestOneInput once on every file of the directories given, so CTest replays the
// committed corpus and the regression inputs (tests fuzz_replay_<target>).
//
// Usage: fuzz_replay_<target> DIR_OR_FILE...   (a missing directory is skipped)

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "program_args.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
// Optional, as in libFuzzer: targets that need set-up (a database) define it.
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: fuzz_replay_TARGET DIR_OR_FILE...\n\n"
      "Runs the fuzz target once on every file given and every file under the directories\n"
      "given (a missing one is skipped): the committed corpus and regression inputs.\n",
      {}, {}, std::size_t(-1));
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  std::vector<fs::path> inputs;
  for (const auto& arg : args.positional()) {
    const fs::path p = arg;
    if (fs::is_regular_file(p)) {
      inputs.push_back(p);
    } else if (fs::is_directory(p)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file() && e.path().filename().string().front() != '.')
          inputs.push_back(e.path());
    } else {
      std::fprintf(stderr, "replay: %s does not exist, skipped\n", p.c_str());
    }
  }
  std::sort(inputs.begin(), inputs.end());  // a deterministic order
  for (const auto& p : inputs) {
    std::ifstream in(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::fprintf(stderr, "replay: cannot read %s\n", p.c_str());
      return 1;
    }
    // Printed first so that a crash names the input.
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", p.c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("replayed %zu inputs\n", inputs.size());
  return inputs.empty() ? 1 : 0;  // nothing to replay: a wrong path, not a pass
}
