#include "core/cuda/runtime.h"

#include <cstdint>
#include <mutex>

#include "core/cuda/check.h"
#include "core/tensor.h"

namespace ssm::cuda {

void fail_call(cudaError_t error, const char* call, const std::string& context) {
  cudaGetLastError();  // clear a sticky-free error so later calls can report their own
  fail("CUDA error in {}: {} ({}: {})", context, cudaGetErrorString(error), call, cudaGetErrorName(error));
}

namespace {

struct Probe {
  int count = 0;
  std::string reason;
};

const Probe& probe() {
  static const Probe result = [] {
    Probe p;
    const cudaError_t error = cudaGetDeviceCount(&p.count);
    if (error != cudaSuccess) {
      p.count = 0;
      p.reason = cudaGetErrorString(error);
      cudaGetLastError();
    } else if (p.count == 0) {
      p.reason = "the driver reports no devices";
    }
    if (p.count > 0) {
      // Freed memory stays in the pool for the next allocation instead of going back to the driver.
      cudaMemPool_t pool;
      if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) {
        uint64_t keep = UINT64_MAX;
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
      }
    }
    return p;
  }();
  return result;
}

thread_local cudaStream_t tls_stream = nullptr;
thread_local bool tls_stream_set = false;

}  // namespace

int device_count() { return probe().count; }
std::string no_device_reason() { return probe().reason; }

void* current_stream() {
  if (!tls_stream_set) {
    SSM_CUDA_CHECK(cudaStreamCreateWithFlags(&tls_stream, cudaStreamNonBlocking), "creating a stream");
    tls_stream_set = true;
  }
  return tls_stream;
}

void set_current_stream(void* stream) {
  tls_stream = static_cast<cudaStream_t>(stream);
  tls_stream_set = true;
}

size_t free_memory() {
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) cudaGetLastError();
  return free;
}

namespace {

size_t pool_attribute(cudaMemPoolAttr attribute) {
  cudaMemPool_t pool;
  uint64_t value = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) cudaMemPoolGetAttribute(pool, attribute, &value);
  cudaGetLastError();
  return size_t(value);
}

}  // namespace

size_t peak_pool_bytes() { return pool_attribute(cudaMemPoolAttrReservedMemHigh); }
size_t peak_pool_used_bytes() { return pool_attribute(cudaMemPoolAttrUsedMemHigh); }

void reset_peak_pool_bytes() {
  cudaMemPool_t pool;
  uint64_t zero = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) {
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero);
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero);
  }
  cudaGetLastError();
}

void release_free_pool_memory() {
  synchronize();
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
  cudaGetLastError();
}

std::shared_ptr<Storage> allocate(size_t bytes) {
  SSM_CHECK(device_count() > 0, "--device cuda: no CUDA GPU is visible ({})", no_device_reason());
  cudaStream_t stream = static_cast<cudaStream_t>(current_stream());
  void* data = nullptr;
  if (bytes > 0) {
    const cudaError_t error = cudaMallocAsync(&data, bytes, stream);
    if (error == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      fail("out of GPU memory: asked for {:.1f} MiB, {:.1f} MiB free", double(bytes) / 1048576.0,
           double(free_memory()) / 1048576.0);
    }
    SSM_CUDA_CHECK(error, "allocating {} bytes on the GPU", bytes);
  }
  return std::make_shared<Storage>(data, bytes, Device::CUDA, [stream](void* p) {
    if (p) cudaFreeAsync(p, stream);
  });
}

std::shared_ptr<Storage> allocate_pinned(size_t bytes) {
  void* data = nullptr;
  if (bytes > 0)
    SSM_CUDA_CHECK(cudaMallocHost(&data, bytes), "allocating {} bytes of page-locked host memory", bytes);
  return std::make_shared<Storage>(data, bytes, Device::CPU, [](void* p) {
    if (p) cudaFreeHost(p);
  });
}

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes) {
  const cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                            : cudaMemcpyDeviceToHost;
  cudaStream_t stream = static_cast<cudaStream_t>(current_stream());
  SSM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream), "copying {} bytes", bytes);
  if (kind != cudaMemcpyDeviceToDevice)
    SSM_CUDA_CHECK(cudaStreamSynchronize(stream), "copying {} bytes", bytes);
}

void copy_rows(void* dst, size_t dst_pitch, bool dst_on_device, const void* src, size_t src_pitch, bool src_on_device,
               size_t row_bytes, size_t rows) {
  const cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                            : cudaMemcpyDeviceToHost;
  cudaStream_t stream = static_cast<cudaStream_t>(current_stream());
  SSM_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows, kind, stream),
                 "copying {} rows of {} bytes", rows, row_bytes);
  if (kind != cudaMemcpyDeviceToDevice)
    SSM_CUDA_CHECK(cudaStreamSynchronize(stream), "copying {} rows of {} bytes", rows, row_bytes);
}

void zero(void* dst, size_t bytes) {
  SSM_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(current_stream())), "zeroing {} bytes",
                 bytes);
}

Event::Event() {
  cudaEvent_t event = nullptr;
  SSM_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "creating an event");
  event_ = event;
}

Event::~Event() { cudaEventDestroy(static_cast<cudaEvent_t>(event_)); }

void Event::record() {
  SSM_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(current_stream())),
                 "recording an event");
}

void Event::wait() const {
  SSM_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(current_stream()), static_cast<cudaEvent_t>(event_), 0),
                 "waiting for an event");
}

SideStream::SideStream() {
  cudaStream_t stream = nullptr;
  SSM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "creating a side stream");
  stream_ = stream;
}

SideStream::~SideStream() {
  // Its work may still write memory that is freed (stream-ordered, on another stream) after this.
  cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
  cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  cudaGetLastError();
}

void SideStream::queue(const std::function<void()>& work, Event& done) {
  cudaStream_t caller = static_cast<cudaStream_t>(current_stream());
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SSM_CUDA_CHECK(cudaStreamIsCapturing(caller, &capture), "queuing work on a side stream");
  SSM_CHECK(capture == cudaStreamCaptureStatusNone, "work on a side stream cannot be recorded into a graph");
  fork_.record();
  set_current_stream(stream_);
  try {
    fork_.wait();
    work();
    done.record();
  } catch (...) {
    set_current_stream(caller);
    throw;
  }
  set_current_stream(caller);
}

bool Graph::record(const std::function<void()>& work) {
  clear();
  cudaStream_t stream = static_cast<cudaStream_t>(current_stream());
  SSM_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "recording a graph");
  bool ok = true;
  try {
    work();
  } catch (const Error&) {
    ok = false;  // a call refused during capture (a synchronising copy): run the work directly
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  // A call that failed inside the recording without throwing (its error only in cudaGetLastError)
  // refuses the recording too.
  const cudaError_t failed_inside = cudaGetLastError();
  if (!ok || ended != cudaSuccess || failed_inside != cudaSuccess || !graph) {
    cudaGetLastError();
    if (graph) cudaGraphDestroy(graph);
    return false;
  }
  cudaGraphExec_t exec = nullptr;
  if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
    cudaGetLastError();
    cudaGraphDestroy(graph);
    return false;
  }
  graph_ = graph;
  exec_ = exec;
  return true;
}

void Graph::replay() {
  SSM_CHECK(exec_, "Graph::replay: nothing recorded");
  SSM_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(current_stream())),
                 "replaying a recorded graph");
}

void Graph::clear() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
  exec_ = graph_ = nullptr;
}

void synchronize() {
  SSM_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(current_stream())), "waiting for the GPU");
}

}  // namespace ssm::cuda
