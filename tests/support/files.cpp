#include "files.hpp"

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace losslens::testing {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace losslens::testing
