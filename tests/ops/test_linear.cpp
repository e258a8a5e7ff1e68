// ops::linear (F32, BF16 and F16 weights), ops::embedding and ops::add_inplace against plain references.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/dtype.h"
#include "ops/cpu/gemm.h"
#include "ops/ops.h"
#include "ops/ref/linear.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using test::Vec;

struct LinearCase {
  Shape lead;  // leading dims of x; M is their product
  int64_t N, K;
};

enum LinearFlags { kBias = 1, kAccumulate = 2, kStrided = 4, kAllLinearFlags = 8 };

// The reference check for each case and each combination of bias, accumulate and strided x/y
// (all, or only `only_flags`); w in `dtype`.
void check_linear(const std::vector<LinearCase>& cases, DType dtype, uint64_t seed, int only_flags = -1) {
  Rng rng(seed);
  for (const LinearCase& c : cases) {
    Shape x_shape = c.lead, y_shape = c.lead;
    x_shape.push_back(c.K);
    y_shape.push_back(c.N);
    const int64_t M = shape_numel(c.lead);
    for (int flags = 0; flags < kAllLinearFlags; ++flags) {
      if (only_flags >= 0 && flags != only_flags) continue;
      const bool with_bias = flags & kBias, accumulate = flags & kAccumulate, strided = flags & kStrided;
      const Tensor x = test::random_tensor(x_shape, rng, -1, 1, strided);
      const Tensor w = test::random_tensor({c.N, c.K}, rng).to(dtype);
      const Tensor bias = with_bias ? test::random_tensor({c.N}, rng) : Tensor();
      // Without accumulate y starts as NaN, which must not leak into the result.
      Tensor y = accumulate ? test::random_tensor(y_shape, rng, -1, 1, strided) : test::nan_tensor(y_shape, strided);
      const Vec y0 = test::to_vec(y);
      ops::linear(x, w, bias, y, accumulate);
      // The reference sees the weights as stored (rounded to 16 bits), and x and w rounded to bf16
      // where the product goes through a bf16 GEMM.
      Vec xv = test::to_vec(x), wv = test::to_vec(w);
      if (ops::gemm::linear_rounds_x_to_bf16(dtype, M)) {
        for (Vec* v : {&xv, &wv})
          for (double& e : *v) e = double(bf16_to_f32(f32_to_bf16(float(e))));
      }
      Vec want = ref::linear(xv, wv, test::to_vec(bias), M, c.N, c.K);
      if (accumulate) {
        for (size_t i = 0; i < want.size(); ++i) want[i] += y0[i];
      }
      EXPECT_LT(test::max_rel_err(test::to_vec(y), want), 1e-5)
          << fmt::format("M {} N {} K {} {} bias {} accumulate {} strided {}", M, c.N, c.K, dtype_name(dtype),
                         with_bias, accumulate, strided);
    }
  }
}

TEST(OpsLinear, MatchesReferenceF32) {
  // M = 1..95: the streaming kernel (one pass of x rows, several, a partial last one; weight blocks of
  // 24 rows and a partial last one; small N, whose passes are split among the threads); 96 on: sgemm.
  check_linear({{{1}, 33, 17},
                {{2}, 5, 64},
                {{7}, 130, 48},
                {{2, 7}, 65, 100},
                {{61}, 70, 37},
                {{95}, 200, 20},
                {{64}, 3, 200},
                {{130}, 31, 7},
                {{3, 33}, 24, 40}},
               DType::F32, 1);
}

// Below the GEMM's row count each output row is the same sum however many rows the product has (the
// streaming kernel's tiles and threads do not change a row's arithmetic): a sequence decoded in a
// batch gets what it gets alone.
TEST(OpsLinear, StreamingRowsDoNotDependOnTheBatch) {
  Rng rng(14);
  for (DType dtype : {DType::F32, DType::BF16}) {
    const int64_t N = 75, K = 90, M = ops::gemm::linear_min_rows(dtype) - 1;
    const Tensor x = test::random_tensor({M, K}, rng);
    const Tensor w = test::random_tensor({N, K}, rng).to(dtype);
    const Tensor bias = test::random_tensor({N}, rng);
    Tensor all = test::nan_tensor({M, N});
    ops::linear(x, w, bias, all);
    for (int64_t rows : {int64_t(1), int64_t(3), int64_t(9), M}) {
      for (int64_t m0 = 0; m0 + rows <= M; m0 += rows) {
        Tensor some = test::nan_tensor({rows, N});
        ops::linear(x.slice(0, m0, rows), w, bias, some);
        EXPECT_EQ(test::to_vec(some), test::to_vec(all.slice(0, m0, rows)))
            << dtype_name(dtype) << " rows " << m0 << ".." << m0 + rows << " of " << M;
      }
    }
  }
}

// 16-bit weights: M = 1..8 one pass of the streaming kernel (N tails of its row tiles, K tails of
// its 16 lanes); 9 and on several passes; from 16 (bf16 GEMM) or 96 (widened for sgemm) a GEMM.
std::vector<LinearCase> sixteen_bit_cases() {
  std::vector<LinearCase> cases;
  for (int64_t M : {1, 2, 3, 4, 5, 7, 8}) cases.push_back({{M}, 37, 100});
  cases.push_back({{1}, 64, 768});
  cases.push_back({{2}, 9, 7});
  cases.push_back({{9}, 37, 100});
  cases.push_back({{16}, 23, 29});
  cases.push_back({{77}, 300, 48});
  cases.push_back({{7, 11}, 45, 33});
  cases.push_back({{100}, 45, 33});
  cases.push_back({{130}, 45, 33});
  cases.push_back({{2, 65}, 20, 70});
  cases.push_back({{600}, 19, 41});
  return cases;
}

