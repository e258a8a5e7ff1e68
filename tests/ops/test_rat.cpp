// ops::rat (chunked) and ops::rat_step against the plain O(T²) double reference in ops/ref/rat.h,
// plus self-consistency: step = forward token by token, prefill in pieces = in one piece, a decode
// batch whose sequences are at different positions, and the one-chunk case being a gated RNN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "ops/ref/rat.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using test::Vec;

struct Case {
  int64_t batch = 2, T = 23, H = 4, G = 2, dh = 8, L = 4;
  bool strided = false;
  double qk_scale = 1.0;       // spread of q and k (large: peaked softmax)
  double softmax_scale = 0.0;  // 0: dh^-1/2
  uint64_t seed = 1;
};

Vec rounded_normal(Rng& rng, int64_t n, double scale = 1.0) {
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = double(float(scale * double(rng.normal())));
  return v;
}

// Random inputs as doubles already rounded to float; the gate bias as the authors initialise it.
struct Data {
  ref::RatDims dims;
  ref::RatRefInputs in;
};

Data make_data(const Case& k) {
  Rng rng(k.seed);
  Data d;
  d.dims = {k.batch, k.T, k.H, k.G, k.dh, k.L};
  const int64_t W = k.H * k.dh, QW = k.G * k.dh, rows = k.batch * k.T;
  d.in.q = rounded_normal(rng, rows * QW, k.qk_scale);
  d.in.k = rounded_normal(rng, rows * QW, k.qk_scale);
  d.in.v = rounded_normal(rng, rows * W);
  d.in.g = rounded_normal(rng, rows * W);
  d.in.gate_bias = test::uniform_vec(rng, W, 1.0, 15.0);
  for (double& b : d.in.gate_bias) b = double(float(std::log(b)));
  d.in.softmax_scale = double(float(k.softmax_scale));
  return d;
}

// The rows [t0, t0 + n) of every sequence of a [batch, T, width] vector.
Vec rows_of(const Vec& v, int64_t batch, int64_t T, int64_t width, int64_t t0, int64_t n) {
  Vec out;
  for (int64_t b = 0; b < batch; ++b)
    out.insert(out.end(), v.begin() + (b * T + t0) * width, v.begin() + (b * T + t0 + n) * width);
  return out;
}

// Op inputs holding `data` rows [t0, t0 + n) (n < 0: all), or for the step [batch, width] of row t0. Strided:
// column slices of one NaN-padded wide tensor laid out as RAT's in_proj output [pad | z | v | g | q | k | pad].
ops::RatInputs make_inputs(const Case& k, const Data& data, int64_t t0 = 0, int64_t n = -1, bool step = false) {
  if (step) n = 1;
  if (n < 0) n = k.T;
  const int64_t W = k.H * k.dh, QW = k.G * k.dh;
  const Shape lead = step ? Shape{k.batch} : Shape{k.batch, n};
  auto shape = [&](int64_t width) {
    Shape s = lead;
    s.push_back(width);
    return s;
  };
  ops::RatInputs in;
  if (k.strided) {
    const int64_t pad = 3, axis = int64_t(lead.size());
    const Tensor wide = test::nan_tensor(shape(pad + 3 * W + 2 * QW + 5));
    in.v = wide.slice(axis, pad + W, W);
    in.g = wide.slice(axis, pad + 2 * W, W);
    in.q = wide.slice(axis, pad + 3 * W, QW);
    in.k = wide.slice(axis, pad + 3 * W + QW, QW);
  } else {
    in.v = Tensor::empty(shape(W));
    in.g = Tensor::empty(shape(W));
    in.q = Tensor::empty(shape(QW));
    in.k = Tensor::empty(shape(QW));
  }
  test::fill_rows(in.v, rows_of(data.in.v, k.batch, k.T, W, t0, n));
  test::fill_rows(in.g, rows_of(data.in.g, k.batch, k.T, W, t0, n));
  test::fill_rows(in.q, rows_of(data.in.q, k.batch, k.T, QW, t0, n));
  test::fill_rows(in.k, rows_of(data.in.k, k.batch, k.T, QW, t0, n));
  in.gate_bias = test::from_vec(data.in.gate_bias, {W});
  in.n_heads = k.H;
  in.n_groups = k.G;
  in.chunk_size = k.L;
  in.softmax_scale = float(k.softmax_scale);
  return in;
}

