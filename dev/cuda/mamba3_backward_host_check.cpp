// Runs the kernels of ops::mamba3_backward (src/ops/cuda/mamba3_backward_kernels.cuh) on the CPU through
// cuda_on_cpu.h, in the order mamba3_backward.cu launches them, and checks every gradient element against a central
// finite difference in double of L = Σ dy · y over the recurrence of ops.h (mamba3_reference.h): SISO and MIMO ranks,
// both rotation pairings, groups, state rows over two blocks, sequences longer than a staged tile, both dtypes.
//
//   g++ -std=c++20 -O2 -I/usr/local/cuda/include dev/cuda/mamba3_backward_host_check.cpp \
//     -o build/dev-cuda/mamba3_backward_host_check
//   build/dev-cuda/mamba3_backward_host_check        (prints one line per case; exit 1 on a failure)
#include "check_util.h"
#include "cuda_on_cpu.h"

namespace ssm::ops::cuda::mamba3_kernels {
alignas(16) float smem[16384];
}

#include "../../src/ops/cuda/mamba3_backward_kernels.cuh"
#include "mamba3_reference.h"

namespace kernels = ssm::ops::cuda::mamba3_kernels;
using bf16 = __nv_bfloat16;

// The gradients as the kernels write them, in F32 (activations' read back from T).
struct Grads {
  std::vector<float> x, B, C, dt, A, trap, angles, dt_bias, B_bias, C_bias, D;
};

