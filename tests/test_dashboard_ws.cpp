// Live dashboard, websocket protocol: deltas and findings of a live run, malformed and
// oversized messages, 200 concurrent clients, a client that never reads. Real Beast clients on
// loopback (port 0).

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dashboard_fixtures.hpp"
#include "dashboard_trace.hpp"
#include "losslens/storage/run_reader.hpp"

using namespace losslens;
using namespace losslens::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

/// What a subscriber has seen of a run: points per series (checked to arrive in step order
/// with no gap or repeat), the latest version of each finding, the status.
struct live_view {
  std::map<std::string, std::int64_t> next_step;  ///< per series, the step expected next
  std::map<std::string, int> non_finite;
  std::map<std::uint64_t, std::int64_t> finding_last_step;
  std::map<std::uint64_t, json> finding_spans;
  std::map<std::uint64_t, std::int64_t> finding_episodes;
  std::string status;
  bool in_order = true;

  void apply(const json& m) {
    if (m["type"] != "delta" && m["type"] != "subscribed") return;
    status = m["status"];
    if (m["type"] == "subscribed") {
      for (const auto& [name, last] : m["last_steps"].items())
        next_step[name] = last.get<std::int64_t>() + 1;
      return;
    }
    for (const auto& [name, pts] : m["points"].items())
      for (const auto& pt : pts) {
        if (pt[0] != next_step[name]) in_order = false;
        next_step[name] = pt[0].get<std::int64_t>() + 1;
        if (pt[1].is_string()) ++non_finite[name];
      }
    for (const auto& f : m["findings"]) {
      finding_last_step[f["id"]] = f["last_step"];
      finding_spans[f["id"]] = f["spans"];
      finding_episodes[f["id"]] = f["episodes"];
    }
  }
};

/// Reads messages into v until pred(v) holds or the time is up.
template <class Pred>
bool wait_for(ws_client& c, live_view& v, Pred pred, std::chrono::milliseconds timeout = 10s) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred(v)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0 || c.closed()) return false;
    if (auto m = c.next(left)) v.apply(*m);
  }
  return true;
}

}  // namespace

TEST_CASE("dashboard websocket streams deltas and findings of a live run", "[dashboard][ws]") {
  served_live h("live");
  auto& srv = h.srv;
  auto& w = h.w;
  auto& loss = h.loss;
  for (int s = 0; s < 10; ++s) w.append(loss, s, 0, 1.0);
  REQUIRE(w.flush());
  ws_client c(srv.port());
  c.send_json({{"type", "subscribe"}, {"run", w.run_id()}});
  auto ack = c.next_of_type("subscribed", 3s);
  REQUIRE(ack);
  CHECK((*ack)["run"] == w.run_id());
  CHECK((*ack)["status"] == "running");
  CHECK((*ack)["last_steps"]["loss"] == 9);
  live_view v;
  v.apply(*ack);

  // Stream points; every step after the acknowledged one arrives once, in order.
  const std::int64_t last = 2000;
  std::thread producer([&] {
    for (std::int64_t s = 10; s <= last; ++s) {
      w.append(loss, s, 0, s == 1500 ? nan_v : double(s));
      if (s % 100 == 0) std::this_thread::sleep_for(10ms);
    }
    w.record_finding(make_finding(1, 1500, 1500));
    w.flush();
  });
  bool all = wait_for(c, v, [&](const live_view& x) {
    return x.next_step.at("loss") == last + 1 && x.finding_last_step.count(1);
  });
  producer.join();
  CHECK(all);
  CHECK(v.in_order);
  CHECK(v.non_finite["loss"] == 1);
  CHECK(v.finding_last_step[1] == 1500);

  // An update of the finding (same id, grown episode) is pushed too.
  w.record_finding(make_finding(1, 1500, 1600));
  w.flush();
  CHECK(wait_for(c, v, [](const live_view& x) { return x.finding_last_step.at(1) == 1600; }));
  CHECK(v.finding_episodes[1] == 3);  // the delta carries the incident's episodes and spans
  REQUIRE(v.finding_spans[1].size() == 2);
  CHECK(v.finding_spans[1][1]["last_step"] == 1600);

  SECTION("at most about 10 frames per second per client") {
    auto frames0 = c.frames();
    auto t0 = std::chrono::steady_clock::now();
    std::int64_t s = last + 1;
    while (std::chrono::steady_clock::now() - t0 < 1500ms) {
      w.append(loss, s++, 0, 1.0);
      std::this_thread::sleep_for(2ms);
      while (auto m = c.next(1ms)) v.apply(*m);
    }
    auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(double(c.frames() - frames0) / seconds <= 12);
    CHECK(c.frames() - frames0 >= 5);
    CHECK(v.in_order);
  }
  SECTION("the run's end is pushed") {
    w.finish();
    CHECK(wait_for(c, v, [](const live_view& x) { return x.status == "finished"; }));
  }
}

