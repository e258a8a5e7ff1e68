// Runs the SSD kernels of src/ops/cuda/ssd_kernels.cuh on the CPU, for machines without a GPU (the
// execution model of cuda_on_cpu.h: fibers for threads, emulated barriers, shuffles and PTX), and checks
// the results against the plain recurrence in double. It checks the kernels' indexing, masking, staging
// and plans (many segment/piece cuts, pass 2's slices of rows, partial chunks, padded P and N, both
// dtypes), and that a plan with slices gives the whole-head plan's results bit for bit; not timing, not
// races (fibers switch only at barriers), not the hardware's reading of the PTX.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/ssd_host_check.cpp -o build/dev-cuda/ssd_host_check
//   build/dev-cuda/ssd_host_check        (prints one line per case; exit 1 on a failure)
#include "check_util.h"
#include "cuda_on_cpu.h"

// The kernels' dynamic shared memory: one block runs at a time.
namespace ssm::ops::cuda::ssd_kernels {
alignas(16) unsigned char smem[232448];
}  // namespace ssm::ops::cuda::ssd_kernels

#define SSM_SSD_HOST_CHECK
#include "../../src/ops/cuda/ssd_kernels.cuh"

namespace kernels = ssm::ops::cuda::ssd_kernels;
using bf16 = __nv_bfloat16;

// ---- cases ----

struct Case {
  int batch, T, H, P, G, N;
  bool with_D, with_state;
  int segments_wanted, pieces_wanted;  // through make_plan's resident counts
  int scan_room = 1;  // pass 2's resident blocks: heads * segments_wanted * scan_room (room for slices)
};

struct Inputs {
  std::vector<float> x, dt, B, C, dt_bias, A, D, state0;
};

template <class T>
Inputs make_inputs(const Case& k, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> uniform(0.0f, std::log(16.0f));
  NormalFill<T> fill{gen};
  Inputs in;
  const size_t rows = size_t(k.batch) * k.T;
  fill(in.x, rows * k.H * k.P, 1.0f, 0.0f, true);
  fill(in.dt, rows * k.H, 0.5f, 0.0f, true);
  fill(in.B, rows * k.G * k.N, 0.5f, 0.0f, true);
  fill(in.C, rows * k.G * k.N, 0.5f, 0.0f, true);
  fill(in.dt_bias, k.H, 0.3f, -3.0f, false);
  in.A.resize(k.H);
  for (float& a : in.A) a = -std::exp(uniform(gen));
  if (k.with_D) fill(in.D, k.H, 1.0f, 0.0f, false);
  fill(in.state0, size_t(k.batch) * k.H * k.P * k.N, 0.5f, 0.0f, false);
  if (!k.with_state) std::fill(in.state0.begin(), in.state0.end(), 0.0f);
  return in;
}

void reference(const Case& k, const Inputs& in, std::vector<double>& y, std::vector<double>& state) {
  y.assign(size_t(k.batch) * k.T * k.H * k.P, 0.0);
  state.assign(in.state0.begin(), in.state0.end());
  for (int b = 0; b < k.batch; ++b)
    for (int h = 0; h < k.H; ++h) {
      const int g = h / (k.H / k.G);
      double* S = &state[(size_t(b) * k.H + h) * k.P * k.N];
      for (int t = 0; t < k.T; ++t) {
        const size_t row = size_t(b) * k.T + t;
        const double v = double(in.dt[row * k.H + h]) + in.dt_bias[h];
        const double dt = v > 20.0 ? v : std::log1p(std::exp(v));
        const double decay = std::exp(dt * in.A[h]);
        for (int p = 0; p < k.P; ++p) {
          const double xv = in.x[row * k.H * k.P + size_t(h) * k.P + p];
          double acc = 0.0;
          for (int n = 0; n < k.N; ++n) {
            double& s = S[size_t(p) * k.N + n];
            s = decay * s + dt * xv * in.B[(row * k.G + g) * k.N + n];
            acc += s * in.C[(row * k.G + g) * k.N + n];
          }
          y[row * k.H * k.P + size_t(h) * k.P + p] = acc + (k.with_D ? in.D[h] * xv : 0.0);
        }
      }
    }
}

template <class T>
std::vector<T> converted(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = T(v[i]);
  return out;
}

