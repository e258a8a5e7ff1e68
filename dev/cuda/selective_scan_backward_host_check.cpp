// Runs the Mamba-1 selective-scan backward kernels of src/ops/cuda/selective_scan_backward_kernels.cuh on
// the CPU (the execution model of cuda_on_cpu.h), in the order selective_scan_backward.cu launches them,
// and checks every gradient against the backward of the plain recurrence in double, with the chunk
// states taken from the double forward: one chunk and many, partial last chunks, chunks of one token,
// every compiled state width (N 4 to 64, padded), channel counts over one block and partial groups,
// every optional input, gradients not asked for, both dtypes. Inputs and gradients are column slices
// of wide rows; gradients start as NaN (parameter gradients from random values, since they accumulate)
// and the columns beside them must stay NaN.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/selective_scan_backward_host_check.cpp
//       -o build/dev-cuda/selective_scan_backward_host_check
//   build/dev-cuda/selective_scan_backward_host_check        (one line per case; exit 1 on a failure)
#include <string>

#include "check_util.h"
#include "cuda_on_cpu.h"

// The scan's math (selective_scan_math.cuh), accurate, on the CPU.
namespace ssm::ops::cuda {
constexpr float kLog2e = 1.4426950408889634f;
float poly_exp2(float x) { return std::exp2(x); }
template <class Act>
float decay(float x) {
  return std::exp2(x);
}
template <class Act>
float dt_softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}
template <class Act>
float sigmoid_of(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}
template <class Act>
float softplus_grad_from_value(float dt) {
  return -std::expm1(-dt);
}
}  // namespace ssm::ops::cuda

namespace ssm::ops::cuda::scan_backward_kernels {
alignas(16) float smem[232448 / sizeof(float)];
}

#define SSM_SCAN_BACKWARD_HOST_CHECK
#include "../../src/ops/cuda/selective_scan_backward_kernels.cuh"

namespace kernels = ssm::ops::cuda::scan_backward_kernels;
using bf16 = __nv_bfloat16;

struct Case {
  int batch, T, D, N, chunk;
  bool bias, softplus, skip, gate, state;
  bool all_grads = true;  // false: only du, dB and dA
};

// The problem in F32 (activations already rounded to the dtype) and the reference gradients in double.
struct Problem {
  std::vector<float> u, delta, z, dy, B, C, A, bias, skip, state0, dA0, dD0, dbias0;
};
struct Reference {
  std::vector<double> du, ddelta, dz, dB, dC, dA, dD, dbias, dstate0;
  std::vector<float> chunk_states;  // [batch, chunks, D, N] of the double forward
};

template <class T>
Problem make_problem(const Case& k, unsigned seed) {
  std::mt19937 gen(seed);
  auto fill = [&](std::vector<float>& v, size_t n, float lo, float hi, bool activation) {
    std::uniform_real_distribution<float> dist(lo, hi);
    v.resize(n);
    for (float& e : v) e = activation ? round_to<T>(dist(gen)) : dist(gen);
  };
  Problem p;
  const size_t btd = size_t(k.batch) * k.T * k.D, btn = size_t(k.batch) * k.T * k.N;
  fill(p.u, btd, -2, 2, true);
  if (k.softplus) fill(p.delta, btd, -4, 1, true);
  else fill(p.delta, btd, 0.01f, 0.5f, true);
  fill(p.z, btd, -2, 2, true);
  fill(p.dy, btd, -1, 1, true);
  fill(p.B, btn, -1, 1, true);
  fill(p.C, btn, -1, 1, true);
  fill(p.A, size_t(k.D) * k.N, -8, -0.5f, false);
  fill(p.bias, k.D, 0, 0.5f, false);
  fill(p.skip, k.D, -1, 1, false);
  fill(p.state0, size_t(k.batch) * k.D * k.N, -1, 1, false);
  fill(p.dA0, size_t(k.D) * k.N, -1, 1, false);
  fill(p.dD0, k.D, -1, 1, false);
  fill(p.dbias0, k.D, -1, 1, false);
  return p;
}

