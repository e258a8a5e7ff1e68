// ops::selective_scan_backward on the GPU (the forward that saves the chunk states is in selective_scan.cu).
//
// The kernels and the algorithm: selective_scan_backward_kernels.cuh. Here: checks, scratch, launches.
#include <algorithm>
#include <cstdint>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/selective_scan_checks.h"
#include "ops/cuda/selective_scan_backward_kernels.cuh"

namespace ssm::ops::cuda {

namespace {

using namespace scan_backward_kernels;

Tensor gpu_f32(const Shape& shape) { return Tensor::empty(shape, DType::F32, Device::CUDA); }

template <class Act>
Act* act_or_null(const Tensor& t) {
  return t.defined() ? static_cast<Act*>(t.raw()) : nullptr;
}
template <class Act>
int64_t ld_or_0(const Tensor& t) {
  return t.defined() ? rows_of<Act>(t).ld : 0;
}

// Raises a kernel's shared-memory limit to what its longest chunk needs (once per instantiation).
template <class Kernel>
void allow_shared_memory(const char* op, Kernel* kernel, int64_t bytes) {
  SSM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
                 "{}: raising the shared-memory limit to {} bytes", op, bytes);
}
template <class Act, int kN>
void allow_shared_memory(const char* op) {
  static_assert(GradientPlan<Act, kN>::bytes(kMaxChunk) <= 227 * 1024,
                "a chunk of kMaxChunk tokens must fit one block's shared memory");
  static const bool done = [op] {
    allow_shared_memory(op, summary_kernel<Act, kN>, SummaryPlan<kN>::bytes(kMaxChunk));
    allow_shared_memory(op, gradient_kernel<Act, kN>, GradientPlan<Act, kN>::bytes(kMaxChunk));
    return true;
  }();
  (void)done;
}

template <class Act, int kN>
void run_backward(const char* op, const SelectiveScanInputs& in, const Tensor& state0, const Tensor& chunk_states,
                  int64_t chunk_size, const Tensor& dy, SelectiveScanGrads& g, int64_t N) {
  using L = Layout<kN>;
  const int64_t batch = in.u.size(0), T = in.u.size(1), D = in.u.size(2);
  // The caller's chunk states when kernel C can hold their chunks, else the forward's at kMaxChunk.
  Tensor states = chunk_states;
  int64_t chunk_len = chunk_size;
  if (!states.defined() || chunk_size > kMaxChunk || selective_scan_chunk_count(T, chunk_size) > 65535) {
    chunk_len = kMaxChunk;
    const int64_t chunks = selective_scan_chunk_count(T, chunk_len);
    SSM_CHECK(chunks <= 65535, "{}: the GPU scan takes at most 65535 chunks of {} tokens, got T {}", op, chunk_len, T);
    states = gpu_f32({batch, chunks, D, N});
    Tensor y = Tensor::empty(in.u.shape(), in.u.dtype(), Device::CUDA);
    ::ssm::ops::cuda::selective_scan_forward_saving_chunk_states(in, state0, chunk_len, y, states, nullptr);
  }
  chunk_len = std::min(chunk_len, T);  // one chunk of T tokens when T is shorter
  const int64_t chunks = (T + chunk_len - 1) / chunk_len;
  const int64_t channel_blocks = (D + L::kChannels - 1) / L::kChannels;

  BwdArgs<Act> a{};
  a.u = static_cast<const Act*>(in.u.raw());
  a.delta = static_cast<const Act*>(in.delta.raw());
  a.B = static_cast<const Act*>(in.B.raw());
  a.C = static_cast<const Act*>(in.C.raw());
  a.z = act_or_null<const Act>(in.z);
  a.dy = static_cast<const Act*>(dy.raw());
  a.ld_u = rows_of<const Act>(in.u).ld;
  a.ld_delta = rows_of<const Act>(in.delta).ld;
  a.ld_B = rows_of<const Act>(in.B).ld;
  a.ld_C = rows_of<const Act>(in.C).ld;
  a.ld_z = ld_or_0<const Act>(in.z);
  a.ld_dy = rows_of<const Act>(dy).ld;
  a.du = act_or_null<Act>(g.du);
  a.ddelta = act_or_null<Act>(g.ddelta);
  a.dz = act_or_null<Act>(g.dz);
  a.ld_du = ld_or_0<Act>(g.du);
  a.ld_ddelta = ld_or_0<Act>(g.ddelta);
  a.ld_dz = ld_or_0<Act>(g.dz);
  a.delta_bias = in.delta_bias.defined() ? in.delta_bias.data<float>() : nullptr;
  a.A = in.A.data<float>();
  a.D = in.D.defined() ? in.D.data<float>() : nullptr;
  a.chunk_states = states.data<float>();
  a.batch = batch;
  a.T = T;
  a.channels = D;
  a.N = N;
  a.chunk_len = chunk_len;
  a.chunks = chunks;
  a.softplus = in.delta_softplus;
  a.dstate0 = g.dstate0.defined() ? g.dstate0.data<float>() : nullptr;

  // Scratch from the stream-ordered pool, released after the kernels.
  Tensor carry, dt_sum, dA_part, dD_part, dbias_part, dB_part, dC_part;
  auto scratch = [](Tensor& t, const Shape& shape) {
    t = gpu_f32(shape);
    return t.data<float>();
  };
  if (g.dA.defined()) a.dA_part = scratch(dA_part, {batch * chunks, D, N});
  if (g.dD.defined()) a.dD_part = scratch(dD_part, {batch * chunks, D});
  if (g.ddelta_bias.defined()) a.dbias_part = scratch(dbias_part, {batch * chunks, D});
  if (g.dB.defined()) a.dB_part = scratch(dB_part, {channel_blocks, batch * T, N});
  if (g.dC.defined()) a.dC_part = scratch(dC_part, {channel_blocks, batch * T, N});

  allow_shared_memory<Act, kN>(op);
  if (chunks > 1) {
    a.carry = scratch(carry, {batch, chunks, D, N});
    a.dt_sum = scratch(dt_sum, {batch, chunks, D});
    summary_kernel<Act, kN><<<dim3(unsigned(channel_blocks), unsigned(chunks - 1), unsigned(batch)), kThreads,
                              size_t(SummaryPlan<kN>::bytes(chunk_len)), stream()>>>(a);
    SSM_CUDA_CHECK_LAUNCH("{} (chunk summaries) of batch {}, T {}, D {}, N {}, chunks of {}", op, batch, T, D, N,
                          chunk_len);
    adjoint_carry_kernel<<<blocks_for(batch * D * N, 256), 256, 0, stream()>>>(a.A, a.carry, a.dt_sum, batch, D, N,
                                                                               chunks);
    SSM_CUDA_CHECK_LAUNCH("{} (adjoint carries) of batch {}, T {}, D {}, N {}, {} chunks", op, batch, T, D, N, chunks);
  }
  gradient_kernel<Act, kN><<<dim3(unsigned(channel_blocks), unsigned(chunks), unsigned(batch)), kThreads,
                             size_t(GradientPlan<Act, kN>::bytes(chunk_len)), stream()>>>(a);
  SSM_CUDA_CHECK_LAUNCH("{} (gradients) of batch {}, T {}, D {}, N {}, chunks of {}", op, batch, T, D, N, chunk_len);

  // The sums of the partial rows in one launch; dA first, whose rows (one a chunk) are the most.
  PartialSums<Act> sums{};
  const int64_t bt = batch * chunks;
  if (a.dA_part) sums.add({a.dA_part, D * N, bt, g.dA.data<float>(), nullptr, 0, 0});
  if (a.dD_part) sums.add({a.dD_part, D, bt, g.dD.data<float>(), nullptr, 0, 0});
  if (a.dbias_part) sums.add({a.dbias_part, D, bt, g.ddelta_bias.data<float>(), nullptr, 0, 0});
  if (a.dB_part)
    sums.add({a.dB_part, batch * T * N, channel_blocks, nullptr, act_or_null<Act>(g.dB), N, rows_of<Act>(g.dB).ld});
  if (a.dC_part)
    sums.add({a.dC_part, batch * T * N, channel_blocks, nullptr, act_or_null<Act>(g.dC), N, rows_of<Act>(g.dC).ld});
  if (sums.count > 0) {
    partial_sums_kernel<Act><<<sums.blocks(), kSumThreads, kSumSmem, stream()>>>(sums);
    SSM_CUDA_CHECK_LAUNCH("{} (sums of the partial gradients) of batch {}, T {}, D {}, N {}, {} chunks", op, batch, T,
                          D, N, chunks);
  }
}

}  // namespace

