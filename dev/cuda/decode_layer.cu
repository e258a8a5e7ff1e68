// One Mamba-2 layer's decode step on the GPU, batch 1, standalone (no engine library): the layer as the
// engine runs it at batch 1 (h += out_proj(gated_norm(ssd_step(conv_step(in_proj(rmsnorm(h))))))), in
// three versions, each checked against a CPU reference and then timed inside a CUDA graph of a whole
// stack of layers (each its own weights and states, so nothing stays in the 50 MB L2).
//
//   dev/cuda/build.sh             (or: nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I src
//                                   dev/cuda/decode_layer.cu -o build/dev-cuda/decode_layer)
//   build/dev-cuda/decode_layer [mamba2-130m|mamba2-1.3b] [--checks-only]
//                                 (checks first, then the table; --checks-only for a profiler)
//
// Shapes (mamba2-130m / mamba2-1.3b): d_model 768 / 2048, d_inner 1536 / 4096, head_dim 64 (24 / 64
// heads), d_state 128, n_groups 1, conv 4; in_proj 3352 / 8512 columns; 24 / 48 layers.
// Work per layer (METHOD.md): FLOPs 2 (d_model · in_proj + d_inner · d_model) + the scan's ~6 H P N =
// 7.5 / 51.6 MFLOP, nothing for a GPU. Minimal bytes: the BF16 matrices 5.15 + 2.36 / 34.9 + 16.8 MB,
// the SSM state read and written 2 x 0.79 / 2 x 2.10 MB, the conv state and vectors < 0.1 MB: 9.1 /
// 55.8 MB a layer, so the floor at the card's measured copy bandwidth (~4.16 TB/s) is ~2.2 / ~13.4 us a
// layer. The table prints each version's us per layer and the floor's fraction of it.
//
// Versions (the kernels are the engine's, from skinny_kernels.cuh and ssd_kernels.cuh, except v1's three
// small unfused kernels below, which do what the engine's rmsnorm.cu and conv1d.cu kernels do):
//   v1  the unfused chain as the engine ran it before the fused ops: add_rmsnorm (the previous layer's
//       output added to h), in_proj (the skinny matrix-vector kernel), conv step, SSD step, gated RMSNorm,
//       out_proj: six dependent kernels a layer.
//       Prediction (before any run): ~26 us a layer at 130m (0.631 ms / 24 layers in `ssm bench`, ~4.3
//       us a kernel), ~40 us at 1.3B (1.944 ms / 48); 8% / 33% of the floor.
//   v2  the fused chain: in_proj with the pre-norm in its prologue and the conv step in its epilogue,
//       the SSD step, out_proj with the gated norm in its prologue and the residual add in its epilogue:
//       three kernels a layer.
//       Prediction: ~13 us at 130m, ~27 us at 1.3B (17% / 50% of the floor): the kernels' count halves,
//       each fused kernel is ~1 us longer than the unfused one for its prologue.
//   v3  v2 with programmatic dependent launch: each kernel is launched to overlap its predecessor's
//       drain, loads its first weights before griddepcontrol.wait.
//       Prediction: ~9 us at 130m, ~21 us at 1.3B (25% / 64% of the floor).
//   products only: not a layer, its in_proj and out_proj alone (plain inputs, PDL), against the
//       matrices' bytes: what the matrix-vector kernel reaches by itself.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../../src/ops/cuda/pdl.cuh"
#include "../../src/ops/cuda/skinny_kernels.cuh"
#include "../../src/ops/cuda/ssd_kernels.cuh"
#include "gpu_check_util.cuh"