// The recurrence and its backward, per (row, channel), every state kept; parameter gradients start
// from the problem's starting values.
Reference reference(const Case& k, const Problem& p) {
  const int N = k.N, D = k.D, T = k.T;
  const int chunks = std::max(1, (T + k.chunk - 1) / k.chunk);
  Reference r;
  const size_t btd = size_t(k.batch) * T * D, btn = size_t(k.batch) * T * N;
  r.du.assign(btd, 0), r.ddelta.assign(btd, 0), r.dz.assign(btd, 0), r.dB.assign(btn, 0), r.dC.assign(btn, 0);
  r.dA.assign(p.dA0.begin(), p.dA0.end());
  r.dD.assign(p.dD0.begin(), p.dD0.end());
  r.dbias.assign(p.dbias0.begin(), p.dbias0.end());
  r.dstate0.assign(size_t(k.batch) * D * N, 0);
  r.chunk_states.assign(size_t(k.batch) * chunks * D * N, 0);
  std::vector<double> h(size_t(T + 1) * N), dt(T), raw(T), y(T), adj(N);
  for (int b = 0; b < k.batch; ++b)
    for (int d = 0; d < D; ++d) {
      auto at = [&](int t) { return (size_t(b) * T + t) * D + d; };
      auto bn = [&](int t, int n) { return (size_t(b) * T + t) * N + n; };
      for (int n = 0; n < N; ++n) h[n] = k.state ? p.state0[(size_t(b) * D + d) * N + n] : 0.0;
      for (int t = 0; t < T; ++t) {
        if (t % k.chunk == 0)
          for (int n = 0; n < N; ++n)
            r.chunk_states[((size_t(b) * chunks + t / k.chunk) * D + d) * N + n] = float(h[size_t(t) * N + n]);
        raw[t] = double(p.delta[at(t)]) + (k.bias ? p.bias[d] : 0.0);
        dt[t] = k.softplus ? (raw[t] > 20.0 ? raw[t] : std::log1p(std::exp(raw[t]))) : raw[t];
        y[t] = k.skip ? double(p.skip[d]) * p.u[at(t)] : 0.0;
        for (int n = 0; n < N; ++n) {
          const double a = std::exp(dt[t] * p.A[size_t(d) * N + n]);
          h[size_t(t + 1) * N + n] = a * h[size_t(t) * N + n] + dt[t] * p.B[bn(t, n)] * p.u[at(t)];
          y[t] += p.C[bn(t, n)] * h[size_t(t + 1) * N + n];
        }
      }
      if (T == 0)
        for (int n = 0; n < N; ++n) r.chunk_states[((size_t(b) * chunks) * D + d) * N + n] = float(h[n]);
      std::fill(adj.begin(), adj.end(), 0.0);
      for (int t = T - 1; t >= 0; --t) {
        const double dout = p.dy[at(t)], u = p.u[at(t)];
        double gy = dout;
        if (k.gate) {
          const double z = p.z[at(t)], s = 1.0 / (1.0 + std::exp(-z));
          gy = dout * z * s;
          r.dz[at(t)] = dout * y[t] * s * (1.0 + z * (1.0 - s));
        }
        double gB = 0, ghaA = 0;
        for (int n = 0; n < N; ++n) {
          const double A = p.A[size_t(d) * N + n], a = std::exp(dt[t] * A);
          const double g = adj[n] + gy * p.C[bn(t, n)];
          r.dC[bn(t, n)] += gy * h[size_t(t + 1) * N + n];
          r.dB[bn(t, n)] += g * dt[t] * u;
          gB += g * p.B[bn(t, n)];
          const double gha = g * h[size_t(t) * N + n] * a;
          ghaA += gha * A;
          r.dA[size_t(d) * N + n] += gha * dt[t];
          adj[n] = g * a;
        }
        const double spg = k.softplus ? (raw[t] > 20.0 ? 1.0 : 1.0 / (1.0 + std::exp(-raw[t]))) : 1.0;
        r.du[at(t)] = gy * (k.skip ? p.skip[d] : 0.0) + dt[t] * gB;
        r.ddelta[at(t)] = (ghaA + u * gB) * spg;
        r.dD[d] += gy * u;
        r.dbias[d] += r.ddelta[at(t)];
      }
      for (int n = 0; n < N; ++n) r.dstate0[(size_t(b) * D + d) * N + n] = adj[n];
    }
  return r;
}

