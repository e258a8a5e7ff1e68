// The random inputs of the GPU selective-scan tests (forward and backward): one problem for both
// devices, the same values rounded through the activation dtype, with every optional input and the
// strided layouts of Mamba-1's projections selectable by flags.
#pragma once
#include <fmt/format.h>

#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/ops.h"

namespace ssm::gpu_test {

struct ScanCase {
  int64_t B, T, D, N;
};

enum Flags {
  kBias = 1,
  kSoftplus = 2,
  kSkip = 4,
  kGate = 8,
  kState = 16,
  kStrided = 32,
  kAllFlags = 64,  // the options above; MatchesTheCpuWithEveryOption sweeps every combination of them
  kAligned = 64,   // with kStrided: slices at 16-byte aligned offsets of 16-byte rows (the staged kernels)
  kOddDelta = 128,  // with kStrided | kAligned: delta still at an odd offset (the direct kernels)
};

inline std::string describe(const ScanCase& c, int flags, DType dt) {
  return fmt::format("{} B {} T {} D {} N {} bias {} softplus {} D {} z {} state {} strided {} aligned {} odd delta {}",
                     dtype_name(dt), c.B, c.T, c.D, c.N, bool(flags & kBias), bool(flags & kSoftplus),
                     bool(flags & kSkip), bool(flags & kGate), bool(flags & kState), bool(flags & kStrided),
                     bool(flags & kAligned), bool(flags & kOddDelta));
}

// The state is F32 arithmetic on identical inputs in both modes. In F32 mode its decays are as
// accurate as the CPU's; in BF16 mode they come from the exp unit (~1e-7 relative each), whose
// errors add up over a slow decay's hundreds of steps.
inline double state_tolerance(DType activations) { return activations == DType::F32 ? 1e-5 : 1e-4; }

// One input as the CPU op and the GPU op see it: the same values (rounded through the activation dtype).
struct Pair {
  Tensor cpu, gpu;
};

// Random activations of the given widths over rows `rows` ([B, T] or [B]). Strided, they are column
// slices of one wider tensor, side by side after 3 leading columns (as Mamba-1 slices dt, B and C
// out of x_proj's output, and x and z out of in_proj's): rows a whole wide row apart, starting at odd
// offsets; with `aligned`, every slice starts at a multiple of 8 columns of a wide row of a multiple
// of 8 columns (16-byte aligned rows in both dtypes). Otherwise each is a contiguous tensor of its own.
inline std::vector<Pair> random_activations(Shape rows, const std::vector<int64_t>& widths, double lo, double hi, DType dt,
                                     bool strided, Rng& rng, bool aligned = false) {
  std::vector<Pair> out;
  if (!strided) {
    for (int64_t w : widths) {
      Shape shape = rows;
      shape.push_back(w);
      const Tensor host = rounded(random_cpu(shape, rng, lo, hi), dt);
      out.push_back({host, to_gpu(host, dt)});
    }
    return out;
  }
  auto start = [&](int64_t column) { return aligned ? (column + 7) / 8 * 8 : column; };
  std::vector<int64_t> offsets;
  int64_t end = 3;
  for (int64_t w : widths) {
    offsets.push_back(start(end));
    end = offsets.back() + w;
  }
  Shape wide = rows;
  wide.push_back(start(end + 4));
  const Tensor host = rounded(random_cpu(wide, rng, lo, hi), dt);
  const Tensor gpu = to_gpu(host, dt);
  for (size_t i = 0; i < widths.size(); ++i)
    out.push_back({host.slice(-1, offsets[i], widths[i]), gpu.slice(-1, offsets[i], widths[i])});
  return out;
}

// A GPU output full of NaN: with `strided`, the column slice at offset 3 of a wider NaN tensor, whose
// padding must stay NaN (nothing written out of bounds).
inline StridedGpu nan_output(const Shape& shape, DType dt, bool strided) {
  if (strided) return strided_gpu(shape, dt, 3);
  StridedGpu out;
  out.wide = out.view = nan_gpu(shape, dt);
  return out;
}

// Random inputs of one case for both devices. `rows` is [B, T] for the forward, [B] for the step.
// delta keeps dt = softplus(delta + bias) (or delta + bias) in Mamba's usual (0, ~1.5].
struct ScanProblem {
  ops::SelectiveScanInputs cpu, gpu;
  Tensor cpu_state, gpu_state;  // defined with kState

  ScanProblem(const ScanCase& c, const Shape& rows, int flags, DType dt, Rng& rng) {
    const bool strided = flags & kStrided, aligned = flags & kAligned, delta_aligned = aligned && !(flags & kOddDelta);
    cpu.delta_softplus = gpu.delta_softplus = flags & kSoftplus;
    const std::vector<Pair> xz = random_activations(rows, {c.D, c.D}, -2, 2, dt, strided, rng, aligned);
    const std::vector<Pair> x_dbl = random_activations(rows, {c.N, c.N}, -1, 1, dt, strided, rng, aligned);
    const Pair delta = cpu.delta_softplus
                           ? random_activations(rows, {c.D}, -4, 1, dt, strided, rng, delta_aligned)[0]
                           : random_activations(rows, {c.D}, 0.01, 0.5, dt, strided, rng, delta_aligned)[0];
    set(&ops::SelectiveScanInputs::u, xz[0]);
    set(&ops::SelectiveScanInputs::delta, delta);
    set(&ops::SelectiveScanInputs::B, x_dbl[0]);
    set(&ops::SelectiveScanInputs::C, x_dbl[1]);
    if (flags & kGate) set(&ops::SelectiveScanInputs::z, xz[1]);
    set(&ops::SelectiveScanInputs::A, vector(random_cpu({c.D, c.N}, rng, -8, -0.5)));
    if (flags & kBias) set(&ops::SelectiveScanInputs::delta_bias, vector(random_cpu({c.D}, rng, 0, 0.5)));
    if (flags & kSkip) set(&ops::SelectiveScanInputs::D, vector(random_cpu({c.D}, rng, -1, 1)));
    if (flags & kState) {
      cpu_state = random_cpu({c.B, c.D, c.N}, rng);
      gpu_state = to_gpu(cpu_state);
    }
  }

  static Pair vector(const Tensor& host) { return {host, to_gpu(host)}; }
  void set(Tensor ops::SelectiveScanInputs::*field, const Pair& p) {
    cpu.*field = p.cpu;
    gpu.*field = p.gpu;
  }
};

}  // namespace ssm::gpu_test
