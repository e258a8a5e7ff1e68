// Mamba-2 SSD forward on the GPU, standalone (no engine library): a CPU reference, the GPU versions, a
// check of each against the reference on random inputs, and a timing of each at the issue's shapes.
//
//   dev/cuda/build.sh           (or: nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a
//                                 dev/cuda/ssd.cu -o build/dev-cuda/ssd)
//   build/dev-cuda/ssd [short|long]   (checks first, then the timing tables, last; `short` only the
//                                     short sequences' table, `long` only the checks and the long one)
//   build/dev-cuda/ssd profile T      (the timed shape at T tokens, BF16, run twice: for a profiler, e.g.
//                                     ncu -k regex:chunk_scan --launch-skip 1 -c 1 --set full ...)
// Without a GPU, build/dev-cuda/ssd_host_check runs the same kernels on the CPU (dev/cuda/ssd_host_check.cpp).
//
// v1 and v4 are the kernels the engine op runs (src/ops/cuda/ssd_kernels.cuh, ssd_launch.cuh); v2 and v3
// are gone from the code, their numbers kept here and in docs/performance.md:
//   v1  recurrent: one warp per (batch, head, channel p), token by token over its state row (the engine's
//       ssd_step, and its forward for shapes v2 does not take).
//   v2  chunked: chunks of 64 tokens cut into segments so that batch*heads*segments blocks fill the GPU;
//       two launches (segment states, then outputs with the state composed from the segments before);
//       the four products per chunk on tensor cores (mma.sync BF16, or 3xTF32 for F32 activations).
//       Tiles padded by 16 bytes a row: 116.8 KB of shared memory per pass-2 block, so one block (8
//       warps) per multiprocessor and 132 / 32 = 4 segments per head at H 32.
//       First H200 run (2026-11-30): 0.120 / 0.432 / 1.670 / 2.597 ms = 0.22 / 0.39 / 1.31 / 1.30x the
//       peer. The time grows linearly with T at a constant ~4-5 us per chunk-step of a block (24 steps
//       at 4K: 8 of pass 1, 16 of pass 2; 600 at 100K), several times the ~1 us the block's issued
//       instructions and its mma.sync chains need: each pass-2 block walks T/256 chunks in a row with
//       2 barriers a chunk and only 2 warps per scheduler, so latencies (mma, ldmatrix, shared loads,
//       the dt scan's shuffles, the next chunk's copies) are exposed, and nothing else on the
//       multiprocessor fills them.
//   v3  v2 with unpadded tiles whose 16-byte pieces are permuted by XOR with the row
//       (conflict-free ldmatrix without padding): 106 KB per BF16 pass-2 block, so two blocks per
//       multiprocessor (at most 128 registers a thread: 127 used, no spills), 8 segments per head at
//       H 32, each walking half as many chunks, while the other block on the multiprocessor fills its
//       stalls; pass 1 drops to 80 registers, three blocks per multiprocessor.
//       Prediction: pass 2 1.5-1.9x faster, pass 1 unchanged per chunk but over 7/8 instead of 3/4
//       of the chunks: 100K 1.4-1.7 ms (0.7-0.85x), 64K 0.9-1.1 ms, 16K ~0.26 ms, 4K ~0.08 ms. The
//       table times pass 1 and pass 2 alone, and the same kernels at v2's plan (4 segments: one block
//       per multiprocessor) and at 16 segments, to say where the time goes if this misses.
//       Outcome (2026-12-01): 0.101 / 0.350 / 1.350 / 2.098 ms = 0.19 / 0.32 / 1.06 / 1.05x the peer;
//       pass 1 0.67 ms and pass 2 1.43 ms at 100K (pass 2 1.4x faster, under the prediction); 16
//       segments changed nothing (2.104 ms): the per-chunk chain, not the parallelism, is what is left.
//   v4  (the engine's) v3's passes with what does not depend on the state taken out of their per-chunk chains, into a
//       third kernel that runs first, fully parallel over (batch, chunk): every head's dt scan and every
//       group's raw C Bᵀ (once per group, not once per head as in v3) into scratch. Pass 2 copies the
//       chunk's scan in with its tiles and reads C Bᵀ into registers (the next chunk's loaded while this
//       one's state is updated), so its chain per chunk loses the C Bᵀ product (8 dependent k-steps of
//       mma.sync and ~40 ldmatrix a warp, ~75 of the ~320 KB of shared-memory traffic per chunk and head,
//       1 of 3.5 MFLOP) and warp 1's dt scan (shuffles in double, 6 expf a lane). Pass 1 reads its
//       scans and copies chunks three ahead (four stages): at H 32 its plan has 7 x 32 blocks, under
//       two per multiprocessor, so it takes two blocks' room (v3: three at 80 registers, the third
//       slot empty) for the deeper pipeline and uncapped registers.
//       Resources (nvcc -Xptxas -v, BF16, N 128): prep 61 registers, 32 KB shared; pass 1 124
//       registers, 97.1 KB shared (2 blocks a multiprocessor); pass 2 128 registers (the cap for two
//       blocks; v3 127), 106 KB shared as v3. No spills, no stack frame, in any instantiation.
//       Prediction (written before the first GPU run): prep ~5 us at 4K to ~30-50 us at 100K (per
//       token 2 B of dt, 0.5 KB of B and C read; 32 scans x 1040 B and 8 KB of C Bᵀ per chunk
//       written); pass 2's chunk step ~7.1 -> ~5 us (1.43 -> ~1.0 ms at 100K); pass 1 ~3.4 -> ~1.5-2 us
//       a step if its step was waiting for the copies issued one chunk ahead, else unchanged (0.67 ms
//       at 100K; no scan left in its chain either). So 100K 1.35-1.7 ms (0.68-0.86x the peer), 64K
//       0.85-1.1 ms (0.67-0.87x), 16K ~0.26 ms, 4K ~0.08 ms (one launch more). The table times prep,
//       pass 1 and pass 2 alone to say which part of this held.
//       Outcome (2026-12-01, v3 timed in the same run): 0.101 / 0.320 / 1.192 / 1.846 ms = 0.19 / 0.29
//       / 0.94 / 0.92x the peer (v3 0.103 / 0.356 / 1.355 / 2.105 ms): 2 / 10 / 12 / 12% under v3, short
//       of the prediction, and the goal is still missed at 64K and 100K. At 100K prep 0.055 ms (over the
//       30-50 us predicted), pass 1 0.667 -> 0.452 ms (a third less: its step did wait on its copies,
//       though not as much as ~0.3 ms would have meant), pass 2 1.432 -> 1.341 ms (7.2 -> 6.7 us a
//       chunk step, not ~5): the C Bᵀ product and the scan were mostly hidden in v3's chain already;
//       the rest of it (state store, C Sᵀ + Ms X, state update, two barriers) is what bounds pass 2.
//       F32: 0.311 / 1.148 / 4.459 / 6.949 ms (v3 0.377 / 1.416 / 5.532 / 8.617), 17-19% under v3.
//       2026-12-02 (`profile 65536` under ncu: pass 2 issue-bound at 1,742 instructions a warp per chunk,
//       74 of them mma.sync): the tile copies without a runtime division per piece, the mask's decays on
//       __expf for BF16, y's stores from row pointers: 0.084 / 0.247 / 0.919 / 1.424 ms, 16-23% faster
//       (docs/performance.md, the SSD forward's log, item 4).
//
//   v4 with pass 2 in slices of rows (Plan::slice_rows): when batch * heads * segments pass-2 blocks
//       leave the GPU under-filled (a prefix-cache hit's 16-token suffix at mamba2-130m: 24 blocks on 132
//       multiprocessors), each (batch, head, segment)'s 64 rows of the state go to 2 or 4 blocks of 32 or
//       16 rows, each loading, updating and storing only its rows and writing only its y channels; x, B,
//       C, the scans and C Bᵀ are read by every slice. The same products per element, so the same bits.
//       The short table times the whole forward, prep and pass 2 alone with rows 64 / 32 / 16 at B 1, H 24,
//       P 64, N 128, T 16 / 48 / 64, state in and out, in CUDA graphs of 20 runs (as the engine replays
//       short chunks), checks each against the reference and says whether each equals rows 64 bit for bit.
//       Prediction (docs/performance.md, "The server on the GPU", item 6).
//
// Timed shapes (the issue's): batch 1, H 32, P 64, N 128, G 1, BF16, T = 4096 / 16384 / 65536 / 102400.
// Floor (METHOD.md's two numbers):
//   bytes: x and y (T*H*P*2 each) + B and C (T*N*2 each) + dt (T*H*2) = 8768 B per token:
//     35.9 / 143.7 / 574.6 / 897.8 MB -> 8.5 / 33.9 / 135.5 / 211.8 us at 4.24 TB/s (measured copy).
//   FLOPs of the chunked algorithm at Q = 64 (causal halves once, C Bᵀ once per group):
//     T * (Q*N + H*(Q*P + 4*N*P)) = 1.19 MFLOP per token: 4.9 / 19.5 / 77.8 / 121.6 GFLOP
//     -> 6.7 / 26.7 / 106.6 / 166.6 us at 730 TFLOP/s (measured BF16 matrix rate).
//   So memory-bound: the floor is the bytes, 0.21 ms at 100K tokens.
//   v2 as written moves ~12.6 KB per token (x, B and dt read again by the segment-state pass) and does
//   ~1.9 MFLOP per token (C Bᵀ per head instead of per group, the segment states computed twice).
// Peer: mamba_ssm's Triton SSD forward on the same card, 0.54 / 1.11 / 1.27 / 2.00 ms
// (../shared/BENCHMARKS.md, 2026-11-28). Goal: at most 0.8x the peer at every length.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../src/ops/cuda/ssd_launch.cuh"
#include "gpu_check_util.cuh"

