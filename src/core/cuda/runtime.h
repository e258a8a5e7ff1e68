// The CUDA runtime as the engine uses it: one GPU, a current stream per thread, a stream-ordered
// memory pool that keeps freed memory for reuse, and every call checked. Host code includes this
// header; only .cu files and core/cuda/ include cuda_runtime.h.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace ssm {
class Storage;
struct ByteCopy;
}

namespace ssm::cuda {

int device_count();               // 0 without a usable GPU (never throws)
std::string no_device_reason();   // why device_count() is 0
std::shared_ptr<Storage> allocate(size_t bytes);
std::shared_ptr<Storage> allocate_pinned(size_t bytes);  // page-locked host memory (a Device::CPU storage)
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes);
void copy_rows(void* dst, size_t dst_pitch, bool dst_on_device, const void* src, size_t src_pitch, bool src_on_device,
               size_t row_bytes, size_t rows);
void copy_many(std::span<const ByteCopy> copies);  // GPU to GPU, queued on the current stream
void zero(void* dst, size_t bytes);  // queued on the current stream
void synchronize();               // the current stream
size_t free_memory();             // bytes free on the GPU now
size_t peak_pool_bytes();         // the most the memory pool has held since the last reset
size_t peak_pool_used_bytes();    // the most of it allocations used at once since the last reset
void reset_peak_pool_bytes();
// Waits for the current stream, then hands the pool's free memory back to the driver, so that a large
// allocation after many freed smaller ones reuses their memory instead of adding to it.
void release_free_pool_memory();

// The stream ops enqueue on (a cudaStream_t); each thread starts on its own non-blocking stream.
void* current_stream();
void set_current_stream(void* stream);

// A point in the work queued on a stream (a cudaEvent_t, timing disabled), for ordering one
// stream's later work after it (see ssm::DeviceEvent).
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record();       // marks the work queued on the current stream so far
  void wait() const;   // the current stream's later work waits for what was marked (nothing if never recorded)

 private:
  void* event_ = nullptr;  // cudaEvent_t
};

// A second non-blocking stream for work that overlaps the current stream's (see ssm::SideStream).
class SideStream {
 public:
  SideStream();
  ~SideStream();  // waits for its queued work
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;
  // Queues on this stream what `work` queues on the current stream, to start after everything queued
  // on the caller's current stream so far, and records `done` after it. Not while recording a graph.
  void queue(const std::function<void()>& work, Event& done);

 private:
  void* stream_ = nullptr;  // cudaStream_t
  Event fork_;              // the caller's stream at queue()
};

// A CUDA graph recorded from the current stream (see ssm::DeviceGraph).
class Graph {
 public:
  Graph() = default;
  ~Graph() { clear(); }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  bool record(const std::function<void()>& work);
  bool recorded() const { return exec_ != nullptr; }
  void replay();
  void clear();

 private:
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
};

}  // namespace ssm::cuda
