// ops::embedding_backward on the GPU against the CPU op: ids on the host or the GPU, F32 or BF16
// dout (column slices too), many positions on one id, accumulation onto a random table. The GPU adds
// each id's rows in position order onto the table row, the CPU op's additions in the CPU op's order,
// so the results are compared bit for bit. Ids outside the vocabulary: the CPU op's error (host ids)
// or the embedding's deferred check (GPU ids), never a write out of bounds.
#include <fmt/format.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;

Tensor ids_tensor(const Shape& shape, const std::vector<int32_t>& values) {
  Tensor t = Tensor::empty(shape, DType::I32);
  std::copy(values.begin(), values.end(), t.data<int32_t>());
  return t;
}

// Ids in [0, vocab) where id `crowded` takes about a third of the positions (a frequent token).
std::vector<int32_t> crowded_ids(int64_t count, int64_t vocab, int32_t crowded, Rng& rng) {
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (int32_t& id : ids) id = rng.below(3) == 0 ? crowded : int32_t(rng.below(uint64_t(vocab)));
  return ids;
}

Tensor ids_on(const Tensor& host_ids, bool gpu) { return gpu ? host_ids.to_device(Device::CUDA) : host_ids; }

// (dout dtype, ids on the GPU)
class EmbeddingBackwardGpu : public ::testing::TestWithParam<std::tuple<DType, bool>> {};

TEST_P(EmbeddingBackwardGpu, AddsTheCpuOpsRowsInItsOrder) {
  require_gpu();
  const auto [dt, gpu_ids] = GetParam();
  Rng rng(31);
  struct Shape3 {
    int64_t batch, length, vocab;
  };
  for (const Shape3 s : {Shape3{1, 1, 1}, Shape3{3, 37, 50}, Shape3{2, 2049, 300}, Shape3{1, 5000, 50280}}) {
    for (int64_t width : {1, 7, 33, 1000, 1537}) {
      for (int64_t offset : {0, 3}) {
        SCOPED_TRACE(fmt::format("ids [{}, {}] on the {}, table [{}, {}], dout {}, column offset {}", s.batch, s.length,
                                 gpu_ids ? "GPU" : "host", s.vocab, width, dtype_name(dt), offset));
        const int64_t count = s.batch * s.length;
        const Tensor ids = ids_tensor({s.batch, s.length}, crowded_ids(count, s.vocab, int32_t(s.vocab / 2), rng));
        const Tensor dout = rounded(random_cpu({s.batch, s.length, width}, rng), dt);
        const Tensor table0 = random_cpu({s.vocab, width}, rng);
        Tensor want = table0.clone();
        ops::embedding_backward(ids, dout, want);

        StridedGpu dout_wide;
        Tensor gdout = to_gpu(dout, dt);
        if (offset) {
          dout_wide = strided_gpu({s.batch, s.length, width}, dt, offset, &dout);
          gdout = dout_wide.view;
        }
        Tensor got = to_gpu(table0);
        ops::embedding_backward(ids_on(ids, gpu_ids), gdout, got);
        EXPECT_EQ(relative_error(to_cpu(got), want), 0.0);
        EXPECT_NO_THROW(ops::check_embedding_ids(Device::CUDA));
      }
    }
  }
}

// Every position on one id: one long run, added in position order.
TEST_P(EmbeddingBackwardGpu, AllPositionsOnOneId) {
  require_gpu();
  const auto [dt, gpu_ids] = GetParam();
  Rng rng(32);
  const int64_t count = 3000, vocab = 20, width = 96;
  const Tensor ids = ids_tensor({count}, std::vector<int32_t>(size_t(count), 11));
  const Tensor dout = rounded(random_cpu({count, width}, rng), dt);
  const Tensor table0 = random_cpu({vocab, width}, rng);
  Tensor want = table0.clone();
  ops::embedding_backward(ids, dout, want);
  Tensor got = to_gpu(table0);
  ops::embedding_backward(ids_on(ids, gpu_ids), to_gpu(dout, dt), got);
  EXPECT_EQ(relative_error(to_cpu(got), want), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Placements, EmbeddingBackwardGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_dout_" +
                                  (std::get<1>(info.param) ? "gpu_ids" : "host_ids");
                         });

TEST(EmbeddingBackwardGpu, IdsOutsideTheVocabulary) {
  require_gpu();
  Rng rng(33);
  const int64_t vocab = 50, width = 24;
  const std::vector<int32_t> values{1, 49, 60, 7, -1, 1};
  const Tensor ids = ids_tensor({6}, values);
  const Tensor dout = random_cpu({6, width}, rng);
  const Tensor table0 = random_cpu({vocab, width}, rng);

  // Host ids: the CPU op's error, before the table is touched.
  Tensor got = to_gpu(table0);
  const std::string host_message = "embedding_backward: token id 60 at position 2 is outside [0, 50)";
  Tensor cpu_table = table0.clone();
  test::expect_error([&] { ops::embedding_backward(ids, dout, cpu_table); }, {host_message});
  test::expect_error([&] { ops::embedding_backward(ids, to_gpu(dout), got); }, {host_message});
  EXPECT_EQ(relative_error(to_cpu(got), table0), 0.0);

  // GPU ids: the good ids' rows are added, the bad ones nowhere; the embedding's check reports the
  // first bad position.
  ops::embedding_backward(ids.to_device(Device::CUDA), to_gpu(dout), got);
  test::expect_error([] { ops::check_embedding_ids(Device::CUDA); },
                     {"embedding: id 60 at position 2 is outside the vocabulary [0, 50)"});
  EXPECT_NO_THROW(ops::check_embedding_ids(Device::CUDA)) << "the check must clear what it reported";
  Tensor want = table0.clone();
  for (int64_t i = 0; i < 6; ++i) {
    const int32_t id = values[size_t(i)];
    if (id < 0 || id >= vocab) continue;
    for (int64_t c = 0; c < width; ++c) want.data<float>()[id * width + c] += dout.data<float>()[i * width + c];
  }
  EXPECT_EQ(relative_error(to_cpu(got), want), 0.0);
}

TEST(EmbeddingBackwardGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(34);
  const Tensor ids = ids_tensor({3}, {1, 2, 3});
  const Tensor dout = to_gpu(random_cpu({3, 8}, rng));
  Tensor table = to_gpu(Tensor::zeros({10, 8}));
  Tensor table16 = to_gpu(Tensor::zeros({10, 8}), DType::BF16);
  test::expect_error([&] { ops::embedding_backward(ids, dout, table16); },
                     {"embedding_backward", "dtable must be contiguous F32 [V, D]"});
  const Tensor dout_wrong = to_gpu(random_cpu({3, 9}, rng));
  test::expect_error([&] { ops::embedding_backward(ids, dout_wrong, table); },
                     {"embedding_backward", "dout must be F32 or BF16 rows [3 ids, 8]"});
  const Tensor cpu_dout = random_cpu({3, 8}, rng);
  test::expect_error([&] { ops::embedding_backward(ids, cpu_dout, table); }, {"embedding_backward", "dout"});
  const Tensor i64_ids = ids.to(DType::I64);
  test::expect_error([&] { ops::embedding_backward(i64_ids, dout, table); }, {"embedding_backward", "I32"});
  // GPU ids with a host table: the CPU op refuses them instead of reading GPU memory.
  Tensor cpu_table = Tensor::zeros({10, 8});
  test::expect_error([&] { ops::embedding_backward(ids.to_device(Device::CUDA), cpu_dout, cpu_table); },
                     {"embedding_backward", "ids must be contiguous I32 on the host"});
}

}  // namespace
}  // namespace ssm