namespace kernels = ssm::ops::cuda::ssd_kernels;
using bf16 = __nv_bfloat16;

constexpr double kPeerMs[] = {0.54, 1.11, 1.27, 2.00};  // mamba_ssm Triton SSD forward, BENCHMARKS.md
constexpr int kLengths[] = {4096, 16384, 65536, 102400};

struct Shape {
  int batch, T, H, P, G, N;
  bool with_D, with_state;
};

// Host inputs in F32 (activations already rounded to the dtype under test).
struct Host {
  Shape s;
  std::vector<float> x, dt, B, C, dt_bias, A, D, state0;
};

template <class T>
Host make_host(const Shape& s, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> uniform(0.0f, std::log(16.0f));
  NormalFill<T> fill{gen};
  Host h{s, {}, {}, {}, {}, {}, {}, {}, {}};
  const size_t rows = size_t(s.batch) * s.T;
  fill(h.x, rows * s.H * s.P, 1.0f, 0.0f, true);
  fill(h.dt, rows * s.H, 0.5f, 0.0f, true);
  fill(h.B, rows * s.G * s.N, 0.5f, 0.0f, true);
  fill(h.C, rows * s.G * s.N, 0.5f, 0.0f, true);
  fill(h.dt_bias, s.H, 0.3f, -3.0f, false);
  h.A.resize(s.H);
  for (float& a : h.A) a = -std::exp(uniform(gen));
  if (s.with_D) fill(h.D, s.H, 1.0f, 0.0f, false);
  if (s.with_state) fill(h.state0, size_t(s.batch) * s.H * s.P * s.N, 0.5f, 0.0f, false);
  return h;
}

