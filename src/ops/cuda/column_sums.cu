// add_column_sums: a block per 32 columns; each of its 16 slices of threads sums every 16th part in
// order, then one thread per column adds the 16 slice sums in order. The order depends only on
// n_parts, never on the timing of the threads.
#include "ops/cuda/column_sums.h"
#include "ops/cuda/common.cuh"

namespace ssm::ops::cuda {

namespace {

constexpr int kColumns = 32, kSlices = 16;

__global__ void column_sums_kernel(const float* parts, int64_t n_parts, int64_t ld, int64_t width, float* out) {
  __shared__ float slice_sums[kSlices][kColumns];
  const int64_t c = int64_t(blockIdx.x) * kColumns + threadIdx.x;
  float sum = 0.0f;
  if (c < width) {
#pragma unroll 4
    for (int64_t p = threadIdx.y; p < n_parts; p += kSlices) sum += parts[p * ld + c];
  }
  slice_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y != 0 || c >= width) return;
  float total = 0.0f;
#pragma unroll
  for (int s = 0; s < kSlices; ++s) total += slice_sums[s][threadIdx.x];
  out[c] += total;
}

}  // namespace

void add_column_sums(const float* parts, int64_t n_parts, int64_t ld, int64_t width, float* out, const char* op) {
  if (width == 0) return;
  column_sums_kernel<<<blocks_for(width, kColumns), dim3(kColumns, kSlices), 0, stream()>>>(parts, n_parts, ld, width,
                                                                                            out);
  SSM_CUDA_CHECK_LAUNCH("{}: sums of {} partial rows of width {}", op, n_parts, width);
}

}  // namespace ssm::ops::cuda
