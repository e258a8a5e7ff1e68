// The CUDA execution model on the CPU, for the host checks of dev/cuda/ (kernels run without a GPU):
// every CUDA thread of a block is a fiber (ucontext), __syncthreads and the warp-wide instructions
// (shuffles, and the PTX of ptx.cuh: ldmatrix, mma.sync, cp.async) are emulated from their
// definitions. Blocks run one at a time and fibers switch only at barriers, so this checks indexing,
// masking, staging and arithmetic; not timing, not races, not the hardware's reading of the PTX.
// A kernel's dynamic shared memory is an array `smem` its host check defines in the kernel's namespace.
// Include it in one translation unit (a host check is one file): it defines globals.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "check_util.h"  // run_cases

// ---- the CUDA execution model on fibers ----

#define __launch_bounds__(...)

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
Dim3 threadIdx, blockIdx, blockDim, gridDim;  // threadIdx is switched with the running fiber

namespace fibers {

constexpr int kMaxThreads = 256;
constexpr size_t kStack = 256 * 1024;

ucontext_t scheduler;
ucontext_t contexts[kMaxThreads];
std::vector<char> stacks[kMaxThreads];
bool finished[kMaxThreads];
int current = 0, threads = 0;
// Whether the fibers of a block run last to first between barriers: a barrier missing between one
// thread's write and another's read (or a read and the next write) changes the result in one order.
bool reverse_order = false;
std::function<void()> body;

void yield() { swapcontext(&contexts[current], &scheduler); }

// A barrier of `count` threads: arrive, then wait (switching) until the last one arrives.
struct Barrier {
  int arrived = 0;
  unsigned generation = 0;
  void wait(int count) {
    const unsigned mine = generation;
    if (++arrived == count) {
      arrived = 0;
      ++generation;
      return;
    }
    while (generation == mine) yield();
  }
};
Barrier block_barrier, warp_barriers[kMaxThreads / 32];

void entry() {
  body();
  finished[current] = true;
  swapcontext(&contexts[current], &scheduler);
}

// Runs the threads of the block at blockIdx, round-robin between barriers.
void run_block(int block) {
  for (int t = 0; t < block; ++t) {
    stacks[t].resize(kStack);
    getcontext(&contexts[t]);
    contexts[t].uc_stack.ss_sp = stacks[t].data();
    contexts[t].uc_stack.ss_size = kStack;
    contexts[t].uc_link = nullptr;
    makecontext(&contexts[t], entry, 0);
    finished[t] = false;
  }
  for (int left = block; left > 0;) {
    left = 0;
    for (int u = 0; u < block; ++u) {
      const int t = reverse_order ? block - 1 - u : u;
      if (finished[t]) continue;
      current = t;
      threadIdx.x = unsigned(t);
      swapcontext(&scheduler, &contexts[t]);
      if (!finished[t]) ++left;
    }
  }
}

// Runs `kernel` for blocks 0..grid-1 of x with `block` threads each; blockIdx.y and .z stay as the
// caller set them (host checks that walk those themselves).
void launch(unsigned grid, int block, const std::function<void()>& kernel) {
  threads = block;
  blockDim.x = unsigned(block);
  gridDim.x = grid;
  body = kernel;
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx.x = b;
    run_block(block);
  }
}

// Runs `kernel` for every block of a 3-D grid (x fastest) with `block` threads each.
void launch(Dim3 grid, int block, const std::function<void()>& kernel) {
  threads = block;
  blockDim.x = unsigned(block);
  gridDim = grid;
  body = kernel;
  for (unsigned b = 0; b < grid.x * grid.y * grid.z; ++b) {
    blockIdx = {b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y)};
    run_block(block);
  }
}

}  // namespace fibers

void __syncthreads() { fibers::block_barrier.wait(fibers::threads); }

