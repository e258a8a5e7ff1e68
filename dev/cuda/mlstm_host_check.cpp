// Runs the mLSTM kernels of src/ops/cuda/mlstm_kernels.cuh on the CPU, for machines without a GPU (the
// execution model of cuda_on_cpu.h: fibers for threads, emulated barriers and shuffles), and checks them
// against the plain recurrence in double: the chunked forward (chunk states, then outputs, and every token's q̂·n_t and
// m_t, which the backward reads) in segments as
// mlstm.cu cuts them, from zeros and from a given state, then steps from the state it left; heads wider
// than a tile, partial chunks, several segments, both dtypes of q, k, v. Not timing, not races (fibers
// switch only at barriers), not the hardware.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/mlstm_host_check.cpp -o build/dev-cuda/mlstm_host_check
//   build/dev-cuda/mlstm_host_check        (prints one line per case; exit 1 on a failure)
#include "check_util.h"
#include "cuda_on_cpu.h"

// Shared memory: one block runs at a time, so a block's __shared__ arrays can be statics.
#undef __shared__
#define __shared__ static
#include "../../src/ops/cuda/mlstm_kernels.cuh"
#include "mlstm_reference.h"

namespace kernels = ssm::ops::cuda::mlstm_kernels;
using bf16 = __nv_bfloat16;

// Tokens [t0, t0 + count) through the kernels: the chunked forward (segments as mlstm.cu cuts them) or,
// for a step, the step's two kernels. h is filled with NaN first, so an element left unwritten fails.
template <class T>
struct Run {
  const Case& k;
  int tokens;
  const Inputs& in;
  std::vector<float> C, n, m;  // the state, advanced in place
  std::vector<float> dots, ms;  // the last forward's q̂·n_t and m_t, [B·H, count]

  std::vector<float> call(int t0, int count, bool step) {
    const std::vector<T> q = sequence_rows<T>(in.q, k.batch, tokens, t0, count, k.H * k.dk),
                         kk = sequence_rows<T>(in.k, k.batch, tokens, t0, count, k.H * k.dk),
                         v = sequence_rows<T>(in.v, k.batch, tokens, t0, count, k.H * k.dv);
    const std::vector<float> i = sequence_rows<float>(in.i, k.batch, tokens, t0, count, k.H),
                             f = sequence_rows<float>(in.f, k.batch, tokens, t0, count, k.H);
    std::vector<float> h(size_t(k.batch) * count * k.H * k.dv, NAN);
    dots.assign(size_t(k.batch) * k.H * count, NAN);
    ms.assign(dots.size(), NAN);
    const kernels::Args<T> a{{q.data(), k.H * k.dk},
                             {kk.data(), k.H * k.dk},
                             {v.data(), k.H * k.dv},
                             {i.data(), k.H},
                             {f.data(), k.H},
                             {h.data(), k.H * k.dv},
                             step ? 1 : count,
                             k.H,
                             k.dk,
                             k.dv,
                             1e-6f,
                             1.0f / std::sqrt(float(k.dk)),
                             step ? nullptr : dots.data(),
                             step ? nullptr : ms.data()};
    const kernels::State state{C.data(), n.data(), m.data()};
    const unsigned heads = unsigned(k.batch * k.H);
    if (step) {
      const int splits = (k.dk + kernels::kStepRows - 1) / kernels::kStepRows;
      std::vector<float> partial_h(size_t(heads) * splits * k.dv, NAN), partial_dot(size_t(heads) * splits, NAN);
      fibers::launch(Dim3{unsigned(splits), heads, 1}, kernels::kStepThreads,
                     [&] { kernels::step_rows_kernel<T>(a, state, partial_h.data(), partial_dot.data()); });
      fibers::launch(heads, kernels::kStepThreads, [&] {
        kernels::step_finish_kernel<T>(a, m.data(), partial_h.data(), partial_dot.data(), splits);
      });
      return h;
    }
    const kernels::Plan p = kernels::plan_of(k.batch, k.H, count, k.dk, k.dv, k.chunk, k.state_budget);
    std::vector<float> Cs(size_t(heads) * p.per_segment * k.dk * k.dv), ns(size_t(heads) * p.per_segment * k.dk),
        ms(size_t(heads) * (p.per_segment + 1));
    for (int64_t first = 0; first < p.chunks; first += p.per_segment) {
      const int chunks = int(std::min(p.per_segment, p.chunks - first));
      const kernels::ChunkStates out{Cs.data(), ns.data(), ms.data(), chunks};
      const int64_t t_begin = first * p.L;
      fibers::launch(Dim3{unsigned(p.row_tiles * p.col_tiles), heads, 1}, kernels::kThreads,
                     [&] { kernels::chunk_states_kernel<T>(a, state, out, t_begin, p.L, p.col_tiles); });
      fibers::launch(Dim3{unsigned(p.col_tiles), unsigned(chunks), heads}, kernels::kThreads,
                     [&] { kernels::chunk_outputs_kernel<T>(a, out, m.data(), t_begin, p.L); });
    }
    return h;
  }
};

