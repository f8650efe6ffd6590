// Stable loss kernels, class weights and multi-task combiners, checked against long double /
// analytic references and LibTorch's built-ins, at ordinary and extreme inputs.
//
// The loss kernels are checked element by element, loss and gradient, in float64 and float32,
// on both paths (the vectorised CPU loops and the portable ATen ops), against references written
// from the math in long double: each value is compared with the contract of docs/losses.md,
// relative (1e-6 in float64, 1e-4 in float32, absolute below 1e-300 / 1e-35), or, where the
// exact value is a difference that can cancel, relative to the sum of the magnitudes of its
// terms. Each check prints its worst case ("accuracy" lines; run test_losses -s to see them).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/optim/adam.h>

// LibTorch may pull in glog, whose CHECK would replace Catch's: include Catch last.
#undef CHECK
#include <catch2/catch.hpp>

#include "../hooks/src/fused_losses.hpp"
#include "../hooks/src/loss_simd.hpp"
#include "losslens/error.hpp"
#include "losslens/torch/losses.hpp"
#include "losslens/torch/multitask.hpp"

using namespace losslens;
namespace F = torch::nn::functional;
using ld = long double;

namespace {

// ---- long double references, from the math -------------------------------------------------

ld softplus_ld(ld z) { return (z > 0 ? z : 0) + std::log1p(std::exp(-std::fabs(z))); }
ld sigmoid_ld(ld z) { return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z)); }

/// Softmax of one row in long double: p_c, 1 - p_c as the sum of the other classes'
/// probabilities, and -log p_c (as log1p of the others' odds when c is a maximum, so that it
/// keeps its digits when p_c is within long double's epsilon of 1).
struct softmax_ld {
  std::vector<ld> p, q, nll;
  explicit softmax_ld(const std::vector<ld>& x) {
    const ld m = *std::max_element(x.begin(), x.end());
    ld s = 0;
    for (ld v : x) s += std::exp(v - m);
    for (std::size_t k = 0; k < x.size(); ++k) {
      p.push_back(std::exp(x[k] - m) / s);
      ld odds = 0;  // sum over c != k of p_c / p_k, used when x_k is a maximum (then <= C - 1)
      for (std::size_t c = 0; c < x.size(); ++c)
        if (c != k && x[k] == m) odds += std::exp(x[c] - x[k]);
      nll.push_back(x[k] == m ? std::log1p(odds) : (m - x[k]) + std::log(s));
    }
    for (std::size_t k = 0; k < x.size(); ++k) {
      ld others = 0;
      for (std::size_t c = 0; c < x.size(); ++c)
        if (c != k) others += p[c];
      q.push_back(others);
    }
  }
};

// ---- the contract --------------------------------------------------------------------------

/// Relative tolerance of the kernel contract: 1e-6 in float64, 1e-4 in float32.
double rel_tol(torch::Dtype d) { return d == torch::kDouble ? 1e-6 : 1e-4; }
/// Values this small compare absolutely (float32's subnormals carry few digits).
double abs_floor(torch::Dtype d) { return d == torch::kDouble ? 1e-300 : 1e-35; }

std::vector<double> values(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kDouble).contiguous().reshape(-1);
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

std::vector<ld> values_ld(const torch::Tensor& t) {
  const auto v = values(t);
  return {v.begin(), v.end()};
}

/// A reference value and the scale its error is held to: |value| (a relative bound) or, where
/// the value is a difference of terms that can cancel, the sum of their magnitudes.
struct expected {
  ld value;
  ld scale;
  ld floor_factor = 1;  ///< the absolute floor times this (a value divided by a small constant)
};
expected exact(ld v) { return {v, std::fabs(v)}; }

const char* dtype_name(torch::Dtype d) { return d == torch::kDouble ? "float64" : "float32"; }

/// Every element finite and within rel * scale + floor of the reference. Prints the worst
/// relative error (over |reference| above the floor) and the worst error in units of the scale
/// (err / (scale + floor / rel): the relative error where the bound is relative).
void require_close(const torch::Tensor& got, const std::vector<expected>& want, torch::Dtype d,
                   const std::string& what,
                   const std::function<std::string(std::size_t)>& label = {}) {
  const auto g = values(got);
  REQUIRE(g.size() == want.size());
  double worst_rel = 0, worst_of_bound = 0;
  std::size_t at_rel = 0, at_bound = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double r = static_cast<double>(want[i].value), scale = static_cast<double>(want[i].scale);
    const double err = std::abs(g[i] - r);
    const double bound =
        rel_tol(d) * scale + abs_floor(d) * static_cast<double>(want[i].floor_factor);
    INFO(what << " " << dtype_name(d) << " [" << i << "] " << (label ? label(i) : std::string())
              << ": got " << g[i] << ", reference " << r << ", scale " << scale);
    REQUIRE(std::isfinite(g[i]));
    CHECK(err <= bound);
    if (std::abs(r) > abs_floor(d) && err / std::abs(r) > worst_rel) {
      worst_rel = err / std::abs(r);
      at_rel = i;
    }
    if (err / bound > worst_of_bound) {
      worst_of_bound = err / bound;
      at_bound = i;
    }
  }
  std::printf("accuracy %-40s %s: worst rel err %.2e%s, worst err/scale %.2e%s (%zu values)\n",
              what.c_str(), dtype_name(d), worst_rel, label ? (" at " + label(at_rel)).c_str() : "",
              worst_of_bound * rel_tol(d), label ? (" at " + label(at_bound)).c_str() : "",
              g.size());
}

void require_close(const torch::Tensor& got, const torch::Tensor& want, double rel,
                   const char* what) {
  const auto g = values(got), w = values(want);
  REQUIRE(g.size() == w.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    INFO(what << "[" << i << "]: got " << g[i] << ", want " << w[i]);
    CHECK(std::abs(g[i] - w[i]) <= rel * std::abs(w[i]) + 1e-12);
  }
}

torch::Tensor leaf(const std::vector<double>& v, torch::Dtype d) {
  return torch::tensor(v, torch::kDouble).to(d).requires_grad_(true);
}

/// Runs body(path) on both paths: "simd" (the vectorised loops, where this CPU has them) and
/// "portable" (ATen ops, as on other devices).
void for_each_path(const std::function<void(const std::string&)>& body) {
  body(losslens::hooks::detail::simd::available() ? "simd" : "portable(no AVX2)");
  losslens::hooks::detail::portable_kernels_scope portable;
  body("portable");
}

/// Central finite differences of a scalar function of x (float64), against autograd.
void require_gradient_matches_fd(const std::function<torch::Tensor(const torch::Tensor&)>& f,
                                 torch::Tensor x, double rel = 1e-6) {
  x = x.to(torch::kDouble).detach().requires_grad_(true);
  f(x).backward();
  const auto g = values(x.grad());
  auto flat = x.detach().clone().reshape(-1);
  for (std::int64_t i = 0; i < flat.numel(); ++i) {
    const double h = 1e-6 * std::max(1.0, std::abs(flat[i].item<double>()));
    auto xp = flat.clone(), xm = flat.clone();
    xp[i] += h;
    xm[i] -= h;
    const double fd =
        (f(xp.view(x.sizes())).item<double>() - f(xm.view(x.sizes())).item<double>()) / (2 * h);
    INFO("element " << i << ": autograd " << g[static_cast<std::size_t>(i)]
                    << ", finite difference " << fd);
    CHECK(std::abs(g[static_cast<std::size_t>(i)] - fd) <= rel * std::abs(fd) + 1e-7);
  }
}

// ---- the grid ------------------------------------------------------------------------------

/// Logits of the grid: 0, +-1e-8, +-1, +-20, +-30, +-88, +-100, +-1e3, +-1e4.
const std::vector<double> grid = {0,  1e-8, -1e-8, 1,    -1,  20,   -20, 30,  -30,
                                  88, -88,  100,   -100, 1e3, -1e3, 1e4, -1e4};

/// Every value of xs paired with every value of ys: (x, y) flattened into two vectors.
std::pair<std::vector<double>, std::vector<double>> all_pairs(const std::vector<double>& xs,
                                                              const std::vector<double>& ys) {
  std::pair<std::vector<double>, std::vector<double>> out;
  for (double x : xs)
    for (double y : ys) {
      out.first.push_back(x);
      out.second.push_back(y);
    }
  return out;
}

