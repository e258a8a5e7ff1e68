// Host side of the SSD kernels (ssd_kernels.cuh): which forward takes a call, the chunked plan, the
// launches. Returns CUDA's error codes; no engine headers (dev/cuda/ssd.cu uses it as the engine does).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "ssd_kernels.cuh"

namespace ssm::ops::cuda::ssd_kernels {

template <class T>
cudaError_t launch_recurrent(const Args<T>& a, float* state, cudaStream_t stream) {
  const int64_t threads = int64_t(a.batch) * a.heads * a.head_dim * 32;
  if (threads == 0) return cudaSuccess;
  recurrent_kernel<T><<<unsigned((threads + 255) / 256), 256, 0, stream>>>(a, state);
  return cudaGetLastError();
}

// One token per sequence (a.length 1): the step kernel where it takes the state, else the recurrent one.
// The step's grid is one wave: as many blocks as fit at once (read once per instantiation), or fewer
// when the groups are fewer.
template <class T>
cudaError_t launch_step(const Args<T>& a, float* state, cudaStream_t stream) {
  if (a.state_dim % 4 != 0 || a.state_dim > 4 * 32 * 2 || reinterpret_cast<uintptr_t>(state) % 16 != 0)
    return launch_recurrent(a, state, stream);
  const int64_t warps = int64_t(a.batch) * a.heads * ((a.head_dim + kStepRows - 1) / kStepRows);
  if (warps == 0) return cudaSuccess;
  auto launch = [&](auto kernel, int blocks_per_sm) {
    int device = 0, sms = 0;
    cudaError_t error = cudaGetDevice(&device);
    if (error == cudaSuccess) error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (error != cudaSuccess) return error;
    const int64_t blocks = std::min<int64_t>((warps * 32 + 255) / 256, int64_t(sms) * std::max(1, blocks_per_sm));
    return pdl::launch_overlapped(kernel, dim3(unsigned(blocks)), dim3(256), 0, stream, a, state);
  };
  auto blocks_per_sm = [](auto kernel) {
    int n = 0;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, 256, 0) == cudaSuccess ? n : 1;
  };
  if (a.state_dim <= 4 * 32) {
    static const int fit = blocks_per_sm(step_kernel<T, 1>);
    return launch(step_kernel<T, 1>, fit);
  }
  static const int fit = blocks_per_sm(step_kernel<T, 2>);
  return launch(step_kernel<T, 2>, fit);
}

// Whether the chunked kernels take these arguments (else the recurrent kernel runs the forward).
template <class T>
bool chunked_supports(const Args<T>& a) {
  constexpr int kVec = 16 / int(sizeof(T));
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.head_dim <= kHeadDimTile && a.state_dim <= 128 && a.head_dim % kVec == 0 && a.state_dim % kVec == 0 &&
         a.ldx % kVec == 0 && a.ldB % kVec == 0 && a.ldC % kVec == 0 && a.ldy % kVec == 0 && aligned(a.x) &&
         aligned(a.B) && aligned(a.C) && aligned(a.y);
}

struct KernelSetup {
  cudaError_t error;
  int piece_blocks_per_sm, scan_blocks_per_sm;
};

// Once per instantiation: raise the kernels' shared-memory limits (all of the unified L1/shared memory
// as shared memory, so that two BF16 pass-1 or pass-2 blocks fit one multiprocessor), read the
// occupancy of passes 1 and 2 (pass 2's slices of rows take the same room as its whole-head blocks).
template <class T, int kN>
const KernelSetup& kernel_setup() {
  static const KernelSetup setup = [] {
    KernelSetup s{cudaSuccess, 0, 0};
    auto raise = [&s](auto kernel, size_t bytes) {
      if (s.error == cudaSuccess)
        s.error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
      if (s.error == cudaSuccess)
        s.error = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       int(cudaSharedmemCarveoutMaxShared));
    };
    raise(chunk_prep_kernel<T, kN>, prep_smem<T, kN>());
    raise(piece_state_kernel<T, kN>, piece_state_smem<T, kN>());
    raise(chunk_scan_kernel<T, kN, kHeadDimTile>, chunk_scan_smem<T, kN>());
    raise(chunk_scan_kernel<T, kN, 32>, chunk_scan_smem<T, kN>());
    raise(chunk_scan_kernel<T, kN, 16>, chunk_scan_smem<T, kN>());
    if (s.error == cudaSuccess)
      s.error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&s.piece_blocks_per_sm, piece_state_kernel<T, kN>,
                                                              kThreads, piece_state_smem<T, kN>());
    if (s.error == cudaSuccess)
      s.error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &s.scan_blocks_per_sm, chunk_scan_kernel<T, kN, kHeadDimTile>, kThreads, chunk_scan_smem<T, kN>());
    return s;
  }();
  return setup;
}

