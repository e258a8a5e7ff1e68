// ops::rat_backward on the GPU: argument checks (shared with the CPU, ops/cpu/rat_checks.h), the
// call's F32 scratch (one piece from the stream-ordered pool) and the launches of the kernels in
// rat_backward_kernels.cuh, in their order there; then the gate_bias partials added in a fixed order.
// Scratch: k̃ and ṽ of every token, and each head's dq and dk before the group sums, 2 to 4 floats per
// element of v (the recurrence is not recomputed inside the reverse walk), plus O(T/L·W) for the
// chunk ends and O(H·T) per-query values. Nothing of size T x T/L.
#include <climits>

#include "ops/cpu/rat_checks.h"
#include "ops/cuda/column_sums.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/rat_backward_kernels.cuh"

namespace ssm::ops::cuda {

namespace {

namespace kernels = rat_backward_kernels;

template <class E>
kernels::Args<E> kernel_args(const RatInputs& in, const Tensor& dy, const RatGrads& g, const detail::RatDims& d) {
  return {in.q.data<E>(),
          in.k.data<E>(),
          in.v.data<E>(),
          in.g.data<E>(),
          dy.data<E>(),
          in.q.row_stride(),
          in.k.row_stride(),
          in.v.row_stride(),
          in.g.row_stride(),
          dy.row_stride(),
          in.gate_bias.data<float>(),
          data_or_null<E>(g.dq),
          data_or_null<E>(g.dk),
          data_or_null<E>(g.dv),
          data_or_null<E>(g.dg),
          stride_or_zero(g.dq),
          stride_or_zero(g.dk),
          stride_or_zero(g.dv),
          stride_or_zero(g.dg),
          int(d.batch),
          int(d.T),
          int(d.heads),
          int(d.groups),
          int(d.head_dim),
          int(d.chunk),
          d.scale};
}

void check_gradient(const char* op, const Tensor& grad, const char* name, const Tensor& input,
                    const detail::Placement& where) {
  if (grad.defined())
    SSM_CHECK(detail::is_rows(grad, where) && grad.shape() == input.shape(), "{}: {} must be {} rows {}, got {}", op,
              name, where.str(), shape_str(input.shape()), describe(grad));
}

}  // namespace

void rat_backward(const RatInputs& in, const Tensor& dy, RatGrads& grads) {
  constexpr const char* op = "rat_backward";
  SSM_CHECK(in.v.defined() && in.v.device() == Device::CUDA && is_activation_dtype(in.v.dtype()),
            "{}: v must be F32 or BF16 on the GPU, got {}", op, describe(in.v));
  const detail::Placement where{in.v.dtype(), Device::CUDA};
  const detail::RatDims d = detail::rat_check_inputs(op, in, 3, where);
  SSM_CHECK(detail::is_rows(dy, where) && dy.shape() == in.v.shape(), "{}: dy must be {} rows of v's shape {}, got {}",
            op, where.str(), shape_str(in.v.shape()), describe(dy));
  check_gradient(op, grads.dq, "dq", in.q, where);
  check_gradient(op, grads.dk, "dk", in.k, where);
  check_gradient(op, grads.dv, "dv", in.v, where);
  check_gradient(op, grads.dg, "dg", in.v, where);
  if (grads.dgate_bias.defined())
    SSM_CHECK(is_gpu_vector(grads.dgate_bias, d.width), "{}: dgate_bias must be F32 [{}] on the GPU, got {}", op,
              d.width, describe(grads.dgate_bias));
  SSM_CHECK(d.head_dim <= 2 * kernels::kMaxHalf, "{}: the GPU takes head sizes up to {}, got {}", op,
            2 * kernels::kMaxHalf, d.head_dim);
  const int64_t chunks = d.chunk > 0 ? (d.T + d.chunk - 1) / d.chunk : 0;
  SSM_CHECK(d.T < INT_MAX / 2 && d.chunk < INT_MAX && d.batch * d.heads * (chunks + d.T / kernels::kTile + 1) < INT_MAX,
            "{}: the GPU kernels take T below 2^30 and fewer than 2^31 blocks of (sequence, head, chunk), got batch {} "
            "n_heads {} T {} chunk_size {}",
            op, d.batch, d.heads, d.T, d.chunk);
  const kernels::Wanted wanted{grads.dq.defined(), grads.dk.defined(), grads.dv.defined(), grads.dg.defined(),
                               grads.dgate_bias.defined()};
  if (d.batch == 0 || d.T == 0 || !wanted.any()) return;

  kernels::Freqs freqs{};
  for (int64_t j = 0; j < d.head_dim / 2; ++j) freqs.inv_freq[j] = detail::rope_inv_freq(in.rope_theta, d.head_dim, j);
  with_activation_type(where.dtype, op, [&]<class E>() {
    const kernels::Args<E> a = kernel_args<E>(in, dy, grads, d);
    kernels::Scratch s{};
    const Tensor scratch =
        Tensor::empty(Shape{kernels::carve_scratch(a, wanted, nullptr, s)}, DType::F32, Device::CUDA);
    kernels::carve_scratch(a, wanted, scratch.data<float>(), s);
    const unsigned chunk_blocks = unsigned(int64_t(a.batch) * a.heads * a.chunks());
    const unsigned query_blocks = unsigned(int64_t(a.batch) * a.heads * a.query_tiles());
    const unsigned end_blocks = unsigned(int64_t(a.batch) * a.heads * a.end_tiles());
    const int pair_threads = (a.half() + 31) / 32 * 32;
    const std::string shape = shape_str(in.v.shape());

    kernels::rope_table_kernel<<<blocks_for(int64_t(a.chunks()) * a.half(), 256), 256, 0, stream()>>>(
        freqs, a.chunks(), a.half(), s.cos, s.sin);
    SSM_CUDA_CHECK_LAUNCH("{}: rotation table of {} chunks", op, a.chunks());
    kernels::states_kernel<E><<<chunk_blocks, pair_threads, 0, stream()>>>(a, s);
    SSM_CUDA_CHECK_LAUNCH("{}: chunk states of v {}", op, shape);
    kernels::query_stats_kernel<E>
        <<<query_blocks, kernels::kTileThreads, kernels::kStatsFloats * sizeof(float), stream()>>>(a, s);
    SSM_CUDA_CHECK_LAUNCH("{}: log-sum-exp per query of v {}", op, shape);
    if (wanted.recurrence() && end_blocks > 0) {
      kernels::end_grads_kernel<E>
          <<<end_blocks, kernels::kTileThreads, kernels::kEndGradsFloats * sizeof(float), stream()>>>(a, s);
      SSM_CUDA_CHECK_LAUNCH("{}: gradients of the chunk ends of v {}", op, shape);
    }
    if (wanted.dq) {
      kernels::query_grads_kernel<E>
          <<<query_blocks, kernels::kTileThreads, kernels::kQueryGradsFloats * sizeof(float), stream()>>>(a, s);
      SSM_CUDA_CHECK_LAUNCH("{}: gradients of the rotated queries of v {}", op, shape);
    }
    kernels::recurrence_kernel<E><<<chunk_blocks, pair_threads, 0, stream()>>>(a, s);
    SSM_CUDA_CHECK_LAUNCH("{}: backward of the recurrence of v {}", op, shape);
    if (wanted.dq || wanted.dk) {
      const int64_t n = int64_t(a.batch) * a.length * a.groups * a.head_dim;
      kernels::group_sums_kernel<E><<<blocks_for(n, 256), 256, 0, stream()>>>(a, s);
      SSM_CUDA_CHECK_LAUNCH("{}: dq and dk over the heads of each group of v {}", op, shape);
    }
    if (wanted.dbias)
      add_column_sums(s.dbias_part, int64_t(a.batch) * a.chunks(), a.width(), a.width(),
                      grads.dgate_bias.data<float>(), op);
  });
}

}  // namespace ssm::ops::cuda