std::string show(const std::vector<double>& v) {
  std::ostringstream s;
  s << "[";
  for (std::size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

/// Rows of three logits: every triple of grid values (so every position of every value), and
/// near ties around +-1e4 and 1e3 (offsets of 0, one float32 ulp, 0.5, 1 and 3).
std::vector<std::vector<double>> class_rows() {
  std::vector<std::vector<double>> rows;
  for (double a : grid)
    for (double b : grid)
      for (double c : grid) rows.push_back({a, b, c});
  for (double base : {1e4, -1e4, 1e3}) {
    const double ulp =
        std::nextafter(static_cast<float>(base), INFINITY) - static_cast<float>(base);
    const std::vector<double> offsets = {0, ulp, -ulp, -0.5, -1, -3};
    for (double a : offsets)
      for (double b : offsets)
        for (double c : offsets) rows.push_back({base + a, base + b, base + c});
  }
  return rows;
}

struct class_batch {
  torch::Tensor x;                    // [R, 3] leaf in the dtype
  torch::Tensor y;                    // [R] int64
  std::vector<std::vector<ld>> rows;  // the logits as stored (after rounding to the dtype)
  std::vector<std::int64_t> labels;
};

/// Every row with each of the three targets.
class_batch make_class_batch(torch::Dtype dtype) {
  const auto rows = class_rows();
  std::vector<double> flat;
  class_batch b;
  for (const auto& r : rows)
    for (std::int64_t t = 0; t < 3; ++t) {
      flat.insert(flat.end(), r.begin(), r.end());
      b.labels.push_back(t);
    }
  b.x = leaf(flat, dtype).view({-1, 3});
  b.x.retain_grad();
  b.y = torch::tensor(b.labels, torch::kLong);
  const auto stored = values(b.x);
  for (std::size_t i = 0; i < b.labels.size(); ++i)
    b.rows.push_back({stored.begin() + 3 * i, stored.begin() + 3 * i + 3});
  return b;
}

std::function<std::string(std::size_t)> row_label(const class_batch& b, std::size_t per_row) {
  return [&b, per_row](std::size_t i) {
    const auto r = i / per_row;
    std::vector<double> v(b.rows[r].begin(), b.rows[r].end());
    return show(v) + " y=" + std::to_string(b.labels[r]) +
           (per_row > 1 ? " d/dx" + std::to_string(i % per_row) : "");
  };
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("safe_log, safe_div and safe_sqrt: exact where ordinary, finite gradients at 0") {
  auto x = torch::tensor({0.0, 1e-300, 1e-12, 4.0, -1.0}, torch::kDouble).requires_grad_(true);
  auto y = safe_sqrt(x);
  auto v = values(y);
  CHECK(v[0] == 0.0);
  CHECK(v[1] == Approx(1e-300 / 1e-6).margin(1e-300));  // linear below eps
  CHECK(v[2] == Approx(1e-6));                          // continuous at eps
  CHECK(v[3] == 2.0);
  CHECK(v[4] == 0.0);
  y.sum().backward();
  auto g = values(x.grad());
  CHECK(g[0] == Approx(1e6));  // 1 / sqrt(eps), not Inf
  CHECK(g[3] == Approx(0.25));
  CHECK(g[4] == 0.0);
  for (double gi : g) CHECK(std::isfinite(gi));

  // Double backward through safe_sqrt works (used by gradient penalties).
  auto z = torch::tensor({0.0, 9.0}, torch::kDouble).requires_grad_(true);
  auto dz = torch::autograd::grad({safe_sqrt(z).sum()}, {z}, {}, true, true)[0];
  auto d2 = torch::autograd::grad({dz.sum()}, {z})[0];
  CHECK(values(d2)[1] == Approx(-0.25 / 27.0));  // d2/dx2 sqrt(x) = -1/4 x^-3/2
  CHECK(std::isfinite(values(d2)[0]));

  auto p = torch::tensor({0.0, 1e-30, 0.5}, torch::kFloat).requires_grad_(true);
  auto lp = safe_log(p);
  CHECK(values(lp)[0] == Approx(std::log(1e-12)));
  CHECK(values(lp)[2] == Approx(std::log(0.5)));
  lp.sum().backward();
  CHECK(values(p.grad())[0] == 0.0);
  CHECK(values(p.grad())[2] == Approx(2.0));

  auto num = torch::tensor({1.0, 1.0, 1.0, 6.0}, torch::kDouble);
  auto den = torch::tensor({0.0, -0.0, -1e-20, 3.0}, torch::kDouble);
  auto q = values(safe_div(num, den));
  CHECK(q[0] == Approx(1e12));
  CHECK(q[2] == Approx(-1e12));
  CHECK(q[3] == 2.0);
}

TEST_CASE(
    "binary_cross_entropy_with_logits: long double reference on the grid, soft targets, "
    "pos_weight") {
  const auto [xs, ys] = all_pairs(grid, {0.0, 1.0, 0.3, 0.5});
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (double pw : {1.0, 3.0}) {
      for_each_path([&](const std::string& path) {
        auto x = leaf(xs, dtype);
        auto y = torch::tensor(ys, torch::kDouble).to(dtype);
        bce_options o;
        o.pos_weight = torch::tensor({pw}, dtype);
        o.reduction = loss_reduction::none;
        auto l = losslens::binary_cross_entropy_with_logits(x, y, o);
        l.sum().backward();
        std::vector<expected> ref_l, ref_g;
        const auto xv = values_ld(x), yv = values_ld(y);
        for (std::size_t i = 0; i < xs.size(); ++i) {
          const ld xi = xv[i], yi = yv[i];
          ref_l.push_back(exact(pw * yi * softplus_ld(-xi) + (1 - yi) * softplus_ld(xi)));
          // sigma(x) - y cancels for soft targets near x = logit(y): an absolute bound there.
          const ld neg = pw * yi * sigmoid_ld(-xi), pos = (1 - yi) * sigmoid_ld(xi);
          ref_g.push_back({pos - neg, pos + neg});
        }
        auto label = [&](std::size_t i) {
          return "x=" + std::to_string(xs[i]) + " y=" + std::to_string(ys[i]);
        };
        const std::string what =
            "bce_with_logits pw=" + std::to_string(static_cast<int>(pw)) + " " + path;
        require_close(l, ref_l, dtype, what + " loss", label);
        require_close(x.grad(), ref_g, dtype, what + " grad", label);
      });
    }
  }
  // The cancellation point: x = +-1e-8, y = 0.5 gives sigma(x) - y = +-2.5e-9. The sum
  // 0.5 sigma(x) - 0.5 sigma(-x) is accurate only to ~eps in absolute terms (LibTorch is the
  // same), which is the documented bound.
  auto x = torch::tensor({1e-8, -1e-8}, torch::kDouble).requires_grad_(true);
  losslens::binary_cross_entropy_with_logits(x, torch::full({2}, 0.5, torch::kDouble),
                                             {.reduction = loss_reduction::sum})
      .backward();
  CHECK(std::abs(values(x.grad())[0] - 2.5e-9) <= 1e-6 * 1.0);
}

TEST_CASE(
    "binary_cross_entropy_with_logits matches LibTorch: reductions, pos_weight, weight, target "
    "gradient") {
  torch::manual_seed(4);
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for_each_path([&](const std::string& path) {
      INFO(dtype_name(dtype) << " " << path);
      auto x = (4 * torch::randn({6, 5}, dtype)).requires_grad_(true);
      auto y = torch::rand({6, 5}, dtype).requires_grad_(true);
      auto pw = torch::rand({5}, dtype) + 0.5;
      auto w = torch::rand({6, 1}, dtype);
      for (auto red : {loss_reduction::mean, loss_reduction::sum, loss_reduction::none}) {
        auto fo = F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(pw).weight(w);
        if (red == loss_reduction::sum) fo.reduction(torch::kSum);
        if (red == loss_reduction::none) fo.reduction(torch::kNone);
        auto ours = losslens::binary_cross_entropy_with_logits(
            x, y, {.pos_weight = pw, .weight = w, .reduction = red});
        auto theirs = F::binary_cross_entropy_with_logits(x, y, fo);
        require_close(ours, theirs, rel_tol(dtype), "value");
        auto ga = torch::autograd::grad({ours.sum()}, {x, y});
        auto gb = torch::autograd::grad({theirs.sum()}, {x, y});
        require_close(ga[0], gb[0], 10 * rel_tol(dtype), "d/dlogits");
        require_close(ga[1], gb[1], 10 * rel_tol(dtype), "d/dtarget");
      }
      // Second derivative (create_graph): the Hessian-vector product of LibTorch's.
      auto v = torch::randn({6, 5}, dtype);
      auto ours = losslens::binary_cross_entropy_with_logits(x, y, {.pos_weight = pw});
      auto theirs = F::binary_cross_entropy_with_logits(
          x, y, F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(pw));
      auto ha = torch::autograd::grad(
          {(torch::autograd::grad({ours}, {x}, {}, true, true)[0] * v).sum()}, {x})[0];
      auto hb = torch::autograd::grad(
          {(torch::autograd::grad({theirs}, {x}, {}, true, true)[0] * v).sum()}, {x})[0];
      require_close(ha, hb, 10 * rel_tol(dtype), "hessian-vector");
    });
  }
}

TEST_CASE(
    "binary_cross_entropy on probabilities: the eps clamp is exact in float32, LibTorch inside") {
  const double eps = 1e-7;
  // The clamp edges: 0, eps, 1 - eps as float32 rounds it (1 - 1.19e-7), the largest float32
  // below 1, 1; tiny p where log1p(-p) matters; ordinary values.
  const std::vector<double> ps = {0.0,
                                  1e-9,
                                  1e-7,
                                  2e-7,
                                  1e-3,
                                  0.2,
                                  0.5,
                                  0.7,
                                  1 - 1.1920928955078125e-7,
                                  1 - 5.9604644775390625e-08,
                                  1.0};
  const auto [pv, yv] = all_pairs(ps, {0.0, 1.0, 0.25});
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto p = leaf(pv, dtype);
    auto y = torch::tensor(yv, torch::kDouble).to(dtype);
    auto l = losslens::binary_cross_entropy(p, y, {.reduction = loss_reduction::none, .eps = eps});
    l.sum().backward();
    const auto pr = values_ld(p);
    const ld e = static_cast<ld>(static_cast<double>(torch::tensor(eps, dtype).item<double>()));
    std::vector<expected> ref_l, ref_g;
    for (std::size_t i = 0; i < pv.size(); ++i) {
      // log(1 - p): log1p below 1/2, where 1 - p would round; exactly 1 - p above.
      const ld pi = pr[i], yi = yv[i], qi = 1 - pi;
      const ld log_q = pi < 0.5 ? std::log1p(-pi) : std::log(std::max(qi, e));
      ref_l.push_back(exact(-yi * std::log(std::max(pi, e)) - (1 - yi) * log_q));
      // The clamps pass the gradient where p >= eps and 1 - p >= eps (as ATen's clamp_min).
      const ld g = (pi >= e ? -yi / pi : 0) + (qi >= e ? (1 - yi) / qi : 0);
      ref_g.push_back({g, (pi >= e ? yi / pi : 0) + (qi >= e ? (1 - yi) / qi : 0)});
    }
    auto label = [&](std::size_t i) {
      return "p=" + std::to_string(pv[i]) + " y=" + std::to_string(yv[i]);
    };
    require_close(l, ref_l, dtype, "binary_cross_entropy (probs) loss", label);
    require_close(p.grad(), ref_g, dtype, "binary_cross_entropy (probs) grad", label);
  }
  // p = 1, y = 0 in float32: exactly -log(1e-7) = 16.118, not 15.942 (log of 1.19e-7).
  auto l32 = losslens::binary_cross_entropy(torch::tensor({1.0f}), torch::tensor({0.0f}));
  CHECK(l32.item<double>() == Approx(-std::log(1e-7)).epsilon(1e-6));
  auto inner = torch::tensor({0.1, 0.5, 0.9}, torch::kDouble);
  auto t = torch::tensor({1.0, 0.0, 0.25}, torch::kDouble);
  require_close(losslens::binary_cross_entropy(inner, t), F::binary_cross_entropy(inner, t), 1e-12,
                "vs LibTorch");
}