Vec run_forward(const Case& k, const Data& data, ops::RatCache* cache = nullptr) {
  const ops::RatInputs in = make_inputs(k, data);
  Tensor y = test::nan_tensor({k.batch, k.T, k.H * k.dh}, k.strided);
  ops::rat(in, cache, y);
  return test::to_vec(y);
}

constexpr double kTol = 1e-5;

std::string describe(const Case& k) {
  return "batch " + std::to_string(k.batch) + " T " + std::to_string(k.T) + " H " + std::to_string(k.H) + " G " +
         std::to_string(k.G) + " dh " + std::to_string(k.dh) + " L " + std::to_string(k.L) +
         (k.strided ? " strided" : "");
}

void expect_caches_equal(const ops::RatCache& got, const ops::RatCache& want, int64_t finished_chunks) {
  EXPECT_EQ(test::to_vec(got.tokens), test::to_vec(want.tokens));
  EXPECT_LT(test::max_rel_err(test::to_vec(got.key), test::to_vec(want.key)), kTol);
  EXPECT_LT(test::max_rel_err(test::to_vec(got.value), test::to_vec(want.value)), kTol);
  if (finished_chunks == 0) return;
  EXPECT_LT(test::max_rel_err(test::to_vec(got.chunk_keys.slice(1, 0, finished_chunks)),
                              test::to_vec(want.chunk_keys.slice(1, 0, finished_chunks))),
            kTol);
  EXPECT_LT(test::max_rel_err(test::to_vec(got.chunk_values.slice(1, 0, finished_chunks)),
                              test::to_vec(want.chunk_values.slice(1, 0, finished_chunks))),
            kTol);
}

TEST(OpsRat, MatchesReferenceAcrossShapes) {
  int count = 0;
  for (int64_t batch : {1, 2})
    for (int64_t T : {1, 5, 16, 17, 50, 64})
      for (int64_t L : {1, 4, 16})
        for (int64_t G : {1, 2})
          for (int64_t H : {2, 4})
            for (int64_t dh : {8, 16}) {
              Case k;
              k.batch = batch;
              k.T = T;
              k.L = L;
              k.G = G;
              k.H = H;
              k.dh = dh;
              k.strided = ++count % 2 == 0;
              k.seed = uint64_t(count);
              SCOPED_TRACE(describe(k));
              const Data data = make_data(k);
              EXPECT_LT(test::max_rel_err(run_forward(k, data), ref::rat(data.dims, data.in)), kTol);
            }
}

TEST(OpsRat, PeakedScoresAndExplicitScale) {
  for (double softmax_scale : {0.0, 0.7}) {
    Case k;
    k.T = 70;
    k.L = 4;
    k.qk_scale = 4.0;  // scores of several tens: the softmax must subtract its maximum
    k.softmax_scale = softmax_scale;
    k.strided = true;
    SCOPED_TRACE(softmax_scale);
    const Data data = make_data(k);
    EXPECT_LT(test::max_rel_err(run_forward(k, data), ref::rat(data.dims, data.in)), kTol);
  }
}

TEST(OpsRat, HeadSizeOfALargeModel) {
  Case k;
  k.batch = 1;
  k.T = 100;
  k.H = 3;
  k.G = 1;
  k.dh = 64;
  k.L = 16;
  const Data data = make_data(k);
  EXPECT_LT(test::max_rel_err(run_forward(k, data), ref::rat(data.dims, data.in)), kTol);
}

