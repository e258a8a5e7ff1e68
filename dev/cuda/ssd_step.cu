// Mamba-2's one-token SSD step at decode batch sizes, standalone: the engine's kernel (ssd_kernels.cuh
// step_kernel) beside variants, each checked against a CPU reference and timed back to back over
// several state sets (so no set stays in the 50 MB L2, as a model's layers each have their own).
//
//   nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I src dev/cuda/ssd_step.cu -o build/dev-cuda/ssd_step
//   build/dev-cuda/ssd_step
//
// Shapes: mamba2-130m (H 24) and mamba2-1.3b (H 64), P 64, N 128, G 1, BF16 activations, F32 state,
// batch 16 and 64. Bytes a step (METHOD.md): the state read and written, 2 · B · H · P · N · 4 (100.7 MB
// for 130m at batch 64, 268 MB for 1.3B); x, B, C, dt and y are < 1% of it. The floor is those bytes at
// the card's copy bandwidth; the "copy" row is a kernel that reads and rewrites the same state in place
// with nothing else, what a step kernel can hope for.
//
// Versions (prediction before the first run in brackets; ncu had the engine's kernel at 35.5 / 90.5 us,
// ~2.9 TB/s, for 130m / 1.3B at batch 64):
//   v1  the engine's kernel until v7: a warp per 4 rows of p, lanes over 4-float pieces of n, all loads
//       first, as many warps as groups of rows.
//   v2  8 rows a warp (twice the bytes in flight per lane, half the warps) [~10% faster if latency-bound].
//   v3  2 rows a warp (twice the warps) [slower: B and C read per 2 rows].
//   v4  v1 with streaming cache hints (ld.global.cs / st.global.cs: the state is touched once a step)
//       [a few % if L2 write-back thrash costs].
//   v5  v2 with streaming hints.
//   v6  one wave of warps (as many as fit), each walking groups of 4 rows with the next group's state
//       loaded before the current one is updated [~20% faster: no tail of waves, loads always in flight].
//   v7  v6 with streaming hints. Outcome (H200, 2026-12-01), us at 130m / 1.3B, batch 64: v1 35.7 / 85.7,
//       v2 34.4 / 80.5, v3 41.4 / 97.1, v4 33.6 / 83.5, v5 31.9 / 80.5, v6 31.2 / 73.3, v7 29.2 / 71.4;
//       the copy in place 28.3 / 69.8. v7 is the engine's kernel since (the "engine" row).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "../../src/ops/cuda/ssd_launch.cuh"
#include "gpu_check_util.cuh"