TEST_CASE("cross_entropy matches LibTorch with class weights, ignore_index and label smoothing") {
  torch::manual_seed(1);
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for_each_path([&](const std::string& path) {
      INFO(dtype_name(dtype) << " " << path);
      for (const auto& shape : std::vector<std::vector<std::int64_t>>{{7, 4}, {2, 4, 3, 5}}) {
        auto logits = (3 * torch::randn(shape, dtype)).requires_grad_(true);
        std::vector<std::int64_t> tshape = shape;
        tshape.erase(tshape.begin() + 1);
        auto target = torch::randint(0, 4, tshape, torch::kLong);
        target.view(-1)[0] = -100;  // ignored
        target.view(-1)[2] = 7;     // ignore_index below
        auto weight = torch::tensor({0.5, 2.0, 1.0, 3.0}, dtype);
        for (double eps : {0.0, 0.1}) {
          cross_entropy_options o{.weight = weight, .ignore_index = 7, .label_smoothing = eps};
          auto t = target.masked_fill(target == -100, 1);  // only one ignore_index at a time
          auto ours = losslens::cross_entropy(logits, t, o);
          auto ga = torch::autograd::grad({ours}, {logits})[0];
          auto theirs = F::cross_entropy(
              logits, t,
              F::CrossEntropyFuncOptions().weight(weight).ignore_index(7).label_smoothing(eps));
          auto gb = torch::autograd::grad({theirs}, {logits})[0];
          require_close(ours, theirs, rel_tol(dtype), "loss");
          require_close(ga, gb, 10 * rel_tol(dtype), "grad");
          for (auto red : {loss_reduction::sum, loss_reduction::none}) {
            o.reduction = red;
            auto fo =
                F::CrossEntropyFuncOptions().weight(weight).ignore_index(7).label_smoothing(eps);
            if (red == loss_reduction::sum)
              fo.reduction(torch::kSum);
            else
              fo.reduction(torch::kNone);
            auto theirs_r = F::cross_entropy(logits, t, fo);
            auto ours_r = losslens::cross_entropy(logits, t, o);
            require_close(ours_r, theirs_r, rel_tol(dtype), "reduced");
            auto gr = torch::autograd::grad({ours_r.sum()}, {logits})[0];
            require_close(gr, torch::autograd::grad({theirs_r.sum()}, {logits})[0],
                          10 * rel_tol(dtype), "reduced grad");
          }
        }
        // Second derivative (create_graph): the Hessian-vector product of LibTorch's.
        auto v = torch::randn(shape, dtype);
        cross_entropy_options o{.weight = weight, .label_smoothing = 0.1};
        auto t = target.masked_fill((target == -100) | (target == 7), 2);
        auto ours = losslens::cross_entropy(logits, t, o);
        auto theirs = F::cross_entropy(
            logits, t, F::CrossEntropyFuncOptions().weight(weight).label_smoothing(0.1));
        auto ha = torch::autograd::grad(
            {(torch::autograd::grad({ours}, {logits}, {}, true, true)[0] * v).sum()}, {logits})[0];
        auto hb = torch::autograd::grad(
            {(torch::autograd::grad({theirs}, {logits}, {}, true, true)[0] * v).sum()},
            {logits})[0];
        require_close(ha, hb, 10 * rel_tol(dtype), "hessian-vector");
      }
      // A target outside [0, C) that is not ignore_index is named (CPU).
      if (path != "portable") {
        try {
          losslens::cross_entropy(torch::randn({2, 3}, dtype), torch::tensor({0L, 3L}));
          FAIL("no exception");
        } catch (const losslens::error& e) {
          CHECK(std::string(e.what()).find("target 3 at row 1 is outside [0, 3)") !=
                std::string::npos);
        }
      }
    });
  }
}