TEST(OpsLinear, MatchesReferenceBF16) { check_linear(sixteen_bit_cases(), DType::BF16, 2); }
TEST(OpsLinear, MatchesReferenceF16) { check_linear(sixteen_bit_cases(), DType::F16, 12); }

TEST(OpsLinear, MatchesReferenceAtModelRowCounts) {
  // The row counts of decode (1, 2, 7 sequences) and prefill (100, 600 tokens), odd N and K.
  std::vector<LinearCase> cases;
  for (int64_t M : {1, 2, 7, 100, 600}) cases.push_back({{M}, 131, 77});
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) check_linear(cases, dtype, 13, kBias | kStrided);
}

TEST(OpsLinear, Large16BitWeightSpansSeveralBlocks) {
  // More weight rows than one converted block (4M elements: 512 rows at K = 8192) holds.
  for (DType dtype : {DType::BF16, DType::F16})
    check_linear({{{96}, 600, 8192}}, dtype, 3, kBias | kAccumulate | kStrided);
}

TEST(OpsLinear, EmptyInnerDimensionGivesBias) {
  Rng rng(4);
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t M : {1, 12, 130}) {
      const Tensor x = Tensor::empty({M, 0});
      const Tensor w = Tensor::empty({6, 0}, dtype);
      const Tensor bias = test::random_tensor({6}, rng);
      Tensor y = test::nan_tensor({M, 6});
      ops::linear(x, w, bias, y);
      Vec want;
      for (int64_t m = 0; m < M; ++m) {
        const Vec b = test::to_vec(bias);
        want.insert(want.end(), b.begin(), b.end());
      }
      EXPECT_EQ(test::to_vec(y), want) << dtype_name(dtype) << " M " << M;
    }
  }
}

TEST(OpsLinear, RejectsMismatchedShapes) {
  Rng rng(5);
  const Tensor x = test::random_tensor({3, 8}, rng);
  const Tensor w = test::random_tensor({4, 9}, rng);
  Tensor y = Tensor::empty({3, 4});
  test::expect_error([&] { ops::linear(x, w, Tensor(), y); }, {"linear", "[3, 8]", "[4, 9]"});
  const Tensor w_ok = test::random_tensor({4, 8}, rng);
  Tensor y_bad = Tensor::empty({3, 5});
  test::expect_error([&] { ops::linear(x, w_ok, Tensor(), y_bad); }, {"linear", "[3, 4]", "[3, 5]"});
  const Tensor bias_bad = test::random_tensor({5}, rng);
  test::expect_error([&] { ops::linear(x, w_ok, bias_bad, y); }, {"linear", "bias", "[5]"});
  const Tensor w_int = Tensor::zeros({4, 8}, DType::I32);
  test::expect_error([&] { ops::linear(x, w_int, Tensor(), y); }, {"linear", "I32"});
}

TEST(OpsEmbedding, GathersRows) {
  Rng rng(6);
  const int64_t V = 11, D = 37;  // D: two 16-lane vectors and a tail
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    const Tensor table = test::random_tensor({V, D}, rng).to(dtype);
    Tensor ids = Tensor::empty({2, 3}, DType::I32);
    for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = int32_t(rng.below(uint64_t(V)));
    Tensor out = test::nan_tensor({2, 3, D}, true);
    ops::embedding(table, ids, out);
    const Vec rows = test::to_vec(table), got = test::to_vec(out);
    for (int64_t i = 0; i < ids.numel(); ++i) {
      const int64_t id = ids.data<int32_t>()[i];
      for (int64_t d = 0; d < D; ++d) EXPECT_EQ(got[size_t(i * D + d)], rows[size_t(id * D + d)]);
    }
  }
}

TEST(OpsEmbedding, RejectsOutOfRangeId) {
  Rng rng(7);
  const Tensor table = test::random_tensor({11, 4}, rng);
  for (int32_t bad : {11, -1, 50000}) {
    Tensor ids = Tensor::zeros({3}, DType::I32);
    ids.data<int32_t>()[1] = bad;
    Tensor out = Tensor::empty({3, 4});
    test::expect_error([&] { ops::embedding(table, ids, out); }, {"embedding", "id " + std::to_string(bad)});
  }
}

TEST(OpsAddInplace, MatchesReference) {
  Rng rng(8);
  for (const Shape& shape : {Shape{1}, Shape{7, 33}, Shape{2, 130, 65}}) {
    for (bool strided : {false, true}) {
      Tensor a = test::random_tensor(shape, rng, -1, 1, strided);
      const Tensor b = test::random_tensor(shape, rng, -1, 1, !strided);
      Vec want = test::to_vec(a);
      const Vec bv = test::to_vec(b);
      for (size_t i = 0; i < want.size(); ++i) want[i] = double(float(want[i]) + float(bv[i]));
      ops::add_inplace(a, b);
      EXPECT_EQ(test::to_vec(a), want) << shape_str(shape) << " strided " << strided;
    }
  }
}

TEST(OpsNegExp, MatchesStdExp) {
  Rng rng(9);
  const Tensor x = test::random_tensor({37, 16}, rng, -12, 6, false);
  Tensor y = Tensor::empty(x.shape());
  ops::neg_exp(x, y);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double want = -std::exp(double(x.data<float>()[i]));
    EXPECT_NEAR(y.data<float>()[i], want, 3e-7 * std::fabs(want)) << i;
  }
}

TEST(OpsAddInplace, RejectsMismatchedShapes) {
  Tensor a = Tensor::zeros({2, 3});
  const Tensor b = Tensor::zeros({3, 2});
  test::expect_error([&] { ops::add_inplace(a, b); }, {"add_inplace", "[2, 3]", "[3, 2]"});
}

}  // namespace
}  // namespace ssm
