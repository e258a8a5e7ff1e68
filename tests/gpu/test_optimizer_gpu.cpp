// The optimizer's ops on the GPU against the CPU ops: AdamW over more tensors than one launch takes
// (with and without decay, with BF16 shadow copies; lengths that are and are not multiples of 4), the sum of squares over tensors spanning several
// partial blocks (and an empty one), acc += a ⊙ b.
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"

namespace ssm {
namespace {

using namespace gpu_test;

TEST(OptimizerGpu, AdamWMatchesTheCpu) {
  require_gpu();
  Rng rng(31);
  constexpr int kTensors = 45;  // more than one launch's batch
  std::vector<Tensor> host_w, host_g, host_m, host_v, gpu_w, gpu_g, gpu_m, gpu_v, host_s, gpu_s;
  for (int i = 0; i < kTensors; ++i) {
    const Shape shape{int64_t(1 + (i * 977) % 9001)};
    host_w.push_back(random_cpu(shape, rng));
    host_g.push_back(random_cpu(shape, rng));
    host_m.push_back(random_cpu(shape, rng, -0.1, 0.1));
    host_v.push_back(random_cpu(shape, rng, 0, 0.1));
    host_s.push_back(Tensor::empty(shape, DType::BF16));
    for (auto [from, to] : {std::pair{&host_w, &gpu_w}, {&host_g, &gpu_g}, {&host_m, &gpu_m}, {&host_v, &gpu_v}})
      to->push_back(to_gpu(from->back()));
    gpu_s.push_back(nan_gpu(shape, DType::BF16));
  }
  std::vector<ops::AdamWTensor> on_cpu, on_gpu;
  for (int i = 0; i < kTensors; ++i) {
    const bool decay = i % 3 != 0, shadow = i % 2 == 0;
    on_cpu.push_back({&host_w[i], &host_g[i], &host_m[i], &host_v[i], decay, shadow ? &host_s[i] : nullptr});
    on_gpu.push_back({&gpu_w[i], &gpu_g[i], &gpu_m[i], &gpu_v[i], decay, shadow ? &gpu_s[i] : nullptr});
  }
  const ops::AdamWStep step{0.9f, 0.95f, 1e-8f, 0.003f, 0.3f, 0.9997f, 0.8f};
  ops::adamw_update(on_cpu, step);
  ops::adamw_update(on_gpu, step);
  for (int i = 0; i < kTensors; ++i) {
    SCOPED_TRACE(::testing::Message() << "tensor " << i << " of " << host_w[i].numel());
    EXPECT_LT(relative_error(to_cpu(gpu_w[i]), host_w[i]), 1e-6);
    EXPECT_LT(relative_error(to_cpu(gpu_m[i]), host_m[i]), 1e-6);
    EXPECT_LT(relative_error(to_cpu(gpu_v[i]), host_v[i]), 1e-6);
    if (i % 2 == 0) {  // the GPU's weights rounded to BF16
      EXPECT_EQ(relative_error(to_cpu(gpu_s[i]), to_cpu(gpu_w[i]).to(DType::BF16).to(DType::F32)), 0.0);
    }
  }
}

TEST(OptimizerGpu, SumOfSquaresMatchesTheCpu) {
  require_gpu();
  Rng rng(32);
  std::vector<Tensor> host, gpu;
  // Lengths that are and are not multiples of 4 (16-byte loads or not), partial blocks, an empty
  // tensor, and more tensors than one launch takes.
  std::vector<int64_t> lengths{1, 65536, 65537, 0, 300001, 300000};
  for (int i = 0; i < 41; ++i) lengths.push_back(1 + (i * 7919) % 70001);
  for (int64_t n : lengths) {
    host.push_back(random_cpu({n}, rng));
    gpu.push_back(to_gpu(host.back()));
  }
  std::vector<const Tensor*> h, g;
  for (size_t i = 0; i < host.size(); ++i) {
    h.push_back(&host[i]);
    g.push_back(&gpu[i]);
  }
  const double want = ops::sum_of_squares(h), got = ops::sum_of_squares(g);
  EXPECT_NEAR(got, want, 1e-12 * want);
  EXPECT_EQ(ops::sum_of_squares(g), got);  // the same bits again
}

TEST(OptimizerGpu, AddProductMatchesTheCpu) {
  require_gpu();
  Rng rng(33);
  Tensor acc = random_cpu({3, 67}, rng), a = random_cpu({3, 67}, rng), b = random_cpu({3, 67}, rng);
  Tensor gpu_acc = to_gpu(acc);
  ops::add_product_inplace(gpu_acc, to_gpu(a), to_gpu(b));
  ops::add_product_inplace(acc, a, b);
  EXPECT_LT(relative_error(to_cpu(gpu_acc), acc), 1e-6);
}

}  // namespace
}  // namespace ssm