TEST_CASE(
    "cross_entropy on the grid and near ties at 1e4: long double reference, loss and gradient") {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (double eps : {0.0, 0.2}) {
      for (bool weighted : {false, true}) {
        for_each_path([&](const std::string& path) {
          auto b = make_class_batch(dtype);
          const std::vector<double> w =
              weighted ? std::vector<double>{0.2, 1.0, 3.5} : std::vector<double>{1, 1, 1};
          cross_entropy_options o{.label_smoothing = eps, .reduction = loss_reduction::none};
          if (weighted) o.weight = torch::tensor(w, dtype);
          auto l = losslens::cross_entropy(b.x, b.y, o);
          l.sum().backward();
          const ld W = w[0] + w[1] + w[2];
          std::vector<expected> ref_l, ref_g;
          for (std::size_t r = 0; r < b.rows.size(); ++r) {
            const softmax_ld s(b.rows[r]);
            const auto y = static_cast<std::size_t>(b.labels[r]);
            const ld a = (1 - eps) * w[y], bb = eps / 3;
            ld smooth = 0;
            for (std::size_t c = 0; c < 3; ++c) smooth += w[c] * s.nll[c];
            ref_l.push_back(exact(a * s.nll[y] + bb * smooth));
            for (std::size_t k = 0; k < 3; ++k) {
              // d/dx_k = a (p_k - [k = y]) + b (W p_k - w_k), with p_y - 1 = -(1 - p_y).
              const ld main = k == y ? -a * s.q[k] : a * s.p[k];
              ref_g.push_back(
                  {main + bb * (W * s.p[k] - w[k]), std::fabs(main) + bb * (W * s.p[k] + w[k])});
            }
          }
          const std::string what = std::string("cross_entropy") + (eps > 0 ? " ls=0.2" : "") +
                                   (weighted ? " w" : "") + " " + path;
          require_close(l, ref_l, dtype, what + " loss", row_label(b, 1));
          require_close(b.x.grad(), ref_g, dtype, what + " grad", row_label(b, 3));
        });
      }
    }
  }
  // The rows in float32 (exact values from long double).
  auto x = torch::tensor({{1e4f, 1e4f, 1e4f}, {-1e4f, -10000.5f, -1e4f}, {1e4f, 9999.5f, -1e4f}})
               .requires_grad_(true);
  auto l =
      losslens::cross_entropy(x, torch::tensor({0L, 0L, 2L}), {.reduction = loss_reduction::none});
  l.sum().backward();
  CHECK(values(l)[0] == Approx(std::log(3.0)).epsilon(1e-6));    // LibTorch-free: 1.098612
  CHECK(values(l)[1] == Approx(0.958019).epsilon(1e-5));         // was 0.957746
  CHECK(values(x.grad())[7] == Approx(0.377541).epsilon(1e-5));  // d/dx1 of row 2, was 0.377708
  // Row {20, 0, 0}: -log p = 4.1e-9, which log_softmax in float32 rounds to 0.
  auto l32 = losslens::cross_entropy(torch::tensor({{20.f, 0.f, 0.f}}), torch::tensor({0L}));
  CHECK(l32.item<double>() == Approx(2 * std::exp(-20.0)).epsilon(1e-5));
}

TEST_CASE(
    "focal_loss (multi-class) on the grid and near ties: long double reference, equals CE at gamma "
    "0") {
  const std::vector<double> class_alpha = {0.5, 1.0, 2.0};
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (double gamma : {0.0, 0.5, 2.0, 5.0}) {
      for_each_path([&](const std::string& path) {
        auto b = make_class_batch(dtype);
        focal_options o{.gamma = gamma,
                        .class_alpha = torch::tensor(class_alpha, dtype),
                        .reduction = loss_reduction::none};
        auto l = losslens::focal_loss(b.x, b.y, o);
        l.sum().backward();
        std::vector<expected> ref_l, ref_g;
        for (std::size_t r = 0; r < b.rows.size(); ++r) {
          const softmax_ld s(b.rows[r]);
          const auto y = static_cast<std::size_t>(b.labels[r]);
          const ld a = class_alpha[y], p = s.p[y], q = s.q[y], nll = s.nll[y];
          // l = -a (1 - p)^gamma log p; dl/dx_y = -a q^gamma (q + gamma p nll),
          // dl/dx_k = a p_k q^(gamma - 1) (q + gamma p nll) for k != y (0 once q underflows).
          const ld qg = gamma == 0 ? 1 : std::pow(q, static_cast<ld>(gamma));
          ref_l.push_back(exact(a * qg * nll));
          for (std::size_t k = 0; k < 3; ++k)
            ref_g.push_back(
                exact(k == y ? -a * qg * (q + gamma * p * nll)
                             : (q > 0 ? a * (s.p[k] / q) * qg * (q + gamma * p * nll) : 0)));
        }
        const std::string what =
            "focal_loss gamma=" + std::to_string(gamma).substr(0, 3) + " " + path;
        require_close(l, ref_l, dtype, what + " loss", row_label(b, 1));
        require_close(b.x.grad(), ref_g, dtype, what + " grad", row_label(b, 3));
      });
    }
  }
  auto x = torch::randn({9, 5}, torch::kDouble);
  auto y = torch::randint(0, 5, {9}, torch::kLong);
  require_close(losslens::focal_loss(x, y, {.gamma = 0}), F::cross_entropy(x, y), 1e-12, "gamma 0");
  // The row: gamma 5 on [-1e4, -10000.5, -1e4], y = 0, float32.
  auto l = losslens::focal_loss(torch::tensor({{-1e4f, -10000.5f, -1e4f}}), torch::tensor({0L}),
                                {.gamma = 5, .alpha = -1});
  const softmax_ld s({-1e4L, -10000.5L, -1e4L});
  CHECK(l.item<double>() ==
        Approx(static_cast<double>(std::pow(s.q[0], 5.0L) * s.nll[0])).epsilon(1e-5));
}

TEST_CASE("binary_focal_loss: gamma 0 is weighted BCE, analytic loss and gradient on the grid") {
  const auto [xs, ys] = all_pairs(grid, {0.0, 1.0, 0.8});
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (double gamma : {0.0, 0.5, 2.0}) {
      const double alpha = 0.25;
      auto x = leaf(xs, dtype);
      auto y = torch::tensor(ys, torch::kDouble).to(dtype);
      auto l = losslens::binary_focal_loss(
          x, y, {.gamma = gamma, .alpha = alpha, .reduction = loss_reduction::none});
      l.sum().backward();
      std::vector<expected> ref_l, ref_g;
      const auto xv = values_ld(x);
      for (std::size_t i = 0; i < xs.size(); ++i) {
        const ld xi = xv[i], yi = ys[i], p = sigmoid_ld(xi), q = sigmoid_ld(-xi);
        const ld log_p = -softplus_ld(-xi), log_q = -softplus_ld(xi);
        ref_l.push_back(exact(-alpha * yi * std::pow(q, (ld)gamma) * log_p -
                              (1 - alpha) * (1 - yi) * std::pow(p, (ld)gamma) * log_q));
        const ld g_pos = alpha * std::pow(q, (ld)gamma) * (gamma * p * log_p - q);
        const ld g_neg = -(1 - alpha) * std::pow(p, (ld)gamma) * (gamma * q * log_q - p);
        // Soft targets mix a negative and a positive term: bounded by their magnitudes.
        ref_g.push_back(
            {yi * g_pos + (1 - yi) * g_neg, std::fabs(yi * g_pos) + std::fabs((1 - yi) * g_neg)});
      }
      auto label = [&](std::size_t i) {
        return "x=" + std::to_string(xs[i]) + " y=" + std::to_string(ys[i]);
      };
      const std::string what = "binary_focal_loss gamma=" + std::to_string(gamma).substr(0, 3);
      require_close(l, ref_l, dtype, what + " loss", label);
      require_close(x.grad(), ref_g, dtype, what + " grad", label);
    }
  }
  // gamma = 0, alpha off: plain BCE with logits.
  auto x = torch::randn({50}, torch::kDouble) * 4;
  auto y = (torch::rand({50}, torch::kDouble) > 0.5).to(torch::kDouble);
  require_close(losslens::binary_focal_loss(x, y, {.gamma = 0, .alpha = -1}),
                F::binary_cross_entropy_with_logits(x, y), 1e-12, "gamma 0");
}