namespace {

namespace sk = ssm::ops::cuda::skinny;
namespace ssd = ssm::ops::cuda::ssd_kernels;
namespace pdl = ssm::ops::cuda::pdl;
using bf16 = __nv_bfloat16;

constexpr float kEps = 1e-5f;
constexpr int kTaps = 4;

struct LayerShape {
  const char* name;
  int d_model, d_inner, head_dim, state, groups, layers;
  int heads() const { return d_inner / head_dim; }
  int conv_channels() const { return d_inner + 2 * groups * state; }
  int in_proj() const { return 2 * d_inner + 2 * groups * state + heads(); }
  int xbc_offset() const { return d_inner; }
  int dt_offset() const { return d_inner + conv_channels(); }
  double bytes() const {  // the floor's bytes, per layer
    const double matrices = 2.0 * (double(d_model) * in_proj() + double(d_inner) * d_model);
    const double ssm_state = 2.0 * 4.0 * double(heads()) * head_dim * state;
    const double conv_state = 2.0 * 4.0 * (kTaps - 1) * conv_channels();
    const double vectors = 4.0 * (d_model + d_inner + conv_channels() * (kTaps + 1) + 3.0 * heads());
    return matrices + ssm_state + conv_state + vectors;
  }
};

// One layer's parameters and states on the GPU.
struct Layer {
  float *norm_w, *conv_w, *conv_b, *A, *D, *dt_bias, *gate_norm_w, *conv_state, *ssm_state;
  bf16 *in_w, *out_w;
};

Layer make_layer(const LayerShape& s, uint64_t seed) {
  Layer l;
  const int H = s.heads(), C = s.conv_channels();
  l.norm_w = random_on_gpu<float>(s.d_model, seed + 1, 0.5f, 1.5f);
  l.in_w = random_on_gpu<bf16>(size_t(s.in_proj()) * s.d_model, seed + 2, -1.0f / std::sqrt(float(s.d_model)),
                               1.0f / std::sqrt(float(s.d_model)));
  l.conv_w = random_on_gpu<float>(size_t(C) * kTaps, seed + 3, -0.5f, 0.5f);
  l.conv_b = random_on_gpu<float>(C, seed + 4, -0.5f, 0.5f);
  l.A = random_on_gpu<float>(H, seed + 5, -8.0f, -1.0f);
  l.D = random_on_gpu<float>(H, seed + 6, 0.5f, 1.5f);
  l.dt_bias = random_on_gpu<float>(H, seed + 7, -4.0f, -2.0f);
  l.gate_norm_w = random_on_gpu<float>(s.d_inner, seed + 8, 0.5f, 1.5f);
  l.out_w = random_on_gpu<bf16>(size_t(s.d_model) * s.d_inner, seed + 9, -1.0f / std::sqrt(float(s.d_inner)),
                                1.0f / std::sqrt(float(s.d_inner)));
  l.conv_state = random_on_gpu<float>(size_t(kTaps - 1) * C, seed + 10, -0.5f, 0.5f);
  l.ssm_state = random_on_gpu<float>(size_t(H) * s.head_dim * s.state, seed + 11, -0.5f, 0.5f);
  return l;
}

// The activations every layer shares (batch 1).
struct Activations {
  bf16 *h, *delta, *normed, *zxbcdt, *xbc, *y, *gated;
};

// ---- v1's unfused kernels (what the engine's rmsnorm.cu and conv1d.cu kernels do, one row) ----

__device__ float silu(float v) { return v / (1.0f + expf(-v)); }

// h += delta (rounded to BF16), then out = rmsnorm(h) · w; one block of 256 threads.
__global__ void add_rmsnorm_kernel(bf16* h, const bf16* delta, const float* w, bf16* out, int width) {
  __shared__ float slot[sk::kWarps];
  float sum_sq = 0.0f;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const float v = __bfloat162float(__float2bfloat16(__bfloat162float(h[i]) + __bfloat162float(delta[i])));
    h[i] = __float2bfloat16(v);
    sum_sq += v * v;
  }
  const float inv = 1.0f / sqrtf(sk::block_sum(sum_sq, slot) / float(width) + kEps);
  for (int i = threadIdx.x; i < width; i += blockDim.x) out[i] = __float2bfloat16(__bfloat162float(h[i]) * inv * w[i]);
}

