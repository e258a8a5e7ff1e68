// ops::ssd (chunked) and ops::ssd_step against the sequential double-precision recurrence in
// ops/ref/ssd.h, plus self-consistency: chunk sizes, carried state, step = forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "ops/ref/ssd.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using test::Vec;

Vec normal_vec(Rng& rng, int64_t n, double scale = 1.0, double offset = 0.0) {
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = offset + scale * double(rng.normal());
  return v;
}
// The float values a tensor actually holds: the reference must see exactly what the kernel sees.
Vec rounded(const Vec& v) {
  Vec r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = double(float(v[i]));
  return r;
}
Tensor make(const Shape& shape, const Vec& v) { return test::from_vec(v, shape); }
double rel_err(const Vec& got, const Vec& want) { return test::max_rel_err(got, want); }

struct Case {
  int64_t batch = 2, T = 33, H = 4, P = 8, G = 1, N = 16, chunk = 8;
  bool with_D = true, with_state = false, want_state = true, strided = false;
  double dt_bias = -3.0;  // softplus(-3 ± noise) ≈ 0.05: moderate decays
  double dt_noise = 0.5;
  double dt_min = 0.0, dt_max = std::numeric_limits<double>::infinity();
  uint64_t seed = 1;
};

// Random inputs, as doubles already rounded to float.
struct Data {
  ref::SsdDims dims;
  ref::SsdRefInputs in;
};

Data make_data(const Case& k) {
  Rng rng(k.seed);
  Data d;
  d.dims = {k.batch, k.T, k.H, k.P, k.G, k.N};
  auto& in = d.in;
  in.x = rounded(normal_vec(rng, k.batch * k.T * k.H * k.P));
  in.dt = rounded(normal_vec(rng, k.batch * k.T * k.H, k.dt_noise));
  in.dt_bias = rounded(normal_vec(rng, k.H, 0.3, k.dt_bias));
  in.A = test::uniform_vec(rng, k.H, 0.0, std::log(16.0));
  for (double& a : in.A) a = double(float(-std::exp(a)));
  in.B = rounded(normal_vec(rng, k.batch * k.T * k.G * k.N, 0.5));
  in.C = rounded(normal_vec(rng, k.batch * k.T * k.G * k.N, 0.5));
  if (k.with_D) in.D = rounded(normal_vec(rng, k.H));
  if (k.with_state) in.state0 = rounded(normal_vec(rng, k.batch * k.H * k.P * k.N));
  in.dt_min = double(float(k.dt_min));
  in.dt_max = double(float(k.dt_max));
  return d;
}

// Tensors for the op: contiguous, or column slices of one wide [B,T,width] tensor laid out as the
// model's in_proj/conv output ([pad | x | B | C | dt | pad]).
struct Tensors {
  ops::SsdInputs in;
  Tensor wide;
};

Tensors make_tensors(const Case& k, const Data& d, bool step = false) {
  Tensors t;
  const int64_t HP = k.H * k.P, GN = k.G * k.N;
  Shape lead = step ? Shape{k.batch} : Shape{k.batch, k.T};
  auto shape = [&](int64_t w) {
    Shape s = lead;
    s.push_back(w);
    return s;
  };
  if (k.strided) {
    const int64_t pad = 3;
    t.wide = test::nan_tensor(shape(pad + HP + 2 * GN + k.H + 5));  // padding NaN: reads outside show
    const int64_t ax = int64_t(lead.size());
    t.in.x = t.wide.slice(ax, pad, HP);
    t.in.B = t.wide.slice(ax, pad + HP, GN);
    t.in.C = t.wide.slice(ax, pad + HP + GN, GN);
    t.in.dt = t.wide.slice(ax, pad + HP + 2 * GN, k.H);
  } else {
    t.in.x = Tensor::empty(shape(HP));
    t.in.B = Tensor::empty(shape(GN));
    t.in.C = Tensor::empty(shape(GN));
    t.in.dt = Tensor::empty(shape(k.H));
  }
  test::fill_rows(t.in.x, d.in.x);
  test::fill_rows(t.in.B, d.in.B);
  test::fill_rows(t.in.C, d.in.C);
  test::fill_rows(t.in.dt, d.in.dt);
  t.in.dt_bias = make({k.H}, d.in.dt_bias);
  t.in.A = make({k.H}, d.in.A);
  if (!d.in.D.empty()) t.in.D = make({k.H}, d.in.D);
  t.in.n_groups = k.G;
  t.in.dt_min = float(k.dt_min);
  t.in.dt_max = float(k.dt_max);
  t.in.chunk_size = k.chunk;
  return t;
}