// One chunk covering the sequence: no earlier chunk ends, so the softmax has the single running key
// and y_t = ṽ_t whatever q and k are: a gated RNN.
TEST(OpsRat, OneChunkIsAGatedRnn) {
  for (int64_t L : {37, 64}) {
    Case k;
    k.T = 37;
    k.L = L;
    k.H = 2;
    k.G = 1;
    SCOPED_TRACE(L);
    Data data = make_data(k);
    const Vec y = run_forward(k, data);
    // ṽ straight from the recurrence, in double.
    const int64_t W = k.H * k.dh;
    Vec state(size_t(k.batch * W), 0.0), want;
    for (int64_t b = 0; b < k.batch; ++b)
      for (int64_t t = 0; t < k.T; ++t)
        for (int64_t i = 0; i < W; ++i) {
          const size_t at = size_t((b * k.T + t) * W + i);
          const double a = 1.0 / (1.0 + std::exp(-(data.in.g[at] + data.in.gate_bias[size_t(i)])));
          double& s = state[size_t(b * W + i)];
          s = a * s + (1.0 - a) * data.in.v[at];
          want.push_back(s);
        }
    EXPECT_LT(test::max_rel_err(y, want), kTol);
    // Other queries and keys: the same output, exactly.
    Rng rng(99);
    data.in.q = rounded_normal(rng, int64_t(data.in.q.size()), 3.0);
    data.in.k = rounded_normal(rng, int64_t(data.in.k.size()), 3.0);
    EXPECT_EQ(run_forward(k, data), y);
  }
}

TEST(OpsRat, StepEqualsForwardTokenByToken) {
  for (int64_t L : {1, 4, 5}) {
    Case k;
    k.T = 23;
    k.L = L;
    k.strided = L != 4;
    SCOPED_TRACE(describe(k));
    const Data data = make_data(k);
    ops::RatCache forward_cache = ops::RatCache::zeros(k.batch, k.H * k.dh, k.T / L);
    const Vec whole = run_forward(k, data, &forward_cache);
    EXPECT_LT(test::max_rel_err(whole, run_forward(k, data)), kTol);

    ops::RatCache cache = ops::RatCache::zeros(k.batch, k.H * k.dh, 0);  // grown as decoding goes
    Tensor y = test::nan_tensor({k.batch, k.T, k.H * k.dh});
    for (int64_t t = 0; t < k.T; ++t) {
      cache.reserve((t + 1) / L);
      const ops::RatInputs tok = make_inputs(k, data, t, 1, /*step=*/true);
      Tensor yt = y.select(1, t);
      ops::rat_step(tok, cache, yt);
    }
    EXPECT_LT(test::max_rel_err(test::to_vec(y), whole), kTol);
    EXPECT_LT(test::max_rel_err(test::to_vec(y), ref::rat(data.dims, data.in)), kTol);
    EXPECT_GE(cache.capacity(), k.T / L);
    expect_caches_equal(cache, forward_cache, k.T / L);
  }
}

TEST(OpsRat, PrefillInPiecesEqualsOnePiece) {
  for (int64_t L : {4, 16}) {
    Case k;
    k.T = 41;
    k.L = L;
    k.strided = L == 16;
    SCOPED_TRACE(L);
    const Data data = make_data(k);
    ops::RatCache whole_cache = ops::RatCache::zeros(k.batch, k.H * k.dh, k.T / L);
    const Vec whole = run_forward(k, data, &whole_cache);

    ops::RatCache cache = ops::RatCache::zeros(k.batch, k.H * k.dh, k.T / L);
    const int64_t W = k.H * k.dh;
    Vec y(size_t(k.batch * k.T * W));
    int64_t t0 = 0;
    for (int64_t n : {7, 0, 13, 3, 18}) {  // odd lengths, stopping mid-chunk; an empty piece
      const ops::RatInputs piece = make_inputs(k, data, t0, n);
      Tensor yp = test::nan_tensor({k.batch, n, W});
      ops::rat(piece, &cache, yp);
      const Vec part = test::to_vec(yp);
      for (int64_t b = 0; b < k.batch; ++b)
        std::copy_n(part.begin() + b * n * W, n * W, y.begin() + (b * k.T + t0) * W);
      t0 += n;
    }
    ASSERT_EQ(t0, k.T);
    EXPECT_LT(test::max_rel_err(y, whole), kTol);
    expect_caches_equal(cache, whole_cache, k.T / L);
  }
}