TEST_CASE("dashboard websocket rejects malformed and oversized messages", "[dashboard][ws]") {
  served_history h([](dashboard::server_options& o) { o.max_frame_bytes = 1024; });
  auto& srv = h.srv;

  ws_client c(srv.port());
  for (const char* bad : {"not json", "[]", "{\"type\":42}", "{\"type\":\"subscribe\"}",
                          "{\"type\":\"subscribe\",\"run\":\"1\"}",
                          "{\"type\":\"subscribe\",\"run\":-4}", "{\"type\":\"dance\"}"}) {
    INFO(bad);
    c.send(bad);
    auto m = c.next(2s);
    REQUIRE(m);
    CHECK((*m)["type"] == "error");
    CHECK((*m)["error"].is_string());
  }
  c.send_binary("\x01\x02");
  auto m = c.next(2s);
  REQUIRE(m);
  CHECK((*m)["type"] == "error");
  c.send_json({{"type", "subscribe"}, {"run", 999}});
  m = c.next_of_type("error", 2s);
  REQUIRE(m);
  CHECK((*m)["run"] == 999);
  c.send_json({{"type", "ping"}});
  m = c.next(2s);
  REQUIRE(m);
  CHECK((*m)["type"] == "pong");  // still usable

  // A message over the limit closes that connection, and only that one.
  ws_client big(srv.port());
  big.send(std::string(4096, 'x'));
  CHECK(!big.next(3s));
  CHECK(big.closed());
  c.send_json({{"type", "ping"}});
  m = c.next(2s);
  REQUIRE(m);
  CHECK((*m)["type"] == "pong");
  // Oversized HTTP requests are refused.
  CHECK(http_request(srv.port(), "/api/runs?" + std::string(10000, 'a')).status == 431);
}

TEST_CASE("dashboard serves 200 concurrent websocket clients", "[dashboard][ws]") {
  served_live h("many");
  auto& srv = h.srv;
  auto& w = h.w;
  auto& loss = h.loss;

  std::vector<std::unique_ptr<ws_client>> clients;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(std::make_unique<ws_client>(srv.port()));
    clients.back()->send_json({{"type", "subscribe"}, {"run", w.run_id()}});
  }
  for (auto& c : clients) REQUIRE(c->next_of_type("subscribed", 5s));
  for (int s = 0; s < 1000; ++s) {
    w.append(loss, s, 0, double(s));
    if (s % 100 == 0) std::this_thread::sleep_for(5ms);
  }
  REQUIRE(w.flush());
  int complete = 0;
  for (auto& c : clients) {
    live_view v;
    v.next_step["loss"] = 0;
    complete +=
        wait_for(*c, v, [](const live_view& x) { return x.next_step.at("loss") == 1000; }) &&
        v.in_order;
  }
  CHECK(complete == 200);
  CHECK(srv.stats().clients == 200);
  CHECK(srv.stats().slow_drops == 0);
}

TEST_CASE("dashboard drops a client that never reads, others are unaffected", "[dashboard][ws]") {
  // 4 MiB: a few deltas of up to 20,000 points (~0.5 MiB each with wall times) may wait for
  // the healthy client on a loaded machine; the stuck one exceeds it within seconds.
  served_live h("stuck", [](dashboard::server_options& o) { o.max_queue_bytes = 4 << 20; });
  auto& srv = h.srv;
  auto& w = h.w;
  auto& loss = h.loss;

  ws_client stuck(srv.port(), "/ws", 4096);
  stuck.send_json({{"type", "subscribe"}, {"run", w.run_id()}});
  ws_client healthy(srv.port());
  healthy.send_json({{"type", "subscribe"}, {"run", w.run_id()}});
  REQUIRE(healthy.next_of_type("subscribed", 3s));

  // Stream until the server gives up on the stuck client (bounded).
  live_view v;
  v.next_step["loss"] = 0;
  std::int64_t s = 0;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  // The healthy client reads all the time, on its own thread, as a browser would (reading only
  // between the writer's bursts made it lag behind on a loaded machine and get dropped too).
  std::atomic<bool> streaming{true};
  std::thread reader([&] {
    while (streaming.load())
      if (auto m = healthy.next(20ms)) v.apply(*m);
  });
  while (srv.stats().slow_drops == 0 && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 20000; ++i) {
      while (!w.try_append(loss, s, 0, double(s) * 1.000001)) std::this_thread::yield();
      ++s;
    }
    std::this_thread::sleep_for(20ms);
  }
  streaming = false;
  reader.join();
  CHECK(srv.stats().slow_drops == 1);
  CHECK(srv.stats().clients == 1);
  // The healthy client received every point, in order.
  REQUIRE(w.flush());
  CHECK(wait_for(
      healthy, v, [&](const live_view& x) { return x.next_step.at("loss") == s; }, 20s));
  CHECK(v.in_order);
  CHECK(!healthy.closed());
}
