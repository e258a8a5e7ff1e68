// Attention on the GPU, standalone: the prefill forward and the one-token decode over a KV cache,
// numbered versions checked against a CPU reference and timed against the peers.
//
//   nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -I src dev/cuda/attention.cu -o build/dev-cuda/attention
//   build/dev-cuda/attention            (checks, then timings; a short table last)
//
// Forward (causal, bf16 in and out, f32 softmax):
//   v1  one thread per (query, head), two passes over its keys in global memory. The baseline.
//   v2  exact_kernel of src/ops/cuda/flash_attention.cuh: tiles of 32 queries x 32 keys in shared
//       memory, 8 threads per query, f32 CUDA cores (the engine's F32 path).
//   v3  mma_kernel<kD, 4 warps>: FA2 on tensor cores, mma.sync m16n8k16 bf16 -> f32, 64 queries per
//       block, K/V tiles of 64 double-buffered by cp.async (the engine's BF16 path).
//   v4  mma_kernel<kD, 8 warps>: 128 queries per block, each K/V tile serves twice the queries.
// Decode (bf16 cache, MHA):
//   v1  split_kernel of flash_decode.cuh with one split: a block per (kv head, sequence).
//   v2  the context split so that about 4 blocks per multiprocessor run (flash-decoding), then
//       merge_kernel.
//   v3  the engine's choice: about 8 blocks per multiprocessor (a shorter tail where the blocks
//       outnumber the resident slots), at least 4 tiles of 32 rows per split.
// v2-v4 and the decode versions are the engine's own kernels (the headers are plain CUDA), so what
// is timed here is what ops::cuda::attention and attention_decode run.
//
// The two numbers (METHOD.md) at the timed shapes, against the card's measured ceilings
// (bf16 matrix product 730 TFLOP/s, copy 4.24 TB/s, ../shared/BENCHMARKS.md):
//   forward, B 1, H 16, d 128, causal: FLOPs 2 T² d H (q·k and p·v, half the pairs);
//     bytes 4 T H d * 2 (q, k, v, o once).
//     T 4096: 68.7 GFLOP -> 0.094 ms; 67 MB -> 0.016 ms. Compute-bound from here on.
//     T 16384: 1.10 TFLOP -> 1.51 ms.  T 65536: 17.6 TFLOP -> 24.1 ms.  T 102400: 42.9 TFLOP -> 58.8 ms.
//   decode, H 16 (= kv heads), d 128, bf16 cache: bytes B C H d * 2 * 2 (K and V read once);
//     FLOPs 4 B C H d (negligible). C 4096: 33.6 MB per sequence -> 7.9 us (B 1), 127 us (B 16),
//     507 us (B 64). C 16384: 134 MB -> 31.7 us (B 1), 507 us (B 16), 2.03 ms (B 64).
// Predictions before the first run on the H200 (none of these has run yet): forward v3 near
// 200-250 TFLOP/s (mma.sync reaches about two thirds of the wgmma rate): 0.35 ms at 4K, 5 ms at 16K,
// about 1.3x the peer; v4 a little faster at long T. Decode v3 within 1.5x of the bandwidth floor:
// about 0.045 ms at 16K, batch 1 (peer 0.049) and 0.02 ms at 4K (launch-bound, two kernels).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "ops/cuda/flash_attention.cuh"
#include "ops/cuda/flash_decode.cuh"
#include "gpu_check_util.cuh"

using namespace ssm::ops::cuda;
using namespace ssm::ops::cuda::flash;

// Peers on the same card (../shared/BENCHMARKS.md, 2026-11-28): torch SDPA (FlashAttention) causal
// forward, batch 1, H 16, d 128, bf16; attention over a KV cache, H 16, d 128.
struct PeerForward {
  int T;
  double ms;
};
constexpr PeerForward kPeerForward[] = {{4096, 0.32}, {16384, 3.39}, {65536, 53.0}, {102400, 127.6}};
struct PeerDecode {
  int context, batch;
  double ms;
};
constexpr PeerDecode kPeerDecode[] = {{4096, 1, 0.022},   {4096, 16, 0.133},  {4096, 64, 0.477},
                                      {16384, 1, 0.049},  {16384, 16, 0.476}, {16384, 64, 1.886}};
