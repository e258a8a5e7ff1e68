// Runs the SSD backward kernels of src/ops/cuda/ssd_backward_kernels.cuh on the CPU (the execution model
// of cuda_on_cpu.h), in the order ssd_backward_launch.cuh launches them, and checks every gradient
// against the backward of the plain recurrence in double: partial chunks, one token, P and N over one
// tile and under it, groups, dt clamps, with and without state0 / dfinal / D, gradients not asked for,
// both dtypes; each case with a block's threads run first to last, then last to first (a missing
// barrier shows in one of the two). Inputs and gradients are column slices of wide rows, as the model
// passes them. Gradient outputs start as NaN (parameter gradients from random values, since they
// accumulate); the columns beside the gradients must stay NaN, and no kernel may touch shared memory
// past its launch's size.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/ssd_backward_host_check.cpp
//       -o build/dev-cuda/ssd_backward_host_check
//   build/dev-cuda/ssd_backward_host_check        (one line per case; exit 1 on a failure)
#include "check_util.h"
#include "cuda_on_cpu.h"

namespace ssm::ops::cuda::ssd_backward_kernels {
alignas(16) unsigned char smem[232448];
}

#define SSM_SSD_HOST_CHECK
#include "../../src/ops/cuda/ssd_backward_kernels.cuh"
#include "ssd_backward_reference.h"

namespace kernels = ssm::ops::cuda::ssd_backward_kernels;
using bf16 = __nv_bfloat16;

struct Case {
  int batch, T, H, P, G, N;
  bool with_D, with_state0, with_dfinal;
  int pad = 0;  // columns in front of the inputs' and the gradients' wide rows
  bool all_grads = true;  // false: no dB, dC, dstate0 and dA
  float dt_min = 0.0f, dt_max = INFINITY, dt_noise = 0.5f;
};

// The problem (ssd_reference::Problem) and the parameter gradients' starting values.
struct Problem : ssd_reference::Problem {
  std::vector<float> dA0, dD0, dbias0;
};

template <class T>
Problem make_problem(const Case& k, unsigned seed) {
  std::mt19937 gen(seed);
  NormalFill<T> fill{gen};
  Problem p;
  static_cast<ssd_reference::Problem&>(p) = {k.batch, k.T, k.H, k.P, k.G, k.N, k.dt_min, k.dt_max};
  ssd_reference::fill_random(p, fill, k.dt_noise, k.with_D, k.with_state0, k.with_dfinal);
  fill(p.dA0, k.H, 1.0f, 0.0f, false);
  fill(p.dD0, k.H, 1.0f, 0.0f, false);
  fill(p.dbias0, k.H, 1.0f, 0.0f, false);
  return p;
}

// The reference gradients, the parameter gradients' starting values added.
ssd_reference::Gradients reference(const Problem& p) {
  ssd_reference::Gradients r = ssd_reference::backward(p);
  for (size_t h = 0; h < r.dA.size(); ++h) {
    r.dA[h] += p.dA0[h];
    r.dD[h] += p.dD0[h];
    r.dbias[h] += p.dbias0[h];
  }
  return r;
}