namespace warp {

int lane() { return int(threadIdx.x & 31); }
void sync() { fibers::warp_barriers[threadIdx.x >> 5].wait(32); }

// Per warp: what each lane hands to the others in one warp-wide instruction.
struct Exchange {
  const void* address[32];
  uint32_t a[32][4], b[32][2];
  double value[32];
};
Exchange exchanges[fibers::kMaxThreads / 32];
Exchange& mine() { return exchanges[threadIdx.x >> 5]; }

double shuffle(double v, int source) {
  Exchange& x = mine();
  x.value[lane()] = v;
  sync();
  const double r = x.value[source & 31];
  sync();
  return r;
}

}  // namespace warp

// All 32 lanes of the warp (the kernels call it with a full mask).
void __syncwarp(unsigned = 0xffffffffu) { warp::sync(); }

// A load through the read-only path (ld.global.nc): on the CPU, a load.
template <class V>
V __ldg(const V* p) {
  return *p;
}
// Streaming (evict-first) loads and stores (ld.global.cs / st.global.cs): on the CPU, plain ones.
template <class V>
V __ldcs(const V* p) {
  return *p;
}
template <class V>
void __stcs(V* p, V v) {
  *p = v;
}

template <class V>
V __shfl_up_sync(unsigned, V v, int delta) {
  const int l = warp::lane();
  const V other = V(warp::shuffle(double(v), l >= delta ? l - delta : l));
  return l >= delta ? other : v;
}
template <class V>
V __shfl_down_sync(unsigned, V v, int delta) {
  const int l = warp::lane();
  const V other = V(warp::shuffle(double(v), l + delta < 32 ? l + delta : l));
  return l + delta < 32 ? other : v;
}
template <class V>
V __shfl_xor_sync(unsigned, V v, int mask) {
  return V(warp::shuffle(double(v), warp::lane() ^ mask));
}
template <class V>
V __shfl_sync(unsigned, V v, int source) {
  return V(warp::shuffle(double(v), source));
}
using std::max;
using std::min;
inline float __expf(float x) { return std::exp(x); }  // the fast-math exponential: here the exact one

// ---- the PTX the kernels use (ptx.cuh), from its definitions ----

// Programmatic dependent launch (pdl.cuh): blocks run one grid at a time here, so nothing to wait for
// (and no L2 to fetch into).
namespace ssm::ops::cuda::pdl {
inline void wait_for_previous_grid() {}
inline void let_next_grid_start() {}
inline void prefetch_l2(const void*) {}
}  // namespace ssm::ops::cuda::pdl

namespace ssm::ops::cuda::ptx {

uint16_t half_at(const void* row, int column) {
  uint16_t v;
  std::memcpy(&v, static_cast<const char*>(row) + 2 * column, 2);
  return v;
}

template <int kMatrices, bool kTrans>
void ldmatrix(uint32_t* r, const void* p) {
  warp::Exchange& x = warp::mine();
  const int l = warp::lane();
  x.address[l] = p;
  warp::sync();
  for (int i = 0; i < kMatrices; ++i) {
    if (kTrans) {
      const int row = 2 * (l % 4), column = l / 4;
      r[i] = uint32_t(half_at(x.address[8 * i + row], column)) |
             uint32_t(half_at(x.address[8 * i + row + 1], column)) << 16;
    } else {
      std::memcpy(&r[i], static_cast<const char*>(x.address[8 * i + l / 4]) + 4 * (l % 4), 4);
    }
  }
  warp::sync();
}
void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix<4, false>(r, p); }
void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { ldmatrix<4, true>(r, p); }
void ldmatrix_x2(uint32_t (&r)[2], const void* p) { ldmatrix<2, false>(r, p); }
void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) { ldmatrix<2, true>(r, p); }

float bf16_bits(uint32_t bits) { return std::bit_cast<float>(bits << 16); }