template <class T, int kN>
bool run_case(const Case& k, unsigned seed) {
  const Problem p = make_problem<T>(k, seed);
  const Reference want = reference(k, p);
  const int D = k.D, N = k.N, rows = k.batch * k.T;
  const int64_t chunk_len = std::min<int64_t>(k.chunk, k.T), chunks = (k.T + chunk_len - 1) / chunk_len;
  const int64_t block_channels = kernels::Layout<kN>::kChannels;
  const int64_t channel_blocks = (D + block_channels - 1) / block_channels;

  // Inputs: [3 | u | delta | z | dy | B | C | 2] in one row; gradients [1 | du | ddelta | dz | dB | dC | 2], NaN.
  const int u_at = 3, delta_at = u_at + D, z_at = delta_at + D, dy_at = z_at + D, B_at = dy_at + D, C_at = B_at + N;
  const int in_width = C_at + N + 2;
  std::vector<T> inputs(size_t(rows) * in_width, T(NAN));
  auto place = [&](const std::vector<float>& v, int at, int width) {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < width; ++c) inputs[size_t(r) * in_width + at + c] = T(v[size_t(r) * width + c]);
  };
  place(p.u, u_at, D), place(p.delta, delta_at, D), place(p.z, z_at, D), place(p.dy, dy_at, D);
  place(p.B, B_at, N), place(p.C, C_at, N);
  const int du_at = 1, ddelta_at = du_at + D, dz_at = ddelta_at + D, dB_at = dz_at + D, dC_at = dB_at + N;
  const int out_width = dC_at + N + 2;
  std::vector<T> outputs(size_t(rows) * out_width, T(NAN));
  std::vector<float> dA(p.dA0), dD(p.dD0), dbias(p.dbias0), dstate0(size_t(k.batch) * D * N, NAN);
  const bool all = k.all_grads;

  kernels::BwdArgs<T> a{};
  T* const in = inputs.data();
  T* const out = outputs.data();
  a.u = in + u_at, a.delta = in + delta_at, a.B = in + B_at, a.C = in + C_at, a.z = k.gate ? in + z_at : nullptr;
  a.dy = in + dy_at;
  a.ld_u = a.ld_delta = a.ld_B = a.ld_C = a.ld_z = a.ld_dy = in_width;
  a.du = out + du_at;
  a.ddelta = all ? out + ddelta_at : nullptr;
  a.dz = all && k.gate ? out + dz_at : nullptr;
  a.ld_du = a.ld_ddelta = a.ld_dz = out_width;
  a.delta_bias = k.bias ? p.bias.data() : nullptr;
  a.A = p.A.data();
  a.D = k.skip ? p.skip.data() : nullptr;
  a.chunk_states = want.chunk_states.data();
  a.batch = k.batch, a.T = k.T, a.channels = D, a.N = N, a.chunk_len = chunk_len, a.chunks = chunks;
  a.softplus = k.softplus;
  a.dstate0 = all ? dstate0.data() : nullptr;
  const size_t bt = size_t(k.batch) * chunks;
  std::vector<float> carry(bt * D * N, NAN), dt_sum(bt * D, NAN), dA_part(bt * D * N, NAN), dD_part(bt * D, NAN),
      dbias_part(bt * D, NAN), dB_part(size_t(channel_blocks) * rows * N, NAN), dC_part(dB_part.size(), NAN);
  a.dA_part = dA_part.data();
  a.dD_part = all ? dD_part.data() : nullptr;
  a.dbias_part = all ? dbias_part.data() : nullptr;
  a.dB_part = dB_part.data();
  a.dC_part = all ? dC_part.data() : nullptr;

  bool smem_ok = true;
  // Every block of a (x, y, z) grid, shared memory poisoned first and untouched past what the launch asks for.
  auto launch = [&](unsigned gx, unsigned gy, unsigned gz, int threads, size_t smem_bytes, auto&& kernel) {
    poison_shared(kernels::smem);
    for (unsigned z = 0; z < gz; ++z)
      for (unsigned y = 0; y < gy; ++y) {
        blockIdx.y = y;
        blockIdx.z = z;
        fibers::launch(gx, threads, kernel);
      }
    smem_ok &= shared_untouched_from(kernels::smem, smem_bytes);
  };
  auto blocks = [](int64_t n) { return unsigned((n + 255) / 256); };
  if (chunks > 1) {
    a.carry = carry.data();
    a.dt_sum = dt_sum.data();
    launch(unsigned(channel_blocks), unsigned(chunks - 1), unsigned(k.batch), kernels::kThreads,
           kernels::SummaryPlan<kN>::bytes(chunk_len), [&] { kernels::summary_kernel<T, kN>(a); });
    launch(blocks(int64_t(k.batch) * D * N), 1, 1, 256, 0, [&] {
      kernels::adjoint_carry_kernel(a.A, a.carry, a.dt_sum, k.batch, D, N, chunks);
    });
  }
  launch(unsigned(channel_blocks), unsigned(chunks), unsigned(k.batch), kernels::kThreads,
         kernels::GradientPlan<T, kN>::bytes(chunk_len), [&] { kernels::gradient_kernel<T, kN>(a); });
  kernels::PartialSums<T> sums{};  // the op's order
  sums.add({a.dA_part, int64_t(D) * N, int64_t(bt), dA.data(), nullptr, 0, 0});
  if (all) sums.add({a.dD_part, D, int64_t(bt), dD.data(), nullptr, 0, 0});
  if (all) sums.add({a.dbias_part, D, int64_t(bt), dbias.data(), nullptr, 0, 0});
  sums.add({a.dB_part, int64_t(rows) * N, channel_blocks, nullptr, out + dB_at, N, out_width});
  if (all) sums.add({a.dC_part, int64_t(rows) * N, channel_blocks, nullptr, out + dC_at, N, out_width});
  launch(sums.blocks(), 1, 1, kernels::kSumThreads, kernels::kSumSmem, [&] { kernels::partial_sums_kernel<T>(sums); });

  auto column = [&](int at, int width) { return column_reader(outputs, out_width, at, width); };
  const double tol = sizeof(T) == 2 ? 3e-2 : 1e-4;
  bool ok = true;
  std::string report;
  auto check = [&](const char* name, const std::vector<double>& ref, auto&& at) {
    report_error(report, ok, name, rel_error(ref, at), tol);
  };
  check("du", want.du, column(du_at, D));
  check("dB", want.dB, column(dB_at, N));
  check("dA", want.dA, vector_reader(dA));
  if (all) {
    check("ddelta", want.ddelta, column(ddelta_at, D));
    if (k.gate) check("dz", want.dz, column(dz_at, D));
    check("dC", want.dC, column(dC_at, N));
    check("dD", want.dD, vector_reader(dD));
    check("dbias", want.dbias, vector_reader(dbias));
    check("dstate0", want.dstate0, vector_reader(dstate0));
  }
  if (!smem_ok) {
    report += " shared memory used past the launch's size (FAIL)";
    ok = false;
  }
  // Nothing written outside the asked-for gradients' columns.
  for (int r = 0; r < rows && ok; ++r)
    for (int c = 0; c < out_width; ++c) {
      const bool asked = (c >= du_at && c < du_at + D) || (c >= dB_at && c < dB_at + N) ||
                         (all && c >= ddelta_at && c < ddelta_at + D) ||
                         (all && k.gate && c >= dz_at && c < dz_at + D) || (all && c >= dC_at && c < dC_at + N);
      if (!asked && !std::isnan(float(outputs[size_t(r) * out_width + c]))) {
        report += " wrote outside the gradients (FAIL)";
        ok = false;
        break;
      }
    }
  std::printf("%-4s B %d T %4d D %3d N %2d (kN %2d) chunk %2d bias %d softplus %d D %d z %d state %d all %d |%s %s\n",
              sizeof(T) == 2 ? "bf16" : "f32", k.batch, k.T, k.D, k.N, kN, k.chunk, k.bias, k.softplus, k.skip,
              k.gate, k.state, k.all_grads, report.c_str(), ok ? "ok" : "FAIL");
  std::fflush(stdout);
  return ok;
}

