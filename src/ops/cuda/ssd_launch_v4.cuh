// Host side of v4 of the chunked SSD forward (ssd_kernels_v4.cuh): its plan and launches, as
// ssd_launch.cuh has them for v3. Used by dev/cuda/ssd.cu only (the engine runs v3).
#pragma once
#include "ssd_kernels_v4.cuh"
#include "ssd_launch.cuh"

namespace ssm::ops::cuda::ssd_kernels::v4 {

// Which kernels a launch runs: all (the forward); one alone only to time it (dev/cuda/ssd.cu).
enum Passes { kPrep = 4, kAll = kPrep | kPieceStates | kChunkScan };

// Once per instantiation: raise the kernels' shared-memory limits (all of L1 as shared memory), read the
// occupancy of passes 1 and 2.
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
    raise(chunk_scan_kernel<T, kN>, chunk_scan_smem<T, kN>());
    if (s.error == cudaSuccess)
      s.error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&s.piece_blocks_per_sm, piece_state_kernel<T, kN>,
                                                              kThreads, piece_state_smem<T, kN>());
    if (s.error == cudaSuccess)
      s.error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&s.scan_blocks_per_sm, chunk_scan_kernel<T, kN>,
                                                              kThreads, chunk_scan_smem<T, kN>());
    return s;
  }();
  return setup;
}

template <class T>
cudaError_t plan_chunked(const Args<T>& a, Plan* plan) {
  const KernelSetup& setup = a.state_dim <= 64 ? v4::kernel_setup<T, 64>() : v4::kernel_setup<T, 128>();
  if (setup.error != cudaSuccess) return setup.error;
  int device = 0, sms = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (error != cudaSuccess) return error;
  *plan = make_plan(a.length, a.state_dim, int64_t(a.batch) * a.heads, int64_t(sms) * std::max(1, setup.scan_blocks_per_sm),
                    int64_t(sms) * std::max(1, setup.piece_blocks_per_sm));
  return cudaSuccess;
}

template <class T, int kN>
cudaError_t launch_chunked_tile(const Args<T>& a, const Plan& plan, float* state, float* scratch,
                                cudaStream_t stream, int passes) {
  const unsigned heads = unsigned(a.batch) * unsigned(a.heads);
  const Scratch<T> s = scratch_parts(scratch, a, plan);
  if (passes & kPrep) {
    chunk_prep_kernel<T, kN><<<unsigned(a.batch) * unsigned(plan.chunks), kThreads, prep_smem<T, kN>(), stream>>>(
        a, plan.chunks, s.scans, s.cb);
    if (const cudaError_t error = cudaGetLastError(); error != cudaSuccess) return error;
  }
  if (plan.segments > 1 && (passes & kPieceStates)) {
    piece_state_kernel<T, kN><<<heads * plan.pieces(), kThreads, piece_state_smem<T, kN>(), stream>>>(
        a, plan, state, s.slots, s.log_decays, s.scans);
    if (const cudaError_t error = cudaGetLastError(); error != cudaSuccess) return error;
  }
  if (!(passes & kChunkScan)) return cudaSuccess;
  chunk_scan_kernel<T, kN><<<heads * plan.segments, kThreads, chunk_scan_smem<T, kN>(), stream>>>(
      a, plan, state, s.slots, s.log_decays, s.scans, s.cb);
  return cudaGetLastError();
}

// The chunked forward, v4: as ssd_kernels::launch_chunked, with scratch_floats(a, plan) floats of scratch.
template <class T>
cudaError_t launch_chunked(const Args<T>& a, const Plan& plan, float* state, float* scratch, cudaStream_t stream,
                           int passes = kAll) {
  return plan.state_tile == 64 ? v4::launch_chunked_tile<T, 64>(a, plan, state, scratch, stream, passes)
                               : v4::launch_chunked_tile<T, 128>(a, plan, state, scratch, stream, passes);
}

}  // namespace ssm::ops::cuda::ssd_kernels::v4