namespace {

namespace sk = ssm::ops::cuda::ssd_kernels;
using bf16 = __nv_bfloat16;
using sk::Args;

template <bool kStream>
__device__ __forceinline__ float4 load_state(const float* p) {
  if constexpr (kStream) return __ldcs(reinterpret_cast<const float4*>(p));
  return *reinterpret_cast<const float4*>(p);
}
template <bool kStream>
__device__ __forceinline__ void store_state(float* p, float4 v) {
  if constexpr (kStream) __stcs(reinterpret_cast<float4*>(p), v);
  else *reinterpret_cast<float4*>(p) = v;
}

// The engine's step with kRows rows a warp and optional streaming hints (N <= 256, N % 4 == 0).
template <int kRows, bool kStream>
__global__ void __launch_bounds__(256) step_variant(Args<bf16> a, float* __restrict__ state) {
  constexpr int kPieces = 2;
  const int lane = threadIdx.x & 31;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int row_groups = (a.head_dim + kRows - 1) / kRows;
  if (warp >= int64_t(a.batch) * a.heads * row_groups) return;
  const int64_t bh = warp / row_groups;
  const int p0 = int(warp % row_groups) * kRows, h = int(bh % a.heads), b = int(bh / a.heads);
  const int g = h / (a.heads / a.groups), pieces = a.state_dim / 4;
  float* rows_state = state + (bh * a.head_dim + p0) * a.state_dim;
  float4 S[kRows][kPieces], Bv[kPieces], Cv[kPieces];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int k = 0; k < kPieces; ++k)
      if (p0 + r < a.head_dim && lane + 32 * k < pieces)
        S[r][k] = load_state<kStream>(rows_state + r * a.state_dim + (lane + 32 * k) * 4);
  float xv[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    xv[r] = p0 + r < a.head_dim ? __bfloat162float(a.x[b * a.ldx + int64_t(h) * a.head_dim + p0 + r]) : 0.0f;
#pragma unroll
  for (int k = 0; k < kPieces; ++k) {
    const int piece = lane + 32 * k;
    if (piece < pieces) {
      Bv[k] = sk::load4(a.B + b * a.ldB + int64_t(g) * a.state_dim + piece * 4);
      Cv[k] = sk::load4(a.C + b * a.ldC + int64_t(g) * a.state_dim + piece * 4);
    }
  }
  const float dt = sk::dt_value(__bfloat162float(a.dt[b * a.lddt + h]), a.dt_bias ? a.dt_bias[h] : 0.0f, a.dt_min,
                                a.dt_max);
  const float decay = expf(dt * a.A[h]), D = a.D ? a.D[h] : 0.0f;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (p0 + r >= a.head_dim) break;
    const float coef = dt * xv[r];
    float acc = 0.0f;
#pragma unroll
    for (int k = 0; k < kPieces; ++k) {
      const int piece = lane + 32 * k;
      if (piece >= pieces) break;
      float4 v = S[r][k];
      v.x = v.x * decay + coef * Bv[k].x;
      v.y = v.y * decay + coef * Bv[k].y;
      v.z = v.z * decay + coef * Bv[k].z;
      v.w = v.w * decay + coef * Bv[k].w;
      store_state<kStream>(rows_state + r * a.state_dim + piece * 4, v);
      acc += v.x * Cv[k].x + v.y * Cv[k].y + v.z * Cv[k].z + v.w * Cv[k].w;
    }
    acc = sk::warp_sum(acc);
    if (lane == 0) a.y[b * a.ldy + int64_t(h) * a.head_dim + p0 + r] = __float2bfloat16(acc + D * xv[r]);
  }
}

// N = 128 only. A grid of as many warps as fit, each walking row groups of 4 with the next group's state loaded
// before the current one is updated and stored (two groups in flight a warp).
template <bool kStream>
__global__ void __launch_bounds__(256) step_pipelined(Args<bf16> a, float* __restrict__ state) {
  constexpr int kRows = 4, kPieces = 1;  // N = 128: one 4-float piece a lane
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  const int row_groups = a.head_dim / kRows;  // head_dim % 4 == 0 here
  const int64_t groups = int64_t(a.batch) * a.heads * row_groups;
  int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  float4 S[kRows][kPieces];
  auto load = [&](int64_t w) {
    const float* rows = state + w * kRows * a.state_dim;
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int k = 0; k < kPieces; ++k) S[r][k] = load_state<kStream>(rows + r * a.state_dim + (lane + 32 * k) * 4);
  };
  if (warp < groups) load(warp);
  for (; warp < groups; warp += warps) {
    const int64_t bh = warp / row_groups;
    const int p0 = int(warp % row_groups) * kRows, h = int(bh % a.heads), b = int(bh / a.heads);
    const int g = h / (a.heads / a.groups);
    float4 cur[kRows][kPieces], Bv[kPieces], Cv[kPieces];
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int k = 0; k < kPieces; ++k) cur[r][k] = S[r][k];
    if (warp + warps < groups) load(warp + warps);
    float xv[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) xv[r] = __bfloat162float(a.x[b * a.ldx + int64_t(h) * a.head_dim + p0 + r]);
#pragma unroll
    for (int k = 0; k < kPieces; ++k) {
      const int piece = lane + 32 * k;
      Bv[k] = sk::load4(a.B + b * a.ldB + int64_t(g) * a.state_dim + piece * 4);
      Cv[k] = sk::load4(a.C + b * a.ldC + int64_t(g) * a.state_dim + piece * 4);
    }
    const float dt = sk::dt_value(__bfloat162float(a.dt[b * a.lddt + h]), a.dt_bias ? a.dt_bias[h] : 0.0f,
                                  a.dt_min, a.dt_max);
    const float decay = expf(dt * a.A[h]), D = a.D ? a.D[h] : 0.0f;
    float* rows_state = state + warp * kRows * a.state_dim;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float coef = dt * xv[r];
      float acc = 0.0f;
