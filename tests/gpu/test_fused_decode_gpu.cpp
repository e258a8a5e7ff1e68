// The fused decode ops on the GPU (ops::linear_conv_step, ops::gated_rmsnorm_linear) against the
// unfused CPU ops composed by hand: F32 and BF16, batch 1, 3 and 8 (the one-kernel form for BF16) and 9
// (the composed form), widths that are and are not multiples of the kernels' 8-element pieces (odd
// ones take the composed form), rows longer than one pass of the kernel's loads, n_groups 1 and 2, every
// gate order, accumulate, NaN-poisoned outputs, two steps in a row (the conv state advanced).
#include <string>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"

namespace ssm {
namespace {

using namespace gpu_test;

struct ConvStepCase {
  int64_t batch, K, N, conv_offset, channels, taps;
  bool norm, bias, column_scale;
};

std::string describe_case(const ConvStepCase& c, DType dt) {
  return fmt::format("linear_conv_step {} batch {} K {} N {} conv [{}, +{}) taps {} norm {} bias {} scale {}",
                     dtype_name(dt), c.batch, c.K, c.N, c.conv_offset, c.channels, c.taps, c.norm, c.bias,
                     c.column_scale);
}

class LinearConvStepGpu : public ::testing::TestWithParam<std::tuple<DType, ConvStepCase>> {};

TEST_P(LinearConvStepGpu, MatchesTheUnfusedCpuOps) {
  require_gpu();
  const auto [dt, c] = GetParam();
  SCOPED_TRACE(describe_case(c, dt));
  Rng rng(uint64_t(c.batch * 1009 + c.K * 31 + c.N));
  const Tensor w = rounded(random_cpu({c.N, c.K}, rng, -0.1, 0.1), dt);
  const Tensor norm = c.norm ? random_cpu({c.K}, rng, 0.5, 1.5) : Tensor();
  const Tensor bias = c.bias ? random_cpu({c.N}, rng) : Tensor();
  const Tensor scale = c.column_scale ? random_cpu({c.N}, rng, 0.5, 2.0) : Tensor();
  const Tensor conv_w = random_cpu({c.channels, c.taps}, rng, -0.5, 0.5), conv_b = random_cpu({c.channels}, rng);
  Tensor cpu_state = random_cpu({c.batch, c.taps - 1, c.channels}, rng);
  Tensor gpu_state = to_gpu(cpu_state);

  ops::LinearConvStep gpu_p;
  gpu_p.norm_weight = c.norm ? to_gpu(norm) : Tensor();
  gpu_p.norm_eps = 1e-5f;
  gpu_p.weight = to_gpu(w, dt);
  gpu_p.bias = c.bias ? to_gpu(bias) : Tensor();
  gpu_p.column_scale = c.column_scale ? to_gpu(scale) : Tensor();
  gpu_p.conv_offset = c.conv_offset;
  gpu_p.conv_weight = to_gpu(conv_w);
  gpu_p.conv_bias = to_gpu(conv_b);

  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE(fmt::format("step {}", step));
    const Tensor x = rounded(random_cpu({c.batch, c.K}, rng, -2, 2), dt);
    // The unfused CPU ops: rmsnorm, linear, scale_columns, the conv step over the conv's columns.
    Tensor input = x;
    if (c.norm) {
      input = Tensor::empty({c.batch, c.K});
      ops::rmsnorm(x, norm, 1e-5f, input);
    }
    Tensor want = Tensor::empty({c.batch, c.N});
    ops::linear(input, w, bias, want);
    if (c.column_scale) ops::scale_columns(want, scale);
    const Tensor conv_in = want.slice(1, c.conv_offset, c.channels).clone();  // a copy: the conv writes there
    Tensor conv_out = want.slice(1, c.conv_offset, c.channels);
    ops::conv1d_causal_step(conv_in, conv_w, conv_b, true, cpu_state, conv_out);

    Tensor got = nan_gpu({c.batch, c.N}, dt);
    ops::linear_conv_step(to_gpu(x, dt), gpu_p, gpu_state, got);
    EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt)) << "y";
    EXPECT_LT(relative_error(to_cpu(gpu_state), cpu_state), tolerance(dt)) << "conv state";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearConvStepGpu,
    ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                       ::testing::Values(ConvStepCase{1, 64, 200, 64, 120, 4, true, false, false},
                                         ConvStepCase{3, 64, 200, 64, 120, 4, true, true, true},
                                         ConvStepCase{8, 2056, 136, 8, 96, 4, true, false, false},
                                         ConvStepCase{9, 64, 200, 64, 120, 4, true, false, false},
                                         ConvStepCase{1, 2056, 72, 0, 40, 2, false, true, false},
                                         ConvStepCase{3, 37, 101, 13, 71, 4, true, true, false},
                                         ConvStepCase{8, 40, 53, 0, 53, 3, true, false, true})));