TEST_CASE("class weight helpers: inverse frequency, effective number (Cui et al.) and pos_weight") {
  const std::vector<std::int64_t> counts = {1000, 100, 50};
  auto inv = inverse_frequency_weights(counts);
  CHECK(inv[0] == Approx(3.0 / 31));  // 1 : 10 : 20, normalised to sum 3
  CHECK(inv[1] == Approx(30.0 / 31));
  CHECK(inv[2] == Approx(60.0 / 31));

  for (double beta : {0.9, 0.999, 0.9999}) {
    auto w = effective_number_weights(counts, beta);
    std::vector<ld> raw;
    ld sum = 0;
    for (auto n : counts) {
      raw.push_back((1 - (ld)beta) / (1 - std::pow((ld)beta, (ld)n)));
      sum += raw.back();
    }
    double total = 0;
    for (std::size_t c = 0; c < counts.size(); ++c) {
      CHECK(w[c] == Approx(static_cast<double>(raw[c] * 3 / sum)).epsilon(1e-12));
      total += w[c];
    }
    CHECK(total == Approx(3.0));
  }
  // beta = 0.999, counts 1000/100/50: 0.1457, 0.9673, 1.887 (rarest class gets ~13x the majority).
  auto w = effective_number_weights(counts, 0.999);
  CHECK(w[0] == Approx(0.1457).epsilon(1e-3));
  CHECK(w[2] == Approx(1.887).epsilon(1e-3));
  auto equal = effective_number_weights(counts, 0.0);
  CHECK(equal == std::vector<double>{1.0, 1.0, 1.0});
  // Absent classes get weight 0; the rest still sums to C.
  auto absent = inverse_frequency_weights({10, 0, 10});
  CHECK(absent == std::vector<double>{1.5, 0.0, 1.5});

  CHECK(pos_weight_for(950, 50) == 19.0);
  CHECK_THROWS_AS(pos_weight_for(950, 0), losslens::error);
  CHECK_THROWS_AS(effective_number_weights(counts, 1.0), losslens::error);
  CHECK(class_counts(torch::tensor({0L, 2L, 2L, -100L, 5L}), 3) ==
        std::vector<std::int64_t>{1, 0, 2});
}

TEST_CASE(
    "dice_loss (float masks) on the grid: saturated predictions keep their digits, loss and "
    "gradient") {
  // Samples of six pixels: one grid logit everywhere, or six different ones; masks all 1, all
  // 0, alternating, and soft 0.3.
  std::vector<std::vector<double>> logit_rows, mask_rows;
  const std::vector<std::vector<double>> masks = {
      {1, 1, 1, 1, 1, 1}, {0, 0, 0, 0, 0, 0}, {1, 0, 1, 0, 1, 0}, {0.3, 0.3, 0.3, 0.3, 0.3, 0.3}};
  for (std::size_t i = 0; i < grid.size(); ++i)
    for (const auto& m : masks) {
      logit_rows.push_back(std::vector<double>(6, grid[i]));
      mask_rows.push_back(m);
      std::vector<double> mixed;
      for (std::size_t j = 0; j < 6; ++j) mixed.push_back(grid[(i + 5 * j) % grid.size()]);
      logit_rows.push_back(mixed);
      mask_rows.push_back(m);
    }
  std::vector<double> xs, ts;
  for (std::size_t r = 0; r < logit_rows.size(); ++r) {
    xs.insert(xs.end(), logit_rows[r].begin(), logit_rows[r].end());
    ts.insert(ts.end(), mask_rows[r].begin(), mask_rows[r].end());
  }
  const auto samples = static_cast<std::int64_t>(logit_rows.size());
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (double smooth : {1.0, 0.0}) {
      for (const auto& shape :
           std::vector<std::vector<std::int64_t>>{{samples, 6}, {samples, 1, 2, 3}}) {
        auto x = leaf(xs, dtype).view(shape);
        x.retain_grad();
        auto t = torch::tensor(ts, torch::kDouble).to(dtype).view(shape);
        const double eps = 1e-12;
        auto l = dice_loss(x, t, {.smooth = smooth, .eps = eps, .reduction = loss_reduction::none});
        l.sum().backward();
        const auto xv = values_ld(x), tv = values_ld(t);
        std::vector<expected> ref_l, ref_g;
        for (std::int64_t r = 0; r < samples; ++r) {
          ld sp = 0, st = 0, si = 0, sn = 0;
          for (std::int64_t j = 0; j < 6; ++j) {
            const ld xi = xv[r * 6 + j], ti = tv[r * 6 + j], p = sigmoid_ld(xi),
                     q = sigmoid_ld(-xi);
            sp += p;
            st += ti;
            si += p * ti;
            sn += p * (1 - ti) + ti * q;  // p + t - 2 p t without cancellation
          }
          const ld d = sp + st + smooth, df = std::max(d, static_cast<ld>(eps));
          // Below the eps floor (smooth = 0, sums < eps) the sums are divided by eps: their
          // absolute error near underflow is magnified by 1 / eps.
          const ld floor_factor = d >= eps ? 1 : 1 / static_cast<ld>(eps);
          ref_l.push_back({sn / df, sn / df, floor_factor});
          // dl/dx = p q ((1 - 2t) D - N) / D^2, (1 - 2t) D - N = (1 - t)(2I + s) - t (D + N).
          for (std::int64_t j = 0; j < 6; ++j) {
            const ld xi = xv[r * 6 + j], ti = tv[r * 6 + j], pq = sigmoid_ld(xi) * sigmoid_ld(-xi);
            if (d >= eps) {
              const ld a = (1 - ti) * (2 * si + smooth), b = ti * (d + sn);
              ref_g.push_back({pq * (a - b) / (d * d), pq * (a + b) / (d * d)});
            } else {
              ref_g.push_back(
                  {pq * (1 - 2 * ti) / eps, pq / eps, floor_factor});  // the floor is a constant
            }
          }
        }
        auto sample = [&](std::size_t r) {
          return show(logit_rows[r]) + " mask " + show(mask_rows[r]);
        };
        const std::string what = "dice_loss smooth=" + std::to_string(static_cast<int>(smooth)) +
                                 " " + std::to_string(shape.size()) + "-D";
        require_close(l, ref_l, dtype, what + " loss", sample);
        require_close(x.grad(), ref_g, dtype, what + " grad",
                      [&](std::size_t i) { return sample(i / 6); });
      }
    }
  }
  // The saturated cases: 1 - dice would give 4.30767e-14, 0 and 0.
  auto sat = [](double v, torch::Dtype d) {
    return dice_loss(torch::full({1, 6}, v, d), torch::ones({1, 6}, d)).item<double>();
  };
  const double q30 = std::exp(-30.0) / (1 + std::exp(-30.0));
  CHECK(sat(30, torch::kDouble) == Approx(6 * q30 / (6 * (1 - q30) + 7)).epsilon(1e-12));
  CHECK(sat(88, torch::kDouble) == Approx(6 * std::exp(-88.0) / 13).epsilon(1e-12));
  CHECK(sat(20, torch::kFloat) == Approx(6 * std::exp(-20.0) / 13).epsilon(1e-5));
}

