// A rows tensor as a kernel sees it, apart from Tensor: the kernels' headers that dev/cuda's host checks
// include (with element.cuh) need nothing else from the library.
#pragma once
#include <cstdint>

namespace ssm::ops::cuda {

// Element (r, c) at data[r * ld + c].
template <class T>
struct Rows {
  T* data;
  int64_t ld;
  __device__ __forceinline__ T& at(int64_t r, int64_t c) const { return data[r * ld + c]; }
};

}  // namespace ssm::ops::cuda