struct Result {
  Vec y, state;
};

Result run_ssd(const Case& k, const Data& d) {
  Tensors t = make_tensors(k, d);
  Tensor y = test::nan_tensor({k.batch, k.T, k.H * k.P}, k.strided);
  Tensor state;
  if (k.with_state) {
    state = make({k.batch, k.H, k.P, k.N}, d.in.state0);
  } else if (k.want_state) {
    state = Tensor::zeros({k.batch, k.H, k.P, k.N});
  }
  ops::ssd(t.in, state.defined() ? &state : nullptr, y);
  Result r;
  r.y = test::to_vec(y);
  if (state.defined()) r.state = test::to_vec(state);
  return r;
}

constexpr double kTol = 1e-5;

void check_case(const Case& k) {
  SCOPED_TRACE(::testing::Message() << "batch " << k.batch << " T " << k.T << " H " << k.H << " P " << k.P << " G "
                                    << k.G << " N " << k.N << " chunk " << k.chunk << " D " << k.with_D << " state "
                                    << k.with_state << " strided " << k.strided);
  const Data d = make_data(k);
  const ref::SsdRefOutputs want = ref::ssd(d.dims, d.in);
  const Result got = run_ssd(k, d);
  EXPECT_LT(rel_err(got.y, want.y), kTol);
  if (k.with_state || k.want_state) {
    EXPECT_LT(rel_err(got.state, want.state), kTol);
  }
}

TEST(OpsSsd, MatchesReferenceAcrossShapes) {
  for (int64_t T : {1, 7, 8, 16, 33, 100}) {
    for (int64_t chunk : {8, 16}) {
      Case k;
      k.T = T;
      k.chunk = chunk;
      k.seed = uint64_t(T * 31 + chunk);
      check_case(k);
    }
  }
}

TEST(OpsSsd, GroupsAndHeadsPerGroup) {
  for (int64_t G : {1, 2}) {
    for (int64_t H : {2, 6}) {
      Case k;
      k.G = G;
      k.H = H;
      k.batch = 3;
      k.T = 37;
      k.chunk = 16;
      k.P = 5;
      k.N = 12;
      k.seed = uint64_t(G * 10 + H);
      check_case(k);
    }
  }
}

TEST(OpsSsd, WithAndWithoutDAndState) {
  for (bool with_D : {false, true}) {
    for (bool with_state : {false, true}) {
      for (bool want_state : {false, true}) {
        Case k;
        k.with_D = with_D;
        k.with_state = with_state;
        k.want_state = want_state;
        k.T = 45;
        k.chunk = 16;
        k.seed = 100 + uint64_t(with_D) * 4 + uint64_t(with_state) * 2 + uint64_t(want_state);
        check_case(k);
      }
    }
  }
}

TEST(OpsSsd, ShortSequenceBelowChunk) {
  for (int64_t T : {1, 3, 15}) {
    Case k;
    k.T = T;
    k.chunk = 16;
    k.with_state = true;
    k.seed = 200 + uint64_t(T);
    check_case(k);
  }
}

TEST(OpsSsd, StridedColumnSlices) {
  for (int64_t G : {1, 2}) {
    Case k;
    k.strided = true;
    k.G = G;
    k.H = 4;
    k.T = 50;
    k.chunk = 16;
    k.with_state = true;
    k.seed = 300 + uint64_t(G);
    check_case(k);
  }
}

