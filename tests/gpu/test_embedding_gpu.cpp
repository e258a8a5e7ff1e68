// ops::embedding on the GPU against the CPU op: F32 and BF16 tables into F32 and BF16 activations,
// odd widths, strided outputs, and ids outside the vocabulary (a NaN row, then the CPU op's error from
// check_embedding_ids).
#include <string>
#include <tuple>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

Tensor ids_tensor(const Shape& shape, const std::vector<int32_t>& values) {
  Tensor t = Tensor::empty(shape, DType::I32);
  std::copy(values.begin(), values.end(), t.data<int32_t>());
  return t;
}

// (table dtype, activation dtype)
class EmbeddingGpu : public ::testing::TestWithParam<std::tuple<DType, DType>> {};

TEST_P(EmbeddingGpu, CopiesTheRowsOfTheCpuOp) {
  require_gpu();
  const auto [table_dt, dt] = GetParam();
  Rng rng(3);
  const int64_t vocab = 50;
  for (int64_t width : {1, 7, 33, 1000, 1537}) {
    for (int64_t offset : {0, 3, 8}) {
      SCOPED_TRACE(::testing::Message() << "table [" << vocab << ", " << width << "] " << dtype_name(table_dt)
                                        << ", out " << dtype_name(dt) << ", column offset " << offset);
      const Tensor table = random_cpu({vocab, width}, rng).to(table_dt);
      std::vector<int32_t> values(15);
      for (int32_t& v : values) v = int32_t(rng.below(uint64_t(vocab)));
      values[0] = 0;
      values[14] = int32_t(vocab - 1);
      const Tensor ids = ids_tensor({3, 5}, values);
      Tensor want = Tensor::empty({3, 5, width});
      ops::embedding(table, ids, want);

      StridedGpu out = strided_gpu({3, 5, width}, dt, offset);
      Tensor got = offset ? out.view : nan_gpu({3, 5, width}, dt);
      ops::embedding(to_gpu(table, table_dt), to_gpu(ids, DType::I32), got);
      // A copy: exactly the table's values rounded to the activation dtype.
      EXPECT_EQ(relative_error(to_cpu(got), rounded(want, dt)), 0.0);
      if (offset) {
        EXPECT_TRUE(out.padding_untouched());
      }
      EXPECT_NO_THROW(ops::check_embedding_ids(Device::CUDA));
    }
  }
}

TEST_P(EmbeddingGpu, AnIdOutsideTheVocabularyGivesNanAndTheCpuError) {
  require_gpu();
  const auto [table_dt, dt] = GetParam();
  Rng rng(4);
  const Tensor table = random_cpu({50, 24}, rng).to(table_dt);
  const std::vector<int32_t> values{1, 49, 60, 7, -1, 0};
  Tensor got = nan_gpu({6, 24}, dt);
  ops::embedding(to_gpu(table, table_dt), to_gpu(ids_tensor({6}, values), DType::I32), got);
  // The first bad id by position is reported, with the CPU op's words.
  test::expect_error([] { ops::check_embedding_ids(Device::CUDA); },
                     {"embedding: id 60 at position 2 is outside the vocabulary [0, 50)"});
  EXPECT_NO_THROW(ops::check_embedding_ids(Device::CUDA)) << "the check must clear what it reported";
  Tensor cpu_out = Tensor::empty({6, 24});
  test::expect_error([&] { ops::embedding(table, ids_tensor({6}, values), cpu_out); },
                     {"embedding: id 60 at position 2 is outside the vocabulary [0, 50)"});

  const Tensor host = to_cpu(got), table_values = rounded(table, dt);
  for (int64_t r = 0; r < 6; ++r) {
    const bool bad = values[size_t(r)] < 0 || values[size_t(r)] >= 50;
    for (int64_t c = 0; c < 24; ++c) {
      const float v = host.data<float>()[r * 24 + c];
      if (bad) {
        EXPECT_TRUE(std::isnan(v)) << "row " << r << " of bad id " << values[size_t(r)];
      } else {
        EXPECT_EQ(v, table_values.data<float>()[values[size_t(r)] * 24 + c]) << "row " << r;
      }
    }
  }
  // A later good call is not blamed for the earlier bad one.
  Tensor first_rows = got.slice(0, 0, 2);
  ops::embedding(to_gpu(table, table_dt), to_gpu(ids_tensor({2}, {3, 4}), DType::I32), first_rows);
  EXPECT_NO_THROW(ops::check_embedding_ids(Device::CUDA));
}

TEST(EmbeddingGpuErrors, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(5);
  const Tensor table = to_gpu(random_cpu({10, 8}, rng));
  const Tensor ids = to_gpu(ids_tensor({3}, {1, 2, 3}), DType::I32);
  Tensor out = nan_gpu({3, 8});
  // Mixed devices, whichever side the output is on.
  test::expect_error([&] { ops::embedding(random_cpu({10, 8}, rng), ids, out); }, {"embedding", "GPU"});
  Tensor cpu_out = Tensor::empty({3, 8});
  test::expect_error([&] { ops::embedding(table, ids_tensor({3}, {1, 2, 3}), cpu_out); },
                     {"embedding: table", "on the GPU"});
  const Tensor f16_table = random_cpu({10, 8}, rng).to(DType::F16).to_device(Device::CUDA);
  test::expect_error([&] { ops::embedding(f16_table, ids, out); }, {"embedding", "F32 or BF16", "F16"});
  const Tensor i64_ids = ids_tensor({3}, {1, 2, 3}).to(DType::I64).to_device(Device::CUDA);
  test::expect_error([&] { ops::embedding(table, i64_ids, out); }, {"embedding", "I32"});
  Tensor wrong = nan_gpu({3, 9});
  test::expect_error([&] { ops::embedding(table, ids, wrong); }, {"embedding", "out", "[3, 8]"});
  Tensor f16_out = Tensor::empty({3, 8}, DType::F16, Device::CUDA);
  test::expect_error([&] { ops::embedding(table, ids, f16_out); }, {"embedding", "F32 or BF16"});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmbeddingGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                                            ::testing::Values(DType::F32, DType::BF16)),
                         [](const auto& info) {
                           return "table" + std::string(dtype_name(std::get<0>(info.param))) + "_out" +
                                  std::string(dtype_name(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace ssm