enum class Algorithm { recurrent, chunked };
const char* name(Algorithm al) { return al == Algorithm::recurrent ? "recurrent" : "chunked"; }

// The chunked forward's three kernels (ssd_launch.cuh's order and choice), each block's shared memory poisoned
// first; false when a kernel used more shared memory than its *_smem says (the GPU would have refused
// the launch).
template <class T, int kN, int kRows>
void launch_chunk_scan(const kernels::Args<T>& a, const kernels::Plan& plan, float* state,
                       const kernels::Scratch<T>& s) {
  fibers::launch(unsigned(a.batch * a.heads * plan.segments * plan.slices), kernels::kThreads, [&] {
    kernels::chunk_scan_kernel<T, kN, kRows>(a, plan, state, s.slots, s.log_decays, s.scans, s.cb, nullptr);
  });
}
template <class T, int kN>
bool launch_chunked(const kernels::Args<T>& a, const kernels::Plan& plan, float* state, std::vector<float>& scratch) {
  const int64_t heads = int64_t(a.batch) * a.heads;
  const kernels::Scratch<T> s = kernels::scratch_parts(scratch.data(), a, plan);
  bool ok = true;
  if (plan.chunks > 1) {  // one chunk: pass 2 makes its own scans and C Bᵀ (the scratch stays NaN)
    poison_shared(kernels::smem);
    fibers::launch(unsigned(a.batch * plan.chunks), kernels::kThreads,
                   [&] { kernels::chunk_prep_kernel<T, kN>(a, plan.chunks, s.scans, s.cb); });
    ok &= shared_untouched_from(kernels::smem, kernels::prep_smem<T, kN>());
  }
  if (plan.segments > 1) {
    poison_shared(kernels::smem);
    fibers::launch(unsigned(heads * plan.pieces()), kernels::kThreads, [&] {
      kernels::piece_state_kernel<T, kN>(a, plan, state, s.slots, s.log_decays, s.scans);
    });
    ok &= shared_untouched_from(kernels::smem, kernels::piece_state_smem<T, kN>());
  }
  poison_shared(kernels::smem);
  switch (plan.slice_rows) {
    case 16: launch_chunk_scan<T, kN, 16>(a, plan, state, s); break;
    case 32: launch_chunk_scan<T, kN, 32>(a, plan, state, s); break;
    default: launch_chunk_scan<T, kN, kernels::kHeadDimTile>(a, plan, state, s);
  }
  ok &= shared_untouched_from(kernels::smem, kernels::chunk_scan_smem<T, kN>());
  if (!ok) std::printf("the chunked kernels used more shared memory than they ask for\n");
  return ok;
}

// One run of a forward on fresh outputs (y NaN, the state from state0): y, and the state.
template <class T>
struct Run {
  std::vector<T> y;
  std::vector<float> state;
  bool fits = true;  // the chunked kernels kept to their shared memory
};

template <class T>
Run<T> run_forward(const Case& k, const Inputs& in, Algorithm al, const kernels::Plan& plan) {
  const bool chunked = al != Algorithm::recurrent;
  std::vector<T> x = converted<T>(in.x), dt = converted<T>(in.dt), B = converted<T>(in.B), C = converted<T>(in.C);
  Run<T> r{std::vector<T>(size_t(k.batch) * k.T * k.H * k.P, T(NAN)), in.state0};
  kernels::Args<T> a{x.data(), dt.data(), B.data(), C.data(), r.y.data(), in.A.data(), in.dt_bias.data(),
                     k.with_D ? in.D.data() : nullptr, int64_t(k.H) * k.P, k.H, int64_t(k.G) * k.N,
                     int64_t(k.G) * k.N, int64_t(k.H) * k.P, k.batch, k.T, k.H, k.P, k.G, k.N, 0.0f, INFINITY};
  float* const state_ptr = k.with_state || !chunked ? r.state.data() : nullptr;
  if (chunked) {
    std::vector<float> scratch(kernels::chunked_scratch_floats(a, plan), NAN);
    r.fits = plan.state_tile == 64 ? launch_chunked<T, 64>(a, plan, state_ptr, scratch)
                                   : launch_chunked<T, 128>(a, plan, state_ptr, scratch);
  } else {
    const int64_t threads = int64_t(k.batch) * k.H * k.P * 32;
    fibers::launch(unsigned((threads + 255) / 256), 256, [&] { kernels::recurrent_kernel<T>(a, state_ptr); });
  }
  return r;
}

