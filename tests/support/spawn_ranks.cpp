#include "spawn_ranks.hpp"

#include "child_process.hpp"

namespace losslens::testing {

std::vector<int> run_ranks(const std::string& exe,
                           const std::vector<std::vector<std::string>>& rank_args,
                           const std::string& log_prefix, std::chrono::seconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  std::vector<child_process> ranks;  // destruction kills (SIGKILL) the ones still running
  ranks.reserve(rank_args.size());
  for (std::size_t r = 0; r < rank_args.size(); ++r) {
    child_options o;
    o.out = stream::file;
    o.out_path = log_prefix + std::to_string(r) + ".log";
    o.err = stream::merge;
    ranks.emplace_back(exe, rank_args[r], o);
  }
  std::vector<int> status;
  for (auto& rank : ranks) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    const auto st = rank.wait(std::max(left, std::chrono::milliseconds(0)));
    status.push_back(st && *st >= 0 ? *st : -1);
  }
  return status;
}

}  // namespace losslens::testing
