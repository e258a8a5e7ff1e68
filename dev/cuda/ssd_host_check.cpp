// Runs the SSD kernels of src/ops/cuda/ssd_kernels.cuh on the CPU, for machines without a GPU (the
// execution model of cuda_on_cpu.h: fibers for threads, emulated barriers, shuffles and PTX), and checks
// the results against the plain recurrence in double. It checks the kernels' indexing, masking, staging
// and plans (many segment/piece cuts, partial chunks, padded P and N, both dtypes); not timing, not
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

// The chunked forward's three kernels (ssd_launch.cuh's order), each block's shared memory poisoned
// first; false when a kernel used more shared memory than its *_smem says (the GPU would have refused
// the launch).
template <class T, int kN>
bool launch_chunked(const kernels::Args<T>& a, const kernels::Plan& plan, float* state, std::vector<float>& scratch) {
  const int64_t heads = int64_t(a.batch) * a.heads;
  const kernels::Scratch<T> s = kernels::scratch_parts(scratch.data(), a, plan);
  bool ok = true;
  poison_shared(kernels::smem);
  fibers::launch(unsigned(a.batch * plan.chunks), kernels::kThreads,
                 [&] { kernels::chunk_prep_kernel<T, kN>(a, plan.chunks, s.scans, s.cb); });
  ok &= shared_untouched_from(kernels::smem, kernels::prep_smem<T, kN>());
  if (plan.segments > 1) {
    poison_shared(kernels::smem);
    fibers::launch(unsigned(heads * plan.pieces()), kernels::kThreads, [&] {
      kernels::piece_state_kernel<T, kN>(a, plan, state, s.slots, s.log_decays, s.scans);
    });
    ok &= shared_untouched_from(kernels::smem, kernels::piece_state_smem<T, kN>());
  }
  poison_shared(kernels::smem);
  fibers::launch(unsigned(heads * plan.segments), kernels::kThreads, [&] {
    kernels::chunk_scan_kernel<T, kN>(a, plan, state, s.slots, s.log_decays, s.scans, s.cb);
  });
  ok &= shared_untouched_from(kernels::smem, kernels::chunk_scan_smem<T, kN>());
  if (!ok) std::printf("the chunked kernels used more shared memory than they ask for\n");
  return ok;
}

template <class T>
bool run_case(const Case& k, Algorithm al, unsigned seed) {
  const bool chunked = al != Algorithm::recurrent;
  const Inputs in = make_inputs<T>(k, seed);
  std::vector<double> want_y, want_state;
  reference(k, in, want_y, want_state);

  std::vector<T> x = converted<T>(in.x), dt = converted<T>(in.dt), B = converted<T>(in.B), C = converted<T>(in.C);
  std::vector<T> y(want_y.size(), T(NAN));
  std::vector<float> state = in.state0;
  kernels::Args<T> a{x.data(), dt.data(), B.data(), C.data(), y.data(), in.A.data(), in.dt_bias.data(),
                     k.with_D ? in.D.data() : nullptr, int64_t(k.H) * k.P, k.H, int64_t(k.G) * k.N,
                     int64_t(k.G) * k.N, int64_t(k.H) * k.P, k.batch, k.T, k.H, k.P, k.G, k.N, 0.0f, INFINITY};
  float* const state_ptr = k.with_state || !chunked ? state.data() : nullptr;
  kernels::Plan plan{};
  if (chunked) {
    const int64_t heads = int64_t(k.batch) * k.H;
    plan = kernels::make_plan(k.T, k.N, heads, heads * k.segments_wanted,
                              heads * std::max(1, k.segments_wanted - 1) * k.pieces_wanted);
    std::vector<float> scratch(kernels::chunked_scratch_floats(a, plan), NAN);
    const bool fits = plan.state_tile == 64 ? launch_chunked<T, 64>(a, plan, state_ptr, scratch)
                                            : launch_chunked<T, 128>(a, plan, state_ptr, scratch);
    if (!fits) return false;
  } else {
    const int64_t threads = int64_t(k.batch) * k.H * k.P * 32;
    fibers::launch(unsigned((threads + 255) / 256), 256, [&] { kernels::recurrent_kernel<T>(a, state_ptr); });
  }
  std::vector<float> got_y(y.size());
  for (size_t i = 0; i < y.size(); ++i) got_y[i] = float(y[i]);
  const double ey = rel_error(got_y, want_y);
  const bool state_checked = k.with_state || !chunked;
  const double es = state_checked ? rel_error(state, want_state) : 0.0;
  const double tol = sizeof(T) == 2 ? 2e-2 : 1e-5;
  const bool ok = ey < tol && es < tol;
  std::printf("%-9s %-4s order %d B %d T %4d H %d P %2d G %d N %3d D %d state %d | segments %d x %d chunks, pieces %d x %d"
              " | y %.2e state %.2e %s\n",
              name(al), sizeof(T) == 2 ? "bf16" : "f32", int(fibers::reverse_order), k.batch, k.T, k.H, k.P, k.G, k.N,
              k.with_D, k.with_state, plan.segments, plan.chunks_per_segment, plan.pieces_per_segment,
              plan.chunks_per_piece, ey, es, ok ? "ok" : "FAIL");
  std::fflush(stdout);
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
  };
  bool ok = true;
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