TEST(OpsSsd, DtClampActive) {
  Case k;
  k.dt_bias = -3.0;
  k.dt_noise = 2.0;  // softplus values spread well past both limits
  k.dt_min = 0.02;
  k.dt_max = 0.1;
  k.T = 41;
  k.chunk = 16;
  k.with_state = true;
  const Data d = make_data(k);
  int below = 0, above = 0;
  for (size_t i = 0; i < d.in.dt.size(); ++i) {
    const double v = ref::softplus(d.in.dt[i] + d.in.dt_bias[i % size_t(k.H)]);
    below += v < k.dt_min;
    above += v > k.dt_max;
  }
  EXPECT_GT(below, 0);
  EXPECT_GT(above, 0);
  check_case(k);
}

TEST(OpsSsd, LargeDt) {
  Case k;
  k.dt_bias = 3.0;  // dt ≈ 3, dt*A down to ≈ -50 per token: decays underflow inside a chunk
  k.T = 70;
  k.chunk = 32;
  k.with_state = true;
  check_case(k);
  k.dt_bias = 25.0;  // softplus in its linear range
  k.seed = 7;
  check_case(k);
}

TEST(OpsSsd, MambaTwoShape) {
  Case k;
  k.batch = 1;
  k.T = 300;
  k.H = 24;
  k.P = 64;
  k.N = 128;
  k.chunk = 256;
  k.with_state = true;
  k.strided = true;
  check_case(k);
}

TEST(OpsSsd, ChunkSizesAgree) {
  Case k;
  k.T = 100;
  k.with_state = true;
  k.chunk = 100;
  const Data d = make_data(k);
  const Result base = run_ssd(k, d);
  for (int64_t chunk : {1, 3, 8, 16, 64, 99, 128, 256}) {
    SCOPED_TRACE(chunk);
    k.chunk = chunk;
    const Result r = run_ssd(k, d);
    EXPECT_LT(rel_err(r.y, base.y), kTol);
    EXPECT_LT(rel_err(r.state, base.state), kTol);
  }
}

TEST(OpsSsd, TwoPiecesEqualOne) {
  Case k;
  k.T = 61;
  k.chunk = 16;
  k.with_state = true;
  k.G = 2;
  const Data d = make_data(k);
  const Result whole = run_ssd(k, d);

  const int64_t split = 27;
  Tensors t = make_tensors(k, d);
  Tensor state = make({k.batch, k.H, k.P, k.N}, d.in.state0);
  Vec y(size_t(k.batch * k.T * k.H * k.P));
  const int64_t HP = k.H * k.P;
  for (auto [start, len] : {std::pair<int64_t, int64_t>{0, split}, {split, k.T - split}}) {
    // Slices along T are not uniform rows when batch > 1: each call gets its own tensors.
    ops::SsdInputs piece = t.in;
    piece.x = t.in.x.slice(1, start, len).contiguous();
    piece.dt = t.in.dt.slice(1, start, len).contiguous();
    piece.B = t.in.B.slice(1, start, len).contiguous();
    piece.C = t.in.C.slice(1, start, len).contiguous();
    Tensor yp = Tensor::empty({k.batch, len, HP});
    ops::ssd(piece, &state, yp);
    const Vec part = test::to_vec(yp);
    for (int64_t b = 0; b < k.batch; ++b)
      std::copy_n(part.begin() + b * len * HP, len * HP, y.begin() + (b * k.T + start) * HP);
  }
  EXPECT_LT(rel_err(y, whole.y), kTol);
  EXPECT_LT(rel_err(test::to_vec(state), whole.state), kTol);
}

TEST(OpsSsd, StepEqualsForwardTokenByToken) {
  for (bool strided : {false, true}) {
    Case k;
    k.T = 20;
    k.chunk = 8;
    k.with_state = true;
    k.G = 2;
    k.H = 4;
    k.strided = strided;
    const Data d = make_data(k);
    const Result whole = run_ssd(k, d);
    const ref::SsdRefOutputs want = ref::ssd(d.dims, d.in);

    Tensors t = make_tensors(k, d);
    Tensor state = make({k.batch, k.H, k.P, k.N}, d.in.state0);
    Tensor y = Tensor::empty({k.batch, k.T, k.H * k.P});
    for (int64_t s = 0; s < k.T; ++s) {
      ops::SsdInputs tok = t.in;
      tok.x = t.in.x.select(1, s);
      tok.dt = t.in.dt.select(1, s);
      tok.B = t.in.B.select(1, s);
      tok.C = t.in.C.select(1, s);
      Tensor ys = y.select(1, s);
      ops::ssd_step(tok, state, ys);
    }
    EXPECT_LT(rel_err(test::to_vec(y), whole.y), kTol);
    EXPECT_LT(rel_err(test::to_vec(state), whole.state), kTol);
    EXPECT_LT(rel_err(test::to_vec(y), want.y), kTol);
    EXPECT_LT(rel_err(test::to_vec(state), want.state), kTol);
  }
}