#pragma unroll
      for (int k = 0; k < kPieces; ++k) {
        float4 v = cur[r][k];
        v.x = v.x * decay + coef * Bv[k].x;
        v.y = v.y * decay + coef * Bv[k].y;
        v.z = v.z * decay + coef * Bv[k].z;
        v.w = v.w * decay + coef * Bv[k].w;
        store_state<kStream>(rows_state + r * a.state_dim + (lane + 32 * k) * 4, v);
        acc += v.x * Cv[k].x + v.y * Cv[k].y + v.z * Cv[k].z + v.w * Cv[k].w;
      }
      acc = sk::warp_sum(acc);
      if (lane == 0) a.y[b * a.ldy + int64_t(h) * a.head_dim + p0 + r] = __float2bfloat16(acc + D * xv[r]);
    }
  }
}

// The ceiling: the state read and rewritten in place, nothing else.
__global__ void copy_in_place(float4* state, int64_t pieces) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < pieces; i += int64_t(gridDim.x) * blockDim.x) {
    float4 v = state[i];
    v.x *= 0.999f, v.y *= 0.999f, v.z *= 0.999f, v.w *= 0.999f;
    state[i] = v;
  }
}

struct Shape {
  const char* name;
  int batch, heads;
};
constexpr int kP = 64, kN = 128, kSets = 4;

// Inputs as the engine lays them out: x, B, C column slices of the conv output [batch, H P + 2 N], dt a
// slice of in_proj's output (here its own [batch, H] rows with a wider stride), y [batch, H P].
struct Inputs {
  int batch, heads;
  bf16 *xbc, *dt, *y;
  float *A, *dt_bias, *D;
  std::vector<float*> states;
  int64_t state_floats() const { return int64_t(batch) * heads * kP * kN; }
  Args<bf16> args() const {
    const int64_t width = int64_t(heads) * kP + 2 * kN;
    return {xbc, dt, xbc + int64_t(heads) * kP, xbc + int64_t(heads) * kP + kN, y, A, dt_bias, D, width, heads + 8,
            width, width, int64_t(heads) * kP, batch, 1, heads, kP, 1, kN, 0.0f, INFINITY};
  }
};

Inputs make_inputs(const Shape& s, uint64_t seed) {
  Inputs in{s.batch, s.heads};
  const int64_t width = int64_t(s.heads) * kP + 2 * kN;
  in.xbc = random_on_gpu<bf16>(size_t(s.batch) * width, seed, -1, 1);
  in.dt = random_on_gpu<bf16>(size_t(s.batch) * (s.heads + 8), seed + 1, -3, 0);
  in.y = nan_on_gpu<bf16>(size_t(s.batch) * s.heads * kP);
  in.A = random_on_gpu<float>(s.heads, seed + 2, -4, -0.5f);
  in.dt_bias = random_on_gpu<float>(s.heads, seed + 3, -1, 1);
  in.D = random_on_gpu<float>(s.heads, seed + 4, 0.5f, 1.5f);
  for (int i = 0; i < kSets; ++i) in.states.push_back(random_on_gpu<float>(in.state_floats(), seed + 10 + i, -1, 1));
  return in;
}

// y and the new state of set 0 from a CPU step of the downloaded inputs.
void reference(const Inputs& in, const std::vector<float>& state0, std::vector<double>& y, std::vector<double>& state) {
  const int64_t width = int64_t(in.heads) * kP + 2 * kN;
  const auto xbc = download(in.xbc, size_t(in.batch) * width);
  const auto dt = download(in.dt, size_t(in.batch) * (in.heads + 8));
  const auto A = download(in.A, in.heads), bias = download(in.dt_bias, in.heads), D = download(in.D, in.heads);
  y.assign(size_t(in.batch) * in.heads * kP, 0.0);
  state.assign(state0.begin(), state0.end());
  for (int b = 0; b < in.batch; ++b)
    for (int h = 0; h < in.heads; ++h) {
      const double raw = double(dt[b * (in.heads + 8) + h]) + bias[h];
      const double d = raw > 20 ? raw : std::log1p(std::exp(raw)), decay = std::exp(d * A[h]);
      for (int p = 0; p < kP; ++p) {
        const double xv = xbc[b * width + h * kP + p];
        double acc = 0;
        for (int n = 0; n < kN; ++n) {
          double& s = state[((int64_t(b) * in.heads + h) * kP + p) * kN + n];
          s = s * decay + d * xv * xbc[b * width + in.heads * kP + n];
          acc += s * xbc[b * width + in.heads * kP + kN + n];
        }
        y[(int64_t(b) * in.heads + h) * kP + p] = acc + D[h] * xv;
      }
    }
}

