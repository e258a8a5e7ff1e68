// Programmatic dependent launch (Hopper): a kernel launched with launch_overlapped may start while the
// kernel before it in the stream drains, instead of after it has finished and its memory is flushed
// (~2 us per dependent launch, which at batch-1 decoding is as long as a layer's products take). Such a
// kernel must call wait_for_previous_grid() before it touches anything the previous kernel writes (or
// reads: it may still be reading what this one writes); what it does before — loading weights, which
// nothing writes — overlaps the previous kernel's tail. Each kernel calls let_next_grid_start() after its
// own wait, so a kernel's early part only ever overlaps its immediate predecessor. A kernel launched
// without the attribute runs the two instructions as no-ops. Stream capture records the overlap as a
// programmatic edge of the CUDA graph (cudaGraphDependencyTypeProgrammatic), so a replayed decode
// step keeps it. No engine headers (dev/cuda/decode_layer.cu launches the kernels as the engine does).
#pragma once
#include <cuda_runtime.h>

namespace ssm::ops::cuda::pdl {

// Waits until the previous grid has completed and its memory operations are visible.
__device__ __forceinline__ void wait_for_previous_grid() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
// Lets the next grid (launched with launch_overlapped) be scheduled once every block of this one has
// called it or exited.
__device__ __forceinline__ void let_next_grid_start() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// Fetches the line holding p into L2 without loading it into registers. Safe before the wait whoever
// writes p: L2 is where every write of every kernel is seen, so the loads after the wait get the newest
// values, and faster when nothing changed them.
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// kernel<<<grid, block, shared_bytes, stream>>>(args...), allowed to overlap the previous kernel.
template <class... Params, class... Args>
cudaError_t launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                              cudaStream_t stream, Args... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, args...);
}

}  // namespace ssm::ops::cuda::pdl
