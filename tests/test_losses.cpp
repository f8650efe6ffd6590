// Stable loss kernels, class weights and multi-task combiners, checked against long double /
// analytic references and LibTorch's built-ins, at ordinary and extreme inputs.

#include <cmath>
#include <cstdio>
#include <functional>
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

#include "losslens/error.hpp"
#include "losslens/torch/losses.hpp"
#include "losslens/torch/multitask.hpp"

using namespace losslens;
namespace F = torch::nn::functional;
using ld = long double;

namespace {

// ---- long double references --------------------------------------------------------------

ld softplus_ld(ld z) { return (z > 0 ? z : 0) + std::log1p(std::exp(-std::fabs(z))); }
ld sigmoid_ld(ld z) { return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z)); }
ld lse_ld(const std::vector<ld>& x, std::size_t skip = static_cast<std::size_t>(-1)) {
  ld m = -INFINITY;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (i != skip) m = std::max(m, x[i]);
  ld s = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (i != skip) s += std::exp(x[i] - m);
  return m + std::log(s);
}

/// Relative tolerance of the kernel contract: 1e-6 in float64, 1e-4 in float32.
double rel_tol(torch::Dtype d) { return d == torch::kDouble ? 1e-6 : 1e-4; }
/// Values this small compare absolutely (float32's subnormals carry few digits).
double abs_floor(torch::Dtype d) { return d == torch::kDouble ? 1e-300 : 1e-35; }

std::vector<double> values(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kDouble).contiguous().reshape(-1);
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

/// Every element finite and within tolerance of the reference.
void require_close(const torch::Tensor& got, const std::vector<ld>& ref, torch::Dtype d, const char* what) {
  const auto g = values(got);
  REQUIRE(g.size() == ref.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    INFO(what << "[" << i << "]: got " << g[i] << ", reference " << static_cast<double>(ref[i]));
    REQUIRE(std::isfinite(g[i]));
    const auto r = static_cast<double>(ref[i]);
    CHECK(std::abs(g[i] - r) <= rel_tol(d) * std::abs(r) + abs_floor(d));
  }
}

void require_close(const torch::Tensor& got, const torch::Tensor& want, double rel, const char* what) {
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
    const double fd = (f(xp.view(x.sizes())).item<double>() - f(xm.view(x.sizes())).item<double>()) / (2 * h);
    INFO("element " << i << ": autograd " << g[static_cast<std::size_t>(i)] << ", finite difference " << fd);
    CHECK(std::abs(g[static_cast<std::size_t>(i)] - fd) <= rel * std::abs(fd) + 1e-7);
  }
}

const std::vector<double> extreme_logits = {-1e4, -1e3, -100, -30, -20, -5, -1, -1e-3, 0,
                                            1e-3, 1,    5,    20,   30,  100, 1e3, 1e4};

/// Every extreme logit paired with every target: (logits, targets).
std::pair<std::vector<double>, std::vector<double>> extreme_grid(const std::vector<double>& targets) {
  std::vector<double> xs, ys;
  for (double x : extreme_logits)
    for (double y : targets) {
      xs.push_back(x);
      ys.push_back(y);
    }
  return {xs, ys};
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("safe_log, safe_div and safe_sqrt: exact where ordinary, finite gradients at 0") {
  auto x = torch::tensor({0.0, 1e-300, 1e-12, 4.0, -1.0}, torch::kDouble).requires_grad_(true);
  auto y = safe_sqrt(x);
  auto v = values(y);
  CHECK(v[0] == 0.0);
  CHECK(v[1] == Approx(1e-300 / 1e-6).margin(1e-300));  // linear below eps
  CHECK(v[2] == Approx(1e-6));                           // continuous at eps
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

TEST_CASE("binary_cross_entropy_with_logits: long double reference and LibTorch at logits up to 1e4") {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    INFO("dtype " << c10::toString(dtype));
    const auto [xs, ys] = extreme_grid({0.0, 1.0, 0.3});
    auto x = leaf(xs, dtype);
    auto y = torch::tensor(ys, torch::kDouble).to(dtype);
    const double pw = 3.0;
    bce_options o;
    o.pos_weight = torch::tensor({pw}, dtype);
    o.reduction = loss_reduction::none;
    auto l = losslens::binary_cross_entropy_with_logits(x, y, o);
    l.sum().backward();

    std::vector<ld> ref_l, ref_g;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const ld xi = xs[i], yi = ys[i];
      ref_l.push_back(pw * yi * softplus_ld(-xi) + (1 - yi) * softplus_ld(xi));
      ref_g.push_back(-pw * yi * sigmoid_ld(-xi) + (1 - yi) * sigmoid_ld(xi));
    }
    require_close(l, ref_l, dtype, "loss");
    require_close(x.grad(), ref_g, dtype, "grad");

    // Same numbers as LibTorch's own (stable) kernel, mean-reduced.
    auto ours = losslens::binary_cross_entropy_with_logits(x.detach(), y, {.pos_weight = o.pos_weight});
    auto theirs = F::binary_cross_entropy_with_logits(
        x.detach(), y, F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(o.pos_weight));
    require_close(ours, theirs, rel_tol(dtype), "vs LibTorch");
  }
}