template <class T>
std::vector<T> as(const std::vector<float>& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <class T>
std::vector<float> floats_of(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float(v[i]);
  return out;
}

template <class T>
Grads run_kernels(const Case& k, const Inputs& in, const std::vector<float>& dy_values, float A_floor) {
  const int RN = k.R * k.N, RR = k.R * k.R, width = k.R * k.H * k.P, BC = k.R * k.G * k.N, BH = k.batch * k.H;
  const std::vector<T> x = as<T>(in.x), B = as<T>(in.B), C = as<T>(in.C), dt = as<T>(in.dt), A = as<T>(in.A),
                       trap = as<T>(in.trap), angles = as<T>(in.angles), dy = as<T>(dy_values);
  const size_t rows = size_t(k.batch) * k.T;
  std::vector<T> dx(rows * width, T(NAN)), dB(rows * BC, T(NAN)), dC(rows * BC, T(NAN)), ddt(rows * k.H, T(NAN)),
      dA(rows * k.H, T(NAN)), dtrap(rows * k.H, T(NAN)), dangles(rows * k.S, T(NAN));
  Grads out;
  out.dt_bias.assign(k.H, 0.5f);  // accumulated into: the check subtracts what was there
  out.D.assign(k.H, 0.5f);
  out.B_bias.assign(size_t(k.H) * RN, 0.5f);
  out.C_bias.assign(size_t(k.H) * RN, 0.5f);
  const std::vector<T>* activations[7] = {&x, &B, &C, &dt, &A, &trap, &angles};
  const kernels::Args<T> a = walk_args<T>(k, k.T, activations, in, nullptr, A_floor);
  const kernels::Layout lay = walk_layout(k, k.T);
  const int row_blocks = (k.P + lay.rows - 1) / lay.rows, BT = BH * k.T, parts = BT * row_blocks;
  std::vector<float> phi(size_t(BT) * k.S, NAN), dq_part(size_t(parts) * RN, NAN), xdy_part(size_t(parts) * RR, NAN),
      w_part(size_t(parts) * RN, NAN), q_part(parts, NAN), kq(size_t(BT) * RR, NAN), dk_head(size_t(BT) * RN, NAN),
      dq_head(size_t(BT) * RN, NAN), dphi(size_t(BT) * k.S, NAN), e(BT, NAN), dangles_head(size_t(BT) * k.S, NAN),
      head_dD(BH, NAN), head_ddt_bias(BH, NAN);
  kernels::BackArgs<T> g{{dy.data(), width},
                         {dx.data(), width},
                         {dB.data(), BC},
                         {dC.data(), BC},
                         {ddt.data(), k.H},
                         {dA.data(), k.H},
                         {dtrap.data(), k.H},
                         {dangles.data(), k.S},
                         out.dt_bias.data(),
                         out.B_bias.data(),
                         out.C_bias.data(),
                         out.D.data(),
                         k.batch,
                         row_blocks,
                         phi.data(),
                         dq_part.data(),
                         xdy_part.data(),
                         w_part.data(),
                         q_part.data(),
                         kq.data(),
                         dk_head.data(),
                         dq_head.data(),
                         dphi.data(),
                         e.data(),
                         dangles_head.data(),
                         head_dD.data(),
                         head_ddt_bias.data()};
  const size_t shared = kernels::BackStaged::floats(k.R, k.N, lay.rows, k.S, lay.threads / 32);
  if (shared > std::size(kernels::smem)) {
    std::printf("a case needs %zu floats of shared memory, more than the check's %zu\n", shared,
                std::size(kernels::smem));
    std::exit(1);
  }
  const Dim3 walks{unsigned(row_blocks), 1, unsigned(BH)};
  poison_shared(kernels::smem);
  fibers::launch(walks, lay.threads, [&] { kernels::forward_walk_kernel<T>(a, g, lay); });
  poison_shared(kernels::smem);
  fibers::launch(walks, lay.threads, [&] { kernels::backward_walk_kernel<T>(a, g, lay); });
  if (!shared_untouched_from(kernels::smem, shared * sizeof(float))) {
    std::printf("a walk wrote shared memory past its %zu floats\n", shared);
    std::exit(1);
  }
  fibers::launch(Dim3{unsigned((k.T + kernels::kTileTokens - 1) / kernels::kTileTokens), unsigned(BH), 1}, 128,
                 [&] { kernels::tokens_kernel<T>(a, g); });
  fibers::launch(unsigned(BH), (std::max(k.S, 32) + 31) / 32 * 32, [&] { kernels::scalars_kernel<T>(a, g); });
  const int64_t head_sums = int64_t(rows) * (2 * BC + k.S), params = int64_t(k.H) * (2 * RN + 2);
  fibers::launch(unsigned((head_sums + 255) / 256), 256, [&] { kernels::head_sums_kernel<T>(a, g); });
  fibers::launch(unsigned((params + 127) / 128), 128, [&] { kernels::parameter_sums_kernel<T>(a, g); });

  out.x = floats_of(dx);
  out.B = floats_of(dB);
  out.C = floats_of(dC);
  out.dt = floats_of(ddt);
  out.A = floats_of(dA);
  out.trap = floats_of(dtrap);
  out.angles = floats_of(dangles);
  for (std::vector<float>* v : {&out.dt_bias, &out.D, &out.B_bias, &out.C_bias})
    for (float& value : *v) value -= 0.5f;
  return out;
}

// dL/dv for every element of one input tensor of `in`, L = Σ dy · y, by central differences.
std::vector<double> finite_differences(const Case& k, InputsOf<double> in, std::vector<double> InputsOf<double>::*field,
                                       const std::vector<float>& dy, float A_floor) {
  return central_differences(
      in.*field,
      [&] {
        Reference ref{in.angle0, in.ssm0, in.k0, in.x0};
        std::vector<double> y;
        ref.run(k, k.T, in, A_floor, y);
        return weighted_sum(dy, y);
      },
      1e-5);
}

template <class T>
bool run_case(const Case& k, unsigned seed) {
  const float A_floor = seed % 3 == 0 ? 0.3f : 1e-4f;
  Inputs in = make_inputs<T>(k, k.T, seed);
  for (std::vector<float>* v : {&in.angle0, &in.ssm0, &in.k0, &in.x0}) std::fill(v->begin(), v->end(), 0.0f);
  std::mt19937 gen(seed + 1000);
  NormalFill<T> fill{gen};
  std::vector<float> dy;
  fill(dy, size_t(k.batch) * k.T * k.R * k.H * k.P, 1.0f, 0.0f, true);
  const Grads got = run_kernels<T>(k, in, dy, A_floor);

  InputsOf<double> wide;
  using F = std::vector<float> Inputs::*;
  using W = std::vector<double> InputsOf<double>::*;
  const F fields[] = {&Inputs::x,    &Inputs::B,      &Inputs::C,       &Inputs::dt,     &Inputs::A,
                      &Inputs::trap, &Inputs::angles, &Inputs::dt_bias, &Inputs::B_bias, &Inputs::C_bias,
                      &Inputs::D,    &Inputs::angle0, &Inputs::ssm0,    &Inputs::k0,     &Inputs::x0};
  const W wide_fields[] = {&InputsOf<double>::x,      &InputsOf<double>::B,       &InputsOf<double>::C,
                           &InputsOf<double>::dt,     &InputsOf<double>::A,       &InputsOf<double>::trap,
                           &InputsOf<double>::angles, &InputsOf<double>::dt_bias, &InputsOf<double>::B_bias,
                           &InputsOf<double>::C_bias, &InputsOf<double>::D,       &InputsOf<double>::angle0,
                           &InputsOf<double>::ssm0,   &InputsOf<double>::k0,      &InputsOf<double>::x0};
  for (size_t i = 0; i < std::size(fields); ++i)
    wide.*wide_fields[i] = {(in.*fields[i]).begin(), (in.*fields[i]).end()};
  const std::vector<float> Grads::*grad_fields[] = {&Grads::x,      &Grads::B,      &Grads::C,      &Grads::dt,
                                                    &Grads::A,      &Grads::trap,   &Grads::angles, &Grads::dt_bias,
                                                    &Grads::B_bias, &Grads::C_bias, &Grads::D};
  const char* names[] = {"dx", "dB", "dC", "ddt", "dA", "dtrap", "dangles", "ddt_bias", "dB_bias", "dC_bias", "dD"};
  // F32 arithmetic against double differences (the cases land below 1e-5); BF16 rounds the activations' gradients
  // (and their sums of BF16-rounded terms): a wrong index or a missed term lands near 1.
  const double tol = sizeof(T) == 2 ? 2e-2 : 1e-4;
  bool ok = true;
  std::string report;
  for (size_t i = 0; i < std::size(names); ++i)
    report_error(report, ok, names[i],
                 rel_error(got.*grad_fields[i], finite_differences(k, wide, wide_fields[i], dy, A_floor)), tol);
  std::printf("%-4s B %d T %3d H %d P %3d G %d N %3d S %2d R %d %s:%s\n", sizeof(T) == 2 ? "bf16" : "f32", k.batch, k.T,
              k.H, k.P, k.G, k.N, k.S, k.R, k.halves ? "halves" : "pairs ", report.c_str());
  return ok;
}

int main() {
  const Case cases[] = {
      {2, 20, 4, 8, 2, 16, 8, 1, false, 1, 0},    // groups, two staged tiles (the last partial)
      {1, 21, 2, 6, 1, 8, 2, 2, true, 1, 0},      // MIMO rank 2, N 8 (half a thread's columns), partial rotation
      {1, 13, 1, 4, 1, 16, 4, 4, true, 1, 0},     // MIMO rank 4
      {1, 5, 1, 70, 1, 128, 16, 1, false, 1, 0},  // state rows over two blocks, four threads a row
  };
  bool ok = true;
  unsigned seed = 1;
  for (const Case& k : cases) {
    ok &= run_case<float>(k, seed++);
    fibers::reverse_order = true;  // the other order of a block's threads (cuda_on_cpu.h)
    ok &= run_case<bf16>(k, seed++);
    fibers::reverse_order = false;
  }
  std::printf("%s\n", ok ? "all cases passed" : "SOME CASES FAILED");
  return ok ? 0 : 1;
}
