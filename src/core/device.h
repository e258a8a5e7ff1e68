// Where tensors live: the CPU, or a CUDA GPU when this build has the CUDA backend (SSM_CUDA) and the
// machine has a GPU. Memory and copies go through here so that everything above stays
// device-neutral; a CUDA call that fails becomes an ssm::Error naming what was asked.
#pragma once
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace ssm {

enum class Device : uint8_t { CPU, CUDA };

class Storage;

std::string_view device_name(Device device);  // "cpu" or "cuda"
// "cpu" or "cuda" (a --device flag); anything else is an error naming `what`.
Device parse_device(std::string_view name, const std::string& what);

// Whether this build has the CUDA backend, and whether a GPU can be used now.
bool cuda_built();
bool cuda_available();
// Throws one clear error when `device` cannot be used (no CUDA backend, no GPU).
void require_device(Device device);

// `bytes` of memory on `device` (CPU: 64-byte aligned; CUDA: from the stream-ordered pool).
std::shared_ptr<Storage> allocate_storage(size_t bytes, Device device);
// `bytes` of host memory (a Device::CPU storage) for copies to and from `device`: page-locked when that
// is the GPU (a copy from or to pageable memory goes through the driver's staging buffer, and takes
// about twice as long), else as allocate_storage.
std::shared_ptr<Storage> allocate_staging(size_t bytes, Device device);
// Copies `bytes` between any two devices; waits until the bytes have arrived, except from GPU memory
// to GPU memory, which is only queued on the current stream: work queued after it there sees the
// bytes, and the host has nothing to wait for (joining a sequence to a decode batch on the GPU is then
// a few queued copies, not a round trip each). Memory another thread's stream allocated must not be
// freed while such a copy from it may still be queued (synchronize first).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
// Copies `rows` rows of `row_bytes` each, rows `dst_pitch` / `src_pitch` bytes apart; waits (or queues) as above.
void copy_rows(void* dst, size_t dst_pitch, Device dst_device, const void* src, size_t src_pitch, Device src_device,
               size_t row_bytes, size_t rows);
// One of several copies within one device's memory (copy_many).
struct ByteCopy {
  void* dst;
  const void* src;
  size_t bytes;
};
// Makes every copy (dst and src on `device`, no two overlapping). On the GPU they are queued as one
// kernel on the current stream, not a queued copy each: a sequence's state is two copies per layer,
// and each queued copy costs the host ~4 us (48 of them, mamba2-130m's state, took 0.21 ms).
void copy_many(std::span<const ByteCopy> copies, Device device);
// Sets `bytes` bytes at dst to zero (on the GPU: queued on the current stream, no wait).
void zero_bytes(void* dst, Device device, size_t bytes);
// Waits until all work queued on the device has finished (no-op on the CPU).
void synchronize(Device device);
// GPU memory the process has held at most since the last reset (0 on the CPU or without CUDA), and
// the most of it that allocations used at once (the rest: freed blocks the pool kept).
size_t device_peak_bytes();
size_t device_peak_used_bytes();
void reset_device_peak_bytes();
// On the GPU: waits for the current stream and returns the memory pool's free memory to the driver
// (the pool keeps freed memory otherwise). No-op on the CPU.
void release_free_device_memory(Device device);

}  // namespace ssm