// Two sequences prefilled separately to different lengths, then decoded as one batch: a forward
// piece and steps, against the reference on each whole sequence.
TEST(OpsRat, BatchOfSequencesAtDifferentPositions) {
  const int64_t L = 4, prefix[2] = {9, 22}, more = 11, steps = 5;
  Case single;
  single.batch = 1;
  single.L = L;
  const int64_t W = single.H * single.dh;
  Data data[2];
  for (int b = 0; b < 2; ++b) {
    Case k = single;
    k.T = prefix[b] + more + steps;
    k.seed = 40 + uint64_t(b);
    data[b] = make_data(k);
  }
  data[1].in.gate_bias = data[0].in.gate_bias;        // one layer: one gate bias
  auto part_of = [&](int b, int64_t t0, int64_t n) {  // Data of sequence b's rows [t0, t0 + n)
    Data p = data[b];
    const int64_t T = data[b].dims.T, QW = single.G * single.dh;
    p.dims.T = n;
    p.in.q = rows_of(data[b].in.q, 1, T, QW, t0, n);
    p.in.k = rows_of(data[b].in.k, 1, T, QW, t0, n);
    p.in.v = rows_of(data[b].in.v, 1, T, W, t0, n);
    p.in.g = rows_of(data[b].in.g, 1, T, W, t0, n);
    return p;
  };
  auto join = [&](const Data& a, const Data& b) {  // two batch-1 Data of equal T as one batch
    Data j = a;
    j.dims.batch = 2;
    for (auto [to, from] : {std::pair{&j.in.q, &b.in.q}, {&j.in.k, &b.in.k}, {&j.in.v, &b.in.v}, {&j.in.g, &b.in.g}})
      to->insert(to->end(), from->begin(), from->end());
    return j;
  };

  // Prefill each sequence alone, then put both caches into one.
  const int64_t capacity = (std::max(prefix[0], prefix[1]) + more + steps) / L;
  ops::RatCache cache = ops::RatCache::zeros(2, W, capacity);
  for (int b = 0; b < 2; ++b) {
    Case k = single;
    k.T = prefix[b];
    ops::RatCache one = ops::RatCache::zeros(1, W, capacity);
    run_forward(k, part_of(b, 0, prefix[b]), &one);
    for (auto [to, from] : {std::pair{&cache.chunk_keys, &one.chunk_keys},
                            {&cache.chunk_values, &one.chunk_values},
                            {&cache.key, &one.key},
                            {&cache.value, &one.value}}) {
      const int64_t n = from->numel();
      std::copy_n(from->data<float>(), n, to->data<float>() + b * n);
    }
    cache.tokens.data<int64_t>()[b] = one.tokens.data<int64_t>()[0];
  }

  Case k = single;
  k.batch = 2;
  k.T = more;
  k.strided = true;
  const Vec y_more = run_forward(k, join(part_of(0, prefix[0], more), part_of(1, prefix[1], more)), &cache);
  std::vector<Vec> y_steps(2);
  for (int64_t s = 0; s < steps; ++s) {
    k.T = 1;
    const Data tok = join(part_of(0, prefix[0] + more + s, 1), part_of(1, prefix[1] + more + s, 1));
    Tensor y = test::nan_tensor({2, W}, true);
    ops::rat_step(make_inputs(k, tok, 0, 1, /*step=*/true), cache, y);
    const Vec yv = test::to_vec(y);
    for (int b = 0; b < 2; ++b)
      y_steps[size_t(b)].insert(y_steps[size_t(b)].end(), yv.begin() + b * W, yv.begin() + (b + 1) * W);
  }
  for (int b = 0; b < 2; ++b) {
    SCOPED_TRACE(b);
    const Vec want = ref::rat(data[b].dims, data[b].in);
    const int64_t T = data[b].dims.T;
    const Vec got_more(y_more.begin() + b * more * W, y_more.begin() + (b + 1) * more * W);
    EXPECT_LT(test::max_rel_err(got_more, rows_of(want, 1, T, W, prefix[b], more)), kTol);
    EXPECT_LT(test::max_rel_err(y_steps[size_t(b)], rows_of(want, 1, T, W, prefix[b] + more, steps)), kTol);
    EXPECT_EQ(cache.tokens.data<int64_t>()[b], T);
  }
}

