// ops::attention and ops::attention_decode against the double-precision reference in
// ops/ref/attention.h; decode token by token against the forward (growing cache, windowed cache,
// ring-buffer cache); one clear error per kind of bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "ops/ref/attention.h"
#include "ops/test_backward_util.h"  // CaseIndexName
#include "ops/test_util.h"

namespace ssm {
namespace {

using test::Vec;

struct Heads {
  int64_t q, kv;
};

ref::AttentionDims ref_dims(int64_t batch, int64_t T, int64_t S, Heads heads, int64_t head_dim, int64_t window,
                            float scale) {
  ref::AttentionDims dims{batch, T, S, heads.q, heads.kv, head_dim, window};
  dims.scale = double(scale != 0.0f ? scale : 1.0f / std::sqrt(float(head_dim)));  // as the op rounds it
  return dims;
}

// The first S rows of a NaN-filled cache of `capacity` rows: batch stride != S x row stride.
Tensor cache_prefix(const Shape& shape, int64_t capacity, const Vec& values) {
  Tensor cache = test::nan_tensor({shape[0], capacity, shape[2]});
  const int64_t per_batch = shape[1] * shape[2];
  for (int64_t b = 0; b < shape[0]; ++b) {
    Tensor rows = cache.select(0, b).slice(0, 0, shape[1]);
    test::fill_rows(rows, Vec(values.begin() + b * per_batch, values.begin() + (b + 1) * per_batch));
  }
  return cache.slice(1, 0, shape[1]);
}

TEST(OpsAttention, MatchesReference) {
  const int64_t head_dims[] = {16, 64, 80};
  const Heads head_sets[] = {{4, 4}, {6, 2}, {3, 1}};  // MHA, GQA, MQA
  int64_t index = 0;
  for (int64_t T : {1, 7, 65, 200})
    for (int64_t prefix : {0, 37})
      for (int64_t window : {0, 1, 5, 64}) {
        const int64_t hd = head_dims[index % 3], batch = (index / 3) % 2 == 0 ? 1 : 3;
        const Heads heads = head_sets[(index / 2) % 3];
        const bool strided = index % 2 == 1;
        const float scale = index % 5 == 4 ? 0.3f : 0.0f;
        ++index;
        const int64_t S = T + prefix;
        SCOPED_TRACE(::testing::Message()
                     << "B " << batch << " T " << T << " S " << S << " d " << hd << " heads " << heads.q << "/"
                     << heads.kv << " window " << window << (strided ? " strided" : ""));
        Rng rng(uint64_t(1000 + index));
        const Shape q_shape{batch, T, heads.q * hd}, kv_shape{batch, S, heads.kv * hd};
        const Vec qv = test::uniform_vec(rng, shape_numel(q_shape), -2, 2);
        const Vec kv = test::uniform_vec(rng, shape_numel(kv_shape), -2, 2);
        const Vec vv = test::uniform_vec(rng, shape_numel(kv_shape), -1, 1);
        Vec want_lse;
        const Vec want = ref::attention(qv, kv, vv, ref_dims(batch, T, S, heads, hd, window, scale), &want_lse);

        // Strided: q, v and o are column slices of wider rows; k is the first S rows of a bigger cache.
        const Tensor q = test::from_vec(qv, q_shape, strided);
        const Tensor k = strided ? cache_prefix(kv_shape, S + 5, kv) : test::from_vec(kv, kv_shape);
        const Tensor v = test::from_vec(vv, kv_shape, strided);
        Tensor o = test::nan_tensor(q_shape, strided);
        Tensor lse = test::nan_tensor({batch, heads.q, T});
        ops::attention(q, k, v, {heads.q, heads.kv, scale, window}, o, &lse);
        EXPECT_LT(test::max_rel_err(test::to_vec(o), want), 1e-5);
        EXPECT_LT(test::max_rel_err(test::to_vec(lse), want_lse), 1e-5);
      }
}

TEST(OpsAttention, LseIsOptionalAndEmptyInputsAreFine) {
  Rng rng(3);
  const Tensor q = test::random_tensor({2, 9, 32}, rng), k = test::random_tensor({2, 9, 16}, rng),
               v = test::random_tensor({2, 9, 16}, rng);
  Tensor o = test::nan_tensor({2, 9, 32});
  ops::attention(q, k, v, {4, 2, 0.0f, 3}, o);
  const Vec want =
      ref::attention(test::to_vec(q), test::to_vec(k), test::to_vec(v), ref_dims(2, 9, 9, {4, 2}, 8, 3, 0.0f));
  EXPECT_LT(test::max_rel_err(test::to_vec(o), want), 1e-5);

  Tensor o_empty = Tensor::empty({2, 0, 32});
  EXPECT_NO_THROW(
      ops::attention(Tensor::empty({2, 0, 32}), Tensor::empty({2, 4, 16}), Tensor::empty({2, 4, 16}), {4, 2}, o_empty));
}

// Decoding T tokens one at a time into a cache gives the forward's rows. The cache rows beyond the
// valid length are NaN, so reading them would show.
struct DecodeCase {
  int64_t batch, T, head_dim;
  Heads heads;
  int64_t window;
  bool ring;  // the cache is a ring buffer of `window` rows
};

void PrintTo(const DecodeCase& c, std::ostream* os) {
  *os << "B " << c.batch << " T " << c.T << " d " << c.head_dim << " heads " << c.heads.q << "/" << c.heads.kv
      << " window " << c.window << (c.ring ? " ring" : "");
}

class OpsAttentionDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(OpsAttentionDecode, MatchesForwardTokenByToken) {
  const DecodeCase c = GetParam();
  Rng rng(uint64_t(77 + c.T + c.window));
  const int64_t qw = c.heads.q * c.head_dim, kw = c.heads.kv * c.head_dim;
  const Tensor q = test::random_tensor({c.batch, c.T, qw}, rng, -2, 2);
  const Tensor k = test::random_tensor({c.batch, c.T, kw}, rng, -2, 2);
  const Tensor v = test::random_tensor({c.batch, c.T, kw}, rng);
  const ops::AttentionParams params{c.heads.q, c.heads.kv, 0.0f, c.window};
  Tensor want = Tensor::empty({c.batch, c.T, qw});
  ops::attention(q, k, v, params, want);