TEST_CASE("binary_cross_entropy on probabilities is clamped, finite and matches LibTorch inside") {
  auto p = torch::tensor({0.0, 1e-9, 0.2, 0.7, 1.0}, torch::kDouble).requires_grad_(true);
  auto y = torch::tensor({1.0, 0.0, 1.0, 0.0, 0.0}, torch::kDouble);
  auto l = losslens::binary_cross_entropy(p, y, {.reduction = loss_reduction::none});
  auto v = values(l);
  CHECK(v[0] == Approx(-std::log(1e-7)));       // log(0) clamped: 16.1, not Inf
  CHECK(v[4] == Approx(-std::log1p(-(1 - 1e-7))));
  CHECK(v[2] == Approx(-std::log(0.2)));
  l.sum().backward();
  for (double g : values(p.grad())) CHECK(std::isfinite(g));
  auto inner = torch::tensor({0.1, 0.5, 0.9}, torch::kDouble);
  auto t = torch::tensor({1.0, 0.0, 0.25}, torch::kDouble);
  require_close(losslens::binary_cross_entropy(inner, t), F::binary_cross_entropy(inner, t), 1e-12, "vs LibTorch");
}

TEST_CASE("cross_entropy matches LibTorch with class weights, ignore_index and label smoothing") {
  torch::manual_seed(1);
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    INFO("dtype " << c10::toString(dtype));
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
        auto theirs = F::cross_entropy(logits, t,
                                       F::CrossEntropyFuncOptions().weight(weight).ignore_index(7).label_smoothing(eps));
        auto gb = torch::autograd::grad({theirs}, {logits})[0];
        require_close(ours, theirs, rel_tol(dtype), "loss");
        require_close(ga, gb, 10 * rel_tol(dtype), "grad");
        for (auto red : {loss_reduction::sum, loss_reduction::none}) {
          o.reduction = red;
          auto fo = F::CrossEntropyFuncOptions().weight(weight).ignore_index(7).label_smoothing(eps);
          if (red == loss_reduction::sum) fo.reduction(torch::kSum);
          else fo.reduction(torch::kNone);
          auto theirs_r = F::cross_entropy(logits, t, fo);
          require_close(losslens::cross_entropy(logits, t, o), theirs_r, rel_tol(dtype), "reduced");
        }
      }
    }
  }
}