TEST_CASE(
    "dice_loss (multi-class) on the grid and near ties: long double reference, loss and gradient") {
  // Samples of four pixels over three classes, pixels taken from the cross-entropy rows.
  const auto rows = class_rows();
  std::mt19937 rng(5);
  std::vector<double> xs;
  std::vector<std::int64_t> ys;
  const std::int64_t pixels = 4, samples = static_cast<std::int64_t>(rows.size()) / pixels;
  for (std::int64_t s = 0; s < samples; ++s) {
    for (std::int64_t c = 0; c < 3; ++c)
      for (std::int64_t j = 0; j < pixels; ++j)
        xs.push_back(rows[static_cast<std::size_t>(s * pixels + j)][static_cast<std::size_t>(c)]);
    for (std::int64_t j = 0; j < pixels; ++j) ys.push_back(static_cast<std::int64_t>(rng() % 3));
  }
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (double smooth : {1.0, 0.5}) {
      auto x = leaf(xs, dtype).view({samples, 3, pixels});
      x.retain_grad();
      auto y = torch::tensor(ys, torch::kLong).view({samples, pixels});
      auto l = dice_loss(x, y, {.smooth = smooth, .reduction = loss_reduction::none});
      l.sum().backward();
      const auto xv = values_ld(x);
      std::vector<expected> ref_l;
      std::vector<expected> ref_g(xv.size());
      for (std::int64_t s = 0; s < samples; ++s) {
        std::vector<softmax_ld> px;
        for (std::int64_t j = 0; j < pixels; ++j)
          px.emplace_back(std::vector<ld>{xv[(s * 3 + 0) * pixels + j],
                                          xv[(s * 3 + 1) * pixels + j],
                                          xv[(s * 3 + 2) * pixels + j]});
        std::vector<ld> h(3);  // dl_c/dp_c at a pixel with t_c = 0 (h0) and t_c = 1 (h1), per class
        std::vector<ld> h0(3), h1(3);
        for (std::size_t c = 0; c < 3; ++c) {
          ld sp = 0, st = 0, si = 0, sn = 0;
          for (std::int64_t j = 0; j < pixels; ++j) {
            const bool t =
                ys[static_cast<std::size_t>(s * pixels + j)] == static_cast<std::int64_t>(c);
            const auto& sm = px[static_cast<std::size_t>(j)];
            sp += sm.p[c];
            st += t;
            si += t ? sm.p[c] : 0;
            sn += t ? sm.q[c] : sm.p[c];
          }
          const ld d = sp + st + smooth;
          ref_l.push_back(exact(sn / d));
          h0[c] = (2 * si + smooth) / (d * d);  // (1 - 2t) D - N over D^2 with t = 0
          h1[c] = -(d + sn) / (d * d);          // ... and with t = 1
        }
        for (std::int64_t j = 0; j < pixels; ++j) {
          const auto& sm = px[static_cast<std::size_t>(j)];
          const auto yj = static_cast<std::size_t>(ys[static_cast<std::size_t>(s * pixels + j)]);
          for (std::size_t c = 0; c < 3; ++c) h[c] = c == yj ? h1[c] : h0[c];
          // dl/dx_k = sum_c h_c p_c ([c = k] - p_k) = h_k p_k (1 - p_k) - p_k sum_{c != k} h_c p_c.
          for (std::size_t k = 0; k < 3; ++k) {
            ld others = 0, others_abs = 0;
            for (std::size_t c = 0; c < 3; ++c)
              if (c != k) {
                others += h[c] * sm.p[c];
                others_abs += std::fabs(h[c]) * sm.p[c];
              }
            ref_g[static_cast<std::size_t>((s * 3 + static_cast<std::int64_t>(k)) * pixels + j)] = {
                h[k] * sm.p[k] * sm.q[k] - sm.p[k] * others,
                sm.p[k] * (std::fabs(h[k]) * sm.q[k] + others_abs)};
          }
        }
      }
      auto pixel = [&](std::size_t i) {
        const auto s = static_cast<std::int64_t>(i) / (3 * pixels),
                   j = static_cast<std::int64_t>(i) % pixels;
        std::vector<double> v;
        for (std::int64_t c = 0; c < 3; ++c)
          v.push_back(xs[static_cast<std::size_t>((s * 3 + c) * pixels + j)]);
        return "sample " + std::to_string(s) + " pixel " + show(v) +
               " y=" + std::to_string(ys[static_cast<std::size_t>(s * pixels + j)]);
      };
      const std::string what =
          "dice_loss multi-class smooth=" + std::to_string(smooth).substr(0, 3);
      require_close(l, ref_l, dtype, what + " loss", [&](std::size_t i) {
        return "sample " + std::to_string(i / 3) + " class " + std::to_string(i % 3);
      });
      require_close(x.grad(), ref_g, dtype, what + " grad", pixel);
    }
  }
}

TEST_CASE(
    "dice_loss and bce_dice_loss: empty masks, the eps floor, LibTorch-autograd references, double "
    "backward") {
  // Binary masks [N=2, C=1, 2, 2] at saturating logits: p is 0 or 1 exactly.
  auto logits = torch::tensor({1e4, -1e4, 1e4, -1e4, -1e4, -1e4, -1e4, -1e4}, torch::kDouble)
                    .view({2, 1, 2, 2});
  auto mask =
      torch::tensor({1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, torch::kDouble).view({2, 1, 2, 2});
  auto l = dice_loss(logits, mask, {.smooth = 1.0, .reduction = loss_reduction::none});
  auto v = values(l);
  CHECK(v[0] == Approx(1 - (2 * 1 + 1.0) / (2 + 1 + 1.0)));  // sample 0: I=1, P=2, T=1
  CHECK(v[1] == 0.0);                                        // empty mask predicted empty
  // smooth = 0 on an empty mask predicted empty: the eps floor keeps it finite, and the loss is
  // (sum p + sum t - 2 sum p t) / eps = 0.
  auto x = logits.clone().requires_grad_(true);
  auto l0 = dice_loss(x, mask, {.smooth = 0.0, .reduction = loss_reduction::none});
  l0.sum().backward();
  CHECK(values(l0)[1] == 0.0);
  for (double g : values(x.grad())) CHECK(std::isfinite(g));

  // Moderate logits: plain autograd through 1 - dice in float64 is accurate there.
  torch::manual_seed(3);
  auto z = torch::randn({3, 2, 4, 4}, torch::kDouble).requires_grad_(true);
  auto t =
      (torch::rand({3, 2, 4, 4}, torch::kDouble) > 0.6).to(torch::kDouble).requires_grad_(true);
  auto naive = [](const torch::Tensor& a, const torch::Tensor& b) {
    auto p = torch::sigmoid(a);
    return 1 - (2 * (p * b).sum({2, 3}) + 1) / (p.sum({2, 3}) + b.sum({2, 3}) + 1);
  };
  for_each_path([&](const std::string& path) {
    INFO(path);
    auto ours = dice_loss(z, t, {.reduction = loss_reduction::none});
    auto ref = naive(z, t);
    require_close(ours, ref, 1e-12, "dice");
    auto ga = torch::autograd::grad({ours.sum()}, {z, t}, {}, true);
    auto gb = torch::autograd::grad({ref.sum()}, {z, t}, {}, true);
    require_close(ga[0], gb[0], 1e-10, "d/dlogits");
    require_close(ga[1], gb[1], 1e-10, "d/dtarget");
    auto w = torch::randn({3, 2, 4, 4}, torch::kDouble);
    auto ha = torch::autograd::grad(
        {(torch::autograd::grad({ours.sum()}, {z}, {}, true, true)[0] * w).sum()}, {z})[0];
    auto hb = torch::autograd::grad(
        {(torch::autograd::grad({ref.sum()}, {z}, {}, true, true)[0] * w).sum()}, {z})[0];
    require_close(ha, hb, 1e-10, "hessian-vector");
  });
  auto bd = bce_dice_loss(z, t.detach(), {.bce_weight = 0.5, .dice_weight = 2.0});
  auto want =
      0.5 * F::binary_cross_entropy_with_logits(z, t.detach()) + 2.0 * naive(z, t.detach()).mean();
  require_close(bd, want, 1e-12, "bce+dice");

  // Multi-class: softmax over C and one-hot targets, against autograd through the plain formula.
  auto zc = torch::randn({2, 3, 4}, torch::kDouble).requires_grad_(true);
  auto yc = torch::randint(0, 3, {2, 4}, torch::kLong);
  auto pc = torch::softmax(zc, 1);
  auto tc = torch::one_hot(yc, 3).permute({0, 2, 1}).to(torch::kDouble);
  auto refc = 1 - (2 * (pc * tc).sum(2) + 1) / (pc.sum(2) + tc.sum(2) + 1);
  for_each_path([&](const std::string& path) {
    INFO(path);
    auto ours = dice_loss(zc, yc, {.reduction = loss_reduction::none});
    require_close(ours, refc, 1e-12, "multi-class dice");
    auto w = torch::randn({2, 3}, torch::kDouble);
    require_close(torch::autograd::grad({(ours * w).sum()}, {zc})[0],
                  torch::autograd::grad({(refc * w).sum()}, {zc}, {}, true)[0], 1e-10,
                  "multi-class grad");
  });
}

TEST_CASE("smooth_l1 and huber match LibTorch, including differences of 1e4 and beta 0") {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto pred =
        torch::tensor({-1e4, -3.0, -0.5, 0.0, 0.2, 0.99, 1.0, 2.5, 1e4}, torch::kDouble).to(dtype);
    auto target = torch::zeros_like(pred);
    for (double beta : {0.0, 0.5, 1.0, 2.0}) {
      auto a = pred.clone().requires_grad_(true), b = pred.clone().requires_grad_(true);
      auto ours = smooth_l1(a, target, {.beta = beta, .reduction = loss_reduction::sum});
      auto theirs =
          F::smooth_l1_loss(b, target, F::SmoothL1LossFuncOptions().reduction(torch::kSum), beta);
      ours.backward();
      theirs.backward();
      require_close(ours, theirs, rel_tol(dtype), "smooth_l1");
      if (beta == 0) {
        // L1 at d = 0: our subgradient is 0 (as for abs); LibTorch's beta = 0 kernel gives -1.
        CHECK(values(a.grad())[3] == 0.0);
        a.grad()[3] = b.grad()[3];
      }
      require_close(a.grad(), b.grad(), rel_tol(dtype), "smooth_l1 grad");
    }
    for (double delta : {0.5, 1.0, 3.0}) {
      auto a = pred.clone().requires_grad_(true), b = pred.clone().requires_grad_(true);
      auto ours = huber(a, target, {.delta = delta, .reduction = loss_reduction::none});
      auto theirs =
          F::huber_loss(b, target, F::HuberLossFuncOptions().delta(delta).reduction(torch::kNone));
      ours.sum().backward();
      theirs.sum().backward();
      require_close(ours, theirs, rel_tol(dtype), "huber");
      require_close(a.grad(), b.grad(), rel_tol(dtype), "huber grad");
    }
  }
}

