// Mamba-2 SSD backward on the GPU, standalone (no engine library): checks against the backward of the
// plain recurrence in double (ssd_backward_reference.h), then a timing of forward + backward at the
// issue's shapes beside mamba_ssm's.
//
//   dev/cuda/build.sh           (or: nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a
//                                 dev/cuda/ssd_backward.cu -o build/dev-cuda/ssd_backward)
//   build/dev-cuda/ssd_backward (checks first, then the timing table; `profile T`: the timed shape at T
//                                 tokens, the backward twice, for a profiler)
// Without a GPU, build/dev-cuda/ssd_backward_host_check runs the same kernels on the CPU.
//
// The versions are the kernels the engine op runs (src/ops/cuda/ssd_backward_kernels.cuh, launched by
// ssd_backward_launch.cuh); the forward timed with it is the engine's (ssd_kernels.cuh, chunked):
//   v1  the CPU op's chunked algorithm in seven launches (see ssd_backward_kernels.cuh): chunk values,
//       chunk-local states and state gradients, an element-wise pass over the chunks for both, C Bᵀ
//       and d(C Bᵀ) per group, the per-head gradients, dB/dC per group, the parameter sums. Every
//       product on the CUDA cores in F32 from shared tiles (4 x 4 outputs a thread); the states and
//       state gradients of every chunk go through global memory in F32. Correctness first.
//       Measured (H200, ms at 4K / 16K / 64K / 100K): values 0.005 / 0.008 / 0.022 / 0.032, states
//       0.266 / 1.095 / 4.307 / 6.719, pass 0.12 / .. / .. / 3.2 (after its fix), group 0.509 / 0.620 /
//       2.405 / 4.058, head 0.852 / 3.945 / 16.952 / 26.521, dB dC 0.615 / 1.426 / 5.517 / 8.612, params
//       0.011 / 0.035 / 0.131 / 0.202; forward + backward 2.58 / 7.89 / 33.0 / 51.7 (0.59x-5.7x the peer).
//   v2  the products of the states, group, head and dB dC kernels on the tensor cores (mma.sync through
//       the forward's WarpMma: BF16 operands, F32 accumulators; 3xTF32 for F32 activations). Per head
//       (head_mma_block, P <= 64 and N <= 128): C Bᵀ recomputed from the B and C tiles (no C Bᵀ
//       scratch), M rounded to BF16 in shared memory, 93 KB of shared memory and 121 registers (two
//       blocks a multiprocessor; v1 had 137 KB, one block), the row and column sums of dM ⊙ M through
//       per-warp partials, the reverse cumsum and the partial sums in one warp's shuffles (v1: one
//       thread over 64 tokens and 2 x 256 partials). Group: only d(C Bᵀ), above-diagonal blocks
//       skipped. Params: a block per (parameter, head) instead of a thread per head over every chunk.
//       The per-chunk states and state gradients stored in BF16 for BF16 activations (F32 for F32;
//       the sums over chunks still in F32): half their memory (3.4 -> 1.7 GB at 100K) and traffic.
//       Values unchanged; the state pass the same walk over BF16 slots.
//       Prediction (written before the run; ms at 4K / 16K / 64K / 100K): states 0.03 / 0.10 / 0.40 /
//       0.60 (1.7 GB of BF16 own states written at 100K); pass 0.10 / 0.30 / 1.1 / 1.7 (half v1's
//       bytes); group 0.07 / 0.10 / 0.30 / 0.45; head 0.08 / 0.25 / 0.85 / 1.3 (S, dS and the x, dy,
//       B, C tiles: 4.1 GB at 100K, two blocks a multiprocessor); dB dC 0.08 / 0.25 / 0.70 / 1.1;
//       params ~0.01. Backward ~0.38 / 1.0 / 3.4 / 5.2; with the forward (0.10 / 0.36 / 1.36 / 2.10)
//       ~0.48 / 1.4 / 4.8 / 7.3 ms, 0.11 / 0.37 / 0.83 / 0.80x the peer. The state pass, then the
//       per-head kernel, are the largest pieces left.
//       Measured (H200, ms at 4K / 16K / 64K / 100K): values 0.005 / 0.009 / 0.022 / 0.032, states
//       0.119 / 0.452 / 1.782 / 2.798, pass 0.141 / 0.552 / 2.178 / 3.401, group 0.098 / 0.138 / 0.415 /
//       0.677, head 0.114 / 0.425 / 1.671 / 2.596, dB dC 0.102 / 0.236 / 0.921 / 1.440, params 0.005 /
//       0.004 / 0.005 / 0.006; backward 0.621 / 1.820 / 6.990 / 10.939, forward + backward 0.722 /
//       2.173 / 8.341 / 13.039 (0.17 / 0.58 / 1.46 / 1.44x the peer). The states kernel wrote its
//       BF16 own states element by element from the accumulators (2-byte stores, 8 sectors a warp
//       store) with no overlap of its loads; the pass read and wrote every chunk's state and gradient
//       (3.4 GB at 100K: 0.8 ms at the bandwidth) from a thread's chain of dependent 2-byte loads.
//   v3  the chunk states and the pass replaced by walks over segments of 4 to 32 chunks (the forward's
//       piece + scan decomposition): segment sums (the state each segment alone leaves, per walk, in
//       F32), a pass over the segment bounds only (105 MB at 100K), then a walk per (direction,
//       segment, 64 x 64 tile, head) that keeps the running state in F32 registers (the mma
//       accumulators' layout), copies the next chunk's tiles in (cp.async) while computing the
//       current one, and writes each chunk's state once, in 16-byte pieces through a shared tile;
//       dstate0 from the walk that ends at chunk 0. Each chunk's state is now rounded to BF16 once
//       (v2 rounded each chunk's own state before summing). Head: S and dS in a second cp.async
//       group, arriving while C Bᵀ and dY Xᵀ are computed; blocks heads fastest, so that a chunk's B
//       and C come from L2 for all the heads (v2 walked every chunk of one head first: up to 32 reads
//       of B and C from DRAM, 1.7 GB at 100K). Group and dB dC: the heads' tiles
//       double-buffered, each head's a and dt loaded before the products that hide their latency
//       (group: 128 registers, two blocks a multiprocessor; v2 80, three). The walks take their
//       segment's decays at once (not one chunk's global loads a step) and run two blocks a
//       multiprocessor (128 registers; the writing one spills 16 bytes).
//       Bytes at 100K: sums 0.9 GB read, walk 0.9 GB read + 1.7 GB written (v2 states + pass:
//       6 GB).
//       Prediction (written before the run; ms at 4K / 16K / 64K / 100K): segment sums 0.03 / 0.07 /
//       0.22 / 0.33; segment pass 0.01 / 0.01 / 0.03 / 0.05; walk 0.05 / 0.17 / 0.60 / 0.92 (states +
//       pass + walk 1.3 ms at 100K against v2's 6.2); group 0.09 / 0.12 / 0.32 / 0.50; head 0.09 /
//       0.32 / 1.25 / 1.95; dB dC 0.08 / 0.18 / 0.70 / 1.10; backward ~0.36 / 0.88 / 3.15 / 4.9; with
//       the forward ~0.46 / 1.24 / 4.5 / 7.0 ms, 0.11 / 0.33 / 0.79 / 0.77x the peer.
//       Measured (H200, 2026-12-01): backward 0.470 / 1.245 / 4.727 / 7.402; with the forward 0.570 /
//       1.598 / 6.069 / 9.502 ms (0.13 / 0.43 / 1.06 / 1.05x); at 100K segment sums 1.218, pass
//       0.133, walk 1.640, group 0.566, head 2.574, dB dC 1.249. Next: the
//       per-head kernel (~2 ms against a ~0.6 ms byte floor: one 80 KB load phase a block, two blocks
//       a multiprocessor).
//       2026-12-02 (`profile 65536` under ncu: the large kernels issue-bound, 53-65% of issue slots;
//       the per-head kernel 3,142 instructions a warp per chunk, 118 of them mma.sync): the tile loads
//       through the forward's copy (no 64-bit multiply per piece), the decays on __expf for BF16,
//       <dS, S> in 16-byte pieces: backward 0.416 / 1.091 / 4.114 / 6.411 ms (-11 to -14%), with the
//       forward 0.499 / 1.340 / 5.036 / 7.834 (docs/performance.md, the training log, step 11).
//
// Timed shapes (the issue's): batch 1, H 32, P 64, N 128, G 1, BF16, T = 4096 / 16384 / 65536 / 102400.
// Floor of the backward (METHOD.md's two numbers), per token:
//   bytes: read x, dy (H*P*2 each), B, C (N*2 each), dt (H*2); write dx (H*P*2), dB, dC (N*2 each),
//     ddt (H*2): 13.4 KB -> 55 / 220 / 880 / 1375 MB -> 0.013 / 0.052 / 0.21 / 0.32 ms at 4.24 TB/s.
//   FLOPs at Q = 64 (causal products halved, per group C Bᵀ and its two uses): per head
//     2 * (6 P N + Q P) (the chunk-local state and state gradient, C Sᵀ, B dSᵀ, dY S, X dS; dY Xᵀ and
//     Mᵀ dY) and per group 3 Q N: 3.43 MFLOP -> 14 / 56 / 225 / 351 GFLOP -> 0.02 / 0.08 / 0.31 /
//     0.48 ms at 730 TFLOP/s (BF16 matrix rate).
//   v1 runs the products on the CUDA cores (~60 TFLOP/s F32 at best: 6 ms at 100K before any loss),
//   recomputes dY Xᵀ (per group and per head), and moves the [P, N] state and state gradient of every
//   (head, chunk) through global memory about 5 times: ~160 KB per token (16 GB at 100K, ~4 ms).
// Peer: mamba_ssm's Triton SSD forward + backward on the same card, 4.35 / 3.72 / 5.72 / 9.08 ms
// (../shared/BENCHMARKS.md, via issue 10). Goal: at most 0.8x the peer at every length.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../../src/ops/cuda/ssd_backward_launch.cuh"
#include "../../src/ops/cuda/ssd_launch.cuh"
#include "gpu_check_util.cuh"
#include "ssd_backward_reference.h"