TEST_CASE("cross_entropy at logits of +-1e4 matches the long double log-softmax, loss and gradient") {
  const std::vector<std::vector<double>> rows = {
      {1e4, 0, -1e4}, {-1e4, 1e4, 0}, {0, 0, 0}, {20, 0, 0}, {0, 20, 30}, {-1e4, -1e4, 1e4}, {5, -5, 1e3}};
  const std::vector<std::int64_t> labels = {0, 0, 1, 0, 0, 2, 1};
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    INFO("dtype " << c10::toString(dtype));
    std::vector<double> flat;
    for (auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    auto x = leaf(flat, dtype).view({7, 3});
    x.retain_grad();
    auto y = torch::tensor(labels, torch::kLong);
    auto l = losslens::cross_entropy(x, y, {.reduction = loss_reduction::none});
    l.sum().backward();
    std::vector<ld> ref_l, ref_g;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      std::vector<ld> r(rows[i].begin(), rows[i].end());
      const auto yi = static_cast<std::size_t>(labels[i]);
      // -log p_y = softplus(lse_{c != y} - x_y): accurate even when p_y rounds to 1.
      ref_l.push_back(softplus_ld(lse_ld(r, yi) - r[yi]));
      const ld lse = lse_ld(r);
      for (std::size_t c = 0; c < r.size(); ++c) ref_g.push_back(std::exp(r[c] - lse) - (c == yi ? 1 : 0));
    }
    require_close(l, ref_l, dtype, "loss");
    require_close(x.grad(), ref_g, dtype, "grad");
  }
  // Row {20, 0, 0}: -log p = 4.1e-9. log_softmax in float32 rounds it to 0; ours keeps it.
  auto l32 = losslens::cross_entropy(torch::tensor({{20.f, 0.f, 0.f}}), torch::tensor({0L}));
  CHECK(l32.item<double>() == Approx(2 * std::exp(-20.0)).epsilon(1e-5));
}

TEST_CASE("binary_focal_loss: gamma 0 is weighted BCE, analytic loss and gradient at the extremes") {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    INFO("dtype " << c10::toString(dtype));
    const auto [xs, ys] = extreme_grid({0.0, 1.0, 0.8});
    for (double gamma : {0.0, 0.5, 2.0}) {
      INFO("gamma " << gamma);
      const double alpha = 0.25;
      auto x = leaf(xs, dtype);
      auto y = torch::tensor(ys, torch::kDouble).to(dtype);
      auto l = losslens::binary_focal_loss(x, y, {.gamma = gamma, .alpha = alpha, .reduction = loss_reduction::none});
      l.sum().backward();
      std::vector<ld> ref_l, ref_g;
      for (std::size_t i = 0; i < xs.size(); ++i) {
        const ld xi = xs[i], yi = ys[i], p = sigmoid_ld(xi), q = sigmoid_ld(-xi);
        const ld log_p = -softplus_ld(-xi), log_q = -softplus_ld(xi);
        ref_l.push_back(-alpha * yi * std::pow(q, (ld)gamma) * log_p -
                        (1 - alpha) * (1 - yi) * std::pow(p, (ld)gamma) * log_q);
        const ld g_pos = alpha * std::pow(q, (ld)gamma) * (gamma * p * log_p - q);
        const ld g_neg = -(1 - alpha) * std::pow(p, (ld)gamma) * (gamma * q * log_q - p);
        ref_g.push_back(yi * g_pos + (1 - yi) * g_neg);
      }
      require_close(l, ref_l, dtype, "loss");
      require_close(x.grad(), ref_g, dtype, "grad");
    }
  }
  // gamma = 0, alpha off: plain BCE with logits.
  auto x = torch::randn({50}, torch::kDouble) * 4;
  auto y = (torch::rand({50}, torch::kDouble) > 0.5).to(torch::kDouble);
  require_close(losslens::binary_focal_loss(x, y, {.gamma = 0, .alpha = -1}), F::binary_cross_entropy_with_logits(x, y),
                1e-12, "gamma 0");
}