TEST_CASE("weighted_mse is normalised by the weight sum, all-zero weights give 0, not NaN") {
  auto pred = torch::tensor({1.0, 2.0, 3.0, 4.0}, torch::kDouble).requires_grad_(true);
  auto target = torch::tensor({0.0, 2.0, 5.0, 4.0}, torch::kDouble);
  auto w = torch::tensor({2.0, 1.0, 0.5, 0.0}, torch::kDouble);
  auto l = weighted_mse(pred, target, w, 0.0);
  CHECK(l.item<double>() == Approx((2 * 1 + 0 + 0.5 * 4 + 0) / 3.5));
  l.backward();
  CHECK(values(pred.grad())[0] == Approx(2 * 2 * 1.0 / 3.5));
  auto zero = torch::zeros({4}, torch::kDouble);
  auto p2 = pred.detach().clone().requires_grad_(true);
  auto l2 = weighted_mse(p2, target, zero);
  l2.backward();
  CHECK(l2.item<double>() == 0.0);
  for (double g : values(p2.grad())) CHECK(std::isfinite(g));
  // Broadcast weight per row [N, 1] over [N, D]; equal weights give the plain MSE.
  auto a = torch::randn({5, 3}, torch::kDouble), b = torch::randn({5, 3}, torch::kDouble);
  require_close(weighted_mse(a, b, torch::ones({5, 1}, torch::kDouble), 0.0), F::mse_loss(a, b),
                1e-12, "mse");
  CHECK_THROWS_AS(weighted_mse(a, b, torch::ones({4}, torch::kDouble)), losslens::error);
}

TEST_CASE("contrastive_loss: Hadsell reference and a finite gradient for identical embeddings") {
  auto a = torch::tensor({{0.0, 0.0}, {3.0, 4.0}, {1.0, 1.0}, {0.5, 0.0}}, torch::kDouble)
               .requires_grad_(true);
  auto b = torch::tensor({{0.0, 0.0}, {0.0, 0.0}, {1.0, 1.0}, {0.0, 0.0}}, torch::kDouble);
  auto same = torch::tensor({1, 1, 0, 0}, torch::kLong);
  auto l = contrastive_loss(a, b, same, {.margin = 2.0, .reduction = loss_reduction::none});
  auto v = values(l);
  CHECK(v[0] == 0.0);
  CHECK(v[1] == Approx(0.5 * 25));         // similar pair at distance 5
  CHECK(v[2] == Approx(0.5 * 4.0));        // dissimilar pair at distance 0: margin^2 / 2
  CHECK(v[3] == Approx(0.5 * 1.5 * 1.5));  // dissimilar at 0.5
  l.sum().backward();
  for (double g : values(a.grad())) CHECK(std::isfinite(g));
  auto x = torch::randn({3, 4}, torch::kDouble);
  auto y = torch::randn({3, 4}, torch::kDouble);
  auto s = torch::tensor({1.0, 0.0, 0.0}, torch::kDouble);
  require_gradient_matches_fd(
      [&](const torch::Tensor& e) { return contrastive_loss(e, y, s, {.margin = 3.0}); }, x);
}

TEST_CASE(
    "cross-entropy with label smoothing and focal loss pass finite-difference gradient checks") {
  torch::manual_seed(5);
  auto x = torch::randn({3, 4}, torch::kDouble) * 2;
  auto y = torch::tensor({0L, 3L, 1L});
  auto w = torch::tensor({1.0, 2.0, 0.5, 1.5}, torch::kDouble);
  require_gradient_matches_fd(
      [&](const torch::Tensor& a) {
        return losslens::cross_entropy(a, y, {.weight = w, .label_smoothing = 0.2});
      },
      x);
  require_gradient_matches_fd(
      [&](const torch::Tensor& a) { return losslens::focal_loss(a, y, {.gamma = 1.5}); }, x);
  auto yb = torch::tensor({1.0, 0.0, 0.3, 1.0}, torch::kDouble);
  require_gradient_matches_fd(
      [&](const torch::Tensor& a) { return losslens::binary_focal_loss(a, yb, {.gamma = 0.5}); },
      torch::tensor({-3.0, 0.0, 0.7, 4.0}, torch::kDouble));
}

TEST_CASE("a wrong shape or dtype throws losslens::error naming what was expected and given") {
  auto logits = torch::randn({4, 3});
  auto require_message = [](const std::function<void()>& f, std::vector<std::string> parts) {
    try {
      f();
      FAIL("no exception");
    } catch (const losslens::error& e) {
      const std::string what = e.what();
      INFO(what);
      for (const auto& p : parts) CHECK(what.find(p) != std::string::npos);
    }
  };
  // Float one-hot targets where class indices belong: the fix is named.
  require_message(
      [&] {
        losslens::cross_entropy(
            logits, torch::one_hot(torch::tensor({0L, 1L, 2L, 0L}), 3).to(torch::kFloat));
      },
      {"cross_entropy", "int64 class indices", "Float [4, 3]", "argmax(1)"});
  require_message(
      [&] {
        losslens::cross_entropy(logits, torch::tensor({0L, 1L}));
      },
      {"[N, d1, ...]", "Long [2]"});
  require_message(
      [&] {
        losslens::cross_entropy(logits, torch::tensor({0.0f, 1.0f, 2.0f, 0.0f}));
      },
      {"integer", "Float [4]"});
  require_message(
      [&] {
        losslens::binary_cross_entropy_with_logits(torch::randn({8}), torch::ones({8, 1}));
      },
      {"shape of logits", "Float [8]", "Float [8, 1]"});
  require_message(
      [&] {
        losslens::binary_cross_entropy_with_logits(torch::randn({8}),
                                                   torch::ones({8}, torch::kLong));
      },
      {"target must be a floating tensor", "Long [8]"});
  require_message(
      [&] {
        losslens::cross_entropy(logits, torch::tensor({0L, 1L, 2L, 0L}),
                                {.weight = torch::ones({4})});
      },
      {"weight", "[3]", "Float [4]"});
  require_message(
      [&] {
        losslens::focal_loss(torch::randn({4, 1}), torch::zeros({4}, torch::kLong));
      },
      {"C >= 2"});
  require_message([&] { smooth_l1(torch::randn({3}), torch::randn({3}), {.beta = -1}); }, {"beta"});
}

TEST_CASE("fixed and uncertainty weighting: totals, weights and learnable log-variances") {
  auto l1 = torch::tensor(2.0, torch::kDouble), l2 = torch::tensor(500.0, torch::kDouble);
  fixed_weighting fixed({1.0, 0.002});
  CHECK(fixed.combine({l1, l2}).item<double>() == Approx(3.0));
  CHECK(fixed.weights() == std::vector<double>{1.0, 0.002});
  CHECK_THROWS_AS(fixed.combine({l1}), losslens::error);
  CHECK_THROWS_AS(fixed_weighting({-1.0}), losslens::error);

  for (bool half : {false, true}) {
    uncertainty_weighting u(
        2, {.half = half, .init_from_first_losses = false, .initial_log_variance = 1.0});
    const double c = half ? 0.5 : 1.0;
    auto total = u.combine({l1, l2});
    CHECK(total.item<double>() == Approx(c * (std::exp(-1.0) * 502 + 2)));
    total.backward();
    auto g = values(u.parameters()[0].grad());
    CHECK(g[0] == Approx(c * (1 - std::exp(-1.0) * 2)));  // d/ds (e^-s L + s) = 1 - e^-s L
    CHECK(g[1] == Approx(c * (1 - std::exp(-1.0) * 500)));
    CHECK(u.weights()[0] == Approx(c * std::exp(-1.0)));
  }

  // The optimum exp(s) = L equalises the weighted losses. From s = 0, Adam on s creeps up
  // (its second moment remembers the first gradient of -500); initialised from the first
  // losses, s starts at the optimum and stays there.
  for (bool init : {false, true}) {
    uncertainty_weighting u(2, {.init_from_first_losses = init});
    torch::optim::Adam opt(u.parameters(), torch::optim::AdamOptions(0.1));
    for (int i = 0; i < 400; ++i) {
      opt.zero_grad();
      u.combine({l1, l2}).backward();
      opt.step();
    }
    auto s = u.log_variances();
    INFO("init_from_first_losses " << init << ": s = [" << s[0] << ", " << s[1] << "]");
    CHECK(s[0] == Approx(std::log(2.0)).margin(0.05));
    if (init) {
      CHECK(s[1] == Approx(std::log(500.0)).margin(0.05));
      CHECK(u.weights()[0] * 2 == Approx(u.weights()[1] * 500).epsilon(0.05));
    } else {
      CHECK(s[1] > 4.5);
      CHECK(s[1] < std::log(500.0));
    }
  }
}