  const int64_t capacity = c.ring ? c.window : c.T + 3;
  Tensor k_cache = test::nan_tensor({c.batch, capacity, kw}), v_cache = test::nan_tensor({c.batch, capacity, kw});
  Tensor lengths = Tensor::empty({c.batch}, DType::I32);
  for (int64_t t = 0; t < c.T; ++t) {
    const int64_t slot = c.ring ? t % c.window : t;
    for (int64_t b = 0; b < c.batch; ++b) {
      k_cache.select(0, b).select(0, slot).copy_from(k.select(0, b).select(0, t));
      v_cache.select(0, b).select(0, slot).copy_from(v.select(0, b).select(0, t));
      lengths.data<int32_t>()[b] = int32_t(std::min(t + 1, capacity));
    }
    Tensor o = test::nan_tensor({c.batch, qw}, /*strided=*/true);
    ops::attention_decode(q.select(1, t), k_cache, v_cache, lengths, params, o);
    EXPECT_LT(test::max_rel_err(test::to_vec(o), test::to_vec(want.select(1, t))), 1e-5) << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Caches, OpsAttentionDecode,
                         ::testing::Values(DecodeCase{2, 20, 16, {4, 4}, 0, false},
                                           DecodeCase{1, 300, 64, {6, 2}, 0, false},  // 2 chunks
                                           DecodeCase{3, 40, 80, {3, 1}, 7, false},   // window, linear cache
                                           DecodeCase{2, 30, 16, {4, 2}, 8, true},    // ring buffer
                                           DecodeCase{1, 600, 16, {2, 1}, 300, true}),
                         ssm::testing::CaseIndexName());

// Sequences of different lengths in one batch, over contexts longer than one decode chunk.
TEST(OpsAttentionDecodeLong, UnevenLengthsMatchReference) {
  Rng rng(5);
  const int64_t batch = 3, capacity = 700, hd = 64;
  const Heads heads{8, 2};
  const std::vector<int32_t> lens{700, 257, 1};
  Tensor k_cache = test::random_tensor({batch, capacity, heads.kv * hd}, rng, -2, 2);
  Tensor v_cache = test::random_tensor({batch, capacity, heads.kv * hd}, rng);
  const Tensor q = test::random_tensor({batch, heads.q * hd}, rng, -2, 2);
  Tensor lengths = Tensor::empty({batch}, DType::I32);
  std::copy(lens.begin(), lens.end(), lengths.data<int32_t>());
  Tensor o = test::nan_tensor({batch, heads.q * hd});
  ops::attention_decode(q, k_cache, v_cache, lengths, {heads.q, heads.kv}, o);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = lens[size_t(b)];
    // The reference sees the one query as the last of n positions.
    const Vec ks = test::to_vec(k_cache.select(0, b).slice(0, 0, n)),
              vs = test::to_vec(v_cache.select(0, b).slice(0, 0, n));
    const Vec want = ref::attention(test::to_vec(q.select(0, b)), ks, vs, ref_dims(1, 1, n, heads, hd, 0, 0.0f));
    EXPECT_LT(test::max_rel_err(test::to_vec(o.select(0, b)), want), 1e-5) << "sequence " << b;
  }
}

TEST(OpsAttention, RejectsBadInput) {
  const Tensor q = Tensor::zeros({2, 5, 24}), k = Tensor::zeros({2, 7, 12}), v = Tensor::zeros({2, 7, 12});
  Tensor o = Tensor::empty({2, 5, 24});
  test::expect_error([&] { ops::attention(q, k, v, {3, 2}, o); }, {"attention", "n_heads 3", "n_kv_heads 2"});
  test::expect_error([&] { ops::attention(q, k, v, {5, 1}, o); }, {"attention", "q width 24", "n_heads 5"});
  test::expect_error([&] { ops::attention(q, k, v, {4, 1}, o); }, {"attention", "k/v width 12", "head_dim 6"});
  test::expect_error(
      [&] {
        ops::attention(q, Tensor::zeros({2, 4, 12}), v, {4, 2}, o);
      },
      {"attention", "k must be", "S >= T 5", "[2, 4, 12]"});
  test::expect_error(
      [&] {
        ops::attention(q, Tensor::zeros({3, 7, 12}), v, {4, 2}, o);
      },
      {"attention", "k must be", "B 2"});
  test::expect_error(
      [&] {
        ops::attention(q, k, Tensor::zeros({2, 7, 6}), {4, 2}, o);
      },
      {"attention", "v must be", "[2, 7, 6]"});
  Tensor o_bad = Tensor::empty({2, 5, 12});
  test::expect_error([&] { ops::attention(q, k, v, {4, 2}, o_bad); }, {"attention", "o must be", "[2, 5, 12]"});
  Tensor lse_bad = Tensor::empty({2, 5, 4});
  test::expect_error([&] { ops::attention(q, k, v, {4, 2}, o, &lse_bad); }, {"attention", "lse", "[2, 4, 5]"});
  test::expect_error([&] { ops::attention(q, k, v, {4, 2, 0.0f, -1}, o); }, {"attention", "window -1"});

  const Tensor q1 = Tensor::zeros({2, 24}), cache = Tensor::zeros({2, 8, 12});
  Tensor o1 = Tensor::empty({2, 24});
  Tensor lengths = Tensor::empty({2}, DType::I32);
  lengths.data<int32_t>()[0] = 8;
  lengths.data<int32_t>()[1] = 9;
  test::expect_error(
      [&] {
        ops::attention_decode(q1, cache, cache, lengths, {4, 2}, o1);
      },
      {"attention_decode", "lengths[1] = 9", "[1, 8]"});
  lengths.data<int32_t>()[1] = 0;
  test::expect_error(
      [&] {
        ops::attention_decode(q1, cache, cache, lengths, {4, 2}, o1);
      },
      {"attention_decode", "lengths[1] = 0"});
  test::expect_error(
      [&] {
        ops::attention_decode(q1, cache, cache, Tensor::zeros({2}), {4, 2}, o1);
      },
      {"attention_decode", "lengths must be I32 [2]"});
  test::expect_error(
      [&] {
        ops::attention_decode(q1, cache, cache, lengths, {6, 4}, o1);
      },
      {"attention_decode", "n_heads 6", "n_kv_heads 4"});
  test::expect_error(
      [&] {
        ops::attention_decode(q1, Tensor::zeros({1, 8, 12}), cache, lengths, {4, 2}, o1);
      },
      {"attention_decode", "k_cache must be", "B 2"});
  test::expect_error(
      [&] {
        ops::attention_decode(q1, cache, Tensor::zeros({2, 9, 12}), lengths, {4, 2}, o1);
      },
      {"attention_decode", "v_cache must be", "[2, 9, 12]"});
}

}  // namespace
}  // namespace ssm
