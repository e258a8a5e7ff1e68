// Packs: N consecutive elements of a row that one thread moves in 16-byte accesses (N = kPack<T>:
// 4 F32 or 8 BF16 activations), what a memory-bound kernel needs to reach the bandwidth. Kernels
// take N as a template argument; the launcher picks N = kPack<T> when every row the kernel touches
// allows it (packs_fit: widths divisible by N, rows starting on the pack's alignment), else N = 1.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "ops/cuda/common.cuh"

namespace ssm::ops::cuda {

template <class T>
inline constexpr int kPack = int(16 / sizeof(T));

// N elements, aligned to their size up to 16 bytes (8 F32 weights beside 8 BF16 activations are two
// 16-byte accesses).
template <class T, int N>
struct alignas(sizeof(T) * N < 16 ? sizeof(T) * N : 16) Pack {
  T v[N];
};

// out[i] = p[i] as float, for i < N; p aligned as Pack<T, N>.
template <int N, class T>
__device__ __forceinline__ void load_pack(const T* p, float (&out)[N]) {
  using U = std::remove_const_t<T>;
  const Pack<U, N> pack = *reinterpret_cast<const Pack<U, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_float(pack.v[i]);
}

// p[i] = in[i] rounded to T, for i < N.
template <int N, class T>
__device__ __forceinline__ void store_pack(T* p, const float (&in)[N]) {
  Pack<T, N> pack;
#pragma unroll
  for (int i = 0; i < N; ++i) pack.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pack;
}

// Whether packs of n elements fit every defined tensor given: its last dim divisible by n, its data
// and every row start aligned to the pack's bytes (n elements of its own dtype, at most 16).
inline bool packs_fit(int n, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (!t->defined()) continue;
    const int64_t element = int64_t(dtype_size(t->dtype())), align = std::min<int64_t>(16, element * n);
    const int64_t width = t->dim() ? t->size(-1) : 1;
    const int64_t ld = t->dim() >= 2 && t->numel() > 0 ? t->row_stride() : width;
    if (width % n != 0 || reinterpret_cast<uintptr_t>(t->raw()) % uintptr_t(align) != 0 || ld * element % align != 0)
      return false;
  }
  return true;
}

// Calls fn.template operator()<N>() with N = kPack<T> when `fits`, else N = 1.
template <class T, class Fn>
void with_pack(bool fits, Fn&& fn) {
  if (fits) fn.template operator()<kPack<T>>();
  else fn.template operator()<1>();
}

// Threads for a block that walks `items` items of one row: one per item, in whole warps, from 32 to
// `most`.
inline int threads_for(int64_t items, int most) {
  return int(std::clamp<int64_t>((items + 31) / 32 * 32, 32, most));
}

}  // namespace ssm::ops::cuda