void selective_scan_backward(const SelectiveScanInputs& in, const Tensor& state0, const Tensor& chunk_states,
                             int64_t chunk_size, const Tensor& dy, SelectiveScanGrads& g) {
  const char* op = "selective_scan_backward";
  const int64_t N = check_scan_inputs(op, in, 3);
  const DType dtype = in.u.dtype();
  const Shape btd = in.u.shape();
  const int64_t batch = btd[0], T = btd[1], D = btd[2];
  const Shape btn{batch, T, N};
  const int64_t n_chunks = selective_scan_chunk_count(T, chunk_size);  // checks chunk_size >= 1
  if (state0.defined()) check_gpu_f32(op, "state0", state0, {batch, D, N});
  if (chunk_states.defined())
    check_gpu_f32(op, fmt::format("chunk_states (chunk_size {})", chunk_size).c_str(), chunk_states,
                  {batch, n_chunks, D, N});
  auto check_rows = [&](const Tensor& t, const char* name, const Shape& shape) {
    if (t.defined())
      SSM_CHECK(is_gpu_rows(t, dtype, shape), "{}: {} must be {} rows {} on the GPU (u's dtype), got {}", op, name,
                dtype_name(dtype), shape_str(shape), describe(t));
  };
  SSM_CHECK(dy.defined(), "{}: dy is required", op);
  check_rows(dy, "dy", btd);
  check_rows(g.du, "du", btd);
  check_rows(g.ddelta, "ddelta", btd);
  check_rows(g.dz, "dz", btd);
  check_rows(g.dB, "dB", btn);
  check_rows(g.dC, "dC", btn);
  SSM_CHECK(!g.dz.defined() || in.z.defined(), "{}: dz asked for without z", op);
  if (g.dA.defined()) check_gpu_f32(op, "dA", g.dA, {D, N});
  if (g.dD.defined()) check_gpu_f32(op, "dD", g.dD, {D});
  if (g.ddelta_bias.defined()) check_gpu_f32(op, "ddelta_bias", g.ddelta_bias, {D});
  if (g.dstate0.defined()) check_gpu_f32(op, "dstate0", g.dstate0, {batch, D, N});
  if (batch == 0 || D == 0) return;
  if (T == 0) {  // no tokens: the initial state reaches no output
    if (g.dstate0.defined())
      SSM_CUDA_CHECK(cudaMemsetAsync(g.dstate0.raw(), 0, g.dstate0.nbytes(), stream()), "{}: zeroing dstate0", op);
    return;
  }
  with_activation_type(dtype, op, [&]<class Act>() {
    if (N <= 4) run_backward<Act, 4>(op, in, state0, chunk_states, chunk_size, dy, g, N);
    else if (N <= 8) run_backward<Act, 8>(op, in, state0, chunk_states, chunk_size, dy, g, N);
    else if (N <= 16) run_backward<Act, 16>(op, in, state0, chunk_states, chunk_size, dy, g, N);
    else if (N <= 32) run_backward<Act, 32>(op, in, state0, chunk_states, chunk_size, dy, g, N);
    else run_backward<Act, 64>(op, in, state0, chunk_states, chunk_size, dy, g, N);
  });
}

}  // namespace ssm::ops::cuda