template <class T>
bool run_case(const Case& k, Algorithm al, unsigned seed) {
  const bool chunked = al != Algorithm::recurrent;
  const Inputs in = make_inputs<T>(k, seed);
  std::vector<double> want_y, want_state;
  reference(k, in, want_y, want_state);

  kernels::Plan plan{};
  if (chunked) {
    const int64_t heads = int64_t(k.batch) * k.H;
    plan = kernels::make_plan(k.T, k.P, k.N, heads, heads * k.segments_wanted * k.scan_room,
                              heads * std::max(1, k.segments_wanted - 1) * k.pieces_wanted);
  }
  const Run<T> got = run_forward<T>(k, in, al, plan);
  if (!got.fits) return false;
  std::vector<float> got_y(got.y.size());
  for (size_t i = 0; i < got.y.size(); ++i) got_y[i] = float(got.y[i]);
  const double ey = rel_error(got_y, want_y);
  const bool state_checked = k.with_state || !chunked;
  const double es = state_checked ? rel_error(got.state, want_state) : 0.0;
  const double tol = sizeof(T) == 2 ? 2e-2 : 1e-5;
  bool ok = ey < tol && es < tol;
  // Slices of rows: the same bits as whole-head blocks (y and the state, every element).
  const char* same = "";
  if (chunked && plan.slice_rows != kernels::kHeadDimTile) {
    kernels::Plan whole = plan;
    kernels::set_slice_rows(whole, k.P, kernels::kHeadDimTile);
    const Run<T> want = run_forward<T>(k, in, al, whole);
    const bool equal = want.fits && std::memcmp(got.y.data(), want.y.data(), got.y.size() * sizeof(T)) == 0 &&
                       std::memcmp(got.state.data(), want.state.data(), got.state.size() * sizeof(float)) == 0;
    same = equal ? " | = whole heads" : " | NOT the whole heads' bits";
    ok &= equal;
  }
  std::printf("%-9s %-4s order %d B %d T %4d H %d P %2d G %d N %3d D %d state %d | segments %d x %d chunks, pieces %d x %d"
              ", rows %2d x %d | y %.2e state %.2e%s %s\n",
              name(al), sizeof(T) == 2 ? "bf16" : "f32", int(fibers::reverse_order), k.batch, k.T, k.H, k.P, k.G, k.N,
              k.with_D, k.with_state, plan.segments, plan.chunks_per_segment, plan.pieces_per_segment,
              plan.chunks_per_piece, plan.slice_rows, plan.slices, ey, es, same, ok ? "ok" : "FAIL");
  std::fflush(stdout);
  return ok;
}

// make_plan at the engine's shapes with an H200's resident blocks (132 multiprocessors; BF16 pass 2 two
// a multiprocessor, F32 one): slices only where the segments leave the wave under-filled.
bool plans_are_as_meant() {
  struct Want {
    int batch, T, H, P;
    int64_t scan_resident;
    int segments, slice_rows, slices;
  };
  const Want wants[] = {
      {1, 16, 24, 64, 264, 1, 16, 4},      // mamba2-130m's 16-token suffix, BF16: 96 blocks
      {1, 64, 24, 64, 132, 1, 16, 4},      // F32: 96 blocks
      {1, 16, 48, 64, 132, 1, 32, 2},      // F32, 48 heads: 96 blocks (4 slices would be 192)
      {8, 16, 24, 64, 264, 1, 64, 1},      // 8 sequences: 192 blocks already, 384 would not fit
      {1, 16, 24, 16, 264, 1, 64, 1},      // P 16: slices would add no blocks
      {1, 2048, 24, 64, 264, 11, 64, 1},   // a 2048-token chunk: the segments fill the GPU
      {1, 4096, 32, 64, 264, 8, 64, 1},    // the timed lengths, H 32: unchanged
      {1, 102400, 32, 64, 264, 8, 64, 1},
  };
  bool ok = true;
  for (const Want& w : wants) {
    const int64_t heads = int64_t(w.batch) * w.H;
    const kernels::Plan plan = kernels::make_plan(w.T, w.P, 128, heads, w.scan_resident, w.scan_resident);
    const bool as_meant = plan.segments == w.segments && plan.slice_rows == w.slice_rows && plan.slices == w.slices;
    std::printf("plan B %d T %6d H %d P %d, %3d resident: %2d segments, rows %2d x %d %s\n", w.batch, w.T, w.H, w.P,
                int(w.scan_resident), plan.segments, plan.slice_rows, plan.slices, as_meant ? "ok" : "FAIL");
    ok &= as_meant;
  }
  return ok;
}

