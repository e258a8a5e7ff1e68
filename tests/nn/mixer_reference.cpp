#include "nn/mixer_reference.h"

#include <cmath>

#include "core/error.h"
#include "nn/mixers/mamba1/mamba1.h"
#include "nn/mixers/mamba2/mamba2.h"
#include "ops/ref/conv1d.h"
#include "ops/ref/gated_rmsnorm.h"
#include "ops/ref/linear.h"
#include "ops/ref/rmsnorm.h"
#include "ops/ref/selective_scan.h"
#include "ops/ref/ssd.h"

namespace ssm::testing {

Vec columns(const Vec& m, int64_t rows, int64_t ncols, int64_t c0, int64_t width) {
  Vec out(static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) out[size_t(r * width + i)] = m[size_t(r * ncols + c0 + i)];
  return out;
}

namespace {

// The parameter `name` under the mixer's prefix, or an empty vector for an absent optional one.
struct Named {
  const Params& P;
  std::string prefix;
  const Vec& operator()(const std::string& name) const {
    static const Vec empty;
    auto it = P.find(prefix + "." + name);
    return it == P.end() ? empty : it->second;
  }
};

Vec neg_exp(const Vec& v) {
  Vec out;
  for (double a : v) out.push_back(-std::exp(a));
  return out;
}

void set_columns(Vec& m, int64_t rows, int64_t ncols, int64_t c0, const Vec& part, int64_t width) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) m[size_t(r * ncols + c0 + i)] = part[size_t(r * width + i)];
}

Vec mamba1(const Mamba1Settings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, Di = s.d_inner, R = s.dt_rank, N = s.d_state, W = R + 2 * N;
  const Vec xz = ref::linear(x, p("in_proj.weight"), p("in_proj.bias"), M, 2 * Di, D);
  const Vec u = ref::conv1d_causal(columns(xz, M, 2 * Di, 0, Di), p("conv1d.weight"), p("conv1d.bias"), {}, true, Bt, T,
                                   Di, s.d_conv)
                    .y;
  Vec xdbl = ref::linear(u, p("x_proj.weight"), {}, M, W, Di);
  if (s.dt_bc_norms) {
    set_columns(xdbl, M, W, 0, ref::rmsnorm(columns(xdbl, M, W, 0, R), p("dt_layernorm.weight"), M, R, s.norm_eps), R);
    set_columns(xdbl, M, W, R, ref::rmsnorm(columns(xdbl, M, W, R, N), p("b_layernorm.weight"), M, N, s.norm_eps), N);
    set_columns(xdbl, M, W, R + N,
                ref::rmsnorm(columns(xdbl, M, W, R + N, N), p("c_layernorm.weight"), M, N, s.norm_eps), N);
  }
  ref::SelectiveScanRefInputs in;
  in.u = u;
  in.delta = ref::linear(columns(xdbl, M, W, 0, R), p("dt_proj.weight"), {}, M, Di, R);
  in.delta_bias = p("dt_proj.bias");
  in.A = neg_exp(p("A_log"));
  in.B = columns(xdbl, M, W, R, N);
  in.C = columns(xdbl, M, W, R + N, N);
  in.Dskip = p("D");
  in.z = columns(xz, M, 2 * Di, Di, Di);
  const Vec y = ref::selective_scan({Bt, T, Di, N}, in).y;
  return ref::linear(y, p("out_proj.weight"), p("out_proj.bias"), M, D, Di);
}

Vec mamba2(const Mamba2Settings& s, const Named& p, const Vec& x, int64_t Bt, int64_t T) {
  const int64_t M = Bt * T, D = s.d_model, Di = s.d_inner, G = s.n_groups, N = s.d_state, H = s.n_heads;
  const int64_t Cc = s.conv_channels(), W = s.in_proj_width();
  Vec zx = ref::linear(x, p("in_proj.weight"), p("in_proj.bias"), M, W, D);
  if (!s.in_proj_part_scales.empty()) {
    const int64_t widths[5] = {Di, Di, G * N, G * N, H};
    for (int64_t r = 0; r < M; ++r)
      for (int part = 0, col = 0; part < 5; ++part)
        for (int64_t i = 0; i < widths[part]; ++i, ++col) zx[size_t(r * W + col)] *= s.in_proj_part_scales[size_t(part)];
  }
  const Vec xbc =
      ref::conv1d_causal(columns(zx, M, W, Di, Cc), p("conv1d.weight"), p("conv1d.bias"), {}, true, Bt, T, Cc, s.d_conv)
          .y;
  ref::SsdRefInputs in;
  in.x = columns(xbc, M, Cc, 0, Di);
  in.B = columns(xbc, M, Cc, Di, G * N);
  in.C = columns(xbc, M, Cc, Di + G * N, G * N);
  in.dt = columns(zx, M, W, Di + Cc, H);
  in.dt_bias = p("dt_bias");
  in.A = neg_exp(p("A_log"));
  in.D = p("D");
  in.dt_min = s.dt_limit_min;
  in.dt_max = s.dt_limit_max;
  const Vec y = ref::ssd({Bt, T, H, s.head_dim, G, N}, in).y;
  const Vec z = columns(zx, M, W, 0, Di);
  Vec gated;
  if (s.gated_norm) {
    gated = ref::gated_rmsnorm(y, z, p("norm.weight"), M, Di, Di / G, s.norm_before_gate, s.norm_eps);
  } else {
    gated.resize(y.size());
    for (size_t i = 0; i < y.size(); ++i) gated[i] = y[i] * z[i] / (1.0 + std::exp(-z[i]));
  }
  return ref::linear(gated, p("out_proj.weight"), p("out_proj.bias"), M, D, Di);
}

}  // namespace

Vec reference_mixer(const MixerPlan& mixer, const Params& P, const Vec& x, int64_t Bt, int64_t T) {
  const Named named{P, mixer.prefix};
  const MixerSettings* s = mixer.settings.get();
  if (const auto* m1 = dynamic_cast<const Mamba1Settings*>(s)) return mamba1(*m1, named, x, Bt, T);
  if (const auto* m2 = dynamic_cast<const Mamba2Settings*>(s)) return mamba2(*m2, named, x, Bt, T);
  fail("reference_mixer: no reference for mixer kind '{}'", s->kind());
}

}  // namespace ssm::testing