TEST_CASE("focal_loss (multi-class): reference at +-1e4, equals cross-entropy at gamma 0") {
  const std::vector<std::vector<double>> rows = {{1e4, 0, -1e4}, {-1e4, 1e4, 0}, {0, 0, 0}, {20, 0, 0}, {3, -2, 1}};
  const std::vector<std::int64_t> labels = {0, 0, 1, 0, 2};
  const std::vector<double> class_alpha = {0.5, 1.0, 2.0};
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for (double gamma : {0.5, 2.0}) {
      INFO("dtype " << c10::toString(dtype) << ", gamma " << gamma);
      std::vector<double> flat;
      for (auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
      auto x = leaf(flat, dtype).view({5, 3});
      x.retain_grad();
      focal_options o{.gamma = gamma, .class_alpha = torch::tensor(class_alpha, dtype), .reduction = loss_reduction::none};
      auto l = losslens::focal_loss(x, torch::tensor(labels, torch::kLong), o);
      l.sum().backward();
      std::vector<ld> ref_l, ref_g;
      for (std::size_t i = 0; i < rows.size(); ++i) {
        std::vector<ld> r(rows[i].begin(), rows[i].end());
        const auto yi = static_cast<std::size_t>(labels[i]);
        const ld a = class_alpha[yi], others = lse_ld(r, yi), z = r[yi] - others;
        const ld p = sigmoid_ld(z), q = sigmoid_ld(-z), log_p = -softplus_ld(-z);
        ref_l.push_back(-a * std::pow(q, (ld)gamma) * log_p);
        const ld dz = a * std::pow(q, (ld)gamma) * (gamma * p * log_p - q);  // dl/dz
        for (std::size_t c = 0; c < r.size(); ++c)
          ref_g.push_back(c == yi ? dz : -dz * std::exp(r[c] - others));
      }
      require_close(l, ref_l, dtype, "loss");
      require_close(x.grad(), ref_g, dtype, "grad");
    }
  }
  auto x = torch::randn({9, 5}, torch::kDouble);
  auto y = torch::randint(0, 5, {9}, torch::kLong);
  require_close(losslens::focal_loss(x, y, {.gamma = 0}), F::cross_entropy(x, y), 1e-12, "gamma 0");
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
  CHECK(class_counts(torch::tensor({0L, 2L, 2L, -100L, 5L}), 3) == std::vector<std::int64_t>{1, 0, 2});
}

