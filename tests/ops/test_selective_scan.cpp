// ops::selective_scan and ops::selective_scan_step against the double-precision recurrence in
// ops/ref/selective_scan.h, plus self-consistency: step = forward token by token, and forward in
// two pieces with the state carried = forward in one piece.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "ops/ops.h"
#include "ops/ref/selective_scan.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using test::Vec;

struct ScanCase {
  int64_t B, T, D, N;
};
const std::vector<ScanCase> kCases = {{1, 1, 16, 16}, {2, 7, 37, 4}, {2, 33, 64, 16}, {1, 130, 19, 8}, {3, 5, 130, 1}};

enum Flags {
  kBias = 1,
  kSoftplus = 2,
  kSkip = 4,
  kGate = 8,
  kState = 16,
  kStrided = 32,
  kAllFlags = 64,
};

// Random inputs of one case. The tensors of the T axis are strided slices when kStrided; the
// delta range keeps dt = softplus(delta + bias) (or delta + bias) in Mamba's usual (0, ~1.5].
struct ScanProblem {
  ops::SelectiveScanInputs in;
  Tensor state;  // defined when kState

  ScanProblem(const ScanCase& c, int flags, Rng& rng) {
    const bool strided = flags & kStrided;
    in.delta_softplus = flags & kSoftplus;
    in.u = test::random_tensor({c.B, c.T, c.D}, rng, -2, 2, strided);
    in.delta = in.delta_softplus ? test::random_tensor({c.B, c.T, c.D}, rng, -4, 1, strided)
                                 : test::random_tensor({c.B, c.T, c.D}, rng, 0.01, 0.5, strided);
    if (flags & kBias) in.delta_bias = test::random_tensor({c.D}, rng, 0, 0.5);
    in.A = test::random_tensor({c.D, c.N}, rng, -8, -0.5);
    in.B = test::random_tensor({c.B, c.T, c.N}, rng, -1, 1, strided);
    in.C = test::random_tensor({c.B, c.T, c.N}, rng, -1, 1, strided);
    if (flags & kSkip) in.D = test::random_tensor({c.D}, rng, -1, 1);
    if (flags & kGate) in.z = test::random_tensor({c.B, c.T, c.D}, rng, -3, 3, strided);
    if (flags & kState) state = test::random_tensor({c.B, c.D, c.N}, rng, -1, 1);
  }

  // With `magnitude`, the recurrence on |u|, |B|, |C|, |D|, |z|, |state|: the size of the terms
  // whose rounding errors add up in y and the state (C·h cancels badly at small T).
  ref::SelectiveScanRefOutputs reference(const ScanCase& c, bool magnitude = false) const {
    auto v = [&](const Tensor& t) { return magnitude ? test::abs_vec(test::to_vec(t)) : test::to_vec(t); };
    ref::SelectiveScanRefInputs r;
    r.u = v(in.u);
    r.delta = test::to_vec(in.delta);
    r.delta_bias = test::to_vec(in.delta_bias);
    r.delta_softplus = in.delta_softplus;
    r.A = test::to_vec(in.A);
    r.B = v(in.B);
    r.C = v(in.C);
    r.Dskip = v(in.D);
    r.z = v(in.z);
    r.state0 = v(state);
    return ref::selective_scan({c.B, c.T, c.D, c.N}, r);
  }
};

std::string describe(const ScanCase& c, int flags) {
  return fmt::format("B {} T {} D {} N {} bias {} softplus {} D {} z {} state {} strided {}", c.B, c.T, c.D, c.N,
                     bool(flags & kBias), bool(flags & kSoftplus), bool(flags & kSkip), bool(flags & kGate),
                     bool(flags & kState), bool(flags & kStrided));
}

// Token t of a [B, T, W] tensor as a [B, W] rows tensor (row stride T*W), or undefined.
Tensor token(const Tensor& t, int64_t index) { return t.defined() ? t.select(1, index) : Tensor(); }

TEST(OpsSelectiveScan, MatchesReference) {
  Rng rng(31);
  for (const ScanCase& c : kCases) {
    for (int flags = 0; flags < kAllFlags; ++flags) {
      ScanProblem p(c, flags, rng);
      const ref::SelectiveScanRefOutputs want = p.reference(c), size = p.reference(c, true);
      Tensor y = test::nan_tensor({c.B, c.T, c.D}, flags & kStrided);
      ops::selective_scan(p.in, (flags & kState) ? &p.state : nullptr, y);
      EXPECT_LT(test::max_err_vs(test::to_vec(y), want.y, size.y), 1e-6) << describe(c, flags);
      if (flags & kState) {
        EXPECT_LT(test::max_err_vs(test::to_vec(p.state), want.state, size.state), 1e-6) << describe(c, flags);
      }
    }
  }
}

TEST(OpsSelectiveScan, ExtremeInputsStayFinite) {
  // delta up to 60 (softplus = identity there) against A down to -50: exp(dt A) far below the
  // float range must give 0, not NaN or denormal trouble; z far out on both sides of silu.
  Rng rng(32);
  const ScanCase c{2, 17, 40, 16};
  ScanProblem p(c, kBias | kSoftplus | kSkip | kGate | kState, rng);
  p.in.delta = test::random_tensor({c.B, c.T, c.D}, rng, -30, 60);
  p.in.A = test::random_tensor({c.D, c.N}, rng, -50, -0.01);
  p.in.z = test::random_tensor({c.B, c.T, c.D}, rng, -100, 100);
  const ref::SelectiveScanRefOutputs want = p.reference(c);
  Tensor y = Tensor::empty({c.B, c.T, c.D});
  ops::selective_scan(p.in, &p.state, y);
  EXPECT_LT(test::max_rel_err(test::to_vec(y), want.y), 1e-5);
  EXPECT_LT(test::max_rel_err(test::to_vec(p.state), want.state), 1e-5);
}