// The gated norm of Mamba-2 (gate before the norm, one group): out = rmsnorm(y · silu(z)) · w.
__global__ void gated_rmsnorm_kernel(const bf16* y, const bf16* z, const float* w, bf16* out, int width) {
  __shared__ float slot[sk::kWarps];
  float sum_sq = 0.0f;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const float v = __bfloat162float(y[i]) * silu(__bfloat162float(z[i]));
    sum_sq += v * v;
  }
  const float inv = 1.0f / sqrtf(sk::block_sum(sum_sq, slot) / float(width) + kEps);
  for (int i = threadIdx.x; i < width; i += blockDim.x)
    out[i] = __float2bfloat16(__bfloat162float(y[i]) * silu(__bfloat162float(z[i])) * inv * w[i]);
}

// The conv step, a thread per channel: state rows (oldest first) [kTaps - 1, C].
__global__ void conv_step_kernel(const bf16* x, const float* w, const float* bias, float* state, bf16* out, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float old[kTaps - 1];
  for (int j = 0; j < kTaps - 1; ++j) old[j] = state[j * C + c];
  const float last = __bfloat162float(x[c]);
  float acc = bias[c];
  for (int j = 0; j < kTaps - 1; ++j) acc += w[c * kTaps + j] * old[j];
  acc += w[c * kTaps + kTaps - 1] * last;
  for (int j = 0; j + 1 < kTaps - 1; ++j) state[j * C + c] = old[j + 1];
  state[(kTaps - 2) * C + c] = last;
  out[c] = __float2bfloat16(silu(acc));
}

__global__ void add_kernel(bf16* h, const bf16* delta, int width) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < width) h[i] = __float2bfloat16(__bfloat162float(h[i]) + __bfloat162float(delta[i]));
}

// ---- the versions: one layer's kernels queued on `stream` ----