namespace {

struct two_head_netImpl : torch::nn::Module {
  torch::nn::Linear enc{nullptr}, cls{nullptr}, reg{nullptr};
  two_head_netImpl(std::int64_t in, std::int64_t hidden, std::int64_t classes) {
    enc = register_module("enc", torch::nn::Linear(in, hidden));
    cls = register_module("cls", torch::nn::Linear(hidden, classes));
    reg = register_module("reg", torch::nn::Linear(hidden, 1));
  }
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    auto h = torch::relu(enc->forward(x));
    return {cls->forward(h), reg->forward(h).squeeze(1)};
  }
};
TORCH_MODULE(two_head_net);

/// The demo problem: 16 features, 4 noisy classes from one linear map, and a noisy regression
/// target on a raw 0-255 scale from another.
struct multitask_data {
  torch::Tensor x, y_cls, y_reg;
  multitask_data() {
    torch::manual_seed(7);
    x = torch::randn({4096, 16});
    // Label noise and target noise give both tasks a loss floor (neither converges to 0).
    y_cls = (x.matmul(torch::randn({16, 4})) + 2 * torch::randn({4096, 4})).argmax(1);
    auto r = x.matmul(torch::randn({16, 1})).squeeze(1);
    y_reg = (127.5 + 40 * r + 10 * torch::randn({4096})).clamp(0, 255);
  }
};

struct demo_result {
  double reg_share_all = 0, reg_share_last = 0, reg_grad_share = 0;  // regression's shares
  double cls_loss = 0, reg_rmse = 0, accuracy = 0;                   // at the last step
  std::vector<double> weights;
};

/// Trains 200 full-batch Adam steps (lr 0.01 for the network, 0.05 for learnable task weights).
/// Shares are the regression task's: of the weighted loss, w_r L_r / (w_c L_c + w_r L_r),
/// averaged over all steps and over steps 150-199, and of the shared encoder's gradient,
/// ||d(w_r L_r)/dW|| / (||d(w_c L_c)/dW|| + ||d(w_r L_r)/dW||), averaged over all steps.
demo_result train_demo(task_weighting& mtl) {
  multitask_data d;
  torch::manual_seed(11);
  two_head_net net(16, 32, 4);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(net->parameters());
  if (!mtl.parameters().empty())
    groups.emplace_back(mtl.parameters(), std::make_unique<torch::optim::AdamOptions>(0.05));
  torch::optim::Adam opt(std::move(groups), torch::optim::AdamOptions(0.01));
  demo_result r;
  constexpr int steps = 200;
  for (int step = 0; step < steps; ++step) {
    opt.zero_grad();
    auto [logits, pred] = net->forward(d.x);
    auto l_cls = losslens::cross_entropy(logits, d.y_cls);
    auto l_reg = weighted_mse(pred, d.y_reg, torch::ones({1}));
    auto total = mtl.combine({l_cls, l_reg});
    const auto w = mtl.weights();
    const double a = w[0] * l_cls.item<double>(), b = w[1] * l_reg.item<double>();
    auto g_cls =
        torch::autograd::grad({l_cls}, {net->enc->weight}, {}, true)[0].norm().item<double>() *
        w[0];
    auto g_reg =
        torch::autograd::grad({l_reg}, {net->enc->weight}, {}, true)[0].norm().item<double>() *
        w[1];
    r.reg_share_all += b / (a + b) / steps;
    if (step >= 150) r.reg_share_last += b / (a + b) / 50;
    r.reg_grad_share += g_reg / (g_cls + g_reg) / steps;
    total.backward();
    opt.step();
    r.cls_loss = l_cls.item<double>();
    r.reg_rmse = std::sqrt(l_reg.item<double>());
    r.accuracy = (logits.argmax(1) == d.y_cls).to(torch::kDouble).mean().item<double>();
  }
  r.weights = mtl.weights();
  return r;
}

}  // namespace

TEST_CASE(
    "multi-task demo: raw 0-255 regression dominates unweighted, uncertainty weighting balances") {
  fixed_weighting equal({1.0, 1.0});
  uncertainty_weighting uw(2);                                      // s_i = log L_i(0)
  uncertainty_weighting uw0(2, {.init_from_first_losses = false});  // s_i = 0
  const auto a = train_demo(equal);
  const auto b = train_demo(uw);
  const auto c = train_demo(uw0);
  auto line = [](const char* name, const demo_result& r) {
    std::printf(
        "  %-22s reg loss share %.4f (all) %.4f (last 50), reg grad share %.4f | cls CE %.4f, "
        "acc %.3f, reg RMSE %.1f | weights [%.4g, %.4g]\n",
        name, r.reg_share_all, r.reg_share_last, r.reg_grad_share, r.cls_loss, r.accuracy,
        r.reg_rmse, r.weights[0], r.weights[1]);
  };
  std::printf(
      "multi-task demo (shared Linear(16, 32) encoder, 4-class head + regression head on 0-255 "
      "targets, "
      "200 full-batch Adam steps):\n");
  line("unweighted", a);
  line("uncertainty (default)", b);
  line("uncertainty (s = 0)", c);
  CHECK(a.reg_share_all > 0.99);   // the regression task owns the total ...
  CHECK(a.reg_grad_share > 0.95);  // ... and the shared encoder's gradient
  CHECK(b.reg_share_all < 0.6);    // weighted shares become comparable (~0.5)
  CHECK(b.reg_grad_share < 0.75);
  CHECK(b.accuracy > a.accuracy + 0.05);      // and the classification task learns
  CHECK(b.weights[1] < 0.01 * b.weights[0]);  // the learned weight offsets the 0-255 scale
}

TEST_CASE("GradNorm balances the weighted gradient norms of two tasks on a shared layer") {
  torch::manual_seed(2);
  two_head_net net(8, 16, 3);
  auto x = torch::randn({128, 8});
  auto y = torch::randint(0, 3, {128}, torch::kLong);
  auto t = 50 * torch::randn({128});
  auto gn = gradnorm_weighting::for_layer(*net, "enc", 2, {.alpha = 0.0, .lr = 0.05});
  CHECK_THROWS_AS(gradnorm_weighting::for_layer(*net, "encoder", 2), losslens::error);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  double first_ratio = 0, last_ratio = 0;
  for (int step = 0; step < 100; ++step) {
    opt.zero_grad();
    auto [logits, pred] = net->forward(x);
    auto total =
        gn.combine({losslens::cross_entropy(logits, y), weighted_mse(pred, t, torch::ones({1}))});
    total.backward();
    opt.step();
    const auto& g = gn.task_grad_norms();
    const auto w = gn.weights();
    REQUIRE(g.size() == 2);
    CHECK(w[0] + w[1] == Approx(2.0));
    const double ratio =
        (w[1] * g[1]) / (w[0] * g[0]);  // weighted norm of reg / cls, after the update
    if (step == 0) first_ratio = g[1] / g[0];
    last_ratio = ratio;
  }
  INFO("unweighted norm ratio " << first_ratio << ", weighted after 100 steps " << last_ratio);
  CHECK(first_ratio > 20);  // the raw regression gradient dwarfs the classification one
  CHECK(last_ratio < first_ratio / 5);
  CHECK(gn.weights()[0] > gn.weights()[1]);
}
