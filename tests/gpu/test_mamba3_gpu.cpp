// Mamba-3's ops on the GPU against the CPU ops on the same inputs (x, B, C, dt, A, trap and angles rounded through the
// activation dtype): ops::mamba3 for SISO and MIMO (ranks 1, 2, 4; both rotation pairings), odd lengths, batch > 1,
// 1 and 2 groups, partial and full rotation, the A floor acting, with and without D, strided inputs, sequences long
// enough to run as several chunks, state rows over several blocks (P 130 at N 128); a prefill in two pieces through
// the state, then steps, the state after every call as on the CPU; MIMO's expand and contract and their weight's
// gradient; the backward's every gradient. Outputs start as NaN, so an element left unwritten fails.
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "ops/mamba3_test_data.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "ops/test_util.h"

namespace ssm {
namespace {

using namespace gpu_test;
using testing::Mamba3Case;

// The activation-dtype tensors of the inputs, rounded through dt on the CPU (what the GPU is given).
ops::Mamba3Inputs rounded_inputs(ops::Mamba3Inputs in, DType dt) {
  for (Tensor* t : {&in.x, &in.B, &in.C, &in.dt, &in.A, &in.trap, &in.angles}) *t = rounded(t->contiguous(), dt);
  return in;
}

// The same inputs on the GPU: activations as dt rows (column slices at `offset` when it is not 0), the rest F32.
struct Placed {
  ops::Mamba3Inputs in;
  std::vector<StridedGpu> keep;
};
Placed on_gpu(const ops::Mamba3Inputs& cpu, DType dt, int64_t offset) {
  Placed p;
  p.in = cpu;
  for (Tensor* t : {&p.in.x, &p.in.B, &p.in.C, &p.in.dt, &p.in.A, &p.in.trap, &p.in.angles}) {
    p.keep.push_back(gpu_rows(t->shape(), dt, offset, t));
    *t = p.keep.back().view;
  }
  for (Tensor* t : {&p.in.dt_bias, &p.in.B_bias, &p.in.C_bias, &p.in.D})
    if (t->defined()) *t = to_gpu(*t);
  return p;
}

ops::Mamba3State state_on_gpu(const ops::Mamba3State& s) {
  return {to_gpu(s.angle), to_gpu(s.ssm), to_gpu(s.k), to_gpu(s.x)};
}

// The state against the CPU's, each tensor relative to its own scale (the angles on the circle: either side may have
// wrapped).
void expect_state_near(const ops::Mamba3State& gpu, const ops::Mamba3State& cpu, double tol, const std::string& what) {
  const Tensor angle = to_cpu(gpu.angle);
  double worst = 0;
  for (int64_t i = 0; i < angle.numel(); ++i)
    worst = std::max(worst, std::abs(std::remainder(double(angle.data<float>()[i]) - cpu.angle.data<float>()[i],
                                                    2 * 3.14159265358979323846)));
  EXPECT_LT(worst, 1e-4) << what << ": angle";
  EXPECT_LT(relative_error(to_cpu(gpu.ssm), cpu.ssm), tol) << what << ": ssm";
  EXPECT_LT(relative_error(to_cpu(gpu.k), cpu.k), tol) << what << ": k";
  EXPECT_LT(relative_error(to_cpu(gpu.x), cpu.x), tol) << what << ": x";
}

// y's tolerance: the same rounded inputs and F32 arithmetic in both modes, y itself rounded to BF16 in that mode.
double tolerance(DType dt) { return dt == DType::F32 ? 1e-5 : 1e-2; }

Tensor filled(const Shape& shape, float value) {
  Tensor t = Tensor::empty(shape);
  t.fill(value);
  return t;
}

Mamba3Case make_case(int64_t batch, int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, int64_t S, int64_t R,
                     bool halves, uint64_t seed) {
  Mamba3Case c;
  c.batch = batch;
  c.T = T;
  c.H = H;
  c.P = P;
  c.G = G;
  c.N = N;
  c.S = S;
  c.R = R;
  c.rotate_halves = halves;
  c.seed = seed;
  c.with_D = seed % 3 != 0;
  c.A_floor = seed % 4 == 1 ? 0.3 : 1e-4;
  return c;
}

const std::vector<Mamba3Case> kCases = {
    make_case(2, 37, 4, 16, 2, 32, 8, 1, false, 1),     // the tiny fixtures' sizes; one chunk
    make_case(1, 150, 2, 32, 1, 32, 16, 1, false, 2),   // several chunks, full rotation
    make_case(3, 5, 2, 8, 2, 16, 2, 2, true, 3),        // MIMO rank 2, shorter than a stage
    make_case(1, 301, 2, 16, 1, 32, 8, 4, true, 4),     // MIMO rank 4 over several chunks
    make_case(2, 133, 1, 64, 1, 128, 32, 1, false, 5),  // the published head: 64 x 128
    make_case(1, 70, 1, 130, 1, 128, 32, 1, true, 6),   // state rows over three blocks
    make_case(2, 9, 3, 12, 3, 8, 4, 1, false, 7),       // N 8: half a thread's piece
};

TEST(Mamba3Gpu, ForwardMatchesTheCpu) {
  require_gpu();
  for (DType dt : {DType::F32, DType::BF16})
    for (const Mamba3Case& c : kCases)
      for (int64_t offset : {0, 5}) {
        SCOPED_TRACE(c.describe() + " " + std::string(dtype_name(dt)) + " offset " + std::to_string(offset));
        const ops::Mamba3Inputs cpu =
            rounded_inputs(testing::make_mamba3_inputs(c, testing::make_mamba3_data(c), 0, c.T), dt);
        Tensor want = Tensor::empty({c.batch, c.T, c.R * c.H * c.P});
        ops::mamba3(cpu, nullptr, want);
        Placed gpu = on_gpu(cpu, dt, offset);
        StridedGpu y = gpu_rows(want.shape(), dt, offset);
        ops::mamba3(gpu.in, nullptr, y.view);
        EXPECT_LT(relative_error(to_cpu(y.view), want), tolerance(dt));
        if (offset) {
          EXPECT_TRUE(y.padding_untouched());
        }
      }
}

// A prefill in two pieces through the state (the second long enough for several chunks), then three steps: y and the
// state after every call as on the CPU.
TEST(Mamba3Gpu, StatefulPiecesAndStepsMatchTheCpu) {
  require_gpu();
  for (DType dt : {DType::F32, DType::BF16})
    for (const Mamba3Case& base : {kCases[1], kCases[3], kCases[5], kCases[6]}) {
      Mamba3Case c = base;
      c.T = 220;
      SCOPED_TRACE(c.describe() + " " + std::string(dtype_name(dt)));
      const auto data = testing::make_mamba3_data(c);
      ops::Mamba3State cpu_state = ops::Mamba3State::zeros(c.batch, c.H, c.P, c.N, c.S, c.R);
      ops::Mamba3State gpu_state = state_on_gpu(cpu_state);
      const int64_t pieces[][2] = {{0, 13}, {13, 200}};
      for (const auto& piece : pieces) {
        const ops::Mamba3Inputs cpu = rounded_inputs(testing::make_mamba3_inputs(c, data, piece[0], piece[1]), dt);
        Tensor want = Tensor::empty({c.batch, piece[1], c.R * c.H * c.P});
        ops::mamba3(cpu, &cpu_state, want);
        Placed gpu = on_gpu(cpu, dt, 0);
        Tensor y = nan_gpu(want.shape(), dt);
        ops::mamba3(gpu.in, &gpu_state, y);
        const std::string what = "tokens from " + std::to_string(piece[0]);
        EXPECT_LT(relative_error(to_cpu(y), want), tolerance(dt)) << what;
        expect_state_near(gpu_state, cpu_state, 1e-5, what);
      }
      for (int64_t t = 213; t < 216; ++t) {
        const ops::Mamba3Inputs cpu = rounded_inputs(testing::make_mamba3_inputs(c, data, t, 1, true), dt);
        Tensor want = Tensor::empty({c.batch, c.R * c.H * c.P});
        ops::mamba3_step(cpu, cpu_state, want);
        Placed gpu = on_gpu(cpu, dt, 3);
        Tensor y = nan_gpu(want.shape(), dt);
        ops::mamba3_step(gpu.in, gpu_state, y);
        const std::string what = "step " + std::to_string(t);
        EXPECT_LT(relative_error(to_cpu(y), want), tolerance(dt)) << what;
        expect_state_near(gpu_state, cpu_state, 1e-5, what);
      }
    }
}

TEST(Mamba3Gpu, MimoProjectionsMatchTheCpu) {
  require_gpu();
  Rng rng(11);
  const int64_t H = 3, R = 4, P = 10;
  const Tensor w = random_cpu({H, R, P}, rng);
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor narrow = rounded(random_cpu({2, 7, H * P}, rng), dt),
                 wide = rounded(random_cpu({2, 7, R * H * P}, rng), dt);
    Tensor want_wide = Tensor::empty(wide.shape()), want_narrow = Tensor::empty(narrow.shape());
    ops::mamba3_mimo_expand(narrow, w, want_wide);
    ops::mamba3_mimo_contract(wide, w, want_narrow);
    StridedGpu gpu_narrow = gpu_rows(narrow.shape(), dt, 3, &narrow), gpu_wide = gpu_rows(wide.shape(), dt, 5, &wide);
    StridedGpu got_wide = gpu_rows(wide.shape(), dt, 2), got_narrow = gpu_rows(narrow.shape(), dt, 0);
    ops::mamba3_mimo_expand(gpu_narrow.view, to_gpu(w), got_wide.view);
    ops::mamba3_mimo_contract(gpu_wide.view, to_gpu(w), got_narrow.view);
    EXPECT_LT(relative_error(to_cpu(got_wide.view), want_wide), dt == DType::F32 ? 1e-6 : 1e-2);
    EXPECT_LT(relative_error(to_cpu(got_narrow.view), want_narrow), dt == DType::F32 ? 1e-6 : 1e-2);
    EXPECT_TRUE(got_wide.padding_untouched());
    // The weight's gradient, added to what is there (as the CPU's).
    Tensor want_dw = filled({H, R, P}, 0.5f);
    ops::mamba3_mimo_weight_grad(wide, narrow, want_dw);
    Tensor got_dw = to_gpu(filled({H, R, P}, 0.5f));
    ops::mamba3_mimo_weight_grad(gpu_wide.view, gpu_narrow.view, got_dw);
    EXPECT_LT(relative_error(to_cpu(got_dw), want_dw), dt == DType::F32 ? 1e-5 : 1e-2);
  }
}

// Every gradient a training step asks of the backward, the activations' as rows of the activation dtype and the
// parameters' F32, added to (here to 0.5).
struct BackwardGrads {
  ops::Mamba3Grads g;
  void make(const Mamba3Case& c, DType dt, bool gpu) {
    const auto rows = [&](int64_t width) {
      const Shape shape{c.batch, c.T, width};
      return gpu ? nan_gpu(shape, dt) : filled(shape, NAN);
    };
    const auto param = [&](const Shape& shape) {
      Tensor t = filled(shape, 0.5f);
      return gpu ? to_gpu(t) : t;
    };
    g.dx = rows(c.R * c.H * c.P);
    g.dB = rows(c.R * c.G * c.N);
    g.dC = rows(c.R * c.G * c.N);
    g.ddt = rows(c.H);
    g.dA = rows(c.H);
    g.dtrap = rows(c.H);
    g.dangles = rows(c.S);
    g.ddt_bias = param({c.H});
    g.dD = param({c.H});
    g.dB_bias = param({c.H, c.R * c.N});
    g.dC_bias = param({c.H, c.R * c.N});
  }
  std::vector<std::pair<const char*, Tensor*>> all() {
    return {{"dx", &g.dx}, {"dB", &g.dB},           {"dC", &g.dC},           {"ddt", &g.ddt},
            {"dA", &g.dA}, {"dtrap", &g.dtrap},     {"dangles", &g.dangles}, {"ddt_bias", &g.ddt_bias},
            {"dD", &g.dD}, {"dB_bias", &g.dB_bias}, {"dC_bias", &g.dC_bias}};
  }
};

// dt_bias's gradient sums ddt over every (b, t), terms that cancel to a small part of their magnitudes: against the
// CPU's (another algorithm: the decay's gradient there is ⟨G_t, h_{t−1}⟩ per token, here a suffix sum) it came to
// 1.8e-4 of its largest value on 266 tokens in F32, where the kernels run on the CPU were within 2e-5 of a finite
// difference in double on such sequences. Its error is measured against the sum of the magnitudes it adds up.
double bias_sum_error(const Tensor& got, const Tensor& want, const Tensor& ddt) {
  const int64_t H = want.numel();
  std::vector<double> magnitude(size_t(H), 0.0);
  for (int64_t i = 0; i < ddt.numel(); ++i) magnitude[size_t(i % H)] += std::abs(ddt.data<float>()[i]);
  double worst = 0.0;
  for (int64_t h = 0; h < H; ++h)
    worst = std::max(
        worst, std::abs(double(got.data<float>()[h]) - want.data<float>()[h]) / std::max(magnitude[size_t(h)], 1e-30));
  return worst;
}

// The backward against the CPU's on the same inputs and dy, every gradient within the backward tolerance (BF16: the
// activations' gradients rounded to BF16), the elements that start as NaN all written, and a second run the same bits.
TEST(Mamba3Gpu, BackwardMatchesTheCpu) {
  require_gpu();
  for (DType dt : {DType::F32, DType::BF16})
    for (const Mamba3Case& c : kCases) {
      SCOPED_TRACE(c.describe() + " " + std::string(dtype_name(dt)));
      const ops::Mamba3Inputs cpu =
          rounded_inputs(testing::make_mamba3_inputs(c, testing::make_mamba3_data(c), 0, c.T), dt);
      Rng rng(c.seed + 100);
      const Tensor dy = rounded(random_cpu({c.batch, c.T, c.R * c.H * c.P}, rng), dt);
      BackwardGrads want, got, again;
      want.make(c, dt, false);
      ops::mamba3_backward(cpu, dy, want.g);
      Placed gpu = on_gpu(cpu, dt, 0);
      const Tensor gpu_dy = to_gpu(dy, dt);
      got.make(c, dt, true);
      again.make(c, dt, true);
      ops::mamba3_backward(gpu.in, gpu_dy, got.g);
      ops::mamba3_backward(gpu.in, gpu_dy, again.g);
      const auto wanted = want.all(), gotten = got.all(), repeated = again.all();
      for (size_t i = 0; i < wanted.size(); ++i) {
        const auto& [name, tensor] = gotten[i];
        const double error = std::string(name) == "ddt_bias"
                                 ? bias_sum_error(to_cpu(*tensor), *wanted[i].second, want.g.ddt)
                                 : relative_error(to_cpu(*tensor), *wanted[i].second);
        EXPECT_LT(error, backward_tolerance(dt)) << name;
        EXPECT_TRUE(same_bits(to_cpu(*tensor), to_cpu(*repeated[i].second))) << name << " differs between runs";
      }
    }
}

// Bad input: one clear error naming the op and what was wrong.
TEST(Mamba3Gpu, BadInputsAreOneClearError) {
  require_gpu();
  Mamba3Case c = kCases[0];
  const ops::Mamba3Inputs cpu = testing::make_mamba3_inputs(c, testing::make_mamba3_data(c), 0, c.T);
  Placed gpu = on_gpu(cpu, DType::F32, 0);
  Tensor y = nan_gpu({c.batch, c.T, c.R * c.H * c.P}, DType::BF16);
  test::expect_error([&] { ops::mamba3(gpu.in, nullptr, y); }, {"mamba3: y must be rows"});
  Tensor y_f32 = nan_gpu({c.batch, c.T, c.R * c.H * c.P}, DType::F32);
  ops::Mamba3State on_host = ops::Mamba3State::zeros(c.batch, c.H, c.P, c.N, c.S, c.R);
  test::expect_error([&] { ops::mamba3(gpu.in, &on_host, y_f32); }, {"the state must be contiguous F32 on the GPU"});
}

}  // namespace
}  // namespace ssm