ssd::Args<bf16> ssd_args(const LayerShape& s, const Layer& l, const bf16* xbc, const bf16* dt, bf16* y) {
  const int GN = s.groups * s.state;
  return {xbc,  dt,   xbc + s.d_inner, xbc + s.d_inner + GN, y,          l.A,       l.dt_bias, l.D,
          0,    0,    0,               0,                    0,          1,         1,         s.heads(),
          s.head_dim, s.groups, s.state, 0.0f, INFINITY};
}
unsigned ssd_blocks(const LayerShape& s) {
  const int64_t threads = int64_t(s.heads()) * ((s.head_dim + ssd::kStepRows - 1) / ssd::kStepRows) * 32;
  return unsigned((threads + 255) / 256);
}
// The engine's grid for a skinny kernel (skinny_linear.cu): as many blocks as the GPU holds at once. The
// attributes are read at the first call (the checks, before any capture); each kernel has its own type.
template <class Kernel>
unsigned skinny_blocks(Kernel kernel, int N, size_t shared) {
  static const cudaFuncAttributes attributes = [&] {
    cudaFuncAttributes a{};
    CHECK_CUDA(cudaFuncGetAttributes(&a, kernel));
    return a;
  }();
  static int multiprocessors = 0, shared_per_multiprocessor = 0;
  if (multiprocessors == 0) {
    int device = 0;
    CHECK_CUDA(cudaGetDevice(&device));
    CHECK_CUDA(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
    CHECK_CUDA(
        cudaDeviceGetAttribute(&shared_per_multiprocessor, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  }
  return sk::grid_for(attributes, N, shared, multiprocessors, size_t(shared_per_multiprocessor));
}

void layer_v1(const LayerShape& s, const Layer& l, const Activations& a, cudaStream_t stream) {
  add_rmsnorm_kernel<<<1, 256, 0, stream>>>(a.h, a.delta, l.norm_w, a.normed, s.d_model);
  auto* plain = &sk::skinny_kernel<sk::PlainInput, sk::StoreOutput<bf16>, 1>;
  const sk::StoreOutput<bf16> to_zxbcdt{a.zxbcdt, 0, nullptr, nullptr, false};
  plain<<<skinny_blocks(plain, s.in_proj(), 0), sk::kThreads, 0, stream>>>(sk::PlainInput{a.normed, 0}, to_zxbcdt,
                                                                          l.in_w, s.in_proj(), s.d_model, 1);
  const int C = s.conv_channels();
  conv_step_kernel<<<(C + 255) / 256, 256, 0, stream>>>(a.zxbcdt + s.xbc_offset(), l.conv_w, l.conv_b, l.conv_state,
                                                        a.xbc, C);
  ssd::step_kernel<bf16><<<ssd_blocks(s), 256, 0, stream>>>(ssd_args(s, l, a.xbc, a.zxbcdt + s.dt_offset(), a.y),
                                                             l.ssm_state);
  gated_rmsnorm_kernel<<<1, 256, 0, stream>>>(a.y, a.zxbcdt, l.gate_norm_w, a.gated, s.d_inner);
  const sk::StoreOutput<bf16> to_delta{a.delta, 0, nullptr, nullptr, false};
  plain<<<skinny_blocks(plain, s.d_model, 0), sk::kThreads, 0, stream>>>(sk::PlainInput{a.gated, 0}, to_delta, l.out_w,
                                                                        s.d_model, s.d_inner, 1);
}

// v2 and v3: the same three kernels, launched plainly or to overlap their predecessors.
template <class Kernel, class... Args>
void launch(bool overlapped, Kernel kernel, unsigned grid, int block, size_t smem, cudaStream_t stream, Args... args) {
  if (overlapped) CHECK_CUDA(pdl::launch_overlapped(kernel, dim3(grid), dim3(block), smem, stream, args...));
  else kernel<<<grid, block, smem, stream>>>(args...);
}

void layer_fused(const LayerShape& s, const Layer& l, const Activations& a, cudaStream_t stream, bool overlapped) {
  auto* in_proj = &sk::skinny_kernel<sk::NormInput, sk::ConvStepOutput<bf16>, 1>;
  auto* out_proj = &sk::skinny_kernel<sk::NormInput, sk::StoreOutput<bf16>, 1>;
  const sk::NormInput prenorm{a.h, 0, nullptr, 0, l.norm_w, s.d_model, false, kEps};
  const sk::ConvStepOutput<bf16> conv{
      {a.zxbcdt, 0, nullptr, nullptr, false}, s.xbc_offset(), s.conv_channels(), l.conv_w, l.conv_b, l.conv_state,
      s.conv_channels(), kTaps};
  const size_t in_shared = sk::shared_bytes<sk::NormInput>(1, s.d_model);
  launch(overlapped, in_proj, skinny_blocks(in_proj, s.in_proj(), in_shared), sk::kThreads, in_shared, stream, prenorm,
         conv, static_cast<const bf16*>(l.in_w), int64_t(s.in_proj()), int64_t(s.d_model), 1);
  launch(overlapped, &ssd::step_kernel<bf16>, ssd_blocks(s), 256, 0, stream,
         ssd_args(s, l, a.zxbcdt + s.xbc_offset(), a.zxbcdt + s.dt_offset(), a.y), l.ssm_state);
  const sk::NormInput gate{a.y, 0, a.zxbcdt, 0, l.gate_norm_w, s.d_inner, false, kEps};
  const sk::StoreOutput<bf16> residual{a.h, 0, nullptr, nullptr, true};
  const size_t out_shared = sk::shared_bytes<sk::NormInput>(1, s.d_inner);
  launch(overlapped, out_proj, skinny_blocks(out_proj, s.d_model, out_shared), sk::kThreads, out_shared, stream, gate,
         residual, static_cast<const bf16*>(l.out_w), int64_t(s.d_model), int64_t(s.d_inner), 1);
}

// Not a layer: its two matrix-vector products alone (plain inputs, PDL), for their own bandwidth.
void products_only(const LayerShape& s, const Layer& l, const Activations& a, cudaStream_t stream) {
  auto* plain = &sk::skinny_kernel<sk::PlainInput, sk::StoreOutput<bf16>, 1>;
  const sk::StoreOutput<bf16> to_zxbcdt{a.zxbcdt, 0, nullptr, nullptr, false},
      to_delta{a.delta, 0, nullptr, nullptr, false};
  launch(true, plain, skinny_blocks(plain, s.in_proj(), 0), sk::kThreads, 0, stream, sk::PlainInput{a.normed, 0},
         to_zxbcdt, static_cast<const bf16*>(l.in_w), int64_t(s.in_proj()), int64_t(s.d_model), 1);
  launch(true, plain, skinny_blocks(plain, s.d_model, 0), sk::kThreads, 0, stream, sk::PlainInput{a.gated, 0}, to_delta,
         static_cast<const bf16*>(l.out_w), int64_t(s.d_model), int64_t(s.d_inner), 1);
}

void run_layer(int version, const LayerShape& s, const Layer& l, const Activations& a, cudaStream_t stream) {
  if (version == 0) products_only(s, l, a, stream);
  else if (version == 1) layer_v1(s, l, a, stream);
  else layer_fused(s, l, a, stream, version == 3);
}

// ---- the CPU reference of one layer (double) ----

struct HostLayer {
  std::vector<float> norm_w, in_w, conv_w, conv_b, A, D, dt_bias, gate_norm_w, out_w, conv_state, ssm_state;
};

HostLayer download_layer(const LayerShape& s, const Layer& l) {
  const int H = s.heads(), C = s.conv_channels();
  return {download(l.norm_w, s.d_model),
          download(l.in_w, size_t(s.in_proj()) * s.d_model),
          download(l.conv_w, size_t(C) * kTaps),
          download(l.conv_b, C),
          download(l.A, H),
          download(l.D, H),
          download(l.dt_bias, H),
          download(l.gate_norm_w, s.d_inner),
          download(l.out_w, size_t(s.d_model) * s.d_inner),
          download(l.conv_state, size_t(kTaps - 1) * C),
          download(l.ssm_state, size_t(H) * s.head_dim * s.state)};
}

double silu_d(double v) { return v / (1.0 + std::exp(-v)); }

// h += the layer's output; the states advanced. Returns the output.
std::vector<double> reference_layer(const LayerShape& s, HostLayer& l, std::vector<double>& h) {
  const int K = s.d_model, Nin = s.in_proj(), C = s.conv_channels(), H = s.heads(), P = s.head_dim, N = s.state;
  double ss = 0;
  for (double v : h) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / K + kEps);
  std::vector<double> normed(K), proj(Nin, 0.0);
  for (int k = 0; k < K; ++k) normed[k] = h[k] * inv * l.norm_w[k];
  for (int n = 0; n < Nin; ++n)
    for (int k = 0; k < K; ++k) proj[n] += normed[k] * l.in_w[size_t(n) * K + k];
  std::vector<double> xbc(C);
  for (int c = 0; c < C; ++c) {
    const double in = proj[s.xbc_offset() + c];
    double acc = l.conv_b[c];
    for (int j = 0; j < kTaps - 1; ++j) acc += double(l.conv_w[c * kTaps + j]) * l.conv_state[size_t(j) * C + c];
    acc += double(l.conv_w[c * kTaps + kTaps - 1]) * in;
    for (int j = 0; j + 1 < kTaps - 1; ++j) l.conv_state[size_t(j) * C + c] = l.conv_state[size_t(j + 1) * C + c];
    l.conv_state[size_t(kTaps - 2) * C + c] = float(in);
    xbc[c] = silu_d(acc);
  }
  std::vector<double> y(s.d_inner);
  for (int hd = 0; hd < H; ++hd) {
    const double raw = proj[s.dt_offset() + hd] + l.dt_bias[hd];
    const double dt = raw > 20 ? raw : std::log1p(std::exp(raw)), decay = std::exp(dt * l.A[hd]);
    for (int p = 0; p < P; ++p) {
      const double x = xbc[hd * P + p];
      double acc = 0;
      for (int n = 0; n < N; ++n) {
        float& S = l.ssm_state[(size_t(hd) * P + p) * N + n];
        const double next = S * decay + dt * x * xbc[s.d_inner + n];
        S = float(next);
        acc += next * xbc[s.d_inner + N + n];
      }
      y[hd * P + p] = acc + l.D[hd] * x;
    }
  }
  std::vector<double> gated(s.d_inner);
  double gs = 0;
  for (int i = 0; i < s.d_inner; ++i) {
    gated[i] = y[i] * silu_d(proj[i]);
    gs += gated[i] * gated[i];
  }
  const double ginv = 1.0 / std::sqrt(gs / s.d_inner + kEps);
  std::vector<double> out(K, 0.0);
  for (int n = 0; n < K; ++n) {
    for (int k = 0; k < s.d_inner; ++k)
      out[n] += gated[k] * ginv * l.gate_norm_w[k] * l.out_w[size_t(n) * s.d_inner + k];
    h[n] += out[n];
  }
  return out;
}

double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    diff = std::max(diff, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return diff / std::max(scale, 1e-30);
}

// One layer of `version` from h0 and the layer's saved states, against the reference.
bool check(int version, const LayerShape& s, const Layer& l, const Activations& a, const std::vector<float>& h0,
           const bf16* h0_on_gpu, const HostLayer& host, cudaStream_t stream) {
  const int C = s.conv_channels();
  const size_t ssm_n = size_t(s.heads()) * s.head_dim * s.state;
  CHECK_CUDA(cudaMemcpy(a.h, h0_on_gpu, h0.size() * sizeof(bf16), cudaMemcpyDeviceToDevice));
  CHECK_CUDA(cudaMemset(a.delta, 0, h0.size() * sizeof(bf16)));
  CHECK_CUDA(cudaMemcpy(l.conv_state, host.conv_state.data(), host.conv_state.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(l.ssm_state, host.ssm_state.data(), ssm_n * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(a.zxbcdt, 0xff, size_t(s.in_proj()) * sizeof(bf16)));  // NaN: unwritten columns show
  CHECK_CUDA(cudaMemset(a.y, 0xff, size_t(s.d_inner) * sizeof(bf16)));
  run_layer(version, s, l, a, stream);
  if (version == 1) add_kernel<<<(s.d_model + 255) / 256, 256, 0, stream>>>(a.h, a.delta, s.d_model);
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaGetLastError());

  HostLayer ref = host;
  std::vector<double> h(h0.begin(), h0.end());
  const std::vector<double> out = reference_layer(s, ref, h);
  const std::vector<float> got_h = download(a.h, s.d_model);
  std::vector<float> got_out(s.d_model);
  for (int i = 0; i < s.d_model; ++i) got_out[i] = got_h[i] - h0[i];
  const double e_out = rel_err(got_out, out), e_h = rel_err(got_h, h);
  const double e_conv = rel_err(download(l.conv_state, size_t(kTaps - 1) * C),
                                std::vector<double>(ref.conv_state.begin(), ref.conv_state.end()));
  const double e_ssm =
      rel_err(download(l.ssm_state, ssm_n), std::vector<double>(ref.ssm_state.begin(), ref.ssm_state.end()));
  // BF16 activations (h, the projections, the conv output, y, the norms' outputs): a few roundings of 2^-9.
  const double tol = 3e-2;
  const bool ok = e_out < tol && e_h < tol && e_conv < tol && e_ssm < tol;
  std::printf("  %s v%d check: out %.2e  h %.2e  conv state %.2e  ssm state %.2e  %s\n", s.name, version, e_out, e_h,
              e_conv, e_ssm, ok ? "ok" : "FAILED");
  return ok;
}

// Read + write bandwidth of a device-to-device copy of 1 GiB (the issue's "measured copy bandwidth").
double copy_bandwidth(cudaStream_t stream) {
  const size_t bytes = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    if (i >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));
  return 2.0 * double(bytes) / (ms[ms.size() / 2] * 1e-3);
}

// Median us per layer of a graph of every layer of `version`, replayed.
double time_version(int version, const LayerShape& s, const std::vector<Layer>& layers, const Activations& a,
                    cudaStream_t stream) {
  auto every_layer = [&] {
    for (const Layer& l : layers) run_layer(version, s, l, a, stream);
  };
  return median_graph_ms(stream, every_layer, 20, 200) * 1e3 / double(layers.size());
}

}  // namespace

// decode_layer [SHAPE] [--checks-only]: one shape's rows only; the checks without the timings (for a profiler).
int main(int argc, char** argv) {
  const LayerShape all_shapes[] = {{"mamba2-130m", 768, 1536, 64, 128, 1, 24},
                                   {"mamba2-1.3b", 2048, 4096, 64, 128, 1, 48}};
  std::vector<LayerShape> shapes;
  bool checks_only = false;
  for (int i = 1; i < argc; ++i) checks_only |= std::string(argv[i]) == "--checks-only";
  for (const LayerShape& s : all_shapes) {
    bool named = false, any_named = false;
    for (int i = 1; i < argc; ++i) {
      any_named |= argv[i][0] != '-';
      named |= std::string(argv[i]) == s.name;
    }
    if (named || !any_named) shapes.push_back(s);
  }
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  // The fused kernels' shared memory stays under 48 KB at these widths (no opt-in needed).
  const double bandwidth = copy_bandwidth(stream);
  std::printf("copy bandwidth (read + write): %.0f GB/s\n", bandwidth * 1e-9);
  bool ok = true;
  struct Row {
    const char* name;
    double floor_us, products_floor_us, us[4];
  };
  std::vector<Row> rows;
  for (const LayerShape& s : shapes) {
    std::vector<Layer> layers;
    for (int i = 0; i < s.layers; ++i) layers.push_back(make_layer(s, 1000 * uint64_t(i + 1)));
    Activations a{nan_on_gpu<bf16>(s.d_model), nan_on_gpu<bf16>(s.d_model), nan_on_gpu<bf16>(s.d_model),
                  nan_on_gpu<bf16>(s.in_proj()),  nan_on_gpu<bf16>(s.conv_channels()), nan_on_gpu<bf16>(s.d_inner),
                  nan_on_gpu<bf16>(s.d_inner)};
    CHECK_CUDA(cudaDeviceSynchronize());
    const HostLayer host = download_layer(s, layers[0]);
    const bf16* h0_on_gpu = random_on_gpu<bf16>(s.d_model, 7, -1.0f, 1.0f);
    const std::vector<float> h0 = download(h0_on_gpu, s.d_model);
    for (int version = 1; version <= 3; ++version) ok &= check(version, s, layers[0], a, h0, h0_on_gpu, host, stream);
    if (checks_only) continue;
    const double matrix_bytes = 2.0 * (double(s.d_model) * s.in_proj() + double(s.d_inner) * s.d_model);
    Row row{s.name, s.bytes() / bandwidth * 1e6, matrix_bytes / bandwidth * 1e6, {}};
    CHECK_CUDA(cudaMemcpy(a.h, h0_on_gpu, h0.size() * sizeof(bf16), cudaMemcpyDeviceToDevice));
    CHECK_CUDA(cudaMemset(a.delta, 0, h0.size() * sizeof(bf16)));
    CHECK_CUDA(cudaMemset(a.normed, 0, s.d_model * sizeof(bf16)));
    CHECK_CUDA(cudaMemset(a.gated, 0, s.d_inner * sizeof(bf16)));
    for (int version = 0; version <= 3; ++version) row.us[version] = time_version(version, s, layers, a, stream);
    rows.push_back(row);
  }
  std::printf("\nus per layer, batch 1, graph of all layers (fraction of the bytes floor)\n");
  std::printf("%-12s %9s  %-16s %-16s %-16s %-16s\n", "shape", "floor", "products only", "v1 unfused", "v2 fused",
              "v3 fused+PDL");
  for (const Row& r : rows) {
    std::printf("%-12s %8.2f ", r.name, r.floor_us);
    std::printf(" %7.2f (%4.0f%%) ", r.us[0], 100.0 * r.products_floor_us / r.us[0]);
    for (int v = 1; v <= 3; ++v) std::printf(" %7.2f (%4.0f%%) ", r.us[v], 100.0 * r.floor_us / r.us[v]);
    std::printf("\n");
  }
  std::printf("%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
