// sample_prefetcher: the samples of a source arrive in order, complete, with the source's error
// after the samples before it, the reader stays a bounded number of batches ahead, and an early
// destruction stops it.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "losslens/error.hpp"
#include "losslens/sample_prefetcher.hpp"

using namespace losslens;

namespace {
// Sample i: step 3i + 1, loss i / 7, i % 5 task losses (so rows differ in width), grad norm
// missing on every 4th.
void make_row(std::int64_t i, sample& s) {
  s = sample{};
  s.step = 3 * i + 1;
  s.loss = double(i) / 7;
  for (std::int64_t t = 0; t < i % 5; ++t) s.task_losses.push_back(double(t + i));
  if (i % 4 != 0) s.grad_norm = double(i) * 0.5;
}
bool same_as_row(std::int64_t i, const sample& s) {
  sample want;
  make_row(i, want);
  return s.step == want.step && s.loss == want.loss && s.task_losses == want.task_losses &&
         s.grad_norm == want.grad_norm;
}
}  // namespace

TEST_CASE("prefetcher: every sample of the source, in order, whatever the batch size") {
  for (const auto& [rows, batch, depth] :
       {std::tuple{0, 4, 2}, {1, 1, 1}, {10007, 7, 3}, {4096, 256, 4}, {5, 256, 4}}) {
    std::int64_t made = 0;
    sample_prefetcher p(
        [&, n = rows](sample& s) {
          if (made == n) return false;
          make_row(made++, s);
          return true;
        },
        std::size_t(batch), std::size_t(depth));
    std::int64_t got = 0, wrong = 0;
    while (const sample* s = p.next()) wrong += same_as_row(got++, *s) ? 0 : 1;
    CHECK(got == rows);
    CHECK(wrong == 0);
    CHECK(p.next() == nullptr);  // the end stays the end
  }
}

TEST_CASE("prefetcher: ahead(k) is the sample next() hands out k calls later, within its batch") {
  constexpr std::int64_t rows = 1000;
  constexpr std::size_t batch = 16;
  std::int64_t made = 0;
  sample_prefetcher p(
      [&](sample& s) {
        if (made == rows) return false;
        make_row(made++, s);
        return true;
      },
      batch, 3);
  CHECK(p.ahead(1) == nullptr);  // nothing handed out yet
  std::int64_t got = 0, wrong = 0, seen = 0, refused = 0;
  while (const sample* s = p.next()) {
    const std::size_t in_batch = std::size_t(got) % batch;  // every batch here is full
    for (std::size_t k = 0; k < 20; ++k) {
      const sample* later = p.ahead(k);
      if (in_batch + k < batch && got + std::int64_t(k) < rows) {
        ++seen;
        if (later == nullptr || !same_as_row(got + std::int64_t(k), *later)) ++wrong;
        if (k == 0 && later != s) ++wrong;  // ahead(0): the sample just handed out
      } else {
        refused += later == nullptr ? 1 : 0;
        if (later != nullptr) ++wrong;  // beyond the batch: not read yet, or reused
      }
    }
    ++got;
  }
  CHECK(got == rows);
  CHECK(wrong == 0);
  CHECK(seen > 0);
  CHECK(refused > 0);
  CHECK(p.ahead(0) == nullptr);  // after the end
}

TEST_CASE("prefetcher: the source's error comes after the samples read before it") {
  std::int64_t made = 0;
  sample_prefetcher p(
      [&](sample& s) {
        if (made == 5000) throw error("runs.csv:5002: 'x' is not a number");
        make_row(made++, s);
        return true;
      },
      64, 3);
  std::int64_t got = 0;
  std::string message;
  try {
    while (p.next()) ++got;
  } catch (const error& e) {
    message = e.what();
  }
  CHECK(got == 5000);
  CHECK(message == "runs.csv:5002: 'x' is not a number");
  CHECK(p.next() == nullptr);
}

TEST_CASE(
    "prefetcher: the reader stays at most depth batches ahead, wakes per half ring and stops on "
    "destruction") {
  std::atomic<std::int64_t> calls{0};
  const std::size_t batch = 16, depth = 3;
  {
    sample_prefetcher p(
        [&](sample& s) {
          make_row(calls++, s);
          return true;  // an endless source
        },
        batch, depth);
    const sample* s = p.next();
    REQUIRE(s);
    REQUIRE(same_as_row(0, *s));
    // The reader fills every slot (the one being read included), then waits.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (calls.load() < std::int64_t(batch * depth) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(calls.load() == std::int64_t(batch * depth));
    // Once full, the reader waits until half the ring is free (one wake-up per half ring):
    // reading on into the second batch frees one slot and it stays asleep ...
    for (std::size_t i = 1; i <= batch; ++i) {
      s = p.next();
      REQUIRE(s);
      CHECK(same_as_row(std::int64_t(i), *s));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(calls.load() == std::int64_t(batch * depth));
    // ... into the third frees a second one, and it fills both.
    for (std::size_t i = batch + 1; i <= 2 * batch; ++i) {
      s = p.next();
      REQUIRE(s);
      CHECK(same_as_row(std::int64_t(i), *s));
    }
    while (calls.load() < std::int64_t(batch * (depth + 2)) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(calls.load() == std::int64_t(batch * (depth + 2)));
  }  // destroyed while the source still has rows: no hang, no call after
  const auto after = calls.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(calls.load() == after);
}

TEST_CASE("prefetcher: bad arguments are refused with a message") {
  auto src = [](sample&) { return false; };
  CHECK_THROWS_WITH(sample_prefetcher(src, 0, 4), Catch::Contains("batch and depth"));
  CHECK_THROWS_WITH(sample_prefetcher(src, 16, 0), Catch::Contains("batch and depth"));
  CHECK_THROWS_WITH(sample_prefetcher(sample_prefetcher::source_fn{}),
                    Catch::Contains("no source"));
}

TEST_CASE(
    "prefetcher: prepare sees each sample on the reader's thread, at the place next() reports") {
  const std::size_t batch = 7, depth = 3;
  std::vector<std::int64_t> prepared(batch * depth, -1);  // the step prepared at each place
  std::atomic<int> on_caller_thread{0};
  const auto caller = std::this_thread::get_id();
  std::int64_t made = 0;
  sample_prefetcher p(
      [&](sample& s) {
        if (made == 1000) return false;
        make_row(made++, s);
        return true;
      },
      batch, depth,
      [&](const sample& s, std::size_t place) {
        if (std::this_thread::get_id() == caller) ++on_caller_thread;
        prepared.at(place) = s.step;
      });
  std::int64_t got = 0, wrong = 0;
  while (const sample* s = p.next()) {
    REQUIRE(p.place() < batch * depth);
    wrong += same_as_row(got++, *s) && prepared[p.place()] == s->step ? 0 : 1;
  }
  CHECK(got == 1000);
  CHECK(wrong == 0);
  CHECK(on_caller_thread == 0);

  // A throwing prepare ends the stream like a throwing source, after the samples before.
  made = 0;
  sample_prefetcher q(
      [&](sample& s) {
        make_row(made++, s);
        return true;
      },
      batch, depth,
      [&](const sample& s, std::size_t) {
        if (s.step == 3 * 300 + 1) throw error("bad row 300");
      });
  got = 0;
  CHECK_THROWS_WITH(
      [&] {
        while (q.next()) ++got;
      }(),
      "bad row 300");
  CHECK(got == 300);
}