// D = A B + C from the fragments of all lanes: A 16 x K, B K x 8 (K 16 for bf16, 8 for tf32).
template <int K>
void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  warp::Exchange& x = warp::mine();
  const int l = warp::lane();
  std::memcpy(x.a[l], a, sizeof a);
  std::memcpy(x.b[l], b, sizeof b);
  warp::sync();
  float A[16][K], B[K][8];
  for (int L = 0; L < 32; ++L) {
    const int g = L / 4, t = L % 4;
    if (K == 16) {
      for (int reg = 0; reg < 4; ++reg) {
        const int row = g + 8 * (reg & 1), col = 2 * t + 8 * (reg >> 1);
        A[row][col] = bf16_bits(x.a[L][reg] & 0xffff);
        A[row][col + 1] = bf16_bits(x.a[L][reg] >> 16);
      }
      for (int reg = 0; reg < 2; ++reg) {
        B[2 * t + 8 * reg][g] = bf16_bits(x.b[L][reg] & 0xffff);
        B[2 * t + 8 * reg + 1][g] = bf16_bits(x.b[L][reg] >> 16);
      }
    } else {
      for (int reg = 0; reg < 4; ++reg) A[g + 8 * (reg & 1)][t + 4 * (reg >> 1)] = std::bit_cast<float>(x.a[L][reg]);
      for (int reg = 0; reg < 2; ++reg) B[t + 4 * reg][g] = std::bit_cast<float>(x.b[L][reg]);
    }
  }
  const int g = l / 4, t = l % 4;
  for (int reg = 0; reg < 4; ++reg) {
    const int row = g + 8 * (reg >> 1), col = 2 * t + (reg & 1);
    float acc = c[reg];
    for (int k = 0; k < K; ++k) acc += float(double(A[row][k]) * double(B[k][col]));
    c[reg] = acc;
  }
  warp::sync();
}
void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) { mma<16>(c, a, b); }
void mma_tf32_1688(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) { mma<8>(c, a, b); }

uint32_t to_tf32(float v) {  // round to nearest, ties away from zero, at 13 dropped bits
  return (std::bit_cast<uint32_t>(v) + 0x1000u) & 0xffffe000u;
}

void cp_async_16(void* dst, const void* src, int bytes) {
  std::memset(dst, 0, 16);
  std::memcpy(dst, src, size_t(bytes));
}
void cp_async_commit() {}
void cp_async_wait_all() {}
void cp_async_wait_all_but_last() {}
template <int kPending>
void cp_async_wait_groups() {}

}  // namespace ssm::ops::cuda::ptx

// ---- what the host checks share around the kernels ----

// Fills a kernel's dynamic shared memory (its namespace's `smem`) with 0xff bytes, NaN in F32 and
// BF16, so that a read of something never written shows.
template <class E, size_t kCount>
void poison_shared(E (&smem)[kCount]) {
  std::memset(smem, 0xff, sizeof smem);
}
// Whether smem past its first `bytes` bytes still holds the poison (the launch used no more).
template <class E, size_t kCount>
bool shared_untouched_from(const E (&smem)[kCount], size_t bytes) {
  const unsigned char* s = reinterpret_cast<const unsigned char*>(smem);
  for (size_t i = bytes; i < sizeof smem; ++i)
    if (s[i] != 0xff) return false;
  return true;
}

// Runs every case in F32 (seed) and BF16 (seed + 1), each with the threads of a block in both orders
// (see fibers::reverse_order), the seed advancing by 2 a case (check_util.h's run_cases); prints the verdict and
// returns the program's exit status.
template <class Case, class RunF32, class RunBf16>
int run_cases_both_orders(const std::vector<Case>& cases, RunF32&& run_f32, RunBf16&& run_bf16) {
  const auto both_orders = [](auto& run) {
    return [&run](const Case& k, unsigned seed) {
      bool ok = true;
      for (bool reverse : {false, true}) {
        fibers::reverse_order = reverse;
        ok &= run(k, seed);
      }
      fibers::reverse_order = false;
      return ok;
    };
  };
  return run_cases(cases, both_orders(run_f32), both_orders(run_bf16));
}