// The plain recurrence in double: y [B,T,H*P] and the final state [B,H,P,N].
void reference(const Host& h, std::vector<double>& y, std::vector<double>& state) {
  const Shape& s = h.s;
  y.assign(size_t(s.batch) * s.T * s.H * s.P, 0.0);
  state.assign(size_t(s.batch) * s.H * s.P * s.N, 0.0);
  if (s.with_state) std::copy(h.state0.begin(), h.state0.end(), state.begin());
  for (int b = 0; b < s.batch; ++b)
    for (int hd = 0; hd < s.H; ++hd) {
      const int g = hd / (s.H / s.G);
      double* S = &state[(size_t(b) * s.H + hd) * s.P * s.N];
      for (int t = 0; t < s.T; ++t) {
        const size_t row = size_t(b) * s.T + t;
        const double v = double(h.dt[row * s.H + hd]) + h.dt_bias[hd];
        const double dt = v > 20.0 ? v : std::log1p(std::exp(v));
        const double decay = std::exp(dt * h.A[hd]);
        for (int p = 0; p < s.P; ++p) {
          const double xv = h.x[row * s.H * s.P + size_t(hd) * s.P + p];
          double acc = 0.0;
          for (int n = 0; n < s.N; ++n) {
            double& sv = S[size_t(p) * s.N + n];
            sv = decay * sv + dt * xv * h.B[(row * s.G + g) * s.N + n];
            acc += sv * h.C[(row * s.G + g) * s.N + n];
          }
          y[row * s.H * s.P + size_t(hd) * s.P + p] = acc + (s.with_D ? h.D[hd] * xv : 0.0);
        }
      }
    }
}

