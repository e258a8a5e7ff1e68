// ops::embedding on the GPU: one block per id copies its table row (F32 or BF16) into the output row,
// converting to the activation dtype of `out`.
//
// Ids live on the GPU, so checking them on the host would mean waiting for every upload or sampled
// token. Instead the kernel checks each id: an id outside [0, V) reads nothing, its output row
// becomes NaN, and the lowest such position is recorded on the device (embedding_ids.cuh; the
// backward records there too). ops::check_embedding_ids reads the record where the caller waits
// anyway and throws the CPU op's error for it.
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/cuda_ops.h"
#include "ops/cuda/embedding_ids.cuh"
#include "ops/cuda/op_checks.h"
#include "ops/cuda/packs.cuh"

namespace ssm::ops::cuda {

namespace {

__device__ BadId g_bad_id = {kNoBadId, 0};

template <class W, class T, int N>
__global__ void embedding_kernel(const W* table, int64_t vocab, int64_t width, const int32_t* ids, Rows<T> out) {
  const int64_t position = blockIdx.x;
  const int32_t id = ids[position];
  T* dst = &out.at(position, 0);
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0) record_bad_id(&g_bad_id, position, id, vocab);
    for (int64_t c = threadIdx.x; c < width; c += blockDim.x) dst[c] = from_float<T>(NAN);
    return;
  }
  const W* src = table + id * width;
  for (int64_t p = threadIdx.x; p < width / N; p += blockDim.x) {
    float v[N];
    load_pack<N>(src + p * N, v);
    store_pack<N>(dst + p * N, v);
  }
}

// Calls fn.template operator()<W>() with W = float or bf16 for the table's dtype.
template <class Fn>
void with_table_type(const Tensor& table, Fn&& fn) {
  if (table.dtype() == DType::F32) fn.template operator()<float>();
  else if (table.dtype() == DType::BF16) fn.template operator()<bf16>();
  else fail("embedding: a GPU table must be F32 or BF16, got {}", describe(table));
}

}  // namespace

void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  check_on_gpu("embedding", {&table, &ids, &out});
  SSM_CHECK(table.dim() == 2 && table.is_contiguous(), "embedding: table must be a contiguous [V, D] tensor, got {}",
            describe(table));
  SSM_CHECK(ids.dtype() == DType::I32 && ids.is_contiguous(), "embedding: ids must be a contiguous I32 tensor, got {}",
            describe(ids));
  const int64_t vocab = table.size(0), width = table.size(1), count = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(width);
  SSM_CHECK(is_gpu_rows(out, out.dtype(), out_shape) && is_activation_dtype(out.dtype()),
            "embedding: out must be F32 or BF16 rows {} for ids {} and table {}, got {}", shape_str(out_shape),
            describe(ids), describe(table), describe(out));
  SSM_CHECK(count < (int64_t(1) << 31), "embedding: {} ids are more than one launch takes", count);
  if (count == 0 || width == 0) return;
  with_table_type(table, [&]<class W>() {
    with_activation_type(out.dtype(), "embedding", [&]<class T>() {
      with_pack<T>(packs_fit(kPack<T>, {&table, &out}), [&]<int N>() {
        embedding_kernel<W, T, N><<<unsigned(count), threads_for(width / N, 256), 0, stream()>>>(
            table.data<W>(), vocab, width, ids.data<int32_t>(), rows_of<T>(out));
        SSM_CUDA_CHECK_LAUNCH("embedding of {} ids from {}", count, describe(table));
      });
    });
  });
}

BadId* bad_id_record() {
  static BadId* const address = [] {
    void* p = nullptr;
    SSM_CUDA_CHECK(cudaGetSymbolAddress(&p, g_bad_id), "finding the embedding's id check");
    return static_cast<BadId*>(p);
  }();
  return address;
}

void check_embedding_ids() {
  BadId found{};
  SSM_CUDA_CHECK(cudaMemcpyFromSymbolAsync(&found, g_bad_id, sizeof found, 0, cudaMemcpyDeviceToHost, stream()),
                 "reading the embedding's id check");
  SSM_CUDA_CHECK(cudaStreamSynchronize(stream()), "reading the embedding's id check");
  if (found.position_and_id == kNoBadId) return;
  static const BadId none{kNoBadId, 0};
  SSM_CUDA_CHECK(cudaMemcpyToSymbolAsync(g_bad_id, &none, sizeof none, 0, cudaMemcpyHostToDevice, stream()),
                 "resetting the embedding's id check");
  SSM_CUDA_CHECK(cudaStreamSynchronize(stream()), "resetting the embedding's id check");
  fail("embedding: id {} at position {} is outside the vocabulary [0, {})",
       int32_t(uint32_t(found.position_and_id & 0xffffffffu)), found.position_and_id >> 32, found.vocab);
}

}  // namespace ssm::ops::cuda
