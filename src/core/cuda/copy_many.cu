// Many copies within GPU memory as one kernel (core/device.h, copy_many): the copies' descriptions
// travel in the kernel's parameters, a block row per copy.
#include <algorithm>
#include <cstdint>

#include "core/cuda/check.h"
#include "core/cuda/runtime.h"
#include "core/device.h"

namespace ssm::cuda {
namespace {

constexpr int kMaxCopies = 64;  // per launch (1.5 KB of parameters)
constexpr int kThreads = 256;
constexpr unsigned kMaxBlocksPerCopy = 512;

struct Copies {
  ByteCopy copy[kMaxCopies];
};

// Moves `bytes` bytes in pieces of type Piece, the thread's share of the copy.
template <class Piece>
__device__ void copy_pieces(const ByteCopy& c, size_t first, size_t stride) {
  auto* dst = static_cast<Piece*>(c.dst);
  const auto* src = static_cast<const Piece*>(c.src);
  for (size_t i = first; i < c.bytes / sizeof(Piece); i += stride) dst[i] = src[i];
}

// Block (x, y): the x-th part of copy y, in 16-byte pieces where both ends and the size allow.
__global__ void __launch_bounds__(kThreads) copy_many_kernel(Copies copies) {
  const ByteCopy& c = copies.copy[blockIdx.y];
  const size_t first = size_t(blockIdx.x) * kThreads + threadIdx.x, stride = size_t(gridDim.x) * kThreads;
  const uintptr_t alignment = reinterpret_cast<uintptr_t>(c.dst) | reinterpret_cast<uintptr_t>(c.src) | c.bytes;
  if (alignment % 16 == 0) copy_pieces<uint4>(c, first, stride);
  else if (alignment % 4 == 0) copy_pieces<uint32_t>(c, first, stride);
  else copy_pieces<unsigned char>(c, first, stride);
}

}  // namespace

void copy_many(std::span<const ByteCopy> copies) {
  const auto stream = static_cast<cudaStream_t>(current_stream());
  for (size_t first = 0; first < copies.size(); first += kMaxCopies) {
    const size_t count = std::min<size_t>(kMaxCopies, copies.size() - first);
    Copies batch{};
    size_t largest = 0;
    for (size_t i = 0; i < count; ++i) {
      batch.copy[i] = copies[first + i];
      largest = std::max(largest, batch.copy[i].bytes);
    }
    if (largest == 0) continue;
    const size_t pieces = (largest + 15) / 16;
    const unsigned blocks = unsigned(std::min<size_t>((pieces + kThreads - 1) / kThreads, kMaxBlocksPerCopy));
    copy_many_kernel<<<dim3(blocks, unsigned(count)), kThreads, 0, stream>>>(batch);
    SSM_CUDA_CHECK_LAUNCH("copying {} ranges of GPU memory (the largest {} bytes)", count, largest);
  }
}

}  // namespace ssm::cuda