TEST(OpsSelectiveScan, StepMatchesForward) {
  Rng rng(33);
  for (const ScanCase& c : kCases) {
    for (int flags : {kSoftplus | kBias | kSkip | kGate | kStrided, int(kStrided), kSoftplus | kGate}) {
      ScanProblem p(c, flags | kState, rng);
      Tensor state_step = p.state.clone();
      Tensor y = Tensor::empty({c.B, c.T, c.D});
      ops::selective_scan(p.in, &p.state, y);
      Vec stepped(size_t(c.B * c.T * c.D));
      for (int64_t t = 0; t < c.T; ++t) {
        ops::SelectiveScanInputs in = p.in;
        in.u = token(p.in.u, t);
        in.delta = token(p.in.delta, t);
        in.B = token(p.in.B, t);
        in.C = token(p.in.C, t);
        in.z = token(p.in.z, t);
        Tensor yt = Tensor::empty({c.B, c.D});
        ops::selective_scan_step(in, state_step, yt);
        const Vec v = test::to_vec(yt);
        for (int64_t b = 0; b < c.B; ++b) {
          std::copy_n(v.begin() + b * c.D, c.D, stepped.begin() + (b * c.T + t) * c.D);
        }
      }
      EXPECT_LT(test::max_rel_err(stepped, test::to_vec(y)), 1e-6) << describe(c, flags);
      EXPECT_LT(test::max_rel_err(test::to_vec(state_step), test::to_vec(p.state)), 1e-6) << describe(c, flags);
    }
  }
}

TEST(OpsSelectiveScan, SplitMatchesWhole) {
  Rng rng(34);
  for (const ScanCase& c : kCases) {
    for (int64_t first : {int64_t(0), int64_t(1), c.T / 2, c.T}) {
      ScanProblem p(c, kSoftplus | kBias | kSkip | kGate, rng);
      Tensor whole_state = Tensor::zeros({c.B, c.D, c.N});
      Tensor whole = Tensor::empty({c.B, c.T, c.D});
      ops::selective_scan(p.in, &whole_state, whole);

      Tensor state = Tensor::zeros({c.B, c.D, c.N});
      Vec pieces[2];
      for (int piece = 0; piece < 2; ++piece) {
        const int64_t start = piece == 0 ? 0 : first, length = piece == 0 ? first : c.T - first;
        auto part = [&](const Tensor& t) { return t.slice(1, start, length).contiguous(); };
        ops::SelectiveScanInputs in = p.in;
        in.u = part(p.in.u);
        in.delta = part(p.in.delta);
        in.B = part(p.in.B);
        in.C = part(p.in.C);
        in.z = part(p.in.z);
        Tensor y = Tensor::empty({c.B, length, c.D});
        ops::selective_scan(in, &state, y);
        pieces[piece] = test::to_vec(y);
      }
      Vec joined;
      for (int64_t b = 0; b < c.B; ++b) {
        const int64_t n1 = first * c.D, n2 = (c.T - first) * c.D;
        joined.insert(joined.end(), pieces[0].begin() + b * n1, pieces[0].begin() + (b + 1) * n1);
        joined.insert(joined.end(), pieces[1].begin() + b * n2, pieces[1].begin() + (b + 1) * n2);
      }
      const std::string what = fmt::format("B {} T {} D {} N {} first {}", c.B, c.T, c.D, c.N, first);
      EXPECT_LT(test::max_rel_err(joined, test::to_vec(whole)), 1e-6) << what;
      EXPECT_LT(test::max_rel_err(test::to_vec(state), test::to_vec(whole_state)), 1e-6) << what;
    }
  }
}

TEST(OpsSelectiveScan, RejectsMismatchedShapes) {
  Rng rng(35);
  const ScanCase c{2, 5, 8, 4};
  {
    ScanProblem p(c, kSoftplus, rng);
    p.in.delta = Tensor::zeros({2, 5, 9});
    Tensor y = Tensor::empty({2, 5, 8});
    test::expect_error([&] { ops::selective_scan(p.in, nullptr, y); }, {"selective_scan", "[2, 5, 8]", "[2, 5, 9]"});
  }
  {
    ScanProblem p(c, kSoftplus, rng);
    p.in.B = Tensor::zeros({2, 5, 3});
    Tensor y = Tensor::empty({2, 5, 8});
    test::expect_error([&] { ops::selective_scan(p.in, nullptr, y); }, {"selective_scan", "[2, 5, 4]", "[2, 5, 3]"});
  }
  {
    ScanProblem p(c, kSoftplus, rng);
    Tensor y = Tensor::empty({2, 5, 8});
    Tensor state = Tensor::zeros({2, 8, 5});
    test::expect_error([&] { ops::selective_scan(p.in, &state, y); }, {"selective_scan", "[2, 8, 4]", "[2, 8, 5]"});
  }
  {
    ScanProblem p(c, kSoftplus, rng);
    Tensor y = Tensor::empty({2, 8});
    Tensor state = Tensor::zeros({2, 8, 4});
    test::expect_error([&] { ops::selective_scan_step(p.in, state, y); }, {"selective_scan_step", "[2, 5, 8]"});
  }
}

}  // namespace
}  // namespace ssm