constexpr double kCopyBandwidth = 4.24e12;  // bytes/s, read + written (BENCHMARKS.md)
constexpr double kMatrixRate = 730e12;      // bf16 FLOP/s (BENCHMARKS.md)

// ---- v1 forward ----

template <class T>
__global__ void naive_forward(FlashArgs<T> a, CausalWindow mask) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, d = a.head_dim, kvh = h / (a.n_heads / a.n_kv_heads);
  if (t >= a.T) return;
  const T* q = a.q.row(b, t) + int64_t(h) * d;
  const int64_t first = mask.first(b, t), last = mask.last(b, t);
  float mx = -INFINITY;
  for (int64_t j = first; j <= last; ++j) {
    const T* k = a.k.row(b, j) + int64_t(kvh) * d;
    float s = 0.0f;
    for (int c = 0; c < d; ++c) s += to_float(q[c]) * to_float(k[c]);
    mx = fmaxf(mx, s * a.scale_log2);
  }
  float l = 0.0f;
  T* o = a.o.row(b, t) + int64_t(h) * d;
  for (int c = 0; c < d; ++c) o[c] = from_float<T>(0.0f);
  // Output accumulated in place in f32 passes over the channels, 8 at a time (no local array).
  for (int c0 = 0; c0 < d; c0 += 8) {
    float acc[8] = {};
    l = 0.0f;
    for (int64_t j = first; j <= last; ++j) {
      const T* k = a.k.row(b, j) + int64_t(kvh) * d;
      float s = 0.0f;
      for (int c = 0; c < d; ++c) s += to_float(q[c]) * to_float(k[c]);
      const float p = exp2f(s * a.scale_log2 - mx);
      l += p;
      const T* v = a.v.row(b, j) + int64_t(kvh) * d;
      for (int c = 0; c < 8 && c0 + c < d; ++c) acc[c] += p * to_float(v[c0 + c]);
    }
    for (int c = 0; c < 8 && c0 + c < d; ++c) o[c0 + c] = from_float<T>(acc[c] / l);
  }
  if (a.lse) a.lse[(int64_t(b) * a.n_heads + h) * a.T + t] = (mx + log2f(l)) * kLn2;
}

template <class T>
cudaError_t launch_naive(const FlashArgs<T>& a, const CausalWindow& mask, cudaStream_t stream) {
  naive_forward<T><<<dim3((a.T + 127) / 128, a.n_heads, a.batch), 128, 0, stream>>>(a, mask);
  return cudaGetLastError();
}

// ---- data ----