enum class Version { v1, v4 };

// A timed run: the version, and for v4 which kernels run (one alone to see where the time goes).
struct Config {
  const char* name;
  Version version;
  int passes;  // kernels::Passes
};

// One input set on the GPU, the output poisoned with NaN, the state (when wanted) reset per run.
template <class T>
struct Device {
  kernels::Args<T> args{};
  float* state = nullptr;  // working state; null without one
  float* state0 = nullptr;
  size_t state_floats = 0;
  kernels::Plan plan{};      // the chunked plan, once planned
  float* scratch = nullptr;  // and its scratch

  explicit Device(const Host& h) {
    const Shape& s = h.s;
    args = {upload<T>(h.x), upload<T>(h.dt), upload<T>(h.B), upload<T>(h.C), nullptr,
            upload<float>(h.A), upload<float>(h.dt_bias), s.with_D ? upload<float>(h.D) : nullptr,
            int64_t(s.H) * s.P, s.H, int64_t(s.G) * s.N, int64_t(s.G) * s.N, int64_t(s.H) * s.P,
            s.batch, s.T, s.H, s.P, s.G, s.N, 0.0f, INFINITY};
    finish(s);
    if (s.with_state) set_initial_state(h.state0);
  }
  // Random inputs made on the GPU, scaled as make_host's (dt bias and A as there, on the host).
  Device(const Shape& s, unsigned seed) {
    const size_t rows = size_t(s.batch) * s.T;
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> bias(-3.5f, -2.5f), log_a(0.0f, std::log(16.0f)), d(-1.0f, 1.0f);
    std::vector<float> dt_bias(s.H), A(s.H), D(s.H);
    for (int i = 0; i < s.H; ++i) dt_bias[i] = bias(gen), A[i] = -std::exp(log_a(gen)), D[i] = d(gen);
    args = {random_on_gpu<T>(rows * s.H * s.P, seed + 1, -1.7f, 1.7f),
            random_on_gpu<T>(rows * s.H, seed + 2, -0.9f, 0.9f),
            random_on_gpu<T>(rows * s.G * s.N, seed + 3, -0.87f, 0.87f),
            random_on_gpu<T>(rows * s.G * s.N, seed + 4, -0.87f, 0.87f),
            nullptr,
            upload<float>(A),
            upload<float>(dt_bias),
            s.with_D ? upload<float>(D) : nullptr,
            int64_t(s.H) * s.P, s.H, int64_t(s.G) * s.N, int64_t(s.G) * s.N, int64_t(s.H) * s.P,
            s.batch, s.T, s.H, s.P, s.G, s.N, 0.0f, INFINITY};
    finish(s);
  }
  void finish(const Shape& s) {
    CHECK_CUDA(cudaMalloc(&args.y, size_t(s.batch) * s.T * s.H * s.P * sizeof(T)));
    state_floats = size_t(s.batch) * s.H * s.P * s.N;
    CHECK_CUDA(cudaMalloc(&state, state_floats * sizeof(float)));
    reset_state();
  }
  void set_initial_state(const std::vector<float>& v) {
    state0 = upload<float>(v);
    reset_state();
  }
  void poison() {
    CHECK_CUDA(cudaMemset(args.y, 0xff, size_t(args.batch) * args.length * args.heads * args.head_dim * sizeof(T)));
  }
  void reset_state() {
    if (state0) CHECK_CUDA(cudaMemcpy(state, state0, state_floats * sizeof(float), cudaMemcpyDeviceToDevice));
    else CHECK_CUDA(cudaMemset(state, 0, state_floats * sizeof(float)));
  }
  void release() {
    for (const void* p : {(const void*)args.x, (const void*)args.dt, (const void*)args.B, (const void*)args.C,
                          (const void*)args.y, (const void*)args.A, (const void*)args.dt_bias, (const void*)args.D,
                          (const void*)state, (const void*)state0})
      if (p) CHECK_CUDA(cudaFree(const_cast<void*>(p)));
    if (scratch) CHECK_CUDA(cudaFree(scratch));
    scratch = nullptr;
  }
  // The chunked plan (planned once, as the engine plans once per call) and its scratch.
  std::pair<const kernels::Plan*, float*> chunked() {
    if (!scratch) {
      CHECK_CUDA(kernels::plan_chunked(args, &plan));
      const size_t floats = kernels::chunked_scratch_floats(args, plan);
      CHECK_CUDA(cudaMalloc(&scratch, floats * sizeof(float)));
      CHECK_CUDA(cudaMemset(scratch, 0xff, floats * sizeof(float)));  // NaN: unwritten scratch shows
    }
    return {&plan, scratch};
  }
};

