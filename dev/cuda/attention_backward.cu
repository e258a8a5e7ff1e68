// The attention backward on the GPU, standalone: checked against the double reference
// (attention_backward_reference.h) and timed against the peer.
//
//   nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I src dev/cuda/attention_backward.cu
//        -o build/dev-cuda/attention_backward
//   build/dev-cuda/attention_backward            (checks, then timings; a short table last)
//
// Versions:
//   v1  attention_backward_launch.cuh (the engine's ops::cuda::attention_backward): D per row, then
//       dK/dV per key tile and dQ per query tile, each recomputing S and dP from lse; 64 x 64 x 64
//       tile products on the CUDA cores in F32 (F32 or BF16 inputs). Seven products per pair of
//       tiles where a single pass with a shared dQ needs five.
//
// The two numbers (METHOD.md) at the timed shapes (backward alone, causal, B 1, H 16, d 128, bf16),
// against the card's measured ceilings (bf16 matrix product 730 TFLOP/s, copy 4.24 TB/s,
// ../shared/BENCHMARKS.md):
//   FLOPs 5 T² d H (S, dP, dV, dK, dQ over half the pairs; v1 executes 7 T² d H);
//   bytes 8 T H d * 2 (q, k, v, o, dout read, dq, dk, dv written once) + the F32 lse and D.
//   T 4096: 172 GFLOP -> 0.235 ms; 134 MB -> 0.032 ms. Compute-bound.
//   T 16384: 2.75 TFLOP -> 3.77 ms.
// Prediction before the first run (v1 has not run on the H200): the CUDA-core tiles reach about a
// third of the 67 TFLOP/s F32 peak (two shared-memory loads per four FMAs): ~240 GFLOP executed at
// 4K in ~11 ms, ~13x the peer; the tensor-core version comes next.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "attention_backward_reference.h"
#include "gpu_check_util.cuh"
#include "ops/cuda/attention_backward_launch.cuh"

using namespace ssm::ops::cuda;
namespace kernels = ssm::ops::cuda::attention_backward_kernels;

// The peer on the same card (../shared/BENCHMARKS.md, 2026-11-28): torch SDPA (FlashAttention) causal,
// batch 1, H 16, d 128, bf16: forward + backward, and forward alone.
struct Peer {
  int T;
  double fwd_bwd_ms, fwd_ms;
};
constexpr Peer kPeers[] = {{4096, 1.15, 0.32}, {16384, 12.4, 3.39}, {65536, 188.0, 53.0}, {102400, 461.0, 127.6}};
constexpr double kMatrixRate = 730e12;  // bf16 FLOP/s (BENCHMARKS.md)