template <int kRows, bool kStream>
void launch_variant(const Args<bf16>& a, float* state) {
  const int64_t warps = int64_t(a.batch) * a.heads * ((a.head_dim + kRows - 1) / kRows);
  step_variant<kRows, kStream><<<unsigned((warps * 32 + 255) / 256), 256>>>(a, state);
}

template <bool kStream>
void launch_pipelined(const Args<bf16>& a, float* state) {
  static int blocks = 0;
  if (!blocks) {
    int sms = 0, per_sm = 0;
    CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, step_pipelined<kStream>, 256, 0));
    blocks = sms * per_sm;
  }
  step_pipelined<kStream><<<unsigned(blocks), 256>>>(a, state);
}

void launch_engine(const Args<bf16>& a, float* state) { CHECK_CUDA(sk::launch_step(a, state, nullptr)); }

}  // namespace

int main() {
  int sms = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  struct Version {
    const char* name;
    void (*launch)(const Args<bf16>&, float*);
  };
  const Version versions[] = {{"v1 4 rows (the engine's before v7)", launch_variant<4, false>},
                              {"v2 8 rows", launch_variant<8, false>},
                              {"v3 2 rows", launch_variant<2, false>},
                              {"v4 4 rows, streaming", launch_variant<4, true>},
                              {"v5 8 rows, streaming", launch_variant<8, true>},
                              {"v6 pipelined, 4 rows", launch_pipelined<false>},
                              {"v7 pipelined, streaming", launch_pipelined<true>},
                              {"engine (v7 with PDL's L2 prefetch)", launch_engine}};
  const Shape shapes[] = {{"mamba2-130m", 16, 24}, {"mamba2-130m", 64, 24}, {"mamba2-1.3b", 16, 64},
                          {"mamba2-1.3b", 64, 64}};
  bool ok = true;
  std::printf("| shape | batch | version | us | TB/s (state read + written) | check |\n| --- | --- | --- | --- | --- | --- |\n");
  for (const Shape& s : shapes) {
    Inputs in = make_inputs(s, 11);
    const Args<bf16> args = in.args();
    const double bytes = 2.0 * double(in.state_floats()) * 4;
    const auto copy_ms = median_batch_ms(
        [&](int i) {
          copy_in_place<<<unsigned(sms * 8), 256>>>(reinterpret_cast<float4*>(in.states[i % kSets]), in.state_floats() / 4);
        },
        8, 20, 8);
    std::printf("| %s | %d | copy in place | %.1f | %.2f | - |\n", s.name, s.batch, 1e3 * copy_ms, bytes / copy_ms / 1e9);
    for (const Version& v : versions) {
      // Check: one step from a known state.
      const auto state0 = download(in.states[0], size_t(in.state_floats()));
      std::vector<double> want_y, want_state;
      reference(in, state0, want_y, want_state);
      CHECK_CUDA(cudaMemset(in.y, 0xff, size_t(in.batch) * in.heads * kP * sizeof(bf16)));
      v.launch(args, in.states[0]);
      CHECK_CUDA(cudaDeviceSynchronize());
      const double ey = rel_error(download(in.y, want_y.size()), want_y);
      const double es = rel_error(download(in.states[0], want_state.size()), want_state);
      const bool good = ey < 2e-2 && es < 1e-5;
      ok = ok && good;
      const double ms = median_batch_ms([&](int i) { v.launch(args, in.states[i % kSets]); }, 8, 20, 8);
      std::printf("| %s | %d | %s | %.1f | %.2f | y %.1e, state %.1e %s |\n", s.name, s.batch, v.name, 1e3 * ms,
                  bytes / ms / 1e9, ey, es, good ? "ok" : "FAILED");
    }
  }
  return ok ? 0 : 1;
}
