// ops::ssd_backward on the GPU: argument checks and the call's scratch (from the stream-ordered pool);
// the kernels are in ssd_backward_kernels.cuh, their launches in ssd_backward_launch.cuh. The chunk
// length is the kernels' own (64): the gradients do not depend on in.chunk_size beyond rounding. The
// states entering the chunks come from the forward (ssd_forward_saving_chunk_states) when the caller
// kept them: the walk that would make them, half of the state walks' work, does not run.
#include "ops/cpu/ssd_inputs.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/ssd_args.h"
#include "ops/cuda/ssd_backward_launch.cuh"

namespace ssm::ops::cuda {

namespace {

namespace kernels = ssd_backward_kernels;

template <class T>
kernels::Grads<T> grad_args(const Tensor& state0, const Tensor& dy, const SsdGrads& g, const Tensor& dfinal_state) {
  return {dy.data<T>(),
          dy.row_stride(),
          data_or_null<T>(g.dx),
          data_or_null<T>(g.ddt),
          data_or_null<T>(g.dB),
          data_or_null<T>(g.dC),
          stride_or_zero(g.dx),
          stride_or_zero(g.ddt),
          stride_or_zero(g.dB),
          stride_or_zero(g.dC),
          data_or_null<float>(g.dA),
          data_or_null<float>(g.dD),
          data_or_null<float>(g.ddt_bias),
          data_or_null<float>(g.dstate0),
          data_or_null<float>(state0),
          data_or_null<float>(dfinal_state)};
}

}  // namespace

void ssd_backward(const SsdInputs& in, const Tensor& state0, const Tensor& dy, SsdGrads& g, const Tensor& dfinal_state,
                  const Tensor& chunk_states) {
  const char* op = "ssd_backward";
  SSM_CHECK(in.x.defined() && is_activation_dtype(in.x.dtype()), "{}: x must be F32 or BF16 on the GPU, got {}", op,
            describe(in.x));
  const DType dtype = in.x.dtype();
  const std::string_view act = dtype_name(dtype);
  SSM_CHECK(is_gpu_rows(dy, dtype, in.x.shape()), "{}: dy must be {} rows of x's shape {} on the GPU, got {}", op, act,
            shape_str(in.x.shape()), describe(dy));
  const detail::SsdSizes d =
      detail::check_ssd_args(op, in, state0.defined() ? &state0 : nullptr, dy, 3, Device::CUDA, dtype);
  SSM_CHECK(in.chunk_size >= 1, "{}: chunk_size must be positive, got {}", op, in.chunk_size);
  const Shape states{d.batch, d.H, d.P, d.N};
  for (auto [t, name] : {std::pair{&dfinal_state, "dfinal_state"}, {&g.dstate0, "dstate0"}})
    if (t->defined())
      SSM_CHECK(detail::is_f32_contig_on(*t, states, Device::CUDA),
                "{}: {} must be contiguous F32 {} on the GPU, got {}", op, name, shape_str(states), describe(*t));
  const Shape xs = in.x.shape(), dts{d.batch, d.T, d.H}, bcs{d.batch, d.T, d.G * d.N};
  for (auto [t, name, shape] : {std::tuple{&g.dx, "dx", xs}, {&g.ddt, "ddt", dts}, {&g.dB, "dB", bcs},
                                {&g.dC, "dC", bcs}})
    if (t->defined())
      SSM_CHECK(is_gpu_rows(*t, dtype, shape), "{}: {} must be {} rows {} on the GPU, got {}", op, name, act,
                shape_str(shape), describe(*t));
  for (auto [t, name] : {std::pair{&g.dA, "dA"}, {&g.dD, "dD"}, {&g.ddt_bias, "ddt_bias"}})
    if (t->defined())
      SSM_CHECK(is_gpu_vector(*t, d.H), "{}: {} must be F32 [{}] on the GPU, got {}", op, name, d.H, describe(*t));
  if (chunk_states.defined()) {
    const Shape want{d.batch, d.H, kernels::chunk_count(int(d.T)), d.P, d.N};
    SSM_CHECK(!state0.defined(), "{}: state0 given beside chunk_states, which a forward from zeros kept", op);
    SSM_CHECK(chunk_states.device() == Device::CUDA && chunk_states.dtype() == dtype && chunk_states.is_contiguous() &&
                  chunk_states.shape() == want,
              "{}: chunk_states must be contiguous {} {} on the GPU (ssd_forward_saving_chunk_states'), got {}", op,
              act, shape_str(want), describe(chunk_states));
  }
  if (d.batch == 0) return;
  if (d.T == 0) {
    if (g.dstate0.defined()) {
      if (dfinal_state.defined())
        SSM_CUDA_CHECK(cudaMemcpyAsync(g.dstate0.raw(), dfinal_state.raw(), g.dstate0.nbytes(),
                                       cudaMemcpyDeviceToDevice, stream()),
                       "{}: copying dfinal_state into dstate0", op);
      else
        SSM_CUDA_CHECK(cudaMemsetAsync(g.dstate0.raw(), 0, g.dstate0.nbytes(), stream()), "{}: zeroing dstate0", op);
    }
    return;
  }
  with_activation_type(dtype, op, [&]<class T>() {
    const kernels::Args<T> args = ssd_kernel_args<T>(in, d, Tensor());
    const kernels::Grads<T> grads = grad_args<T>(state0, dy, g, dfinal_state);
    const kernels::Plan plan = kernels::make_plan(args, grads, chunk_states.defined());
    const Tensor scratch = Tensor::empty({int64_t(plan.scratch_floats)}, DType::F32, Device::CUDA);
    T* const given = chunk_states.defined() ? chunk_states.data<T>() : nullptr;
    SSM_CUDA_CHECK(
        kernels::launch_backward(args, grads, plan, scratch.data<float>(), stream(), kernels::kAllStages, given),
        "{} of B {} T {} H {} P {} G {} N {}", op, d.batch, d.T, d.H, d.P, d.G, d.N);
  });
}

}  // namespace ssm::ops::cuda