template <class T>
bool run_case(const Case& k, unsigned seed) {
  const Problem p = make_problem<T>(k, seed);
  const ssd_reference::Gradients want = reference(p);
  const int HP = k.H * k.P, GN = k.G * k.N, rows = k.batch * k.T;
  const size_t states = size_t(k.batch) * k.H * k.P * k.N;

  // Inputs: [pad | x | B | C | dt | dy] in one row.
  const int pad = k.pad;
  const int in_width = pad + 2 * HP + 2 * GN + k.H;
  std::vector<T> inputs(size_t(rows) * in_width, T(NAN));
  const int x_at = pad, B_at = x_at + HP, C_at = B_at + GN, dt_at = C_at + GN, dy_at = dt_at + k.H;
  auto place = [&](const std::vector<float>& v, int at, int width) {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < width; ++c) inputs[size_t(r) * in_width + at + c] = T(v[size_t(r) * width + c]);
  };
  place(p.x, x_at, HP);
  place(p.B, B_at, GN);
  place(p.C, C_at, GN);
  place(p.dt, dt_at, k.H);
  place(p.dy, dy_at, HP);
  // Gradients: [pad + 2 | dx | dB | dC | ddt | 2] in one NaN row.
  const int out_pad = k.pad + 2, out_width = out_pad + HP + 2 * GN + k.H + 2;
  const int dx_at = out_pad, dB_at = dx_at + HP, dC_at = dB_at + GN, ddt_at = dC_at + GN;
  std::vector<T> outputs(size_t(rows) * out_width, T(NAN));
  std::vector<float> dA(p.dA0), dD(p.dD0), dbias(p.dbias0), dstate0(states, NAN);

  kernels::Args<T> a{inputs.data() + x_at, inputs.data() + dt_at, inputs.data() + B_at, inputs.data() + C_at,
                     nullptr, p.A.data(), p.dt_bias.data(), k.with_D ? p.D.data() : nullptr, in_width, in_width,
                     in_width, in_width, 0, k.batch, k.T, k.H, k.P, k.G, k.N, k.dt_min, k.dt_max};
  kernels::Grads<T> g{inputs.data() + dy_at,
                      in_width,
                      outputs.data() + dx_at,
                      outputs.data() + ddt_at,
                      k.all_grads ? outputs.data() + dB_at : nullptr,
                      k.all_grads ? outputs.data() + dC_at : nullptr,
                      out_width,
                      out_width,
                      out_width,
                      out_width,
                      k.all_grads ? dA.data() : nullptr,
                      dD.data(),
                      dbias.data(),
                      k.all_grads ? dstate0.data() : nullptr,
                      k.with_state0 ? p.state0.data() : nullptr,
                      k.with_dfinal ? p.dfinal.data() : nullptr};
  const kernels::Plan plan = kernels::make_plan(a, g);
  std::vector<float> scratch(plan.scratch_floats, NAN);
  const kernels::Scratch<T> s = kernels::carve_scratch(a, plan, scratch.data(), static_cast<T*>(nullptr));
  using kernels::kThreads;
  // Each kernel with its shared memory poisoned, and none of it touched past what the launch asks for.
  bool smem_ok = true;
  auto launch = [&](unsigned blocks, size_t smem_bytes, auto&& kernel) {
    poison_shared(kernels::smem);
    fibers::launch(blocks, kThreads, kernel);
    smem_ok &= shared_untouched_from(kernels::smem, smem_bytes);
  };
  launch(plan.values_blocks, kernels::chunk_values_smem(), [&] { kernels::chunk_values_kernel<T>(a, s); });
  // The launches of ssd_backward_launch.cuh, in order.
  const bool walks = plan.states || plan.dstates;
  const unsigned group_blocks = plan.dbc || !plan.head_tiles ? plan.group_blocks : 0;
  const unsigned sums_blocks = walks && plan.segments.count > 1 ? plan.walk_blocks : 0;
  if (group_blocks + sums_blocks > 0)
    launch(group_blocks + sums_blocks, kernels::group_and_sums_smem<T>(),
           [&] { kernels::group_and_sums_kernel<T>(a, g, s, plan.segments, group_blocks); });
  if (walks) {
    launch(plan.pass_blocks, 0, [&] { kernels::segment_pass_kernel<T>(a, g, s, plan.segments); });
    launch(plan.walk_blocks, kernels::state_walk_smem<T, true>(),
           [&] { kernels::state_walk_kernel<T>(a, g, s, plan.segments); });
  }
  const unsigned dbc_blocks = plan.dbc ? plan.dbc_blocks : 0;
  if (plan.head_tiles == 64)
    launch(dbc_blocks + plan.head_blocks, kernels::dbc_and_head_smem<T, 64>(),
           [&] { kernels::dbc_and_head_kernel<T, 64>(a, g, s, dbc_blocks); });
  else if (plan.head_tiles == 128)
    launch(dbc_blocks + plan.head_blocks, kernels::dbc_and_head_smem<T, 128>(),
           [&] { kernels::dbc_and_head_kernel<T, 128>(a, g, s, dbc_blocks); });
  else {
    launch(plan.head_blocks, kernels::head_smem(), [&] { kernels::head_kernel<T>(a, g, s); });
    if (dbc_blocks) launch(dbc_blocks, kernels::dbc_smem<T>(), [&] { kernels::dbc_kernel<T>(a, g, s); });
  }
  if (g.dA || g.dD || g.ddt_bias)
    launch(plan.param_blocks, kernels::param_smem(), [&] {
      kernels::param_kernel(a.heads, int64_t(a.batch) * plan.chunks, s.parts, g.dA, g.dD, g.ddt_bias);
    });

  auto column = [&](int at, int width) { return column_reader(outputs, out_width, at, width); };
  const double tol = sizeof(T) == 2 ? 3e-2 : 1e-4;
  bool ok = true;
  std::string report;
  auto check = [&](const char* name, const std::vector<double>& ref, auto&& at) {
    report_error(report, ok, name, rel_error(ref, at), tol);
  };
  check("dx", want.dx, column(dx_at, HP));
  check("ddt", want.ddt, column(ddt_at, k.H));
  check("dD", want.dD, vector_reader(dD));
  check("dbias", want.dbias, vector_reader(dbias));
  if (k.all_grads) {
    check("dB", want.dB, column(dB_at, GN));
    check("dC", want.dC, column(dC_at, GN));
    check("dA", want.dA, vector_reader(dA));
    check("dstate0", want.dstate0, vector_reader(dstate0));
  }
  if (!smem_ok) {
    report += " shared memory used past the launch's size (FAIL)";
    ok = false;
  }
  // Nothing written outside the gradients' columns (and dB, dC untouched when not asked for).
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < out_width; ++c) {
      const bool asked = (c >= dx_at && c < dx_at + HP) || (c >= ddt_at && c < ddt_at + k.H) ||
                         (k.all_grads && c >= dB_at && c < dC_at + GN);
      if (!asked && !std::isnan(float(outputs[size_t(r) * out_width + c]))) {
        if (ok) report += " wrote outside the gradients (FAIL)";
        ok = false;
        r = rows;
        break;
      }
    }
  std::printf("%-4s %s B %d T %4d H %d P %2d G %d N %3d D %d state0 %d dfinal %d pad %d all %d dt [%g, %g] |%s %s\n",
              sizeof(T) == 2 ? "bf16" : "f32", fibers::reverse_order ? "rev" : "fwd", k.batch, k.T, k.H, k.P, k.G, k.N, k.with_D, k.with_state0,
              k.with_dfinal, k.pad, k.all_grads, k.dt_min, k.dt_max, report.c_str(), ok ? "ok" : "FAIL");
  std::fflush(stdout);
  return ok;
}