struct GatedCase {
  int64_t batch, K, N, groups;
  int gate;  // 0 no z, 1 norm before gate, 2 gate before norm
  bool bias, accumulate, f32_output;
};

class GatedRmsnormLinearGpu : public ::testing::TestWithParam<std::tuple<DType, GatedCase>> {};

TEST_P(GatedRmsnormLinearGpu, MatchesTheUnfusedCpuOps) {
  require_gpu();
  const auto [dt, c] = GetParam();
  SCOPED_TRACE(fmt::format("gated_rmsnorm_linear {} batch {} K {} N {} groups {} gate {} bias {} accumulate {} "
                           "F32 output {}",
                           dtype_name(dt), c.batch, c.K, c.N, c.groups, c.gate, c.bias, c.accumulate, c.f32_output));
  Rng rng(uint64_t(c.batch * 7919 + c.K * 13 + c.N + c.gate));
  const int64_t group_size = c.K / c.groups;
  const bool has_z = c.gate != 0, norm_before_gate = c.gate == 1;
  const Tensor x = rounded(random_cpu({c.batch, c.K}, rng, -2, 2), dt);
  const Tensor z = rounded(random_cpu({c.batch, c.K}, rng, -3, 3), dt);
  const Tensor norm = random_cpu({c.K}, rng, 0.5, 1.5), w = rounded(random_cpu({c.N, c.K}, rng, -0.1, 0.1), dt);
  const Tensor bias = c.bias ? random_cpu({c.N}, rng) : Tensor();
  const DType out_dt = c.f32_output ? DType::F32 : dt;
  const Tensor y0 = rounded(random_cpu({c.batch, c.N}, rng, -2, 2), out_dt);

  Tensor gated = Tensor::empty({c.batch, c.K}), want = y0.clone();
  ops::gated_rmsnorm(x, has_z ? z : Tensor(), norm, group_size, norm_before_gate, 1e-5f, gated);
  ops::linear(gated, w, bias, want, c.accumulate);

  Tensor got = c.accumulate ? to_gpu(y0, out_dt) : nan_gpu({c.batch, c.N}, out_dt);
  ops::gated_rmsnorm_linear(to_gpu(x, dt), has_z ? to_gpu(z, dt) : Tensor(), to_gpu(norm), group_size,
                            norm_before_gate, 1e-5f, to_gpu(w, dt), c.bias ? to_gpu(bias) : Tensor(), got,
                            c.accumulate);
  const Tensor got_host = to_cpu(got);
  EXPECT_LT(relative_error(got_host, want), tolerance(dt));
  // What was added, on its own, so that the start values do not hide an error in it.
  if (c.accumulate) {
    EXPECT_LT(relative_error(difference(got_host, y0), difference(want, y0)), 2 * tolerance(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GatedRmsnormLinearGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                                            ::testing::Values(GatedCase{1, 64, 48, 1, 2, false, false, false},
                                                              GatedCase{1, 128, 40, 2, 1, true, true, false},
                                                              GatedCase{3, 128, 40, 2, 2, false, true, true},
                                                              GatedCase{8, 2064, 24, 2, 0, true, false, false},
                                                              GatedCase{8, 4096, 16, 1, 2, false, true, false},
                                                              GatedCase{9, 64, 48, 2, 2, true, true, false},
                                                              GatedCase{3, 37, 21, 1, 2, true, false, false},
                                                              GatedCase{3, 36, 21, 2, 1, false, false, true})));

struct ScanStepCase {
  int64_t batch, D, N, R;
  bool gate;
};

class DtProjScanStepGpu : public ::testing::TestWithParam<std::tuple<DType, ScanStepCase>> {};

// Mamba-1's dt_proj and scan step: u, B, C, z and dt_low as column slices of wider rows (as in the mixer).
TEST_P(DtProjScanStepGpu, MatchesTheUnfusedCpuOps) {
  require_gpu();
  const auto [dt, c] = GetParam();
  SCOPED_TRACE(fmt::format("dt_proj_selective_scan_step {} batch {} D {} N {} R {} gate {}", dtype_name(dt), c.batch,
                           c.D, c.N, c.R, c.gate));
  Rng rng(uint64_t(c.batch * 31 + c.D * 7 + c.N));
  const Tensor u = rounded(random_cpu({c.batch, c.D}, rng), dt);
  const Tensor z = rounded(random_cpu({c.batch, c.D}, rng, -2, 2), dt);
  const Tensor B = rounded(random_cpu({c.batch, c.N}, rng), dt), C = rounded(random_cpu({c.batch, c.N}, rng), dt);
  const Tensor dt_low = rounded(random_cpu({c.batch, c.R}, rng), dt);
  const Tensor w = rounded(random_cpu({c.D, c.R}, rng, -0.5, 0.5), dt);
  const Tensor bias = random_cpu({c.D}, rng, -4, -1), A = random_cpu({c.D, c.N}, rng, -3, -0.1);
  const Tensor Dskip = random_cpu({c.D}, rng, 0.5, 1.5);
  Tensor cpu_state = random_cpu({c.batch, c.D, c.N}, rng);
  Tensor gpu_state = to_gpu(cpu_state);

  ops::SelectiveScanInputs in;
  in.u = u, in.B = B, in.C = C, in.z = c.gate ? z : Tensor(), in.delta_bias = bias, in.A = A, in.D = Dskip;
  in.delta = Tensor::empty({c.batch, c.D});
  ops::linear(dt_low, w, Tensor(), in.delta);
  Tensor want = Tensor::empty({c.batch, c.D});
  ops::selective_scan_step(in, cpu_state, want);

  const StridedGpu gu = gpu_rows({c.batch, c.D}, dt, 8, &u), gz = gpu_rows({c.batch, c.D}, dt, 8, &z);
  const StridedGpu gB = gpu_rows({c.batch, c.N}, dt, 3, &B), gC = gpu_rows({c.batch, c.N}, dt, 5, &C);
  const StridedGpu gdt = gpu_rows({c.batch, c.R}, dt, 1, &dt_low);
  ops::SelectiveScanInputs g;
  g.u = gu.view, g.B = gB.view, g.C = gC.view, g.z = c.gate ? gz.view : Tensor();
  g.delta_bias = to_gpu(bias), g.A = to_gpu(A), g.D = to_gpu(Dskip);
  Tensor got = nan_gpu({c.batch, c.D}, dt);
  ops::dt_proj_selective_scan_step(gdt.view, to_gpu(w, dt), g, gpu_state, got);
  EXPECT_LT(relative_error(to_cpu(got), want), tolerance(dt)) << "y";
  EXPECT_LT(relative_error(to_cpu(gpu_state), cpu_state), tolerance(dt)) << "state";
}

INSTANTIATE_TEST_SUITE_P(Shapes, DtProjScanStepGpu,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16),
                                            ::testing::Values(ScanStepCase{1, 1536, 16, 48, true},
                                                              ScanStepCase{3, 200, 16, 13, true},
                                                              ScanStepCase{8, 129, 7, 96, false},
                                                              ScanStepCase{9, 64, 64, 8, true})));

TEST(FusedDecodeGpu, BadInputIsOneClearError) {
  require_gpu();
  Rng rng(17);
  const Tensor x = to_gpu(random_cpu({2, 16}, rng)), w = to_gpu(random_cpu({40, 16}, rng));
  Tensor y = nan_gpu({2, 40});
  ops::LinearConvStep p;
  p.weight = w;
  p.conv_offset = 30;
  p.conv_weight = to_gpu(random_cpu({12, 4}, rng));
  Tensor state = to_gpu(random_cpu({2, 3, 12}, rng));
  try {
    ops::linear_conv_step(x, p, state, y);
    FAIL() << "a conv past y's columns was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear_conv_step"), std::string::npos) << e.what();
  }
  try {
    ops::gated_rmsnorm_linear(x, Tensor(), to_gpu(random_cpu({16}, rng)), 5, false, 1e-5f, w, Tensor(), y);
    FAIL() << "a group size that does not divide the width was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gated_rmsnorm_linear"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ssm