template <class T>
void run(Device<T>& d, const Config& config, bool state_io, cudaStream_t stream) {
  if (config.version == Version::v1) {
    CHECK_CUDA(kernels::launch_recurrent(d.args, d.state, stream));
    return;
  }
  const auto [plan, scratch] = d.chunked();
  CHECK_CUDA(kernels::launch_chunked(d.args, *plan, state_io ? d.state : nullptr, scratch, stream, config.passes));
}

// Each version run whole, with its own plan.
constexpr Config kWhole[] = {{"v1", Version::v1, 0}, {"v4", Version::v4, kernels::kAllPasses}};
const Config& whole(Version v) { return kWhole[int(v)]; }

template <class T>
const char* dtype_name() {
  return sizeof(T) == 2 ? "bf16" : "f32";
}

// Against the double reference on random inputs; returns false on a failure.
template <class T>
bool check(const Shape& s, Version v, unsigned seed) {
  const Host h = make_host<T>(s, seed);
  std::vector<double> want_y, want_state;
  reference(h, want_y, want_state);
  Device<T> d(h);
  d.poison();
  d.reset_state();
  run(d, whole(v), true, nullptr);
  CHECK_CUDA(cudaDeviceSynchronize());
  const double ey = rel_error(download(d.args.y, want_y.size()), want_y);
  const double es = rel_error(download(d.state, want_state.size()), want_state);
  const double tol = sizeof(T) == 2 ? 2e-2 : 1e-5;
  const bool ok = ey < tol && es < tol;
  std::printf("check %s %-4s B %d T %5d H %2d P %2d G %d N %3d D %d state %d: y %.2e state %.2e %s\n", whole(v).name,
              dtype_name<T>(), s.batch, s.T, s.H, s.P, s.G, s.N, s.with_D, s.with_state, ey, es, ok ? "ok" : "FAIL");
  return ok;
}

// Median over `batches` of the mean time of 10 back-to-back runs (CUDA events around each batch), the
// runs rotating among input sets so that the inputs are not L2-resident.
template <class T>
double time_ms(std::vector<Device<T>>& sets, const Config& config, int batches) {
  auto run_one = [&](int i) { run(sets[size_t(i) % sets.size()], config, false, nullptr); };
  return median_batch_ms(run_one, 3, batches, 10);
}

std::string plan_text(const kernels::Plan& p) {
  char text[96];
  std::snprintf(text, sizeof text, "%d x %d chunks, pieces %d x %d, rows %d x %d", p.segments, p.chunks_per_segment,
                p.pieces_per_segment, p.chunks_per_piece, p.slice_rows, p.slices);
  return text;
}

// ---- Short sequences: pass 2 with whole-head blocks against slices of rows ----

struct ShortRun {
  std::vector<float> y, state;  // downloaded (BF16 to F32 is exact, so equal floats are equal bits)
  double ms_all, ms_prep, ms_scan;  // one forward; pass 0 (prep) alone; pass 2 alone
};

