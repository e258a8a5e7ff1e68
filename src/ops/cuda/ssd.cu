// ops::ssd, ops::ssd_step and training's ssd_forward_saving_chunk_states on the GPU: argument checks and
// scratch; the kernels are in ssd_kernels.cuh, their launches in ssd_launch.cuh.
// The forward runs the chunked kernels when they take the shape (P <= 64, N <= 128, 16-byte aligned
// rows), else the recurrent one; the chunk length is the kernels' own (64), which is no loss: the result
// does not depend on in.chunk_size beyond rounding.
#include "ops/cpu/ssd_inputs.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/ssd_args.h"
#include "ops/cuda/ssd_launch.cuh"

namespace ssm::ops::cuda {

namespace {

namespace kernels = ssd_kernels;

// The activation dtype of the call (x's), checked to be one the GPU ops take.
DType activation_dtype(const char* op, const SsdInputs& in) {
  SSM_CHECK(in.x.defined() && is_activation_dtype(in.x.dtype()), "{}: x must be F32 or BF16 on the GPU, got {}", op,
            in.x.defined() ? dtype_name(in.x.dtype()) : "undefined");
  return in.x.dtype();
}

std::string sizes_str(const detail::SsdSizes& d) {
  return fmt::format("B {} T {} H {} P {} G {} N {}", d.batch, d.T, d.H, d.P, d.G, d.N);
}

// The forward of ops::ssd (state: initial in, final out; may be null) and, with keep_states, the state
// entering every chunk (returned; undefined where the recurrent kernel runs the forward).
Tensor forward(const char* op, const SsdInputs& in, Tensor* state, Tensor& y, bool keep_states) {
  const DType dtype = activation_dtype(op, in);
  Tensor* const st = state && state->defined() ? state : nullptr;
  const detail::SsdSizes d = detail::check_ssd_args(op, in, st, y, 3, Device::CUDA, dtype);
  SSM_CHECK(in.chunk_size >= 1, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  Tensor kept;
  if (d.batch == 0 || d.T == 0) return kept;
  with_activation_type(dtype, op, [&]<class T>() {
    const kernels::Args<T> args = ssd_kernel_args<T>(in, d, y);
    float* const state_data = st ? st->data<float>() : nullptr;
    if (kernels::chunked_supports(args)) {
      kernels::Plan plan;
      SSM_CUDA_CHECK(kernels::plan_chunked(args, &plan), "{}: setting up the chunked kernels for {}", op,
                     sizes_str(d));
      // Never empty: every call has a chunk, and pass 0 writes each chunk's scans and C Bᵀ there.
      Tensor scratch = Tensor::empty({int64_t(kernels::chunked_scratch_floats(args, plan))}, DType::F32, Device::CUDA);
      if (keep_states) kept = Tensor::empty({d.batch, d.H, plan.chunks, d.P, d.N}, dtype, Device::CUDA);
      SSM_CUDA_CHECK(kernels::launch_chunked(args, plan, state_data, scratch.data<float>(), stream(),
                                             kernels::kAllPasses, keep_states ? kept.data<T>() : nullptr),
                     "{} (chunked, {} segments) of {}", op, plan.segments, sizes_str(d));
    } else {
      Tensor own_state;
      if (!st) {
        own_state = Tensor::empty({d.batch, d.H, d.P, d.N}, DType::F32, Device::CUDA);
        SSM_CUDA_CHECK(cudaMemsetAsync(own_state.raw(), 0, own_state.nbytes(), stream()), "{}: zeroing the state",
                       op);
      }
      SSM_CUDA_CHECK(kernels::launch_recurrent(args, st ? state_data : own_state.data<float>(), stream()),
                     "{} (recurrent) of {}", op, sizes_str(d));
    }
  });
  return kept;
}

}  // namespace

void ssd(const SsdInputs& in, Tensor* state, Tensor& y) { forward("ssd", in, state, y, false); }

Tensor ssd_forward_saving_chunk_states(const SsdInputs& in, Tensor& y) {
  return forward("ssd_forward_saving_chunk_states", in, nullptr, y, true);
}

void ssd_step(const SsdInputs& in, Tensor& state, Tensor& y) {
  const DType dtype = activation_dtype("ssd_step", in);
  SSM_CHECK(state.defined(), "ssd_step: state is required");
  const detail::SsdSizes d = detail::check_ssd_args("ssd_step", in, &state, y, 2, Device::CUDA, dtype);
  if (d.batch == 0) return;
  with_activation_type(dtype, "ssd_step", [&]<class T>() {
    SSM_CUDA_CHECK(kernels::launch_step(ssd_kernel_args<T>(in, d, y), state.data<float>(), stream()),
                   "ssd_step of {}", sizes_str(d));
  });
}

}  // namespace ssm::ops::cuda