template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<float>& host) {
    std::vector<T> v(host.size());
    for (size_t i = 0; i < host.size(); ++i) v[i] = T(host[i]);
    CHECK_CUDA(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<float> download() const {
    std::vector<T> v(n);
    CHECK_CUDA(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return std::vector<float>(v.begin(), v.end());
  }
  void poison() { CHECK_CUDA(cudaMemset(p, 0xff, n * sizeof(T))); }  // NaN in F32 and BF16
};

// A problem on the GPU, contiguous tensors: inputs, o and lse (from the reference or the forward) and
// the gradients.
template <class T>
struct Data {
  attention_reference::Problem p;
  DeviceBuffer<T> q, k, v, o, dout, dq, dk, dv;
  DeviceBuffer<float> lse, delta;
  explicit Data(const attention_reference::Problem& problem)
      : p(problem),
        q(p.q.size()),
        k(p.k.size()),
        v(p.v.size()),
        o(p.q.size()),
        dout(p.dout.size()),
        dq(p.q.size()),
        dk(p.k.size()),
        dv(p.v.size()),
        lse(size_t(p.batch) * p.heads * p.T),
        delta(lse.n) {
    q.upload(p.q);
    k.upload(p.k);
    v.upload(p.v);
    dout.upload(p.dout);
  }
  kernels::Args<T> args() {
    const int64_t qw = int64_t(p.heads) * p.head_dim, kw = int64_t(p.kv_heads) * p.head_dim;
    auto in = [](const DeviceBuffer<T>& b, int64_t rows, int64_t width) {
      return kernels::SeqPtr<const T>{b.p, rows * width, width};
    };
    auto out = [](DeviceBuffer<T>& b, int64_t rows, int64_t width) {
      return kernels::SeqPtr<T>{b.p, rows * width, width};
    };
    return {in(q, p.T, qw),   in(o, p.T, qw),   in(dout, p.T, qw),
            in(k, p.S, kw),   in(v, p.S, kw),   out(dq, p.T, qw),
            out(dk, p.S, kw), out(dv, p.S, kw), lse.p,
            delta.p,          p.batch,          p.T,
            p.S,              p.heads,          p.kv_heads,
            p.head_dim,       float(p.scale),   p.window};
  }
  void poison() {
    dq.poison();
    dk.poison();
    dv.poison();
  }
};

attention_reference::Problem random_problem(int batch, int T, int S, int heads, int kv_heads, int d, int64_t window,
                                            bool bf16_inputs, std::mt19937& rng) {
  std::uniform_real_distribution<float> wide(-2.0f, 2.0f), unit(-1.0f, 1.0f);
  auto fill = [&](size_t n, std::uniform_real_distribution<float>& dist) {
    std::vector<float> v(n);
    for (float& e : v) e = bf16_inputs ? round_to<__nv_bfloat16>(dist(rng)) : dist(rng);
    return v;
  };
  attention_reference::Problem p{};
  p.batch = batch;
  p.T = T;
  p.S = S;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.head_dim = d;
  p.window = window;
  p.scale = double(1.0f / std::sqrt(float(d)));  // the engine's default, as a float
  p.q = fill(size_t(batch) * T * heads * d, wide);
  p.k = fill(size_t(batch) * S * kv_heads * d, wide);
  p.v = fill(p.k.size(), unit);
  p.dout = fill(p.q.size(), unit);
  return p;
}


// v1 against the reference, o and lse from the reference.
template <class T>
bool check(int batch, int T_, int S, int heads, int kv_heads, int d, int64_t window, std::mt19937& rng) {
  Data<T> data(random_problem(batch, T_, S, heads, kv_heads, d, window, sizeof(T) == 2, rng));
  const attention_reference::Result want = attention_reference::forward_backward(data.p);
  data.o.upload(std::vector<float>(want.o.begin(), want.o.end()));
  data.lse.upload(std::vector<float>(want.lse.begin(), want.lse.end()));
  data.poison();
  CHECK_CUDA(kernels::launch(data.args(), nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const double tol = sizeof(T) == 2 ? 3e-2 : 1e-4;
  const double eq = rel_error(data.dq.download(), want.dq), ek = rel_error(data.dk.download(), want.dk),
               ev = rel_error(data.dv.download(), want.dv);
  const bool ok = eq < tol && ek < tol && ev < tol;
  std::printf("check v1 %s B %d T %4d S %4d heads %2d/%d d %3d window %3lld: dq %.1e dk %.1e dv %.1e %s\n",
              sizeof(T) == 2 ? "bf16" : "f32 ", batch, T_, S, heads, kv_heads, d, (long long)window, eq, ek, ev,
              ok ? "ok" : "FAIL");
  return ok;
}

struct Row {
  int T;
  double ms, forward_ms, peer_ms, peer_total_ms, floor_ms;
};

// v1 at B 1, H 16, d 128, causal, bf16; o and lse from the engine's forward (flash::launch).
Row time_backward(int T, std::mt19937& rng) {
  Data<__nv_bfloat16> data(random_problem(1, T, T, 16, 16, 128, 0, true, rng));
  const int64_t width = 16 * 128;
  auto seq = [&](auto* p) { return flash::SeqPtr<std::remove_pointer_t<decltype(p)>>{p, int64_t(T) * width, width}; };
  const flash::FlashArgs<__nv_bfloat16> forward{seq(static_cast<const __nv_bfloat16*>(data.q.p)),
                                                seq(static_cast<const __nv_bfloat16*>(data.k.p)),
                                                seq(static_cast<const __nv_bfloat16*>(data.v.p)),
                                                seq(data.o.p),
                                                data.lse.p,
                                                1,
                                                T,
                                                T,
                                                16,
                                                16,
                                                128,
                                                float(data.p.scale) * flash::kLog2e};
  const flash::CausalWindow mask{0, 0};
  CHECK_CUDA(flash::launch(forward, mask, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const int reps = T <= 4096 ? 10 : 3;
  const double forward_ms = median_ms([&](int) { CHECK_CUDA(flash::launch(forward, mask, nullptr)); }, 1, reps);
  const double ms = median_ms([&](int) { CHECK_CUDA(kernels::launch(data.args(), nullptr)); }, 1, reps);
  Peer peer{};
  for (const Peer& pr : kPeers)
    if (pr.T == T) peer = pr;
  const double flops = 5.0 * double(T) * T * 128 * 16;
  std::printf("time v1 T %6d: backward %8.3f ms (%5.1f TFLOP/s useful), forward %7.3f ms; peer backward %.2f ms\n", T,
              ms, flops / ms * 1e-9, forward_ms, peer.fwd_bwd_ms - peer.fwd_ms);
  return {T, ms, forward_ms, peer.fwd_bwd_ms - peer.fwd_ms, peer.fwd_bwd_ms, flops / kMatrixRate * 1e3};
}

int main() {
  print_gpu();
  std::mt19937 rng(4321);
  bool ok = true;
  ok &= check<float>(2, 200, 263, 8, 2, 128, 0, rng);
  ok &= check<__nv_bfloat16>(2, 200, 263, 8, 2, 128, 0, rng);
  ok &= check<float>(1, 300, 300, 4, 1, 80, 64, rng);
  ok &= check<__nv_bfloat16>(3, 65, 130, 6, 3, 256, 5, rng);
  ok &= check<float>(1, 129, 129, 2, 2, 192, 0, rng);

  std::vector<Row> rows;
  for (int T : {4096, 16384}) rows.push_back(time_backward(T, rng));
  std::printf("\n| T | version | backward ms | peer backward ms | ratio | fwd+bwd ms | peer fwd+bwd ms | ratio |"
              " floor ms |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Row& r : rows)
    std::printf("| %d | v1 | %.3f | %.2f | %.2f | %.3f | %.2f | %.2f | %.3f |\n", r.T, r.ms, r.peer_ms,
                r.ms / r.peer_ms, r.ms + r.forward_ms, r.peer_total_ms, (r.ms + r.forward_ms) / r.peer_total_ms,
                r.floor_ms);
  std::printf("\nchecks: %s\n", ok ? "all passed" : "SOME FAILED");
  return ok ? 0 : 1;
}
