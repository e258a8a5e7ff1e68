// ops::attention and ops::attention_decode on the GPU: the checks (shared with the CPU in
// ops/cpu/attention_checks.h) and the launches. The kernels live in flash_attention.cuh (prefill:
// tensor cores for BF16, f32 CUDA cores for F32) and flash_decode.cuh (one token over a cache, the
// context split across blocks); dev/cuda/attention.cu times them against the peers.
#include "ops/cuda/attention_args.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/flash_decode.cuh"

namespace ssm::ops::cuda {

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params, Tensor& o,
               Tensor* lse) {
  constexpr const char* op = "attention";
  const detail::Placement where = gpu_placement(op, q);
  const detail::AttentionDims d = detail::check_attention(op, q, k, v, params, where);
  detail::check_attention_outputs(op, d, q, o, lse, where);
  check_kernel_sizes(op, d);
  if (d.batch == 0 || d.T == 0) return;
  with_activation_type(where.dtype, op, [&]<class T>() {
    const flash::FlashArgs<T> args{seq_ptr<const T>(q),
                                   seq_ptr<const T>(k),
                                   seq_ptr<const T>(v),
                                   seq_ptr<T>(o),
                                   lse ? lse->data<float>() : nullptr,
                                   int(d.batch),
                                   int(d.T),
                                   int(d.S),
                                   int(d.n_heads),
                                   int(d.n_kv_heads),
                                   int(d.head_dim),
                                   d.scale * flash::kLog2e};
    SSM_CUDA_CHECK(flash::launch(args, flash::CausalWindow{d.offset(), d.window}, stream()),
                   "{}: q {} k {} {} (heads {}/{}, window {})", op, shape_str(q.shape()), shape_str(k.shape()),
                   dtype_name(where.dtype), d.n_heads, d.n_kv_heads, d.window);
  });
}

void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& lengths,
                      const AttentionParams& params, Tensor& o) {
  constexpr const char* op = "attention_decode";
  const detail::Placement where = gpu_placement(op, q);
  // lengths stay on the GPU: a length outside [1, C] is not an error here (that would need the host to
  // wait for them) but makes that sequence's output NaN.
  const detail::AttentionDims d = detail::check_attention_decode(op, q, k_cache, v_cache, lengths, params, o, where);
  check_kernel_sizes(op, d);
  const size_t smem = flash::decode_smem_bytes(int(d.group()), int(d.head_dim));
  SSM_CHECK(smem <= shared_memory_per_block(),
            "{}: {} query heads per kv head of head_dim {} need {} bytes of shared memory, the GPU has {}", op,
            d.group(), d.head_dim, smem, shared_memory_per_block());
  if (d.batch == 0) return;

  const int64_t max_rows = d.window > 0 ? std::min(d.S, d.window) : d.S;
  const int splits = flash::decode_splits(int(d.batch), int(d.n_kv_heads), max_rows, multiprocessor_count());
  Tensor partials = Tensor::empty({d.batch, d.n_heads, splits, d.head_dim + 2}, DType::F32, Device::CUDA);
  const flash::CacheRows rows{lengths.data<int32_t>(), d.S, d.window};
  with_activation_type(where.dtype, op, [&]<class T>() {
    const flash::DecodeArgs<T, T> args{seq_ptr<const T>(q),
                                       seq_ptr<const T>(k_cache),
                                       seq_ptr<const T>(v_cache),
                                       partials.data<float>(),
                                       int(d.batch),
                                       int(d.n_heads),
                                       int(d.n_kv_heads),
                                       int(d.head_dim),
                                       splits,
                                       d.scale * flash::kLog2e};
    SSM_CUDA_CHECK(flash::launch_decode(args, rows, seq_ptr<T>(o), flash::LengthCheck{{}, rows}, stream()),
                   "{}: q {} cache {} {} (heads {}/{}, window {}, {} splits)", op, shape_str(q.shape()),
                   shape_str(k_cache.shape()), dtype_name(where.dtype), d.n_heads, d.n_kv_heads, d.window, splits);
  });
}

}  // namespace ssm::ops::cuda