namespace forward = ssm::ops::cuda::ssd_kernels;
namespace backward = ssm::ops::cuda::ssd_backward_kernels;
using bf16 = __nv_bfloat16;

constexpr double kPeerMs[] = {4.35, 3.72, 5.72, 9.08};  // mamba_ssm Triton SSD forward + backward
constexpr int kLengths[] = {4096, 16384, 65536, 102400};

// One call's arguments on the GPU (dense rows), gradients NaN, parameter gradients zero, and its scratch.
template <class T>
struct Call {
  forward::Args<T> args{};
  backward::Grads<T> grads{};
  backward::Plan plan{};
  float* scratch = nullptr;
  std::vector<void*> owned;

  template <class U>
  U* own(U* p) {
    if (p) owned.push_back((void*)p);
    return p;
  }
  // Gradient buffers and the plan, once args and the state inputs are set.
  void finish(bool with_D) {
    const size_t rows = size_t(args.batch) * args.length, HP = size_t(args.heads) * args.head_dim;
    const size_t GN = size_t(args.groups) * args.state_dim;
    grads.lddy = grads.lddx = int64_t(HP);
    grads.ldddt = args.heads;
    grads.lddB = grads.lddC = int64_t(GN);
    grads.dx = own(nan_on_gpu<T>(rows * HP));
    grads.ddt = own(nan_on_gpu<T>(rows * args.heads));
    grads.dB = own(nan_on_gpu<T>(rows * GN));
    grads.dC = own(nan_on_gpu<T>(rows * GN));
    for (float** p : {&grads.dA, &grads.dD, &grads.ddt_bias}) {
      *p = own(nan_on_gpu<float>(args.heads));
      CHECK_CUDA(cudaMemset(*p, 0, args.heads * sizeof(float)));
    }
    if (!with_D) grads.dD = nullptr;
    grads.dstate0 = own(nan_on_gpu<float>(size_t(args.batch) * args.heads * args.head_dim * args.state_dim));
    plan = backward::make_plan(args, grads);
    CHECK_CUDA(cudaMalloc(&scratch, plan.scratch_floats * sizeof(float)));
    own(scratch);
  }
  void release() {
    for (void* p : owned) CHECK_CUDA(cudaFree(p));
    owned.clear();
  }
};

