// ops::activation and ops::gated_activation on the GPU: a thread per pack of elements of rows tensors
// (row strides honoured). Each thread reads its elements before writing them, so y may alias an input.
#include "ops/cuda/activation_math.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 256;

// y = act(gate_scale · gate) (⊙ up when Gated).
template <class T, int N, Activation A, bool Gated>
__global__ void activation_kernel(Rows<const T> gate, Rows<const T> up, Rows<T> y, int64_t rows, int64_t width,
                                  float gate_scale) {
  const int64_t packs = width / N, i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * packs) return;
  const int64_t r = i / packs, c = i % packs * N;
  float g[N], out[N];
  load_pack<N>(&gate.at(r, c), g);
#pragma unroll
  for (int k = 0; k < N; ++k) out[k] = activation_value<A>(gate_scale * g[k]);
  if constexpr (Gated) {
    float u[N];
    load_pack<N>(&up.at(r, c), u);
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] *= u[k];
  }
  store_pack<N>(&y.at(r, c), out);
}

// Both ops once checked: gate, up (when Gated) and y rows of one shape and activation dtype.
template <bool Gated>
void run(const char* op, Activation act, const Tensor& gate, const Tensor& up, float gate_scale, Tensor& y) {
  const int64_t rows = gate.rows(), width = gate.size(-1);
  if (gate.numel() == 0) return;
  with_activation_type(gate.dtype(), op, [&]<class T>() {
    with_pack<T>(packs_fit(kPack<T>, {&gate, &up, &y}), [&]<int N>() {
      with_activation(act, [&]<Activation A>() {
        const Rows<const T> up_rows = Gated ? rows_of<const T>(up) : Rows<const T>{nullptr, 0};
        activation_kernel<T, N, A, Gated><<<blocks_for(rows * (width / N), kThreads), kThreads, 0, stream()>>>(
            rows_of<const T>(gate), up_rows, rows_of<T>(y), rows, width, gate_scale);
        SSM_CUDA_CHECK_LAUNCH("{} {} of {}", op, activation_name(act), shape_str(gate.shape()));
      });
    });
  });
}

}  // namespace

void activation(Activation act, const Tensor& x, Tensor& y) {
  check_on_gpu("activation", {&x, &y});
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()) && is_gpu_rows(y, x.dtype(), x.shape()),
            "activation {}: x and y must be F32 or BF16 rows of one shape and dtype, got {} and {}",
            activation_name(act), describe(x), describe(y));
  run<false>("activation", act, x, Tensor(), 1.0f, y);
}

void gated_activation(Activation act, const Tensor& gate, const Tensor& up, float gate_scale, Tensor& y) {
  check_on_gpu("gated_activation", {&gate, &up, &y});
  SSM_CHECK(is_gpu_rows(gate, gate.dtype()) && is_activation_dtype(gate.dtype()) &&
                is_gpu_rows(up, gate.dtype(), gate.shape()) && is_gpu_rows(y, gate.dtype(), gate.shape()),
            "gated_activation {}: gate, up and y must be F32 or BF16 rows of one shape and dtype, got {}, {} and {}",
            activation_name(act), describe(gate), describe(up), describe(y));
  run<true>("gated_activation", act, gate, up, gate_scale, y);
}

}  // namespace ssm::ops::cuda