int main() {
  const Case cases[] = {
      {1, 64, 2, 64, 1, 128, true, false, 1, 1},    // one chunk: C Bᵀ ⊙ L and D only
      {1, 64, 2, 64, 1, 128, false, true, 1, 1},    // + C Sᵀ and the state update
      {1, 200, 2, 64, 1, 128, true, true, 1, 1},    // one segment, partial last chunk
      {2, 200, 2, 64, 2, 128, true, true, 2, 1},    // two segments, two groups
      {1, 330, 2, 24, 1, 16, true, true, 3, 2},     // padded P and N (tile 64), pieces
      {1, 330, 4, 32, 2, 64, false, false, 2, 3},   // no initial state, several segments and pieces
      {1, 1, 2, 64, 1, 128, true, true, 4, 1},      // one token
      {1, 65, 2, 16, 1, 32, true, true, 2, 1},      // a chunk and one token
      {2, 37, 4, 64, 2, 128, true, true, 2, 1},     // T < chunk, batch 2, two groups
      {2, 1100, 4, 64, 2, 128, true, true, 2, 1},   // pieces of 9 chunks: pass 1's four stages wrap
      {2, 1100, 4, 64, 1, 128, false, true, 4, 3},  // 4 segments x 5 chunks, pieces of 2 and 1 chunks
      {1, 700, 6, 64, 2, 128, true, false, 3, 2},   // no initial state, 3 segments, 6 heads in 2 groups
      {2, 450, 4, 32, 2, 64, true, true, 3, 1},     // tile 64 with several segments, batch 2
      {1, 2100, 2, 64, 1, 128, true, true, 8, 1},   // the timed shapes' 8 segments (of 5 chunks)
      // Pass 2 in slices of rows (room for more blocks than heads * segments), each against whole heads:
      {1, 16, 3, 64, 1, 128, true, true, 1, 1, 4},   // a prefix-cache hit's suffix: 4 slices of 16 rows
      {1, 48, 2, 64, 1, 128, false, true, 1, 1, 2},  // 2 slices of 32 rows
      {2, 64, 2, 40, 2, 64, true, true, 1, 1, 4},    // P 40: 3 slices of 16, the last one half padding
      {1, 33, 2, 24, 1, 16, true, false, 1, 1, 4},   // P 24: 2 slices of 16, no state
      {1, 200, 2, 64, 1, 128, true, true, 2, 1, 4},  // 4 segments of 1 chunk (states composed), 2 slices
      {3, 130, 2, 64, 2, 128, false, true, 1, 1, 8}, // 3 segments, 2 slices, batch 3, two groups
  };
  bool ok = plans_are_as_meant();
  unsigned seed = 1;
  for (const Case& k : cases) {
    for (bool reverse : {false, true}) {  // both orders of a block's threads (see fibers::reverse_order)
      fibers::reverse_order = reverse;
      ok &= run_case<float>(k, Algorithm::chunked, seed);
      ok &= run_case<bf16>(k, Algorithm::chunked, seed + 1);
    }
    fibers::reverse_order = false;
    seed += 2;
  }
  const Case recurrent[] = {{2, 20, 2, 5, 2, 12, true, true, 1, 1}, {1, 9, 2, 64, 1, 128, false, true, 1, 1}};
  for (const Case& k : recurrent) {
    ok &= run_case<float>(k, Algorithm::recurrent, seed++);
    ok &= run_case<bf16>(k, Algorithm::recurrent, seed++);
  }
  std::printf("%s\n", ok ? "all cases passed" : "SOME CASES FAILED");
  return ok ? 0 : 1;
}