TEST(OpsSsd, StepMatchesReference) {
  for (bool with_D : {false, true}) {
    for (int64_t N : {32, 12}) {  // whole vectors of state, and the scalar tail path
      SCOPED_TRACE(::testing::Message() << "D " << with_D << " N " << N);
      Case k;
      k.T = 1;
      k.batch = 3;
      k.H = 6;
      k.G = 2;
      k.P = 16;
      k.N = N;
      k.with_D = with_D;
      k.with_state = true;
      k.strided = true;
      k.dt_min = 0.03;
      k.dt_max = 0.07;
      const Data d = make_data(k);
      const ref::SsdRefOutputs want = ref::ssd_step(d.dims, d.in);
      Tensors t = make_tensors(k, d, /*step=*/true);
      Tensor state = make({k.batch, k.H, k.P, k.N}, d.in.state0);
      Tensor y = test::nan_tensor({k.batch, k.H * k.P}, /*strided=*/true);
      ops::ssd_step(t.in, state, y);
      EXPECT_LT(rel_err(test::to_vec(y), want.y), kTol);
      EXPECT_LT(rel_err(test::to_vec(state), want.state), kTol);
    }
  }
}

TEST(OpsSsd, ShapeAndDtypeErrors) {
  Case k;
  k.T = 10;
  k.with_state = true;
  const Data d = make_data(k);
  auto fresh = [&] { return make_tensors(k, d); };
  Tensor y = Tensor::empty({k.batch, k.T, k.H * k.P});
  Tensor state = Tensor::zeros({k.batch, k.H, k.P, k.N});
  {
    Tensors t = fresh();
    t.in.B = Tensor::empty({k.batch, k.T + 1, k.N});
    t.in.C = Tensor::empty({k.batch, k.T + 1, k.N});
    test::expect_error([&] { ops::ssd(t.in, &state, y); }, {"ssd", "[2, 11, 16]"});
  }
  {
    Tensors t = fresh();
    t.in.x = t.in.x.to(DType::BF16);
    test::expect_error([&] { ops::ssd(t.in, &state, y); }, {"ssd", "BF16"});
  }
  {
    Tensors t = fresh();
    t.in.A = Tensor::zeros({k.H + 1});
    test::expect_error([&] { ops::ssd(t.in, &state, y); }, {"ssd", "[5]"});
  }
  {
    Tensors t = fresh();
    t.in.n_groups = 3;
    test::expect_error([&] { ops::ssd(t.in, &state, y); }, {"ssd", "n_groups 3"});
  }
  {
    Tensors t = fresh();
    Tensor bad_state = Tensor::zeros({k.batch, k.H, k.P, k.N + 1});
    test::expect_error([&] { ops::ssd(t.in, &bad_state, y); }, {"ssd", "[2, 4, 8, 17]"});
  }
  {
    Tensors t = fresh();
    Tensor bad_y = Tensor::empty({k.batch, k.T, k.H * k.P - 1});
    test::expect_error([&] { ops::ssd(t.in, &state, bad_y); }, {"ssd", "[2, 10, 31]"});
  }
  {
    Tensors t = fresh();
    t.in.chunk_size = 0;
    test::expect_error([&] { ops::ssd(t.in, &state, y); }, {"ssd", "chunk_size"});
  }
  {
    Tensors t = make_tensors(k, d);
    ops::SsdInputs tok = t.in;  // sequence tensors handed to the step form
    Tensor ys = Tensor::empty({k.batch, k.H * k.P});
    test::expect_error([&] { ops::ssd_step(tok, state, ys); }, {"ssd_step", "[2, 10, 32]"});
  }
}

}  // namespace
}  // namespace ssm
