// ops::mamba3_backward on the GPU (the kernels and their equations are in mamba3_backward_kernels.cuh). dy and the
// activations' gradients in the activation dtype, the parameters' gradients F32 and added to; all arithmetic F32
// (the decay's suffix sums double) and every sum in a fixed order: the same bits every run.
#include <mutex>

#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/mamba3_backward_kernels.cuh"
#include "ops/cuda/mamba3_launch.h"

namespace ssm::ops::cuda {

namespace {

using namespace mamba3_kernels;
using mamba3_launch::Dims;

void check_grads(const char* op, const Dims& d, DType dtype, const Mamba3Grads& g) {
  const auto rows = [&](const Tensor& t, const char* name, int64_t width) {
    if (t.defined())
      SSM_CHECK(is_gpu_rows(t, dtype, {d.B, d.T, width}), "{}: {} must be rows [{}, {}, {}] of x's dtype on the GPU, got {}",
                op, name, d.B, d.T, width, describe(t));
  };
  rows(g.dx, "dx", d.R * d.H * d.P);
  rows(g.dB, "dB", d.R * d.G * d.N);
  rows(g.dC, "dC", d.R * d.G * d.N);
  rows(g.ddt, "ddt", d.H);
  rows(g.dA, "dA", d.H);
  rows(g.dtrap, "dtrap", d.H);
  rows(g.dangles, "dangles", d.S);
  const auto param = [&](const Tensor& t, const char* name, const Shape& shape) {
    if (t.defined())
      SSM_CHECK(t.device() == Device::CUDA && t.dtype() == DType::F32 && t.shape() == shape && t.is_contiguous(),
                "{}: {} must be contiguous F32 {} on the GPU, got {}", op, name, shape_str(shape), describe(t));
  };
  param(g.ddt_bias, "ddt_bias", {d.H});
  param(g.dD, "dD", {d.H});
  param(g.dB_bias, "dB_bias", {d.H, d.R * d.N});
  param(g.dC_bias, "dC_bias", {d.H, d.R * d.N});
}

float* data_or_null(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

}  // namespace

void mamba3_backward(const Mamba3Inputs& in, const Tensor& dy, Mamba3Grads& grads) {
  const char* op = "mamba3_backward";
  const Dims d = mamba3_launch::check(op, in, nullptr, dy, false, "dy");
  SSM_CHECK(d.R <= kMaxRank, "{}: the GPU backward takes at most {} ranks, got {}", op, kMaxRank, d.R);
  check_grads(op, d, in.x.dtype(), grads);
  if (d.B == 0 || d.T == 0) return;
  const Layout lay = mamba3_launch::threads_of(d);
  const int64_t row_blocks = (d.P + lay.rows - 1) / lay.rows, BH = d.B * d.H, RN = d.R * d.N, RR = d.R * d.R;
  const int warps = lay.threads / 32;
  const size_t shared_bytes =
      BackStaged::floats(int(d.R), int(d.N), lay.rows, int(d.S), warps) * sizeof(float);
  SSM_CHECK(shared_bytes <= shared_memory_per_block(),
            "{}: {} ranks of d_state {} need {} bytes of shared memory a block, more than the GPU's {}", op, d.R, d.N,
            shared_bytes, shared_memory_per_block());

  // The scratch, one allocation: per (sequence, head) and token, the sums of phases 1-3 (the kernels' header).
  const int64_t BT = BH * d.T, parts = BT * row_blocks;
  const int64_t sizes[] = {BT * d.S,  parts * RN, parts * RR, parts * RN, parts, BT * RR, BT * RN,
                           BT * RN,   BT * d.S,   BT,         BT * d.S,   BH,    BH};
  int64_t total = 0;
  for (int64_t s : sizes) total += (s + 3) / 4 * 4;  // each 16-byte aligned
  const Tensor scratch = Tensor::empty({total}, DType::F32, Device::CUDA);
  float* next = scratch.data<float>();
  with_activation_type(in.x.dtype(), op, [&]<class T>() {
    const Args<T> a = mamba3_launch::args_of<T>(in, d, Tensor());
    BackArgs<T> g{};
    g.dy = rows_of<const T>(dy);
    g.dx = optional_rows_of<T>(grads.dx);
    g.dB = optional_rows_of<T>(grads.dB);
    g.dC = optional_rows_of<T>(grads.dC);
    g.ddt = optional_rows_of<T>(grads.ddt);
    g.dA = optional_rows_of<T>(grads.dA);
    g.dtrap = optional_rows_of<T>(grads.dtrap);
    g.dangles = optional_rows_of<T>(grads.dangles);
    g.ddt_bias = data_or_null(grads.ddt_bias);
    g.dB_bias = data_or_null(grads.dB_bias);
    g.dC_bias = data_or_null(grads.dC_bias);
    g.dD = data_or_null(grads.dD);
    g.batch = int(d.B);
    g.row_blocks = int(row_blocks);
    float** targets[] = {&g.phi,     &g.dq_part, &g.xdy_part, &g.w_part,       &g.q_part,  &g.kq,           &g.dk_head,
                         &g.dq_head, &g.dphi,    &g.e,        &g.dangles_head, &g.head_dD, &g.head_ddt_bias};
    for (int i = 0; i < 13; ++i) {
      *targets[i] = next;
      next += (sizes[i] + 3) / 4 * 4;
    }

    static std::once_flag allowed;
    std::call_once(allowed, [op] {
      for (auto* kernel : {&forward_walk_kernel<T>, &backward_walk_kernel<T>})
        SSM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            int(shared_memory_per_block())),
                       "{}: allowing the GPU's shared memory", op);
    });
    const dim3 walks(unsigned(row_blocks), 1, unsigned(BH));
    forward_walk_kernel<T><<<walks, unsigned(lay.threads), shared_bytes, stream()>>>(a, g, lay);
    SSM_CUDA_CHECK_LAUNCH("{}: the forward walk of B {} T {} heads {} P {} N {} rank {}", op, d.B, d.T, d.H, d.P, d.N,
                          d.R);
    backward_walk_kernel<T><<<walks, unsigned(lay.threads), shared_bytes, stream()>>>(a, g, lay);
    SSM_CUDA_CHECK_LAUNCH("{}: the backward walk of B {} T {} heads {} P {} N {} rank {}", op, d.B, d.T, d.H, d.P,
                          d.N, d.R);
    tokens_kernel<T><<<dim3(blocks_for(d.T, kTileTokens), unsigned(BH)), 128, kTileTokens * 4 * sizeof(float), stream()>>>(
        a, g);
    SSM_CUDA_CHECK_LAUNCH("{}: the tokens' k and q gradients of B {} T {} heads {}", op, d.B, d.T, d.H);
    scalars_kernel<T><<<unsigned(BH), unsigned((std::max<int64_t>(d.S, 32) + 31) / 32 * 32),
                        kScalarTile * d.S * sizeof(float), stream()>>>(a, g);
    SSM_CUDA_CHECK_LAUNCH("{}: the scalars' gradients of B {} T {} heads {}", op, d.B, d.T, d.H);
    const int64_t head_sums = d.B * d.T * (2 * d.R * d.G * d.N + d.S);
    head_sums_kernel<T><<<blocks_for(head_sums, 256), 256, 0, stream()>>>(a, g);
    SSM_CUDA_CHECK_LAUNCH("{}: the sums over heads of B {} T {} heads {}", op, d.B, d.T, d.H);
    parameter_sums_kernel<T><<<blocks_for(d.H * (2 * RN + 2), 128), 128, 0, stream()>>>(a, g);
    SSM_CUDA_CHECK_LAUNCH("{}: the parameters' sums of B {} T {} heads {}", op, d.B, d.T, d.H);
  });
}

}  // namespace ssm::ops::cuda
