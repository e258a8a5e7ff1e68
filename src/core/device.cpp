#include "core/device.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/tensor.h"

#ifdef SSM_CUDA
#include "core/cuda/runtime.h"
#endif

namespace ssm {

std::string_view device_name(Device device) { return device == Device::CPU ? "cpu" : "cuda"; }

Device parse_device(std::string_view name, const std::string& what) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") return Device::CUDA;
  fail("{}: unknown device '{}' (cpu or cuda)", what, name);
}

bool cuda_built() {
#ifdef SSM_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#ifdef SSM_CUDA
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

void require_device(Device device) {
  if (device == Device::CPU) return;
  SSM_CHECK(cuda_built(), "--device cuda: this build has no CUDA backend (configure with -DSSM_CUDA=ON where nvcc is "
                          "installed)");
#ifdef SSM_CUDA
  SSM_CHECK(cuda::device_count() > 0, "--device cuda: no CUDA GPU is visible ({})", cuda::no_device_reason());
#endif
}

std::shared_ptr<Storage> allocate_storage(size_t bytes, Device device) {
  if (device == Device::CUDA) {
#ifdef SSM_CUDA
    return cuda::allocate(bytes);
#else
    require_device(device);
#endif
  }
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* data = rounded ? std::aligned_alloc(64, rounded) : nullptr;
  if (rounded && !data) fail("out of memory allocating {} bytes", bytes);
  return std::make_shared<Storage>(data, bytes, Device::CPU, [](void* p) { std::free(p); });
}

std::shared_ptr<Storage> allocate_staging(size_t bytes, Device device) {
#ifdef SSM_CUDA
  if (device == Device::CUDA) return cuda::allocate_pinned(bytes);
#endif
  return allocate_storage(bytes, Device::CPU);
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef SSM_CUDA
  cuda::copy(dst, dst_device == Device::CUDA, src, src_device == Device::CUDA, bytes);
#else
  require_device(Device::CUDA);
#endif
}

void copy_rows(void* dst, size_t dst_pitch, Device dst_device, const void* src, size_t src_pitch, Device src_device,
               size_t row_bytes, size_t rows) {
  if (rows == 0 || row_bytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    for (size_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch, row_bytes);
    return;
  }
#ifdef SSM_CUDA
  cuda::copy_rows(dst, dst_pitch, dst_device == Device::CUDA, src, src_pitch, src_device == Device::CUDA, row_bytes,
                  rows);
#else
  require_device(Device::CUDA);
#endif
}

void copy_many(std::span<const ByteCopy> copies, Device device) {
  if (device == Device::CPU) {
    for (const ByteCopy& c : copies) std::memcpy(c.dst, c.src, c.bytes);
    return;
  }
#ifdef SSM_CUDA
  cuda::copy_many(copies);
#else
  require_device(device);
#endif
}

void zero_bytes(void* dst, Device device, size_t bytes) {
  if (bytes == 0) return;
  if (device == Device::CPU) {
    std::memset(dst, 0, bytes);
    return;
  }
#ifdef SSM_CUDA
  cuda::zero(dst, bytes);
#else
  require_device(device);
#endif
}

size_t device_peak_bytes() {
#ifdef SSM_CUDA
  if (cuda_available()) return cuda::peak_pool_bytes();
#endif
  return 0;
}

size_t device_peak_used_bytes() {
#ifdef SSM_CUDA
  if (cuda_available()) return cuda::peak_pool_used_bytes();
#endif
  return 0;
}

void reset_device_peak_bytes() {
#ifdef SSM_CUDA
  if (cuda_available()) cuda::reset_peak_pool_bytes();
#endif
}

void release_free_device_memory(Device device) {
#ifdef SSM_CUDA
  if (device == Device::CUDA) cuda::release_free_pool_memory();
#endif
}

void synchronize(Device device) {
#ifdef SSM_CUDA
  if (device == Device::CUDA) cuda::synchronize();
#endif
}

}  // namespace ssm