// The forward with `plan` (its scratch from d.chunked()) on fresh outputs, state in and out; then its
// time, whole, prep alone and pass 2 alone, replayed in CUDA graphs of 20 runs each.
template <class T>
ShortRun short_run(Device<T>& d, const kernels::Plan& plan, cudaStream_t stream) {
  float* const scratch = d.chunked().second;
  const size_t ny = size_t(d.args.batch) * d.args.length * d.args.heads * d.args.head_dim;
  d.poison();
  d.reset_state();
  CHECK_CUDA(kernels::launch_chunked(d.args, plan, d.state, scratch, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  ShortRun r{download(d.args.y, ny), download(d.state, d.state_floats), 0.0, 0.0, 0.0};
  auto graph_ms = [&](int passes) {
    auto twenty = [&] {
      for (int i = 0; i < 20; ++i) CHECK_CUDA(kernels::launch_chunked(d.args, plan, d.state, scratch, stream, passes));
    };
    return median_graph_ms(stream, twenty, 5, 51) / 20;
  };
  r.ms_all = graph_ms(kernels::kAllPasses);
  r.ms_prep = graph_ms(kernels::kPrep);
  r.ms_scan = graph_ms(kernels::kChunkScan);
  return r;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// One short shape with pass 2's rows 64, 32 and 16 (forced; the plan's own choice marked), each checked
// against the double reference and compared bit for bit with rows 64; a table row each.
template <class T>
bool short_case(int length, cudaStream_t stream, std::string& table) {
  const Shape s{1, length, 24, 64, 1, 128, true, true};
  const Host h = make_host<T>(s, unsigned(40 + length));
  std::vector<double> want_y, want_state;
  reference(h, want_y, want_state);
  Device<T> d(h);
  const kernels::Plan chosen = *d.chunked().first;
  const double tol = sizeof(T) == 2 ? 2e-2 : 1e-5;
  bool ok = true;
  ShortRun whole_heads;
  for (const int rows : {kernels::kHeadDimTile, 32, 16}) {
    kernels::Plan plan = chosen;
    kernels::set_slice_rows(plan, s.P, rows);
    const ShortRun r = short_run(d, plan, stream);
    if (rows == kernels::kHeadDimTile) whole_heads = r;
    const bool same = bits_equal(r.y, whole_heads.y) && bits_equal(r.state, whole_heads.state);
    const double ey = rel_error(r.y, want_y), es = rel_error(r.state, want_state);
    const bool row_ok = ey < tol && es < tol && same;
    ok &= row_ok;
    char row[256];
    std::snprintf(row, sizeof row, "| %d | %s | %d x %d%s | %.2e / %.2e | %s | %.4f | %.4f | %.4f | %s |\n", length,
                  dtype_name<T>(), rows, plan.slices, rows == chosen.slice_rows ? " (plan)" : "", ey, es,
                  same ? "yes" : "NO", r.ms_all, r.ms_prep, r.ms_scan, row_ok ? "ok" : "FAIL");
    table += row;
  }
  d.release();
  return ok;
}

bool short_table() {
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));  // blocking: ordered after the default stream's memsets and copies
  std::string table =
      "| tokens | dtype | rows x slices | y / state error | = rows 64 | forward ms | prep ms | pass 2 ms | |\n"
      "|---|---|---|---|---|---|---|---|---|\n";
  bool ok = true;
  for (const int length : {16, 48, 64, 100}) {  // one chunk (pass 2 makes its own scan and C Bᵀ: no prep), two
    ok &= short_case<bf16>(length, stream, table);
    ok &= short_case<float>(length, stream, table);
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::printf("\nShort sequences: B 1, H 24, P 64, N 128, G 1, D, state in and out; CUDA graphs of 20 runs, median of "
              "51 replays\n\n%s", table.c_str());
  return ok;
}

// ---- Checks and the long sequences' table ----

// Against the double recurrence: the chunked shapes (several segments, partial last chunk, two groups,
// initial state; with this GPU's plan, pass 2 in slices of rows where the segments leave room) and
// ones only v1 takes.
bool checks() {
  bool ok = true;
  const Shape checked[] = {{2, 300, 4, 64, 2, 128, true, true},
                           {1, 2049, 3, 64, 1, 64, false, true},
                           {2, 1000, 6, 24, 2, 16, true, false},
                           {3, 63, 4, 32, 1, 128, true, true}};
  for (const Shape& s : checked)
    for (Version v : {Version::v1, Version::v4}) {
      ok &= check<float>(s, v, 1);
      ok &= check<bf16>(s, v, 2);
    }
  return ok;
}

bool long_table() {
  bool ok = true;
  // The timed shapes: v4 against v1 (the reference is too slow there), then timings. "prep" / "pass 1" /
  // "pass 2" run one kernel alone (on the scratch the whole runs left).
  const Config configs[] = {whole(Version::v4),
                            {"prep", Version::v4, kernels::kPrep},
                            {"pass 1", Version::v4, kernels::kPieceStates},
                            {"pass 2", Version::v4, kernels::kChunkScan}};
  std::string table = "| tokens | peer ms | v4 bf16 ms | v4 / peer | floor ms |";
  for (size_t k = 1; k < std::size(configs); ++k) table += std::string(" ") + configs[k].name + " |";
  table += " v4 f32 | v1 bf16 | plan |\n|---|---|---|---|---|";
  for (size_t k = 1; k < std::size(configs); ++k) table += "---|";
  table += "---|---|---|\n";
  for (int i = 0; i < 4; ++i) {
    const Shape s{1, kLengths[i], 32, 64, 1, 128, true, false};
    const size_t set_bytes = size_t(s.T) * 8768;
    const int n_sets = int(std::max<size_t>(1, (size_t(256) << 20) / set_bytes + 1));
    std::vector<Device<bf16>> sets;
    for (int k = 0; k < n_sets; ++k) sets.emplace_back(s, 10 + k);
    Device<bf16>& first = sets[0];
    const size_t ny = size_t(s.T) * s.H * s.P;
    first.poison();
    first.reset_state();
    run(first, whole(Version::v1), true, nullptr);
    CHECK_CUDA(cudaDeviceSynchronize());
    const std::vector<float> y1 = download(first.args.y, ny);
    first.poison();
    run(first, whole(Version::v4), false, nullptr);
    CHECK_CUDA(cudaDeviceSynchronize());
    const double e = rel_error(download(first.args.y, ny), y1);
    std::printf("v4 vs v1 at T %d: %.2e %s\n", s.T, e, e < 2e-2 ? "ok" : "FAIL");
    ok &= e < 2e-2;
    std::vector<double> ms;
    for (const Config& c : configs) ms.push_back(time_ms(sets, c, 20));
    const double v1 = i == 0 ? time_ms(sets, whole(Version::v1), 1) : NAN;
    std::vector<Device<float>> sets32;
    sets32.emplace_back(s, 20);
    const double v4f = time_ms(sets32, whole(Version::v4), 5);
    const double floor_ms = double(set_bytes) / 4.24e12 * 1e3;
    char row[256];
    std::snprintf(row, sizeof row, "| %d | %.2f | %.3f | %.2fx | %.3f |", s.T, kPeerMs[i], ms[0], ms[0] / kPeerMs[i],
                  floor_ms);
    table += row;
    for (size_t k = 1; k < ms.size(); ++k) {
      std::snprintf(row, sizeof row, " %.3f |", ms[k]);
      table += row;
    }
    std::snprintf(row, sizeof row, " %.3f | %.3f | ", v4f, v1);
    table += row + plan_text(*first.chunked().first) + " |\n";
    for (Device<bf16>& d : sets) d.release();
    for (Device<float>& d : sets32) d.release();
  }
  std::printf("\nLong sequences: B 1, H 32, P 64, N 128, G 1, BF16\n\n%s", table.c_str());
  return ok;
}

// The timed shape at `length` tokens, the whole forward run twice (the second for a profiler to take).
int profile(int length) {
  Device<bf16> d(Shape{1, length, 32, 64, 1, 128, true, false}, 10);
  for (int i = 0; i < 2; ++i) run(d, whole(Version::v4), false, nullptr);
  CHECK_CUDA(cudaDeviceSynchronize());
  std::printf("profiled T %d: %s\n", length, plan_text(*d.chunked().first).c_str());
  d.release();
  return 0;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // every line out as it is printed, even into a pipe
  const std::string only = argc > 1 ? argv[1] : "";
  if (only == "profile" && argc == 3 && std::atoi(argv[2]) > 0) return profile(std::atoi(argv[2]));
  if (!only.empty() && only != "short" && only != "long") {
    std::fprintf(stderr, "usage: ssd [short|long|profile T]\n");
    return 2;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
  bool ok = true;
  if (only != "short") ok &= checks();
  if (only != "long") ok &= short_table();
  if (only != "short") ok &= long_table();
  std::printf("\n%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
