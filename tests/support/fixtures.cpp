#include "fixtures.hpp"

#include <catch2/catch.hpp>

namespace losslens::testing {

std::filesystem::path tensorboard_fixtures() {
  return std::filesystem::path(LOSSLENS_FIXTURES_DIR) / "tensorboard";
}

bool have_tensorboard_fixtures() {
  if (std::filesystem::exists(tensorboard_fixtures() / "expected.json")) return true;
  WARN("fixtures not found at " << tensorboard_fixtures().string()
                                << ": configure with -DLOSSLENS_FIXTURES_DIR=<shared>/fixtures; "
                                   "skipped");
  return false;
}

}  // namespace losslens::testing
