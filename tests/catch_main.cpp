// The main of every Catch2 test binary: `--losslens-child NAME ...` runs a child function of
// the test (tests/support/child_functions.hpp) instead of the tests.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "child_functions.hpp"

int main(int argc, char* argv[]) {
  if (const auto status = losslens::testing::run_child_function(argc, argv)) return *status;
  return Catch::Session().run(argc, argv);
}