TEST_CASE("dice_loss and bce_dice_loss: formula, empty masks, multi-class, extreme logits") {
  // Binary masks [N=2, C=1, 2, 2] at saturating logits: p is 0 or 1 exactly.
  auto logits = torch::tensor({1e4, -1e4, 1e4, -1e4, -1e4, -1e4, -1e4, -1e4}, torch::kDouble).view({2, 1, 2, 2});
  auto mask = torch::tensor({1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, torch::kDouble).view({2, 1, 2, 2});
  auto l = dice_loss(logits, mask, {.smooth = 1.0, .reduction = loss_reduction::none});
  auto v = values(l);
  CHECK(v[0] == Approx(1 - (2 * 1 + 1.0) / (2 + 1 + 1.0)));  // sample 0: I=1, P=2, T=1
  CHECK(v[1] == Approx(0.0));                                // empty mask predicted empty
  // smooth = 0 on an empty mask: the eps floor keeps it finite.
  auto x = logits.clone().requires_grad_(true);
  auto l0 = dice_loss(x, mask, {.smooth = 0.0});
  l0.backward();
  CHECK(std::isfinite(l0.item<double>()));
  for (double g : values(x.grad())) CHECK(std::isfinite(g));

  // Moderate logits: the per-sample formula, and finite differences for the gradient.
  torch::manual_seed(3);
  auto z = torch::randn({3, 2, 4, 4}, torch::kDouble);
  auto t = (torch::rand({3, 2, 4, 4}, torch::kDouble) > 0.6).to(torch::kDouble);
  auto p = torch::sigmoid(z);
  auto ref = 1 - (2 * (p * t).sum({2, 3}) + 1) / (p.sum({2, 3}) + t.sum({2, 3}) + 1);
  require_close(dice_loss(z, t, {.reduction = loss_reduction::none}), ref, 1e-12, "dice");
  auto t0 = t.slice(0, 0, 1);
  require_gradient_matches_fd([&](const torch::Tensor& a) { return dice_loss(a, t0); }, z.slice(0, 0, 1), 1e-5);

  auto bd = bce_dice_loss(z, t, {.bce_weight = 0.5, .dice_weight = 2.0});
  auto want = 0.5 * F::binary_cross_entropy_with_logits(z, t) + 2.0 * ref.mean();
  require_close(bd, want, 1e-12, "bce+dice");

  // Multi-class: softmax over C and one-hot targets.
  auto zc = torch::randn({2, 3, 4}, torch::kDouble);
  auto yc = torch::randint(0, 3, {2, 4}, torch::kLong);
  auto pc = torch::softmax(zc, 1);
  auto tc = torch::one_hot(yc, 3).permute({0, 2, 1}).to(torch::kDouble);
  auto refc = 1 - (2 * (pc * tc).sum(2) + 1) / (pc.sum(2) + tc.sum(2) + 1);
  require_close(dice_loss(zc, yc, {.reduction = loss_reduction::none}), refc, 1e-12, "multi-class dice");
}

TEST_CASE("smooth_l1 and huber match LibTorch, including differences of 1e4 and beta 0") {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto pred = torch::tensor({-1e4, -3.0, -0.5, 0.0, 0.2, 0.99, 1.0, 2.5, 1e4}, torch::kDouble).to(dtype);
    auto target = torch::zeros_like(pred);
    for (double beta : {0.0, 0.5, 1.0, 2.0}) {
      auto a = pred.clone().requires_grad_(true), b = pred.clone().requires_grad_(true);
      auto ours = smooth_l1(a, target, {.beta = beta, .reduction = loss_reduction::sum});
      auto theirs = F::smooth_l1_loss(b, target, F::SmoothL1LossFuncOptions().reduction(torch::kSum), beta);
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
      auto theirs = F::huber_loss(b, target, F::HuberLossFuncOptions().delta(delta).reduction(torch::kNone));
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
  require_close(weighted_mse(a, b, torch::ones({5, 1}, torch::kDouble), 0.0), F::mse_loss(a, b), 1e-12, "mse");
  CHECK_THROWS_AS(weighted_mse(a, b, torch::ones({4}, torch::kDouble)), losslens::error);
}

TEST_CASE("contrastive_loss: Hadsell reference and a finite gradient for identical embeddings") {
  auto a = torch::tensor({{0.0, 0.0}, {3.0, 4.0}, {1.0, 1.0}, {0.5, 0.0}}, torch::kDouble).requires_grad_(true);
  auto b = torch::tensor({{0.0, 0.0}, {0.0, 0.0}, {1.0, 1.0}, {0.0, 0.0}}, torch::kDouble);
  auto same = torch::tensor({1, 1, 0, 0}, torch::kLong);
  auto l = contrastive_loss(a, b, same, {.margin = 2.0, .reduction = loss_reduction::none});
  auto v = values(l);
  CHECK(v[0] == 0.0);
  CHECK(v[1] == Approx(0.5 * 25));               // similar pair at distance 5
  CHECK(v[2] == Approx(0.5 * 4.0));              // dissimilar pair at distance 0: margin^2 / 2
  CHECK(v[3] == Approx(0.5 * 1.5 * 1.5));        // dissimilar at 0.5
  l.sum().backward();
  for (double g : values(a.grad())) CHECK(std::isfinite(g));
  auto x = torch::randn({3, 4}, torch::kDouble);
  auto y = torch::randn({3, 4}, torch::kDouble);
  auto s = torch::tensor({1.0, 0.0, 0.0}, torch::kDouble);
  require_gradient_matches_fd([&](const torch::Tensor& e) { return contrastive_loss(e, y, s, {.margin = 3.0}); }, x);
}

TEST_CASE("cross-entropy with label smoothing and focal loss pass finite-difference gradient checks") {
  torch::manual_seed(5);
  auto x = torch::randn({3, 4}, torch::kDouble) * 2;
  auto y = torch::tensor({0L, 3L, 1L});
  auto w = torch::tensor({1.0, 2.0, 0.5, 1.5}, torch::kDouble);
  require_gradient_matches_fd(
      [&](const torch::Tensor& a) { return losslens::cross_entropy(a, y, {.weight = w, .label_smoothing = 0.2}); }, x);
  require_gradient_matches_fd([&](const torch::Tensor& a) { return losslens::focal_loss(a, y, {.gamma = 1.5}); }, x);
  auto yb = torch::tensor({1.0, 0.0, 0.3, 1.0}, torch::kDouble);
  require_gradient_matches_fd([&](const torch::Tensor& a) { return losslens::binary_focal_loss(a, yb, {.gamma = 0.5}); },
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
  require_message([&] { losslens::cross_entropy(logits, torch::one_hot(torch::tensor({0L, 1L, 2L, 0L}), 3).to(torch::kFloat)); },
                  {"cross_entropy", "int64 class indices", "Float [4, 3]", "argmax(1)"});
  require_message([&] { losslens::cross_entropy(logits, torch::tensor({0L, 1L})); }, {"[N, d1, ...]", "Long [2]"});
  require_message([&] { losslens::cross_entropy(logits, torch::tensor({0.0f, 1.0f, 2.0f, 0.0f})); }, {"integer", "Float [4]"});
  require_message([&] { losslens::binary_cross_entropy_with_logits(torch::randn({8}), torch::ones({8, 1})); },
                  {"shape of logits", "Float [8]", "Float [8, 1]"});
  require_message([&] { losslens::binary_cross_entropy_with_logits(torch::randn({8}), torch::ones({8}, torch::kLong)); },
                  {"target must be a floating tensor", "Long [8]"});
  require_message([&] { losslens::cross_entropy(logits, torch::tensor({0L, 1L, 2L, 0L}), {.weight = torch::ones({4})}); },
                  {"weight", "[3]", "Float [4]"});
  require_message([&] { losslens::focal_loss(torch::randn({4, 1}), torch::zeros({4}, torch::kLong)); }, {"C >= 2"});
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
    uncertainty_weighting u(2, {.half = half, .init_from_first_losses = false, .initial_log_variance = 1.0});
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
  double cls_loss = 0, reg_rmse = 0, accuracy = 0;                 // at the last step
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
    auto g_cls = torch::autograd::grad({l_cls}, {net->enc->weight}, {}, true)[0].norm().item<double>() * w[0];
    auto g_reg = torch::autograd::grad({l_reg}, {net->enc->weight}, {}, true)[0].norm().item<double>() * w[1];
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

TEST_CASE("multi-task demo: raw 0-255 regression dominates unweighted, uncertainty weighting balances") {
  fixed_weighting equal({1.0, 1.0});
  uncertainty_weighting uw(2);                                         // s_i = log L_i(0)
  uncertainty_weighting uw0(2, {.init_from_first_losses = false});  // s_i = 0
  const auto a = train_demo(equal);
  const auto b = train_demo(uw);
  const auto c = train_demo(uw0);
  auto line = [](const char* name, const demo_result& r) {
    std::printf("  %-22s reg loss share %.4f (all) %.4f (last 50), reg grad share %.4f | cls CE %.4f, "
                "acc %.3f, reg RMSE %.1f | weights [%.4g, %.4g]\n",
                name, r.reg_share_all, r.reg_share_last, r.reg_grad_share, r.cls_loss, r.accuracy, r.reg_rmse,
                r.weights[0], r.weights[1]);
  };
  std::printf("multi-task demo (shared Linear(16, 32) encoder, 4-class head + regression head on 0-255 targets, "
              "200 full-batch Adam steps):\n");
  line("unweighted", a);
  line("uncertainty (default)", b);
  line("uncertainty (s = 0)", c);
  CHECK(a.reg_share_all > 0.99);      // the regression task owns the total ...
  CHECK(a.reg_grad_share > 0.95);     // ... and the shared encoder's gradient
  CHECK(b.reg_share_all < 0.6);       // weighted shares become comparable (~0.5)
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
    auto total = gn.combine({losslens::cross_entropy(logits, y), weighted_mse(pred, t, torch::ones({1}))});
    total.backward();
    opt.step();
    const auto& g = gn.task_grad_norms();
    const auto w = gn.weights();
    REQUIRE(g.size() == 2);
    CHECK(w[0] + w[1] == Approx(2.0));
    const double ratio = (w[1] * g[1]) / (w[0] * g[0]);  // weighted norm of reg / cls, after the update
    if (step == 0) first_ratio = g[1] / g[0];
    last_ratio = ratio;
  }
  INFO("unweighted norm ratio " << first_ratio << ", weighted after 100 steps " << last_ratio);
  CHECK(first_ratio > 20);     // the raw regression gradient dwarfs the classification one
  CHECK(last_ratio < first_ratio / 5);
  CHECK(gn.weights()[0] > gn.weights()[1]);
}
