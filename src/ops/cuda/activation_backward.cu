// ops::activation_backward and ops::gated_activation_backward on the GPU: a thread per pack of
// elements of rows tensors (row strides honoured), as the forward. Each thread reads every input of
// its elements (and the old gradients it adds to) before writing any output, so an output may alias
// an input at the same positions (dx = dy; dgate = gate, dup = up, either = dy), as on the CPU.
#include <utility>

#include "ops/cuda/activation_math.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kThreads = 256;

// With a = act(s · gate): dgate (+)= dy ⊙ up ⊙ s a'(s · gate), dup (+)= dy ⊙ a. The plain activation's
// backward is the same with up = 1 (up.data null), s = 1 and dgate = dx. A null output is skipped.
template <class T, int N, Activation A>
__global__ void activation_backward_kernel(Rows<const T> gate, Rows<const T> up, Rows<const T> dy, Rows<T> dgate,
                                           Rows<T> dup, int64_t rows, int64_t width, float gate_scale,
                                           bool accumulate) {
  const int64_t packs = width / N, i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * packs) return;
  const int64_t r = i / packs, c = i % packs * N;
  float g[N], u[N], d[N], old_dg[N] = {}, old_du[N] = {};
  load_pack<N>(&gate.at(r, c), g);
  load_pack<N>(&dy.at(r, c), d);
  if (up.data) {
    load_pack<N>(&up.at(r, c), u);
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) u[k] = 1.0f;
  }
  if (accumulate && dgate.data) load_pack<N>(&dgate.at(r, c), old_dg);
  if (accumulate && dup.data) load_pack<N>(&dup.at(r, c), old_du);
  float dg[N], du[N];
#pragma unroll
  for (int k = 0; k < N; ++k) {
    const ValueGrad a = activation_value_grad<A>(gate_scale * g[k]);
    dg[k] = d[k] * u[k] * gate_scale * a.grad;
    du[k] = d[k] * a.value;
    if (accumulate) {
      dg[k] += old_dg[k];
      du[k] += old_du[k];
    }
  }
  if (dgate.data) store_pack<N>(&dgate.at(r, c), dg);
  if (dup.data) store_pack<N>(&dup.at(r, c), du);
}

// Both ops once checked: every defined tensor rows of gate's shape and activation dtype.
void run(const char* op, Activation act, const Tensor& gate, const Tensor& up, float gate_scale, const Tensor& dy,
         Tensor* dgate, Tensor* dup, bool accumulate) {
  const int64_t rows = gate.rows(), width = gate.size(-1);
  if (gate.numel() == 0 || (!dgate && !dup)) return;
  const Tensor none;
  const Tensor& dgate_t = dgate ? *dgate : none;
  const Tensor& dup_t = dup ? *dup : none;
  with_activation_type(gate.dtype(), op, [&]<class T>() {
    with_pack<T>(packs_fit(kPack<T>, {&gate, &up, &dy, &dgate_t, &dup_t}), [&]<int N>() {
      with_activation(act, [&]<Activation A>() {
        activation_backward_kernel<T, N, A><<<blocks_for(rows * (width / N), kThreads), kThreads, 0, stream()>>>(
            rows_of<const T>(gate), optional_rows_of<const T>(up), rows_of<const T>(dy), optional_rows_of<T>(dgate_t),
            optional_rows_of<T>(dup_t), rows, width, gate_scale, accumulate);
        SSM_CUDA_CHECK_LAUNCH("{} {} of {}", op, activation_name(act), shape_str(gate.shape()));
      });
    });
  });
}

}  // namespace

void activation_backward(Activation act, const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx) {
  const char* op = "activation_backward";
  check_on_gpu(op, {&x, &dy, &dx});
  SSM_CHECK(is_gpu_rows(x, x.dtype()) && is_activation_dtype(x.dtype()) && is_gpu_rows(dy, x.dtype(), x.shape()) &&
                is_gpu_rows(dx, x.dtype(), x.shape()),
            "{} {}: x, dy and dx must be F32 or BF16 rows of one shape and dtype, got {}, {} and {}", op,
            activation_name(act), describe(x), describe(dy), describe(dx));
  run(op, act, x, Tensor(), 1.0f, dy, &dx, nullptr, accumulate_dx);
}

void gated_activation_backward(Activation act, const Tensor& gate, const Tensor& up, float gate_scale, const Tensor& dy,
                               Tensor* dgate, Tensor* dup, bool accumulate) {
  const char* op = "gated_activation_backward";
  check_on_gpu(op, {&gate, &up, &dy});
  SSM_CHECK(is_gpu_rows(gate, gate.dtype()) && is_activation_dtype(gate.dtype()) &&
                is_gpu_rows(up, gate.dtype(), gate.shape()) && is_gpu_rows(dy, gate.dtype(), gate.shape()),
            "{} {}: gate, up and dy must be F32 or BF16 rows of one shape and dtype, got {}, {} and {}", op,
            activation_name(act), describe(gate), describe(up), describe(dy));
  for (const auto& [grad, name] : {std::pair{dgate, "dgate"}, std::pair{dup, "dup"}}) {
    if (!grad) continue;
    check_on_gpu(op, {grad});
    SSM_CHECK(is_gpu_rows(*grad, gate.dtype(), gate.shape()),
              "{}: {} must be rows of gate's shape and dtype ({}), got {}", op, name, describe(gate), describe(*grad));
  }
  run(op, act, gate, up, gate_scale, dy, dgate, dup, accumulate);
}

}  // namespace ssm::ops::cuda