template <class T>
struct Buffer {
  T* data = nullptr;
  size_t n = 0;
  explicit Buffer(size_t count) : n(count) { CHECK_CUDA(cudaMalloc(&data, std::max<size_t>(1, n) * sizeof(T))); }
  ~Buffer() { cudaFree(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

// Uniform [lo, hi) values rounded to bf16 (the host keeps the rounded floats).
std::vector<float> random_values(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = __bfloat162float(__float2bfloat16(u(rng)));
  return v;
}

template <class T>
void upload(Buffer<T>& dst, const std::vector<float>& src) {
  std::vector<T> host(src.size());
  for (size_t i = 0; i < src.size(); ++i) host[i] = T(src[i]);
  CHECK_CUDA(cudaMemcpy(dst.data, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <class T>
std::vector<float> download(const Buffer<T>& src, size_t n) {
  std::vector<T> host(n);
  CHECK_CUDA(cudaMemcpy(host.data(), src.data, n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = float(host[i]);
  return out;
}

// ---- CPU reference (double) ----

// q [B,T,H*d], k/v [B,S,Hkv*d] contiguous; query t at position S - T + t.
std::vector<double> reference_forward(const std::vector<float>& q, const std::vector<float>& k,
                                      const std::vector<float>& v, int B, int T, int S, int H, int Hkv, int d,
                                      int64_t window) {
  std::vector<double> o(size_t(B) * T * H * d, 0.0), s(S);
  const double scale = 1.0 / std::sqrt(double(d));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        const int64_t i = S - T + t, first = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
        const int kvh = h / (H / Hkv);
        double mx = -INFINITY;
        for (int64_t j = first; j <= i; ++j) {
          double dot = 0.0;
          for (int c = 0; c < d; ++c)
            dot += double(q[((size_t(b) * T + t) * H + h) * d + c]) * k[((size_t(b) * S + j) * Hkv + kvh) * d + c];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int64_t j = first; j <= i; ++j) sum += std::exp(s[j] - mx);
        for (int64_t j = first; j <= i; ++j) {
          const double p = std::exp(s[j] - mx) / sum;
          for (int c = 0; c < d; ++c)
            o[((size_t(b) * T + t) * H + h) * d + c] += p * v[((size_t(b) * S + j) * Hkv + kvh) * d + c];
        }
      }
  return o;
}

// ---- forward versions ----

enum class Forward { V1, V2, V3, V4 };
const char* forward_name(Forward v) {
  switch (v) {
    case Forward::V1: return "v1 naive";
    case Forward::V2: return "v2 exact f32";
    case Forward::V3: return "v3 mma 4 warps";
    default: return "v4 mma 8 warps";
  }
}

template <class T>
cudaError_t run_forward(Forward version, const FlashArgs<T>& a, const CausalWindow& mask, cudaStream_t stream) {
  switch (version) {
    case Forward::V1: return launch_naive(a, mask, stream);
    case Forward::V2: return launch_exact(a, mask, stream);
    case Forward::V3:
      if constexpr (sizeof(T) == 2) return launch_mma<4>(a, mask, stream);
      return cudaErrorInvalidValue;
    default:
      if constexpr (sizeof(T) == 2) return launch_mma<8>(a, mask, stream);
      return cudaErrorInvalidValue;
  }
}

struct ForwardProblem {
  int B, T, S, H, Hkv, d;
  int64_t window;
};

template <class T>
struct ForwardData {
  ForwardProblem p;
  Buffer<T> q, k, v, o;
  Buffer<float> lse;
  std::vector<float> hq, hk, hv;
  ForwardData(const ForwardProblem& pr, std::mt19937& rng)
      : p(pr),
        q(size_t(pr.B) * pr.T * pr.H * pr.d),
        k(size_t(pr.B) * pr.S * pr.Hkv * pr.d),
        v(k.n),
        o(q.n),
        lse(size_t(pr.B) * pr.H * pr.T) {
    hq = random_values(q.n, rng, -2, 2);
    hk = random_values(k.n, rng, -2, 2);
    hv = random_values(v.n, rng, -1, 1);
    upload(q, hq);
    upload(k, hk);
    upload(v, hv);
  }
  FlashArgs<T> args() const {
    const int64_t qw = int64_t(p.H) * p.d, kw = int64_t(p.Hkv) * p.d;
    return {{q.data, p.T * qw, qw},        {k.data, p.S * kw, kw},   {v.data, p.S * kw, kw},
            {o.data, p.T * qw, qw},        lse.data,                 p.B,
            p.T,                           p.S,                      p.H,
            p.Hkv,                         p.d,                      float(1.0 / std::sqrt(double(p.d))) * kLog2e};
  }
  CausalWindow mask() const { return {p.S - p.T, p.window}; }
  // The output poisoned with NaN (0xFFFF in bf16, 0xFFFFFFFF in f32), so an unwritten element shows.
  void poison() { CHECK_CUDA(cudaMemset(o.data, 0xFF, o.n * sizeof(T))); }
};

bool check_forward(Forward version, const ForwardProblem& p, std::mt19937& rng) {
  ForwardData<bf16> data(p, rng);
  data.poison();
  CHECK_CUDA(run_forward(version, data.args(), data.mask(), nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<double> want = reference_forward(data.hq, data.hk, data.hv, p.B, p.T, p.S, p.H, p.Hkv, p.d, p.window);
  const double err = rel_error(download(data.o, data.o.n), want);
  const bool ok = err < 2e-2;
  std::printf("check %-16s bf16 B %d T %4d S %4d heads %2d/%d d %3d window %3lld: rel err %.2e %s\n",
              forward_name(version), p.B, p.T, p.S, p.H, p.Hkv, p.d, (long long)p.window, err, ok ? "ok" : "FAIL");
  return ok;
}

bool check_forward_f32(const ForwardProblem& p, std::mt19937& rng) {
  ForwardData<float> data(p, rng);
  data.poison();
  CHECK_CUDA(run_forward(Forward::V2, data.args(), data.mask(), nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<double> want = reference_forward(data.hq, data.hk, data.hv, p.B, p.T, p.S, p.H, p.Hkv, p.d, p.window);
  const double err = rel_error(download(data.o, data.o.n), want);
  const bool ok = err < 1e-5;
  std::printf("check %-16s f32  B %d T %4d S %4d heads %2d/%d d %3d window %3lld: rel err %.2e %s\n",
              forward_name(Forward::V2), p.B, p.T, p.S, p.H, p.Hkv, p.d, (long long)p.window, err, ok ? "ok" : "FAIL");
  return ok;
}

// ---- timing ----

struct Row {
  std::string what, version;
  double ms, peer_ms, floor_ms;
};
std::vector<Row> table;

void time_forward(int T, std::mt19937& rng) {
  const ForwardProblem p{1, T, T, 16, 16, 128, 0};
  ForwardData<bf16> data(p, rng);
  const double flops = 2.0 * double(T) * T * p.d * p.H, floor_ms = flops / kMatrixRate * 1e3;
  double peer = 0.0;
  for (const PeerForward& pf : kPeerForward)
    if (pf.T == T) peer = pf.ms;
  // The versions must agree with v2 (f32) at this shape too.
  data.poison();
  CHECK_CUDA(run_forward(Forward::V2, data.args(), data.mask(), nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<float> exact = download(data.o, data.o.n);
  for (Forward v : {Forward::V1, Forward::V2, Forward::V3, Forward::V4}) {
    if (v == Forward::V1 && T > 4096) continue;  // seconds
    if (v == Forward::V2 && T > 16384) continue;
    if (v != Forward::V2) {
      data.poison();
      CHECK_CUDA(run_forward(v, data.args(), data.mask(), nullptr));
      CHECK_CUDA(cudaDeviceSynchronize());
      const double err = rel_error(download(data.o, data.o.n), exact);
      if (err > 2e-2) std::printf("MISMATCH %s at T %d: rel err %.2e against v2\n", forward_name(v), T, err);
    }
    const int reps = T <= 16384 && v != Forward::V1 ? 20 : 5;
    const double ms = median_ms([&](int) { CHECK_CUDA(run_forward(v, data.args(), data.mask(), nullptr)); }, 2, reps);
    table.push_back({"fwd causal B 1 H 16 d 128 T " + std::to_string(T), forward_name(v), ms, peer, floor_ms});
    std::printf("time %-16s T %6d: %8.3f ms  %6.1f TFLOP/s  (peer %.2f ms)\n", forward_name(v), T, ms,
                flops / ms * 1e-9, peer);
  }
}

// ---- decode ----

struct DecodeProblem {
  int B, C, H, Hkv, d;
  int64_t window;
  std::vector<int32_t> lengths;
};

struct DecodeData {
  DecodeProblem p;
  Buffer<bf16> q, k, v, o;
  Buffer<int32_t> lengths;
  Buffer<float> partials;
  std::vector<float> hq, hk, hv;
  DecodeData(const DecodeProblem& pr, std::mt19937& rng, bool keep_host = true)
      : p(pr),
        q(size_t(pr.B) * pr.H * pr.d),
        k(size_t(pr.B) * pr.C * pr.Hkv * pr.d),
        v(k.n),
        o(q.n),
        lengths(size_t(pr.B)),
        partials(size_t(pr.B) * pr.H * (kDecodeMaxSplits - 1) * (pr.d + 2)) {
    hq = random_values(q.n, rng, -2, 2);
    hk = random_values(k.n, rng, -2, 2);
    hv = random_values(v.n, rng, -1, 1);
    upload(q, hq);
    upload(k, hk);
    upload(v, hv);
    CHECK_CUDA(
        cudaMemcpy(lengths.data, pr.lengths.data(), pr.lengths.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    if (!keep_host) hk.clear(), hv.clear();
  }
  cudaError_t run(int splits, cudaStream_t stream) const {
    const int64_t qw = int64_t(p.H) * p.d, kw = int64_t(p.Hkv) * p.d;
    const DecodeArgs<bf16, bf16> a{{q.data, qw, 0},   {k.data, p.C * kw, kw}, {v.data, p.C * kw, kw},
                                   partials.data,     p.B,                    p.H,
                                   p.Hkv,             p.d,                    splits,
                                   float(1.0 / std::sqrt(double(p.d))) * kLog2e};
    const CacheRows rows{lengths.data, p.C, p.window};
    return launch_decode(a, rows, SeqPtr<bf16>{o.data, qw, 0}, LengthCheck{{}, rows}, stream);
  }
};

int multiprocessors() {
  int device = 0, n = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return n;
}

enum class Decode { V1, V2, V3 };
const char* decode_name(Decode v) {
  return v == Decode::V1 ? "v1 one split" : v == Decode::V2 ? "v2 split x4" : "v3 split x8";
}
int decode_splits_of(Decode v, const DecodeProblem& p) {
  const int64_t rows = p.window > 0 ? std::min<int64_t>(p.C, p.window) : p.C;
  if (v == Decode::V1) return 1;
  return decode_splits(p.B, p.Hkv, rows, multiprocessors(), v == Decode::V2 ? 4 : 8);
}

bool check_decode(Decode version, const DecodeProblem& p, std::mt19937& rng) {
  DecodeData data(p, rng);
  CHECK_CUDA(cudaMemset(data.o.data, 0xFF, data.o.n * sizeof(bf16)));
  CHECK_CUDA(data.run(decode_splits_of(version, p), nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = download(data.o, data.o.n);
  double worst = 0.0;
  const size_t qw = size_t(p.H) * p.d, kw = size_t(p.Hkv) * p.d;
  for (int b = 0; b < p.B; ++b) {
    const int n = p.lengths[b];
    // The reference sees the query as the last of n positions.
    std::vector<float> q1(data.hq.begin() + b * qw, data.hq.begin() + (b + 1) * qw);
    std::vector<float> k1(data.hk.begin() + b * p.C * kw, data.hk.begin() + (b * p.C + n) * kw);
    std::vector<float> v1(data.hv.begin() + b * p.C * kw, data.hv.begin() + (b * p.C + n) * kw);
    const std::vector<double> want = reference_forward(q1, k1, v1, 1, 1, n, p.H, p.Hkv, p.d, p.window);
    worst = std::max(worst, rel_error(std::vector<float>(got.begin() + b * qw, got.begin() + (b + 1) * qw), want));
  }
  const bool ok = worst < 2e-2;
  std::printf("check %-16s bf16 B %d C %5d heads %2d/%d d %3d window %3lld: rel err %.2e %s\n", decode_name(version),
              p.B, p.C, p.H, p.Hkv, p.d, (long long)p.window, worst, ok ? "ok" : "FAIL");
  return ok;
}

void time_decode(int context, int batch, std::mt19937& rng) {
  // Enough copies of the cache that the rotation among them streams from memory, not the 60 MB L2.
  const size_t cache_bytes = size_t(batch) * context * 16 * 128 * 2 * 2;
  const int copies = int(std::min<size_t>(8, std::max<size_t>(1, (240u << 20) / cache_bytes + 1)));
  const DecodeProblem p{batch, context, 16, 16, 128, 0, std::vector<int32_t>(batch, context)};
  std::vector<DecodeData*> sets;
  for (int i = 0; i < copies; ++i) sets.push_back(new DecodeData(p, rng, false));
  double peer = 0.0;
  for (const PeerDecode& pd : kPeerDecode)
    if (pd.context == context && pd.batch == batch) peer = pd.ms;
  const double floor_ms = double(cache_bytes) / kCopyBandwidth * 1e3;
  CHECK_CUDA(sets[0]->run(1, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<float> one_split = download(sets[0]->o, sets[0]->o.n);
  for (Decode v : {Decode::V1, Decode::V2, Decode::V3}) {
    const int splits = decode_splits_of(v, p);
    CHECK_CUDA(cudaMemset(sets[0]->o.data, 0xFF, sets[0]->o.n * sizeof(bf16)));
    CHECK_CUDA(sets[0]->run(splits, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    const double err = rel_error(download(sets[0]->o, sets[0]->o.n), one_split);
    if (err > 2e-2) std::printf("MISMATCH %s at C %d B %d: rel err %.2e against v1\n", decode_name(v), context, batch, err);
    const double ms = median_ms([&](int i) { CHECK_CUDA(sets[size_t(i) % sets.size()]->run(splits, nullptr)); }, 3, 50);
    table.push_back({"decode C " + std::to_string(context) + " B " + std::to_string(batch) + " H 16 d 128",
                     std::string(decode_name(v)) + " (" + std::to_string(splits) + ")", ms, peer, floor_ms});
    std::printf("time %-16s C %5d B %2d splits %3d: %8.4f ms  %5.2f TB/s  (peer %.3f ms)\n", decode_name(v), context,
                batch, splits, ms, double(cache_bytes) / ms * 1e-9, peer);
  }
  for (DecodeData* s : sets) delete s;
}

int main() {
  print_gpu();
  std::mt19937 rng(1234);
  bool ok = true;

  const ForwardProblem forward_checks[] = {
      {2, 200, 263, 8, 2, 128, 0}, {1, 300, 300, 4, 1, 80, 0}, {3, 65, 130, 6, 3, 64, 5},
      {2, 129, 129, 4, 4, 96, 64}, {1, 7, 7, 2, 2, 64, 0},
  };
  for (const ForwardProblem& p : forward_checks) {
    for (Forward v : {Forward::V1, Forward::V2, Forward::V3, Forward::V4}) ok &= check_forward(v, p, rng);
    ok &= check_forward_f32(p, rng);
  }
  const DecodeProblem decode_checks[] = {
      {3, 700, 8, 2, 64, 0, {700, 257, 1}},
      {2, 5000, 16, 16, 128, 0, {5000, 1234}},
      {4, 300, 4, 1, 80, 64, {300, 64, 1, 150}},
  };
  for (const DecodeProblem& p : decode_checks)
    for (Decode v : {Decode::V1, Decode::V2, Decode::V3}) ok &= check_decode(v, p, rng);

  for (int T : {4096, 16384, 65536, 102400}) time_forward(T, rng);
  for (int context : {4096, 16384})
    for (int batch : {1, 16, 64}) time_decode(context, batch, rng);

  std::printf("\n| shape | version | ms | peer ms | ratio (ours/peer) | floor ms | floor/ours |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  for (const Row& r : table)
    std::printf("| %s | %s | %.4f | %.3f | %.2f | %.4f | %.0f%% |\n", r.what.c_str(), r.version.c_str(), r.ms,
                r.peer_ms, r.ms / r.peer_ms, r.floor_ms, 100.0 * r.floor_ms / r.ms);
  std::printf("\nchecks: %s\n", ok ? "all passed" : "SOME FAILED");
  return ok ? 0 : 1;
}
