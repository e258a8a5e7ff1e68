// The training bench's accounting: the matrix products' FLOPs of a step and their rate in its table.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

#include "train/bench.h"

namespace ssm {
namespace {

TEST(TrainBench, CountsTheStepsMatrixProductsAndTheirRate) {
  const int64_t batch = 2, seq_len = 16;
  const TrainBenchResult r = bench_training(demo_model_config(), "demo", batch, seq_len, 1, 0);
  // The demo model (d 128, d_inner 256, N 32, 8 heads of 32, one group, 4 layers, 256 bytes): in_proj
  // 128 x (2 x 256 + 2 x 32 + 8), out_proj 256 x 128 per layer, the head 256 x 128; forward and the
  // backward's two products, 2 FLOPs a MAC.
  const double macs_per_token = 4 * (128.0 * 584 + 256.0 * 128) + 256.0 * 128;
  EXPECT_DOUBLE_EQ(r.matmul_flops, 6 * macs_per_token * double(batch * seq_len));
  ASSERT_GT(r.profile.matmul, 0);
  EXPECT_DOUBLE_EQ(r.matmul_flops_per_second(), r.matmul_flops / r.profile.matmul);

  const std::string table = bench_table({r});
  EXPECT_NE(table.find("| optimizer | matmul TFLOP/s |"), std::string::npos) << table;
  const std::string rate = fmt::format("| {:.3g} |\n", r.matmul_flops_per_second() / 1e12);
  EXPECT_NE(table.find(rate), std::string::npos) << table << "\nwants " << rate;
}

}  // namespace
}  // namespace ssm
