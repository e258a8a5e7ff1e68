// ops::attention_backward on the GPU: the checks (shared with the CPU op in ops/cpu/attention_checks.h),
// D's scratch from the stream-ordered pool, and the launches of attention_backward_launch.cuh (the
// kernels are in attention_backward_kernels.cuh).
#include "ops/cuda/attention_args.cuh"
#include "ops/cuda/attention_backward_launch.cuh"
#include "ops/cuda/cuda_ops_backward.h"

namespace ssm::ops::cuda {

namespace kernels = attention_backward_kernels;

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                        const Tensor& dout, const AttentionParams& params, Tensor& dq, Tensor& dk, Tensor& dv) {
  constexpr const char* op = "attention_backward";
  const detail::Placement where = gpu_placement(op, q);
  const detail::AttentionDims d =
      detail::check_attention_backward(op, q, k, v, o, lse, dout, params, dq, dk, dv, where);
  check_kernel_sizes(op, d);
  if (d.batch == 0 || d.S == 0) return;
  const Tensor delta = Tensor::empty({d.batch, d.n_heads, d.T}, DType::F32, Device::CUDA);
  with_activation_type(where.dtype, op, [&]<class T>() {
    const kernels::Args<T> args{seq_ptr<const T>(q),
                                seq_ptr<const T>(o),
                                seq_ptr<const T>(dout),
                                seq_ptr<const T>(k),
                                seq_ptr<const T>(v),
                                seq_ptr<T>(dq),
                                seq_ptr<T>(dk),
                                seq_ptr<T>(dv),
                                lse.data<float>(),
                                delta.data<float>(),
                                int(d.batch),
                                int(d.T),
                                int(d.S),
                                int(d.n_heads),
                                int(d.n_kv_heads),
                                int(d.head_dim),
                                d.scale,
                                d.window};
    SSM_CUDA_CHECK(kernels::launch(args, stream()), "{}: q {} k {} {} (heads {}/{}, window {})", op,
                   shape_str(q.shape()), shape_str(k.shape()), dtype_name(where.dtype), d.n_heads, d.n_kv_heads,
                   d.window);
  });
}

}  // namespace ssm::ops::cuda
