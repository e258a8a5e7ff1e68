// Backward of ops::embedding on the GPU: dtable[ids[i]] += dout[i], deterministically.
//
// The positions are sorted by id, stably (position order within an id): on the host when the ids are
// there (the trainer's case; the sorted pairs are then uploaded), else on the GPU by CUB's radix
// sort. Then the first sorted index of each id owns that id's table row: one block per (sorted index,
// column tile) whose index starts a run adds the run's dout rows in position order onto the row, as
// the CPU op does (the same additions in the same order, so F32 results match it bit for bit). No
// two blocks write one element and no atomics are used.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <vector>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops_backward.h"
#include "ops/cuda/embedding_ids.cuh"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"  // threads_for
#include "ops/cuda/upload.cuh"

namespace ssm::ops::cuda {

namespace {

// Block (i, tile): when sorted index i starts the run of its id, dtable[id, tile's columns] += the
// run's dout rows in sorted (= position) order. An id outside [0, vocab) (ids from the GPU) adds
// nothing and is recorded for ops::check_embedding_ids.
template <class T>
__global__ void add_sorted_rows_kernel(const int32_t* sorted_ids, const int32_t* sorted_positions, int64_t count,
                                       Rows<const T> dout, float* dtable, int64_t vocab, int64_t width,
                                       BadId* bad_ids) {
  const int64_t i = blockIdx.x;
  const int32_t id = sorted_ids[i];
  if (i > 0 && sorted_ids[i - 1] == id) return;
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0 && blockIdx.y == 0) record_bad_id(bad_ids, sorted_positions[i], id, vocab);
    return;
  }
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= width) return;
  // The run ends at the first sorted index whose id is larger (binary search: the ids are sorted).
  int64_t lo = i + 1, hi = count;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (sorted_ids[mid] == id) lo = mid + 1;
    else hi = mid;
  }
  float* dst = dtable + int64_t(id) * width + c;
  float sum = *dst;
#pragma unroll 4
  for (int64_t j = i; j < lo; ++j) sum += to_float(dout.at(sorted_positions[j], c));
  *dst = sum;
}

__global__ void iota_kernel(int32_t* values, int64_t count) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) values[i] = int32_t(i);
}

// sorted [2, count] I32 on the GPU: the ids in increasing order, then their positions (stable).
// Host ids (checked against the vocabulary first, with the CPU op's error) are sorted here.
Tensor sort_host_ids(const Tensor& ids, int64_t vocab) {
  const int64_t count = ids.numel();
  const int32_t* id = ids.data<int32_t>();
  thread_local std::vector<uint64_t> keys;
  thread_local std::vector<int32_t> pairs;
  keys.resize(size_t(count));
  for (int64_t i = 0; i < count; ++i) {
    SSM_CHECK(id[i] >= 0 && id[i] < vocab, "embedding_backward: token id {} at position {} is outside [0, {})",
              id[i], i, vocab);
    keys[size_t(i)] = uint64_t(uint32_t(id[i])) << 32 | uint64_t(i);  // by id, then by position
  }
  std::sort(keys.begin(), keys.end());
  pairs.resize(size_t(2 * count));
  for (int64_t i = 0; i < count; ++i) {
    pairs[size_t(i)] = int32_t(keys[size_t(i)] >> 32);
    pairs[size_t(count + i)] = int32_t(keys[size_t(i)] & 0xffffffffu);
  }
  return upload(pairs.data(), {2, count}, DType::I32, "embedding_backward");
}

// The same from ids on the GPU, by CUB's (stable) radix sort of (id, position) pairs.
Tensor sort_gpu_ids(const Tensor& ids) {
  const int64_t count = ids.numel();
  Tensor sorted = Tensor::empty({2, count}, DType::I32, Device::CUDA);
  Tensor positions = Tensor::empty({count}, DType::I32, Device::CUDA);
  int32_t* sorted_ids = sorted.data<int32_t>();
  int32_t* sorted_positions = sorted_ids + count;
  iota_kernel<<<blocks_for(count, 256), 256, 0, stream()>>>(positions.data<int32_t>(), count);
  SSM_CUDA_CHECK_LAUNCH("embedding_backward: positions of {} ids", count);
  size_t scratch_bytes = 0;
  SSM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, scratch_bytes, ids.data<int32_t>(), sorted_ids,
                                                 positions.data<int32_t>(), sorted_positions, int(count), 0, 32,
                                                 stream()),
                 "embedding_backward: sizing the sort of {} ids", count);
  Tensor scratch = Tensor::empty({int64_t(std::max<size_t>(scratch_bytes, 1))}, DType::I8, Device::CUDA);
  SSM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(scratch.raw(), scratch_bytes, ids.data<int32_t>(), sorted_ids,
                                                 positions.data<int32_t>(), sorted_positions, int(count), 0, 32,
                                                 stream()),
                 "embedding_backward: sorting {} ids", count);
  return sorted;
}

}  // namespace

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  const char* op = "embedding_backward";
  SSM_CHECK(ids.defined() && ids.dtype() == DType::I32 && ids.is_contiguous(),
            "{}: ids must be contiguous I32 (on the host or the GPU), got {}", op, describe(ids));
  SSM_CHECK(dtable.defined() && dtable.device() == Device::CUDA && dtable.dtype() == DType::F32 && dtable.dim() == 2 &&
                dtable.is_contiguous(),
            "{}: dtable must be contiguous F32 [V, D] on the GPU, got {}", op, describe(dtable));
  const int64_t vocab = dtable.size(0), width = dtable.size(1), count = ids.numel();
  SSM_CHECK(is_gpu_rows(dout, dout.dtype()) && is_activation_dtype(dout.dtype()) && dout.size(-1) == width &&
                dout.rows() == count,
            "{}: dout must be F32 or BF16 rows [{} ids, {}] on the GPU, got {}", op, count, width, describe(dout));
  SSM_CHECK(count < (int64_t(1) << 31), "{}: {} ids are more than one launch takes", op, count);
  if (count == 0 || width == 0) return;
  const Tensor sorted = ids.device() == Device::CUDA ? sort_gpu_ids(ids) : sort_host_ids(ids, vocab);
  with_activation_type(dout.dtype(), op, [&]<class T>() {
    const int threads = threads_for(width, 256);
    const dim3 grid(unsigned(count), blocks_for(width, threads));
    add_sorted_rows_kernel<T><<<grid, threads, 0, stream()>>>(sorted.data<int32_t>(), sorted.data<int32_t>() + count,
                                                              count, rows_of<const T>(dout), dtable.data<float>(),
                                                              vocab, width, bad_id_record());
    SSM_CUDA_CHECK_LAUNCH("{}: {} rows of {} into {}", op, count, width, describe(dtable));
  });
}

}  // namespace ssm::ops::cuda
