// ops::mlstm_backward on the GPU (the kernels and how they split the work are in mlstm_backward_kernels.cuh): the
// forward runs again keeping every token's q̂·n_t and m_t, then the prep, the two walks, the tokens' sums and the
// gates. q, k, v and their gradients in the activation dtype; dh, the gates, their gradients and all arithmetic F32
// (the gates' suffix sums double); every sum in a fixed order: the same bits every run.
#include <algorithm>
#include <mutex>
#include <utility>

#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/mlstm_backward_kernels.cuh"
#include "ops/cuda/mlstm_launch.h"

namespace ssm::ops::cuda {

using namespace mlstm_launch;

void mlstm_backward(const MlstmInputs& in, const Tensor& dh, MlstmGrads& grads) {
  const char* op = "mlstm_backward";
  const Dims d = check(op, in, nullptr, dh, false, "dh");
  const DType dtype = in.q.dtype();
  const Shape qk = in.q.shape(), vs = in.v.shape(), gates = in.i.shape();
  SSM_CHECK(is_gpu_rows(grads.dq, dtype, qk) && is_gpu_rows(grads.dk, dtype, qk) && is_gpu_rows(grads.dv, dtype, vs),
            "{}: dq, dk {} and dv {} must be rows of q's dtype on the GPU, got {}, {} and {}", op, shape_str(qk),
            shape_str(vs), describe(grads.dq), describe(grads.dk), describe(grads.dv));
  SSM_CHECK(is_gpu_rows(grads.di, DType::F32, gates) && is_gpu_rows(grads.df, DType::F32, gates),
            "{}: di and df must be F32 rows {} on the GPU, got {} and {}", op, shape_str(gates), describe(grads.di),
            describe(grads.df));
  SSM_CHECK(d.dk <= kMaxBackwardDk, "{}: the GPU backward takes heads of at most {} query dims, got {}", op,
            kMaxBackwardDk, d.dk);
  if (d.B == 0 || d.T == 0) return;
  const int64_t BH = d.B * d.H, BT = d.B * d.T, tokens = BH * d.T;
  const int tiles = int((d.dv + 1 + kWalkCols - 1) / kWalkCols);  // C's columns and n's
  const int64_t slice = BT * d.H * d.dk;
  // The forward's output h, and one scratch allocation: the per-token scalars, the tiles' shares of dq and dk.
  Tensor h = Tensor::empty({d.B, d.T, d.H * d.dv}, DType::F32, Device::CUDA);
  const Tensor scratch = Tensor::empty({10 * tokens + 2 * tiles * slice}, DType::F32, Device::CUDA);
  float* s = scratch.data<float>();
  const auto next = [&](int64_t count) { return std::exchange(s, s + count); };
  TokenScalars scalars{};
  float* dots = next(tokens);
  float* ms = next(tokens);
  scalars.dots = dots;
  scalars.ms = ms;
  for (float** p : {&scalars.forget, &scalars.input, &scalars.inv_den, &scalars.ddot, &scalars.a, &scalars.dm,
                    &scalars.q_share, &scalars.k_share})
    *p = next(tokens);
  const Shares shares{next(tiles * slice), next(tiles * slice), slice};
  forward(op, in, nullptr, h, dots, ms);

  const size_t walk_bytes = walks_shared_bytes(d.dk);
  SSM_CHECK(walk_bytes <= shared_memory_per_block(),
            "{}: heads of {} query dims need {} bytes of shared memory a block", op, d.dk, walk_bytes);
  with_activation_type(dtype, op, [&]<class T>() {
    const BackwardArgs<T> g{args_of<T>(in, d, h),
                            rows_of<const float>(dh),
                            scalars,
                            shares,
                            tiles,
                            Outputs<T>{rows_of<T>(grads.dq), rows_of<T>(grads.dk), rows_of<T>(grads.dv),
                                       rows_of<float>(grads.di), rows_of<float>(grads.df)}};
    static std::once_flag allowed;
    std::call_once(allowed, [op] {
      SSM_CUDA_CHECK(cudaFuncSetAttribute(&walks_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(shared_memory_per_block())),
                     "{}: allowing the GPU's shared memory", op);
    });
    const unsigned token_blocks = unsigned((BT * d.H + kPrepWarps - 1) / kPrepWarps);
    prep_kernel<T><<<token_blocks, 32 * kPrepWarps, 0, stream()>>>(g, BT);
    SSM_CUDA_CHECK_LAUNCH("{}: the tokens' scalars of B {} T {} heads {}", op, d.B, d.T, d.H);
    walks_kernel<T>
        <<<dim3(unsigned(BH), unsigned(tiles), 2), unsigned(32 * walks_warps(d.dk)), walk_bytes, stream()>>>(g);
    SSM_CUDA_CHECK_LAUNCH("{}: the walks of B {} T {} heads {} dk {} dv {}", op, d.B, d.T, d.H, d.dk, d.dv);
    tokens_kernel<T><<<token_blocks, 32 * kPrepWarps, 0, stream()>>>(g, BT);
    SSM_CUDA_CHECK_LAUNCH("{}: the tokens' dq and dk of B {} T {} heads {}", op, d.B, d.T, d.H);
    gates_kernel<T><<<unsigned(BH), 32, kGatesShared, stream()>>>(g);
    SSM_CUDA_CHECK_LAUNCH("{}: the gates of B {} T {} heads {}", op, d.B, d.T, d.H);
  });
}

}  // namespace ssm::ops::cuda