template <class T>
cudaError_t plan_chunked(const Args<T>& a, Plan* plan) {
  const KernelSetup& setup = a.state_dim <= 64 ? kernel_setup<T, 64>() : kernel_setup<T, 128>();
  if (setup.error != cudaSuccess) return setup.error;
  int device = 0, sms = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (error != cudaSuccess) return error;
  *plan = make_plan(a.length, a.head_dim, a.state_dim, int64_t(a.batch) * a.heads,
                    int64_t(sms) * std::max(1, setup.scan_blocks_per_sm),
                    int64_t(sms) * std::max(1, setup.piece_blocks_per_sm));
  return cudaSuccess;
}

// Which kernels a launch runs: all (the op); one alone only to time it (dev/cuda/ssd.cu).
enum Passes { kPrep = 1, kPieceStates = 2, kChunkScan = 4, kAllPasses = kPrep | kPieceStates | kChunkScan };

template <class T, int kN>
cudaError_t launch_chunked_tile(const Args<T>& a, const Plan& plan, float* state, float* scratch, cudaStream_t stream,
                                int passes, T* saved) {
  const unsigned heads = unsigned(a.batch) * unsigned(a.heads);
  const Scratch<T> s = scratch_parts(scratch, a, plan);
  if ((passes & kPrep) && plan.chunks > 1) {  // one chunk: pass 2 makes its own (chunk_scan_kernel)
    const cudaError_t error =
        pdl::launch_overlapped(chunk_prep_kernel<T, kN>, dim3(unsigned(a.batch) * unsigned(plan.chunks)),
                               dim3(kThreads), prep_smem<T, kN>(), stream, a, plan.chunks, s.scans, s.cb);
    if (error != cudaSuccess) return error;
  }
  if (plan.segments > 1 && (passes & kPieceStates)) {
    const cudaError_t error =
        pdl::launch_overlapped(piece_state_kernel<T, kN>, dim3(heads * plan.pieces()), dim3(kThreads),
                               piece_state_smem<T, kN>(), stream, a, plan, state, s.slots, s.log_decays, s.scans);
    if (error != cudaSuccess) return error;
  }
  if (!(passes & kChunkScan)) return cudaSuccess;
  auto scan = [&](auto kernel) {
    return pdl::launch_overlapped(kernel, dim3(heads * unsigned(plan.segments * plan.slices)), dim3(kThreads),
                                  chunk_scan_smem<T, kN>(), stream, a, plan, state, s.slots, s.log_decays, s.scans,
                                  s.cb, saved);
  };
  switch (plan.slice_rows) {
    case 16: return scan(chunk_scan_kernel<T, kN, 16>);
    case 32: return scan(chunk_scan_kernel<T, kN, 32>);
    case kHeadDimTile: return scan(chunk_scan_kernel<T, kN, kHeadDimTile>);
    default: return cudaErrorInvalidValue;  // not a plan of make_plan / set_slice_rows
  }
}

// The chunked forward: `state` [B,H,P,N] F32 (null when absent) read as the initial state and
// overwritten with the final one; `scratch` holds chunked_scratch_floats(a, plan) floats, 16-byte aligned;
// `saved` (null: not wanted) receives the state entering every chunk, [B*H][plan.chunks][P*N] of T,
// 16-byte aligned (chunk_scan_kernel).
template <class T>
cudaError_t launch_chunked(const Args<T>& a, const Plan& plan, float* state, float* scratch, cudaStream_t stream,
                           int passes = kAllPasses, T* saved = nullptr) {
  return plan.state_tile == 64 ? launch_chunked_tile<T, 64>(a, plan, state, scratch, stream, passes, saved)
                               : launch_chunked_tile<T, 128>(a, plan, state, scratch, stream, passes, saved);
}

}  // namespace ssm::ops::cuda::ssd_kernels