template <class T>
bool run_case(const Case& k, unsigned seed) {
  if (k.N <= 4) return run_case<T, 4>(k, seed);
  if (k.N <= 8) return run_case<T, 8>(k, seed);
  if (k.N <= 16) return run_case<T, 16>(k, seed);
  if (k.N <= 32) return run_case<T, 32>(k, seed);
  return run_case<T, 64>(k, seed);
}

int main() {
  std::vector<Case> cases = {
      {1, 1, 16, 16, 4, true, true, true, true, true},      // one token
      {2, 12, 37, 4, 4, true, true, true, true, true},      // T a multiple of the chunk, partial group
      {2, 17, 130, 16, 5, false, true, true, true, false},  // two channel blocks, a partial last chunk
      {1, 9, 20, 5, 64, true, false, false, false, true},   // T shorter than the chunk, N padded
      {2, 70, 24, 16, 64, true, true, true, true, true},    // two chunks of 64
      {1, 23, 16, 16, 1, true, true, true, true, true},     // chunks of one token
      {2, 40, 12, 32, 32, true, true, false, true, true},   // N 32: two states per thread
      {1, 37, 9, 64, 16, true, true, true, true, true},     // N 64: four per thread
      {2, 30, 10, 8, 7, true, true, true, false, true},     // N 8
      {1, 50, 300, 13, 16, true, true, true, true, true},   // three channel blocks, N 13 of 16
      {3, 201, 130, 16, 64, true, true, true, true, true},  // batch 3, full chunks of 64 and a partial one
      {2, 129, 20, 16, 64, false, false, false, false, false},  // no optional input, one token past 2 chunks
      {2, 150, 70, 16, 20, true, true, true, true, true},   // two channel blocks of 64, chunks not a multiple of 8
      {1, 100, 20, 64, 64, true, true, true, true, true},   // N 64 at the longest chunk: two parts of 32
  };
  Case fewer{2, 33, 40, 16, 8, true, true, true, true, true};
  fewer.all_grads = false;
  cases.push_back(fewer);
  return run_cases(
      cases, [](const Case& k, unsigned seed) { return run_case<float>(k, seed); },
      [](const Case& k, unsigned seed) { return run_case<bf16>(k, seed); });
}