int main() {
  std::vector<Case> cases = {
      {1, 64, 2, 64, 1, 128, true, false, false},   // one chunk: the intra-chunk products and D only
      {2, 70, 4, 24, 2, 16, true, true, true},      // groups, state0 and dfinal, a partial second chunk
      {1, 200, 2, 64, 1, 128, false, true, false},  // the benchmark's head shape, four chunks
      {1, 37, 2, 80, 1, 72, true, false, true},     // T < chunk; two tiles of P and of N, partial
      {1, 1, 2, 8, 1, 8, true, true, true},         // one token
      {2, 130, 4, 16, 2, 32, true, false, false},   // no state at either end, three chunks
  };
  Case padded{2, 90, 4, 24, 2, 16, true, true, true};
  padded.pad = 3;
  cases.push_back(padded);
  cases.push_back({1, 2100, 2, 32, 1, 64, true, true, true});  // 33 chunks: 9 segments, the last of one chunk
  Case segments{2, 700, 3, 5, 1, 13, true, true, true};  // 11 chunks, 3 segments: element stores of the states
  segments.pad = 1;
  cases.push_back(segments);
  Case odd{1, 100, 2, 5, 1, 13, true, true, true};  // odd P and N: element loads of states and rows
  odd.pad = 1;
  cases.push_back(odd);
  Case wide{2, 80, 4, 64, 2, 128, true, true, true};  // the benchmark's head shape from misaligned rows
  wide.pad = 3;
  cases.push_back(wide);
  Case clamped{2, 100, 2, 16, 1, 32, false, true, true};
  clamped.dt_min = 0.02f;
  clamped.dt_max = 0.1f;
  clamped.dt_noise = 2.0f;
  cases.push_back(clamped);
  Case fewer{2, 70, 4, 16, 2, 16, true, true, false};
  fewer.all_grads = false;
  cases.push_back(fewer);
  return run_cases_both_orders(cases, run_case<float>, run_case<bf16>);
}