template <class T>
bool run_case(const Case& k, bool from_zeros, unsigned seed) {
  const int tokens = k.T + k.steps;
  const Inputs in = make_inputs<T>(k, tokens, seed);
  std::vector<double> C(in.C0.begin(), in.C0.end()), n(in.n0.begin(), in.n0.end()), m(in.m0.begin(), in.m0.end());
  if (from_zeros) {
    std::fill(C.begin(), C.end(), 0.0);
    std::fill(n.begin(), n.end(), 0.0);
    std::fill(m.begin(), m.end(), 0.0);
  }
  Run<T> run{k,
             tokens,
             in,
             std::vector<float>(C.begin(), C.end()),
             std::vector<float>(n.begin(), n.end()),
             std::vector<float>(m.begin(), m.end())};
  std::vector<double> h_want, dots(size_t(k.batch) * k.H * tokens), ms(dots.size());
  reference(k, tokens, in, h_want, C, n, m, &dots, &ms);
  // F32 arithmetic against double (q, k, v the same rounded values on both sides): the cases land
  // below 2e-5; a wrong index or a missed element lands near 1.
  const double tol = 1e-4;
  bool ok = true;
  std::string report;
  const std::vector<float> h = run.call(0, k.T, false);
  report_error(report, ok, "forward h",
               rel_error(h, sequence_rows<double>(h_want, k.batch, tokens, 0, k.T, k.H * k.dv)), tol);
  // What the backward starts from (ops/cuda/mlstm_backward.cu): every token's q̂·n_t and m_t.
  report_error(report, ok, "q̂·n", rel_error(run.dots, sequence_rows<double>(dots, k.batch * k.H, tokens, 0, k.T, 1)),
               tol);
  report_error(report, ok, "m_t", rel_error(run.ms, sequence_rows<double>(ms, k.batch * k.H, tokens, 0, k.T, 1)), tol);
  for (int t = k.T; t < tokens; ++t) {
    report_error(report, ok, "step h",
                 rel_error(run.call(t, 1, true), sequence_rows<double>(h_want, k.batch, tokens, t, 1, k.H * k.dv)),
                 tol);
  }
  report_error(report, ok, "C", rel_error(run.C, C), tol);
  report_error(report, ok, "n", rel_error(run.n, n), tol);
  report_error(report, ok, "m", rel_error(run.m, m), tol);
  std::printf("%-4s B %d T %3d H %d dk %3d dv %3d chunk %3d %s:%s\n", sizeof(T) == 2 ? "bf16" : "f32", k.batch, k.T,
              k.H, k.dk, k.dv, k.chunk, from_zeros ? "zeros" : "state", report.c_str());
  return ok;
}

int main() {
  const int64_t any = int64_t(1) << 40;
  const Case cases[] = {
      {2, 37, 3, 16, 32, 16, any, 2},                    // the tiny fixture's heads, a partial last chunk
      {1, 70, 2, 80, 72, 64, any, 2},                    // two tiles of C both ways, three slabs of dk
      {3, 5, 2, 8, 8, 64, any, 1},                       // shorter than a chunk
      {2, 40, 1, 16, 16, 4, 2 * 16 * 16 * 4 * 3, 1},     // segments of 3 chunks of 4
      {1, 30, 2, 24, 40, 128, any, 1},                   // chunk 128: the kernels' 64
      {1, 9, 2, 40, 24, 1, 1 * 2 * 40 * 24 * 4 * 2, 2},  // one-token chunks, segments of 2
  };
  bool ok = true;
  unsigned seed = 1;
  for (const Case& k : cases) {
    for (bool from_zeros : {true, false}) {
      fibers::reverse_order = !from_zeros;  // both orders of a block's threads (cuda_on_cpu.h)
      ok &= run_case<float>(k, from_zeros, seed++);
      ok &= run_case<bf16>(k, from_zeros, seed++);
    }
  }
  fibers::reverse_order = false;
  std::printf("%s\n", ok ? "all cases passed" : "SOME CASES FAILED");
  return ok ? 0 : 1;
}
