// What the standalone GPU benchmarks of dev/cuda/*.cu share: the error check, host <-> device copies,
// random inputs made on the GPU and event timing (and check_util.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "check_util.h"

#define CHECK_CUDA(call)                                                                              \
  do {                                                                                                \
    const cudaError_t error_ = (call);                                                                \
    if (error_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(error_)); \
      std::exit(1);                                                                                   \
    }                                                                                                 \
  } while (0)

template <class T>
T* upload(const std::vector<float>& v) {
  std::vector<T> converted(v.size());
  for (size_t i = 0; i < v.size(); ++i) converted[i] = T(v[i]);
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(1, v.size()) * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(d, converted.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <class T>
T* upload_or_null(const std::vector<float>& v) {
  return v.empty() ? nullptr : upload<T>(v);
}

template <class T>
std::vector<float> download(const T* d, size_t n) {
  std::vector<T> raw(n);
  CHECK_CUDA(cudaMemcpy(raw.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = float(raw[i]);
  return out;
}

// n elements, all NaN (0xff bytes are NaN in F32 and BF16), so an unwritten one fails a check.
template <class T>
T* nan_on_gpu(size_t n) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(1, n) * sizeof(T)));
  CHECK_CUDA(cudaMemset(d, 0xff, n * sizeof(T)));
  return d;
}

// Uniform values in [lo, hi) from a hash of (seed, i), converted to T: the timing inputs, made on the
// GPU (a host generator would take seconds at 100K tokens).
template <class T>
__global__ void fill_kernel(T* out, size_t n, uint64_t seed, float lo, float hi) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint64_t x = (uint64_t(i) + 1) * 0x9E3779B97F4A7C15ULL + seed;
  x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ULL, x ^= x >> 33;
  out[i] = T(lo + (hi - lo) * float(uint32_t(x) >> 8) * (1.0f / 16777216.0f));
}
template <class T>
T* random_on_gpu(size_t n, uint64_t seed, float lo, float hi) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(1, n) * sizeof(T)));
  fill_kernel<T><<<unsigned((n + 255) / 256), 256>>>(d, n, seed, lo, hi);
  CHECK_CUDA(cudaGetLastError());
  return d;
}

// Median milliseconds of `reps` runs of fn(i) (each between two events) after `warmup` runs; i counts
// every run from 0, warm-ups first (to rotate among input sets).
template <class Fn>
double median_ms(Fn fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<cudaEvent_t> events(2 * size_t(reps));
  for (cudaEvent_t& e : events) CHECK_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(events[2 * i]));
    fn(warmup + i);
    CHECK_CUDA(cudaEventRecord(events[2 * i + 1]));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> ms(reps);
  for (int i = 0; i < reps; ++i) {
    float t = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&t, events[2 * i], events[2 * i + 1]));
    ms[i] = t;
  }
  for (cudaEvent_t& e : events) CHECK_CUDA(cudaEventDestroy(e));
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[reps / 2];
}

// Median over `batches` of the mean time of `per_batch` back-to-back runs of fn(i) (CUDA events around
// each batch) after `warmup` runs; i counts every run from 0, warm-ups first.
template <class Fn>
double median_batch_ms(Fn fn, int warmup, int batches, int per_batch) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<float> times;
  for (int i = 0; i < batches; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    for (int j = 0; j < per_batch; ++j) fn(i * per_batch + j);
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms / per_batch);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Median milliseconds of one replay of a CUDA graph of what enqueue() queues on `stream` (captured once),
// over `replays` replays after `warmup`: the kernels back to back as the engine's recorded graphs run
// them, no host launch timed.
template <class Fn>
double median_graph_ms(cudaStream_t stream, Fn enqueue, int warmup, int replays) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  enqueue();
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) CHECK_CUDA(cudaGraphLaunch(exec, stream));
  std::vector<float> ms;
  for (int i = 0; i < replays; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Prints the GPU's name, multiprocessor count and the shared memory a block may opt in to.
inline void print_gpu() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d multiprocessors, %zu KB shared memory per block (opt-in)\n", prop.name,
              prop.multiProcessorCount, prop.sharedMemPerBlockOptin / 1024);
}