TEST(OpsRat, BadInputErrors) {
  Case k;
  k.T = 10;
  const Data data = make_data(k);
  const int64_t W = k.H * k.dh;
  Tensor y = Tensor::empty({k.batch, k.T, W});
  {
    ops::RatInputs in = make_inputs(k, data);
    in.n_groups = 3;
    test::expect_error([&] { ops::rat(in, nullptr, y); }, {"rat:", "n_groups 3 does not divide n_heads 4"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    in.q = Tensor::zeros({k.batch, k.T, k.dh});  // one group's width where two are expected
    test::expect_error([&] { ops::rat(in, nullptr, y); }, {"rat:", "q must be F32 rows [2, 10, 16]", "[2, 10, 8]"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    in.g = Tensor::zeros({k.batch, k.T, W + 2});
    test::expect_error([&] { ops::rat(in, nullptr, y); }, {"rat:", "g must be F32 rows [2, 10, 32]"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    in.n_heads = 5;  // 32 channels are not 5 heads
    in.n_groups = 1;
    test::expect_error([&] { ops::rat(in, nullptr, y); }, {"rat:", "v width 32 is not n_heads 5"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    in.gate_bias = Tensor::zeros({W - 1});
    test::expect_error([&] { ops::rat(in, nullptr, y); }, {"rat:", "gate_bias must be F32 [32]"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    in.v = in.v.to(DType::BF16);
    test::expect_error([&] { ops::rat(in, nullptr, y); }, {"rat:", "v must be F32", "BF16"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    Tensor bad_y = Tensor::empty({k.batch, k.T + 1, W});
    test::expect_error([&] { ops::rat(in, nullptr, bad_y); }, {"rat:", "y must be F32 rows", "[2, 11, 32]"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    in.chunk_size = 0;
    test::expect_error([&] { ops::rat(in, nullptr, y); }, {"rat:", "chunk_size"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    ops::RatCache other_batch = ops::RatCache::zeros(3, W, 8);
    test::expect_error([&] { ops::rat(in, &other_batch, y); }, {"rat:", "the cache holds 3 sequences, the inputs 2"});
    Tensor ys = Tensor::empty({k.batch, W});
    const ops::RatInputs tok = make_inputs(k, data, 0, 1, /*step=*/true);
    test::expect_error([&] { ops::rat_step(tok, other_batch, ys); },
                       {"rat_step:", "the cache holds 3 sequences, the inputs 2"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    ops::RatCache small = ops::RatCache::zeros(k.batch, W, 1);  // 10 tokens finish 2 chunks of 4
    test::expect_error([&] { ops::rat(in, &small, y); }, {"rat:", "room for 1 chunks, 2 are needed"});
  }
  {
    ops::RatInputs in = make_inputs(k, data);
    ops::RatCache narrow = ops::RatCache::zeros(k.batch, W - 8, 4);
    test::expect_error([&] { ops::rat(in, &narrow, y); }, {"rat:", "cache.key and cache.value", "[2, 32]"});
  }
  {
    const ops::RatInputs seq = make_inputs(k, data);  // sequence tensors handed to the step
    ops::RatCache cache = ops::RatCache::zeros(k.batch, W, 4);
    Tensor ys = Tensor::empty({k.batch, W});
    test::expect_error([&] { ops::rat_step(seq, cache, ys); }, {"rat_step:", "v must be F32 rows [B,H*dh]"});
  }
}

}  // namespace
}  // namespace ssm