template <class T>
Call<T> call_from(const ssd_reference::Problem& p) {
  Call<T> c;
  c.args = {c.own(upload<T>(p.x)), c.own(upload<T>(p.dt)), c.own(upload<T>(p.B)), c.own(upload<T>(p.C)), nullptr,
            c.own(upload<float>(p.A)), c.own(upload<float>(p.dt_bias)), c.own(upload_or_null<float>(p.D)),
            int64_t(p.H) * p.P, p.H, int64_t(p.G) * p.N, int64_t(p.G) * p.N, 0, p.batch, p.T, p.H, p.P, p.G, p.N,
            p.dt_min, p.dt_max};
  c.grads.dy = c.own(upload<T>(p.dy));
  c.grads.state0 = c.own(upload_or_null<float>(p.state0));
  c.grads.dfinal = c.own(upload_or_null<float>(p.dfinal));
  c.finish(!p.D.empty());
  return c;
}

struct CheckShape {
  int batch, T, H, P, G, N;
  bool with_D, with_state0, with_dfinal;
};

// Every gradient against the double reference on random inputs; false on a failure.
template <class T>
bool check(const CheckShape& s, unsigned seed) {
  std::mt19937 gen(seed);
  NormalFill<T> fill{gen};
  ssd_reference::Problem p{s.batch, s.T, s.H, s.P, s.G, s.N, 0.0f, INFINITY};
  ssd_reference::fill_random(p, fill, 0.5f, s.with_D, s.with_state0, s.with_dfinal);
  const ssd_reference::Gradients want = ssd_reference::backward(p);

  Call<T> c = call_from<T>(p);
  CHECK_CUDA(backward::launch_backward(c.args, c.grads, c.plan, c.scratch, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const double tol = sizeof(T) == 2 ? 3e-2 : 1e-4;
  bool ok = true;
  std::printf("check v3 %-4s B %d T %4d H %d P %3d G %d N %3d D %d state0 %d dfinal %d:",
              sizeof(T) == 2 ? "bf16" : "f32", s.batch, s.T, s.H, s.P, s.G, s.N, s.with_D, s.with_state0,
              s.with_dfinal);
  auto report = [&](const char* name, const std::vector<float>& got, const std::vector<double>& ref) {
    const double e = rel_error(got, ref);
    std::printf(" %s %.1e", name, e);
    ok &= e < tol;
  };
  report("dx", download(c.grads.dx, want.dx.size()), want.dx);
  report("ddt", download(c.grads.ddt, want.ddt.size()), want.ddt);
  report("dB", download(c.grads.dB, want.dB.size()), want.dB);
  report("dC", download(c.grads.dC, want.dC.size()), want.dC);
  report("dA", download(c.grads.dA, want.dA.size()), want.dA);
  if (s.with_D) report("dD", download(c.grads.dD, want.dD.size()), want.dD);
  report("dbias", download(c.grads.ddt_bias, want.dbias.size()), want.dbias);
  report("dstate0", download(c.grads.dstate0, want.dstate0.size()), want.dstate0);
  std::printf(" %s\n", ok ? "ok" : "FAIL");
  c.release();
  return ok;
}

// The timed call: random BF16 inputs made on the GPU, D, no state0 or dfinal (as in training).
Call<bf16> timed_call(int T, unsigned seed) {
  constexpr int H = 32, P = 64, N = 128;
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> bias(-3.5f, -2.5f), log_a(0.0f, std::log(16.0f)), d(-1.0f, 1.0f);
  std::vector<float> dt_bias(H), A(H), D(H);
  for (int i = 0; i < H; ++i) dt_bias[i] = bias(gen), A[i] = -std::exp(log_a(gen)), D[i] = d(gen);
  Call<bf16> c;
  const size_t rows = size_t(T);
  c.args = {c.own(random_on_gpu<bf16>(rows * H * P, seed + 1, -1.7f, 1.7f)),
            c.own(random_on_gpu<bf16>(rows * H, seed + 2, -0.9f, 0.9f)),
            c.own(random_on_gpu<bf16>(rows * N, seed + 3, -0.87f, 0.87f)),
            c.own(random_on_gpu<bf16>(rows * N, seed + 4, -0.87f, 0.87f)),
            c.own(nan_on_gpu<bf16>(rows * H * P)),
            c.own(upload<float>(A)),
            c.own(upload<float>(dt_bias)),
            c.own(upload<float>(D)),
            H * P, H, N, N, H * P, 1, T, H, P, 1, N, 0.0f, INFINITY};
  c.grads.dy = c.own(random_on_gpu<bf16>(rows * H * P, seed + 5, -1.7f, 1.7f));
  c.finish(true);
  return c;
}

// Median over `batches` of the mean time of 5 back-to-back runs of `work` after 2 warm-up runs.
template <class F>
double time_ms(F&& work, int batches) {
  return median_batch_ms([&](int) { work(); }, 2, batches, 5);
}

// The timed shape at `length` tokens, the backward run twice (the second for a profiler to take, e.g.
// ncu --launch-skip 8 -c 8 ... build/dev-cuda/ssd_backward profile 65536).
int profile(int length) {
  Call<bf16> c = timed_call(length, 10);
  for (int i = 0; i < 2; ++i)
    CHECK_CUDA(backward::launch_backward(c.args, c.grads, c.plan, c.scratch, nullptr, backward::kAllStages));
  CHECK_CUDA(cudaDeviceSynchronize());
  c.release();
  return 0;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  if (argc == 3 && std::string(argv[1]) == "profile" && std::atoi(argv[2]) > 0) return profile(std::atoi(argv[2]));
  if (argc != 1) {
    std::fprintf(stderr, "usage: ssd_backward [profile T]\n");
    return 2;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);

  bool ok = true;
  const CheckShape checked[] = {{2, 300, 4, 64, 2, 128, true, true, true},
                                {1, 130, 3, 24, 1, 16, false, false, true},
                                {2, 70, 4, 80, 2, 72, true, true, false},
                                {1, 37, 2, 64, 1, 128, true, false, false},
                                {2, 8229, 32, 32, 1, 64, true, true, true}};  // 15 segments of 9 chunks
  unsigned seed = 1;
  for (const CheckShape& s : checked) {
    ok &= check<float>(s, seed++);
    ok &= check<bf16>(s, seed++);
  }

  // Forward (the engine's chunked kernels) + backward v3, then each backward kernel alone (on the
  // scratch a whole run left).
  const struct {
    const char* name;
    int stages;
  } stages[] = {{"values", backward::kChunkValues}, {"seg sums", backward::kSegmentSums},
                {"seg pass", backward::kSegmentPass}, {"walk", backward::kStateWalk},
                {"group", backward::kGroup},          {"head", backward::kHead},
                {"dB dC", backward::kDbc},            {"params", backward::kParams}};
  std::printf("\n| tokens | fwd ms | bwd v3 ms | fwd+bwd ms | peer ms | ratio |");
  for (const auto& s : stages) std::printf(" %s |", s.name);
  std::printf("\n|---|---|---|---|---|---|");
  for (size_t i = 0; i < std::size(stages); ++i) std::printf("---|");
  std::printf("\n");
  for (int i = 0; i < 4; ++i) {
    Call<bf16> c = timed_call(kLengths[i], 10 + i);
    forward::Plan fplan;
    CHECK_CUDA(forward::plan_chunked(c.args, &fplan));
    float* fscratch = nullptr;
    CHECK_CUDA(cudaMalloc(&fscratch, std::max<size_t>(1, forward::chunked_scratch_floats(c.args, fplan)) * 4));
    auto run_forward = [&] { CHECK_CUDA(forward::launch_chunked(c.args, fplan, nullptr, fscratch, nullptr)); };
    auto run_backward = [&](int which) {
      CHECK_CUDA(backward::launch_backward(c.args, c.grads, c.plan, c.scratch, nullptr, which));
    };
    const int batches = kLengths[i] > 20000 ? 5 : 20;
    const double fwd = time_ms(run_forward, batches);
    const double bwd = time_ms([&] { run_backward(backward::kAllStages); }, batches);
    std::vector<double> parts;
    for (const auto& s : stages) parts.push_back(time_ms([&] { run_backward(s.stages); }, batches));
    std::printf("| %d | %.3f | %.3f | %.3f | %.2f | %.2fx |", kLengths[i], fwd, bwd, fwd + bwd, kPeerMs[i],
                (fwd + bwd) / kPeerMs[i]);
    for (double ms : parts) std::printf(" %.3f |", ms);
    std::printf("\n");
    // The gradients of one more whole run are finite (the checks above hold the values; the stages
    // timed alone ran on each other's leftovers).
    run_backward(backward::kAllStages);
    CHECK_CUDA(cudaDeviceSynchronize());
    const std::vector<float> dx = download(c.grads.dx, size_t(kLengths[i]) * 32 * 64);
    for (float v : dx)
      if (!std::isfinite(v)) {
        std::printf("non-finite dx at T %d: FAIL\n", kLengths[i]);
        ok = false;
        break;
      }
    CHECK_CUDA(cudaFree(fscratch));
    c.release();
  }
  std::printf("%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
