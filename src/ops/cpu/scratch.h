// Grow-only scratch memory for the CPU kernels. Declared thread_local where it is used, a Scratch
// keeps its buffer across calls, so an op allocates only when a call needs more than any call
// before it on that thread (never in the steady state of a forward, a decode step or a training
// step). The contents are not initialised and not kept: each get() may return fresh memory.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace ssm::ops::detail {

class Scratch {
 public:
  // At least `count` elements of T, 64-byte aligned; valid until the next get() on this Scratch.
  template <class T>
  T* get(size_t count) {
    const size_t bytes = count * sizeof(T);
    if (bytes > capacity_) {
      const size_t grown = (bytes + 4095) / 4096 * 4096;
      void* memory = std::aligned_alloc(64, grown);
      if (!memory) throw std::bad_alloc();
      buffer_.reset(static_cast<std::byte*>(memory));
      capacity_ = grown;
    }
    return reinterpret_cast<T*>(buffer_.get());
  }
  // The same, set to T{} (zeros).
  template <class T>
  T* zeroed(size_t count) {
    T* p = get<T>(count);
    std::fill(p, p + count, T{});
    return p;
  }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> buffer_;
  size_t capacity_ = 0;
};

}  // namespace ssm::ops::detail
